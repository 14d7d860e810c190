/* activation.c -- ReLU (see layers.h). Branch-free bodies over restrict
 * pointers, so the compiler vectorizes them (the signs of activations are
 * random: a branch would mispredict half the time). */
#include "nn/layers.h"

void nn_relu_forward(float *restrict out, const float *restrict inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void nn_relu_backward(float *restrict dinp, const float *restrict dout, const float *restrict out, size_t n) {
    /* out > 0 exactly where inp > 0, so the saved output is the mask. */
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}
