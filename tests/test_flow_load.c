/* test_flow_load.c -- loading state machines: every refusal names the JSON
 * path of the problem; malformed JSON names line and column; the round
 * workflow of workflows/round.json loads and names only known functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_test_text.h"
#include "spirt/flow.h"
#include "test.h"

/* A definition that must be refused with SPIRT_ERR_FORMAT and a message
 * containing `expected` (which always includes the JSON path). */
typedef struct Refusal {
    const char *definition;
    const char *expected;
} Refusal;

static const Refusal refusals[] = {
    /* structure */
    {"[]", "workflow: a state machine must be a JSON object"},
    {"{'States': {'A': {'Type': 'Succeed'}}}", "workflow: StartAt: required field missing"},
    {"{'StartAt': 'A'}", "workflow: States: required field missing"},
    {"{'StartAt': 'A', 'States': {}}", "workflow: States: must be an object holding at least one state"},
    {"{'StartAt': 'B', 'States': {'A': {'Type': 'Succeed'}}}", "workflow: StartAt: no state named 'B' in this machine"},
    {"{'Startat': 'A', 'StartAt': 'A', 'States': {'A': {'Type': 'Succeed'}}}",
     "workflow: Startat: unknown field in a state machine"},
    {"{'StartAt': 'A', 'Version': '2.0', 'States': {'A': {'Type': 'Succeed'}}}", "workflow: Version: must be \"1.0\""},
    {"{'StartAt': 'A', 'TimeoutSeconds': -1, 'States': {'A': {'Type': 'Succeed'}}}",
     "workflow: TimeoutSeconds: must be a positive number of seconds"},
    {"{'StartAt': 'A', 'States': {'A': 'Succeed'}}", "workflow: States.A: a state must be an object"},
    /* types and fields */
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Bogus', 'End': true}}}", "States.A.Type: unknown state type 'Bogus'"},
    {"{'StartAt': 'A', 'States': {'A': {'End': true}}}", "States.A.Type: required field missing"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'End': true}}}", "States.A.Resource: required field missing"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 7, 'End': true}}}",
     "States.A.Resource: must be a string"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resurce': 'f', 'Resource': 'f', 'End': true}}}",
     "States.A.Resurce: unknown field in a Task state"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'HeartbeatSeconds': 5, 'End': true}}}",
     "States.A.HeartbeatSeconds: not supported by this engine"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'TimeoutSeconds': 0, 'End': true}}}",
     "States.A.TimeoutSeconds: must be a positive number of seconds"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'TimeoutSeconds': 5, "
     "'TimeoutSecondsPath': '$.t', 'End': true}}}",
     "States.A.TimeoutSecondsPath: give TimeoutSeconds or TimeoutSecondsPath, not both"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Comment': 3, 'End': true}}}",
     "States.A.Comment: must be a string"},
    /* terminal rules */
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'End': true, 'Next': 'A'}}}",
     "States.A.End: a state has either End or Next, not both"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass'}}}", "States.A: a Pass state needs Next or \"End\": true"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'End': false}}}", "States.A.End: must be true when present"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Succeed', 'Next': 'A'}}}", "States.A.Next: not allowed on a Succeed state"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Fail', 'End': true}}}", "States.A.End: not allowed on a Fail state"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Fail', 'InputPath': '$'}}}",
     "States.A.InputPath: not allowed on a Fail state"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Next': 'B'}}}",
     "States.A.Next: no state named 'B' in this machine"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Succeed'}, 'B': {'Type': 'Succeed'}}}",
     "States.B: unreachable: no StartAt, Next, Default or Catch leads here"},
    /* Retry and Catch */
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Retry': [], 'End': true}}}",
     "States.A.Retry: not allowed on a Pass state"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Catch': [], 'Choices': []}}}",
     "States.A.Catch: not allowed on a Choice state"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['States.ALL'], 'MaxAttempts': -1}]}}}",
     "workflow: States.A.Retry[0].MaxAttempts: must be a non-negative integer"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['States.ALL'], 'MaxAttempts': 1.5}]}}}",
     "States.A.Retry[0].MaxAttempts: must be a non-negative integer"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['X'], 'BackoffRate': 0.5}]}}}",
     "States.A.Retry[0].BackoffRate: must be a number >= 1.0"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['X'], 'IntervalSeconds': 0}]}}}",
     "States.A.Retry[0].IntervalSeconds: must be a positive number of seconds"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['X'], 'MaxDelaySeconds': -2}]}}}",
     "States.A.Retry[0].MaxDelaySeconds: must be a positive number of seconds"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['X'], 'JitterStrategy': 'SOME'}]}}}",
     "States.A.Retry[0].JitterStrategy: must be \"FULL\" or \"NONE\""},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['X'], 'MaxAtempts': 2}]}}}",
     "States.A.Retry[0].MaxAtempts: unknown field in a retrier"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': []}]}}}",
     "States.A.Retry[0].ErrorEquals: must be a non-empty array of error names"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'MaxAttempts': 1}]}}}",
     "States.A.Retry[0].ErrorEquals: required field missing"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['States.Timout']}]}}}",
     "States.A.Retry[0].ErrorEquals[0]: unknown error name 'States.Timout'"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['States.Runtime']}]}}}",
     "States.A.Retry[0].ErrorEquals[0]: States.Runtime errors end the execution"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Retry': [{'ErrorEquals': ['States.ALL']}, {'ErrorEquals': ['X']}]}}}",
     "States.A.Retry[0].ErrorEquals[0]: States.ALL must be alone in the last retrier or catcher"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Catch': [{'ErrorEquals': ['X', 'States.ALL'], 'Next': 'A'}]}}}",
     "States.A.Catch[0].ErrorEquals[1]: States.ALL must be alone"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Catch': [{'ErrorEquals': ['X']}]}}}",
     "States.A.Catch[0].Next: required field missing"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Task', 'Resource': 'f', 'End': true, "
     "'Catch': [{'ErrorEquals': ['X'], 'Next': 'Nowhere'}]}}}",
     "States.A.Catch[0].Next: no state named 'Nowhere'"},
    /* paths and templates */
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'InputPath': 'a.b', 'End': true}}}",
     "States.A.InputPath: bad path 'a.b': a path must start with '$'"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'InputPath': '$..a', 'End': true}}}",
     "States.A.InputPath: bad path '$..a': recursive descent (..) is not supported"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'OutputPath': '$.a[*]', 'End': true}}}",
     "States.A.OutputPath: bad path '$.a[*]': wildcards are not supported"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'ResultPath': '$.a[0]', 'End': true}}}",
     "States.A.ResultPath: ResultPath may only name members"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'ResultPath': '$$.a', 'End': true}}}",
     "States.A.ResultPath: the context object ($$) is not allowed here"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Parameters': {'x.$': 3}, 'End': true}}}",
     "States.A.Parameters.x.$: must be a path string"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Parameters': {'x.$': 'States.Format(1)'}, 'End': true}}}",
     "States.A.Parameters.x.$: bad path 'States.Format(1)': intrinsic functions are not supported"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Parameters': {'deep': [{'y.$': '$.a['}]}, 'End': true}}}",
     "States.A.Parameters.deep[0].y.$: bad path '$.a[': only [n], ['name'] and [\"name\"] are supported"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Parameters': {'x': 1, 'x.$': '$'}, 'End': true}}}",
     "States.A.Parameters.x.$: both \"x\" and \"x.$\" are given"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Parameters': '$.x', 'End': true}}}",
     "States.A.Parameters: must be an object"},
    /* Choice */
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [], 'Default': 'B'}, 'B': {'Type': 'Succeed'}}}",
     "States.A.Choices: must be a non-empty array of Choice rules"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'End': true, 'Choices': [{'Variable': '$.x', "
     "'IsPresent': true, 'Next': 'B'}]}, 'B': {'Type': 'Succeed'}}}",
     "States.A.End: not allowed on a Choice state"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'Variable': '$.x', 'IsPresent': true}]}}}",
     "States.A.Choices[0].Next: required field missing"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'Not': {'Variable': '$.x', "
     "'IsPresent': true, 'Next': 'B'}, 'Next': 'B'}]}, 'B': {'Type': 'Succeed'}}}",
     "States.A.Choices[0].Not.Next: only top-level Choice rules may have Next"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'Variable': '$.x', 'NumericEquals': 1, "
     "'NumericLessThan': 3, 'Next': 'B'}]}, 'B': {'Type': 'Succeed'}}}",
     "States.A.Choices[0].NumericLessThan: a Choice rule has exactly one operator"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'NumericEquals': 1, 'Next': 'B'}]}, "
     "'B': {'Type': 'Succeed'}}}",
     "States.A.Choices[0].Variable: required field missing"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'Variable': '$.x', 'NumericEquals': '1', "
     "'Next': 'B'}]}, 'B': {'Type': 'Succeed'}}}",
     "States.A.Choices[0].NumericEquals: must be a number"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'Variable': '$.x', 'TimestampEquals': 'x', "
     "'Next': 'B'}]}, 'B': {'Type': 'Succeed'}}}",
     "States.A.Choices[0].TimestampEquals: timestamp comparisons are not supported"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'And': [], 'Next': 'B'}]}, "
     "'B': {'Type': 'Succeed'}}}",
     "States.A.Choices[0].And: must be a non-empty array of Choice rules"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'Or': [{'Variable': '$.x', "
     "'StringEqualz': 'a'}], 'Next': 'B'}]}, 'B': {'Type': 'Succeed'}}}",
     "States.A.Choices[0].Or[0].StringEqualz: unknown field in a Choice rule"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Choice', 'Choices': [{'Variable': '$.x', 'IsNull': true, "
     "'Next': 'B'}], 'Default': 'C'}, 'B': {'Type': 'Succeed'}}}",
     "States.A.Default: no state named 'C'"},
    /* Wait, Fail */
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Wait', 'End': true}}}",
     "States.A: a Wait state needs Seconds or SecondsPath"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Wait', 'Seconds': 1, 'SecondsPath': '$.s', 'End': true}}}",
     "States.A.SecondsPath: give Seconds or SecondsPath, not both"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Wait', 'Seconds': -1, 'End': true}}}",
     "States.A.Seconds: must be a non-negative number of seconds"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Wait', 'Timestamp': '2024-01-01T00:00:00Z', 'End': true}}}",
     "States.A.Timestamp: not supported by this engine"},
    {"{'StartAt': 'A', 'States': {'A': {'Type': 'Fail', 'Error': 'X', 'ErrorPath': '$.e'}}}",
     "States.A.ErrorPath: give Error or ErrorPath, not both"},
    /* Map and Parallel, and paths into nested machines */
    {"{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'End': true}}}", "States.M.ItemProcessor: required field missing"},
    {"{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'MaxConcurrency': -1, 'End': true, "
     "'ItemProcessor': {'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}}}}}",
     "States.M.MaxConcurrency: must be a non-negative integer"},
    {"{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'End': true, "
     "'ItemProcessor': {'ProcessorConfig': {'Mode': 'DISTRIBUTED'}, 'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}}}}}",
     "States.M.ItemProcessor.ProcessorConfig.Mode: only \"INLINE\" is supported"},
    {"{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'End': true, "
     "'ItemProcessor': {'StartAt': 'X', 'States': {'X': {'Type': 'Task', 'End': true}}}}}}",
     "States.M.ItemProcessor.States.X.Resource: required field missing"},
    {"{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'End': true, "
     "'Iterator': {'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}}, "
     "'ItemProcessor': {'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}}}}}",
     "States.M.Iterator: give ItemProcessor or Iterator, not both"},
    {"{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'End': true, 'ItemSelector': {}, 'Parameters': {}, "
     "'ItemProcessor': {'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}}}}}",
     "States.M.Parameters: give ItemSelector or Parameters, not both"},
    {"{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'End': true, "
     "'ItemProcessor': {'StartAt': 'X', 'States': {'X': {'Type': 'Pass', 'Next': 'M'}}}}}}",
     "States.M.ItemProcessor.States.X.Next: no state named 'M' in this machine"},
    {"{'StartAt': 'P', 'States': {'P': {'Type': 'Parallel', 'Branches': [], 'End': true}}}",
     "States.P.Branches: must be a non-empty array of branches"},
    {"{'StartAt': 'P', 'States': {'P': {'Type': 'Parallel', 'End': true, 'Branches': ["
     "{'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}}, "
     "{'StartAt': 'Y', 'States': {'Y': {'Type': 'Sucess'}}}]}}}",
     "States.P.Branches[1].States.Y.Type: unknown state type 'Sucess'"},
    {"{'StartAt': 'P', 'States': {'P': {'Type': 'Parallel', 'End': true, 'Branches': ["
     "{'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}, 'TimeoutSeconds': 3}]}}}",
     "States.P.Branches[0].TimeoutSeconds: unknown field in a branch"},
};

