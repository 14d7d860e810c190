/* run_command.h -- runs the `spirt` program of this build from a test and
 * captures what it printed.
 *
 * The child's stdout and stderr go to files under test_temp_dir() and are
 * read back after it exits, so a chatty child can never block on a full
 * pipe. The child dies with the test (PR_SET_PDEATHSIG). */
#ifndef SPIRT_TEST_RUN_COMMAND_H
#define SPIRT_TEST_RUN_COMMAND_H

typedef struct TestCommand {
    int status;   /* exit status; -1 if it did not exit normally (signal) */
    char *output; /* its stdout, NUL-terminated, owned */
    char *errors; /* its stderr, NUL-terminated, owned */
} TestCommand;

/* Runs SPIRT_BUILD_DIR/spirt with args (NULL-terminated, without the program
 * name) and waits for it. Fills *result (free with test_command_free).
 * Returns result->status. */
int test_run_spirt(const char *const *args, TestCommand *result);
void test_command_free(TestCommand *result);

#endif /* SPIRT_TEST_RUN_COMMAND_H */
