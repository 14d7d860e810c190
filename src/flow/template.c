/* template.c -- Parameters, ItemSelector and ResultSelector.
 *
 * A template is a JSON value in which object members whose name ends in
 * ".$" take their value from a path, at run time: {"batch.$": "$.b"} becomes
 * {"batch": <the input's b>}. Templates are compiled once at load time
 * (paths parsed, constant subtrees kept as literals) and expanded per state
 * entry. Members are looked for in nested objects and inside arrays too.
 *
 * Expansion returns a document of its own: literals and the values paths
 * find are deep-copied, never shared by reference. The sources are the
 * machine (shared by every execution) and, in a Map, the Map's input
 * (shared by its worker threads); taking references to them would touch
 * their reference counts from several threads at once. */
#include "flow_internal.h"

#include <stdlib.h>
#include <string.h>

static int has_dynamic_member(const json_t *value) {
    if (json_is_object(value)) {
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)value, key, member) {
            size_t length = strlen(key);
            if (length >= 2 && strcmp(key + length - 2, ".$") == 0) return 1;
            if (has_dynamic_member(member)) return 1;
        }
    } else if (json_is_array(value)) {
        size_t index;
        json_t *element;
        json_array_foreach((json_t *)value, index, element) {
            if (has_dynamic_member(element)) return 1;
        }
    }
    return 0;
}

static int compile_value(FlowLoader *loader, const json_t *value, FlowTemplate *out);

static int compile_object(FlowLoader *loader, const json_t *value, FlowTemplate *out) {
    out->kind = FLOW_TEMPLATE_OBJECT;
    size_t count = json_object_size(value);
    out->children = calloc(count ? count : 1, sizeof(*out->children));
    if (out->children == NULL) return flow_loader_nomem(loader);
    const char *key;
    json_t *member;
    json_object_foreach((json_t *)value, key, member) {
        FlowTemplate *child = &out->children[out->child_count++];
        size_t saved = flow_loader_push(loader, key);
        size_t length = strlen(key);
        int dynamic = length >= 2 && strcmp(key + length - 2, ".$") == 0;
        child->key = dynamic ? strndup(key, length - 2) : strdup(key);
        if (child->key == NULL) return flow_loader_nomem(loader);
        if (dynamic) {
            if (length == 2) return flow_loader_fail(loader, "a member name must precede \".$\"");
            if (json_object_get(value, child->key) != NULL)
                return flow_loader_fail(loader, "both \"%s\" and \"%s\" are given", child->key, key);
            if (!json_is_string(member))
                return flow_loader_fail(loader, "must be a path string (the name ends in \".$\")");
            child->kind = FLOW_TEMPLATE_PATH;
            int status = flow_loader_path(loader, member, 1, &child->path);
            if (status != SPIRT_OK) return status;
        } else {
            int status = compile_value(loader, member, child);
            if (status != SPIRT_OK) return status;
        }
        flow_loader_pop(loader, saved);
    }
    return SPIRT_OK;
}

static int compile_value(FlowLoader *loader, const json_t *value, FlowTemplate *out) {
    if (!has_dynamic_member(value)) {
        out->kind = FLOW_TEMPLATE_LITERAL;
        out->literal = json_deep_copy(value);
        return out->literal ? SPIRT_OK : flow_loader_nomem(loader);
    }
    if (json_is_object(value)) return compile_object(loader, value, out);
    out->kind = FLOW_TEMPLATE_ARRAY;
    size_t count = json_array_size(value);
    out->children = calloc(count ? count : 1, sizeof(*out->children));
    if (out->children == NULL) return flow_loader_nomem(loader);
    for (size_t i = 0; i < count; i++) {
        size_t saved = flow_loader_push_index(loader, i);
        int status = compile_value(loader, json_array_get(value, i), &out->children[out->child_count++]);
        if (status != SPIRT_OK) return status;
        flow_loader_pop(loader, saved);
    }
    return SPIRT_OK;
}

int flow_template_compile(FlowLoader *loader, const json_t *value, FlowTemplate *template_out) {
    memset(template_out, 0, sizeof(*template_out));
    /* ASL templates are objects; a bare literal would be legal JSON but is
     * almost always a mistake ("Parameters": "$.x" instead of "x.$"). */
    if (!json_is_object(value)) return flow_loader_fail(loader, "must be an object");
    return compile_value(loader, value, template_out);
}

void flow_template_deinit(FlowTemplate *template_value) {
    if (template_value == NULL) return;
    for (size_t i = 0; i < template_value->child_count; i++) flow_template_deinit(&template_value->children[i]);
    free(template_value->children);
    free(template_value->key);
    json_decref(template_value->literal);
    flow_path_deinit(&template_value->path);
    memset(template_value, 0, sizeof(*template_value));
}

json_t *flow_template_expand(const FlowTemplate *template_value, const FlowRoots *roots, const char *field,
                             FlowFailure *failure) {
    switch (template_value->kind) {
    case FLOW_TEMPLATE_LITERAL: {
        json_t *copy = json_deep_copy(template_value->literal);
        if (copy == NULL) goto nomem;
        return copy;
    }
    case FLOW_TEMPLATE_PATH: {
        json_t *found = flow_roots_get(roots, &template_value->path);
        if (found == NULL) {
            flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME,
                      "%s: the path '%s' for '%s.$' found nothing in the %s", field, template_value->path.text,
                      template_value->key, template_value->path.context ? "context object" : "input");
            return NULL;
        }
        json_t *copy = json_deep_copy(found);
        if (copy == NULL) goto nomem;
        return copy;
    }
    case FLOW_TEMPLATE_OBJECT:
    case FLOW_TEMPLATE_ARRAY: {
        int is_object = template_value->kind == FLOW_TEMPLATE_OBJECT;
        json_t *out = is_object ? json_object() : json_array();
        if (out == NULL) goto nomem;
        for (size_t i = 0; i < template_value->child_count; i++) {
            const FlowTemplate *child = &template_value->children[i];
            json_t *value = flow_template_expand(child, roots, field, failure);
            if (value == NULL) {
                json_decref(out);
                return NULL;
            }
            int status = is_object ? json_object_set_new(out, child->key, value) : json_array_append_new(out, value);
            if (status != 0) {
                json_decref(out);
                goto nomem;
            }
        }
        return out;
    }
    }
nomem:
    flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "%s: out of memory", field);
    return NULL;
}
