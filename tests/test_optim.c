/* test_optim.c -- optimizer steps against references computed here in
 * double from the formulas in include/spirt/optim.h, against PyTorch's own
 * results, and the refusals: bad configs, adam step 0, non-finite inputs,
 * steps that could overflow. Also: results bit-identical for any thread
 * count. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/optim.h"
#include "spirt/tensor.h"
#include "test.h"

/* --- A reference in double, written from the header's formulas --- */

typedef struct Reference {
    double p[64], v[64], m[64], s[64];
} Reference;

static void reference_step(const OptimConfig *c, Reference *r, const double *g, size_t n, uint64_t t) {
    double lr = c->learning_rate, wd = c->weight_decay, mu = c->momentum;
    double b1 = c->beta1, b2 = c->beta2, eps = c->epsilon;
    for (size_t i = 0; i < n; i++) {
        if (c->kind == OPTIM_SGD) {
            r->p[i] -= lr * (g[i] + wd * r->p[i]);
        } else if (c->kind == OPTIM_MOMENTUM) {
            double direction = g[i] + wd * r->p[i];
            r->v[i] = mu * r->v[i] + direction;
            r->p[i] -= lr * (c->nesterov ? direction + mu * r->v[i] : r->v[i]);
        } else {
            double direction = g[i];
            if (c->decoupled)
                r->p[i] -= lr * wd * r->p[i];
            else
                direction += wd * r->p[i];
            r->m[i] = b1 * r->m[i] + (1 - b1) * direction;
            r->s[i] = b2 * r->s[i] + (1 - b2) * direction * direction;
            double m_hat = r->m[i] / (1 - pow(b1, (double)t));
            double s_hat = r->s[i] / (1 - pow(b2, (double)t));
            r->p[i] -= lr * m_hat / (sqrt(s_hat) + eps);
        }
    }
}

/* Gradient of step t (1-based) at element i: varied signs and magnitudes. */
static double gradient_value(uint64_t t, size_t i) {
    return sin(0.7 * (double)i + 1.3 * (double)t) * (1.0 + (double)(i % 5)) * (t % 2 ? 1.0 : -0.5);
}

static double largest_difference(const float *actual, const double *expected, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double scale = fabs(expected[i]) > 1.0 ? fabs(expected[i]) : 1.0;
        double difference = fabs((double)actual[i] - expected[i]) / scale;
        if (!(difference <= worst)) worst = difference; /* NaN counts */
    }
    return worst;
}

/* Six steps of `config` against the double reference. */
static void check_against_reference(const char *name, OptimConfig config) {
    enum { N = 37, STEPS = 6 };
    float params[N], grad[N], state[2 * N];
    Reference reference;
    memset(&reference, 0, sizeof(reference));
    memset(state, 0, sizeof(state));
    for (size_t i = 0; i < N; i++) {
        params[i] = (float)(0.25 * (double)i - 4.0);
        reference.p[i] = params[i];
    }
    SpirtError error;
    double worst = 0.0;
    for (uint64_t t = 1; t <= STEPS; t++) {
        double g[N];
        for (size_t i = 0; i < N; i++) {
            grad[i] = (float)gradient_value(t, i);
            g[i] = grad[i];
        }
        CHECK_OK(optim_step(&config, params, grad, state, N, t, &error), &error);
        reference_step(&config, &reference, g, N, t);
        double step_worst = largest_difference(params, reference.p, N);
        if (config.kind == OPTIM_MOMENTUM) {
            double state_worst = largest_difference(state, reference.v, N);
            if (state_worst > step_worst) step_worst = state_worst;
        }
        if (config.kind == OPTIM_ADAM) {
            double first = largest_difference(state, reference.m, N), second = largest_difference(state + N, reference.s, N);
            if (first > step_worst) step_worst = first;
            if (second > step_worst) step_worst = second;
        }
        if (step_worst > worst) worst = step_worst;
    }
    /* float32 against double over six steps: a few ulps of growth. */
    CHECKF(worst < 2e-6, "%s: largest relative difference %g", name, worst);
}

