/* commands_agg.c -- SPIRT.AVG and SPIRT.AGG: aggregate n source tensors of
 * one shape into a destination key, with the project's one implementation of
 * every rule (src/agg, include/spirt/agg.h). This file parses, checks,
 * snapshots and stores; the arithmetic is agg_mean/agg_run's.
 *
 * Both commands read their sources as they are when the command starts (it
 * holds references to them): if a client overwrites a source meanwhile, the
 * aggregate is still that of the old values. The destination is overwritten
 * whatever it held, like SUNIONSTORE. */
#include <string.h>

#include "spirt/agg.h"
#include "spirt_module.h"

typedef struct AggJob {
    SpirtJob base;
    RedisModuleString *destination; /* retained key name */
    int mean_only;                  /* SPIRT.AVG: agg_mean, no config */
    AggConfig config;
    int report_wanted; /* SPIRT.AGG ... REPORT YES */
    AggReport report;
    size_t n;
    SpirtTensor **sources; /* n references */
    const float **inputs;  /* their data */
    SpirtTensor *center;   /* reference, or NULL */
    SpirtTensor *result;   /* owned until stored */
} AggJob;

static void agg_job_compute(SpirtJob *base) {
    AggJob *job = (AggJob *)base;
    const SpirtTensor *first = job->sources[0];
    size_t d = first->count;
    job->result = spirt_tensor_create(&first->shape, 0);
    if (job->result == NULL) {
        spirt_error_set(&job->base.error, SPIRT_ERR_NOMEM, "out of memory for the result (%zu values)", d);
        return;
    }
    if (job->mean_only) {
        /* No finiteness scan of the result (a second pass over it, 10% of
         * the command at a million values): the mean of finite floats is
         * finite. agg_mean sums the n <= 4096 values in double (relative
         * error at most (n - 1) 2^-53 of the sum of magnitudes) and scales
         * by 1/n: the result is at most max |x_i| (1 + 2^-40), which rounds
         * to a float no larger than FLT_MAX (overflow needs 2^-25 more).
         * tests/test_agg.c checks means of +-FLT_MAX. */
        agg_mean(job->inputs, job->n, d, job->result->data, spirt_config.threads);
    } else {
        size_t workspace_bytes = agg_workspace_bytes(&job->config, job->n, d);
        void *block = NULL, *workspace = NULL;
        if (workspace_bytes > 0) {
            block = RedisModule_TryAlloc(workspace_bytes + SPIRT_TENSOR_ALIGNMENT);
            if (block == NULL) {
                spirt_error_set(&job->base.error, SPIRT_ERR_NOMEM, "out of memory for a %zu-byte workspace",
                                workspace_bytes);
                goto done;
            }
            uintptr_t address =
                ((uintptr_t)block + SPIRT_TENSOR_ALIGNMENT - 1) & ~(uintptr_t)(SPIRT_TENSOR_ALIGNMENT - 1);
            workspace = (char *)block + (address - (uintptr_t)block);
        }
        if (agg_run(&job->config, job->inputs, job->n, d, job->result->data, workspace, workspace_bytes, &job->report,
                    &job->base.error) != SPIRT_OK &&
            job->base.error.code == SPIRT_ERR_NONFINITE)
            spirt_error_prefix(&job->base.error, "nothing was written");
        RedisModule_Free(block);
    }
done:
    if (job->base.error.code != SPIRT_OK) {
        spirt_tensor_release(job->result);
        job->result = NULL;
    }
}

static void reply_report(RedisModuleCtx *ctx, const AggJob *job) {
    const char *rule = agg_rule_name(job->config.rule);
    size_t listed = job->report.selected_count < 256 ? job->report.selected_count : 256;
    RedisModule_ReplyWithArray(ctx, 8);
    RedisModule_ReplyWithStringBuffer(ctx, "rule", 4);
    RedisModule_ReplyWithStringBuffer(ctx, rule, strlen(rule));
    RedisModule_ReplyWithStringBuffer(ctx, "selected_count", 14);
    RedisModule_ReplyWithLongLong(ctx, (long long)job->report.selected_count);
    RedisModule_ReplyWithStringBuffer(ctx, "selected", 8);
    RedisModule_ReplyWithArray(ctx, (long)listed);
    for (size_t i = 0; i < listed; i++) RedisModule_ReplyWithLongLong(ctx, job->report.selected[i]);
    RedisModule_ReplyWithStringBuffer(ctx, "iterations", 10);
    RedisModule_ReplyWithLongLong(ctx, job->report.iterations);
}

