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
 * are widened to double into a per-thread buffer, then register-tiled
 * kernels accumulate 5 x 5 tiles of dot products (upper triangle only) with
 * 8-lane double fused multiply-adds. Float products are exact in double, so
 * G does not overflow for inputs near FLT_MAX and keeps the small
 * differences that decide which vectors are nearest. Each chunk's partial
 * Gram is its own; the chunks are added in order at the end, so the result
 * does not depend on the thread count.
 *
 * Where the time goes: the kernel is bound by the multiply-adds. This
 * target retires one 8-lane double FMA per cycle (4-lane ones at two per
 * cycle: the same flops). At n = 10, the n (n + 1) / 2 = 55 of them per 8
 * coordinates take ~3 ms per million coordinates on one core (measured
 * 3.0 ms with the inputs in cache), about what streaming those 40 MB from
 * memory takes on one core; at n = 20, 210 of them, four times that.
 * Hence no padding rows, no wasted products, L1-sized blocks, and the next
 * block prefetched while this one is computed (see below).
 * Float accumulation (16 lanes per FMA) would double the rate, but a float
 * product of two floats is rounded, and overflows above ~1.8e19: G would no
 * longer be exact-products-in-double, the guarantee above, and the Krum
 * family's choice between close vectors could change. So it stays double.
 *
 * The finiteness check of the inputs rides on the gather. */
#include <string.h>

#include "agg/agg_internal.h"
#include "agg/simd.h"

/* Rows per register tile: a 5 x 5 tile keeps 25 accumulators, 5 loaded
 * rows and 1 more in the 32 vector registers of AVX-512, and does 25
 * multiply-adds per 10 loads. Groups of 5 cover the upper triangle with no
 * padding rows: a diagonal tile computes only its own upper triangle and
 * the last group holds the n % 5 leftover rows, so the kernel does exactly
 * n (n + 1) / 2 multiply-adds per coordinate (n = 10: 55; 4 x 4 tiles over
 * rows padded to 12 did 96). */
#define GRAM_GROUP 5
/* Up to this n, each tile's accumulators stay vectors across the blocks of
 * a chunk (in per-thread scratch, n (n + 1) / 2 x 64 bytes: 3.5 KiB at
 * n = 10, 19 KiB at 24) and are summed across lanes once per chunk. That
 * lets blocks be small enough to stay in L1 (at least 128 coordinates up to
 * n = 24). Above it, they are summed into the chunk's partial after every
 * (larger, L2-sized) block: measured at d = 200K on one thread, keeping
 * lanes took 1.37 ms against 2.04 at n = 16, 3.0 against 3.8 at n = 24,
 * but 7.1 against 6.2 at n = 32 and 23 against 18 at n = 64, where the
 * blocks shrink to 64 coordinates and reloading the lanes dominates. */
#define GRAM_LANES_MAX_N 24

static int keeps_lanes(size_t n) { return n <= GRAM_LANES_MAX_N; }

/* Coordinates per gathered block, a multiple of 16 and at least 64. Small
 * n: the block's doubles (n * length * 8 bytes) take at most 24 KiB, half of
 * L1, so the tiles reread it from L1 (n = 10: 304 coordinates). Large n:
 * 512 KiB at most, in L2, as each block's lane sums cost n^2 / 2 horizontal
 * additions. */
static size_t block_length(size_t n) {
    size_t budget = keeps_lanes(n) ? 24576 : 524288;
    size_t length = budget / (n * sizeof(double));
    if (length > 1024) length = 1024;
    if (length < 64) length = 64;
    return length & ~(size_t)15;
}

static size_t lanes_count(size_t n) { return n * (n + 1) / 2; }

size_t agg_gram_scratch_bytes(size_t n) {
    size_t lanes = keeps_lanes(n) ? lanes_count(n) : GRAM_GROUP * GRAM_GROUP;
    return agg_align64(n * block_length(n) * sizeof(double)) + n * sizeof(AggF16) + lanes * sizeof(AggD8);
}

size_t agg_gram_partials_bytes(size_t n, size_t d) { return agg_chunk_count(n, d) * n * n * sizeof(double); }

