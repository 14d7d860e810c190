/* test_cli.c -- the `spirt` command's conventions, and `spirt identity`:
 * help on stdout with status 0, a wrong option or command as one line plus
 * usage with status 2, key files made, shown and never overwritten. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "spirt/crypto.h"
#include "test.h"
#include "test_process.h"

static int first_line_is(const char *text, const char *prefix) { return text && strncmp(text, prefix, strlen(prefix)) == 0; }

static void test_conventions(void) {
    test_begin("help, unknown commands and options");
    TestCommand result;
    const char *help[] = {"--help", NULL};
    CHECK(test_run_spirt(help, &result) == 0 && strstr(result.output, "commands:") && strstr(result.output, "train"));
    test_command_free(&result);
    const char *unknown[] = {"frobnicate", NULL};
    CHECK(test_run_spirt(unknown, &result) == 2 && first_line_is(result.errors, "spirt: unknown command 'frobnicate'"));
    test_command_free(&result);
    const char *commands[] = {"train", "peer", "worker", "fn", "identity", "fit", "eval", "bench"};
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        const char *with_help[] = {commands[i], "--help", NULL};
        CHECKF(test_run_spirt(with_help, &result) == 0 && strstr(result.output, "usage: spirt"), "%s --help", commands[i]);
        test_command_free(&result);
        const char *with_bad[] = {commands[i], "--no-such-option", NULL};
        int status = test_run_spirt(with_bad, &result);
        CHECKF(status == 2 && strchr(result.errors, '\n') != NULL, "%s --no-such-option: exit %d, '%s'", commands[i],
               status, result.errors);
        test_command_free(&result);
    }
    const char *bad_value[] = {"train", "--peers", "many", NULL};
    CHECK(test_run_spirt(bad_value, &result) == 2 && first_line_is(result.errors, "spirt train: --peers: 'many'"));
    test_command_free(&result);
}

static void test_identity(void) {
    test_begin("spirt identity new and show");
    char path[600];
    test_temp_path(path, sizeof(path), "peer-7.key");
    TestCommand result;
    const char *make[] = {"identity", "new", "--peer-id", "peer-7", "--out", path, NULL};
    CHECK(test_run_spirt(make, &result) == 0 && first_line_is(result.output, "peer-7 "));
    char printed[200] = "";
    snprintf(printed, sizeof(printed), "%s", result.output);
    test_command_free(&result);
    struct stat info;
    CHECK(stat(path, &info) == 0 && (info.st_mode & 0777) == 0600);
    Identity loaded;
    SpirtError error;
    CHECK_OK(identity_load(&loaded, path, &error), &error);
    char hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
    identity_public_hex(&loaded, hex);
    CHECK(strstr(printed, hex) != NULL);
    const char *show[] = {"identity", "show", path, "--json", NULL};
    CHECK(test_run_spirt(show, &result) == 0 && strstr(result.output, hex) && strstr(result.output, "\"peer-7\""));
    test_command_free(&result);
    /* Never overwrite a key. */
    CHECK(test_run_spirt(make, &result) == 1 && strstr(result.errors, "not overwriting"));
    Identity again;
    CHECK(identity_load(&again, path, &error) == SPIRT_OK && memcmp(again.secret_key, loaded.secret_key, 64) == 0);
    test_command_free(&result);
    const char *bad_id[] = {"identity", "new", "--peer-id", "no spaces", "--out", path, NULL};
    CHECK(test_run_spirt(bad_id, &result) == 1);
    test_command_free(&result);
}

int main(void) {
    test_conventions();
    test_identity();
    return test_finish();
}
