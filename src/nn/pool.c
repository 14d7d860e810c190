/* pool.c -- 2x2 max pooling with stride 2, and flatten (see layers.h): the
 * two reshaping steps between the convolutions and the dense layers.
 *
 * Channels-last: the C channels of a pixel are consecutive, so the inner
 * loops run over channels, contiguous in both input and output. */
#include "nn/layers.h"

void nn_maxpool2x2_forward(float *out, const float *inp, size_t B, size_t H, size_t W, size_t C) {
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

void nn_maxpool2x2_backward(float *dinp, const float *dout, const float *inp, size_t B, size_t H, size_t W,
                            size_t C) {
    size_t OH = H / 2, OW = W / 2;
    for (size_t b = 0; b < B; b++)
        for (size_t oh = 0; oh < OH; oh++) {
            size_t top = (b * H + 2 * oh) * W * C;
            const float *from = dout + ((b * OH + oh) * OW) * C;
            for (size_t ow = 0; ow < OW; ow++) {
                size_t corner[4] = {top + 2 * ow * C, top + (2 * ow + 1) * C, top + (W + 2 * ow) * C,
                                    top + (W + 2 * ow + 1) * C};
                for (size_t c = 0; c < C; c++) {
                    /* The forward's scan again, remembering where. */
                    size_t at = corner[0] + c;
                    for (int k = 1; k < 4; k++)
                        if (inp[corner[k] + c] > inp[at]) at = corner[k] + c;
                    dinp[at] += from[ow * C + c];
                }
            }
        }
}

void nn_flatten_forward(float *out, const float *inp, size_t B, size_t S, size_t C) {
    for (size_t b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t c = 0; c < C; c++) out[(b * C + c) * S + s] = inp[(b * S + s) * C + c];
}

void nn_flatten_backward(float *dinp, const float *dout, size_t B, size_t S, size_t C) {
    for (size_t b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t c = 0; c < C; c++) dinp[(b * S + s) * C + c] += dout[(b * C + c) * S + s];
}
