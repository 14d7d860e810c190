/* aggregate.c -- the in-database robust rule over the round's averages.
 *
 * Event: {"peer", "round", "received": [peer ids from exchange],
 * "aggregator": "rule[:param=value,...]" (optional; default the run's)}.
 * Inputs are our own average and the received ones, ordered by peer id:
 * every honest peer that received the same set aggregates the same vectors
 * in the same order, and so computes a bit-identical aggregate. One
 * SPIRT.AGG runs in the database. If too few peers arrived for the rule's
 * precondition (Krum needs n >= 2f + 3, ...), the round falls back to the
 * coordinate-wise median, which needs only one input, and says so.
 *
 * A Byzantine peer aggregates what the honest peers aggregate: its own
 * input is the vector it published (spirt:r:{r}:sent), or nothing if it
 * published nothing they accept (silent, wrong-shape, nan, garbage). So it
 * holds the honest peers' model, and its next gradient -- the one it flips
 * or scales -- is taken where theirs are, as the attacks assume; with its
 * honest average as input it would drift to a model of its own, and its
 * attack would turn into mere noise. Result:
 * {"rule": name, "inputs": n, "peers": [ids], "fallback": null or why,
 *  "selected": [peer ids the rule selected] (Krum family, Bulyan)}. */
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"

typedef struct Input {
    char peer_id[SPIRT_PEER_ID_MAX + 1];
    char key[KEY_MAX];
} Input;

static int compare_inputs(const void *a, const void *b) {
    return strcmp(((const Input *)a)->peer_id, ((const Input *)b)->peer_id);
}

/* Appends the rule's parameters in SPIRT.AGG's syntax. */
static size_t append_parameters(const AggConfig *config, const char **argv, char text[][32], size_t argc) {
    size_t t = 0;
#define NUMBER(name, format, value)                                   \
    do {                                                              \
        argv[argc++] = name;                                          \
        snprintf(text[t], sizeof(text[t]), format, value);            \
        argv[argc++] = text[t++];                                     \
    } while (0)
    NUMBER("F", "%zu", config->f);
    switch (config->rule) {
    case AGG_TRIMMED_MEAN:
        if (config->trim != SIZE_MAX) NUMBER("TRIM", "%zu", config->trim);
        break;
    case AGG_MULTI_KRUM:
        if (config->m) NUMBER("M", "%zu", config->m);
        break;
    case AGG_GEOMED:
        NUMBER("MAXITER", "%d", config->max_iterations);
        NUMBER("TOL", "%.17g", config->tolerance);
        NUMBER("NU", "%.17g", config->nu);
        break;
    case AGG_CCLIP:
        NUMBER("TAU", "%.17g", config->tau);
        NUMBER("ITERS", "%d", config->clip_iterations);
        break;
    default: break;
    }
#undef NUMBER
    if (config->pre_nnm) {
        argv[argc++] = "PRE";
        argv[argc++] = "NNM";
    }
    return argc;
}

