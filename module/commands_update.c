/* commands_update.c -- SPIRT.UPDATE and SPIRT.AVGUPDATE: one optimizer step
 * on a parameter tensor in the database, with its optimizer state in the
 * database too, by the project's one implementation of every optimizer
 * (src/optim, include/spirt/optim.h).
 *
 * SPIRT.UPDATE params grad OPT sgd|momentum|nesterov|adam|adamw LR x
 *              [MOMENTUM m] [BETA1 b] [BETA2 b] [EPS e] [WD w] [STEP t]
 *              [STATE key] [PERSIST YES|NO]
 * Reply: +OK. The state (momentum: n floats; adam: m then s, 2n floats) is
 * a one-dimensional tensor under STATE, created zeroed on first use and
 * shape-checked afterwards; STEP (1-based) is required by adam/adamw.
 * Errors: INVALID (syntax, bad option or value), NOKEY, WRONGTYPE, SHAPE,
 * NONFINITE (the step overflowed: nothing written), CONFLICT (params or
 * state was replaced while the step ran: nothing written), NOMEM.
 *
 * SPIRT.AVGUPDATE params avg OPT ... (the same options) SRC n src [src ...]
 * is SPIRT.AVG avg src ... followed by SPIRT.UPDATE params avg OPT ..., as
 * one command: the same results bit for bit, all written or (on an error,
 * CONFLICT included) none. It makes one pass over the data instead of two:
 * the mean of each chunk is computed and stepped with while it is in
 * cache, so the average is written once and never read back from memory,
 * and the command blocks and wakes its client once instead of twice. At a
 * million parameters that is most of what is left of an in-database round
 * (`spirt bench indb`).
 *
 * Like every write here, the step builds new tensors and swaps them in: the
 * old parameters stay intact for readers (and for the error paths). It runs
 * chunk by chunk: copy a cache-sized chunk of the old parameters (and state)
 * into the new tensors, then apply optim_step to that chunk while it is in
 * cache. Each value is thus read and written once from memory, as a fused
 * out-of-place kernel would, and the result is bit-identical to one
 * optim_step over the whole vector (optim.h: every step is element-wise).
 * Chunks go to whichever kernel thread is free next (the same results,
 * whichever thread computes a chunk), so a core busy with other work on a
 * shared machine does not hold the step back. */
#include <math.h>
#include <string.h>

#include "spirt/agg.h"
#include "spirt/optim.h"
#include "spirt/parallel.h"
#include "spirt_module.h"

/* Floats per chunk: a chunk of params, grad and adam's two state halves
 * (plus the scratch copy of the state) stays within a core's L2 cache. */
#define UPDATE_CHUNK 8192

typedef struct UpdateJob {
    SpirtJob base;
    OptimConfig config;
    int persist; /* propagate the result (PERSIST YES, the default) */
    uint64_t step;
    RedisModuleString *params_name;  /* retained key names */
    RedisModuleString *state_name;   /* NULL when the optimizer keeps no state */
    RedisModuleString *average_name; /* AVGUPDATE's avg; NULL for UPDATE */
    SpirtTensor *params;             /* references to the inputs */
    SpirtTensor *grad;               /* UPDATE's gradient; NULL for AVGUPDATE */
    size_t source_count;             /* AVGUPDATE: the gradients averaged */
    SpirtTensor **sources;
    const float **inputs; /* their data */
    SpirtTensor *state;   /* NULL: none yet (starts at zero) */
    size_t state_count;   /* optim_state_count */
    SpirtTensor *new_params; /* results, owned until stored */
    SpirtTensor *new_state;
    SpirtTensor *new_average;
    atomic_size_t first_bad;  /* smallest non-finite result index */
    atomic_size_t next_chunk; /* the first value no kernel thread has taken */
} UpdateJob;

/* Lowers job->first_bad to `index` if it is smaller. */
static void note_bad(UpdateJob *job, size_t index) {
    size_t seen = atomic_load(&job->first_bad);
    while (index < seen && !atomic_compare_exchange_weak(&job->first_bad, &seen, index)) {
    }
}