static void test_against_reference(void) {
    test_begin("every optimizer against a double reference over several steps");
    static const struct {
        const char *name; /* as optim_kind_parse reads it */
        float learning_rate, weight_decay, momentum, beta1, beta2;
    } cases[] = {
        {"sgd", 0.05f, 0.0f, 0, 0, 0},          {"sgd", 0.05f, 0.02f, 0, 0, 0},
        {"momentum", 0.05f, 0.0f, 0.9f, 0, 0},  {"momentum", 0.05f, 0.02f, 0.9f, 0, 0},
        {"nesterov", 0.05f, 0.02f, 0.8f, 0, 0}, {"adam", 0.01f, 0.0f, 0, 0.9f, 0.999f},
        {"adam", 0.01f, 0.05f, 0, 0.9f, 0.999f}, {"adamw", 0.01f, 0.05f, 0, 0.5f, 0.9f},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        OptimConfig config = optim_config_default(OPTIM_SGD, cases[k].learning_rate);
        optim_kind_parse(cases[k].name, &config, NULL);
        config.weight_decay = cases[k].weight_decay;
        config.momentum = cases[k].momentum;
        config.beta1 = cases[k].beta1;
        config.beta2 = cases[k].beta2;
        char label[64];
        snprintf(label, sizeof(label), "%s, wd %g", cases[k].name, cases[k].weight_decay);
        check_against_reference(label, config);
    }
}

/* --- Steps small enough to do by hand --- */

static void test_hand_steps(void) {
    test_begin("steps computed by hand: first steps, nesterov vs heavy ball, AdamW vs L2");
    SpirtError error;
    /* SGD: 1 - 0.1 * (0.5 + 0.01 * 1) = 0.949. */
    OptimConfig sgd = optim_config_default(OPTIM_SGD, 0.1f);
    sgd.weight_decay = 0.01f;
    float p = 1.0f, g = 0.5f;
    CHECK_OK(optim_step(&sgd, &p, &g, NULL, 1, 1, &error), &error);
    CHECK_NEAR(p, 0.949, 2e-7);

    /* From v = 0 the first heavy-ball step is p - lr g, Nesterov's p - lr (1 + mu) g;
     * the second heavy-ball step with the same g moves lr (1 + mu) g. */
    OptimConfig heavy = optim_config_default(OPTIM_MOMENTUM, 0.1f), nesterov = heavy;
    nesterov.nesterov = 1;
    float p_heavy = 2.0f, v_heavy = 0.0f, p_nesterov = 2.0f, v_nesterov = 0.0f;
    g = 1.0f;
    CHECK_OK(optim_step(&heavy, &p_heavy, &g, &v_heavy, 1, 1, &error), &error);
    CHECK_OK(optim_step(&nesterov, &p_nesterov, &g, &v_nesterov, 1, 1, &error), &error);
    CHECK_NEAR(p_heavy, 1.9, 1e-6);
    CHECK_NEAR(p_nesterov, 2.0 - 0.1 * 1.9, 1e-6);
    CHECK(v_heavy == 1.0f && v_nesterov == 1.0f); /* same velocity, different use of it */
    CHECK_OK(optim_step(&heavy, &p_heavy, &g, &v_heavy, 1, 2, &error), &error);
    CHECK_NEAR(v_heavy, 1.9, 1e-6);
    CHECK_NEAR(p_heavy, 1.9 - 0.1 * 1.9, 1e-6);
    CHECK_OK(optim_step(&nesterov, &p_nesterov, &g, &v_nesterov, 1, 2, &error), &error);
    CHECK_NEAR(p_nesterov, 1.81 - 0.1 * (1.0 + 0.9 * 1.9), 1e-6); /* 1.81 - 0.271 */

    /* Adam's first step: m_hat = g and s_hat = g^2, so each parameter moves
     * by lr * g / (|g| + eps): lr against the gradient's sign. */
    OptimConfig adam = optim_config_default(OPTIM_ADAM, 0.01f);
    float params[3] = {1.0f, -2.0f, 0.5f}, grads[3] = {3.0f, -0.001f, 250.0f}, state[6] = {0};
    CHECK_OK(optim_step(&adam, params, grads, state, 3, 1, &error), &error);
    CHECK_NEAR(params[0], 1.0 - 0.01, 2e-7);
    CHECK_NEAR(params[1], -2.0 + 0.01 * 0.001 / (0.001 + 1e-8), 3e-7);
    CHECK_NEAR(params[2], 0.5 - 0.01, 2e-7);
    /* m = (1 - b1) g and s = (1 - b2) g^2, with the betas as the floats they are. */
    CHECK_NEAR(state[0], (1.0 - (double)0.9f) * 3.0, 1e-7);
    CHECK_NEAR(state[3], (1.0 - (double)0.999f) * 9.0, 1e-9);

    /* Zero gradient, weight decay 0.1, lr 0.01: AdamW only shrinks,
     * p (1 - lr wd); Adam with L2 sees g' = wd p and moves by ~lr. */
    OptimConfig adamw = adam;
    adamw.decoupled = 1;
    adamw.weight_decay = 0.1f;
    OptimConfig adam_l2 = adamw;
    adam_l2.decoupled = 0;
    float p_w = 2.0f, p_l2 = 2.0f, zero = 0.0f, state_w[2] = {0}, state_l2[2] = {0};
    CHECK_OK(optim_step(&adamw, &p_w, &zero, state_w, 1, 1, &error), &error);
    CHECK_OK(optim_step(&adam_l2, &p_l2, &zero, state_l2, 1, 1, &error), &error);
    CHECK_NEAR(p_w, 2.0 * (1.0 - 0.01 * 0.1), 3e-7);
    CHECK(state_w[0] == 0.0f && state_w[1] == 0.0f);
    CHECK_NEAR(p_l2, 2.0 - 0.01, 1e-6);
    CHECK_NEAR(state_l2[0], (1.0 - (double)0.9f) * (double)0.1f * 2.0, 1e-9);
}

