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

/* 32 coordinates from `begin` (or fewer at the end: `length`). */
static void mean_group(const MeanContext *context, size_t begin, size_t length) {
    AggD8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (size_t j = 0; j < context->count; j++) {
        const float *row = context->rows[j] + begin;
        AggF16 low, high;
        if (length == 32) {
            low = f16_load(row);
            high = f16_load(row + 16);
        } else {
            low = f16_load_partial(row, length < 16 ? length : 16);
            high = length > 16 ? f16_load_partial(row + 16, length - 16) : (AggF16){0};
        }
        if (context->weights) {
            AggD8 w = d8_splat(context->weights[j]);
            a0 += w * f16_low_d8(low);
            a1 += w * f16_high_d8(low);
            a2 += w * f16_low_d8(high);
            a3 += w * f16_high_d8(high);
        } else {
            a0 += f16_low_d8(low);
            a1 += f16_high_d8(low);
            a2 += f16_low_d8(high);
            a3 += f16_high_d8(high);
        }
    }
    AggD8 scale = d8_splat(context->inverse_divisor);
    AggF16 low = d8_pair_to_f16(a0 * scale, a1 * scale), high = d8_pair_to_f16(a2 * scale, a3 * scale);
    float *out = context->out + begin;
    if (length == 32) {
        f16_store(out, low);
        f16_store(out + 16, high);
    } else {
        f16_store_partial(out, low, length < 16 ? length : 16);
        if (length > 16) f16_store_partial(out + 16, high, length - 16);
    }
}

static void mean_range(void *argument, size_t begin, size_t end) {
    const MeanContext *context = argument;
    for (size_t c = begin; c < end; c += 32) mean_group(context, c, end - c < 32 ? end - c : 32);
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