static int agg_job_finish(RedisModuleCtx *ctx, SpirtJob *base) {
    AggJob *job = (AggJob *)base;
    if (job->base.error.code != SPIRT_OK) return spirt_reply_spirt_error(ctx, &job->base.error);
    SpirtTensor *result = job->result;
    job->result = NULL; /* the key owns it from here */
    if (spirt_key_store(ctx, job->destination, result, job->mean_only ? "spirt.avg" : "spirt.agg") != REDISMODULE_OK)
        return spirt_reply_error(ctx, "INTERNAL", "cannot store the result");
    spirt_propagate_tensor(ctx, job->destination, result);
    if (job->report_wanted) {
        reply_report(ctx, job);
        return REDISMODULE_OK;
    }
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}

static void agg_job_destroy(SpirtJob *base) {
    AggJob *job = (AggJob *)base;
    for (size_t i = 0; i < job->n; i++) spirt_tensor_release(job->sources[i]);
    spirt_tensor_release(job->center);
    spirt_tensor_release(job->result);
    if (job->destination) RedisModule_FreeString(NULL, job->destination);
    RedisModule_Free(job->sources);
    RedisModule_Free(job->inputs);
    RedisModule_Free(job);
}

static AggJob *agg_job_new(size_t n) {
    AggJob *job = spirt_job_create(sizeof(*job), agg_job_compute, agg_job_finish, agg_job_destroy);
    job->sources = RedisModule_Alloc(sizeof(SpirtTensor *) * n);
    job->inputs = RedisModule_Alloc(sizeof(float *) * n);
    return job;
}

/* Takes the references and submits; the job owns everything afterwards. */
static int submit(RedisModuleCtx *ctx, AggJob *job, RedisModuleString *destination, SpirtTensor **found, size_t n,
                  SpirtTensor *center) {
    job->n = n;
    for (size_t i = 0; i < n; i++) {
        job->sources[i] = spirt_tensor_retain(found[i]);
        job->inputs[i] = found[i]->data;
    }
    if (center) {
        job->center = spirt_tensor_retain(center);
        job->config.center = center->data;
    }
    RedisModule_RetainString(NULL, destination);
    job->destination = destination;
    return spirt_job_submit(ctx, &job->base, n * found[0]->count);
}

/* --- SPIRT.AVG dst src [src ...] ------------------------------------------------
 * The element-wise mean. Reply: +OK. Errors: NOKEY, WRONGTYPE, SHAPE,
 * INVALID (more than AGG_MAX_INPUTS sources), NOMEM. (The mean of finite
 * tensors is finite: see agg_job_compute.) */
int spirt_command_avg(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 3) return RedisModule_WrongArity(ctx);
    size_t n = (size_t)argc - 2;
    if (n > AGG_MAX_INPUTS) return spirt_reply_error(ctx, "INVALID", "%zu sources: at most %d", n, AGG_MAX_INPUTS);
    SpirtTensor **found = RedisModule_Alloc(sizeof(SpirtTensor *) * n);
    if (spirt_sources_or_reply(ctx, argv + 2, n, found) != REDISMODULE_OK) {
        RedisModule_Free(found);
        return REDISMODULE_OK;
    }
    if (n == 1) {
        /* The mean of one tensor is that tensor, bit for bit, and tensors
         * are immutable: share it, as COPY does, instead of a pass over it.
         * (A peer with one minibatch a round averages one gradient.) */
        SpirtTensor *shared = spirt_tensor_retain(found[0]);
        RedisModule_Free(found);
        if (spirt_key_store(ctx, argv[1], shared, "spirt.avg") != REDISMODULE_OK)
            return spirt_reply_error(ctx, "INTERNAL", "cannot store the result");
        spirt_propagate_tensor(ctx, argv[1], shared);
        return RedisModule_ReplyWithSimpleString(ctx, "OK");
    }
    AggJob *job = agg_job_new(n);
    job->mean_only = 1;
    int status = submit(ctx, job, argv[1], found, n, NULL);
    RedisModule_Free(found);
    return status;
}

