/* activation.c -- ReLU (see layers.h). */
#include "nn/layers.h"

void nn_relu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void nn_relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
    /* out > 0 exactly where inp > 0, so the saved output is the mask. */
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}
