/* test_module.c -- the Redis module's commands against a real redis-server:
 * every command's results checked against values computed here
 * independently, every bad input refused with its code (and the server
 * still answering), MULTI and Lua, ACL users with read-only key patterns,
 * and the same results bit for bit whether commands run inline or on a
 * worker thread.
 *
 * SPIRT_TEST_LABELS: db */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module_client.h"
#include "spirt/crypto.h"
#include "spirt/digest.h"
#include "spirt/tensor.h"
#include "test.h"

#define D 1000 /* values per test tensor */

/* |got - want| <= tolerance * max(1, |want|) for every value. */
static int close_to(const float *got, const double *want, size_t count, double tolerance) {
    for (size_t i = 0; i < count; i++) {
        double scale = fabs(want[i]) > 1 ? fabs(want[i]) : 1;
        if (!(fabs(got[i] - want[i]) <= tolerance * scale)) {
            fprintf(stderr, "  value %zu: got %.9g, want %.9g\n", i, got[i], want[i]);
            return 0;
        }
    }
    return 1;
}

/* The tensor stored under `key` has D values, each close to want[]. */
static int stored_close_to(redisContext *c, const char *key, const double *want, double tolerance) {
    size_t count = 0;
    float *got = module_test_tget(c, key, &count);
    int ok = got && count == D && close_to(got, want, D, tolerance);
    if (!ok) fprintf(stderr, "  %s: %s\n", key, got ? "values differ" : "missing");
    free(got);
    return ok;
}

/* --- Storing and reading --------------------------------------------------- */

static void test_tset_tget(redisContext *c) {
    test_begin("TSET/TGET: shapes of 1 to 4 dims, special values, BLOB/META/FULL");
    float values[48];
    module_test_random(values, 48, 1, 1.0);
    values[0] = -0.0f;
    values[1] = FLT_MAX;
    values[2] = -FLT_MAX;
    values[3] = 1e-45f; /* the smallest denormal */
    values[4] = FLT_MIN;
    const uint64_t shapes[4][4] = {{48}, {6, 8}, {2, 3, 8}, {2, 2, 3, 4}};
    for (uint32_t ndim = 1; ndim <= 4; ndim++) {
        char key[32];
        snprintf(key, sizeof(key), "shape:%u", ndim);
        CHECK(module_test_tset(c, key, values, ndim, shapes[ndim - 1]));
        size_t count = 0;
        float *back = module_test_tget(c, key, &count);
        CHECK(back && count == 48 && memcmp(back, values, sizeof(values)) == 0);
        free(back);
        redisReply *meta = module_test_command(c, "SPIRT.TGET", key, "META", NULL);
        const redisReply *shape = module_test_field(meta, "shape");
        const redisReply *dtype = module_test_field(meta, "dtype");
        const redisReply *count_reply = module_test_field(meta, "count");
        CHECK(meta && meta->type == REDIS_REPLY_ARRAY && meta->elements == 6);
        CHECK(dtype && strcmp(dtype->str, "float32") == 0);
        CHECK(count_reply && count_reply->integer == 48);
        int shape_ok = shape && shape->type == REDIS_REPLY_ARRAY && shape->elements == ndim;
        for (uint32_t i = 0; shape_ok && i < ndim; i++)
            shape_ok = shape->element[i]->integer == (long long)shapes[ndim - 1][i];
        CHECKF(shape_ok, "shape of %s", key);
        if (meta) freeReplyObject(meta);
        redisReply *full = module_test_command(c, "SPIRT.TGET", key, "FULL", NULL);
        const redisReply *blob = module_test_field(full, "blob");
        CHECK(full && full->elements == 8 && blob && blob->len == sizeof(values) &&
              memcmp(blob->str, values, sizeof(values)) == 0);
        if (full) freeReplyObject(full);
    }
    redisReply *type = module_test_command(c, "TYPE", "shape:1", NULL);
    CHECK(type && type->type == REDIS_REPLY_STATUS && strcmp(type->str, "spirt-tns") == 0);
    if (type) freeReplyObject(type);

    /* TSET overwrites any type, like SET; TGET of a missing key is nil. */
    CHECK(module_test_ok(c, "SET", "was:string", "hello", NULL));
    CHECK(module_test_tset_vector(c, "was:string", values, 3));
    redisReply *missing = module_test_command(c, "SPIRT.TGET", "no:such:key", NULL);
    CHECK(missing && missing->type == REDIS_REPLY_NIL);
    if (missing) freeReplyObject(missing);
}

static void test_info(redisContext *c) {
    test_begin("INFO and MINFO: norm, min, max, mean and digest against the values");
    float values[D];
    module_test_random(values, D, 2, 3.0);
    CHECK(module_test_tset_vector(c, "info:x", values, D));
    double sum = 0, squares = 0, minimum = values[0], maximum = values[0];
    for (size_t i = 0; i < D; i++) {
        sum += values[i];
        squares += (double)values[i] * values[i];
        minimum = fmin(minimum, values[i]);
        maximum = fmax(maximum, values[i]);
    }
    char digest[SPIRT_DIGEST_HEX_SIZE];
    tensor_digest_hex(values, D, digest);
    redisReply *info = module_test_command(c, "SPIRT.INFO", "info:x", NULL);
    const redisReply *norm = module_test_field(info, "l2_norm"), *low = module_test_field(info, "min"),
                     *high = module_test_field(info, "max"), *mean = module_test_field(info, "mean"),
                     *hex = module_test_field(info, "digest"), *count = module_test_field(info, "count");
    CHECK(norm && low && high && mean && hex && count);
    if (norm && low && high && mean && hex && count) {
        CHECK_NEAR(strtod(norm->str, NULL), sqrt(squares), 1e-9 * sqrt(squares));
        CHECK(strtod(low->str, NULL) == minimum);
        CHECK(strtod(high->str, NULL) == maximum);
        CHECK_NEAR(strtod(mean->str, NULL), sum / D, 1e-12);
        CHECKF(strcmp(hex->str, digest) == 0, "digest %s, computed here %s", hex->str, digest);
        CHECK(count->integer == D);
    }
    if (info) freeReplyObject(info);

    CHECK(module_test_ok(c, "SET", "info:string", "x", NULL));
    redisReply *many = module_test_command(c, "SPIRT.MINFO", "info:x", "info:missing", "info:string", "info:x", NULL);
    CHECK(many && many->type == REDIS_REPLY_ARRAY && many->elements == 4);
    if (many && many->elements == 4) {
        CHECK(many->element[1]->type == REDIS_REPLY_NIL && many->element[2]->type == REDIS_REPLY_NIL);
        const redisReply *first = module_test_field(many->element[0], "digest");
        const redisReply *last = module_test_field(many->element[3], "digest");
        CHECK(first && last && strcmp(first->str, digest) == 0 && strcmp(last->str, digest) == 0);
    }
    if (many) freeReplyObject(many);
    redisReply *wrong = module_test_command(c, "SPIRT.INFO", "info:string", NULL);
    CHECK(module_test_is_error(wrong, "WRONGTYPE"));
    if (wrong) freeReplyObject(wrong);
}

/* --- Aggregation --------------------------------------------------------------- */

/* Stores n random sources "<prefix>:0".. of D values; fills `inputs`. */
static void store_sources(redisContext *c, const char *prefix, size_t n, float inputs[][D], uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%s:%zu", prefix, i);
        module_test_random(inputs[i], D, seed + i, 1.0);
        module_test_tset_vector(c, key, inputs[i], D);
    }
}