/* --- PyTorch's results --- */

/* Three steps from p0 with gradients base * scale[t] in PyTorch 1.13
 * (float64), printed with %.17g:
 *   p = torch.tensor(p0, requires_grad=True); opt = <optimizer>([p], ...)
 *   for t in range(3): p.grad = torch.tensor([b * scale[t] for b in base]); opt.step()
 * SGD(lr=0.1, weight_decay=0.01), the same with momentum=0.9 and with
 * nesterov=True, Adam(lr=0.01, weight_decay=0.01), AdamW(lr=0.01,
 * weight_decay=0.1), other arguments default. */
static void test_pytorch_conventions(void) {
    test_begin("PyTorch's results for the same three steps");
    static const double base[4] = {0.3, -0.7, 1.1, -0.05}, scale[3] = {1.0, -0.5, 2.0};
    static const double p0[4] = {0.5, -1.25, 2.0, 0.0};
    static const struct {
        const char *name;
        float learning_rate, weight_decay;
        double expected[4];
    } cases[] = {
        {"sgd", 0.1f, 0.01f, {0.42354646949999997, -1.0713586787499998, 1.7191708879999998, 0.012492505000000003}},
        {"momentum", 0.1f, 0.01f, {0.38449636949999993, -0.98002442874999995, 1.575552488, 0.018783505000000002}},
        {"nesterov", 0.1f, 0.01f, {0.31971703480050001, -0.82867015629624985, 1.3376232777919999, 0.029377569295000003}},
        {"adam", 0.01f, 0.01f, {0.48049510881633856, -1.2304743354596102, 1.9804686753951335, 0.019222050775660481}},
        {"adamw", 0.01f, 0.1f, {0.47927966708189851, -1.2270319159829552, 1.9747841651377891, 0.01922182936485102}},
    };
    SpirtError error;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        OptimConfig config = optim_config_default(OPTIM_SGD, cases[k].learning_rate);
        CHECK_OK(optim_kind_parse(cases[k].name, &config, &error), &error);
        config.weight_decay = cases[k].weight_decay;
        float params[4], grad[4], state[8] = {0};
        for (int i = 0; i < 4; i++) params[i] = (float)p0[i];
        for (uint64_t t = 1; t <= 3; t++) {
            for (int i = 0; i < 4; i++) grad[i] = (float)(base[i] * scale[t - 1]);
            CHECK_OK(optim_step(&config, params, grad, state, 4, t, &error), &error);
        }
        double worst = largest_difference(params, cases[k].expected, 4);
        CHECKF(worst < 1e-6, "%s: largest difference from PyTorch %g", cases[k].name, worst);
    }
}

/* --- Configs --- */