static void test_refusals(void) {
    test_begin("load: each invalid definition is refused with its JSON path");
    size_t count = sizeof(refusals) / sizeof(refusals[0]);
    for (size_t i = 0; i < count; i++) {
        char *text = flow_test_text(refusals[i].definition);
        SpirtError error;
        spirt_error_clear(&error);
        FlowMachine *machine = flow_machine_load_string(text, NULL, &error);
        CHECKF(machine == NULL, "case %zu was accepted: %s", i, text);
        CHECKF(error.code == SPIRT_ERR_FORMAT, "case %zu: code %d (%s)", i, error.code, error.message);
        CHECKF(strstr(error.message, refusals[i].expected) != NULL, "case %zu: got \"%s\", expected \"%s\"", i,
               error.message, refusals[i].expected);
        if (getenv("FLOW_TEST_VERBOSE")) fprintf(stderr, "   %s\n", error.message);
        flow_machine_free(machine);
        free(text);
    }
}

static void test_malformed_json(void) {
    test_begin("load: malformed JSON and duplicate keys give line and column");
    SpirtError error;
    FlowMachine *machine = flow_machine_load_string("{\n  \"StartAt\": \"A\",\n  \"States\": {,}\n}", "m.json", &error);
    CHECK(machine == NULL);
    CHECK_ERROR(error.code, SPIRT_ERR_FORMAT, &error, "m.json:3:14: malformed JSON");

    machine = flow_machine_load_string("{\"StartAt\": \"A\", \"States\": {\n\"A\": {\"Type\": \"Succeed\"},\n"
                                       "\"A\": {\"Type\": \"Fail\"}}}",
                                       "dup.json", &error);
    CHECK(machine == NULL);
    CHECK_ERROR(error.code, SPIRT_ERR_FORMAT, &error, "dup.json:3:");
    CHECK_ERROR(error.code, SPIRT_ERR_FORMAT, &error, "duplicate");

    machine = flow_machine_load_string("", "empty.json", &error);
    CHECK(machine == NULL);
    CHECK_ERROR(error.code, SPIRT_ERR_FORMAT, &error, "empty.json:");

    /* The same through a file: the file's path is the source name. */
    char path[512];
    test_temp_path(path, sizeof(path), "broken.json");
    FILE *file = fopen(path, "w");
    CHECK(file != NULL);
    if (file) {
        fputs("{\"StartAt\": \"A\",\n \"States\": {\"A\": {\"Type\": \"Succeed\"}}\n", file);
        fclose(file);
    }
    machine = flow_machine_load_file(path, &error);
    CHECK(machine == NULL);
    char expected[600];
    snprintf(expected, sizeof(expected), "%s:3:", path);
    CHECK_ERROR(error.code, SPIRT_ERR_FORMAT, &error, expected);

    test_temp_path(path, sizeof(path), "missing.json");
    machine = flow_machine_load_file(path, &error);
    CHECK(machine == NULL);
    CHECK_ERROR(error.code, SPIRT_ERR_NOT_FOUND, &error, "missing.json");

    /* A valid file loads; the path then prefixes validation messages too. */
    test_temp_path(path, sizeof(path), "bad.json");
    file = fopen(path, "w");
    if (file) {
        fputs("{\"StartAt\": \"A\", \"States\": {\"A\": {\"Type\": \"Task\", \"Resource\": \"f\", \"End\": true,\n"
              "\"Retry\": [{\"ErrorEquals\": [\"X\"], \"MaxAttempts\": -3}]}}}\n",
              file);
        fclose(file);
    }
    machine = flow_machine_load_file(path, &error);
    CHECK(machine == NULL);
    snprintf(expected, sizeof(expected), "%s: States.A.Retry[0].MaxAttempts: must be a non-negative integer", path);
    CHECK_ERROR(error.code, SPIRT_ERR_FORMAT, &error, expected);
}

