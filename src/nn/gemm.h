/* gemm.h -- the nn engine's matrix product, C (+)= A B (internal to src/nn).
 *
 * Why not OpenBLAS: Debian's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its
 * kernels from the CPU model, and on CPUs newer than the library it falls
 * back to its SSE3 "Prescott" kernels -- on the project's Xeon (family 6,
 * model 207) that is ~30 GFLOPS where the same cores do 100+ with AVX-512.
 * PyTorch's convolutions use oneDNN's run-time JIT and do not suffer from
 * it. A product of our own, compiled for the build's target (-march=native
 * by default), does not depend on what a library knows about the CPU, sums
 * in an order fixed by K alone (the same bits whatever M, N or the thread
 * count), and lets convolutions pack im2col straight into the product's
 * panels instead of writing a column matrix first.
 *
 * The method is the usual one (Goto; BLIS): C is computed in MR x NR tiles
 * held in vector registers by a micro-kernel, from A and B copied ("packed")
 * into contiguous panels: B in KC x NC blocks that stay in cache, A in
 * MC x KC blocks. Each operand says how its elements are read (NnOperand),
 * so a transpose costs nothing more than the packing copy.
 *
 * Sums: C[i][j] = sum over K blocks of KC (in order) of the sum over the
 * block's k (in order); fused multiply-adds where the target has them. */
#ifndef SPIRT_NN_GEMM_H
#define SPIRT_NN_GEMM_H

#include <stddef.h>

typedef enum NnOperandKind {
    NN_OPERAND_DENSE,     /* element (r, c) = data[r * stride + c] */
    NN_OPERAND_TRANSPOSED /* element (r, c) = data[c * stride + r] */
} NnOperandKind;

/* How the product reads one operand; (r, c) is (i, k) for A and (k, j) for B. */
typedef struct NnOperand {
    NnOperandKind kind;
    const float *data;
    size_t stride; /* the leading dimension of what is stored */
} NnOperand;

static inline NnOperand nn_operand_dense(const float *data, size_t stride) {
    NnOperand operand = {NN_OPERAND_DENSE, data, stride};
    return operand;
}
static inline NnOperand nn_operand_transposed(const float *data, size_t stride) {
    NnOperand operand = {NN_OPERAND_TRANSPOSED, data, stride};
    return operand;
}

/* Floats of workspace nn_gemm needs (the packed panels): a constant. */
size_t nn_gemm_workspace_floats(void);

/* C (M, N; row stride ldc) = A (M, K) B (K, N), or C += A B if accumulate.
 * workspace: nn_gemm_workspace_floats() floats, 64-byte aligned. `threads`
 * (>= 1) share the tiles of C; the result does not depend on it. K = 0
 * leaves C as it is (accumulate) or zeroes it. */
void nn_gemm(size_t M, size_t N, size_t K, const NnOperand *A, const NnOperand *B, float *C, size_t ldc,
             int accumulate, float *workspace, int threads);

/* The same by the definition (one dot product per element, in k order): the
 * specification nn_gemm is tested against. */
void nn_gemm_naive(size_t M, size_t N, size_t K, const NnOperand *A, const NnOperand *B, float *C, size_t ldc,
                   int accumulate);

/* "avx512", "avx2" or "generic": the micro-kernel this build uses. */
const char *nn_gemm_kernel_name(void);

#endif /* SPIRT_NN_GEMM_H */
