/* process.c -- processes and a small dataset for tests (see test_process.h). */
#include "test_process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spirt/data.h"

const char *test_spirt_path(void) {
    static char path[1024];
    const char *build = getenv("SPIRT_BUILD_DIR");
    snprintf(path, sizeof(path), "%s/spirt", build && *build ? build : SPIRT_BUILD_DIR);
    return path;
}

static void in_child(int out_fd, int err_fd, pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
}

pid_t test_spawn(const char *const *argv, const char *log_path) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    in_child(fd, fd, parent);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

int test_wait(pid_t pid, int timeout_seconds) {
    struct timespec pause = {0, 20 * 1000 * 1000};
    for (int i = 0; i < timeout_seconds * 50; i++) {
        int status;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (done < 0) return -1;
        nanosleep(&pause, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -2;
}

static char *read_all(const char *path) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return calloc(1, 1);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = calloc(1, (size_t)(size > 0 ? size : 0) + 1);
    if (text && size > 0 && fread(text, 1, (size_t)size, file) != (size_t)size) text[0] = '\0';
    fclose(file);
    return text;
}

int test_run(const char *const *argv, int timeout_seconds, char **output, char **errors) {
    char out_path[] = "/tmp/spirt-test-out-XXXXXX", err_path[] = "/tmp/spirt-test-err-XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        in_child(out_fd, err_fd, parent);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out_fd);
    close(err_fd);
    int status = pid > 0 ? test_wait(pid, timeout_seconds) : -1;
    if (output) *output = read_all(out_path);
    if (errors) *errors = read_all(err_path);
    unlink(out_path);
    unlink(err_path);
    return status;
}

int test_count_processes_mentioning(const char *needle) {
    DIR *proc = opendir("/proc");
    if (proc == NULL) return -1;
    int count = 0;
    struct dirent *entry;
    char path[300], text[8192];
    while ((entry = readdir(proc)) != NULL) {
        pid_t pid = (pid_t)atoi(entry->d_name);
        if (pid <= 0 || pid == getpid()) continue;
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        FILE *file = fopen(path, "rb");
        if (file == NULL) continue;
        size_t length = fread(text, 1, sizeof(text) - 1, file);
        fclose(file);
        for (size_t i = 0; i < length; i++)
            if (text[i] == '\0') text[i] = ' ';
        text[length] = '\0';
        /* Zombies have an empty command line: they are already gone. */
        if (length && strstr(text, needle)) count++;
    }
    closedir(proc);
    return count;
}

static int write_idx(const char *path, const uint8_t *values, size_t count, int is_images) {
    FILE *file = fopen(path, "wb");
    if (file == NULL) return -1;
    unsigned char header[16];
    size_t header_size = is_images ? 16 : 8;
    uint32_t words[4] = {is_images ? 0x00000803u : 0x00000801u, (uint32_t)count, 28, 28};
    for (size_t w = 0; w < header_size / 4; w++)
        for (int b = 0; b < 4; b++) header[w * 4 + (size_t)b] = (unsigned char)(words[w] >> (24 - 8 * b));
    int ok = fwrite(header, 1, header_size, file) == header_size &&
             fwrite(values, 1, count * (is_images ? 784 : 1), file) == count * (is_images ? 784 : 1);
    return (fclose(file) == 0 && ok) ? 0 : -1;
}

static int write_split(const char *dir, DataSplit split, size_t count, const char *images_name, const char *labels_name) {
    Dataset *dataset = data_load("fashion-mnist", split, NULL);
    if (dataset == NULL || dataset->count < count) {
        dataset_free(dataset);
        return -1;
    }
    uint8_t *pixels = malloc(count * 784);
    for (size_t i = 0; i < count * 784; i++) pixels[i] = (uint8_t)(dataset->images[i] * 255.0f + 0.5f);
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, images_name);
    int status = write_idx(path, pixels, count, 1);
    snprintf(path, sizeof(path), "%s/%s", dir, labels_name);
    if (status == 0) status = write_idx(path, dataset->labels, count, 0);
    free(pixels);
    dataset_free(dataset);
    return status;
}

int test_write_small_dataset(const char *dir, size_t train_count, size_t test_count) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return -1;
    if (write_split(dir, DATA_TRAIN, train_count, "train-images-idx3-ubyte", "train-labels-idx1-ubyte") != 0) return -1;
    return write_split(dir, DATA_TEST, test_count, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

int test_run_spirt(const char *const *args, TestCommand *result) {
    const char *argv[64];
    size_t argc = 0;
    argv[argc++] = test_spirt_path();
    for (size_t i = 0; args[i] && argc < 63; i++) argv[argc++] = args[i];
    argv[argc] = NULL;
    result->status = test_run(argv, 900, &result->output, &result->errors);
    return result->status;
}

void test_command_free(TestCommand *result) {
    free(result->output);
    free(result->errors);
    result->output = result->errors = NULL;
}
