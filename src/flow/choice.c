/* choice.c -- Choice rules: reading them from a definition and evaluating
 * them against a state's input.
 *
 * A rule is either a comparison -- "Variable" plus exactly one operator such
 * as "NumericLessThan": 3 or "StringEqualsPath": "$.expected" -- or a
 * boolean combination: "And"/"Or" (non-empty arrays of rules) or "Not" (one
 * rule). Top-level rules carry "Next"; nested rules must not.
 *
 * As in ASL, a comparison whose variable has another type than the operator
 * expects is simply false (NumericEquals on a string), while a Variable that
 * names nothing is a States.Runtime error -- except for IsPresent, which is
 * there to test exactly that. Timestamp operators are not supported. */
#include "flow_internal.h"

#include <stdlib.h>
#include <string.h>

typedef enum OperandType { OPERAND_STRING, OPERAND_NUMBER, OPERAND_BOOLEAN, OPERAND_TYPE_TEST } OperandType;

typedef enum Comparison {
    COMPARE_EQUALS,
    COMPARE_LESS,
    COMPARE_GREATER,
    COMPARE_LESS_EQUALS,
    COMPARE_GREATER_EQUALS,
    COMPARE_MATCHES,
    COMPARE_IS_NULL,
    COMPARE_IS_PRESENT,
    COMPARE_IS_NUMERIC,
    COMPARE_IS_STRING,
    COMPARE_IS_BOOLEAN
} Comparison;

typedef struct Operator {
    const char *name;
    OperandType type;
    Comparison comparison;
    int operand_is_path;
} Operator;

static const Operator operators[] = {
    {"StringEquals", OPERAND_STRING, COMPARE_EQUALS, 0},
    {"StringEqualsPath", OPERAND_STRING, COMPARE_EQUALS, 1},
    {"StringLessThan", OPERAND_STRING, COMPARE_LESS, 0},
    {"StringLessThanPath", OPERAND_STRING, COMPARE_LESS, 1},
    {"StringGreaterThan", OPERAND_STRING, COMPARE_GREATER, 0},
    {"StringGreaterThanPath", OPERAND_STRING, COMPARE_GREATER, 1},
    {"StringLessThanEquals", OPERAND_STRING, COMPARE_LESS_EQUALS, 0},
    {"StringLessThanEqualsPath", OPERAND_STRING, COMPARE_LESS_EQUALS, 1},
    {"StringGreaterThanEquals", OPERAND_STRING, COMPARE_GREATER_EQUALS, 0},
    {"StringGreaterThanEqualsPath", OPERAND_STRING, COMPARE_GREATER_EQUALS, 1},
    {"StringMatches", OPERAND_STRING, COMPARE_MATCHES, 0},
    {"NumericEquals", OPERAND_NUMBER, COMPARE_EQUALS, 0},
    {"NumericEqualsPath", OPERAND_NUMBER, COMPARE_EQUALS, 1},
    {"NumericLessThan", OPERAND_NUMBER, COMPARE_LESS, 0},
    {"NumericLessThanPath", OPERAND_NUMBER, COMPARE_LESS, 1},
    {"NumericGreaterThan", OPERAND_NUMBER, COMPARE_GREATER, 0},
    {"NumericGreaterThanPath", OPERAND_NUMBER, COMPARE_GREATER, 1},
    {"NumericLessThanEquals", OPERAND_NUMBER, COMPARE_LESS_EQUALS, 0},
    {"NumericLessThanEqualsPath", OPERAND_NUMBER, COMPARE_LESS_EQUALS, 1},
    {"NumericGreaterThanEquals", OPERAND_NUMBER, COMPARE_GREATER_EQUALS, 0},
    {"NumericGreaterThanEqualsPath", OPERAND_NUMBER, COMPARE_GREATER_EQUALS, 1},
    {"BooleanEquals", OPERAND_BOOLEAN, COMPARE_EQUALS, 0},
    {"BooleanEqualsPath", OPERAND_BOOLEAN, COMPARE_EQUALS, 1},
    {"IsNull", OPERAND_TYPE_TEST, COMPARE_IS_NULL, 0},
    {"IsPresent", OPERAND_TYPE_TEST, COMPARE_IS_PRESENT, 0},
    {"IsNumeric", OPERAND_TYPE_TEST, COMPARE_IS_NUMERIC, 0},
    {"IsString", OPERAND_TYPE_TEST, COMPARE_IS_STRING, 0},
    {"IsBoolean", OPERAND_TYPE_TEST, COMPARE_IS_BOOLEAN, 0},
};
#define OPERATOR_COUNT (sizeof(operators) / sizeof(operators[0]))