/* --- SPIRT.AGG dst RULE name [param value ...] SRC n src [src ...] -----------
 * Parameters (agg.h says which rule uses which): F f, TRIM t, M m,
 * MAXITER k, TOL x, NU x, TAU x, ITERS l, CENTER key, PRE NNM|NONE,
 * REPORT YES|NO. Reply: +OK, or with REPORT YES ["rule", name,
 * "selected_count", k, "selected", [indices...], "iterations", i].
 * Errors: INVALID (syntax, unknown rule or parameter, bad value),
 * PRECONDITION (e.g. f too large for n), NOKEY, WRONGTYPE, SHAPE,
 * NONFINITE (result overflowed; nothing written), NOMEM. */

/* Applies one "NAME value" pair to `config`; replies on error. */
static int parse_parameter(RedisModuleCtx *ctx, RedisModuleString *name, RedisModuleString *value, AggConfig *config,
                           RedisModuleString **center_name, int *report) {
    long long integer;
    double real;
    char label[80];
    if (spirt_arg_is(name, "F")) {
        if (spirt_parse_integer_or_reply(ctx, value, "F", 0, AGG_MAX_INPUTS, &integer)) return REDISMODULE_ERR;
        config->f = (size_t)integer;
    } else if (spirt_arg_is(name, "TRIM")) {
        if (spirt_parse_integer_or_reply(ctx, value, "TRIM", 0, AGG_MAX_INPUTS, &integer)) return REDISMODULE_ERR;
        config->trim = (size_t)integer;
    } else if (spirt_arg_is(name, "M")) {
        if (spirt_parse_integer_or_reply(ctx, value, "M", 0, AGG_MAX_INPUTS, &integer)) return REDISMODULE_ERR;
        config->m = (size_t)integer;
    } else if (spirt_arg_is(name, "MAXITER")) {
        if (spirt_parse_integer_or_reply(ctx, value, "MAXITER", 1, 1000000, &integer)) return REDISMODULE_ERR;
        config->max_iterations = (int)integer;
    } else if (spirt_arg_is(name, "ITERS")) {
        if (spirt_parse_integer_or_reply(ctx, value, "ITERS", 1, 1000000, &integer)) return REDISMODULE_ERR;
        config->clip_iterations = (int)integer;
    } else if (spirt_arg_is(name, "TOL")) {
        if (spirt_parse_double_or_reply(ctx, value, "TOL", &real)) return REDISMODULE_ERR;
        config->tolerance = real;
    } else if (spirt_arg_is(name, "NU")) {
        if (spirt_parse_double_or_reply(ctx, value, "NU", &real)) return REDISMODULE_ERR;
        config->nu = real;
    } else if (spirt_arg_is(name, "TAU")) {
        if (spirt_parse_double_or_reply(ctx, value, "TAU", &real)) return REDISMODULE_ERR;
        config->tau = real;
    } else if (spirt_arg_is(name, "CENTER")) {
        *center_name = value;
    } else if (spirt_arg_is(name, "PRE")) {
        if (spirt_arg_is(value, "NNM"))
            config->pre_nnm = 1;
        else if (spirt_arg_is(value, "NONE"))
            config->pre_nnm = 0;
        else {
            spirt_reply_error(ctx, "INVALID", "PRE '%s' is not NNM or NONE",
                              spirt_key_label(value, label, sizeof(label)));
            return REDISMODULE_ERR;
        }
    } else if (spirt_arg_is(name, "REPORT")) {
        if (spirt_arg_is(value, "YES"))
            *report = 1;
        else if (spirt_arg_is(value, "NO"))
            *report = 0;
        else {
            spirt_reply_error(ctx, "INVALID", "REPORT '%s' is not YES or NO",
                              spirt_key_label(value, label, sizeof(label)));
            return REDISMODULE_ERR;
        }
    } else {
        spirt_reply_error(ctx, "INVALID",
                          "unknown parameter '%s' (known: F, TRIM, M, MAXITER, TOL, NU, TAU, ITERS, CENTER, PRE, "
                          "REPORT, then SRC n keys...)",
                          spirt_key_label(name, label, sizeof(label)));
        return REDISMODULE_ERR;
    }
    return REDISMODULE_OK;
}