/* Steps the values [start, start + length) (length <= UPDATE_CHUNK).
 * `rows` has room for the source pointers (AVGUPDATE). */
static void update_chunk(UpdateJob *job, size_t start, size_t length, const float **rows, float *scratch) {
    size_t n = job->params->count;
    const float *old_state = job->state ? job->state->data : NULL;
    float *new_state = job->new_state ? job->new_state->data : NULL;
    int two_halves = job->state_count == 2 * n; /* adam: m then s */
    float *p = job->new_params->data + start;
    memcpy(p, job->params->data + start, length * sizeof(float));
    const float *grad;
    if (job->grad) {
        grad = job->grad->data + start;
    } else {
        /* AVGUPDATE: this chunk's mean, by agg_mean as SPIRT.AVG computes it
         * (each value the same way in any split: the same bits), stepped
         * with while it is in cache. */
        for (size_t k = 0; k < job->source_count; k++) rows[k] = job->inputs[k] + start;
        float *average = job->new_average->data + start;
        agg_mean(rows, job->source_count, length, average, 1);
        grad = average;
    }
    float *chunk_state = NULL;
    if (new_state && !two_halves) {
        /* momentum: the chunk's velocities are contiguous: step in place
         * in the new state. */
        chunk_state = new_state + start;
        if (old_state)
            memcpy(chunk_state, old_state + start, length * sizeof(float));
        else
            memset(chunk_state, 0, length * sizeof(float));
    } else if (new_state) {
        /* adam: gather the chunk's m and s into [m | s], as optim_step
         * expects for `length` parameters, and scatter them back after. */
        chunk_state = scratch;
        if (old_state) {
            memcpy(scratch, old_state + start, length * sizeof(float));
            memcpy(scratch + length, old_state + n + start, length * sizeof(float));
        } else {
            memset(scratch, 0, 2 * length * sizeof(float));
        }
    }
    SpirtError error;
    if (optim_step(&job->config, p, grad, chunk_state, length, job->step, &error) != SPIRT_OK) {
        note_bad(job, start); /* cannot happen after optim_config_check */
        return;
    }
    if (new_state && two_halves) {
        memcpy(new_state + start, scratch, length * sizeof(float));
        memcpy(new_state + n + start, scratch + length, length * sizeof(float));
    }
    /* The overflow check, while the chunk is still in cache. */
    size_t bad = 0;
    if (!spirt_values_finite(p, length, &bad)) note_bad(job, start + bad);
    if (chunk_state && !spirt_values_finite(chunk_state, two_halves ? 2 * length : length, &bad))
        note_bad(job, start + (bad % length));
}

/* One kernel thread: takes the next chunk until none is left. */
static void update_worker(void *context, size_t first, size_t last) {
    (void)first, (void)last; /* one call per thread; chunks come from next_chunk */
    UpdateJob *job = context;
    size_t n = job->params->count;
    _Alignas(64) float scratch[2 * UPDATE_CHUNK];
    const float **rows = job->source_count ? RedisModule_Alloc(job->source_count * sizeof(float *)) : NULL;
    for (;;) {
        size_t start = atomic_fetch_add(&job->next_chunk, UPDATE_CHUNK);
        if (start >= n) break;
        update_chunk(job, start, n - start < UPDATE_CHUNK ? n - start : UPDATE_CHUNK, rows, scratch);
    }
    RedisModule_Free(rows);
}

