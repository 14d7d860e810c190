/* gemm.c -- the nn engine's packed matrix product (see gemm.h): packing of
 * dense and transposed operands, a register-tiled micro-kernel over
 * simd.h's vectors, the blocking loops, and the naive definition it is
 * tested against. */
#include "nn/gemm.h"

#include <string.h>

#include "nn/simd.h"
#include "spirt/parallel.h"

/* The micro-kernel's tile: MR rows of two vectors, sized so that the
 * 2 * MR accumulators, two B vectors and a broadcast fit the registers. */
#define VL SIMD_WIDTH
#if SIMD_REGISTERS >= 32
#define MR 8
#else
#define MR 6
#endif
#define NR (2 * VL)
/* Blocking: a KC x NR micro-panel of B (32 KB with AVX-512) stays in L1
 * while the micro-kernel sweeps the MC x KC block of A (128 KB) in L2; the
 * KC x NC block of B (1 MB) is reused for every block of A. */
enum { KC = 256, MC = 128, NC = 1024 };

const char *nn_gemm_kernel_name(void) { return SIMD_NAME; }

size_t nn_gemm_workspace_floats(void) { return (size_t)MC * KC + (size_t)KC * NC; }

/* --- Packing --- */

/* Element (r, c) of an operand. */
static inline float element(const NnOperand *op, size_t r, size_t c) {
    return op->kind == NN_OPERAND_DENSE ? op->data[r * op->stride + c] : op->data[c * op->stride + r];
}

/* A's rows [i0, i0 + m) x columns [p0, p0 + k) into MR-row micro-panels:
 * packed[(i / MR) * MR * k + p * MR + i % MR], rows past m zero. */
static void pack_a(float *packed, const NnOperand *A, size_t i0, size_t m, size_t p0, size_t k) {
    for (size_t ir = 0; ir < m; ir += MR) {
        float *panel = packed + ir * k;
        size_t rows = m - ir < MR ? m - ir : MR;
        if (rows < MR)
            for (size_t p = 0; p < k; p++)
                for (size_t r = rows; r < MR; r++) panel[p * MR + r] = 0.0f;
        if (A->kind == NN_OPERAND_TRANSPOSED) {
            for (size_t p = 0; p < k; p++) {
                const float *from = A->data + (p0 + p) * A->stride + i0 + ir;
                for (size_t r = 0; r < rows; r++) panel[p * MR + r] = from[r];
            }
        } else {
            for (size_t r = 0; r < rows; r++) {
                const float *from = A->data + (i0 + ir + r) * A->stride + p0;
                for (size_t p = 0; p < k; p++) panel[p * MR + r] = from[p];
            }
        }
    }
}

/* B's rows [p0, p0 + k) x columns [j0, j0 + n) into NR-column micro-panels:
 * packed[(j / NR) * NR * k + p * NR + j % NR], columns past n zero. */
static void pack_b(float *packed, const NnOperand *B, size_t p0, size_t k, size_t j0, size_t n) {
    for (size_t jr = 0; jr < n; jr += NR) {
        float *panel = packed + jr * k;
        size_t columns = n - jr < NR ? n - jr : NR;
        if (columns < NR)
            for (size_t p = 0; p < k; p++) memset(panel + p * NR + columns, 0, (NR - columns) * sizeof(float));
        if (B->kind == NN_OPERAND_DENSE) {
            for (size_t p = 0; p < k; p++)
                memcpy(panel + p * NR, B->data + (p0 + p) * B->stride + j0 + jr, columns * sizeof(float));
        } else {
            for (size_t j = 0; j < columns; j++) {
                const float *from = B->data + (j0 + jr + j) * B->stride + p0;
                for (size_t p = 0; p < k; p++) panel[p * NR + j] = from[p];
            }
        }
    }
}

/* --- The micro-kernel: an MR x NR tile of C from packed panels --- */

