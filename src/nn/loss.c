/* loss.c -- softmax cross-entropy (see layers.h).
 *
 * With m = max_k x_k and Z = sum_k exp(x_k - m):
 *   p_k  = exp(x_k - m) / Z
 *   loss = log Z + m - x_y  ( = -log p_y, without ever forming exp(x) )
 *   d loss / d x_k = p_k - [k == y]
 * Subtracting m keeps every exponent <= 0 (no overflow) and one of them 0
 * (Z >= 1, so log Z is never log of an underflowed 0). */
#include <math.h>

#include "nn/layers.h"

void nn_softmax_xent_forward(float *losses, float *probs, const float *logits, const uint8_t *labels, size_t B,
                             size_t K) {
    for (size_t b = 0; b < B; b++) {
        const float *x = logits + b * K;
        float *p = probs + b * K;
        float maximum = x[0];
        for (size_t k = 1; k < K; k++)
            if (x[k] > maximum) maximum = x[k];
        double sum = 0.0;
        for (size_t k = 0; k < K; k++) {
            p[k] = expf(x[k] - maximum);
            sum += p[k];
        }
        float inverse = (float)(1.0 / sum);
        for (size_t k = 0; k < K; k++) p[k] *= inverse;
        losses[b] = (float)(log(sum) + (double)maximum - (double)x[labels[b]]);
    }
}

void nn_softmax_xent_backward(float *dlogits, const float *probs, const uint8_t *labels, float dloss, size_t B,
                              size_t K) {
    for (size_t b = 0; b < B; b++) {
        const float *p = probs + b * K;
        float *d = dlogits + b * K;
        for (size_t k = 0; k < K; k++) d[k] += dloss * (p[k] - (k == labels[b] ? 1.0f : 0.0f));
    }
}