static void test_avg(redisContext *c) {
    test_begin("AVG: the element-wise mean");
    static float inputs[7][D];
    store_sources(c, "avg", 7, inputs, 100);
    double want[D];
    for (size_t j = 0; j < D; j++) {
        double sum = 0;
        for (size_t i = 0; i < 7; i++) sum += inputs[i][j];
        want[j] = sum / 7;
    }
    CHECK(
        module_test_ok(c, "SPIRT.AVG", "avg:out", "avg:0", "avg:1", "avg:2", "avg:3", "avg:4", "avg:5", "avg:6", NULL));
    CHECK(stored_close_to(c, "avg:out", want, 1e-6));
    /* One source: the mean is the source itself. */
    CHECK(module_test_ok(c, "SPIRT.AVG", "avg:one", "avg:3", NULL));
    size_t count = 0;
    float *got = module_test_tget(c, "avg:one", &count);
    CHECK(got && count == D && memcmp(got, inputs[3], sizeof(inputs[3])) == 0);
    free(got);
    /* ... shared, not aliased: replacing the source leaves it as it was,
     * and averaging a key into itself keeps it. */
    float other[D];
    for (size_t j = 0; j < D; j++) other[j] = (float)j;
    CHECK(module_test_tset_vector(c, "avg:3", other, D));
    got = module_test_tget(c, "avg:one", &count);
    CHECK(got && count == D && memcmp(got, inputs[3], sizeof(inputs[3])) == 0);
    free(got);
    CHECK(module_test_ok(c, "SPIRT.AVG", "avg:one", "avg:one", NULL));
    got = module_test_tget(c, "avg:one", &count);
    CHECK(got && count == D && memcmp(got, inputs[3], sizeof(inputs[3])) == 0);
    free(got);
    CHECK(module_test_tset_vector(c, "avg:3", inputs[3], D));
    /* The destination may be a source: the sources are read first. */
    CHECK(module_test_ok(c, "SPIRT.AVG", "avg:0", "avg:0", "avg:1", NULL));
    for (size_t j = 0; j < D; j++) want[j] = ((double)inputs[0][j] + inputs[1][j]) / 2;
    CHECK(stored_close_to(c, "avg:0", want, 1e-6));
}

static int compare_floats(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_agg_rules(redisContext *c) {
    test_begin("AGG: median, trimmed-mean, krum, multi-krum, cclip, geomed against references");
    enum { N = 6 };
    static float inputs[N][D];
    store_sources(c, "agg", N, inputs, 200);
    double median[D], trimmed[D];
    for (size_t j = 0; j < D; j++) {
        float column[N];
        for (size_t i = 0; i < N; i++) column[i] = inputs[i][j];
        qsort(column, N, sizeof(float), compare_floats);
        median[j] = ((double)column[2] + column[3]) / 2;
        trimmed[j] = ((double)column[1] + column[2] + column[3] + column[4]) / 4;
    }
    size_t count;
    float *got;
    CHECK(module_test_ok(c, "SPIRT.AGG", "agg:median", "RULE", "median", "SRC", "6", "agg:0", "agg:1", "agg:2", "agg:3",
                         "agg:4", "agg:5", NULL));
    CHECK(stored_close_to(c, "agg:median", median, 1e-6));
    CHECK(module_test_ok(c, "SPIRT.AGG", "agg:trimmed", "RULE", "trimmed-mean", "TRIM", "1", "SRC", "6", "agg:0",
                         "agg:1", "agg:2", "agg:3", "agg:4", "agg:5", NULL));
    CHECK(stored_close_to(c, "agg:trimmed", trimmed, 1e-6));

    /* Krum with f = 1: the input with the least sum of squared distances to
     * its n - f - 2 = 3 nearest others, returned as is. */
    double scores[N];
    for (size_t i = 0; i < N; i++) {
        double distances[N];
        size_t k = 0;
        for (size_t o = 0; o < N; o++) {
            if (o == i) continue;
            double sum = 0;
            for (size_t j = 0; j < D; j++)
                sum += ((double)inputs[i][j] - inputs[o][j]) * ((double)inputs[i][j] - inputs[o][j]);
            distances[k++] = sum;
        }
        for (size_t a = 0; a < k; a++)
            for (size_t b = a + 1; b < k; b++)
                if (distances[b] < distances[a]) {
                    double t = distances[a];
                    distances[a] = distances[b];
                    distances[b] = t;
                }
        scores[i] = distances[0] + distances[1] + distances[2];
    }
    size_t best = 0, second = 1;
    for (size_t i = 1; i < N; i++)
        if (scores[i] < scores[best]) best = i;
    if (best == second) second = 0;
    for (size_t i = 0; i < N; i++)
        if (i != best && scores[i] < scores[second]) second = i;
    redisReply *report = module_test_command(c, "SPIRT.AGG", "agg:krum", "RULE", "krum", "F", "1", "REPORT", "YES",
                                             "SRC", "6", "agg:0", "agg:1", "agg:2", "agg:3", "agg:4", "agg:5", NULL);
    const redisReply *selected = module_test_field(report, "selected");
    CHECKF(selected && selected->elements == 1 && selected->element[0]->integer == (long long)best,
           "krum selected %lld, reference %zu", selected && selected->elements ? selected->element[0]->integer : -1LL,
           best);
    if (report) freeReplyObject(report);
    got = module_test_tget(c, "agg:krum", &count);
    CHECK(got && count == D && memcmp(got, inputs[best], sizeof(inputs[best])) == 0);
    free(got);

    double pair_mean[D];
    for (size_t j = 0; j < D; j++) pair_mean[j] = ((double)inputs[best][j] + inputs[second][j]) / 2;
    CHECK(module_test_ok(c, "SPIRT.AGG", "agg:mkrum", "RULE", "multi-krum", "F", "1", "M", "2", "SRC", "6", "agg:0",
                         "agg:1", "agg:2", "agg:3", "agg:4", "agg:5", NULL));
    CHECK(stored_close_to(c, "agg:mkrum", pair_mean, 1e-6));

    /* Centered clipping with a radius nothing reaches and one iteration,
     * from a given centre: v = c + mean(x_i - c) = mean(x_i). */
    double mean[D];
    for (size_t j = 0; j < D; j++) {
        double sum = 0;
        for (size_t i = 0; i < N; i++) sum += inputs[i][j];
        mean[j] = sum / N;
    }
    CHECK(module_test_ok(c, "SPIRT.AGG", "agg:cclip", "RULE", "cclip", "TAU", "1e30", "ITERS", "1", "CENTER", "agg:5",
                         "SRC", "6", "agg:0", "agg:1", "agg:2", "agg:3", "agg:4", "agg:5", NULL));
    CHECK(stored_close_to(c, "agg:cclip", mean, 1e-5));

    /* The geometric median of copies of one point is that point. */
    for (int i = 0; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof(key), "agg:same:%d", i);
        module_test_tset_vector(c, key, inputs[0], D);
    }
    double point[D];
    for (size_t j = 0; j < D; j++) point[j] = inputs[0][j];
    CHECK(module_test_ok(c, "SPIRT.AGG", "agg:geomed", "RULE", "geomed", "MAXITER", "50", "TOL", "1e-9", "SRC", "3",
                         "agg:same:0", "agg:same:1", "agg:same:2", NULL));
    CHECK(stored_close_to(c, "agg:geomed", point, 1e-5));

    /* Bulyan and NNM: the result lies within each coordinate's range. */
    static float seven[7][D];
    store_sources(c, "bul", 7, seven, 300);
    CHECK(module_test_ok(c, "SPIRT.AGG", "agg:bulyan", "RULE", "bulyan", "F", "1", "PRE", "NNM", "SRC", "7", "bul:0",
                         "bul:1", "bul:2", "bul:3", "bul:4", "bul:5", "bul:6", NULL));
    got = module_test_tget(c, "agg:bulyan", &count);
    int within = got && count == D;
    for (size_t j = 0; within && j < D; j++) {
        float low = seven[0][j], high = seven[0][j];
        for (size_t i = 1; i < 7; i++) low = fminf(low, seven[i][j]), high = fmaxf(high, seven[i][j]);
        within = got[j] >= low && got[j] <= high;
    }
    CHECK(within);
    free(got);
}

