/* conv_gemm.h -- the product behind every convolution: C (+)= A B with A
 * read in place, never built or packed (internal to src/nn).
 *
 * A convolution is a matrix product whose left operand is im2col. Here that
 * operand is described, not built: element (i, p) of A is
 *   data[row_offset(i) + col_offsets[p]]
 * and its rows come in groups of group_rows whose offsets step by a fixed
 * row_stride:
 *   i = g * group_rows + r   ->   row_offset(i) = group_offsets[g] + r * row_stride.
 * For a forward pass over a zero-padded channels-last input, a group is one
 * output row of one image, r its pixel, row_stride the channel count, and
 * col_offsets[p] where kernel tap p = (ki, kj, c) reads relative to the
 * pixel. The micro-kernel broadcasts A's elements straight from those
 * addresses and reads B -- a small dense matrix: the weights, or rows of an
 * output gradient -- as vectors, so neither operand is copied.
 *
 * Why not the packed product (gemm.h): with 16 or 32 output channels, every
 * packed element of im2col would serve only 2-4 register tiles, so the copy
 * cost as much as the arithmetic. This is how the cnn's layers reach the
 * same throughput as gemm.h on large squares (~150 GFLOPS with AVX-512).
 *
 * Sums: C[i][j] = sum over K blocks (in order) of the block's sum over p
 * (in order), whatever the thread count. */
#ifndef SPIRT_NN_CONV_GEMM_H
#define SPIRT_NN_CONV_GEMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct NnConvOperand {
    const float *data;
    const uint32_t *group_offsets; /* M / group_rows entries */
    size_t group_rows;             /* >= 1; divides M */
    size_t row_stride;
    const uint32_t *col_offsets;   /* K entries */
} NnConvOperand;

/* The columns every row of B must hold: N rounded up to whole vectors. The
 * micro-kernel reads them all; the extra columns only feed outputs that are
 * dropped, but must be readable (zero them). */
size_t nn_conv_gemm_padded_width(size_t N);

/* C (M, N; row stride ldc) = A (M, K) B (K, N; row stride ldb) + bias, or
 * C += that if accumulate. bias (N values, readable to the padded width;
 * NULL for none) is added to every row: it is where the sums start, so a
 * convolution's bias costs no pass of its own. ldb >=
 * nn_conv_gemm_padded_width(N). `threads` (>= 1) share the groups of rows;
 * the result does not depend on it. */
void nn_conv_gemm(size_t M, size_t N, size_t K, const NnConvOperand *A, const float *B, size_t ldb,
                  const float *bias, float *C, size_t ldc, int accumulate, int threads);

/* The same by the definition, one dot product per element: the spec. */
void nn_conv_gemm_naive(size_t M, size_t N, size_t K, const NnConvOperand *A, const float *B, size_t ldb,
                        const float *bias, float *C, size_t ldc, int accumulate);

#endif /* SPIRT_NN_CONV_GEMM_H */
