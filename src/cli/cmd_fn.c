/* cmd_fn.c -- `spirt fn NAME`: one function invocation by hand. The JSON
 * event comes on stdin, the JSON result goes to stdout, and the exit status
 * is 0 on success -- the shape an AWS Lambda custom runtime would carry. On
 * failure stdout gets {"error": name, "cause": message} and the status is 1. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "spirt/fn.h"

int command_fn(int argc, char **argv) {
    const char *identity = NULL;
    int list = 0;
    const CliOption options[] = {
        {"identity", CLI_STRING, &identity, "FILE", "the peer's key file (publish)"},
        {"list", CLI_FLAG, &list, NULL, "list the functions and exit"},
    };
    const CliCommand command = {"fn", "NAME", "Run one function: a JSON event on stdin, a JSON result on stdout.",
                                options, sizeof(options) / sizeof(options[0])};
    char *positional[1];
    int positional_count = 0;
    int status = cli_parse(&command, argc, argv, positional, 1, &positional_count);
    if (status != CLI_PARSED) return status == CLI_EXIT_OK ? 0 : 2;
    size_t count;
    const FnDescriptor *all = fn_all(&count);
    if (list) {
        for (size_t i = 0; i < count; i++) printf("%-18s %s\n", all[i].name, all[i].summary);
        return 0;
    }
    if (positional_count != 1) return cli_usage_error(&command, "which function? (see --list)");
    if (fn_find(positional[0]) == NULL)
        return cli_usage_error(&command, "no function called '%s' (see --list)", positional[0]);
    json_error_t parse_error;
    json_t *event = json_loadf(stdin, JSON_REJECT_DUPLICATES, &parse_error);
    if (event == NULL) {
        fprintf(stderr, "spirt fn: the event on stdin is not JSON: line %d column %d: %s\n", parse_error.line,
                parse_error.column, parse_error.text);
        return 1;
    }
    FnContextOptions context_options = {.identity_path = identity};
    SpirtError error;
    FnContext *context = fn_context_create(&context_options, &error);
    json_t *result = NULL;
    status = context ? fn_invoke(context, positional[0], event, &result, &error) : error.code;
    fn_context_free(context);
    json_decref(event);
    if (status != SPIRT_OK) {
        json_t *failure = json_pack("{s:s, s:s}", "error", fn_error_name(status), "cause", error.message);
        json_dumpf(failure, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(failure);
        fprintf(stderr, "spirt fn %s: %s\n", positional[0], error.message);
        return 1;
    }
    json_dumpf(result, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(result);
    return 0;
}
