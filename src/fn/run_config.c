/* run_config.c -- the run's configuration as stored in spirt:config, and
 * the aggregator spec syntax "rule[:param=value,...]". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"

double run_learning_rate(const RunConfig *config, uint64_t round) {
    double lr = config->optimizer.learning_rate;
    if (!config->cosine_schedule || config->rounds == 0) return lr;
    /* Half a cosine over the run, as PyTorch's CosineAnnealingLR with
     * T_max = rounds: lr at round 0, approaching 0 at the end. */
    return lr * 0.5 * (1.0 + cos(M_PI * (double)round / (double)config->rounds));
}

void run_config_default(RunConfig *config) {
    memset(config, 0, sizeof(*config));
    snprintf(config->peer_id, sizeof(config->peer_id), "peer-0");
    config->model = NN_MLP;
    config->batch_size = 32;
    config->batches_per_round = 2;
    config->seed = 1;
    config->rounds = 100;
    config->evaluate_every = 10;
    config->optimizer = optim_config_default(OPTIM_MOMENTUM, 0.05f);
    config->aggregator = agg_config_default(AGG_MEAN);
    config->attack = attack_config_default(ATTACK_NONE);
    config->exchange_wait_seconds = 10.0;
    config->silent_after_rounds = 3;
    config->silent_wait_seconds = 0.1;
    config->exchange_in_database = 1;
    config->heartbeat_ttl_ms = 3000;
    config->dead_after_ms = 3000;
    config->keep_rounds = 3;
    config->checkpoint_every = 10;
}

/* --- Aggregator specs --- */

static int parse_count(const char *name, const char *text, size_t *value, SpirtError *error) {
    char *end = NULL;
    unsigned long long parsed = strtoull(text, &end, 10);
    if (*text == '-' || end == text || *end != '\0' || parsed > 1000000)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregator parameter %s: '%s' is not a count", name, text);
    *value = (size_t)parsed;
    return SPIRT_OK;
}

static int parse_positive(const char *name, const char *text, double *value, SpirtError *error) {
    char *end = NULL;
    double parsed = strtod(text, &end);
    if (end == text || *end != '\0' || !isfinite(parsed) || parsed <= 0)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregator parameter %s: '%s' is not a positive number",
                               name, text);
    *value = parsed;
    return SPIRT_OK;
}

