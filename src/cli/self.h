/* self.h -- where this program is, for the commands that start copies of
 * it (train, the benchmarks) or load the module built beside it. */
#ifndef SPIRT_CLI_SELF_H
#define SPIRT_CLI_SELF_H

#include <stddef.h>

/* This program's absolute path (/proc/self/exe) in `buffer`. 0, or -1 if
 * it cannot be read or does not fit. */
int cli_self_path(char *buffer, size_t size);

/* The file `name` in this program's folder ("spirt.so": the module built
 * beside it) in `buffer`. 0, or -1 as cli_self_path. */
int cli_sibling_path(char *buffer, size_t size, const char *name);

#endif /* SPIRT_CLI_SELF_H */