static int find_operator(const char *name) {
    for (size_t i = 0; i < OPERATOR_COUNT; i++)
        if (strcmp(operators[i].name, name) == 0) return (int)i;
    return -1;
}

static int compile_nested(FlowLoader *loader, const json_t *value, size_t index, int is_last, void *slot,
                          void *context) {
    (void)index, (void)is_last, (void)context;
    return flow_choice_compile(loader, value, 0, slot);
}

/* The rules under And / Or (an array) or Not (one rule). */
static int compile_children(FlowLoader *loader, const json_t *object, const char *field, FlowChoiceRule *rule) {
    if (rule->kind != FLOW_CHOICE_NOT)
        return flow_loader_array(loader, object, field, 1, 0, "Choice rules", sizeof(FlowChoiceRule),
                                 (void **)&rule->children, &rule->child_count, compile_nested, NULL);
    json_t *value = json_object_get(object, field);
    size_t saved = flow_loader_push(loader, field);
    if (!json_is_object(value)) return flow_loader_fail(loader, "must be a Choice rule (an object)");
    rule->children = calloc(1, sizeof(*rule->children));
    if (rule->children == NULL) return flow_loader_nomem(loader);
    rule->child_count = 1;
    int status = flow_choice_compile(loader, value, 0, &rule->children[0]);
    if (status != SPIRT_OK) return status;
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

static int compile_operand(FlowLoader *loader, const json_t *value, const Operator *op, FlowChoiceRule *rule) {
    size_t saved = flow_loader_push(loader, op->name);
    if (op->operand_is_path) {
        if (!json_is_string(value)) return flow_loader_fail(loader, "must be a path string");
        rule->operand_is_path = 1;
        int status = flow_loader_path(loader, value, 1, &rule->operand_path);
        if (status != SPIRT_OK) return status;
    } else {
        int ok = 0;
        switch (op->type) {
        case OPERAND_STRING: ok = json_is_string(value); break;
        case OPERAND_NUMBER: ok = json_is_number(value); break;
        case OPERAND_BOOLEAN:
        case OPERAND_TYPE_TEST: ok = json_is_boolean(value); break;
        }
        if (!ok)
            return flow_loader_fail(loader, "must be a %s",
                                    op->type == OPERAND_STRING   ? "string"
                                    : op->type == OPERAND_NUMBER ? "number"
                                                                 : "boolean");
        rule->operand = json_deep_copy(value);
        if (rule->operand == NULL) return flow_loader_nomem(loader);
    }
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

int flow_choice_compile(FlowLoader *loader, const json_t *value, int top_level, FlowChoiceRule *rule) {
    memset(rule, 0, sizeof(*rule));
    rule->next = -1;
    if (!json_is_object(value)) return flow_loader_fail(loader, "must be a Choice rule (an object)");

    /* Which kind of rule, from its members: exactly one of And / Or / Not /
     * an operator; everything else must be Variable, Next or Comment. */
    const char *key;
    json_t *member;
    const char *kind_field = NULL;
    json_object_foreach((json_t *)value, key, member) {
        int is_kind = strcmp(key, "And") == 0 || strcmp(key, "Or") == 0 || strcmp(key, "Not") == 0 ||
                      find_operator(key) >= 0;
        if (!is_kind) {
            if (strcmp(key, "Variable") == 0 || strcmp(key, "Comment") == 0) continue;
            if (strcmp(key, "Next") == 0) {
                if (top_level) continue;
                flow_loader_push(loader, key);
                return flow_loader_fail(loader, "only top-level Choice rules may have Next");
            }
            flow_loader_push(loader, key);
            if (strncmp(key, "Timestamp", 9) == 0 || strcmp(key, "IsTimestamp") == 0)
                return flow_loader_fail(loader, "timestamp comparisons are not supported by this engine");
            return flow_loader_fail(loader, "unknown field in a Choice rule");
        }
        if (kind_field != NULL) {
            flow_loader_push(loader, key);
            return flow_loader_fail(loader, "a Choice rule has exactly one operator (\"%s\" is already given)",
                                    kind_field);
        }
        kind_field = key;
    }
    if (kind_field == NULL)
        return flow_loader_fail(loader, "a Choice rule needs an operator (e.g. NumericEquals) or And/Or/Not");

    json_t *comment = json_object_get(value, "Comment");
    if (comment != NULL && !json_is_string(comment)) {
        flow_loader_push(loader, "Comment");
        return flow_loader_fail(loader, "must be a string");
    }

    if (top_level) {
        json_t *next = json_object_get(value, "Next");
        size_t saved = flow_loader_push(loader, "Next");
        if (next == NULL) return flow_loader_fail(loader, "required field missing (top-level Choice rules need Next)");
        if (!json_is_string(next)) return flow_loader_fail(loader, "must be a state name (a string)");
        rule->next_name = strdup(json_string_value(next));
        if (rule->next_name == NULL) return flow_loader_nomem(loader);
        flow_loader_pop(loader, saved);
    }

    json_t *variable = json_object_get(value, "Variable");
    json_t *operand = json_object_get(value, kind_field);
    if (strcmp(kind_field, "And") == 0 || strcmp(kind_field, "Or") == 0 || strcmp(kind_field, "Not") == 0) {
        rule->kind = kind_field[0] == 'A' ? FLOW_CHOICE_AND : kind_field[0] == 'O' ? FLOW_CHOICE_OR : FLOW_CHOICE_NOT;
        if (variable != NULL) {
            flow_loader_push(loader, "Variable");
            return flow_loader_fail(loader, "not allowed with %s", kind_field);
        }
        return compile_children(loader, value, kind_field, rule);
    }

    rule->kind = FLOW_CHOICE_COMPARE;
    rule->operator_index = find_operator(kind_field);
    size_t saved = flow_loader_push(loader, "Variable");
    if (variable == NULL) return flow_loader_fail(loader, "required field missing");
    if (!json_is_string(variable)) return flow_loader_fail(loader, "must be a path string");
    int status = flow_loader_path(loader, variable, 1, &rule->variable);
    if (status != SPIRT_OK) return status;
    flow_loader_pop(loader, saved);
    return compile_operand(loader, operand, &operators[rule->operator_index], rule);
}

void flow_choice_deinit(FlowChoiceRule *rule) {
    if (rule == NULL) return;
    for (size_t i = 0; i < rule->child_count; i++) flow_choice_deinit(&rule->children[i]);
    free(rule->children);
    free(rule->next_name);
    flow_path_deinit(&rule->variable);
    flow_path_deinit(&rule->operand_path);
    json_decref(rule->operand);
    memset(rule, 0, sizeof(*rule));
}

/* Glob matching for StringMatches: '*' matches any run of characters; "\*"
 * is a literal star and "\\" a literal backslash. */
static int glob_matches(const char *pattern, const char *text) {
    const char *star = NULL, *resume = NULL;
    while (*text) {
        if (*pattern == '*') {
            star = pattern++;
            resume = text;
            continue;
        }
        const char *literal = pattern;
        if (*literal == '\\' && (literal[1] == '*' || literal[1] == '\\')) literal++;
        if (*literal != '\0' && *literal == *text) {
            pattern = literal + 1;
            text++;
            continue;
        }
        if (star == NULL) return 0;
        pattern = star + 1;
        text = ++resume;
    }
    while (*pattern == '*') pattern++;
    return *pattern == '\0';
}

static int order_holds(Comparison comparison, int order) {
    switch (comparison) {
    case COMPARE_EQUALS: return order == 0;
    case COMPARE_LESS: return order < 0;
    case COMPARE_GREATER: return order > 0;
    case COMPARE_LESS_EQUALS: return order <= 0;
    case COMPARE_GREATER_EQUALS: return order >= 0;
    default: return 0;
    }
}

static int compare(const FlowChoiceRule *rule, const FlowRoots *roots, int *matched, FlowFailure *failure) {
    const Operator *op = &operators[rule->operator_index];
    json_t *value = flow_roots_get(roots, &rule->variable);
    if (op->comparison == COMPARE_IS_PRESENT) {
        *matched = (value != NULL) == json_is_true(rule->operand);
        return SPIRT_OK;
    }
    if (value == NULL)
        return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME,
                         "Choice: the Variable '%s' found nothing in the %s", rule->variable.text,
                         rule->variable.context ? "context object" : "input");
    int wanted = 1;
    if (op->type == OPERAND_TYPE_TEST) wanted = json_is_true(rule->operand);
    switch (op->comparison) {
    case COMPARE_IS_NULL: *matched = json_is_null(value) == wanted; return SPIRT_OK;
    case COMPARE_IS_NUMERIC: *matched = json_is_number(value) == wanted; return SPIRT_OK;
    case COMPARE_IS_STRING: *matched = json_is_string(value) == wanted; return SPIRT_OK;
    case COMPARE_IS_BOOLEAN: *matched = json_is_boolean(value) == wanted; return SPIRT_OK;
    default: break;
    }

    json_t *operand = rule->operand;
    if (rule->operand_is_path) {
        operand = flow_roots_get(roots, &rule->operand_path);
        if (operand == NULL)
            return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME,
                             "Choice: the path '%s' of %s found nothing", rule->operand_path.text, op->name);
    }
    *matched = 0;
    switch (op->type) {
    case OPERAND_STRING:
        if (!json_is_string(value) || !json_is_string(operand)) return SPIRT_OK;
        if (op->comparison == COMPARE_MATCHES)
            *matched = glob_matches(json_string_value(operand), json_string_value(value));
        else
            *matched = order_holds(op->comparison, strcmp(json_string_value(value), json_string_value(operand)));
        return SPIRT_OK;
    case OPERAND_NUMBER: {
        if (!json_is_number(value) || !json_is_number(operand)) return SPIRT_OK;
        double a = json_number_value(value), b = json_number_value(operand);
        *matched = order_holds(op->comparison, a < b ? -1 : a > b ? 1 : 0);
        return SPIRT_OK;
    }
    case OPERAND_BOOLEAN:
        if (!json_is_boolean(value) || !json_is_boolean(operand)) return SPIRT_OK;
        *matched = json_is_true(value) == json_is_true(operand);
        return SPIRT_OK;
    case OPERAND_TYPE_TEST: break;
    }
    return SPIRT_OK;
}

int flow_choice_evaluate(const FlowChoiceRule *rule, const FlowRoots *roots, int *matched, FlowFailure *failure) {
    switch (rule->kind) {
    case FLOW_CHOICE_COMPARE: return compare(rule, roots, matched, failure);
    case FLOW_CHOICE_NOT: {
        int inner = 0;
        int status = flow_choice_evaluate(&rule->children[0], roots, &inner, failure);
        *matched = !inner;
        return status;
    }
    case FLOW_CHOICE_AND:
    case FLOW_CHOICE_OR: {
        /* Short-circuit, so that a guard like And[IsPresent x, x > 3] does
         * not fail on a missing x. */
        int is_and = rule->kind == FLOW_CHOICE_AND;
        for (size_t i = 0; i < rule->child_count; i++) {
            int inner = 0;
            int status = flow_choice_evaluate(&rule->children[i], roots, &inner, failure);
            if (status != SPIRT_OK) return status;
            if (inner != is_and) {
                *matched = inner;
                return SPIRT_OK;
            }
        }
        *matched = is_and;
        return SPIRT_OK;
    }
    }
    return SPIRT_OK;
}
