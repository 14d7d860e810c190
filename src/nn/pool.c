/* pool.c -- 2x2 max pooling with stride 2, and flatten (see layers.h): the
 * two reshaping steps between the convolutions and the dense layers.
 *
 * Channels-last: the C channels of a pixel are consecutive, so the inner
 * loops run over channels, contiguous in both input and output. */
#include "nn/layers.h"

void nn_maxpool2x2_forward(float *restrict out, const float *restrict inp, size_t B, size_t H, size_t W, size_t C) {
    size_t OH = H / 2, OW = W / 2;
    for (size_t b = 0; b < B; b++)
        for (size_t oh = 0; oh < OH; oh++) {
            const float *row0 = inp + ((b * H + 2 * oh) * W) * C, *row1 = row0 + W * C;
            float *to = out + ((b * OH + oh) * OW) * C;
            for (size_t ow = 0; ow < OW; ow++) {
                const float *x00 = row0 + 2 * ow * C, *x01 = x00 + C, *x10 = row1 + 2 * ow * C, *x11 = x10 + C;
                for (size_t c = 0; c < C; c++) {
                    /* Row-major scan, replacing only on a strictly larger
                     * value: the first maximum wins, as the backward assumes. */
                    float best = x00[c];
                    if (x01[c] > best) best = x01[c];
                    if (x10[c] > best) best = x10[c];
                    if (x11[c] > best) best = x11[c];
                    to[ow * C + c] = best;
                }
            }
        }
}

void nn_maxpool2x2_backward(float *restrict dinp, const float *restrict dout, const float *restrict inp, size_t B,
                            size_t H, size_t W, size_t C) {
    size_t OH = H / 2, OW = W / 2;
    for (size_t b = 0; b < B; b++)
        for (size_t oh = 0; oh < OH; oh++) {
            size_t top = (b * H + 2 * oh) * W * C;
            const float *from = dout + ((b * OH + oh) * OW) * C;
            for (size_t ow = 0; ow < OW; ow++) {
                const float *x00 = inp + top + 2 * ow * C, *x01 = x00 + C, *x10 = x00 + W * C, *x11 = x10 + C;
                float *d00 = dinp + top + 2 * ow * C, *d01 = d00 + C, *d10 = d00 + W * C, *d11 = d10 + C;
                const float *g = from + ow * C;
                /* The forward keeps the first maximum in row-major order: a
                 * corner wins if it is strictly above every earlier corner
                 * and at least every later one. One branch-free loop per
                 * corner (bitwise &, not &&), so each vectorizes. */
                for (size_t c = 0; c < C; c++)
                    d00[c] += (x00[c] >= x01[c]) & (x00[c] >= x10[c]) & (x00[c] >= x11[c]) ? g[c] : 0.0f;
                for (size_t c = 0; c < C; c++)
                    d01[c] += (x01[c] > x00[c]) & (x01[c] >= x10[c]) & (x01[c] >= x11[c]) ? g[c] : 0.0f;
                for (size_t c = 0; c < C; c++)
                    d10[c] += (x10[c] > x00[c]) & (x10[c] > x01[c]) & (x10[c] >= x11[c]) ? g[c] : 0.0f;
                for (size_t c = 0; c < C; c++)
                    d11[c] += (x11[c] > x00[c]) & (x11[c] > x01[c]) & (x11[c] > x10[c]) ? g[c] : 0.0f;
            }
        }
}

void nn_flatten_forward(float *restrict out, const float *restrict inp, size_t B, size_t S, size_t C) {
    for (size_t b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t c = 0; c < C; c++) out[(b * C + c) * S + s] = inp[(b * S + s) * C + c];
}

void nn_flatten_backward(float *restrict dinp, const float *restrict dout, size_t B, size_t S, size_t C) {
    for (size_t b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t c = 0; c < C; c++) dinp[(b * S + s) * C + c] += dout[(b * C + c) * S + s];
}