static void test_accepted(void) {
    test_begin("load: valid definitions, ASL spellings and this engine's extensions");
    static const char *const accepted[] = {
        /* the smallest machine */
        "{'StartAt': 'A', 'States': {'A': {'Type': 'Succeed'}}}",
        /* Iterator and Parameters: the older Map spellings */
        "{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'End': true, 'Parameters': {'v.$': '$$.Map.Item.Value'}, "
        "'Iterator': {'StartAt': 'X', 'States': {'X': {'Type': 'Succeed'}}}}}}",
        /* fractional seconds (an extension), every retrier field, jitter, null paths */
        "{'StartAt': 'A', 'Version': '1.0', 'Comment': 'c', 'TimeoutSeconds': 0.5, 'States': {'A': {'Type': 'Task', "
        "'Resource': 'f', 'TimeoutSeconds': 0.25, 'InputPath': null, 'ResultPath': null, 'OutputPath': null, "
        "'Retry': [{'ErrorEquals': ['X', 'States.Timeout'], 'IntervalSeconds': 0.01, 'MaxAttempts': 0, "
        "'BackoffRate': 1, 'MaxDelaySeconds': 2, 'JitterStrategy': 'FULL', 'Comment': 'r'}, "
        "{'ErrorEquals': ['States.ALL']}], "
        "'Catch': [{'ErrorEquals': ['States.ALL'], 'Next': 'B', 'ResultPath': '$.e'}], 'Next': 'B'}, "
        "'B': {'Type': 'Fail', 'ErrorPath': '$.e.Error', 'CausePath': '$.e.Cause'}}}",
        /* every kind of path step, and $$ in templates */
        "{'StartAt': 'A', 'States': {'A': {'Type': 'Pass', 'Parameters': {'a.$': '$.x[0][\\\"odd key\\\"]', "
        "'b.$': '$[\\'y z\\'].w', 'c.$': '$$.Execution.Input', 'd': [1, {'e.$': '$'}]}, 'End': true}}}",
        /* a Choice state reached only through Default and Choices */
        "{'StartAt': 'C', 'States': {'C': {'Type': 'Choice', 'Choices': [{'Not': {'Variable': '$.a', "
        "'StringMatches': 'x*'}, 'Next': 'D'}], 'Default': 'E'}, 'D': {'Type': 'Succeed'}, 'E': {'Type': 'Succeed'}}}",
    };
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        char *text = flow_test_text(accepted[i]);
        SpirtError error;
        spirt_error_clear(&error);
        FlowMachine *machine = flow_machine_load_string(text, NULL, &error);
        CHECKF(machine != NULL, "case %zu refused: %s", i, error.message);
        flow_machine_free(machine);
        free(text);
    }
}

