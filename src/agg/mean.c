/* mean.c -- streaming means of rows and the finiteness scan.
 *
 * The mean is memory-bound: it reads n * d floats and writes d. One pass:
 * for each group of 32 coordinates, every row's 32 values are added into
 * double accumulators held in registers, then scaled and rounded once. Sums
 * in double make the mean exact for identical inputs (n x is exact, and so
 * is n x * (1/n) after rounding to float) and keep sums of values near
 * FLT_MAX from overflowing. Threads split the coordinates; each coordinate
 * is computed the same way in any split, so the thread count does not
 * change a bit of the result. */
#include <math.h>

#include "agg/agg_internal.h"
#include "agg/simd.h"
#include "spirt/parallel.h"

/* Coordinates per parallel_for grain: whole pages of every row per range. */
enum { MEAN_GRAIN = 4096 };

typedef struct MeanContext {
    const float *const *rows;
    size_t count;
    const double *weights;
    double inverse_divisor;
    float *out;
} MeanContext;

/* 64 coordinates from `begin`: each row contributes four whole cache lines
 * per visit, into eight double accumulators kept in registers. */
static void mean_block64(const MeanContext *context, size_t begin) {
    AggD8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    const float *const *rows = context->rows;
    if (context->weights == NULL) {
        for (size_t j = 0; j < context->count; j++) {
            const float *row = rows[j] + begin;
            AggF16 v0 = f16_load(row), v1 = f16_load(row + 16), v2 = f16_load(row + 32), v3 = f16_load(row + 48);
            a0 += f16_low_d8(v0), a1 += f16_high_d8(v0), a2 += f16_low_d8(v1), a3 += f16_high_d8(v1);
            a4 += f16_low_d8(v2), a5 += f16_high_d8(v2), a6 += f16_low_d8(v3), a7 += f16_high_d8(v3);
        }
    } else {
        for (size_t j = 0; j < context->count; j++) {
            const float *row = rows[j] + begin;
            AggD8 w = d8_splat(context->weights[j]);
            AggF16 v0 = f16_load(row), v1 = f16_load(row + 16), v2 = f16_load(row + 32), v3 = f16_load(row + 48);
            a0 += w * f16_low_d8(v0), a1 += w * f16_high_d8(v0), a2 += w * f16_low_d8(v1), a3 += w * f16_high_d8(v1);
            a4 += w * f16_low_d8(v2), a5 += w * f16_high_d8(v2), a6 += w * f16_low_d8(v3), a7 += w * f16_high_d8(v3);
        }
    }
    AggD8 scale = d8_splat(context->inverse_divisor);
    float *out = context->out + begin;
    f16_store(out, d8_pair_to_f16(a0 * scale, a1 * scale));
    f16_store(out + 16, d8_pair_to_f16(a2 * scale, a3 * scale));
    f16_store(out + 32, d8_pair_to_f16(a4 * scale, a5 * scale));
    f16_store(out + 48, d8_pair_to_f16(a6 * scale, a7 * scale));
}

/* Fewer than 16 coordinates (or 16) from `begin`, zero-padded: the same
 * per-lane arithmetic as mean_block64. */
static void mean_tail16(const MeanContext *context, size_t begin, size_t lanes) {
    AggD8 low = {0}, high = {0};
    for (size_t j = 0; j < context->count; j++) {
        AggF16 v = f16_load_partial(context->rows[j] + begin, lanes);
        AggD8 w = d8_splat(context->weights ? context->weights[j] : 1.0);
        low += context->weights ? w * f16_low_d8(v) : f16_low_d8(v);
        high += context->weights ? w * f16_high_d8(v) : f16_high_d8(v);
    }
    AggD8 scale = d8_splat(context->inverse_divisor);
    f16_store_partial(context->out + begin, d8_pair_to_f16(low * scale, high * scale), lanes);
}

static void mean_range(void *argument, size_t begin, size_t end) {
    const MeanContext *context = argument;
    size_t c = begin;
    for (; c + 64 <= end; c += 64) mean_block64(context, c);
    for (; c < end; c += 16) mean_tail16(context, c, end - c < 16 ? end - c : 16);
}

void agg_mean_rows(const float *const *rows, size_t count, const double *weights, double inverse_divisor, size_t d,
                   float *out, int threads) {
    MeanContext context = {rows, count, weights, inverse_divisor, out};
    parallel_for(d, MEAN_GRAIN, threads, mean_range, &context);
}

void agg_mean(const float *const *inputs, size_t n, size_t d, float *out, int threads) {
    if (n == 0 || d == 0) return;
    agg_mean_rows(inputs, n, NULL, 1.0 / (double)n, d, out, threads);
}

/* --- Finiteness ------------------------------------------------------- */

/* x * 0 is 0 for every finite x and NaN for NaN and infinities, so one
 * multiply-add per vector finds them; the sum is tested once per row. */
int agg_all_finite(const float *values, size_t d) {
    AggF16 s0 = {0}, s1 = {0};
    size_t c = 0;
    for (; c + 32 <= d; c += 32) {
        s0 += f16_load(values + c) * 0.0f;
        s1 += f16_load(values + c + 16) * 0.0f;
    }
    for (; c < d; c += 16) s0 += f16_load_partial(values + c, d - c < 16 ? d - c : 16) * 0.0f;
    AggF16 s = s0 + s1;
    for (int lane = 0; lane < AGG_LANES; lane++)
        if (s[lane] != 0.0f) return 0;
    return 1;
}

typedef struct FiniteContext {
    const float *const *inputs;
    size_t d;
    atomic_size_t first_bad; /* lowest bad input index found so far */
} FiniteContext;

static void finite_range(void *argument, size_t begin, size_t end) {
    FiniteContext *context = argument;
    for (size_t i = begin; i < end; i++) {
        if (agg_all_finite(context->inputs[i], context->d)) continue;
        size_t seen = atomic_load(&context->first_bad);
        while (i < seen && !atomic_compare_exchange_weak(&context->first_bad, &seen, i)) {
        }
        return; /* ranges are ascending: later inputs of this range cannot be lower */
    }
}

size_t agg_find_nonfinite(const float *const *inputs, size_t n, size_t d, int threads, size_t *coordinate) {
    FiniteContext context = {.inputs = inputs, .d = d};
    atomic_init(&context.first_bad, n);
    /* One input per grain: a whole row is one sequential stream. */
    parallel_for(n, 1, threads, finite_range, &context);
    size_t bad = atomic_load(&context.first_bad);
    if (bad < n && coordinate) {
        *coordinate = 0;
        for (size_t c = 0; c < d; c++)
            if (!isfinite(inputs[bad][c])) {
                *coordinate = c;
                break;
            }
    }
    return bad;
}
