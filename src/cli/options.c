/* options.c -- the subcommands' option parser (see options.h). */
#include "cli/options.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_print_usage(const CliCommand *command, FILE *stream) {
    fprintf(stream, "usage: spirt %s [options]%s%s\n\n%s\n", command->name,
            command->arguments && *command->arguments ? " " : "", command->arguments ? command->arguments : "",
            command->summary);
    fprintf(stream, "\noptions:\n");
    for (size_t i = 0; i < command->option_count; i++) {
        const CliOption *option = &command->options[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", option->name, option->value_name ? " " : "",
                 option->value_name ? option->value_name : "");
        fprintf(stream, "  %-26s %s\n", left, option->help);
    }
    fprintf(stream, "  %-26s %s\n", "-h, --help", "show this help and exit");
}

int cli_usage_error(const CliCommand *command, const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "spirt %s: ", command->name);
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    cli_print_usage(command, stderr);
    return CLI_EXIT_USAGE;
}

static int store_value(const CliCommand *command, const CliOption *option, const char *text) {
    char *end = NULL;
    errno = 0;
    switch (option->type) {
    case CLI_FLAG:
        *(int *)option->target = 1;
        return CLI_PARSED;
    case CLI_INT: {
        long value = strtol(text, &end, 10);
        if (*text == '\0' || *end != '\0' || errno || value < -2147483647L || value > 2147483647L)
            return cli_usage_error(command, "--%s: '%s' is not an integer", option->name, text);
        *(int *)option->target = (int)value;
        return CLI_PARSED;
    }
    case CLI_U64: {
        if (*text == '-') return cli_usage_error(command, "--%s: '%s' must not be negative", option->name, text);
        unsigned long long value = strtoull(text, &end, 10);
        if (*text == '\0' || *end != '\0' || errno)
            return cli_usage_error(command, "--%s: '%s' is not a non-negative integer", option->name, text);
        *(uint64_t *)option->target = (uint64_t)value;
        return CLI_PARSED;
    }
    case CLI_DOUBLE: {
        double value = strtod(text, &end);
        if (*text == '\0' || *end != '\0' || errno || !isfinite(value))
            return cli_usage_error(command, "--%s: '%s' is not a finite number", option->name, text);
        *(double *)option->target = value;
        return CLI_PARSED;
    }
    case CLI_STRING:
        *(const char **)option->target = text;
        return CLI_PARSED;
    }
    return CLI_EXIT_USAGE;
}

int cli_parse(const CliCommand *command, int argc, char **argv, char **positional, int max_positional,
              int *positional_count) {
    int count = 0;
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *argument = argv[i];
        if (!only_positional && strcmp(argument, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (!only_positional && (strcmp(argument, "-h") == 0 || strcmp(argument, "--help") == 0)) {
            cli_print_usage(command, stdout);
            return CLI_EXIT_OK;
        }
        if (only_positional || argument[0] != '-' || argument[1] == '\0') {
            if (count >= max_positional)
                return cli_usage_error(command, "unexpected argument '%s'", argument);
            positional[count++] = argv[i];
            continue;
        }
        if (argument[1] != '-')
            return cli_usage_error(command, "unknown option '%s'", argument);
        const char *name = argument + 2;
        const char *equals = strchr(name, '=');
        size_t name_length = equals ? (size_t)(equals - name) : strlen(name);
        const CliOption *option = NULL;
        for (size_t k = 0; k < command->option_count; k++)
            if (strlen(command->options[k].name) == name_length &&
                strncmp(command->options[k].name, name, name_length) == 0)
                option = &command->options[k];
        if (option == NULL) return cli_usage_error(command, "unknown option '--%.*s'", (int)name_length, name);
        const char *value = NULL;
        if (option->type == CLI_FLAG) {
            if (equals) return cli_usage_error(command, "--%s takes no value", option->name);
        } else if (equals) {
            value = equals + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return cli_usage_error(command, "--%s needs a value (%s)", option->name,
                                   option->value_name ? option->value_name : "VALUE");
        }
        int status = store_value(command, option, value);
        if (status != CLI_PARSED) return status;
    }
    if (positional_count) *positional_count = count;
    return CLI_PARSED;
}
