/* layers.h -- the nn engine's layer kernels (internal to src/nn and its tests).
 *
 * Every layer is a forward/backward pair over raw float buffers with explicit
 * sizes, in one argument order:
 *   X_forward(outputs..., inputs..., weights..., sizes)
 *   X_backward(input grads..., weight grads..., output grad, saved tensors..., sizes)
 * Kernels never allocate (linear and convolution borrow an NnWorkspace the
 * caller sized with nn_linear_workspace_floats / nn_conv2d_workspace_floats)
 * and backward ACCUMULATES (+=) into every gradient buffer; the caller
 * zeroes them. A NULL input-gradient pointer skips that product (the first
 * layer's input needs no gradient). Outputs never overlap inputs.
 *
 * Layouts. Dense activations are (B, N): one row per example. Image
 * activations are CHANNELS-LAST, (B, H, W, C): the C channels of a pixel
 * are consecutive. Then a convolution over a zero-padded copy of its input
 * is a matrix product whose im2col operand can be read in place (pixels of
 * an output row are C floats apart, conv_gemm.h), and pooling runs over
 * contiguous channels. The price: flattening into the dense part is a
 * per-example (H*W, C) -> (C, H*W) transpose (nn_flatten_*), so that the
 * first dense layer sees PyTorch's (channel, row, column) order. For one
 * channel (the images) channels-last and (B, 1, H, W) are the same bytes.
 *
 * Weights use PyTorch's layouts: linear (OC, C); convolution (OC, C, K, K). */
#ifndef SPIRT_NN_LAYERS_H
#define SPIRT_NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* What the matrix-product kernels borrow: scratch memory and threads. The
 * thread count never changes a result (gemm.h). */
typedef struct NnWorkspace {
    float *data; /* 64-byte aligned, as many floats as the kernel asked for */
    int threads; /* >= 1 */
} NnWorkspace;

/* --- Linear: out = inp weight^T + bias --- */

/* Floats of workspace the linear kernels need (any shape). */
size_t nn_linear_workspace_floats(void);
/* out (B, OC); inp (B, C); weight (OC, C); bias (OC). */
void nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias, size_t B, size_t C,
                       size_t OC, const NnWorkspace *workspace);
/* dinp (B, C) += dout weight (skipped if NULL); dweight (OC, C) += dout^T inp;
 * dbias (OC) += column sums of dout (B, OC). */
void nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, size_t B, size_t C, size_t OC, const NnWorkspace *workspace);
/* The same by direct loops: the specification the GEMM versions are tested
 * against. */
void nn_linear_forward_naive(float *out, const float *inp, const float *weight, const float *bias, size_t B,
                             size_t C, size_t OC);
void nn_linear_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, size_t B, size_t C, size_t OC);

/* --- ReLU: out = max(0, inp), element-wise over n values --- */

void nn_relu_forward(float *out, const float *inp, size_t n);
/* dinp += dout where out > 0 (the derivative at 0 is taken as 0, as PyTorch
 * does). */
void nn_relu_backward(float *dinp, const float *dout, const float *out, size_t n);

/* --- 2-D convolution, stride 1, square kernel, zero padding P < K --- */

typedef struct NnConvShape {
    size_t batch;        /* B */
    size_t in_channels;  /* C */
    size_t out_channels; /* OC */
    size_t height, width; /* H, W of the input */
    size_t kernel;       /* K */
    size_t padding;      /* P: zeros on every side */
} NnConvShape;

/* OH = H + 2P - K + 1 (and OW likewise); 0 if the kernel does not fit. */
size_t nn_conv2d_out_height(const NnConvShape *shape);
size_t nn_conv2d_out_width(const NnConvShape *shape);
/* Floats of workspace nn_conv2d_forward/backward need for this shape: the
 * product's panels, zero-padded copies of the input and of the output
 * gradient, and index tables (see conv2d.c). */
size_t nn_conv2d_workspace_floats(const NnConvShape *shape);

/* out (B, OH, OW, OC) = weight (OC, C, K, K) * inp (B, H, W, C) + bias (OC),
 * as one implicit matrix product (conv2d.c). */
void nn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       const NnConvShape *shape, const NnWorkspace *workspace);
/* dinp (B, H, W, C) += (skipped if NULL); dweight (OC, C, K, K) +=;
 * dbias (OC) +=; dout is (B, OH, OW, OC). */
void nn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const NnConvShape *shape, const NnWorkspace *workspace);
/* The same by direct loops over the definition (no workspace). */
void nn_conv2d_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                             const NnConvShape *shape);
void nn_conv2d_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, const NnConvShape *shape);

/* --- Max pooling, 2x2 windows, stride 2 (channels-last) --- */

/* out (B, H/2, W/2, C) = max of each window of inp (B, H, W, C); an odd last
 * row or column is dropped (PyTorch's floor mode). */
void nn_maxpool2x2_forward(float *out, const float *inp, size_t B, size_t H, size_t W, size_t C);
/* dinp += dout routed to the window's maximum: the first in row-major order
 * among equals, the one the forward kept. Recomputed from inp, so nothing
 * is stored. */
void nn_maxpool2x2_backward(float *dinp, const float *dout, const float *inp, size_t B, size_t H, size_t W,
                            size_t C);

/* --- Flatten: channels-last (B, S, C) to PyTorch's (B, C*S) --- */

/* out[b][c*S + s] = inp[b][s][c], S = H*W. */
void nn_flatten_forward(float *out, const float *inp, size_t B, size_t S, size_t C);
/* dinp (B, S, C) += dout (B, C*S) transposed back. */
void nn_flatten_backward(float *dinp, const float *dout, size_t B, size_t S, size_t C);

/* --- Softmax cross-entropy --- */

/* For each example b: probs[b] = softmax(logits[b]) and losses[b] =
 * -log probs[b][labels[b]], computed as logsumexp(logits[b]) -
 * logits[b][labels[b]] with the row maximum subtracted first, so large
 * scores neither overflow nor lose the loss to rounding. logits, probs
 * (B, K); losses, labels (B); every label < K. */
void nn_softmax_xent_forward(float *losses, float *probs, const float *logits, const uint8_t *labels, size_t B,
                             size_t K);
/* dlogits (B, K) += dloss * (probs - onehot(labels)): the gradient of
 * dloss * sum_b losses[b] (dloss = 1/B for the mean). */
void nn_softmax_xent_backward(float *dlogits, const float *probs, const uint8_t *labels, float dloss, size_t B,
                              size_t K);

#endif /* SPIRT_NN_LAYERS_H */