static void update_compute(SpirtJob *base) {
    UpdateJob *job = (UpdateJob *)base;
    size_t n = job->params->count;
    job->new_params = spirt_tensor_create(&job->params->shape, 0);
    if (job->state_count > 0) {
        TensorShape state_shape;
        tensor_shape_vector(&state_shape, job->state_count, NULL);
        job->new_state = spirt_tensor_create(&state_shape, 0);
    }
    if (job->average_name) job->new_average = spirt_tensor_create(&job->params->shape, 0);
    if (job->new_params == NULL || (job->state_count > 0 && job->new_state == NULL) ||
        (job->average_name && job->new_average == NULL)) {
        spirt_error_set(&job->base.error, SPIRT_ERR_NOMEM, "out of memory for the updated tensors (%zu values)", n);
        return;
    }
    atomic_init(&job->first_bad, SIZE_MAX);
    atomic_init(&job->next_chunk, 0);
    size_t chunks = (n + UPDATE_CHUNK - 1) / UPDATE_CHUNK;
    int threads = spirt_config.threads < 1 ? 1 : spirt_config.threads;
    if ((size_t)threads > chunks) threads = (int)chunks;
    parallel_for((size_t)threads, 1, threads, update_worker, job);
    size_t bad = atomic_load(&job->first_bad);
    if (bad != SIZE_MAX)
        spirt_error_set(&job->base.error, SPIRT_ERR_NONFINITE,
                        "the %s step overflowed float32 at parameter %zu; nothing was written",
                        optim_kind_name(job->config.kind), bad);
}

/* 1 if `name` still holds `expected` (NULL: still holds nothing). */
static int key_unchanged(RedisModuleCtx *ctx, RedisModuleString *name, const SpirtTensor *expected) {
    SpirtTensor *now;
    SpirtKeyState state = spirt_key_lookup(ctx, name, &now);
    return expected ? state == SPIRT_KEY_TENSOR && now == expected : state == SPIRT_KEY_EMPTY;
}

static int update_finish(RedisModuleCtx *ctx, SpirtJob *base) {
    UpdateJob *job = (UpdateJob *)base;
    if (job->base.error.code != SPIRT_OK) return spirt_reply_spirt_error(ctx, &job->base.error);
    /* A read-modify-write: if another client replaced the parameters or the
     * state while the step ran, storing would silently undo its write. */
    if (!key_unchanged(ctx, job->params_name, job->params) ||
        (job->state_name && !key_unchanged(ctx, job->state_name, job->state)))
        return spirt_reply_error(ctx, "CONFLICT",
                                 "params or state changed while the update ran; nothing was written (retry)");
    SpirtTensor *params = job->new_params, *state = job->new_state, *average = job->new_average;
    job->new_params = job->new_state = job->new_average = NULL; /* the keys own them from here */
    /* AVGUPDATE: the average first, as SPIRT.AVG would have stored it; it
     * propagates like AVG's result, whatever PERSIST says of the step. */
    if (average) {
        if (spirt_key_store(ctx, job->average_name, average, "spirt.avg") != REDISMODULE_OK) {
            spirt_tensor_release(params);
            spirt_tensor_release(state);
            return spirt_reply_error(ctx, "INTERNAL", "cannot store the average");
        }
        spirt_propagate_tensor(ctx, job->average_name, average);
    }
    if (spirt_key_store(ctx, job->params_name, params, "spirt.update") != REDISMODULE_OK ||
        (state && spirt_key_store(ctx, job->state_name, state, "spirt.update") != REDISMODULE_OK))
        return spirt_reply_error(ctx, "INTERNAL", "cannot store the update");
    /* Two propagated commands: Redis wraps them in MULTI/EXEC. With PERSIST
     * NO the step stays in memory only: the caller checkpoints later by
     * stepping with PERSIST YES (or SPIRT.TSET of the values). */
    if (job->persist) {
        spirt_propagate_tensor(ctx, job->params_name, params);
        if (state) spirt_propagate_tensor(ctx, job->state_name, state);
    } else {
        spirt_propagate_nothing(ctx, job->params_name);
    }
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}

static void update_destroy(SpirtJob *base) {
    UpdateJob *job = (UpdateJob *)base;
    spirt_tensor_release(job->params);
    spirt_tensor_release(job->grad);
    spirt_tensor_release(job->state);
    spirt_tensor_release(job->new_params);
    spirt_tensor_release(job->new_state);
    spirt_tensor_release(job->new_average);
    for (size_t i = 0; i < job->source_count; i++) spirt_tensor_release(job->sources[i]);
    RedisModule_Free(job->sources);
    RedisModule_Free(job->inputs);
    if (job->params_name) RedisModule_FreeString(NULL, job->params_name);
    if (job->state_name) RedisModule_FreeString(NULL, job->state_name);
    if (job->average_name) RedisModule_FreeString(NULL, job->average_name);
    RedisModule_Free(job);
}

