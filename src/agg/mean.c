/* mean.c -- streaming means of rows and the finiteness scan.
 *
 * The mean is memory-bound: it reads n * d floats and writes d. One pass:
 * for each group of 64 coordinates, every row's 64 values are added into
 * double accumulators held in registers, then scaled and rounded once. Sums
 * in double make the mean exact for identical inputs (n x is exact, and so
 * is n x * (1/n) after rounding to float) and keep sums of values near
 * FLT_MAX from overflowing. Threads split the coordinates; each coordinate
 * is computed the same way in any split, so the thread count does not
 * change a bit of the result.
 *
 * Large outputs (STREAM_MIN_BYTES and up) are written with non-temporal
 * stores, and the rows are prefetched ahead by software. A plain store to a
 * line that is not in cache first reads it from memory (read for
 * ownership): for a 40 MB mean that is 40 MB more to read, 9% more traffic
 * at n = 10, for an output that is too large to stay in cache for its next
 * reader anyway. The n rows (plus the output) are more streams than the
 * hardware prefetcher keeps far enough ahead, so each row is also fetched
 * PREFETCH_AHEAD floats ahead. Measured at n = 10, d = 10M, two threads
 * (medians of 9, interleaved): 19.3 ms plain, 19.2 with non-temporal
 * stores, 16.6-17.3 with both; at d = 1M (4 MB out, inputs in the
 * last-level cache) neither helped (1.78 ms plain, 1.65-2.0 with either),
 * and a 4 MB average is read again right away by SPIRT.UPDATE: those stay
 * plain. */
#include <math.h>

#include "agg/agg_internal.h"
#include "agg/simd.h"
#include "spirt/parallel.h"

/* Coordinates per piece of work (agg_share): whole pages of every row, and
 * long enough runs for the prefetchers (64 KiB of each row). */
enum { MEAN_GRAIN = 16384 };
/* Outputs of this many bytes or more are streamed (see above): 8M floats. */
#define STREAM_MIN_BYTES ((size_t)32 << 20)
/* How far ahead rows are prefetched when streaming, in floats (8 KiB):
 * 4 KiB to 16 KiB measured alike. */
enum { PREFETCH_AHEAD = 2048 };

typedef struct MeanContext {
    const float *const *rows;
    size_t count;
    const double *weights;
    double inverse_divisor;
    float *out;
    size_t d;
    int stream; /* non-temporal stores and software prefetch */
} MeanContext;

/* 64 coordinates from `begin`: each row contributes four whole cache lines
 * per visit, into eight double accumulators kept in registers. */
static void mean_block64(const MeanContext *context, size_t begin) {
    AggD8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    const float *const *rows = context->rows;
    if (context->stream && begin + PREFETCH_AHEAD + 64 <= context->d)
        for (size_t j = 0; j < context->count; j++) {
            const float *ahead = rows[j] + begin + PREFETCH_AHEAD;
            for (size_t line = 0; line < 64; line += 16) __builtin_prefetch(ahead + line);
        }
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
    if (context->stream) {
        f16_stream(out, d8_pair_to_f16(a0 * scale, a1 * scale));
        f16_stream(out + 16, d8_pair_to_f16(a2 * scale, a3 * scale));
        f16_stream(out + 32, d8_pair_to_f16(a4 * scale, a5 * scale));
        f16_stream(out + 48, d8_pair_to_f16(a6 * scale, a7 * scale));
        return;
    }
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

static void mean_range(void *argument, void *scratch, size_t begin, size_t end) {
    (void)scratch;
    const MeanContext *context = argument;
    size_t c = begin;
    for (; c + 64 <= end; c += 64) mean_block64(context, c);
    for (; c < end; c += 16) mean_tail16(context, c, end - c < 16 ? end - c : 16);
    /* Non-temporal stores are weakly ordered: make them visible before the
     * piece counts as done (the pass's join, the caller's next read). */
    if (context->stream) f16_stream_fence();
}

void agg_mean_rows(const float *const *rows, size_t count, const double *weights, double inverse_divisor, size_t d,
                   float *out, int threads) {
    /* Piece starts are multiples of 64 floats: with a 64-byte aligned out,
     * every mean_block64 writes whole aligned lines, as streaming needs. */
    int stream = d * sizeof(float) >= STREAM_MIN_BYTES && ((uintptr_t)out & 63) == 0;
    MeanContext context = {rows, count, weights, inverse_divisor, out, d, stream};
    agg_share(d, MEAN_GRAIN, threads, NULL, mean_range, &context);
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