int spirt_command_agg(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 7) return RedisModule_WrongArity(ctx);
    static const char syntax[] = "syntax: SPIRT.AGG dst RULE name [param value ...] SRC n src [src ...]";
    if (!spirt_arg_is(argv[2], "RULE")) return spirt_reply_error(ctx, "INVALID", "%s", syntax);

    size_t name_length;
    const char *name_text = RedisModule_StringPtrLen(argv[3], &name_length);
    char rule_name[64];
    if (name_length >= sizeof(rule_name) || memchr(name_text, '\0', name_length))
        name_length = sizeof(rule_name) - 1; /* cannot be a rule: agg_rule_parse says so */
    memcpy(rule_name, name_text, name_length);
    rule_name[name_length] = '\0';
    AggRule rule;
    SpirtError error;
    if (agg_rule_parse(rule_name, &rule, &error) != SPIRT_OK) return spirt_reply_spirt_error(ctx, &error);

    AggConfig config = agg_config_default(rule);
    config.threads = spirt_config.threads;
    config.inputs_known_finite = 1; /* the database holds finite tensors only */
    RedisModuleString *center_name = NULL;
    int report = 0, i = 4;
    while (i < argc && !spirt_arg_is(argv[i], "SRC")) {
        if (i + 1 >= argc) {
            char label[80];
            return spirt_reply_error(ctx, "INVALID", "parameter '%s' needs a value",
                                     spirt_key_label(argv[i], label, sizeof(label)));
        }
        if (parse_parameter(ctx, argv[i], argv[i + 1], &config, &center_name, &report) != REDISMODULE_OK)
            return REDISMODULE_OK;
        i += 2;
    }
    if (i + 1 >= argc) return spirt_reply_error(ctx, "INVALID", "missing SRC n src [src ...] (%s)", syntax);
    int first_source;
    size_t n;
    if (spirt_parse_sources_or_reply(ctx, argv, argc, i, &first_source, &n) != REDISMODULE_OK) return REDISMODULE_OK;

    SpirtTensor **found = RedisModule_Alloc(sizeof(SpirtTensor *) * n);
    SpirtTensor *center = NULL;
    int ok = spirt_sources_or_reply(ctx, argv + first_source, n, found) == REDISMODULE_OK;
    if (ok && center_name) {
        ok = spirt_key_tensor_or_reply(ctx, center_name, "center", &center) == REDISMODULE_OK;
        if (ok && !tensor_shape_equal(&center->shape, &found[0]->shape)) {
            char shape_c[96], shape_s[96];
            spirt_reply_error(ctx, "SHAPE", "center has shape %s but the sources have %s",
                              tensor_shape_format(&center->shape, shape_c, sizeof(shape_c)),
                              tensor_shape_format(&found[0]->shape, shape_s, sizeof(shape_s)));
            ok = 0;
        }
    }
    if (ok && agg_check(&config, n, found[0]->count, &error) != SPIRT_OK) {
        spirt_reply_spirt_error(ctx, &error);
        ok = 0;
    }
    if (!ok) {
        RedisModule_Free(found);
        return REDISMODULE_OK;
    }
    AggJob *job = agg_job_new(n);
    job->config = config;
    job->report_wanted = report;
    int status = submit(ctx, job, argv[1], found, n, center);
    RedisModule_Free(found);
    return status;
}