static const char update_syntax[] =
    "syntax: SPIRT.UPDATE params grad OPT sgd|momentum|nesterov|adam|adamw LR x [MOMENTUM m] [BETA1 b] "
    "[BETA2 b] [EPS e] [WD w] [STEP t] [STATE key] [PERSIST YES|NO]";
static const char avgupdate_syntax[] =
    "syntax: SPIRT.AVGUPDATE params avg OPT sgd|momentum|nesterov|adam|adamw LR x [MOMENTUM m] [BETA1 b] "
    "[BETA2 b] [EPS e] [WD w] [STEP t] [STATE key] [PERSIST YES|NO] SRC n src [src ...]";

/* Parses "OPT name LR x [options]" from argv[3..argc) into config/step/state. */
static int parse_options(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, const char *syntax,
                         OptimConfig *config, uint64_t *step, RedisModuleString **state_name, int *persist) {
    char label[80];
    if (!spirt_arg_is(argv[3], "OPT")) {
        spirt_reply_error(ctx, "INVALID", "%s", syntax);
        return REDISMODULE_ERR;
    }
    size_t length;
    const char *text = RedisModule_StringPtrLen(argv[4], &length);
    char kind_name[32];
    if (length >= sizeof(kind_name) || memchr(text, '\0', length)) length = sizeof(kind_name) - 1;
    memcpy(kind_name, text, length);
    kind_name[length] = '\0';
    OptimConfig parsed;
    memset(&parsed, 0, sizeof(parsed));
    SpirtError error;
    if (optim_kind_parse(kind_name, &parsed, &error) != SPIRT_OK) {
        spirt_reply_spirt_error(ctx, &error);
        return REDISMODULE_ERR;
    }
    *config = optim_config_default(parsed.kind, 0.0f);
    config->nesterov = parsed.nesterov;
    config->decoupled = parsed.decoupled;
    int have_lr = 0;
    *step = 0;
    *state_name = NULL;
    *persist = 1;
    for (int i = 5; i < argc; i += 2) {
        if (i + 1 >= argc) {
            spirt_reply_error(ctx, "INVALID", "option '%s' needs a value",
                              spirt_key_label(argv[i], label, sizeof(label)));
            return REDISMODULE_ERR;
        }
        RedisModuleString *name = argv[i], *value = argv[i + 1];
        double real = 0;
        long long integer;
        if (spirt_arg_is(name, "STATE")) {
            *state_name = value;
            continue;
        }
        if (spirt_arg_is(name, "PERSIST")) {
            if (!spirt_arg_is(value, "YES") && !spirt_arg_is(value, "NO")) {
                spirt_reply_error(ctx, "INVALID", "PERSIST takes YES or NO");
                return REDISMODULE_ERR;
            }
            *persist = spirt_arg_is(value, "YES");
            continue;
        }
        if (spirt_arg_is(name, "STEP")) {
            if (spirt_parse_integer_or_reply(ctx, value, "STEP", 1, (long long)1 << 53, &integer))
                return REDISMODULE_ERR;
            *step = (uint64_t)integer;
            continue;
        }
        static const char *const real_options[] = {"LR", "MOMENTUM", "BETA1", "BETA2", "EPS", "WD"};
        int which = -1;
        for (int k = 0; k < 6; k++)
            if (spirt_arg_is(name, real_options[k])) which = k;
        if (which < 0) {
            spirt_reply_error(ctx, "INVALID", "unknown option '%s' (%s)", spirt_key_label(name, label, sizeof(label)),
                              syntax);
            return REDISMODULE_ERR;
        }
        if (spirt_parse_double_or_reply(ctx, value, real_options[which], &real)) return REDISMODULE_ERR;
        float as_float = (float)real;
        if (!isfinite(as_float)) {
            spirt_reply_error(ctx, "INVALID", "%s %g does not fit in a float32", real_options[which], real);
            return REDISMODULE_ERR;
        }
        switch (which) {
        case 0: config->learning_rate = as_float, have_lr = 1; break;
        case 1: config->momentum = as_float; break;
        case 2: config->beta1 = as_float; break;
        case 3: config->beta2 = as_float; break;
        case 4: config->epsilon = as_float; break;
        default: config->weight_decay = as_float; break;
        }
    }
    if (!have_lr) {
        spirt_reply_error(ctx, "INVALID", "LR is required (%s)", syntax);
        return REDISMODULE_ERR;
    }
    if (optim_config_check(config, &error) != SPIRT_OK) {
        spirt_reply_spirt_error(ctx, &error);
        return REDISMODULE_ERR;
    }
    if (config->kind == OPTIM_ADAM && *step == 0) {
        spirt_reply_error(ctx, "INVALID", "%s needs STEP t (the 1-based step number, for bias correction)",
                          config->decoupled ? "adamw" : "adam");
        return REDISMODULE_ERR;
    }
    if (config->kind == OPTIM_SGD) *state_name = NULL; /* sgd keeps no state: STATE is ignored */
    return REDISMODULE_OK;
}