typedef struct GramContext {
    const float *const *inputs;
    size_t n, d, chunk_length;
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

/* The next block's inputs, fetched while the tiles work on this block: one
 * cache line per step of a tile kernel (8 coordinates of every pair of its
 * rows), row after row. Gathering a block otherwise waits for memory with
 * the multiply-add units idle, then computing leaves memory idle: the two
 * did not overlap. Measured (median of 5-9, one thread): n = 20, d = 1M
 * 15.6 -> 11.4 ms; n = 10, d = 10M 53.7 -> 46.5 ms; no change at n = 10,
 * d = 1M, where the inputs come from the last-level cache. One line per
 * step covers the block at n = 20 and ~60% of it at n = 10 (the hardware
 * prefetcher does the rest); two per step measured no better. Into L2
 * (T1) rather than L1, where the block's doubles live: the same speed. */
typedef struct Prefetch {
    const float *const *inputs;
    size_t n, begin, end; /* the next block's coordinates; n: none */
    size_t row, at;       /* the next line: inputs[row] + at */
} Prefetch;

static inline void prefetch_step(Prefetch *p) {
    if (p->row >= p->n) return;
    __builtin_prefetch(p->inputs[p->row] + p->at, 0, 2);
    p->at += 16;
    if (p->at >= p->end) p->at = p->begin, p->row++;
}

/* The two tile kernels, written with loops over compile-time tile sizes:
 * each is inlined at a call with constant sizes, the loops unroll fully and
 * the accumulator arrays become registers. `lanes` holds the tile's
 * accumulators (row-major over the pairs it computes) between blocks. */

/* Rows a[0..rows_a) against rows b[0..rows_b) over `length` coordinates (a
 * multiple of 8). */
static inline __attribute__((always_inline)) void tile_off_diagonal(const double *a, const double *b, size_t stride,
                                                                    size_t length, AggD8 *lanes, const int rows_a,
                                                                    const int rows_b, Prefetch *pf) {
    AggD8 sum[GRAM_GROUP][GRAM_GROUP];
#pragma GCC unroll 5
    for (int i = 0; i < rows_a; i++)
#pragma GCC unroll 5
        for (int j = 0; j < rows_b; j++) sum[i][j] = lanes[i * rows_b + j];
    for (size_t k = 0; k < length; k += 8) {
        AggD8 x[GRAM_GROUP];
        prefetch_step(pf);
#pragma GCC unroll 5
        for (int i = 0; i < rows_a; i++) x[i] = d8_load(a + (size_t)i * stride + k);
#pragma GCC unroll 5
        for (int j = 0; j < rows_b; j++) {
            AggD8 y = d8_load(b + (size_t)j * stride + k);
#pragma GCC unroll 5
            for (int i = 0; i < rows_a; i++) sum[i][j] = d8_madd(x[i], y, sum[i][j]);
        }
    }
#pragma GCC unroll 5
    for (int i = 0; i < rows_a; i++)
#pragma GCC unroll 5
        for (int j = 0; j < rows_b; j++) lanes[i * rows_b + j] = sum[i][j];
}

/* The pairs i <= j of rows a[0..rows). */
static inline __attribute__((always_inline)) void tile_diagonal(const double *a, size_t stride, size_t length,
                                                                AggD8 *lanes, const int rows, Prefetch *pf) {
    AggD8 sum[GRAM_GROUP][GRAM_GROUP];
    int pair = 0;
#pragma GCC unroll 5
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 5
        for (int j = i; j < rows; j++) sum[i][j] = lanes[pair++];
    for (size_t k = 0; k < length; k += 8) {
        AggD8 x[GRAM_GROUP];
        prefetch_step(pf);
#pragma GCC unroll 5
        for (int i = 0; i < rows; i++) x[i] = d8_load(a + (size_t)i * stride + k);
#pragma GCC unroll 5
        for (int i = 0; i < rows; i++)
#pragma GCC unroll 5
            for (int j = i; j < rows; j++) sum[i][j] = d8_madd(x[i], x[j], sum[i][j]);
    }
    pair = 0;
#pragma GCC unroll 5
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 5
        for (int j = i; j < rows; j++) lanes[pair++] = sum[i][j];
}

static size_t tile_pairs(size_t rows_a, size_t rows_b, int diagonal) {
    return diagonal ? rows_a * (rows_a + 1) / 2 : rows_a * rows_b;
}

/* One tile: group rows [i0, i0 + rows_a) against [j0, j0 + rows_b); off the
 * diagonal rows_a is always a full group (only the last group is short). */
static void gram_tile(const double *buffer, size_t stride, size_t i0, size_t rows_a, size_t j0, size_t rows_b,
                      size_t length, AggD8 *lanes, Prefetch *pf) {
    const double *a = buffer + i0 * stride, *b = buffer + j0 * stride;
    if (i0 == j0) {
        switch (rows_a) {
        case 1: tile_diagonal(a, stride, length, lanes, 1, pf); break;
        case 2: tile_diagonal(a, stride, length, lanes, 2, pf); break;
        case 3: tile_diagonal(a, stride, length, lanes, 3, pf); break;
        case 4: tile_diagonal(a, stride, length, lanes, 4, pf); break;
        default: tile_diagonal(a, stride, length, lanes, 5, pf); break;
        }
        return;
    }
    switch (rows_b) {
    case 1: tile_off_diagonal(a, b, stride, length, lanes, GRAM_GROUP, 1, pf); break;
    case 2: tile_off_diagonal(a, b, stride, length, lanes, GRAM_GROUP, 2, pf); break;
    case 3: tile_off_diagonal(a, b, stride, length, lanes, GRAM_GROUP, 3, pf); break;
    case 4: tile_off_diagonal(a, b, stride, length, lanes, GRAM_GROUP, 4, pf); break;
    default: tile_off_diagonal(a, b, stride, length, lanes, GRAM_GROUP, GRAM_GROUP, pf); break;
    }
}

/* Adds each pair's lanes (in tile order, as gram_tile leaves them) to the
 * partial Gram, and zeroes them. */
static void flush_tile(AggD8 *lanes, size_t i0, size_t rows_a, size_t j0, size_t rows_b, size_t n, double *partial) {
    size_t pair = 0;
    for (size_t i = 0; i < rows_a; i++)
        for (size_t j = i0 == j0 ? i : 0; j < rows_b; j++, pair++) {
            partial[(i0 + i) * n + j0 + j] += d8_sum(lanes[pair]);
            lanes[pair] = (AggD8){0};
        }
}

static size_t group_rows(size_t n, size_t g0) { return n - g0 < GRAM_GROUP ? n - g0 : GRAM_GROUP; }

/* Every tile of the upper triangle over one gathered block. With `keep`
 * the lanes stay in `lanes` (tile after tile) for the next block;
 * otherwise each tile is flushed into the partial at once. */
static void block_tiles(const double *buffer, size_t stride, size_t n, size_t length, AggD8 *lanes, int keep,
                        double *partial, Prefetch *pf) {
    for (size_t i0 = 0; i0 < n; i0 += GRAM_GROUP)
        for (size_t j0 = i0; j0 < n; j0 += GRAM_GROUP) {
            size_t rows_a = group_rows(n, i0), rows_b = group_rows(n, j0);
            gram_tile(buffer, stride, i0, rows_a, j0, rows_b, length, lanes, pf);
            if (keep)
                lanes += tile_pairs(rows_a, rows_b, i0 == j0);
            else
                flush_tile(lanes, i0, rows_a, j0, rows_b, n, partial);
        }
}

static void flush_all(AggD8 *lanes, size_t n, double *partial) {
    for (size_t i0 = 0; i0 < n; i0 += GRAM_GROUP)
        for (size_t j0 = i0; j0 < n; j0 += GRAM_GROUP) {
            size_t rows_a = group_rows(n, i0), rows_b = group_rows(n, j0);
            flush_tile(lanes, i0, rows_a, j0, rows_b, n, partial);
            lanes += tile_pairs(rows_a, rows_b, i0 == j0);
        }
}

static void gram_range(void *argument, void *scratch, size_t chunk_begin, size_t chunk_end) {
    GramContext *context = argument;
    double *buffer = scratch;
    size_t n = context->n, stride = block_length(n);
    unsigned char *after = (unsigned char *)buffer + agg_align64(n * stride * sizeof(double));
    AggF16 *checks = (AggF16 *)after;
    AggD8 *lanes = (AggD8 *)(after + n * sizeof(AggF16));
    int keep = keeps_lanes(n);
    memset(lanes, 0, (keep ? lanes_count(n) : GRAM_GROUP * GRAM_GROUP) * sizeof(AggD8));
    for (size_t chunk = chunk_begin; chunk < chunk_end; chunk++) {
        double *partial = context->partials + chunk * n * n;
        memset(partial, 0, n * n * sizeof(double));
        size_t begin = chunk * context->chunk_length;
        size_t end = begin + context->chunk_length < context->d ? begin + context->chunk_length : context->d;
        for (size_t block = begin; block < end; block += stride) {
            size_t length = end - block < stride ? end - block : stride;
            gather_block(context, block, length, stride, buffer, checks);
            /* The next block of this chunk (the next chunk's first block is
             * not fetched ahead: a chunk is 65536 coordinates or more). */
            size_t next = block + stride < end ? block + stride : end;
            size_t next_end = next + stride < end ? next + stride : end;
            Prefetch pf = {context->inputs, next < end ? n : 0, next, next_end, 0, next};
            block_tiles(buffer, stride, n, (length + 7) & ~(size_t)7, lanes, keep, partial, &pf);
        }
        if (keep) flush_all(lanes, n, partial);
    }
}

size_t agg_gram(const float *const *inputs, size_t n, size_t d, int threads, AggSlots *slots, double *partials,
                double *gram) {
    GramContext context = {.inputs = inputs, .n = n, .d = d, .chunk_length = agg_chunk_length(n, d),
                           .partials = partials};
    atomic_init(&context.first_bad, n);
    size_t chunks = agg_chunk_count(n, d);
    agg_share(chunks, 1, threads, slots, gram_range, &context);
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