int run_parse_aggregator(const char *spec, AggConfig *config, SpirtError *error) {
    if (spec == NULL || *spec == '\0') return spirt_error_set(error, SPIRT_ERR_INVALID, "empty aggregator");
    char buffer[256];
    if (strlen(spec) >= sizeof(buffer)) return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregator spec too long");
    memcpy(buffer, spec, strlen(spec) + 1);
    char *parameters = strchr(buffer, ':');
    if (parameters) *parameters++ = '\0';
    AggRule rule;
    int status = agg_rule_parse(buffer, &rule, error);
    if (status != SPIRT_OK) return status;
    AggConfig parsed = agg_config_default(rule);
    char *save = NULL;
    for (char *item = parameters ? strtok_r(parameters, ",", &save) : NULL; item; item = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(item, '=');
        if (equals == NULL)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregator parameter '%s' is not name=value", item);
        *equals = '\0';
        const char *name = item, *text = equals + 1;
        size_t count;
        double number;
        if (strcmp(name, "f") == 0) {
            if ((status = parse_count(name, text, &parsed.f, error)) != SPIRT_OK) return status;
        } else if (strcmp(name, "trim") == 0 && rule == AGG_TRIMMED_MEAN) {
            if ((status = parse_count(name, text, &parsed.trim, error)) != SPIRT_OK) return status;
        } else if (strcmp(name, "m") == 0 && rule == AGG_MULTI_KRUM) {
            if ((status = parse_count(name, text, &parsed.m, error)) != SPIRT_OK) return status;
        } else if (strcmp(name, "iterations") == 0 && (rule == AGG_GEOMED || rule == AGG_CCLIP)) {
            if ((status = parse_count(name, text, &count, error)) != SPIRT_OK) return status;
            if (count == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregator parameter iterations must be >= 1");
            if (rule == AGG_GEOMED)
                parsed.max_iterations = (int)count;
            else
                parsed.clip_iterations = (int)count;
        } else if (strcmp(name, "tolerance") == 0 && rule == AGG_GEOMED) {
            if ((status = parse_positive(name, text, &parsed.tolerance, error)) != SPIRT_OK) return status;
        } else if (strcmp(name, "nu") == 0 && rule == AGG_GEOMED) {
            if ((status = parse_positive(name, text, &parsed.nu, error)) != SPIRT_OK) return status;
        } else if (strcmp(name, "tau") == 0 && rule == AGG_CCLIP) {
            if ((status = parse_positive(name, text, &number, error)) != SPIRT_OK) return status;
            parsed.tau = number;
        } else if (strcmp(name, "pre") == 0) {
            if (strcmp(text, "nnm") != 0 && strcmp(text, "none") != 0)
                return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregator parameter pre: '%s' (known: nnm, none)", text);
            parsed.pre_nnm = strcmp(text, "nnm") == 0;
        } else {
            return spirt_error_set(error, SPIRT_ERR_INVALID,
                                   "aggregator %s has no parameter '%s' (all rules: f, pre; trimmed-mean: trim; "
                                   "multi-krum: m; geomed: iterations, tolerance, nu; cclip: tau, iterations)",
                                   agg_rule_name(rule), name);
        }
    }
    *config = parsed;
    return SPIRT_OK;
}

void run_format_aggregator(const AggConfig *config, char *buffer, size_t size) {
    int used = snprintf(buffer, size, "%s:f=%zu", agg_rule_name(config->rule), config->f);
    if (used < 0 || (size_t)used >= size) return;
    switch (config->rule) {
    case AGG_TRIMMED_MEAN:
        if (config->trim != SIZE_MAX) used += snprintf(buffer + used, size - (size_t)used, ",trim=%zu", config->trim);
        break;
    case AGG_MULTI_KRUM:
        if (config->m) used += snprintf(buffer + used, size - (size_t)used, ",m=%zu", config->m);
        break;
    case AGG_GEOMED:
        used += snprintf(buffer + used, size - (size_t)used, ",iterations=%d,tolerance=%g,nu=%g",
                         config->max_iterations, config->tolerance, config->nu);
        break;
    case AGG_CCLIP:
        used += snprintf(buffer + used, size - (size_t)used, ",tau=%g,iterations=%d", config->tau,
                         config->clip_iterations);
        break;
    default: break;
    }
    if (config->pre_nnm && used > 0 && (size_t)used < size) snprintf(buffer + used, size - (size_t)used, ",pre=nnm");
}

/* --- JSON --- */

static json_t *optimizer_to_json(const OptimConfig *optimizer) {
    const char *kind = optim_kind_name(optimizer->kind);
    if (optimizer->kind == OPTIM_MOMENTUM && optimizer->nesterov) kind = "nesterov";
    if (optimizer->kind == OPTIM_ADAM && optimizer->decoupled) kind = "adamw";
    return json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:f}", "kind", kind, "lr", (double)optimizer->learning_rate,
                     "momentum", (double)optimizer->momentum, "beta1", (double)optimizer->beta1, "beta2",
                     (double)optimizer->beta2, "epsilon", (double)optimizer->epsilon, "weight_decay",
                     (double)optimizer->weight_decay);
}

static int optimizer_from_json(const json_t *json, OptimConfig *optimizer, SpirtError *error) {
    const char *kind;
    if (!json_is_object(json)) return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer must be an object");
    if (fn_json_string(json, "kind", &kind, error) != SPIRT_OK) return error->code;
    double lr;
    if (fn_json_double_or(json, "lr", 0.05, &lr, error) != SPIRT_OK) return error->code;
    OptimConfig parsed;
    int status = optim_kind_parse(kind, &parsed, error);
    if (status != SPIRT_OK) return status;
    OptimConfig defaults = optim_config_default(parsed.kind, (float)lr);
    defaults.nesterov = parsed.nesterov;
    defaults.decoupled = parsed.decoupled;
    double value;
    if (fn_json_double_or(json, "momentum", defaults.momentum, &value, error) != SPIRT_OK) return error->code;
    defaults.momentum = (float)value;
    if (fn_json_double_or(json, "beta1", defaults.beta1, &value, error) != SPIRT_OK) return error->code;
    defaults.beta1 = (float)value;
    if (fn_json_double_or(json, "beta2", defaults.beta2, &value, error) != SPIRT_OK) return error->code;
    defaults.beta2 = (float)value;
    if (fn_json_double_or(json, "epsilon", defaults.epsilon, &value, error) != SPIRT_OK) return error->code;
    defaults.epsilon = (float)value;
    if (fn_json_double_or(json, "weight_decay", defaults.weight_decay, &value, error) != SPIRT_OK) return error->code;
    defaults.weight_decay = (float)value;
    if ((status = optim_config_check(&defaults, error)) != SPIRT_OK) return status;
    *optimizer = defaults;
    return SPIRT_OK;
}

