/* pool.c -- 2x2 max pooling with stride 2, and the flatten transpose
 * (see layers.h): the two reshaping steps between the convolutions and the
 * dense layers. */
#include "nn/layers.h"

void nn_maxpool2x2_forward(float *out, const float *inp, size_t planes, size_t H, size_t W) {
    size_t OH = H / 2, OW = W / 2;
    for (size_t p = 0; p < planes; p++) {
        const float *plane = inp + p * H * W;
        float *out_p = out + p * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            const float *row0 = plane + 2 * oh * W, *row1 = row0 + W;
            for (size_t ow = 0; ow < OW; ow++) {
                /* Row-major scan, replacing only on a strictly larger value:
                 * the first maximum wins, as the backward assumes. */
                float best = row0[2 * ow];
                if (row0[2 * ow + 1] > best) best = row0[2 * ow + 1];
                if (row1[2 * ow] > best) best = row1[2 * ow];
                if (row1[2 * ow + 1] > best) best = row1[2 * ow + 1];
                out_p[oh * OW + ow] = best;
            }
        }
    }
}

void nn_maxpool2x2_backward(float *dinp, const float *dout, const float *inp, size_t planes, size_t H, size_t W) {
    size_t OH = H / 2, OW = W / 2;
    for (size_t p = 0; p < planes; p++) {
        const float *plane = inp + p * H * W;
        float *dplane = dinp + p * H * W;
        const float *dout_p = dout + p * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            size_t top = 2 * oh * W;
            for (size_t ow = 0; ow < OW; ow++) {
                /* The same scan as the forward, remembering where. */
                size_t at = top + 2 * ow;
                float best = plane[at];
                size_t candidates[3] = {top + 2 * ow + 1, top + W + 2 * ow, top + W + 2 * ow + 1};
                for (int k = 0; k < 3; k++)
                    if (plane[candidates[k]] > best) {
                        best = plane[candidates[k]];
                        at = candidates[k];
                    }
                dplane[at] += dout_p[oh * OW + ow];
            }
        }
    }
}

void nn_flatten_forward(float *out, const float *inp, size_t C, size_t B, size_t S) {
    for (size_t c = 0; c < C; c++)
        for (size_t b = 0; b < B; b++) {
            const float *from = inp + (c * B + b) * S;
            float *to = out + b * C * S + c * S;
            for (size_t s = 0; s < S; s++) to[s] = from[s];
        }
}

void nn_flatten_backward(float *dinp, const float *dout, size_t C, size_t B, size_t S) {
    for (size_t c = 0; c < C; c++)
        for (size_t b = 0; b < B; b++) {
            float *to = dinp + (c * B + b) * S;
            const float *from = dout + b * C * S + c * S;
            for (size_t s = 0; s < S; s++) to[s] += from[s];
        }
}
