/* attack.c -- Byzantine behaviours (see include/spirt/attack.h). */
#include "spirt/attack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/rng.h"

static const char *const kind_names[ATTACK_KIND_COUNT] = {
    "none", "sign-flip", "gaussian", "label-flip", "alie", "ipm", "mimic", "silent", "wrong-shape", "nan", "garbage"};

/* Every 100th coordinate of a nan attack's vector is NaN. */
enum { NAN_STRIDE = 100 };

const char *attack_kind_name(AttackKind kind) {
    return (unsigned)kind < ATTACK_KIND_COUNT ? kind_names[kind] : "unknown";
}

AttackConfig attack_config_default(AttackKind kind) {
    AttackConfig config = {0};
    config.kind = kind;
    config.scale = 10.0;
    config.sigma = 100.0;
    config.z = 0.0;
    config.epsilon = 0.1;
    config.target = 0;
    return config;
}

static int parse_number(const char *text, double *value) {
    char *end = NULL;
    double parsed = strtod(text, &end);
    if (end == text || *end != '\0' || !isfinite(parsed)) return -1;
    *value = parsed;
    return 0;
}

int attack_parse(const char *spec, AttackConfig *config, SpirtError *error) {
    if (spec == NULL || *spec == '\0')
        return spirt_error_set(error, SPIRT_ERR_INVALID, "empty attack name");
    char buffer[256];
    if (strlen(spec) >= sizeof(buffer)) return spirt_error_set(error, SPIRT_ERR_INVALID, "attack spec too long");
    memcpy(buffer, spec, strlen(spec) + 1);
    char *parameters = strchr(buffer, ':');
    if (parameters) *parameters++ = '\0';
    AttackKind kind = ATTACK_KIND_COUNT;
    for (int k = 0; k < ATTACK_KIND_COUNT; k++)
        if (strcmp(buffer, kind_names[k]) == 0) kind = (AttackKind)k;
    if (kind == ATTACK_KIND_COUNT)
        return spirt_error_set(error, SPIRT_ERR_INVALID,
                               "unknown attack '%s' (known: none, sign-flip, gaussian, label-flip, alie, ipm, mimic, "
                               "silent, wrong-shape, nan, garbage)",
                               buffer);
    AttackConfig parsed = attack_config_default(kind);
    char *save = NULL;
    for (char *item = parameters ? strtok_r(parameters, ",", &save) : NULL; item; item = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(item, '=');
        if (equals == NULL)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "attack parameter '%s' is not name=value", item);
        *equals = '\0';
        const char *name = item, *text = equals + 1;
        double value;
        if (parse_number(text, &value) != 0)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "attack parameter %s: '%s' is not a finite number", name, text);
        if (kind == ATTACK_SIGN_FLIP && strcmp(name, "scale") == 0) {
            if (value <= 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "sign-flip scale must be > 0");
            parsed.scale = value;
        } else if (kind == ATTACK_GAUSSIAN && strcmp(name, "sigma") == 0) {
            if (value <= 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "gaussian sigma must be > 0");
            parsed.sigma = value;
        } else if (kind == ATTACK_ALIE && strcmp(name, "z") == 0) {
            parsed.z = value;
        } else if (kind == ATTACK_IPM && strcmp(name, "epsilon") == 0) {
            if (value <= 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "ipm epsilon must be > 0");
            parsed.epsilon = value;
        } else if (kind == ATTACK_MIMIC && strcmp(name, "target") == 0) {
            if (value < 0 || value != floor(value) || value > 1e6)
                return spirt_error_set(error, SPIRT_ERR_INVALID, "mimic target must be a peer index >= 0");
            parsed.target = (size_t)value;
        } else {
            static const char *const accepted[ATTACK_KIND_COUNT] = {
                "none", "scale", "sigma", "none", "z", "epsilon", "target", "none", "none", "none", "none"};
            return spirt_error_set(error, SPIRT_ERR_INVALID, "attack %s has no parameter '%s' (accepts: %s)",
                                   kind_names[kind], name, accepted[kind]);
        }
    }
    *config = parsed;
    return SPIRT_OK;
}

void attack_format(const AttackConfig *config, char *buffer, size_t size) {
    switch (config->kind) {
    case ATTACK_SIGN_FLIP: snprintf(buffer, size, "sign-flip:scale=%g", config->scale); break;
    case ATTACK_GAUSSIAN: snprintf(buffer, size, "gaussian:sigma=%g", config->sigma); break;
    case ATTACK_ALIE: snprintf(buffer, size, "alie:z=%g", config->z); break;
    case ATTACK_IPM: snprintf(buffer, size, "ipm:epsilon=%g", config->epsilon); break;
    case ATTACK_MIMIC: snprintf(buffer, size, "mimic:target=%zu", config->target); break;
    default: snprintf(buffer, size, "%s", attack_kind_name(config->kind)); break;
    }
}

int attack_is_omniscient(const AttackConfig *config) {
    return config->kind == ATTACK_ALIE || config->kind == ATTACK_IPM || config->kind == ATTACK_MIMIC;
}

int attack_poisons_labels(const AttackConfig *config) { return config->kind == ATTACK_LABEL_FLIP; }

int attack_publishes(const AttackConfig *config) { return config->kind != ATTACK_SILENT; }

int attack_publication_valid(const AttackConfig *config) {
    return config->kind != ATTACK_SILENT && config->kind != ATTACK_WRONG_SHAPE && config->kind != ATTACK_NAN &&
           config->kind != ATTACK_GARBAGE;
}