/* --- Optimizer steps -------------------------------------------------------------- */

typedef enum { REF_SGD, REF_MOMENTUM, REF_NESTEROV, REF_ADAM, REF_ADAMW } ReferenceKind;

/* One step of optim.h's formulas in double precision. */
static void reference_step(ReferenceKind kind, double *p, const float *g, double *m, double *s, size_t n, double lr,
                           double mu, double b1, double b2, double eps, double wd, int t) {
    for (size_t i = 0; i < n; i++) {
        double gradient = g[i] + (kind == REF_ADAMW ? 0 : wd * p[i]);
        switch (kind) {
        case REF_SGD: p[i] -= lr * gradient; break;
        case REF_MOMENTUM:
        case REF_NESTEROV:
            m[i] = mu * m[i] + gradient;
            p[i] -= lr * (kind == REF_NESTEROV ? gradient + mu * m[i] : m[i]);
            break;
        default:
            if (kind == REF_ADAMW) p[i] -= lr * wd * p[i];
            m[i] = b1 * m[i] + (1 - b1) * gradient;
            s[i] = b2 * s[i] + (1 - b2) * gradient * gradient;
            p[i] -= lr * (m[i] / (1 - pow(b1, t))) / (sqrt(s[i] / (1 - pow(b2, t))) + eps);
        }
    }
}

static void check_optimizer(redisContext *c, ReferenceKind kind, const char *name, const char *wd) {
    char params_key[64], grad_key[64], state_key[64], step_text[16];
    snprintf(params_key, sizeof(params_key), "opt:%s:p", name);
    snprintf(state_key, sizeof(state_key), "opt:%s:state", name);
    float start[D];
    module_test_random(start, D, 400, 1.0);
    CHECK(module_test_tset_vector(c, params_key, start, D));
    static double p[D], m[D], s[D];
    for (size_t i = 0; i < D; i++) p[i] = start[i], m[i] = 0, s[i] = 0;
    for (int t = 1; t <= 3; t++) {
        float grad[D];
        module_test_random(grad, D, 500 + (uint64_t)t, 1.0);
        snprintf(grad_key, sizeof(grad_key), "opt:%s:g%d", name, t);
        module_test_tset_vector(c, grad_key, grad, D);
        snprintf(step_text, sizeof(step_text), "%d", t);
        CHECKF(module_test_ok(c, "SPIRT.UPDATE", params_key, grad_key, "OPT", name, "LR", "0.01", "MOMENTUM", "0.9",
                              "BETA1", "0.9", "BETA2", "0.999", "EPS", "1e-8", "WD", wd, "STEP", step_text, "STATE",
                              state_key, NULL),
               "%s step %d", name, t);
        reference_step(kind, p, grad, m, s, D, 0.01, 0.9, 0.9, 0.999, 1e-8, atof(wd), t);
    }
    size_t count;
    float *got = module_test_tget(c, params_key, &count);
    CHECKF(got && count == D && close_to(got, p, D, 2e-5), "%s parameters", name);
    free(got);
    float *state = module_test_tget(c, state_key, &count);
    if (kind == REF_SGD) {
        CHECKF(state == NULL, "sgd created a state key");
    } else {
        size_t want = kind == REF_ADAM || kind == REF_ADAMW ? 2 * D : D;
        CHECKF(state && count == want, "%s state has %zu values, want %zu", name, state ? count : 0, want);
        if (state && count == want) {
            CHECKF(close_to(state, m, D, 2e-5), "%s first moment", name);
            if (want == 2 * D) CHECKF(close_to(state + D, s, D, 2e-5), "%s second moment", name);
        }
    }
    free(state);
}

static void test_update(redisContext *c) {
    test_begin("UPDATE: sgd, momentum, nesterov, adam, adamw over 3 steps against references");
    check_optimizer(c, REF_SGD, "sgd", "0.01");
    check_optimizer(c, REF_MOMENTUM, "momentum", "0.01");
    check_optimizer(c, REF_NESTEROV, "nesterov", "0");
    check_optimizer(c, REF_ADAM, "adam", "0.01");
    check_optimizer(c, REF_ADAMW, "adamw", "0.05");
}

/* Two keys hold the same bits. */
static int same_tensor(redisContext *c, const char *a, const char *b) {
    size_t count_a = 0, count_b = 0;
    float *x = module_test_tget(c, a, &count_a), *y = module_test_tget(c, b, &count_b);
    int same = x && y && count_a == count_b && memcmp(x, y, count_a * sizeof(float)) == 0;
    if (!same) fprintf(stderr, "  %s and %s differ\n", a, b);
    free(x);
    free(y);
    return same;
}