static void test_configs(void) {
    test_begin("config parsing, defaults and refusals naming the field");
    SpirtError error;
    OptimConfig config = optim_config_default(OPTIM_ADAM, 0.001f);
    CHECK(config.learning_rate == 0.001f && config.momentum == 0.9f && config.beta1 == 0.9f &&
          config.beta2 == 0.999f && config.epsilon == 1e-8f && config.weight_decay == 0.0f && config.threads == 1);
    CHECK_OK(optim_config_check(&config, &error), &error);
    const char *names[] = {"sgd", "momentum", "nesterov", "adam", "adamw"};
    const OptimKind kinds[] = {OPTIM_SGD, OPTIM_MOMENTUM, OPTIM_MOMENTUM, OPTIM_ADAM, OPTIM_ADAM};
    for (int k = 0; k < 5; k++) {
        CHECK_OK(optim_kind_parse(names[k], &config, &error), &error);
        CHECK(config.kind == kinds[k] && config.nesterov == (k == 2) && config.decoupled == (k == 4));
        CHECK(config.learning_rate == 0.001f); /* left as it was */
        CHECK_OK(optim_config_check(&config, &error), &error);
    }
    CHECK(strcmp(optim_kind_name(OPTIM_MOMENTUM), "momentum") == 0);
    CHECK(strcmp(optim_kind_name(OPTIM_ADAM), "adam") == 0 && strcmp(optim_kind_name(OPTIM_SGD), "sgd") == 0);
    OptimConfig before = config;
    CHECK_ERROR(optim_kind_parse("rmsprop", &config, &error), SPIRT_ERR_INVALID, &error, "rmsprop");
    CHECK(memcmp(&before, &config, sizeof(config)) == 0);
    CHECK(optim_state_count(&(OptimConfig){.kind = OPTIM_SGD}, 10) == 0);
    CHECK(optim_state_count(&(OptimConfig){.kind = OPTIM_MOMENTUM}, 10) == 10);
    CHECK(optim_state_count(&(OptimConfig){.kind = OPTIM_ADAM}, 10) == 20);

    /* A zero-initialised SGD config needs only a learning rate. */
    OptimConfig minimal = {.kind = OPTIM_SGD, .learning_rate = 0.1f};
    CHECK_OK(optim_config_check(&minimal, &error), &error);

    /* Each bad config, the field its message must name, and the state of the
     * params afterwards (untouched). */
#define BAD_CONFIG(kind_, statement, needle)                                                            \
    do {                                                                                                \
        OptimConfig bad = optim_config_default(kind_, 0.1f);                                            \
        statement;                                                                                      \
        CHECK_ERROR(optim_config_check(&bad, &error), SPIRT_ERR_INVALID, &error, needle);              \
        float p_ = 1.5f, g_ = 0.5f, s_[2] = {0.25f, 0.125f};                                            \
        CHECK_ERROR(optim_step(&bad, &p_, &g_, s_, 1, 1, &error), SPIRT_ERR_INVALID, &error, needle);  \
        CHECK_ERROR(optim_step_checked(&bad, &p_, &g_, s_, 1, 1, &error), SPIRT_ERR_INVALID, &error,   \
                    needle);                                                                            \
        CHECK(p_ == 1.5f && s_[0] == 0.25f && s_[1] == 0.125f);                                         \
    } while (0)
    BAD_CONFIG(OPTIM_SGD, bad.learning_rate = 0.0f, "learning_rate");
    BAD_CONFIG(OPTIM_SGD, bad.learning_rate = -0.1f, "learning_rate");
    BAD_CONFIG(OPTIM_ADAM, bad.learning_rate = NAN, "learning_rate");
    BAD_CONFIG(OPTIM_SGD, bad.learning_rate = INFINITY, "learning_rate");
    BAD_CONFIG(OPTIM_SGD, bad.weight_decay = -0.01f, "weight_decay");
    BAD_CONFIG(OPTIM_ADAM, bad.weight_decay = INFINITY, "weight_decay");
    BAD_CONFIG(OPTIM_MOMENTUM, bad.momentum = 1.0f, "momentum");
    BAD_CONFIG(OPTIM_MOMENTUM, bad.momentum = -0.1f, "momentum");
    BAD_CONFIG(OPTIM_MOMENTUM, (bad.nesterov = 1, bad.momentum = 0.0f), "nesterov needs momentum");
    BAD_CONFIG(OPTIM_SGD, bad.nesterov = 1, "nesterov");
    BAD_CONFIG(OPTIM_MOMENTUM, bad.decoupled = 1, "decoupled");
    BAD_CONFIG(OPTIM_ADAM, bad.beta1 = 1.0f, "beta1");
    BAD_CONFIG(OPTIM_ADAM, bad.beta2 = -0.5f, "beta2");
    BAD_CONFIG(OPTIM_ADAM, bad.beta2 = NAN, "beta2");
    BAD_CONFIG(OPTIM_ADAM, bad.epsilon = 0.0f, "epsilon");
    BAD_CONFIG(OPTIM_ADAM, bad.epsilon = INFINITY, "epsilon");
    BAD_CONFIG(OPTIM_SGD, bad.threads = -1, "threads");
    BAD_CONFIG(OPTIM_SGD, bad.kind = (OptimKind)7, "kind 7");
#undef BAD_CONFIG

    /* Fields a kind does not use are not its business. */
    OptimConfig sgd = optim_config_default(OPTIM_SGD, 0.1f);
    sgd.beta2 = 7.0f;
    sgd.momentum = -3.0f;
    CHECK_OK(optim_config_check(&sgd, &error), &error);

    /* Adam's step is 1-based; other kinds ignore it. Missing buffers. */
    OptimConfig adam = optim_config_default(OPTIM_ADAM, 0.1f);
    float p = 1.0f, g = 1.0f, s[2] = {0};
    CHECK_ERROR(optim_step(&adam, &p, &g, s, 1, 0, &error), SPIRT_ERR_INVALID, &error, "step");
    CHECK_ERROR(optim_step_checked(&adam, &p, &g, s, 1, 0, &error), SPIRT_ERR_INVALID, &error, "step");
    CHECK(p == 1.0f && s[0] == 0.0f && s[1] == 0.0f);
    CHECK_OK(optim_step(&sgd, &p, &g, NULL, 1, 0, &error), &error);
    CHECK_ERROR(optim_step(&adam, &p, &g, NULL, 1, 1, &error), SPIRT_ERR_INVALID, &error, "state");
    CHECK_ERROR(optim_step(&sgd, NULL, &g, NULL, 1, 1, &error), SPIRT_ERR_INVALID, &error, "params");
    CHECK_OK(optim_step(&adam, NULL, NULL, NULL, 0, 1, &error), &error); /* nothing to do */
    CHECK_OK(optim_step_checked(&adam, NULL, NULL, NULL, 0, 1, &error), &error);
}

