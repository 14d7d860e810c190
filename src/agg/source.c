/* source.c -- the rows a coordinate-wise pass reads: the inputs themselves,
 * or their nearest-neighbour mixtures computed block by block.
 *
 * Mixing block by block is what keeps NNM from needing n * d floats of
 * mixed vectors: a pass asks for coordinates [begin, begin + AGG_BLOCK) of
 * every mixed row, and they are computed into the thread's scratch
 * (count * AGG_BLOCK floats) just before the rule's kernel uses them. */
#include "agg/agg_internal.h"
#include "agg/simd.h"

size_t agg_source_scratch_bytes(size_t count, int mixing) {
    size_t bytes = agg_align64(count * sizeof(float *));
    if (mixing) bytes += agg_align64(count * AGG_BLOCK * sizeof(float));
    return bytes;
}

/* Mixed row `index`, coordinates [begin, begin + length), into out. */
static void mix_row(const AggSource *source, size_t index, size_t begin, size_t length, float *out) {
    const AggMixing *mixing = source->mixing;
    const uint32_t *members = mixing->members + index * mixing->neighbours;
    AggD8 scale = d8_splat(1.0 / (double)mixing->neighbours);
    for (size_t c = 0; c < length; c += 16) {
        size_t lanes = length - c < 16 ? length - c : 16;
        AggD8 low = {0}, high = {0};
        for (size_t j = 0; j < mixing->neighbours; j++) {
            const float *x = source->inputs[members[j]] + begin + c;
            AggF16 v = lanes == 16 ? f16_load(x) : f16_load_partial(x, lanes);
            low += f16_low_d8(v);
            high += f16_high_d8(v);
        }
        f16_store(out + c, d8_pair_to_f16(low * scale, high * scale));
    }
}

const float **agg_source_block(const AggSource *source, size_t begin, size_t length, void *scratch) {
    const float **rows = scratch;
    if (source->mixing == NULL) {
        for (size_t j = 0; j < source->count; j++) {
            size_t index = source->row_ids ? source->row_ids[j] : j;
            rows[j] = source->inputs[index] + begin;
        }
        return rows;
    }
    float *buffer = (float *)((unsigned char *)scratch + agg_align64(source->count * sizeof(float *)));
    for (size_t j = 0; j < source->count; j++) {
        size_t index = source->row_ids ? source->row_ids[j] : j;
        float *row = buffer + j * AGG_BLOCK;
        mix_row(source, index, begin, length, row);
        rows[j] = row;
    }
    return rows;
}