json_t *run_config_to_json(const RunConfig *config) {
    char aggregator[256], attack[128];
    run_format_aggregator(&config->aggregator, aggregator, sizeof(aggregator));
    attack_format(&config->attack, attack, sizeof(attack));
    json_t *byzantine = json_array();
    for (size_t i = 0; i < config->byzantine_count; i++) json_array_append_new(byzantine, json_string(config->byzantine[i]));
    json_t *json = json_pack("{s:i, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:o, s:s, s:s, s:o, s:f, s:I, s:I, s:I, s:I}",
                             "version", 1, "peer_id", config->peer_id, "model", nn_model_kind_name(config->model),
                             "batch_size", (json_int_t)config->batch_size, "batches_per_round",
                             (json_int_t)config->batches_per_round, "seed", (json_int_t)config->seed, "rounds",
                             (json_int_t)config->rounds, "evaluate_every", (json_int_t)config->evaluate_every,
                             "train_count", (json_int_t)config->train_count, "validation_count",
                             (json_int_t)config->validation_count, "data_digest", config->data_digest, "optimizer",
                             optimizer_to_json(&config->optimizer), "aggregator", aggregator, "attack", attack,
                             "byzantine", byzantine, "exchange_wait_seconds", config->exchange_wait_seconds,
                             "heartbeat_ttl_ms", (json_int_t)config->heartbeat_ttl_ms, "dead_after_ms",
                             (json_int_t)config->dead_after_ms, "keep_rounds", (json_int_t)config->keep_rounds,
                             "checkpoint_every", (json_int_t)config->checkpoint_every);
    if (json) {
        json_object_set_new(json, "schedule", json_string(config->cosine_schedule ? "cosine" : "constant"));
        json_object_set_new(json, "silent_after_rounds", json_integer((json_int_t)config->silent_after_rounds));
        json_object_set_new(json, "silent_wait_seconds", json_real(config->silent_wait_seconds));
        json_object_set_new(json, "exchange_in_database", json_boolean(config->exchange_in_database));
    }
    return json;
}

static const char *const known_fields[] = {
    "version", "peer_id", "model", "batch_size", "batches_per_round", "seed", "rounds", "evaluate_every",
    "train_count", "validation_count", "data_digest", "optimizer", "aggregator", "attack", "byzantine",
    "exchange_wait_seconds", "heartbeat_ttl_ms", "dead_after_ms", "keep_rounds", "checkpoint_every", "schedule", "silent_after_rounds",
    "silent_wait_seconds", "exchange_in_database", NULL};

int run_config_from_json(const json_t *json, RunConfig *config, SpirtError *error) {
    if (!json_is_object(json)) return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config is not a JSON object");
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)json, key, value) {
        int known = 0;
        for (int i = 0; known_fields[i]; i++) known |= strcmp(key, known_fields[i]) == 0;
        if (!known) return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: unknown field '%s'", key);
    }
    RunConfig parsed;
    run_config_default(&parsed);
    const char *text;
    uint64_t number;
    int status;