/* --- optim_step_checked --- */

enum { CHECKED_N = 40 };

typedef struct Snapshot {
    float params[CHECKED_N], state[2 * CHECKED_N];
} Snapshot;

static void fill_inputs(float *params, float *grad, float *state, size_t n) {
    for (size_t i = 0; i < n; i++) {
        params[i] = (float)(0.1 * (double)i - 2.0);
        grad[i] = (float)gradient_value(1, i);
        state[i] = (float)(0.01 * (double)i);
        state[n + i] = (float)(0.001 * (double)(i + 1));
    }
}

/* A checked step that must be refused with `needle` and leave params and
 * state bit-identical. */
static void check_refused(const OptimConfig *config, float *params, const float *grad, float *state,
                          const char *needle, const char *what) {
    Snapshot before;
    memcpy(before.params, params, sizeof(before.params));
    memcpy(before.state, state, sizeof(before.state));
    SpirtError error;
    int status = optim_step_checked(config, params, grad, state, CHECKED_N, 3, &error);
    CHECKF(status == SPIRT_ERR_NONFINITE && strstr(error.message, needle), "%s: status %d, message '%s'", what,
           status, error.message);
    CHECKF(memcmp(before.params, params, sizeof(before.params)) == 0 &&
               memcmp(before.state, state, sizeof(before.state)) == 0,
           "%s: params or state changed", what);
}

