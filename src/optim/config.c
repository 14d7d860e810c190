/* config.c -- optimizer configurations: defaults, names, range checks and
 * state sizes (see include/spirt/optim.h). The steps themselves are
 * step.c and checked.c. */
#include <math.h>
#include <string.h>

#include "spirt/optim.h"

OptimConfig optim_config_default(OptimKind kind, float learning_rate) {
    OptimConfig config;
    memset(&config, 0, sizeof(config));
    config.kind = kind;
    config.learning_rate = learning_rate;
    config.momentum = 0.9f;
    config.nesterov = 0;
    config.beta1 = 0.9f;
    config.beta2 = 0.999f;
    config.epsilon = 1e-8f;
    config.weight_decay = 0.0f;
    config.decoupled = 0;
    config.threads = 1;
    return config;
}

int optim_kind_parse(const char *name, OptimConfig *config, SpirtError *error) {
    static const struct {
        const char *name;
        OptimKind kind;
        int nesterov, decoupled;
    } names[] = {
        {"sgd", OPTIM_SGD, 0, 0},       {"momentum", OPTIM_MOMENTUM, 0, 0}, {"nesterov", OPTIM_MOMENTUM, 1, 0},
        {"adam", OPTIM_ADAM, 0, 0},     {"adamw", OPTIM_ADAM, 0, 1},
    };
    for (size_t i = 0; name != NULL && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i].name) == 0) {
            config->kind = names[i].kind;
            config->nesterov = names[i].nesterov;
            config->decoupled = names[i].decoupled;
            return SPIRT_OK;
        }
    }
    return spirt_error_set(error, SPIRT_ERR_INVALID,
                           "unknown optimizer '%s' (expected sgd, momentum, nesterov, adam or adamw)",
                           name ? name : "(null)");
}

const char *optim_kind_name(OptimKind kind) {
    switch (kind) {
    case OPTIM_SGD: return "sgd";
    case OPTIM_MOMENTUM: return "momentum";
    case OPTIM_ADAM: return "adam";
    }
    return "unknown";
}

/* value in [0, 1): the range of a decay rate (momentum, betas). */
static int check_rate(const char *field, float value, SpirtError *error) {
    if (!(value >= 0.0f && value < 1.0f))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer %s %g must be in [0, 1)", field, value);
    return SPIRT_OK;
}

int optim_config_check(const OptimConfig *config, SpirtError *error) {
    if (config->kind != OPTIM_SGD && config->kind != OPTIM_MOMENTUM && config->kind != OPTIM_ADAM)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer kind %d is not sgd, momentum or adam",
                               (int)config->kind);
    if (!(config->learning_rate > 0.0f) || !isfinite(config->learning_rate))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer learning_rate %g must be finite and > 0",
                               config->learning_rate);
    if (!(config->weight_decay >= 0.0f) || !isfinite(config->weight_decay))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer weight_decay %g must be finite and >= 0",
                               config->weight_decay);
    if (config->threads < 0)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer threads %d must be >= 0", config->threads);
    if (config->nesterov && config->kind != OPTIM_MOMENTUM)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer nesterov is for momentum, not %s",
                               optim_kind_name(config->kind));
    if (config->decoupled && config->kind != OPTIM_ADAM)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer decoupled (weight decay) is for adam, not %s",
                               optim_kind_name(config->kind));
    if (config->kind == OPTIM_MOMENTUM) {
        if (check_rate("momentum", config->momentum, error) != SPIRT_OK) return SPIRT_ERR_INVALID;
        /* As PyTorch: Nesterov with no momentum is plain SGD said wrongly. */
        if (config->nesterov && config->momentum == 0.0f)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer nesterov needs momentum > 0");
    }
    if (config->kind == OPTIM_ADAM) {
        if (check_rate("beta1", config->beta1, error) != SPIRT_OK) return SPIRT_ERR_INVALID;
        if (check_rate("beta2", config->beta2, error) != SPIRT_OK) return SPIRT_ERR_INVALID;
        if (!(config->epsilon > 0.0f) || !isfinite(config->epsilon))
            return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer epsilon %g must be finite and > 0",
                                   config->epsilon);
    }
    return SPIRT_OK;
}

size_t optim_state_count(const OptimConfig *config, size_t n) {
    switch (config->kind) {
    case OPTIM_MOMENTUM: return n;
    case OPTIM_ADAM: return 2 * n;
    default: return 0;
    }
}
