/* nn_reference.c -- the nn engine's specification in double, by definition
 * (see tests/nn_reference.h). Slow on purpose: loops as in the formulas. */
#include "nn_reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void nn_reference_linear(double *out, const double *inp, const double *weight, const double *bias, size_t B,
                         size_t C, size_t OC) {
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < OC; o++) {
            double sum = bias[o];
            for (size_t c = 0; c < C; c++) sum += inp[b * C + c] * weight[o * C + c];
            out[b * OC + o] = sum;
        }
}

void nn_reference_conv2d(double *out, const double *inp, const double *weight, const double *bias, size_t B,
                         size_t C, size_t OC, size_t H, size_t W, size_t K, size_t P) {
    size_t OH = H + 2 * P - K + 1, OW = W + 2 * P - K + 1;
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < OC; o++)
            for (size_t y = 0; y < OH; y++)
                for (size_t x = 0; x < OW; x++) {
                    double sum = bias[o];
                    for (size_t c = 0; c < C; c++)
                        for (size_t i = 0; i < K; i++)
                            for (size_t j = 0; j < K; j++) {
                                long row = (long)(y + i) - (long)P, column = (long)(x + j) - (long)P;
                                if (row < 0 || column < 0 || row >= (long)H || column >= (long)W) continue;
                                sum += weight[((o * C + c) * K + i) * K + j] *
                                       inp[((b * C + c) * H + (size_t)row) * W + (size_t)column];
                            }
                    out[((b * OC + o) * OH + y) * OW + x] = sum;
                }
}

void nn_reference_relu(double *values, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (values[i] < 0) values[i] = 0;
}

void nn_reference_maxpool2x2(double *out, const double *inp, size_t planes, size_t H, size_t W) {
    size_t OH = H / 2, OW = W / 2;
    for (size_t p = 0; p < planes; p++)
        for (size_t y = 0; y < OH; y++)
            for (size_t x = 0; x < OW; x++) {
                const double *window = inp + (p * H + 2 * y) * W + 2 * x;
                double best = fmax(fmax(window[0], window[1]), fmax(window[W], window[W + 1]));
                out[(p * OH + y) * OW + x] = best;
            }
}

double nn_reference_softmax_xent(const double *logits, const uint8_t *labels, size_t B, size_t K) {
    double total = 0;
    for (size_t b = 0; b < B; b++) {
        const double *row = logits + b * K;
        double top = row[0];
        for (size_t k = 1; k < K; k++) top = fmax(top, row[k]);
        double sum = 0;
        for (size_t k = 0; k < K; k++) sum += exp(row[k] - top);
        total += log(sum) + top - row[labels[b]];
    }
    return total / (double)B;
}

void nn_reference_nhwc_to_nchw(double *dst, const double *src, size_t B, size_t S, size_t C) {
    for (size_t b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t c = 0; c < C; c++) dst[(b * C + c) * S + s] = src[(b * S + s) * C + c];
}

void nn_reference_nchw_to_nhwc(double *dst, const double *src, size_t B, size_t S, size_t C) {
    for (size_t b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++)
            for (size_t c = 0; c < C; c++) dst[(b * S + s) * C + c] = src[(b * C + c) * S + s];
}

/* The next `count` parameters, in the documented order. */
static const double *take(const double **cursor, size_t count) {
    const double *start = *cursor;
    *cursor += count;
    return start;
}

/* A dense layer reading the next weight (out, in) and bias (out). */
static double *dense(const double **cursor, const double *inp, size_t B, size_t in, size_t out, int relu) {
    const double *weight = take(cursor, out * in);
    const double *bias = take(cursor, out);
    double *result = malloc(B * out * sizeof(double));
    nn_reference_linear(result, inp, weight, bias, B, in, out);
    if (relu) nn_reference_relu(result, B * out);
    return result;
}

/* conv 5x5 (padding 2) + ReLU + max-pool, reading the next weight and bias. */
static double *conv_block(const double **cursor, const double *inp, size_t B, size_t C, size_t OC, size_t H) {
    const double *weight = take(cursor, OC * C * 25);
    const double *bias = take(cursor, OC);
    double *conv = malloc(B * OC * H * H * sizeof(double));
    double *pooled = malloc(B * OC * (H / 2) * (H / 2) * sizeof(double));
    nn_reference_conv2d(conv, inp, weight, bias, B, C, OC, H, H, 5, 2);
    nn_reference_relu(conv, B * OC * H * H);
    nn_reference_maxpool2x2(pooled, conv, B * OC, H, H);
    free(conv);
    return pooled;
}

double nn_reference_model_loss(NnModelKind kind, const double *params, const float *images, const uint8_t *labels,
                               size_t B) {
    double *x = malloc(B * 784 * sizeof(double));
    for (size_t i = 0; i < B * 784; i++) x[i] = images[i];
    const double *cursor = params;
    double *logits = NULL;
    if (kind == NN_LOGREG) {
        logits = dense(&cursor, x, B, 784, 10, 0);
    } else if (kind == NN_MLP) {
        double *h1 = dense(&cursor, x, B, 784, 256, 1);
        double *h2 = dense(&cursor, h1, B, 256, 128, 1);
        logits = dense(&cursor, h2, B, 128, 10, 0);
        free(h1);
        free(h2);
    } else {
        /* (B, 1, 28, 28) -> (B, C1, 14, 14) -> (B, C2, 7, 7), flattened per
         * example as (channel, row, column), then C2*49 -> hidden -> 10. */
        size_t C1 = NN_CNN_CONV1_CHANNELS, C2 = NN_CNN_CONV2_CHANNELS, hidden = NN_CNN_HIDDEN;
        double *p1 = conv_block(&cursor, x, B, 1, C1, 28);
        double *p2 = conv_block(&cursor, p1, B, C1, C2, 14);
        double *h = dense(&cursor, p2, B, C2 * 7 * 7, hidden, 1);
        logits = dense(&cursor, h, B, hidden, 10, 0);
        free(p1);
        free(p2);
        free(h);
    }
    double loss = nn_reference_softmax_xent(logits, labels, B, 10);
    free(logits);
    free(x);
    return loss;
}