/* tile = A_panel (MR x k) B_panel (k x NR), then C (ldc) = or += tile. */
static void micro_kernel(size_t k, const float *a, const float *b, float *c, size_t ldc, int accumulate) {
    Vec sum0[MR], sum1[MR];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) sum0[r] = sum1[r] = vec_zero();
    for (size_t p = 0; p < k; p++) {
        Vec b0 = vec_load(b + p * NR), b1 = vec_load(b + p * NR + VL);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            Vec x = vec_broadcast(a[p * MR + r]);
            sum0[r] = vec_fma(x, b0, sum0[r]);
            sum1[r] = vec_fma(x, b1, sum1[r]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        float *row = c + r * ldc;
        if (accumulate) {
            sum0[r] = vec_add(vec_load(row), sum0[r]);
            sum1[r] = vec_add(vec_load(row + VL), sum1[r]);
        }
        vec_store(row, sum0[r]);
        vec_store(row + VL, sum1[r]);
    }
}

/* A tile at the edge of C: m <= MR rows, n <= NR columns. */
static void edge_kernel(size_t k, const float *a, const float *b, float *c, size_t ldc, int accumulate, size_t m,
                        size_t n) {
    float tile[MR * NR] __attribute__((aligned(64)));
    micro_kernel(k, a, b, tile, NR, 0);
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < n; j++) c[r * ldc + j] = accumulate ? c[r * ldc + j] + tile[r * NR + j] : tile[r * NR + j];
}

/* --- Blocking loops --- */

typedef struct TileJob {
    const float *packed_a, *packed_b;
    float *c;
    size_t ldc, m, n, k;
    int accumulate;
} TileJob;

/* Every MR x NR tile in NR-column panels [begin, end) of the current
 * blocks; each tile is computed the same way whoever runs it. */
static void run_tiles(void *context, size_t begin, size_t end) {
    const TileJob *job = context;
    for (size_t panel = begin; panel < end; panel++) {
        size_t jr = panel * NR, n = job->n - jr < NR ? job->n - jr : NR;
        const float *b = job->packed_b + jr * job->k;
        for (size_t ir = 0; ir < job->m; ir += MR) {
            size_t m = job->m - ir < MR ? job->m - ir : MR;
            const float *a = job->packed_a + ir * job->k;
            float *c = job->c + ir * job->ldc + jr;
            if (m == MR && n == NR)
                micro_kernel(job->k, a, b, c, job->ldc, job->accumulate);
            else
                edge_kernel(job->k, a, b, c, job->ldc, job->accumulate, m, n);
        }
    }
}

void nn_gemm(size_t M, size_t N, size_t K, const NnOperand *A, const NnOperand *B, float *C, size_t ldc,
             int accumulate, float *workspace, int threads) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate)
            for (size_t i = 0; i < M; i++) memset(C + i * ldc, 0, N * sizeof(float));
        return;
    }
    float *packed_a = workspace, *packed_b = workspace + (size_t)MC * KC;
    for (size_t jc = 0; jc < N; jc += NC) {
        size_t nc = N - jc < NC ? N - jc : NC;
        for (size_t pc = 0; pc < K; pc += KC) {
            size_t kc = K - pc < KC ? K - pc : KC;
            pack_b(packed_b, B, pc, kc, jc, nc);
            for (size_t ic = 0; ic < M; ic += MC) {
                size_t mc = M - ic < MC ? M - ic : MC;
                pack_a(packed_a, A, ic, mc, pc, kc);
                /* Later K blocks add to what the first one wrote. */
                TileJob job = {packed_a, packed_b, C + ic * ldc + jc, ldc, mc, nc, kc, accumulate || pc > 0};
                parallel_for((nc + NR - 1) / NR, 1, threads < 1 ? 1 : threads, run_tiles, &job);
            }
        }
    }
}

/* --- Naive reference --- */

void nn_gemm_naive(size_t M, size_t N, size_t K, const NnOperand *A, const NnOperand *B, float *C, size_t ldc,
                   int accumulate) {
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            float sum = 0.0f;
            for (size_t p = 0; p < K; p++) sum += element(A, i, p) * element(B, p, j);
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + sum : sum;
        }
}
