/* nn_reference.h -- the nn engine's independent specification, in double.
 *
 * Direct-loop layers in the textbook layout (PyTorch's NCHW: examples first)
 * and the three models' losses computed from the parameter vector as
 * include/spirt/nn.h documents it. Nothing here shares code or layout
 * tricks with src/nn (which is channels-last inside and float): the tests
 * take finite differences of these functions, in double, as the truth. */
#ifndef SPIRT_TEST_NN_REFERENCE_H
#define SPIRT_TEST_NN_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/nn.h"

/* out (B, OC) = inp (B, C) weight^T + bias. */
void nn_reference_linear(double *out, const double *inp, const double *weight, const double *bias, size_t B,
                         size_t C, size_t OC);
/* out (B, OC, OH, OW) from inp (B, C, H, W), weight (OC, C, K, K), bias (OC),
 * stride 1, zero padding P; OH = H + 2P - K + 1. */
void nn_reference_conv2d(double *out, const double *inp, const double *weight, const double *bias, size_t B,
                         size_t C, size_t OC, size_t H, size_t W, size_t K, size_t P);
void nn_reference_relu(double *values, size_t n);
/* out (planes, H/2, W/2): max over each 2x2 window. */
void nn_reference_maxpool2x2(double *out, const double *inp, size_t planes, size_t H, size_t W);
/* Mean over the batch of -log softmax(logits[b])[labels[b]]. */
double nn_reference_softmax_xent(const double *logits, const uint8_t *labels, size_t B, size_t K);

/* The model's mean loss on a batch of images (B, 784), from params laid out
 * as nn.h's table says. */
double nn_reference_model_loss(NnModelKind kind, const double *params, const float *images, const uint8_t *labels,
                               size_t B);

/* Per example, (S, C) channels-last <-> (C, S) channels-first, S = H*W. */
void nn_reference_nhwc_to_nchw(double *dst, const double *src, size_t B, size_t S, size_t C);
void nn_reference_nchw_to_nhwc(double *dst, const double *src, size_t B, size_t S, size_t C);

#endif /* SPIRT_TEST_NN_REFERENCE_H */