static void test_avgupdate(redisContext *c) {
    test_begin("AVGUPDATE: bit-identical to AVG then UPDATE (sgd, momentum, adam; 3 chunks; params among the sources)");
    /* 20000 values: three chunks of the step, the last one short. */
    enum { LONG = 20000 };
    static float values[LONG];
    static const char *const optimizers[] = {"sgd", "momentum", "adam"};
    for (int o = 0; o < 3; o++) {
        const char *name = optimizers[o];
        for (int k = 0; k < 3; k++) {
            char key[32];
            snprintf(key, sizeof(key), "fu:g%d", k);
            module_test_random(values, LONG, 1000 + 10 * (uint64_t)o + (uint64_t)k, 1.0);
            CHECK(module_test_tset_vector(c, key, values, LONG));
        }
        module_test_random(values, LONG, 1100 + (uint64_t)o, 1.0);
        CHECK(module_test_tset_vector(c, "fu:p-fused", values, LONG));
        CHECK(module_test_tset_vector(c, "fu:p-pair", values, LONG));
        redisReply *gone = module_test_command(c, "DEL", "fu:s-fused", "fu:s-pair", NULL);
        if (gone) freeReplyObject(gone);
        for (int t = 1; t <= 2; t++) {
            char step[16];
            snprintf(step, sizeof(step), "%d", t);
            /* The second step averages the parameters too: sources are
             * read as they were when the command started. */
            const char *extra_fused = t == 1 ? "fu:g2" : "fu:p-fused", *extra_pair = t == 1 ? "fu:g2" : "fu:p-pair";
            CHECKF(module_test_ok(c, "SPIRT.AVGUPDATE", "fu:p-fused", "fu:avg-fused", "OPT", name, "LR", "0.01", "WD",
                                  "0.01", "STEP", step, "STATE", "fu:s-fused", "SRC", "3", "fu:g0", "fu:g1",
                                  extra_fused, NULL),
                   "%s step %d", name, t);
            CHECK(module_test_ok(c, "SPIRT.AVG", "fu:avg-pair", "fu:g0", "fu:g1", extra_pair, NULL));
            CHECK(module_test_ok(c, "SPIRT.UPDATE", "fu:p-pair", "fu:avg-pair", "OPT", name, "LR", "0.01", "WD", "0.01",
                                 "STEP", step, "STATE", "fu:s-pair", NULL));
            CHECKF(same_tensor(c, "fu:avg-fused", "fu:avg-pair"), "%s step %d: average", name, t);
            CHECKF(same_tensor(c, "fu:p-fused", "fu:p-pair"), "%s step %d: parameters", name, t);
            if (o > 0) CHECKF(same_tensor(c, "fu:s-fused", "fu:s-pair"), "%s step %d: state", name, t);
        }
    }
    /* Against a reference, not only against the two commands: a 2-source
     * sgd step is p - lr (g0 + g1) / 2. */
    float p[4] = {1, 2, 3, 4}, g0[4] = {1, 1, 1, 1}, g1[4] = {3, 5, 7, -9};
    CHECK(module_test_tset_vector(c, "fu:small-p", p, 4));
    CHECK(module_test_tset_vector(c, "fu:small-g0", g0, 4));
    CHECK(module_test_tset_vector(c, "fu:small-g1", g1, 4));
    CHECK(module_test_ok(c, "SPIRT.AVGUPDATE", "fu:small-p", "fu:small-avg", "OPT", "sgd", "LR", "0.5", "SRC", "2",
                         "fu:small-g0", "fu:small-g1", NULL));
    size_t count = 0;
    float *got = module_test_tget(c, "fu:small-p", &count), *mean = module_test_tget(c, "fu:small-avg", &count);
    const float want_p[4] = {0, 0.5f, 1, 6}, want_mean[4] = {2, 3, 4, -4};
    CHECK(got && mean && memcmp(got, want_p, sizeof(want_p)) == 0 && memcmp(mean, want_mean, sizeof(want_mean)) == 0);
    free(got);
    free(mean);
}

static void test_copy_shares(redisContext *c) {
    test_begin("COPY: a copy is independent of later updates of the original");
    float values[D], grad[D];
    module_test_random(values, D, 600, 1.0);
    module_test_random(grad, D, 601, 1.0);
    CHECK(module_test_tset_vector(c, "copy:a", values, D));
    CHECK(module_test_tset_vector(c, "copy:g", grad, D));
    redisReply *copied = module_test_command(c, "COPY", "copy:a", "copy:b", NULL);
    CHECK(copied && copied->type == REDIS_REPLY_INTEGER && copied->integer == 1);
    if (copied) freeReplyObject(copied);
    redisReply *digest_a = module_test_command(c, "DEBUG", "DIGEST-VALUE", "copy:a", "copy:b", NULL);
    CHECK(digest_a && digest_a->elements == 2 && strcmp(digest_a->element[0]->str, digest_a->element[1]->str) == 0);
    if (digest_a) freeReplyObject(digest_a);
    CHECK(module_test_ok(c, "SPIRT.UPDATE", "copy:a", "copy:g", "OPT", "sgd", "LR", "0.5", NULL));
    size_t count;
    float *b = module_test_tget(c, "copy:b", &count), *a = module_test_tget(c, "copy:a", &count);
    CHECK(b && memcmp(b, values, sizeof(values)) == 0);
    CHECK(a && memcmp(a, values, sizeof(values)) != 0);
    free(a);
    free(b);
    redisReply *usage = module_test_command(c, "MEMORY", "USAGE", "copy:b", NULL);
    CHECK(usage && usage->type == REDIS_REPLY_INTEGER && usage->integer >= (long long)sizeof(values));
    if (usage) freeReplyObject(usage);
}

/* --- Bad input ---------------------------------------------------------------------- */

static void test_set(redisContext *c) {
    test_begin("SET: a plain string, bit for bit, over any old value; wrong arity refused");
    /* 1 MiB of every byte value (an envelope's size and content), so the
     * value arrives as one large argument. */
    size_t length = (size_t)1 << 20;
    unsigned char *bytes = malloc(length);
    if (bytes == NULL) {
        CHECK(!"out of memory");
        return;
    }
    for (size_t i = 0; i < length; i++) bytes[i] = (unsigned char)(i * 131 + (i >> 11));
    float values[3] = {1, 2, 3};
    CHECK(module_test_tset_vector(c, "str:pub", values, 3)); /* overwritten, as SET overwrites */
    redisReply *reply = redisCommand(c, "SPIRT.SET %s %b", "str:pub", bytes, length);
    CHECK(reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0);
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "TYPE", "str:pub", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "string") == 0);
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "GET", "str:pub", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_STRING && (size_t)reply->len == length &&
          memcmp(reply->str, bytes, length) == 0);
    if (reply) freeReplyObject(reply);
    /* An empty value is a value. */
    CHECK(module_test_ok(c, "SPIRT.SET", "str:empty", "", NULL));
    reply = module_test_command(c, "STRLEN", "str:empty", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0);
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "SPIRT.SET", "str:pub", NULL);
    CHECK(module_test_is_error(reply, "ERR") && strstr(reply->str, "wrong number"));
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "SPIRT.SET", "str:pub", "a", "b", NULL);
    CHECK(module_test_is_error(reply, "ERR") && strstr(reply->str, "wrong number"));
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "STRLEN", "str:pub", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && (size_t)reply->integer == length);
    if (reply) freeReplyObject(reply);
    free(bytes);
}

/* TDIGEST's digest and TWRAP's bytes, checked against the library's own
 * encoding (tensor_encode_without_digest) and digest, and end to end: an
 * envelope signed around TDIGEST's digest and wrapped by TWRAP opens with
 * envelope_open and decodes to the stored values. */
