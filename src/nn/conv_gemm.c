/* conv_gemm.c -- the implicit product behind the convolutions (see
 * conv_gemm.h): register-tiled micro-kernels over simd.h's vectors, the
 * tiling and K blocking around them, and the naive definition.
 *
 * A tile is `rows` consecutive rows of one group (affine addresses: one
 * base pointer and a stride) by one or two vectors of columns. Per k the
 * micro-kernel loads the tile's vectors of B's row k and, for each row,
 * broadcasts A's element and multiply-adds. Tiles as tall as the registers
 * allow keep the loads of B few per multiply-add; a group's rows are cut
 * into near-equal tiles (an image row of 14 pixels is one tile of 14, not
 * 8 + 6). */
#include "nn/conv_gemm.h"

#include <string.h>

#include "nn/simd.h"
#include "spirt/parallel.h"

#define VL SIMD_WIDTH
/* Tallest tile for one and for two vectors of columns: accumulators plus
 * B's vectors plus the broadcast must fit the registers. */
#if SIMD_REGISTERS >= 32
#define ROWS_1 28
#define ROWS_2 14
#else
#define ROWS_1 12
#define ROWS_2 6
#endif
/* K block: B's rows for a block (KB x 32 floats: 32 KB with AVX-512) stay
 * in L1 while every tile of the block runs. */
enum { KB = 256 };
/* K up to this counts as short for the loop order (run_groups): a 5x5
 * kernel over up to 160 channels. */
enum { SHORT_K = 4096 };

size_t nn_conv_gemm_padded_width(size_t N) { return (N + VL - 1) / VL * VL; }

/* --- Micro-kernels --- */

/* The body of every micro-kernel: c (ldc) = or += the rows x (vectors * VL)
 * tile of A B over k values of p, with A's row r at a + r * stride + cols[p]
 * and B's row p at b + p * ldb, plus the row vector `bias` if not NULL.
 * Inlined with constant rows and vectors, so the accumulators live in
 * registers. */
static inline __attribute__((always_inline)) void tile_body(int rows, int vectors, size_t k, const float *a,
                                                            size_t stride, const uint32_t *cols, const float *b,
                                                            size_t ldb, const float *bias, float *c, size_t ldc,
                                                            int accumulate) {
    Vec sum[ROWS_1][2];
#pragma GCC unroll 32
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
        for (int v = 0; v < vectors; v++) sum[r][v] = bias ? vec_load(bias + v * VL) : vec_zero();
    for (size_t p = 0; p < k; p++) {
        const float *column = a + cols[p];
        const float *b_row = b + p * ldb;
        Vec b_vectors[2];
#pragma GCC unroll 2
        for (int v = 0; v < vectors; v++) b_vectors[v] = vec_load(b_row + v * VL);
#pragma GCC unroll 32
        for (int r = 0; r < rows; r++) {
            Vec x = vec_broadcast(column[r * stride]);
#pragma GCC unroll 2
            for (int v = 0; v < vectors; v++) sum[r][v] = vec_fma(x, b_vectors[v], sum[r][v]);
        }
    }
#pragma GCC unroll 32
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
        for (int v = 0; v < vectors; v++) {
            float *to = c + r * ldc + v * VL;
            vec_store(to, accumulate ? vec_add(vec_load(to), sum[r][v]) : sum[r][v]);
        }
}

typedef void (*TileKernel)(size_t k, const float *a, size_t stride, const uint32_t *cols, const float *b,
                           size_t ldb, const float *bias, float *c, size_t ldc, int accumulate);

#define DEFINE_KERNEL(ROWS, VECTORS)                                                                           \
    static void kernel_##ROWS##_##VECTORS(size_t k, const float *a, size_t stride, const uint32_t *cols,         \
                                          const float *b, size_t ldb, const float *bias, float *c, size_t ldc,  \
                                          int accumulate) {                                                      \
        tile_body(ROWS, VECTORS, k, a, stride, cols, b, ldb, bias, c, ldc, accumulate);                        \
    }
