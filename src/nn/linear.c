/* linear.c -- the fully connected layer, out = inp weight^T + bias
 * (see layers.h), by nn_gemm and by direct loops.
 *
 * The products, row-major, with inp (B, C), weight (OC, C), out (B, OC):
 *   forward   out     = inp  weight^T   (B x C)  (C x OC)
 *   backward  dinp   += dout weight     (B x OC) (OC x C)
 *             dweight += dout^T inp      (OC x B) (B x C)
 * Transposes are read in place by the product's packing (gemm.h). */
#include "nn/gemm.h"
#include "nn/layers.h"

size_t nn_linear_workspace_floats(void) { return nn_gemm_workspace_floats(); }

void nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias, size_t B, size_t C,
                       size_t OC, const NnWorkspace *workspace) {
    /* Start every row at the bias and let the product add to it: one pass
     * over out instead of a product and a second bias pass. */
    for (size_t b = 0; b < B; b++) {
        float *out_b = out + b * OC;
        for (size_t o = 0; o < OC; o++) out_b[o] = bias[o];
    }
    NnOperand x = nn_operand_dense(inp, C), w_t = nn_operand_transposed(weight, C);
    nn_gemm(B, OC, C, &x, &w_t, out, OC, 1, workspace->data, workspace->threads);
}

void nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, size_t B, size_t C, size_t OC, const NnWorkspace *workspace) {
    for (size_t b = 0; b < B; b++) {
        const float *dout_b = dout + b * OC;
        for (size_t o = 0; o < OC; o++) dbias[o] += dout_b[o];
    }
    NnOperand dout_t = nn_operand_transposed(dout, OC), x = nn_operand_dense(inp, C);
    nn_gemm(OC, C, B, &dout_t, &x, dweight, C, 1, workspace->data, workspace->threads);
    if (dinp) {
        NnOperand d = nn_operand_dense(dout, OC), w = nn_operand_dense(weight, C);
        nn_gemm(B, C, OC, &d, &w, dinp, C, 1, workspace->data, workspace->threads);
    }
}

/* --- Naive reference --- */

void nn_linear_forward_naive(float *out, const float *inp, const float *weight, const float *bias, size_t B,
                             size_t C, size_t OC) {
    for (size_t b = 0; b < B; b++) {
        const float *inp_b = inp + b * C;
        for (size_t o = 0; o < OC; o++) {
            const float *weight_o = weight + o * C;
            float sum = bias[o];
            for (size_t c = 0; c < C; c++) sum += inp_b[c] * weight_o[c];
            out[b * OC + o] = sum;
        }
    }
}

void nn_linear_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, size_t B, size_t C, size_t OC) {
    for (size_t b = 0; b < B; b++) {
        const float *inp_b = inp + b * C;
        for (size_t o = 0; o < OC; o++) {
            float d = dout[b * OC + o];
            const float *weight_o = weight + o * C;
            float *dweight_o = dweight + o * C;
            dbias[o] += d;
            for (size_t c = 0; c < C; c++) {
                dweight_o[c] += d * inp_b[c];
                if (dinp) dinp[b * C + c] += d * weight_o[c];
            }
        }
    }
}