static void test_wrap(redisContext *c) {
    test_begin("TDIGEST/TWRAP: the encoding's BLAKE3, wrapped where it is; an envelope that opens; errors");
    enum { COUNT = 300001 }; /* odd, and above the default inline_max */
    float *values = malloc(COUNT * sizeof(float));
    if (values == NULL) {
        CHECK(!"out of memory");
        return;
    }
    module_test_random(values, COUNT, 7, 2.0);
    CHECK(module_test_tset_vector(c, "wrap:avg", values, COUNT));
    TensorShape shape;
    tensor_shape_vector(&shape, COUNT, NULL);
    SpirtError error;
    Tensor *tensor = tensor_create(&shape, &error);
    memcpy(tensor->data, values, COUNT * sizeof(float));
    size_t encoding_size = 0;
    unsigned char *encoding = tensor_encode_without_digest(tensor, &encoding_size, &error);
    unsigned char digest[SPIRT_DIGEST_BYTES];
    digest_blake3(encoding, encoding_size, digest);
    char hex[SPIRT_DIGEST_HEX_BYTES + 1];
    for (int i = 0; i < SPIRT_DIGEST_BYTES; i++) sprintf(hex + 2 * i, "%02x", digest[i]); /* not digest_to_hex: a second opinion */

    redisReply *reply = module_test_command(c, "SPIRT.TDIGEST", "wrap:avg", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
          reply->element[0]->type == REDIS_REPLY_STRING && strcmp(reply->element[0]->str, hex) == 0 &&
          reply->element[1]->type == REDIS_REPLY_INTEGER && (size_t)reply->element[1]->integer == encoding_size);
    if (reply) freeReplyObject(reply);

    /* A signed envelope around the stored tensor, over an old value and TTL. */
    Identity alice;
    identity_generate(&alice, "alice", &error);
    unsigned char head[ENVELOPE_HEAD_MAX], signature[ENVELOPE_SIGNATURE_BYTES];
    size_t head_size = 0;
    CHECK_OK(envelope_seal_around(&alice, ENVELOPE_KIND_ROUND_AVERAGE, 5, encoding_size, digest, head, &head_size,
                                  signature, &error),
             &error);
    CHECK(module_test_ok(c, "SET", "wrap:pub", "old", "EX", "100", NULL));
    reply = redisCommand(c, "SPIRT.TWRAP wrap:pub wrap:avg PREFIX %b SUFFIX %b DIGEST %s", head, head_size, signature,
                         (size_t)ENVELOPE_SIGNATURE_BYTES, hex);
    size_t envelope_size = head_size + encoding_size + ENVELOPE_SIGNATURE_BYTES;
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && (size_t)reply->integer == envelope_size);
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "TTL", "wrap:pub", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == -1);
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "GET", "wrap:pub", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_STRING && (size_t)reply->len == envelope_size);
    if (reply && reply->type == REDIS_REPLY_STRING && (size_t)reply->len == envelope_size) {
        const unsigned char *bytes = (const unsigned char *)reply->str;
        CHECK(memcmp(bytes, head, head_size) == 0 && memcmp(bytes + head_size, encoding, encoding_size) == 0 &&
              memcmp(bytes + head_size + encoding_size, signature, ENVELOPE_SIGNATURE_BYTES) == 0);
        EnvelopeContents contents;
        CHECK_OK(envelope_open(bytes, envelope_size, &alice, ENVELOPE_KIND_ROUND_AVERAGE, 5, &contents, &error), &error);
        Tensor *decoded = tensor_decode_authenticated(contents.payload, contents.payload_size, "alice", &error);
        CHECK(decoded && decoded->count == COUNT && memcmp(decoded->data, values, COUNT * sizeof(float)) == 0);
        tensor_free(decoded);
    }
    if (reply) freeReplyObject(reply);

    /* A digest TDIGEST did not give, for the tensor it hashed: refused
     * (compared with the digest it remembered, not hashed again). */
    char wrong_hex[SPIRT_DIGEST_HEX_BYTES + 1];
    memcpy(wrong_hex, hex, sizeof(wrong_hex));
    wrong_hex[10] = wrong_hex[10] == '0' ? '1' : '0';
    reply = module_test_command(c, "SPIRT.TWRAP", "wrap:other", "wrap:avg", "DIGEST", wrong_hex, NULL);
    CHECK(module_test_is_error(reply, "CONFLICT"));
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "EXISTS", "wrap:other", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0);
    if (reply) freeReplyObject(reply);

    /* No options: the bare encoding, over a tensor key. */
    CHECK(module_test_tset_vector(c, "wrap:bare", values, 3));
    reply = module_test_command(c, "SPIRT.TWRAP", "wrap:bare", "wrap:avg", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && (size_t)reply->integer == encoding_size);
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "GET", "wrap:bare", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_STRING && (size_t)reply->len == encoding_size &&
          memcmp(reply->str, encoding, encoding_size) == 0);
    if (reply) freeReplyObject(reply);

    /* Another tensor under the source since TDIGEST: refused, nothing written. */
    values[COUNT / 2] += 1.0f;
    CHECK(module_test_tset_vector(c, "wrap:avg", values, COUNT));
    reply = module_test_command(c, "SPIRT.TWRAP", "wrap:pub", "wrap:avg", "DIGEST", hex, NULL);
    CHECK(module_test_is_error(reply, "CONFLICT"));
    if (reply) freeReplyObject(reply);
    reply = module_test_command(c, "STRLEN", "wrap:pub", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && (size_t)reply->integer == envelope_size);
    if (reply) freeReplyObject(reply);

    static const ModuleTestBadCase cases[] = {
        {{"SPIRT.TDIGEST"}, "ERR", "wrong number"},
        {{"SPIRT.TDIGEST", "wrap:avg", "x"}, "ERR", "wrong number"},
        {{"SPIRT.TDIGEST", "wrap:none"}, "NOKEY", "wrap:none"},
        {{"SPIRT.TDIGEST", "wrap:pub"}, "WRONGTYPE", ""},
        {{"SPIRT.TWRAP", "wrap:x"}, "ERR", "wrong number"},
        {{"SPIRT.TWRAP", "wrap:x", "wrap:avg", "PREFIX"}, "ERR", "wrong number"},
        {{"SPIRT.TWRAP", "wrap:x", "wrap:avg", "PREFIX", "a", "PREFIX", "b"}, "INVALID", "PREFIX"},
        {{"SPIRT.TWRAP", "wrap:x", "wrap:avg", "HEAD", "a"}, "INVALID", "HEAD"},
        {{"SPIRT.TWRAP", "wrap:x", "wrap:avg", "DIGEST", "abc"}, "INVALID", "64 hex"},
        {{"SPIRT.TWRAP", "wrap:x", "wrap:avg", "DIGEST",
          "zz00000000000000000000000000000000000000000000000000000000000000"},
         "INVALID", "64 hex"},
        {{"SPIRT.TWRAP", "wrap:x", "wrap:none"}, "NOKEY", "wrap:none"},
        {{"SPIRT.TWRAP", "wrap:x", "wrap:pub"}, "WRONGTYPE", ""},
    };
    module_test_expect_errors(c, cases, sizeof(cases) / sizeof(cases[0]));
    reply = module_test_command(c, "EXISTS", "wrap:x", NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0);
    if (reply) freeReplyObject(reply);
    free(encoding);
    tensor_free(tensor);
    free(values);
}

