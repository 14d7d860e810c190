/* path.c -- the JSONPath subset of the workflow engine: reference paths.
 *
 * A reference path names at most one node, which is all ASL needs for
 * InputPath, OutputPath, ResultPath, ItemsPath, Choice variables and "key.$"
 * members:
 *
 *   path  := ( "$" | "$$" ) step*
 *   step  := "." name                 member; name = 1+ characters other than
 *                                     . [ ] ' " * ? @ ( ) and white space
 *          | "['" text "']"           member with any characters but '
 *          | "[\"" text "\"]"         the same with double quotes
 *          | "[" digits "]"           array index, from 0
 *
 * "$" starts at the state's input, "$$" at the context object. Wildcards,
 * recursive descent (..), slices, filters, negative indices and intrinsic
 * functions are refused at load time with a message saying so. */
#include "flow_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static int is_name_char(char c) {
    return c != '\0' && c != '.' && c != '[' && c != ']' && c != '\'' && c != '"' && c != '*' &&
           c != '?' && c != '@' && c != '(' && c != ')' && !isspace((unsigned char)c);
}

static int append_step(FlowPath *path, const char *name, size_t name_length, size_t index) {
    FlowPathStep *steps = realloc(path->steps, (path->step_count + 1) * sizeof(*steps));
    if (steps == NULL) return SPIRT_ERR_NOMEM;
    path->steps = steps;
    FlowPathStep *step = &steps[path->step_count];
    step->name = NULL;
    step->index = index;
    if (name != NULL) {
        step->name = strndup(name, name_length);
        if (step->name == NULL) return SPIRT_ERR_NOMEM;
    }
    path->step_count++;
    return SPIRT_OK;
}

static int parse_steps(const char *cursor, FlowPath *path, const char **why) {
    while (*cursor) {
        if (cursor[0] == '.') {
            if (cursor[1] == '.') return *why = "recursive descent (..) is not supported", SPIRT_ERR_FORMAT;
            if (cursor[1] == '*') return *why = "wildcards are not supported", SPIRT_ERR_FORMAT;
            const char *start = ++cursor;
            while (is_name_char(*cursor)) cursor++;
            if (cursor == start) return *why = "a '.' must be followed by a member name", SPIRT_ERR_FORMAT;
            if (*cursor && *cursor != '.' && *cursor != '[')
                return *why = "unexpected character in a member name", SPIRT_ERR_FORMAT;
            if (append_step(path, start, (size_t)(cursor - start), 0)) return SPIRT_ERR_NOMEM;
        } else if (cursor[0] == '[') {
            cursor++;
            if (*cursor == '\'' || *cursor == '"') {
                char quote = *cursor++;
                const char *start = cursor;
                while (*cursor && *cursor != quote) cursor++;
                if (*cursor != quote || cursor[1] != ']')
                    return *why = "unterminated quoted member name", SPIRT_ERR_FORMAT;
                if (cursor == start) return *why = "empty member name", SPIRT_ERR_FORMAT;
                if (append_step(path, start, (size_t)(cursor - start), 0)) return SPIRT_ERR_NOMEM;
                cursor += 2;
            } else if (isdigit((unsigned char)*cursor)) {
                size_t index = 0;
                while (isdigit((unsigned char)*cursor)) {
                    if (index > 100000000) return *why = "array index too large", SPIRT_ERR_FORMAT;
                    index = index * 10 + (size_t)(*cursor++ - '0');
                }
                if (*cursor != ']') return *why = "only plain array indices [n] are supported", SPIRT_ERR_FORMAT;
                if (append_step(path, NULL, 0, index)) return SPIRT_ERR_NOMEM;
                cursor++;
            } else if (*cursor == '*') {
                return *why = "wildcards are not supported", SPIRT_ERR_FORMAT;
            } else if (*cursor == '?') {
                return *why = "filter expressions are not supported", SPIRT_ERR_FORMAT;
            } else {
                return *why = "only [n], ['name'] and [\"name\"] are supported inside brackets", SPIRT_ERR_FORMAT;
            }
        } else {
            return *why = "expected '.' or '[' after a path step", SPIRT_ERR_FORMAT;
        }
    }
    return SPIRT_OK;
}

int flow_path_parse(const char *text, FlowPath *path, const char **why) {
    memset(path, 0, sizeof(*path));
    static const char *unused;
    if (why == NULL) why = &unused;
    if (text[0] != '$') {
        if (strncmp(text, "States.", 7) == 0)
            return *why = "intrinsic functions are not supported", SPIRT_ERR_FORMAT;
        return *why = "a path must start with '$'", SPIRT_ERR_FORMAT;
    }
    path->text = strdup(text);
    if (path->text == NULL) return SPIRT_ERR_NOMEM;
    const char *cursor = text + 1;
    if (*cursor == '$') {
        path->context = 1;
        cursor++;
    }
    int status = parse_steps(cursor, path, why);
    if (status != SPIRT_OK) flow_path_deinit(path);
    return status;
}

void flow_path_deinit(FlowPath *path) {
    if (path == NULL) return;
    for (size_t i = 0; i < path->step_count; i++) free(path->steps[i].name);
    free(path->steps);
    free(path->text);
    memset(path, 0, sizeof(*path));
}

json_t *flow_path_get(const FlowPath *path, json_t *root) {
    json_t *node = root;
    for (size_t i = 0; node != NULL && i < path->step_count; i++) {
        const FlowPathStep *step = &path->steps[i];
        if (step->name != NULL)
            node = json_is_object(node) ? json_object_get(node, step->name) : NULL;
        else
            node = json_is_array(node) ? json_array_get(node, step->index) : NULL;
    }
    return node;
}

json_t *flow_roots_get(const FlowRoots *roots, const FlowPath *path) {
    json_t *root = path->context ? roots->context : roots->input;
    return root == NULL ? NULL : flow_path_get(path, root);
}

/* Builds the copy of `node` with `value` at steps[from..]. `node` may be NULL
 * (nothing there yet: an object is made). */
static json_t *set_from(json_t *node, const FlowPath *path, size_t from, json_t *value, const char **why) {
    if (from == path->step_count) return json_incref(value);
    const FlowPathStep *step = &path->steps[from];
    if (step->name == NULL) {
        *why = "ResultPath cannot index into arrays";
        return NULL;
    }
    json_t *copy;
    if (node == NULL) {
        copy = json_object();
    } else if (json_is_object(node)) {
        copy = json_copy(node); /* shallow: children are shared, not changed */
    } else {
        *why = "a node on the path exists and is not an object";
        return NULL;
    }
    if (copy == NULL) {
        *why = "out of memory";
        return NULL;
    }
    json_t *child = set_from(json_object_get(node, step->name), path, from + 1, value, why);
    if (child == NULL || json_object_set_new(copy, step->name, child) != 0) {
        if (child != NULL) *why = "out of memory";
        json_decref(copy);
        return NULL;
    }
    return copy;
}

json_t *flow_path_set(json_t *root, const FlowPath *path, json_t *value, const char **why) {
    static const char *unused;
    if (why == NULL) why = &unused;
    if (path->step_count > 0 && root != NULL && !json_is_object(root)) {
        *why = "the state's input is not an object";
        return NULL;
    }
    return set_from(root, path, 0, value, why);
}
