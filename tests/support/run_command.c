/* run_command.c -- running build/spirt from tests (see tests/run_command.h). */
#include "run_command.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static char *read_all(const char *path) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return calloc(1, 1);
    size_t capacity = 4096, length = 0;
    char *text = malloc(capacity);
    size_t got;
    while (text && (got = fread(text + length, 1, capacity - length - 1, file)) > 0) {
        length += got;
        if (length + 1 == capacity) {
            char *grown = realloc(text, capacity * 2);
            if (grown == NULL) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
            capacity *= 2;
        }
    }
    fclose(file);
    if (text) text[length] = '\0';
    return text;
}

int test_run_spirt(const char *const *args, TestCommand *result) {
    static int serial;
    char program[600], out_path[600], err_path[600], name[64];
    const char *build = getenv("SPIRT_BUILD_DIR");
    snprintf(program, sizeof(program), "%s/spirt", build && *build ? build : SPIRT_BUILD_DIR);
    snprintf(name, sizeof(name), "command-%d.out", serial);
    test_temp_path(out_path, sizeof(out_path), name);
    snprintf(name, sizeof(name), "command-%d.err", serial++);
    test_temp_path(err_path, sizeof(err_path), name);
    const char *argv[64];
    int argc = 0;
    argv[argc++] = program;
    for (int i = 0; args[i] && argc < 63; i++) argv[argc++] = args[i];
    argv[argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0 || err < 0) _exit(127);
        dup2(out, STDOUT_FILENO);
        dup2(err, STDERR_FILENO);
        close(out);
        close(err);
        execv(program, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) status = -1;
    result->status = pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result->output = read_all(out_path);
    result->errors = read_all(err_path);
    return result->status;
}

void test_command_free(TestCommand *result) {
    free(result->output);
    free(result->errors);
    result->output = result->errors = NULL;
}
