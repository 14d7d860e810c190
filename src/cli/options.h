/* options.h -- one option parser for every `spirt` subcommand.
 *
 * A subcommand declares a table of CliOption (name, type, where to store the
 * value, help text) and calls cli_parse(). Conventions, the same everywhere:
 *   --name value and --name=value; flags take no value; -h/--help prints the
 *   usage on stdout and the command exits 0; an unknown option, a missing or
 *   malformed value gives one line on stderr ("spirt fit: --lr: 'x' is not a
 *   number"), then the usage, and exit status 2. */
#ifndef SPIRT_CLI_OPTIONS_H
#define SPIRT_CLI_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* FILE */

typedef enum CliOptionType {
    CLI_FLAG,   /* int: set to 1 when present */
    CLI_INT,    /* int */
    CLI_U64,    /* uint64_t */
    CLI_DOUBLE, /* double */
    CLI_STRING  /* const char *: points into argv */
} CliOptionType;

typedef struct CliOption {
    const char *name;       /* without the leading "--" */
    CliOptionType type;
    void *target;           /* where the value goes, of the type above */
    const char *value_name; /* shown in the usage, e.g. "N"; NULL for flags */
    const char *help;       /* one line; "(default: ...)" is the caller's to add */
} CliOption;

typedef struct CliCommand {
    const char *name;       /* "fit" */
    const char *arguments;  /* positional part of the usage, e.g. "NAME"; or "" */
    const char *summary;    /* one line on what it does */
    const CliOption *options;
    size_t option_count;
} CliCommand;

enum { CLI_PARSED = 0, CLI_EXIT_OK = 1, CLI_EXIT_USAGE = 2 };

/* Parses argv[1..argc) (argv[0] is the subcommand name). Positional arguments
 * are moved, in order, to positional[0..*positional_count) (at most
 * max_positional; more is a usage error). Returns CLI_PARSED, CLI_EXIT_OK
 * after printing help, or CLI_EXIT_USAGE after printing the error and usage. */
int cli_parse(const CliCommand *command, int argc, char **argv, char **positional, int max_positional,
              int *positional_count);

/* Prints "spirt NAME: message" and the usage to stderr; returns CLI_EXIT_USAGE
 * (2), for errors found after parsing (e.g. a value out of range). */
int cli_usage_error(const CliCommand *command, const char *format, ...) __attribute__((format(printf, 2, 3)));

void cli_print_usage(const CliCommand *command, FILE *stream);

#endif /* SPIRT_CLI_OPTIONS_H */