static void test_bad_input(redisContext *c) {
    test_begin("bad input: every error is a coded reply, nothing is written, the server goes on");
    float values[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint64_t four = 4, two_by_four[2] = {2, 4};
    CHECK(module_test_tset(c, "bad:a", values, 1, &four));
    CHECK(module_test_tset(c, "bad:b", values + 4, 1, &four));
    CHECK(module_test_tset(c, "bad:wide", values, 2, two_by_four));
    CHECK(module_test_ok(c, "SET", "bad:string", "not a tensor", NULL));
    float huge[1] = {3e38f}, minus_huge[1] = {-3e38f}, max[1] = {FLT_MAX};
    CHECK(module_test_tset_vector(c, "bad:huge", huge, 1));
    CHECK(module_test_tset_vector(c, "bad:minus-huge", minus_huge, 1));
    CHECK(module_test_tset_vector(c, "bad:max", max, 1));

    static const ModuleTestBadCase cases[] = {
        /* TSET */
        {{"SPIRT.TSET", "k", "FLOAT32", "3"}, "ERR", "wrong number"},
        {{"SPIRT.TSET", "k", "FLOAT64", "1", "BLOB", "abcd"}, "INVALID", "FLOAT64"},
        {{"SPIRT.TSET", "k", "FLOAT32", "1", "BLOC", "abcd"}, "INVALID", "BLOB"},
        {{"SPIRT.TSET", "k", "FLOAT32", "0", "BLOB", ""}, "SHAPE", "dimension 0"},
        {{"SPIRT.TSET", "k", "FLOAT32", "-2", "BLOB", "abcdabcd"}, "SHAPE", "dimension 0"},
        {{"SPIRT.TSET", "k", "FLOAT32", "2", "x", "BLOB", "abcdabcd"}, "SHAPE", "dimension 1"},
        {{"SPIRT.TSET", "k", "FLOAT32", "1", "1", "1", "1", "1", "BLOB", "abcd"}, "SHAPE", "dimensions"},
        {{"SPIRT.TSET", "k", "FLOAT32", "4294967296", "4294967296", "BLOB", "abcd"}, "SHAPE", "too large"},
        {{"SPIRT.TSET", "k", "FLOAT32", "3", "BLOB", "abcdabcd"}, "SHAPE", "8 bytes"},
        {{"SPIRT.TSET", "k", "FLOAT32", "1", "BLOB", ""}, "SHAPE", "0 bytes"},
        /* TGET, INFO, MINFO */
        {{"SPIRT.TGET", "bad:a", "RAW"}, "INVALID", "RAW"},
        {{"SPIRT.TGET", "bad:a", "BLOB", "x"}, "ERR", "wrong number"},
        {{"SPIRT.TGET", "bad:string"}, "WRONGTYPE", NULL},
        {{"SPIRT.INFO"}, "ERR", "wrong number"},
        {{"SPIRT.INFO", "bad:a", "bad:b"}, "ERR", "wrong number"},
        {{"SPIRT.MINFO"}, "ERR", "wrong number"},
        /* AVG */
        {{"SPIRT.AVG", "bad:out"}, "ERR", "wrong number"},
        {{"SPIRT.AVG", "bad:out", "bad:a", "bad:missing"}, "NOKEY", "bad:missing"},
        {{"SPIRT.AVG", "bad:out", "bad:a", "bad:string"}, "WRONGTYPE", "bad:string"},
        {{"SPIRT.AVG", "bad:out", "bad:a", "bad:wide"}, "SHAPE", "(2, 4)"},
        /* AGG */
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "SRC", "1"}, "ERR", "wrong number"},
        {{"SPIRT.AGG", "bad:out", "RULE", "average", "SRC", "2", "bad:a", "bad:b"}, "INVALID", "average"},
        {{"SPIRT.AGG", "bad:out", "RULES", "median", "SRC", "2", "bad:a", "bad:b"}, "INVALID", "syntax"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "F", "SRC", "2", "bad:a", "bad:b"}, "INVALID", "F"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "BETA", "1", "SRC", "2", "bad:a", "bad:b"}, "INVALID", "BETA"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "F", "1", "TRIM", "1", "M", "1"}, "INVALID", "SRC"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "SRC", "3", "bad:a", "bad:b"}, "INVALID", "announces 3"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "SRC", "1", "bad:a", "bad:b"}, "INVALID", "announces 1"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "SRC", "0", "bad:a"}, "INVALID", "SRC count"},
        {{"SPIRT.AGG", "bad:out", "RULE", "krum", "F", "1", "SRC", "2", "bad:a", "bad:b"}, "PRECONDITION", "krum"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "MAXITER", "0", "SRC", "2", "bad:a", "bad:b"},
         "INVALID",
         "MAXITER"},
        {{"SPIRT.AGG", "bad:out", "RULE", "geomed", "TOL", "nan", "SRC", "2", "bad:a", "bad:b"}, "INVALID", "TOL"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "PRE", "XYZ", "SRC", "2", "bad:a", "bad:b"}, "INVALID", "PRE"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "REPORT", "maybe", "SRC", "2", "bad:a", "bad:b"},
         "INVALID",
         "REPORT"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "SRC", "2", "bad:a", "bad:missing"}, "NOKEY", "bad:missing"},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "SRC", "2", "bad:a", "bad:string"}, "WRONGTYPE", NULL},
        {{"SPIRT.AGG", "bad:out", "RULE", "median", "SRC", "2", "bad:a", "bad:wide"}, "SHAPE", NULL},
        {{"SPIRT.AGG", "bad:out", "RULE", "cclip", "CENTER", "bad:missing", "SRC", "2", "bad:a", "bad:b"},
         "NOKEY",
         "center"},
        {{"SPIRT.AGG", "bad:out", "RULE", "cclip", "CENTER", "bad:wide", "SRC", "2", "bad:a", "bad:b"},
         "SHAPE",
         "center"},
        /* UPDATE */
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "LR"}, "ERR", "wrong number"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPTIMIZER", "sgd", "LR", "1"}, "INVALID", "syntax"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "rmsprop", "LR", "1"}, "INVALID", "rmsprop"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "WD", "0"}, "INVALID", "LR"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "LR", "-1"}, "INVALID", NULL},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "LR", "inf"}, "INVALID", "LR"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "LR", "1e39"}, "INVALID", "float32"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "LR", "0.1", "STEP"}, "INVALID", "STEP"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "LR", "0.1", "STEP", "0"}, "INVALID", "STEP"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "sgd", "LR", "0.1", "SPEED", "2"}, "INVALID", "SPEED"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "momentum", "LR", "0.1", "MOMENTUM", "1.5", "STATE", "bad:s"},
         "INVALID",
         NULL},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "adam", "LR", "0.1", "STATE", "bad:s"}, "INVALID", "STEP"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "momentum", "LR", "0.1"}, "INVALID", "STATE"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "momentum", "LR", "0.1", "STATE", "bad:a"}, "INVALID", "params"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "momentum", "LR", "0.1", "STATE", "bad:b"}, "INVALID", "grad"},
        {{"SPIRT.UPDATE", "bad:missing", "bad:b", "OPT", "sgd", "LR", "0.1"}, "NOKEY", "params"},
        {{"SPIRT.UPDATE", "bad:a", "bad:missing", "OPT", "sgd", "LR", "0.1"}, "NOKEY", "grad"},
        {{"SPIRT.UPDATE", "bad:a", "bad:string", "OPT", "sgd", "LR", "0.1"}, "WRONGTYPE", "grad"},
        {{"SPIRT.UPDATE", "bad:a", "bad:wide", "OPT", "sgd", "LR", "0.1"}, "SHAPE", "grad"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "momentum", "LR", "0.1", "STATE", "bad:string"},
         "WRONGTYPE",
         "state"},
        {{"SPIRT.UPDATE", "bad:a", "bad:b", "OPT", "adam", "LR", "0.1", "STEP", "1", "STATE", "bad:wide"},
         "SHAPE",
         "needs (8)"},
        /* Results that would overflow float32 are refused. */
        {{"SPIRT.UPDATE", "bad:huge", "bad:minus-huge", "OPT", "sgd", "LR", "1"}, "NONFINITE", "overflow"},
        /* AVGUPDATE */
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "1"}, "ERR", "wrong number"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "WD", "0", "bad:b"}, "INVALID", "SRC"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "2", "bad:b"}, "INVALID", "announces"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "0", "bad:b"}, "INVALID", "SRC count"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:a", "OPT", "sgd", "LR", "1", "SRC", "1", "bad:b"}, "INVALID", "params"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "WD", "0", "SRC", "1", "bad:b"}, "INVALID", "LR"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "momentum", "LR", "1", "STATE", "bad:out", "SRC", "1", "bad:b"},
         "INVALID",
         "avg"},
        {{"SPIRT.AVGUPDATE", "bad:missing", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "1", "bad:b"}, "NOKEY", "params"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "2", "bad:b", "bad:missing"},
         "NOKEY",
         "bad:missing"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "2", "bad:b", "bad:string"},
         "WRONGTYPE",
         "bad:string"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "2", "bad:b", "bad:wide"},
         "SHAPE",
         "bad:wide"},
        {{"SPIRT.AVGUPDATE", "bad:a", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "1", "bad:wide"}, "SHAPE", "params"},
        {{"SPIRT.AVGUPDATE", "bad:huge", "bad:out", "OPT", "sgd", "LR", "1", "SRC", "1", "bad:minus-huge"},
         "NONFINITE",
         "overflow"},
    };
    module_test_expect_errors(c, cases, sizeof(cases) / sizeof(cases[0]));

    /* NaN and infinities, named by their first index. */
    float poisoned[4] = {1, 2, NAN, INFINITY};
    const char *argv[] = {"SPIRT.TSET", "bad:nan", "FLOAT32", "4", "BLOB", (const char *)poisoned};
    size_t lengths[] = {10, 7, 7, 1, 4, sizeof(poisoned)};
    module_test_expect_error(c, 6, argv, lengths, "NONFINITE", "value 2 is NaN");
    poisoned[2] = 0;
    poisoned[3] = -INFINITY;
    module_test_expect_error(c, 6, argv, lengths, "NONFINITE", "value 3 is -infinity");

    /* Nothing was written by any of the failures above. */
    redisReply *exists = module_test_command(c, "EXISTS", "bad:out", "k", "bad:nan", "bad:s", NULL);
    CHECK(exists && exists->type == REDIS_REPLY_INTEGER && exists->integer == 0);
    if (exists) freeReplyObject(exists);
    size_t count;
    float *kept = module_test_tget(c, "bad:huge", &count);
    CHECK(kept && count == 1 && kept[0] == 3e38f);
    free(kept);

    /* The mean of the largest floats is finite (AVG does not scan its
     * result: the mean of finite floats cannot overflow). */
    redisReply *mean = module_test_command(c, "SPIRT.AVG", "bad:mean", "bad:max", "bad:max", NULL);
    float *stored = module_test_tget(c, "bad:mean", &count);
    CHECK(module_test_is_ok(mean) && stored && isfinite(stored[0]));
    free(stored);
    if (mean) freeReplyObject(mean);
}

