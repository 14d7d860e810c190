/* order.c -- coordinate-wise order statistics: median, trimmed mean and the
 * last step of Bulyan.
 *
 * Up to AGG_NETWORK_MAX_WIRES rows, the values of 32 coordinates at a time
 * (two vectors per row) go through a sorting network pruned to the outputs
 * the rule reads (network.c): every compare-exchange is a vector min and max,
 * so 32 coordinates are sorted with no branches. Beyond that size each
 * coordinate's values are copied out and a quickselect (or, for Bulyan, a
 * sort) finds the order statistics.
 *
 * Results are formed in double and rounded once: the mean of the two middle
 * values, the trimmed sum (in ascending order on the network path), and
 * Bulyan's average. Bulyan keeps, per coordinate, the beta = theta - 2f
 * sorted values nearest to the median m: a window s[lo .. lo + beta). As the
 * window slides right while its leftmost value is farther from m than the
 * value it would take in, lo = #{k < 2f : s_k + s_{k+beta} < 2m}; a tie keeps
 * the smaller value. That count has a closed form per lane, so the window is
 * found with vector compares, no per-lane indexing. */
#include "agg/agg_internal.h"
#include "agg/simd.h"

typedef struct OrderContext {
    const AggSource *source;
    AggOrderKind kind;
    size_t trim;
    float *out;
    const AggNetwork *network; /* NULL: per-coordinate selection */
} OrderContext;

/* --- Network path ------------------------------------------------------ */

/* One half (8 lanes) of the sorted wires: the rule's result in double. */
static AggD8 network_result(const OrderContext *context, AggF16 (*wires)[2], int half, int high_lanes) {
    size_t count = context->source->count;
#define LANES(k) (high_lanes ? f16_high_d8(wires[k][half]) : f16_low_d8(wires[k][half]))
    if (context->kind == AGG_ORDER_MEDIAN) {
        if (count % 2) return LANES(count / 2);
        return (LANES(count / 2 - 1) + LANES(count / 2)) * 0.5;
    }
    if (context->kind == AGG_ORDER_TRIMMED) {
        AggD8 sum = {0};
        for (size_t k = context->trim; k < count - context->trim; k++) sum += LANES(k);
        return sum * (1.0 / (double)(count - 2 * context->trim));
    }
    size_t f = context->trim, beta = count - 2 * f;
    AggD8 twice_median = count % 2 ? LANES(count / 2) * 2.0 : LANES(count / 2 - 1) + LANES(count / 2);
    AggL8 slides[AGG_NETWORK_MAX_WIRES];
    for (size_t k = 0; k < 2 * f; k++) slides[k] = LANES(k) + LANES(k + beta) < twice_median;
    AggD8 sum = {0};
    for (size_t k = 0; k < count; k++) {
        AggL8 keep = ~(AggL8){0};
        if (k < 2 * f) keep &= ~slides[k];   /* left of the window once it slid past k */
        if (k >= beta) keep &= slides[k - beta]; /* inside only if it slid far enough */
        sum += d8_and(LANES(k), keep);
    }
    return sum * (1.0 / (double)beta);
#undef LANES
}

/* Coordinates [offset, offset + lanes) of the block (lanes <= 32). */
static void network_group(const OrderContext *context, const float **rows, size_t offset, size_t lanes, float *out) {
    const AggNetwork *network = context->network;
    size_t count = context->source->count;
    AggF16 wires[AGG_NETWORK_MAX_WIRES][2];
    for (size_t j = 0; j < count; j++) {
        const float *row = rows[j] + offset;
        if (lanes == 32) {
            wires[j][0] = f16_load(row);
            wires[j][1] = f16_load(row + 16);
        } else {
            wires[j][0] = f16_load_partial(row, lanes < 16 ? lanes : 16);
            wires[j][1] = lanes > 16 ? f16_load_partial(row + 16, lanes - 16) : (AggF16){0};
        }
    }
    for (size_t t = 0; t < network->count; t++) {
        AggF16 *a = wires[network->pairs[t][0]], *b = wires[network->pairs[t][1]];
        AggF16 low0 = f16_min(a[0], b[0]), high0 = f16_max(a[0], b[0]);
        AggF16 low1 = f16_min(a[1], b[1]), high1 = f16_max(a[1], b[1]);
        a[0] = low0, b[0] = high0, a[1] = low1, b[1] = high1;
    }
    AggF16 result[2];
    for (int half = 0; half < 2; half++)
        result[half] = d8_pair_to_f16(network_result(context, wires, half, 0), network_result(context, wires, half, 1));
    if (lanes == 32) {
        f16_store(out, result[0]);
        f16_store(out + 16, result[1]);
    } else {
        f16_store_partial(out, result[0], lanes < 16 ? lanes : 16);
        if (lanes > 16) f16_store_partial(out + 16, result[1], lanes - 16);
    }
}