#define CHECKED(call)                                                             \
    do {                                                                          \
        if ((status = (call)) != SPIRT_OK) return spirt_error_prefix(error, "spirt:config"); \
    } while (0)
    CHECKED(fn_json_u64_or(json, "version", 1, &number, error));
    if (number != 1) return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config version %llu is not supported",
                                            (unsigned long long)number);
    CHECKED(fn_json_string(json, "peer_id", &text, error));
    if (!identity_peer_id_valid(text)) return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: bad peer_id");
    snprintf(parsed.peer_id, sizeof(parsed.peer_id), "%s", text);
    CHECKED(fn_json_string_or(json, "model", "mlp", &text, error));
    CHECKED(nn_model_kind_parse(text, &parsed.model, error));
    CHECKED(fn_json_u64_or(json, "batch_size", parsed.batch_size, &number, error));
    if (number < 1 || number > 65536) return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: batch_size out of range");
    parsed.batch_size = (size_t)number;
    CHECKED(fn_json_u64_or(json, "batches_per_round", parsed.batches_per_round, &number, error));
    if (number < 1 || number > 4096)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: batches_per_round out of range");
    parsed.batches_per_round = (size_t)number;
    CHECKED(fn_json_u64_or(json, "seed", parsed.seed, &parsed.seed, error));
    CHECKED(fn_json_u64_or(json, "rounds", parsed.rounds, &parsed.rounds, error));
    CHECKED(fn_json_u64_or(json, "evaluate_every", parsed.evaluate_every, &parsed.evaluate_every, error));
    CHECKED(fn_json_u64_or(json, "train_count", 0, &number, error));
    parsed.train_count = (size_t)number;
    CHECKED(fn_json_u64_or(json, "validation_count", 0, &number, error));
    parsed.validation_count = (size_t)number;
    CHECKED(fn_json_string_or(json, "data_digest", "", &text, error));
    snprintf(parsed.data_digest, sizeof(parsed.data_digest), "%s", text);
    const json_t *optimizer = json_object_get(json, "optimizer");
    if (optimizer) CHECKED(optimizer_from_json(optimizer, &parsed.optimizer, error));
    CHECKED(fn_json_string_or(json, "aggregator", "mean", &text, error));
    CHECKED(run_parse_aggregator(text, &parsed.aggregator, error));
    CHECKED(fn_json_string_or(json, "attack", "none", &text, error));
    CHECKED(attack_parse(text, &parsed.attack, error));
    const json_t *byzantine = json_object_get(json, "byzantine");
    if (byzantine && !json_is_array(byzantine))
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: byzantine must be a list of peer ids");
    size_t index;
    json_array_foreach((json_t *)byzantine, index, value) {
        if (!json_is_string(value) || !identity_peer_id_valid(json_string_value(value)) || index >= RUN_MAX_PEERS)
            return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: byzantine[%zu] is not a peer id", index);
        snprintf(parsed.byzantine[index], sizeof(parsed.byzantine[index]), "%s", json_string_value(value));
        parsed.byzantine_count = index + 1;
    }
    CHECKED(fn_json_double_or(json, "exchange_wait_seconds", parsed.exchange_wait_seconds,
                              &parsed.exchange_wait_seconds, error));
    if (parsed.exchange_wait_seconds < 0 || parsed.exchange_wait_seconds > 3600)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: exchange_wait_seconds out of range");
    CHECKED(fn_json_u64_or(json, "silent_after_rounds", parsed.silent_after_rounds, &parsed.silent_after_rounds,
                           error));
    CHECKED(fn_json_double_or(json, "silent_wait_seconds", parsed.silent_wait_seconds, &parsed.silent_wait_seconds,
                              error));
    if (parsed.silent_wait_seconds < 0 || parsed.silent_wait_seconds > 3600)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: silent_wait_seconds out of range");
    CHECKED(fn_json_bool_or(json, "exchange_in_database", parsed.exchange_in_database, &parsed.exchange_in_database,
                            error));
    CHECKED(fn_json_u64_or(json, "heartbeat_ttl_ms", (uint64_t)parsed.heartbeat_ttl_ms, &number, error));
    if (number < 100) return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: heartbeat_ttl_ms must be >= 100");
    parsed.heartbeat_ttl_ms = (int64_t)number;
    CHECKED(fn_json_u64_or(json, "dead_after_ms", (uint64_t)parsed.dead_after_ms, &number, error));
    parsed.dead_after_ms = (int64_t)number;
    CHECKED(fn_json_u64_or(json, "keep_rounds", parsed.keep_rounds, &parsed.keep_rounds, error));
    if (parsed.keep_rounds < 1) return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: keep_rounds must be >= 1");
    CHECKED(fn_json_u64_or(json, "checkpoint_every", parsed.checkpoint_every, &parsed.checkpoint_every, error));
    if (parsed.checkpoint_every < 1)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: checkpoint_every must be >= 1");
    CHECKED(fn_json_string_or(json, "schedule", "constant", &text, error));
    if (strcmp(text, "constant") != 0 && strcmp(text, "cosine") != 0)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "spirt:config: schedule '%s' (constant or cosine)", text);
    parsed.cosine_schedule = strcmp(text, "cosine") == 0;
#undef CHECKED
    *config = parsed;
    return SPIRT_OK;
}