/* --- Transactions and scripts ------------------------------------------------------ */

static void test_multi_and_lua(redisContext *c) {
    test_begin("MULTI/EXEC and Lua run the commands synchronously, with the same results");
    float a[D], b[D];
    module_test_random(a, D, 700, 1.0);
    module_test_random(b, D, 701, 1.0);
    CHECK(module_test_tset_vector(c, "tx:a", a, D));
    CHECK(module_test_tset_vector(c, "tx:b", b, D));
    CHECK(module_test_ok(c, "SPIRT.AVG", "tx:direct", "tx:a", "tx:b", NULL));
    CHECK(module_test_ok(c, "MULTI", NULL));
    redisReply *queued = module_test_command(c, "SPIRT.AVG", "tx:multi", "tx:a", "tx:b", NULL);
    CHECK(queued && queued->type == REDIS_REPLY_STATUS && strcmp(queued->str, "QUEUED") == 0);
    if (queued) freeReplyObject(queued);
    queued = module_test_command(c, "SPIRT.UPDATE", "tx:a", "tx:b", "OPT", "momentum", "LR", "0.1", "STATE", "tx:state",
                                 NULL);
    if (queued) freeReplyObject(queued);
    redisReply *exec = module_test_command(c, "EXEC", NULL);
    CHECK(exec && exec->type == REDIS_REPLY_ARRAY && exec->elements == 2 && module_test_is_ok(exec->element[0]) &&
          module_test_is_ok(exec->element[1]));
    if (exec) freeReplyObject(exec);
    redisReply *script = module_test_command(c, "EVAL", "return redis.call('SPIRT.AVG', KEYS[1], KEYS[2], KEYS[3])",
                                             "3", "tx:lua", "tx:direct", "tx:direct", NULL);
    CHECK(module_test_is_ok(script));
    if (script) freeReplyObject(script);
    size_t count;
    float *direct = module_test_tget(c, "tx:direct", &count);
    float *multi = module_test_tget(c, "tx:multi", &count);
    float *lua = module_test_tget(c, "tx:lua", &count);
    CHECK(direct && multi && lua && memcmp(direct, multi, sizeof(a)) == 0 && memcmp(direct, lua, sizeof(a)) == 0);
    free(direct);
    free(multi);
    free(lua);
    float *state = module_test_tget(c, "tx:state", &count);
    CHECK(state && count == D && memcmp(state, b, sizeof(b)) == 0); /* v = 0.9 * 0 + g */
    free(state);
}

/* --- ACL ------------------------------------------------------------------------------ */

static redisContext *connect_as(const TestRedis *server, const char *user, const char *password) {
    redisContext *context = test_redis_connect(server);
    if (context == NULL) return NULL;
    redisReply *reply = module_test_command(context, "AUTH", user, password, NULL);
    int ok = module_test_is_ok(reply);
    if (reply) freeReplyObject(reply);
    if (!ok) {
        redisFree(context);
        return NULL;
    }
    return context;
}

/* Takes (and frees) the reply of a command a user ran: it must have passed,
 * or have been refused with NOPERM. */
static void expect_access(redisReply *reply, int should_pass, const char *what) {
    int refused = module_test_is_error(reply, "NOPERM");
    int passed = reply && reply->type != REDIS_REPLY_ERROR;
    CHECKF(should_pass ? passed : refused, "%s: %s (expected %s)", what, reply && reply->str ? reply->str : "reply",
           should_pass ? "to pass" : "NOPERM");
    if (reply) freeReplyObject(reply);
}