static void test_checked_nonfinite(void) {
    test_begin("checked step refuses NaN and infinity, touching nothing");
    const char *names[] = {"sgd", "momentum", "nesterov", "adam", "adamw"};
    for (int k = 0; k < 5; k++) {
        OptimConfig config = optim_config_default(OPTIM_SGD, 0.1f);
        optim_kind_parse(names[k], &config, NULL);
        config.weight_decay = 0.01f;
        float params[CHECKED_N], grad[CHECKED_N], state[2 * CHECKED_N];
        fill_inputs(params, grad, state, CHECKED_N);
        grad[17] = NAN;
        grad[30] = INFINITY;
        check_refused(&config, params, grad, state, "gradient[17] is NaN", names[k]);
        grad[17] = 1.0f;
        check_refused(&config, params, grad, state, "gradient[30] is infinite", names[k]);
        grad[30] = -1.0f;
        params[3] = -INFINITY;
        check_refused(&config, params, grad, state, "params[3] is infinite", names[k]);
        params[3] = 0.0f;
        if (config.kind == OPTIM_MOMENTUM) {
            state[39] = NAN;
            check_refused(&config, params, grad, state, "momentum state v[39] is NaN", names[k]);
            state[39] = 0.5f;
        }
        if (config.kind == OPTIM_ADAM) {
            state[5] = NAN;
            check_refused(&config, params, grad, state, "adam state m[5] is NaN", names[k]);
            state[5] = 0.0f;
            state[CHECKED_N + 8] = INFINITY;
            check_refused(&config, params, grad, state, "adam state s[8] is infinite", names[k]);
            state[CHECKED_N + 8] = -1e-3f;
            check_refused(&config, params, grad, state, "adam state s[8] is negative", names[k]);
            state[CHECKED_N + 8] = -0.0f; /* -0 is zero, not negative */
        }
        /* Repaired inputs pass, and the result is the unchecked step's, bit for bit. */
        float params_unchecked[CHECKED_N], state_unchecked[2 * CHECKED_N];
        memcpy(params_unchecked, params, sizeof(params));
        memcpy(state_unchecked, state, sizeof(state));
        SpirtError error;
        CHECK_OK(optim_step_checked(&config, params, grad, state, CHECKED_N, 3, &error), &error);
        CHECK_OK(optim_step(&config, params_unchecked, grad, state_unchecked, CHECKED_N, 3, &error), &error);
        CHECK(memcmp(params, params_unchecked, sizeof(params)) == 0);
        CHECK(memcmp(state, state_unchecked, sizeof(state)) == 0);
    }
}

static int all_finite(const float *values, size_t n) { return tensor_all_finite(values, n, NULL); }

static void test_checked_overflow(void) {
    test_begin("checked step refuses steps that could overflow; 1e30 gradients never leave inf");
    float params[CHECKED_N], grad[CHECKED_N], state[2 * CHECKED_N];
    SpirtError error;

    /* Without the check, adam squares 1e30 into an infinite second moment. */
    OptimConfig adam = optim_config_default(OPTIM_ADAM, 0.01f);
    fill_inputs(params, grad, state, CHECKED_N);
    grad[11] = 1e30f;
    CHECK_OK(optim_step(&adam, params, grad, state, CHECKED_N, 3, &error), &error);
    CHECK(!all_finite(state, 2 * CHECKED_N));
    fill_inputs(params, grad, state, CHECKED_N);
    grad[11] = 1e30f;
    check_refused(&adam, params, grad, state, "second moment", "adam, 1e30");
    grad[11] = -2e19f; /* just above sqrt(FLT_MAX / 2) ~ 1.3e19 */
    check_refused(&adam, params, grad, state, "second moment", "adam, 2e19");
    grad[11] = 1e19f; /* just below: accepted, and finite */
    CHECK_OK(optim_step_checked(&adam, params, grad, state, CHECKED_N, 3, &error), &error);
    CHECK(all_finite(params, CHECKED_N) && all_finite(state, 2 * CHECKED_N));

    /* SGD: p + lr g' beyond FLT_MAX / 2. */
    OptimConfig sgd = optim_config_default(OPTIM_SGD, 1.0f);
    fill_inputs(params, grad, state, CHECKED_N);
    params[2] = 1e38f;
    grad[5] = -1e38f;
    check_refused(&sgd, params, grad, state, "|p| after the step", "sgd, 1e38");
    /* Momentum: the velocity mu v + g' beyond it. */
    OptimConfig momentum = optim_config_default(OPTIM_MOMENTUM, 0.001f);
    fill_inputs(params, grad, state, CHECKED_N);
    state[0] = 1e38f;
    grad[1] = 1e38f;
    check_refused(&momentum, params, grad, state, "|v| (momentum)", "momentum, 1e38");
    /* Weight decay counts: g' = g + wd p. */
    sgd.weight_decay = 1e30f;
    fill_inputs(params, grad, state, CHECKED_N);
    params[0] = 1e10f;
    check_refused(&sgd, params, grad, state, "wd * p", "sgd, wd p");

    /* A Byzantine gradient of 1e30, five steps in a row, for every kind: each
     * step is refused or leaves params and state finite. */
    const char *names[] = {"sgd", "momentum", "nesterov", "adam", "adamw"};
    for (int k = 0; k < 5; k++) {
        OptimConfig config = optim_config_default(OPTIM_SGD, 0.1f);
        optim_kind_parse(names[k], &config, NULL);
        config.weight_decay = 0.01f;
        fill_inputs(params, grad, state, CHECKED_N);
        int accepted = 0;
        for (uint64_t t = 1; t <= 5; t++) {
            for (size_t i = 0; i < CHECKED_N; i++) grad[i] = i % 7 == 3 ? 1e30f : (float)gradient_value(t, i);
            int status = optim_step_checked(&config, params, grad, state, CHECKED_N, t, &error);
            CHECKF(status == SPIRT_OK || status == SPIRT_ERR_NONFINITE, "%s: status %d", names[k], status);
            accepted += status == SPIRT_OK;
            CHECKF(all_finite(params, CHECKED_N) && all_finite(state, 2 * CHECKED_N), "%s step %llu", names[k],
                   (unsigned long long)t);
        }
        /* Adam must refuse all of them; sgd and momentum can take them finitely. */
        CHECKF(config.kind == OPTIM_ADAM ? accepted == 0 : accepted == 5, "%s accepted %d", names[k], accepted);
    }
}