#define DEFINE_BOTH(ROWS) DEFINE_KERNEL(ROWS, 1) DEFINE_KERNEL(ROWS, 2)
DEFINE_BOTH(1) DEFINE_BOTH(2) DEFINE_BOTH(3) DEFINE_BOTH(4) DEFINE_BOTH(5) DEFINE_BOTH(6)
#if ROWS_1 > 12
DEFINE_BOTH(7) DEFINE_BOTH(8) DEFINE_BOTH(9) DEFINE_BOTH(10) DEFINE_BOTH(11) DEFINE_BOTH(12) DEFINE_BOTH(13)
DEFINE_BOTH(14)
DEFINE_KERNEL(15, 1) DEFINE_KERNEL(16, 1) DEFINE_KERNEL(17, 1) DEFINE_KERNEL(18, 1) DEFINE_KERNEL(19, 1)
DEFINE_KERNEL(20, 1) DEFINE_KERNEL(21, 1) DEFINE_KERNEL(22, 1) DEFINE_KERNEL(23, 1) DEFINE_KERNEL(24, 1)
DEFINE_KERNEL(25, 1) DEFINE_KERNEL(26, 1) DEFINE_KERNEL(27, 1) DEFINE_KERNEL(28, 1)
/* kernels[vectors - 1][rows - 1] */
static const TileKernel kernels[2][ROWS_1] = {
    {kernel_1_1,  kernel_2_1,  kernel_3_1,  kernel_4_1,  kernel_5_1,  kernel_6_1,  kernel_7_1,
     kernel_8_1,  kernel_9_1,  kernel_10_1, kernel_11_1, kernel_12_1, kernel_13_1, kernel_14_1,
     kernel_15_1, kernel_16_1, kernel_17_1, kernel_18_1, kernel_19_1, kernel_20_1, kernel_21_1,
     kernel_22_1, kernel_23_1, kernel_24_1, kernel_25_1, kernel_26_1, kernel_27_1, kernel_28_1},
    {kernel_1_2, kernel_2_2, kernel_3_2,  kernel_4_2,  kernel_5_2,  kernel_6_2,  kernel_7_2,
     kernel_8_2, kernel_9_2, kernel_10_2, kernel_11_2, kernel_12_2, kernel_13_2, kernel_14_2},
};
#else
DEFINE_KERNEL(7, 1) DEFINE_KERNEL(8, 1) DEFINE_KERNEL(9, 1) DEFINE_KERNEL(10, 1) DEFINE_KERNEL(11, 1)
DEFINE_KERNEL(12, 1)
static const TileKernel kernels[2][ROWS_1] = {
    {kernel_1_1, kernel_2_1, kernel_3_1, kernel_4_1, kernel_5_1, kernel_6_1, kernel_7_1, kernel_8_1, kernel_9_1,
     kernel_10_1, kernel_11_1, kernel_12_1},
    {kernel_1_2, kernel_2_2, kernel_3_2, kernel_4_2, kernel_5_2, kernel_6_2},
};
#endif

/* --- Tiling --- */

typedef struct ConvJob {
    size_t N, K, ldb, ldc;
    const NnConvOperand *A;
    const float *B, *bias;
    float *C;
    int accumulate;
} ConvJob;

/* One tile: rows [r0, r0 + rows) of group g, columns [j0, j0 + width),
 * p in [p0, p0 + k); the bias joins in the first K block. Columns short of
 * a whole vector go through a local tile so that C's neighbours are never
 * written. */
