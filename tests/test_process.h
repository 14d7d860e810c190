/* test_process.h -- running spirt's own commands from tests, and a small
 * real dataset for quick end-to-end runs.
 *
 * Every process started here gets PR_SET_PDEATHSIG, so it dies with the test
 * whatever way the test ends; tests still stop what they start by pid. */
#ifndef SPIRT_TEST_PROCESS_H
#define SPIRT_TEST_PROCESS_H

#include <stddef.h>
#include <sys/types.h>

/* build/spirt of this build. */
const char *test_spirt_path(void);

/* Runs argv (argv[0] a path) to its end, at most timeout_seconds (then
 * SIGKILL), with stdout captured into *output (malloc'd, NUL-terminated;
 * may be NULL) and stderr into *errors (likewise). Returns the exit status,
 * 128 + signal, or -1 if it could not run. */
int test_run(const char *const *argv, int timeout_seconds, char **output, char **errors);

/* What test_run_spirt captured. */
typedef struct TestCommand {
    int status;   /* exit status; 128 + signal if killed; -1 if it could not run */
    char *output; /* its stdout, NUL-terminated, owned */
    char *errors; /* its stderr, NUL-terminated, owned */
} TestCommand;

/* Runs build/spirt with args (NULL-terminated, without the program name),
 * at most 900 s. Fills *result (free with test_command_free); returns its
 * status. */
int test_run_spirt(const char *const *args, TestCommand *result);
void test_command_free(TestCommand *result);

/* Starts argv in the background, stdout and stderr appended to log_path
 * (NULL: /dev/null). Returns its pid, or -1. */
pid_t test_spawn(const char *const *argv, const char *log_path);
/* Waits up to timeout_seconds for pid; returns its status as test_run does,
 * or -2 on time-out (the process is then killed). */
int test_wait(pid_t pid, int timeout_seconds);

/* How many running processes have `needle` in their command line (the test
 * itself excluded). */
int test_count_processes_mentioning(const char *needle);

/* Writes the first train_count training and test_count test examples of
 * the real Fashion-MNIST, as raw IDX files with the standard names, into
 * folder `dir` (created). Returns 0 or -1. */
int test_write_small_dataset(const char *dir, size_t train_count, size_t test_count);

#endif /* SPIRT_TEST_PROCESS_H */