/* --- Selection path ---------------------------------------------------- */

static double selection_result(const OrderContext *context, double *values) {
    size_t count = context->source->count;
    if (context->kind == AGG_ORDER_MEDIAN) {
        size_t upper = count / 2;
        agg_select_doubles(values, count, upper);
        if (count % 2) return values[upper];
        double lower = values[0];
        for (size_t k = 1; k < upper; k++)
            if (values[k] > lower) lower = values[k];
        return (lower + values[upper]) * 0.5;
    }
    if (context->kind == AGG_ORDER_TRIMMED) {
        size_t trim = context->trim;
        agg_select_doubles(values, count, trim);
        agg_select_doubles(values + trim, count - trim, count - 2 * trim);
        double sum = 0.0;
        for (size_t k = trim; k < count - trim; k++) sum += values[k];
        return sum * (1.0 / (double)(count - 2 * trim));
    }
    size_t f = context->trim, beta = count - 2 * f;
    agg_sort_doubles(values, count);
    double twice_median = count % 2 ? 2.0 * values[count / 2] : values[count / 2 - 1] + values[count / 2];
    size_t low = 0;
    while (low < 2 * f && values[low] + values[low + beta] < twice_median) low++;
    double sum = 0.0;
    for (size_t k = low; k < low + beta; k++) sum += values[k];
    return sum * (1.0 / (double)beta);
}

static void order_range(void *argument, void *slot, size_t begin, size_t end) {
    const OrderContext *context = argument;
    const AggSource *source = context->source;
    unsigned char *scratch = slot;
    double *values = (double *)(scratch + agg_source_scratch_bytes(source->count, source->mixing != NULL));
    for (size_t block = begin; block < end; block += AGG_BLOCK) {
        size_t length = end - block < AGG_BLOCK ? end - block : AGG_BLOCK;
        const float **rows = agg_source_block(source, block, length, scratch);
        float *out = context->out + block;
        if (context->network) {
            for (size_t offset = 0; offset < length; offset += 32)
                network_group(context, rows, offset, length - offset < 32 ? length - offset : 32, out + offset);
            continue;
        }
        for (size_t c = 0; c < length; c++) {
            for (size_t j = 0; j < source->count; j++) values[j] = rows[j][c];
            out[c] = (float)selection_result(context, values);
        }
    }
}

size_t agg_order_scratch_bytes(size_t count) {
    return count > AGG_NETWORK_MAX_WIRES ? agg_align64(count * sizeof(double)) : 0;
}

/* The labels of the outputs each rule reads (see network.c). */
static void order_labels(AggOrderKind kind, size_t count, size_t trim, unsigned char *labels) {
    for (size_t k = 0; k < count; k++) labels[k] = AGG_WIRE_FREE;
    if (kind == AGG_ORDER_TRIMMED) {
        for (size_t k = trim; k < count - trim; k++) labels[k] = AGG_WIRE_GROUP;
        return;
    }
    size_t beta = count - 2 * trim;
    if (kind == AGG_ORDER_BULYAN)
        for (size_t k = 0; k < count; k++)
            labels[k] = k < 2 * trim || k >= beta ? AGG_WIRE_EXACT : AGG_WIRE_GROUP;
    /* The median alone needs only the set of its (one or two) wires; Bulyan
     * reads them apart from the other group members, so they must be exact. */
    unsigned char middle = kind == AGG_ORDER_MEDIAN ? AGG_WIRE_GROUP : AGG_WIRE_EXACT;
    labels[count / 2] = middle;
    if (count % 2 == 0) labels[count / 2 - 1] = middle;
}

void agg_order_pass(const AggSource *source, AggOrderKind kind, size_t trim, float *out, int threads, AggSlots *slots) {
    AggNetwork network;
    OrderContext context = {source, kind, trim, out, NULL};
    if (source->count <= AGG_NETWORK_MAX_WIRES) {
        unsigned char labels[AGG_NETWORK_MAX_WIRES];
        order_labels(kind, source->count, trim, labels);
        agg_network_build(&network, source->count, labels);
        context.network = &network;
    }
    /* Pieces of 16 blocks: enough to share out, each a handful of pages. */
    agg_share(source->d, 16 * AGG_BLOCK, threads, slots, order_range, &context);
}
