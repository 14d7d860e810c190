/* gram.c -- the Gram matrix of the inputs, for Krum, Bulyan and NNM.
 *
 * Pairwise squared distances come from one Gram matrix G = X X^T:
 * ||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij, clamped at 0 against rounding.
 *
 * Why our own kernel and not OpenBLAS: the shape here is a handful of rows
 * (n ~ 10..100) times millions of columns, which OpenBLAS's sgemm/ssyrk
 * handle poorly (packing dominates). On the 2-core AVX-512 target, gathering
 * 4096-coordinate blocks and calling cblas_ssyrk took about twice as long,
 * on one thread, as this whole kernel does in double (`spirt bench agg`
 * prints the comparison), and a float Gram would overflow for inputs above
 * ~1e19 and lose the small differences between clustered vectors. It also
 * keeps agg free of OpenBLAS's process-wide thread count (this code runs
 * inside redis-server, on a worker thread, next to other commands) and of
 * its CPU detection (0.3.21 takes this machine for a Prescott and runs SSE3
 * kernels unless OPENBLAS_CORETYPE is set).
 *
 * How: coordinates are cut into chunks (agg_chunk_length), chunks into
 * blocks of `block_length(n)` coordinates. For a block, every input's values
 * are widened to double into a per-thread buffer (rows padded to a multiple
 * of 4 with zeros), then a register-tiled kernel accumulates 4 x 4 tiles of
 * dot products (upper triangle only) with 8-lane double fused multiply-adds.
 * Float products are exact in double, so G does not overflow for inputs near
 * FLT_MAX and keeps the small differences that decide which vectors are
 * nearest. Each chunk's partial Gram is its own; the chunks are added in
 * order at the end, so the result does not depend on the thread count.
 * The finiteness check of the inputs rides on the gather. */
#include <string.h>

#include "agg/agg_internal.h"
#include "agg/simd.h"
#include "spirt/parallel.h"

static size_t padded_rows(size_t n) { return (n + 3) & ~(size_t)3; }

/* Coordinates per gathered block: each visit to an input reads 4 KiB of it
 * (a page: long enough runs for the hardware prefetcher), and the block's
 * doubles (rows * length * 8 bytes, 160 KiB for n = 20) stay in L2. At
 * least 64, a multiple of 16. */
static size_t block_length(size_t n) {
    size_t length = 65536 / padded_rows(n);
    if (length > 1024) length = 1024;
    if (length < 64) length = 64;
    return length & ~(size_t)15;
}

size_t agg_gram_scratch_bytes(size_t n) {
    return agg_align64(padded_rows(n) * block_length(n) * sizeof(double)) + n * sizeof(AggF16);
}

size_t agg_gram_partials_bytes(size_t n, size_t d) { return agg_chunk_count(n, d) * n * n * sizeof(double); }

typedef struct GramContext {
    const float *const *inputs;
    size_t n, d, chunk_length;
    AggSlots *slots;
    double *partials;        /* chunk_count * n * n */
    atomic_size_t first_bad; /* lowest input index with a non-finite value */
} GramContext;

static void note_nonfinite(GramContext *context, size_t index) {
    size_t seen = atomic_load(&context->first_bad);
    while (index < seen && !atomic_compare_exchange_weak(&context->first_bad, &seen, index)) {
    }
}

/* Widens 16 coordinates (fewer at the end: `lanes`) of one input into its
 * buffer row, and folds them into the row's finiteness check. */
static inline void gather_16(const float *x, double *row, size_t lanes, AggF16 *check) {
    AggF16 v = lanes == 16 ? f16_load(x) : f16_load_partial(x, lanes);
    *check += v * 0.0f;
    d8_store(row, f16_low_d8(v));
    if (lanes > 8) d8_store(row + 8, f16_high_d8(v));
}

/* Widens coordinates [begin, begin + length) of every input into rows of
 * `stride` doubles (zeros up to a multiple of 8) and checks them. The rows
 * advance together, 64 coordinates at a time, as in the mean: n streams
 * moving in step read faster than one row after another. */
static void gather_block(GramContext *context, size_t begin, size_t length, size_t stride, double *buffer,
                         AggF16 *checks) {
    size_t n = context->n, c = 0;
    memset(checks, 0, n * sizeof(AggF16));
    for (; c + 64 <= length; c += 64)
        for (size_t i = 0; i < n; i++) {
            const float *x = context->inputs[i] + begin + c;
            double *row = buffer + i * stride + c;
            for (size_t k = 0; k < 64; k += 16) gather_16(x + k, row + k, 16, &checks[i]);
        }
    for (; c < length; c += 16)
        for (size_t i = 0; i < n; i++)
            gather_16(context->inputs[i] + begin + c, buffer + i * stride + c, length - c < 16 ? length - c : 16,
                      &checks[i]);
    for (size_t i = 0; i < n; i++)
        for (int lane = 0; lane < AGG_LANES; lane++)
            if (checks[i][lane] != 0.0f) {
                note_nonfinite(context, i);
                break;
            }
}

