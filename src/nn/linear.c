/* linear.c -- the fully connected layer, out = inp weight^T + bias
 * (see layers.h), by OpenBLAS and by direct loops.
 *
 * The GEMM forms, row-major, with inp (B, C), weight (OC, C), out (B, OC):
 *   forward   out     = inp  weight^T   (B x C)  (C x OC)
 *   backward  dinp   += dout weight     (B x OC) (OC x C)
 *             dweight += dout^T inp      (OC x B) (B x C)
 * weight is used as stored, transposed inside sgemm: no copies. */
#include <cblas.h>

#include "nn/layers.h"

void nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias, size_t B, size_t C,
                       size_t OC) {
    /* Start every row at the bias and let the product add to it (beta = 1):
     * one pass over out instead of a product and a second bias pass. */
    for (size_t b = 0; b < B; b++) {
        float *out_b = out + b * OC;
        for (size_t o = 0; o < OC; o++) out_b[o] = bias[o];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)OC, (int)C, 1.0f, inp, (int)C, weight,
                (int)C, 1.0f, out, (int)OC);
}

void nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, size_t B, size_t C, size_t OC) {
    for (size_t b = 0; b < B; b++) {
        const float *dout_b = dout + b * OC;
        for (size_t o = 0; o < OC; o++) dbias[o] += dout_b[o];
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)C, (int)B, 1.0f, dout, (int)OC, inp,
                (int)C, 1.0f, dweight, (int)C);
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)C, (int)OC, 1.0f, dout, (int)OC,
                    weight, (int)C, 1.0f, dinp, (int)C);
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