static const char *const round_functions[] = {"admit",   "heartbeat", "compute_gradients", "average", "publish",
                                              "exchange", "aggregate", "update",            "evaluate"};

/* `context` is the name to leave out, or NULL. */
static int knows_round_function(void *context, const char *resource) {
    const char *missing = context;
    if (missing && strcmp(resource, missing) == 0) return 0;
    for (size_t i = 0; i < sizeof(round_functions) / sizeof(round_functions[0]); i++)
        if (strcmp(round_functions[i], resource) == 0) return 1;
    return 0;
}

static void test_round_workflow(void) {
    test_begin("load: workflows/round.json validates and names only the round's functions");
    char path[1024];
    snprintf(path, sizeof(path), "%s/workflows/round.json", SPIRT_SOURCE_DIR);
    SpirtError error;
    spirt_error_clear(&error);
    FlowMachine *machine = flow_machine_load_file(path, &error);
    CHECKF(machine != NULL, "%s", error.message);
    if (machine == NULL) return;
    CHECK(strstr(flow_machine_comment(machine), "training round") != NULL);
    CHECK_OK(flow_machine_check_resources(machine, knows_round_function, NULL, &error), &error);
    int status = flow_machine_check_resources(machine, knows_round_function, (void *)"exchange", &error);
    CHECK_ERROR(status, SPIRT_ERR_NOT_FOUND, &error, "state Exchange: no function named 'exchange'");
    status = flow_machine_check_resources(machine, knows_round_function, (void *)"compute_gradients", &error);
    CHECK_ERROR(status, SPIRT_ERR_NOT_FOUND, &error, "Gradients/ComputeGradient");
    flow_machine_free(machine);
}

int main(void) {
    test_refusals();
    test_malformed_json();
    test_accepted();
    test_round_workflow();
    return test_finish();
}