int attack_publishes_garbage(const AttackConfig *config) { return config->kind == ATTACK_GARBAGE; }

size_t attack_vector_count(const AttackConfig *config, size_t d) {
    if (config->kind != ATTACK_WRONG_SHAPE) return d;
    return d > 1 ? d / 2 : 2;
}

void attack_fill_garbage(uint64_t seed, unsigned char *bytes, size_t size) {
    SpirtRng rng;
    rng_init_stream(&rng, seed, 0x67617262616765ull /* "garbage" */);
    for (size_t i = 0; i < size; i += 8) {
        uint64_t word = rng_next_u64(&rng);
        size_t take = size - i < 8 ? size - i : 8;
        memcpy(bytes + i, &word, take);
    }
}

void attack_flip_labels(uint8_t *labels, size_t count, size_t classes) {
    for (size_t i = 0; i < count; i++)
        if (labels[i] < classes) labels[i] = (uint8_t)(classes - 1 - labels[i]);
}

/* Phi^-1 by safeguarded Newton on Phi(x) = erfc(-x / sqrt 2) / 2: Newton
 * steps while they stay inside a bracket that always holds the root,
 * bisection otherwise. Phi is smooth and monotone, so this reaches double
 * precision in a few dozen steps for any 0 < p < 1. */
double attack_normal_quantile(double p) {
    if (!(p > 0.0 && p < 1.0)) return NAN;
    double low = -40.0, high = 40.0, x = 0.0;
    for (int i = 0; i < 200; i++) {
        double difference = 0.5 * erfc(-x / sqrt(2.0)) - p;
        if (difference == 0.0) return x;
        if (difference < 0.0)
            low = x;
        else
            high = x;
        double density = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
        double next = density > 0.0 ? x - difference / density : 0.5 * (low + high);
        if (!(next > low && next < high)) next = 0.5 * (low + high);
        if (fabs(next - x) <= 1e-15 * (1.0 + fabs(x))) return next;
        x = next;
    }
    return x;
}

double attack_alie_z(size_t n, size_t f) {
    long s = (long)(n / 2 + 1) - (long)f;
    double p = ((double)n - (double)s) / (double)n;
    if (p <= 0.0) p = 1e-9;
    if (p >= 1.0) p = 1.0 - 1e-9;
    return attack_normal_quantile(p);
}

int attack_craft(const AttackConfig *config, const float *own, const float *const *honest, size_t honest_count,
                 size_t d, size_t n, size_t f, uint64_t seed, float *out, SpirtError *error) {
    if (attack_is_omniscient(config) && (honest == NULL || honest_count == 0))
        return spirt_error_set(error, SPIRT_ERR_PRECONDITION, "attack %s needs the honest vectors of the round",
                               attack_kind_name(config->kind));
    switch (config->kind) {
    case ATTACK_NONE:
    case ATTACK_LABEL_FLIP:
    case ATTACK_SILENT:
    case ATTACK_GARBAGE:
        if (own == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "attack %s needs the own vector", attack_kind_name(config->kind));
        memcpy(out, own, d * sizeof(float));
        return SPIRT_OK;
    case ATTACK_WRONG_SHAPE: {
        if (own == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "wrong-shape needs the own vector");
        size_t count = attack_vector_count(config, d);
        for (size_t j = 0; j < count; j++) out[j] = j < d ? own[j] : 0.0f;
        return SPIRT_OK;
    }
    case ATTACK_NAN:
        if (own == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "nan needs the own vector");
        for (size_t j = 0; j < d; j++) out[j] = j % NAN_STRIDE == 0 ? NAN : own[j];
        return SPIRT_OK;
    case ATTACK_SIGN_FLIP:
        if (own == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "sign-flip needs the own vector");
        for (size_t j = 0; j < d; j++) out[j] = (float)(-config->scale * own[j]);
        return SPIRT_OK;
    case ATTACK_GAUSSIAN: {
        SpirtRng rng;
        rng_init_stream(&rng, seed, 0x6761757373ull /* "gauss" */);
        for (size_t j = 0; j < d; j++) out[j] = (float)(config->sigma * rng_normal(&rng));
        return SPIRT_OK;
    }
    case ATTACK_ALIE: {
        double z = config->z != 0.0 ? config->z : attack_alie_z(n, f);
        for (size_t j = 0; j < d; j++) {
            double sum = 0.0, sum_squares = 0.0;
            for (size_t i = 0; i < honest_count; i++) sum += honest[i][j];
            double mean = sum / (double)honest_count;
            for (size_t i = 0; i < honest_count; i++) {
                double deviation = honest[i][j] - mean;
                sum_squares += deviation * deviation;
            }
            /* Population standard deviation, as in the paper's estimate. */
            double sd = sqrt(sum_squares / (double)honest_count);
            out[j] = (float)(mean - z * sd);
        }
        return SPIRT_OK;
    }
    case ATTACK_IPM:
        for (size_t j = 0; j < d; j++) {
            double sum = 0.0;
            for (size_t i = 0; i < honest_count; i++) sum += honest[i][j];
            out[j] = (float)(-config->epsilon * sum / (double)honest_count);
        }
        return SPIRT_OK;
    case ATTACK_MIMIC:
        memcpy(out, honest[config->target % honest_count], d * sizeof(float));
        return SPIRT_OK;
    default:
        return spirt_error_set(error, SPIRT_ERR_INVALID, "unknown attack kind %d", (int)config->kind);
    }
}
