/* weiszfeld.c -- the one pass that geometric median and centered clipping
 * iterate.
 *
 * Both rules move a point z by a weighted combination of the inputs, with
 * weights that depend on the distances ||z - x_i||:
 *   geomed (smoothed Weiszfeld):  z' = sum_i w_i x_i / sum_i w_i,
 *                                 w_i = 1 / max(nu, ||z - x_i||)
 *   cclip:                        z' = z + (1/n) sum_i c_i (x_i - z)
 *                                    = ((n - sum c_i) z + sum_i c_i x_i) / n,
 *                                 c_i = min(1, tau / ||x_i - z||)
 * A naive iteration reads the inputs twice (distances, then the update).
 * Here one pass computes the new point block by block and, while the block
 * is still in cache, the distances from the new point to every input: those
 * are the next iteration's weights. So an iteration costs one read of n * d
 * floats. Sums are in double; the point is stored as float (the iterate is
 * exactly what is stored). Distances, change and norm are reduced per chunk
 * and the chunks added in order: the same result for any thread count. */
#include <string.h>

#include "agg/agg_internal.h"
#include "agg/simd.h"

typedef struct CombineContext {
    const AggSource *source;
    double previous_weight;
    const float *previous;
    const double *row_weights;
    double inverse_divisor;
    float *next;
    double *partials; /* per chunk: count distances, change, norm */
    size_t chunk_length;
} CombineContext;

size_t agg_combine_scratch_bytes(size_t count) { return agg_align64(count * sizeof(AggD8)); }

size_t agg_combine_partials_bytes(size_t count, size_t d) {
    return agg_chunk_count(count, d) * (count + 2) * sizeof(double);
}

/* Coordinates [c, c + lanes) of the block starting at `block`. */
static void combine_group(const CombineContext *context, const float **rows, size_t block, size_t c, size_t lanes,
                          AggD8 *distances, AggD8 *change, AggD8 *norm) {
    size_t count = context->source->count;
#define LOAD(p) (lanes == 16 ? f16_load(p) : f16_load_partial((p), lanes))
    AggD8 low = {0}, high = {0}, previous_low = {0}, previous_high = {0};
    if (context->previous) {
        AggF16 previous = LOAD(context->previous + block + c);
        previous_low = f16_low_d8(previous);
        previous_high = f16_high_d8(previous);
        low = previous_low * context->previous_weight;
        high = previous_high * context->previous_weight;
    }
    if (context->row_weights)
        for (size_t j = 0; j < count; j++) {
            AggF16 v = LOAD(rows[j] + c);
            AggD8 w = d8_splat(context->row_weights[j]);
            low += w * f16_low_d8(v);
            high += w * f16_high_d8(v);
        }
    AggD8 scale = d8_splat(context->inverse_divisor);
    AggF16 point = d8_pair_to_f16(low * scale, high * scale);
    if (lanes == 16)
        f16_store(context->next + block + c, point);
    else
        f16_store_partial(context->next + block + c, point, lanes);
    AggD8 point_low = f16_low_d8(point), point_high = f16_high_d8(point);
    if (context->previous) {
        AggD8 step_low = point_low - previous_low, step_high = point_high - previous_high;
        *change += step_low * step_low + step_high * step_high;
    }
    *norm += point_low * point_low + point_high * point_high;
    for (size_t j = 0; j < count; j++) {
        AggF16 v = LOAD(rows[j] + c);
        AggD8 gap_low = point_low - f16_low_d8(v), gap_high = point_high - f16_high_d8(v);
        distances[j] += gap_low * gap_low + gap_high * gap_high;
    }
#undef LOAD
}

static void combine_range(void *argument, void *slot, size_t chunk_begin, size_t chunk_end) {
    const CombineContext *context = argument;
    const AggSource *source = context->source;
    unsigned char *scratch = slot;
    size_t count = source->count;
    AggD8 *distances = (AggD8 *)(scratch + agg_source_scratch_bytes(count, source->mixing != NULL));
    for (size_t chunk = chunk_begin; chunk < chunk_end; chunk++) {
        AggD8 change = {0}, norm = {0};
        memset(distances, 0, count * sizeof(AggD8));
        size_t begin = chunk * context->chunk_length;
        size_t end = begin + context->chunk_length < source->d ? begin + context->chunk_length : source->d;
        for (size_t block = begin; block < end; block += AGG_BLOCK) {
            size_t length = end - block < AGG_BLOCK ? end - block : AGG_BLOCK;
            const float **rows = agg_source_block(source, block, length, scratch);
            for (size_t c = 0; c < length; c += 16)
                combine_group(context, rows, block, c, length - c < 16 ? length - c : 16, distances, &change, &norm);
        }
        double *partial = context->partials + chunk * (count + 2);
        for (size_t j = 0; j < count; j++) partial[j] = d8_sum(distances[j]);
        partial[count] = d8_sum(change);
        partial[count + 1] = d8_sum(norm);
    }
}

void agg_combine_pass(const AggSource *source, double previous_weight, const float *previous,
                      const double *row_weights, double inverse_divisor, float *next, int threads, AggSlots *slots,
                      double *partials, double *distances2, double *change2, double *norm2) {
    size_t count = source->count;
    CombineContext context = {source, previous_weight, previous, row_weights, inverse_divisor, next, partials,
                              agg_chunk_length(count, source->d)};
    size_t chunks = agg_chunk_count(count, source->d);
    agg_share(chunks, 1, threads, slots, combine_range, &context);
    for (size_t j = 0; j < count + 2; j++) {
        double sum = 0.0;
        for (size_t chunk = 0; chunk < chunks; chunk++) sum += partials[chunk * (count + 2) + j];
        if (j < count)
            distances2[j] = sum;
        else if (j == count)
            *change2 = sum;
        else
            *norm2 = sum;
    }
}