int fn_aggregate(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    StoreConn *db;
    const RunConfig *config;
    int status = fn_begin(context, event, 1, &parsed, &db, &config, error);
    if (status != SPIRT_OK) return status;
    AggConfig aggregator = config->aggregator;
    const char *spec = NULL;
    if ((status = fn_json_string_or(event, "aggregator", NULL, &spec, error)) != SPIRT_OK) return status;
    if (spec && (status = run_parse_aggregator(spec, &aggregator, error)) != SPIRT_OK) return status;

    const json_t *received = json_object_get(event, "received");
    if (received && !json_is_array(received))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "field 'received' must be a list of peer ids");
    size_t n = 1 + json_array_size(received);
    if (n > AGG_MAX_INPUTS) return spirt_error_set(error, SPIRT_ERR_INVALID, "too many inputs (%zu)", n);
    Input *inputs = calloc(n, sizeof(Input));
    const char **argv = calloc(2 * n + 40, sizeof(char *));
    if (inputs == NULL || argv == NULL) {
        free(inputs);
        free(argv);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    }
    snprintf(inputs[0].peer_id, sizeof(inputs[0].peer_id), "%s", parsed.peer_id);
    key_round_average(inputs[0].key, parsed.round);
    const AttackConfig *attack = &config->attack;
    int exclude_own = 0;
    if (attack->kind != ATTACK_NONE && !attack_poisons_labels(attack)) {
        int sent = 0;
        if (attack_publication_valid(attack) &&
            (status = store_exists(db, key_round_sent(inputs[0].key, parsed.round), &sent, error)) != SPIRT_OK) {
            free(inputs);
            free(argv);
            return status;
        }
        if (!sent) key_round_average(inputs[0].key, parsed.round);
        /* Published nothing acceptable: no own input, if there are others. */
        exclude_own = !attack_publication_valid(attack) && n > 1;
    }
    size_t index;
    const json_t *item;
    json_array_foreach((json_t *)received, index, item) {
        const char *id = json_string_value(item);
        if (id == NULL || !identity_peer_id_valid(id) || strcmp(id, parsed.peer_id) == 0) {
            status = spirt_error_set(error, SPIRT_ERR_INVALID, "received[%zu] is not another peer's id", index);
            break;
        }
        snprintf(inputs[1 + index].peer_id, sizeof(inputs[0].peer_id), "%s", id);
        key_round_received(inputs[1 + index].key, parsed.round, id);
    }
    if (status == SPIRT_OK && exclude_own) inputs[0] = inputs[--n];
    qsort(inputs, n, sizeof(Input), compare_inputs);
    for (size_t i = 1; status == SPIRT_OK && i < n; i++)
        if (strcmp(inputs[i].peer_id, inputs[i - 1].peer_id) == 0)
            status = spirt_error_set(error, SPIRT_ERR_INVALID, "peer %s received twice", inputs[i].peer_id);

    /* The rule's precondition, checked here so a round with too few peers
     * degrades to the median instead of failing. */
    char fallback[SPIRT_ERROR_MESSAGE_MAX] = "";
    size_t param_count = nn_model_kind_param_count(config->model);
    SpirtError precondition;
    if (status == SPIRT_OK && agg_check(&aggregator, n, param_count, &precondition) != SPIRT_OK) {
        snprintf(fallback, sizeof(fallback), "%s", precondition.message);
        AggConfig median = agg_config_default(AGG_MEDIAN);
        median.pre_nnm = 0;
        aggregator = median;
    }
    char destination[KEY_MAX], center[KEY_MAX];
    char text[16][32];
    StoreReply *reply = NULL;
    if (status == SPIRT_OK) {
        size_t argc = 0;
        argv[argc++] = "SPIRT.AGG";
        argv[argc++] = key_round_aggregate(destination, parsed.round);
        argv[argc++] = "RULE";
        argv[argc++] = agg_rule_name(aggregator.rule);
        argc = append_parameters(&aggregator, argv, text, argc);
        if (aggregator.rule == AGG_CCLIP && parsed.round > 0) {
            /* Centered clipping starts from the last aggregate, if we still
             * have it (the first round, or after a restart, uses the median). */
            int exists = 0;
            key_round_aggregate(center, parsed.round - 1);
            if (store_exists(db, center, &exists, error) == SPIRT_OK && exists) {
                argv[argc++] = "CENTER";
                argv[argc++] = center;
            }
        }
        argv[argc++] = "REPORT";
        argv[argc++] = "YES";
        argv[argc++] = "SRC";
        snprintf(text[15], sizeof(text[15]), "%zu", n);
        argv[argc++] = text[15];
        for (size_t i = 0; i < n; i++) argv[argc++] = inputs[i].key;
        status = store_command_argv(db, argc, argv, NULL, &reply, error);
    }
    json_t *peers = json_array(), *selected = json_array();
    for (size_t i = 0; status == SPIRT_OK && i < n; i++) json_array_append_new(peers, json_string(inputs[i].peer_id));
    if (status == SPIRT_OK && reply && reply->type == STORE_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            const StoreReply *name = reply->element[i], *value = reply->element[i + 1];
            if (name->str && strcmp(name->str, "selected") == 0 && value->type == STORE_REPLY_ARRAY)
                for (size_t k = 0; k < value->elements; k++)
                    if (value->element[k]->type == STORE_REPLY_INTEGER && value->element[k]->integer >= 0 &&
                        (size_t)value->element[k]->integer < n)
                        json_array_append_new(selected, json_string(inputs[value->element[k]->integer].peer_id));
        }
    }
    store_reply_free(reply);
    free(inputs);
    free(argv);
    if (status != SPIRT_OK) {
        json_decref(peers);
        json_decref(selected);
        return status;
    }
    *result = json_pack("{s:s, s:I, s:o, s:o, s:o}", "rule", agg_rule_name(aggregator.rule), "inputs", (json_int_t)n,
                        "peers", peers, "fallback", fallback[0] ? json_string(fallback) : json_null(), "selected",
                        selected);
    return SPIRT_OK;
}