/* --- Threads --- */

static void test_threads_bit_identical(void) {
    test_begin("threads 1, 2, 3 and 0 give bit-identical params and state");
    /* Several grains and a ragged tail, so the work really splits. */
    enum { N = 5 * 16384 + 123, RUNS = 4 };
    const int thread_counts[RUNS] = {1, 2, 3, 0};
    const char *names[] = {"sgd", "momentum", "nesterov", "adam", "adamw"};
    float *grad = malloc(N * sizeof(float));
    float *params[RUNS], *state[RUNS];
    for (int r = 0; r < RUNS; r++) {
        params[r] = malloc(N * sizeof(float));
        state[r] = malloc(2 * N * sizeof(float));
    }
    SpirtError error;
    for (int k = 0; k < 5; k++) {
        for (int r = 0; r < RUNS; r++) {
            OptimConfig config = optim_config_default(OPTIM_SGD, 0.01f);
            optim_kind_parse(names[k], &config, NULL);
            config.weight_decay = 0.001f;
            config.threads = thread_counts[r];
            for (size_t i = 0; i < N; i++) params[r][i] = (float)sin(0.001 * (double)i);
            memset(state[r], 0, 2 * N * sizeof(float));
            for (uint64_t t = 1; t <= 3; t++) {
                for (size_t i = 0; i < N; i++) grad[i] = (float)gradient_value(t, i % 1000) * (1.0f + (float)i * 1e-5f);
                int status = t == 2 ? optim_step_checked(&config, params[r], grad, state[r], N, t, &error)
                                    : optim_step(&config, params[r], grad, state[r], N, t, &error);
                CHECK_OK(status, &error);
            }
        }
        for (int r = 1; r < RUNS; r++) {
            CHECKF(memcmp(params[0], params[r], N * sizeof(float)) == 0, "%s: params differ with %d threads",
                   names[k], thread_counts[r]);
            CHECKF(memcmp(state[0], state[r], 2 * N * sizeof(float)) == 0, "%s: state differs with %d threads",
                   names[k], thread_counts[r]);
        }
    }
    /* The checked pre-pass also finds the first bad index whatever the split. */
    for (int r = 0; r < RUNS; r++) {
        OptimConfig config = optim_config_default(OPTIM_SGD, 0.01f);
        config.threads = thread_counts[r];
        grad[N - 5] = NAN;
        grad[3 * 16384 + 1] = -INFINITY;
        CHECK_ERROR(optim_step_checked(&config, params[r], grad, NULL, N, 1, &error), SPIRT_ERR_NONFINITE, &error,
                    "gradient[49153] is infinite");
        grad[N - 5] = 0.0f;
        grad[3 * 16384 + 1] = 0.0f;
        grad[N - 1] = 1e38f;
        params[r][7] = 1e38f;
        config.learning_rate = 1.0f;
        CHECK_ERROR(optim_step_checked(&config, params[r], grad, NULL, N, 1, &error), SPIRT_ERR_NONFINITE, &error,
                    "after the step");
        grad[N - 1] = 0.0f;
    }
    free(grad);
    for (int r = 0; r < RUNS; r++) {
        free(params[r]);
        free(state[r]);
    }
}

int main(void) {
    test_against_reference();
    test_hand_steps();
    test_pytorch_conventions();
    test_configs();
    test_checked_nonfinite();
    test_checked_overflow();
    test_threads_bit_identical();
    return test_finish();
}