/* A command as an ACL user, expected to pass (1) or to be refused (0). */
#define EXPECT_ACCESS(context, should_pass, ...)                                                                       \
    expect_access(module_test_command((context), __VA_ARGS__, NULL), (should_pass), #__VA_ARGS__)

static void test_acl(const TestRedis *server, redisContext *admin) {
    test_begin("ACL: key specs let read-only key patterns (%R~) run the commands that only read them");
    float values[D];
    module_test_random(values, D, 800, 1.0);
    CHECK(module_test_tset_vector(admin, "acl:g1", values, D));
    CHECK(module_test_tset_vector(admin, "acl:g2", values, D));
    CHECK(module_test_ok(admin, "ACL", "SETUSER", "peer", "on", ">peer-secret", "resetkeys", "%R~*", "%RW~out:*",
                         "-@all", "+spirt.tget", "+spirt.info", "+spirt.minfo", "+spirt.avg", "+spirt.agg",
                         "+spirt.update", "+spirt.avgupdate", "+spirt.tset", "+ping", NULL));
    CHECK(module_test_ok(admin, "ACL", "SETUSER", "reader", "on", ">reader-secret", "resetkeys", "%R~*", "-@all",
                         "+spirt.tget", "+spirt.info", "+spirt.minfo", "+spirt.avg", "+ping", NULL));
    redisContext *peer = connect_as(server, "peer", "peer-secret");
    redisContext *reader = connect_as(server, "reader", "reader-secret");
    CHECK(peer && reader);
    if (peer && reader) {
        EXPECT_ACCESS(reader, 1, "SPIRT.TGET", "acl:g1");
        EXPECT_ACCESS(reader, 1, "SPIRT.INFO", "acl:g1");
        EXPECT_ACCESS(reader, 1, "SPIRT.MINFO", "acl:g1", "acl:g2");
        EXPECT_ACCESS(reader, 0, "SPIRT.AVG", "acl:out", "acl:g1", "acl:g2");

        EXPECT_ACCESS(peer, 1, "SPIRT.AVG", "out:avg", "acl:g1", "acl:g2");
        EXPECT_ACCESS(peer, 0, "SPIRT.AVG", "acl:g1", "acl:g1", "acl:g2");
        EXPECT_ACCESS(peer, 1, "SPIRT.AGG", "out:agg", "RULE", "median", "SRC", "2", "acl:g1", "acl:g2");
        EXPECT_ACCESS(peer, 0, "SPIRT.AGG", "acl:agg", "RULE", "median", "SRC", "2", "acl:g1", "acl:g2");
        EXPECT_ACCESS(peer, 1, "SPIRT.AGG", "out:cclip", "RULE", "cclip", "CENTER", "acl:g1", "SRC", "2", "acl:g1",
                      "acl:g2");
        EXPECT_ACCESS(peer, 0, "SPIRT.TSET", "acl:g1", "FLOAT32", "1", "BLOB", "abcd");
        EXPECT_ACCESS(peer, 1, "SPIRT.TSET", "out:p", "FLOAT32", "1", "BLOB", "\x01\x02\x03\x04");
        EXPECT_ACCESS(peer, 1, "SPIRT.AVG", "out:p", "acl:g1");
        EXPECT_ACCESS(peer, 1, "SPIRT.UPDATE", "out:p", "acl:g1", "OPT", "momentum", "LR", "0.1", "STATE", "out:state");
        EXPECT_ACCESS(peer, 0, "SPIRT.UPDATE", "acl:g1", "acl:g2", "OPT", "sgd", "LR", "0.1");
        EXPECT_ACCESS(peer, 0, "SPIRT.UPDATE", "out:p", "acl:g1", "OPT", "momentum", "LR", "0.1", "STATE", "acl:state");
        EXPECT_ACCESS(peer, 1, "SPIRT.AVGUPDATE", "out:p", "out:avg", "OPT", "momentum", "LR", "0.1", "STATE",
                      "out:state", "SRC", "2", "acl:g1", "acl:g2");
        EXPECT_ACCESS(peer, 0, "SPIRT.AVGUPDATE", "out:p", "acl:avg", "OPT", "sgd", "LR", "0.1", "SRC", "1", "acl:g1");
        EXPECT_ACCESS(peer, 0, "SPIRT.AVGUPDATE", "acl:g1", "out:avg", "OPT", "sgd", "LR", "0.1", "SRC", "1", "acl:g2");
        EXPECT_ACCESS(peer, 0, "SPIRT.AVGUPDATE", "out:p", "out:avg", "OPT", "momentum", "LR", "0.1", "STATE",
                      "acl:state", "SRC", "1", "acl:g1");
    }
    if (peer) redisFree(peer);
    if (reader) redisFree(reader);
}

/* --- Inline and threaded give the same bits -------------------------------------- */

static void run_scenario(redisContext *c) {
    static float inputs[5][D];
    store_sources(c, "same", 5, inputs, 900);
    module_test_ok(c, "SPIRT.AVG", "same:avg", "same:0", "same:1", "same:2", "same:3", "same:4", NULL);
    module_test_ok(c, "SPIRT.AGG", "same:median", "RULE", "median", "SRC", "5", "same:0", "same:1", "same:2", "same:3",
                   "same:4", NULL);
    module_test_ok(c, "SPIRT.AGG", "same:geomed", "RULE", "geomed", "SRC", "5", "same:0", "same:1", "same:2", "same:3",
                   "same:4", NULL);
    module_test_ok(c, "SPIRT.AGG", "same:cclip", "RULE", "cclip", "TAU", "0.5", "SRC", "5", "same:0", "same:1",
                   "same:2", "same:3", "same:4", NULL);
    for (int t = 1; t <= 2; t++) {
        char step[16];
        snprintf(step, sizeof(step), "%d", t);
        module_test_ok(c, "SPIRT.UPDATE", "same:0", "same:avg", "OPT", "adam", "LR", "0.01", "STEP", step, "STATE",
                       "same:state", NULL);
        module_test_ok(c, "SPIRT.AVGUPDATE", "same:1", "same:fused-avg", "OPT", "momentum", "LR", "0.01", "STATE",
                       "same:fused-state", "SRC", "4", "same:0", "same:2", "same:3", "same:4", NULL);
    }
}

static void test_inline_equals_threaded(redisContext *inline_server, redisContext *threaded_server) {
    test_begin("inline and worker-thread execution store bit-identical results");
    run_scenario(inline_server);
    run_scenario(threaded_server);
    static const char *const keys[] = {"same:avg", "same:median", "same:geomed",    "same:cclip",      "same:0",
                                       "same:state", "same:1",   "same:fused-avg", "same:fused-state"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        size_t count_a = 0, count_b = 0;
        float *a = module_test_tget(inline_server, keys[i], &count_a);
        float *b = module_test_tget(threaded_server, keys[i], &count_b);
        CHECKF(a && b && count_a == count_b && memcmp(a, b, count_a * sizeof(float)) == 0, "%s differs", keys[i]);
        free(a);
        free(b);
    }
}

int main(void) {
    /* Server A runs everything inline; server B everything on worker threads. */
    static const char *const all_inline[] = {"INLINE_MAX", "1000000000", NULL};
    static const char *const all_threaded[] = {"INLINE_MAX", "0", "THREADS", "2", NULL};
    TestRedis server_a, server_b;
    if (module_test_start(&server_a, all_inline, NULL, 0, NULL) != 0) return 1;
    if (module_test_start(&server_b, all_threaded, NULL, 0, NULL) != 0) {
        test_redis_stop(&server_a);
        return 1;
    }
    redisContext *a = test_redis_connect(&server_a), *b = test_redis_connect(&server_b);
    if (a && b) {
        redisContext *servers[2] = {a, b};
        for (int s = 0; s < 2; s++) {
            fprintf(stderr, "== server %s\n", s == 0 ? "A (inline)" : "B (worker threads)");
            test_tset_tget(servers[s]);
            test_info(servers[s]);
            test_avg(servers[s]);
            test_agg_rules(servers[s]);
            test_update(servers[s]);
            test_avgupdate(servers[s]);
            test_copy_shares(servers[s]);
            test_set(servers[s]);
            test_wrap(servers[s]);
            test_bad_input(servers[s]);
            test_multi_and_lua(servers[s]);
        }
        test_acl(&server_b, b);
        test_inline_equals_threaded(a, b);
        CHECK(test_redis_alive(&server_a) && test_redis_alive(&server_b));
    } else {
        CHECK(!"cannot connect");
    }
    if (a) redisFree(a);
    if (b) redisFree(b);
    test_redis_stop(&server_a);
    test_redis_stop(&server_b);
    return test_finish();
}