/* 1 if the two key names are the same bytes. */
static int same_name(RedisModuleString *a, RedisModuleString *b) {
    size_t length_a, length_b;
    const char *text_a = RedisModule_StringPtrLen(a, &length_a), *text_b = RedisModule_StringPtrLen(b, &length_b);
    return length_a == length_b && memcmp(text_a, text_b, length_a) == 0;
}

/* What both commands share once their arguments are parsed and their keys
 * found (borrowed): checks the gradient's shape against params
 * (`gradient`: UPDATE's grad, or AVGUPDATE's first source, the sources
 * already checked among themselves) and the state, then submits the job. argv[2] is grad (UPDATE) or avg (AVGUPDATE, with
 * the n `sources`). Replies on every error. */
static int submit_update(RedisModuleCtx *ctx, RedisModuleString **argv, const OptimConfig *config, uint64_t step,
                         RedisModuleString *state_name, int persist, SpirtTensor *params, SpirtTensor *gradient,
                         SpirtTensor **sources, size_t source_count) {
    const char *second = sources ? "avg" : "grad", *gradient_role = sources ? "the sources have" : "grad has";
    SpirtTensor *state = NULL;
    char shape_a[96], shape_b[96], label[80];
    if (!tensor_shape_equal(&params->shape, &gradient->shape))
        return spirt_reply_error(ctx, "SHAPE", "%s shape %s but params have %s", gradient_role,
                                 tensor_shape_format(&gradient->shape, shape_a, sizeof(shape_a)),
                                 tensor_shape_format(&params->shape, shape_b, sizeof(shape_b)));
    size_t n = params->count;
    size_t state_count = optim_state_count(config, n);
    if (state_count > 0 && state_name == NULL)
        return spirt_reply_error(ctx, "INVALID", "%s keeps optimizer state: give STATE key",
                                 optim_kind_name(config->kind));
    if (state_name) {
        for (int k = 1; k <= 2; k++)
            if (same_name(state_name, argv[k]))
                return spirt_reply_error(ctx, "INVALID", "STATE must be a key of its own, not the %s key",
                                         k == 1 ? "params" : second);
        SpirtKeyState found = spirt_key_lookup(ctx, state_name, &state);
        if (found == SPIRT_KEY_WRONGTYPE)
            return spirt_reply_error(ctx, "WRONGTYPE", "state '%s' does not hold a spirt tensor",
                                     spirt_key_label(state_name, label, sizeof(label)));
        TensorShape expected;
        tensor_shape_vector(&expected, state_count, NULL);
        if (state && !tensor_shape_equal(&state->shape, &expected))
            return spirt_reply_error(ctx, "SHAPE", "state '%s' has shape %s but %s over %zu parameters needs %s",
                                     spirt_key_label(state_name, label, sizeof(label)),
                                     tensor_shape_format(&state->shape, shape_a, sizeof(shape_a)),
                                     optim_kind_name(config->kind), n,
                                     tensor_shape_format(&expected, shape_b, sizeof(shape_b)));
    }

    UpdateJob *job = spirt_job_create(sizeof(*job), update_compute, update_finish, update_destroy);
    job->config = *config;
    job->step = step;
    job->persist = persist;
    job->state_count = state_count;
    job->params = spirt_tensor_retain(params);
    job->state = state ? spirt_tensor_retain(state) : NULL;
    RedisModule_RetainString(NULL, argv[1]);
    job->params_name = argv[1];
    if (state_name) {
        RedisModule_RetainString(NULL, state_name);
        job->state_name = state_name;
    }
    if (sources) {
        job->source_count = source_count;
        job->sources = RedisModule_Alloc(source_count * sizeof(SpirtTensor *));
        job->inputs = RedisModule_Alloc(source_count * sizeof(float *));
        for (size_t i = 0; i < source_count; i++) {
            job->sources[i] = spirt_tensor_retain(sources[i]);
            job->inputs[i] = sources[i]->data;
        }
        RedisModule_RetainString(NULL, argv[2]);
        job->average_name = argv[2];
    } else {
        job->grad = spirt_tensor_retain(gradient);
    }
    return spirt_job_submit(ctx, &job->base, (sources ? source_count + 2 : 2) * n + 2 * state_count);
}