static void run_tile(const ConvJob *job, size_t g, size_t r0, size_t rows, size_t j0, size_t width, size_t p0,
                     size_t k, int accumulate) {
    const NnConvOperand *A = job->A;
    int vectors = width > VL ? 2 : 1;
    TileKernel kernel = kernels[vectors - 1][rows - 1];
    const float *a = A->data + A->group_offsets[g] + r0 * A->row_stride;
    const float *b = job->B + p0 * job->ldb + j0;
    float *c = job->C + (g * A->group_rows + r0) * job->ldc + j0;
    const float *bias = job->bias && p0 == 0 ? job->bias + j0 : NULL;
    if (width == (size_t)vectors * VL) {
        kernel(k, a, A->row_stride, A->col_offsets + p0, b, job->ldb, bias, c, job->ldc, accumulate);
        return;
    }
    float tile[ROWS_1 * 2 * VL];
    kernel(k, a, A->row_stride, A->col_offsets + p0, b, job->ldb, bias, tile, 2 * VL, 0);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < width; j++) {
            float *to = c + r * job->ldc + j;
            *to = accumulate ? *to + tile[r * 2 * VL + j] : tile[r * 2 * VL + j];
        }
}

/* Every tile of group g for p in [p0, p0 + k). */
static void run_group(const ConvJob *job, size_t g, size_t p0, size_t k) {
    size_t group_rows = job->A->group_rows;
    int accumulate = job->accumulate || p0 > 0;
    for (size_t j0 = 0; j0 < job->N; j0 += 2 * VL) {
        size_t width = job->N - j0 < 2 * VL ? job->N - j0 : 2 * VL;
        size_t tallest = width > VL ? ROWS_2 : ROWS_1;
        size_t tiles = (group_rows + tallest - 1) / tallest;
        /* Near-equal tiles: the first (group_rows % tiles) get one more. */
        size_t r0 = 0;
        for (size_t t = 0; t < tiles; t++) {
            size_t rows = group_rows / tiles + (t < group_rows % tiles ? 1 : 0);
            run_tile(job, g, r0, rows, j0, width, p0, k, accumulate);
            r0 += rows;
        }
    }
}

/* Every tile of groups [begin, end). The loop order follows K. Short K (a
 * convolution's taps, forward or input gradient): each group runs all its
 * K blocks before the next, so the few input rows it reads stay in L1.
 * Long K (the weight gradient sums over every pixel): each K block runs
 * over all groups, so the block of B stays in L1 instead. Either way each
 * C element sums its K blocks in order. */
static void run_groups(void *context, size_t begin, size_t end) {
    const ConvJob *job = context;
    if (job->K <= SHORT_K) {
        for (size_t g = begin; g < end; g++)
            for (size_t p0 = 0; p0 < job->K; p0 += KB) run_group(job, g, p0, job->K - p0 < KB ? job->K - p0 : KB);
        return;
    }
    for (size_t p0 = 0; p0 < job->K; p0 += KB)
        for (size_t g = begin; g < end; g++) run_group(job, g, p0, job->K - p0 < KB ? job->K - p0 : KB);
}

void nn_conv_gemm(size_t M, size_t N, size_t K, const NnConvOperand *A, const float *B, size_t ldb,
                  const float *bias, float *C, size_t ldc, int accumulate, int threads) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0.0f) + (bias ? bias[j] : 0.0f);
        return;
    }
    ConvJob job = {N, K, ldb, ldc, A, B, bias, C, accumulate};
    parallel_for(M / A->group_rows, 1, threads < 1 ? 1 : threads, run_groups, &job);
}

void nn_conv_gemm_naive(size_t M, size_t N, size_t K, const NnConvOperand *A, const float *B, size_t ldb,
                        const float *bias, float *C, size_t ldc, int accumulate) {
    for (size_t i = 0; i < M; i++) {
        const float *row = A->data + A->group_offsets[i / A->group_rows] + (i % A->group_rows) * A->row_stride;
        for (size_t j = 0; j < N; j++) {
            float sum = bias ? bias[j] : 0.0f;
            for (size_t p = 0; p < K; p++) sum += row[A->col_offsets[p]] * B[p * ldb + j];
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + sum : sum;
        }
    }
}