/* Adds the dot products of rows i0..i0+3 with rows j0..j0+3 over `length`
 * (a multiple of 8) coordinates to the partial Gram (only entries < n). */
static void gram_tile(const double *buffer, size_t stride, size_t i0, size_t j0, size_t length, size_t n,
                      double *partial) {
    const double *a0 = buffer + i0 * stride, *a1 = a0 + stride, *a2 = a1 + stride, *a3 = a2 + stride;
    const double *b0 = buffer + j0 * stride, *b1 = b0 + stride, *b2 = b1 + stride, *b3 = b2 + stride;
    AggD8 c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0};
    AggD8 c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0}, c30 = {0}, c31 = {0}, c32 = {0}, c33 = {0};
    for (size_t k = 0; k < length; k += 8) {
        AggD8 x0 = d8_load(a0 + k), x1 = d8_load(a1 + k), x2 = d8_load(a2 + k), x3 = d8_load(a3 + k);
        AggD8 y0 = d8_load(b0 + k), y1 = d8_load(b1 + k), y2 = d8_load(b2 + k), y3 = d8_load(b3 + k);
        c00 = d8_madd(x0, y0, c00), c01 = d8_madd(x0, y1, c01), c02 = d8_madd(x0, y2, c02), c03 = d8_madd(x0, y3, c03);
        c10 = d8_madd(x1, y0, c10), c11 = d8_madd(x1, y1, c11), c12 = d8_madd(x1, y2, c12), c13 = d8_madd(x1, y3, c13);
        c20 = d8_madd(x2, y0, c20), c21 = d8_madd(x2, y1, c21), c22 = d8_madd(x2, y2, c22), c23 = d8_madd(x2, y3, c23);
        c30 = d8_madd(x3, y0, c30), c31 = d8_madd(x3, y1, c31), c32 = d8_madd(x3, y2, c32), c33 = d8_madd(x3, y3, c33);
    }
    const AggD8 tile[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}};
    for (size_t a = 0; a < 4 && i0 + a < n; a++)
        for (size_t b = 0; b < 4 && j0 + b < n; b++) partial[(i0 + a) * n + j0 + b] += d8_sum(tile[a][b]);
}

static void gram_range(void *argument, size_t chunk_begin, size_t chunk_end) {
    GramContext *context = argument;
    double *buffer = agg_slots_take(context->slots);
    if (buffer == NULL) return;
    size_t n = context->n, rows = padded_rows(n), stride = block_length(n);
    AggF16 *checks = (AggF16 *)(buffer + agg_align64(rows * stride * sizeof(double)) / sizeof(double));
    memset(buffer, 0, rows * stride * sizeof(double)); /* padding rows stay 0 */
    for (size_t chunk = chunk_begin; chunk < chunk_end; chunk++) {
        double *partial = context->partials + chunk * n * n;
        memset(partial, 0, n * n * sizeof(double));
        size_t begin = chunk * context->chunk_length;
        size_t end = begin + context->chunk_length < context->d ? begin + context->chunk_length : context->d;
        for (size_t block = begin; block < end; block += stride) {
            size_t length = end - block < stride ? end - block : stride;
            gather_block(context, block, length, stride, buffer, checks);
            size_t length8 = (length + 7) & ~(size_t)7;
            /* Tiles reread the block from L2; blocking further for L1 was
             * measured slower (more horizontal sums per coordinate). */
            for (size_t i0 = 0; i0 < rows; i0 += 4)
                for (size_t j0 = i0; j0 < rows; j0 += 4) gram_tile(buffer, stride, i0, j0, length8, n, partial);
        }
    }
}

size_t agg_gram(const float *const *inputs, size_t n, size_t d, int threads, AggSlots *slots, double *partials,
                double *gram) {
    GramContext context = {.inputs = inputs, .n = n, .d = d, .chunk_length = agg_chunk_length(n, d),
                           .slots = slots, .partials = partials};
    atomic_init(&context.first_bad, n);
    size_t chunks = agg_chunk_count(n, d);
    agg_slots_reset(slots);
    parallel_for(chunks, 1, threads, gram_range, &context);
    /* Chunks in order; only the upper triangle (tiles with j0 >= i0) holds
     * every pair, so mirror it. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i; j < n; j++) {
            double sum = 0.0;
            for (size_t chunk = 0; chunk < chunks; chunk++) sum += partials[chunk * n * n + i * n + j];
            gram[i * n + j] = gram[j * n + i] = sum;
        }
    return atomic_load(&context.first_bad);
}

void agg_gram_distances(const double *gram, size_t n, double *distances) {
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double squared = gram[i * n + i] + gram[j * n + j] - 2.0 * gram[i * n + j];
            distances[i * n + j] = i == j || squared < 0.0 ? 0.0 : squared;
        }
}