int spirt_command_update(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 7) return RedisModule_WrongArity(ctx);
    OptimConfig config;
    uint64_t step;
    RedisModuleString *state_name;
    int persist;
    if (parse_options(ctx, argv, argc, update_syntax, &config, &step, &state_name, &persist) != REDISMODULE_OK)
        return REDISMODULE_OK;
    SpirtTensor *params, *grad;
    if (spirt_key_tensor_or_reply(ctx, argv[1], "params", &params) != REDISMODULE_OK) return REDISMODULE_OK;
    if (spirt_key_tensor_or_reply(ctx, argv[2], "grad", &grad) != REDISMODULE_OK) return REDISMODULE_OK;
    return submit_update(ctx, argv, &config, step, state_name, persist, params, grad, NULL, 0);
}

/* SPIRT.AVGUPDATE params avg OPT name LR x [options] SRC n src [src ...] */
int spirt_command_avgupdate(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 10) return RedisModule_WrongArity(ctx);
    /* SRC where an option name goes (so that an option value "SRC", a
     * STATE key of that name, is not taken for it). */
    int source_at = 5;
    while (source_at < argc && !spirt_arg_is(argv[source_at], "SRC")) source_at += 2;
    if (source_at + 1 >= argc)
        return spirt_reply_error(ctx, "INVALID", "missing SRC n src [src ...] (%s)", avgupdate_syntax);
    OptimConfig config;
    uint64_t step;
    RedisModuleString *state_name;
    int persist;
    if (parse_options(ctx, argv, source_at, avgupdate_syntax, &config, &step, &state_name, &persist) !=
        REDISMODULE_OK)
        return REDISMODULE_OK;
    int first_source;
    size_t n;
    if (spirt_parse_sources_or_reply(ctx, argv, argc, source_at, &first_source, &n) != REDISMODULE_OK)
        return REDISMODULE_OK;
    if (same_name(argv[1], argv[2]))
        return spirt_reply_error(ctx, "INVALID", "avg must be a key of its own, not the params key");
    SpirtTensor *params;
    if (spirt_key_tensor_or_reply(ctx, argv[1], "params", &params) != REDISMODULE_OK) return REDISMODULE_OK;
    SpirtTensor **found = RedisModule_Alloc(sizeof(SpirtTensor *) * n);
    int status = REDISMODULE_OK;
    if (spirt_sources_or_reply(ctx, argv + first_source, n, found) == REDISMODULE_OK)
        status = submit_update(ctx, argv, &config, step, state_name, persist, params, found[0], found, n);
    RedisModule_Free(found);
    return status;
}
