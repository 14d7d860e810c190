/* conv2d.c -- 2-D convolution, stride 1, zero padding (see layers.h): the
 * im2col + OpenBLAS version the models use, and the direct-loop version it
 * is tested against.
 *
 * im2col. For a group of n examples, the matrix col has one row per weight
 * position r = (c, ki, kj), C*K*K rows, and one column per output position
 * (b, oh, ow), n*OH*OW columns; col[r][b, oh, ow] = inp[c][b][oh+ki-P][ow+kj-P]
 * (0 in the padding). Then, with weight viewed as (OC, C*K*K):
 *   forward   out[:, group]    = weight  col                  one sgemm
 *   backward  dweight         += dout[:, group] col^T          one sgemm
 *             dcol             = weight^T dout[:, group]       one sgemm
 *             dinp            += col2im(dcol)  (im2col's adjoint: scatter-add)
 * Because activations are channel-major (C, B, H, W), the group's output
 * columns are one contiguous run in every output channel's row of (OC, B*S),
 * so sgemm writes them in place (leading dimension B*S): no copies.
 *
 * Group size. A wider product runs closer to the machine's peak, but col
 * grows with it and should stay in the core's cache while sgemm streams it.
 * The group holds as many examples as fit GROUP_BUDGET floats (at least
 * one). It depends on the layer's geometry only, never on the batch: the
 * order in which dweight sums its examples -- hence its bits -- is a
 * property of the model. */
#include <cblas.h>
#include <string.h>

#include "nn/layers.h"

/* 1 MiB of floats: half a typical L2 (measured: see docs/architecture.md). */
enum { GROUP_BUDGET = 256 * 1024 };

size_t nn_conv2d_out_height(const NnConvShape *shape) {
    size_t padded = shape->height + 2 * shape->padding;
    return padded >= shape->kernel ? padded - shape->kernel + 1 : 0;
}

size_t nn_conv2d_out_width(const NnConvShape *shape) {
    size_t padded = shape->width + 2 * shape->padding;
    return padded >= shape->kernel ? padded - shape->kernel + 1 : 0;
}

/* Examples per im2col group (see the top of the file). */
static size_t group_examples(const NnConvShape *shape) {
    size_t per_example =
        shape->in_channels * shape->kernel * shape->kernel * nn_conv2d_out_height(shape) * nn_conv2d_out_width(shape);
    size_t group = per_example ? GROUP_BUDGET / per_example : 1;
    return group ? group : 1;
}

size_t nn_conv2d_workspace_floats(const NnConvShape *shape) {
    size_t group = group_examples(shape);
    if (group > shape->batch) group = shape->batch;
    return shape->in_channels * shape->kernel * shape->kernel * group * nn_conv2d_out_height(shape) *
           nn_conv2d_out_width(shape);
}

/* The output columns ow in [first, last) read input columns inside the
 * image for kernel column kj; the rest read padding. */
static void valid_columns(const NnConvShape *shape, size_t kj, size_t OW, size_t *first, size_t *last) {
    /* iw = ow + kj - P in [0, W)  <=>  ow in [P - kj, W + P - kj). */
    size_t P = shape->padding, W = shape->width;
    *first = P > kj ? P - kj : 0;
    *last = W + P > kj ? W + P - kj : 0;
    if (*last > OW) *last = OW;
    if (*first > *last) *first = *last;
}

/* col (C*K*K, n*S) from examples [b0, b0 + n) of inp (C, B, H, W). */
static void im2col(float *col, const float *inp, const NnConvShape *shape, size_t b0, size_t n) {
    size_t C = shape->in_channels, B = shape->batch, H = shape->height, W = shape->width;
    size_t K = shape->kernel, P = shape->padding;
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape), S = OH * OW;
    for (size_t c = 0; c < C; c++)
        for (size_t ki = 0; ki < K; ki++)
            for (size_t kj = 0; kj < K; kj++) {
                float *row = col + ((c * K + ki) * K + kj) * n * S;
                size_t first, last;
                valid_columns(shape, kj, OW, &first, &last);
                for (size_t b = 0; b < n; b++) {
                    const float *plane = inp + (c * B + b0 + b) * H * W;
                    for (size_t oh = 0; oh < OH; oh++) {
                        float *to = row + b * S + oh * OW;
                        size_t ih = oh + ki; /* + P offset: ih - P is the real row */
                        if (ih < P || ih - P >= H) {
                            memset(to, 0, OW * sizeof(float));
                            continue;
                        }
                        memset(to, 0, first * sizeof(float));
                        if (last > first)
                            memcpy(to + first, plane + (ih - P) * W + first + kj - P, (last - first) * sizeof(float));
                        memset(to + last, 0, (OW - last) * sizeof(float));
                    }
                }
            }
}

/* dinp (C, B, H, W) += the scatter of col (C*K*K, n*S) for examples
 * [b0, b0 + n): the adjoint of im2col (padding positions are dropped). */
static void col2im_add(float *dinp, const float *col, const NnConvShape *shape, size_t b0, size_t n) {
    size_t C = shape->in_channels, B = shape->batch, H = shape->height, W = shape->width;
    size_t K = shape->kernel, P = shape->padding;
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape), S = OH * OW;
    for (size_t c = 0; c < C; c++)
        for (size_t ki = 0; ki < K; ki++)
            for (size_t kj = 0; kj < K; kj++) {
                const float *row = col + ((c * K + ki) * K + kj) * n * S;
                size_t first, last;
                valid_columns(shape, kj, OW, &first, &last);
                for (size_t b = 0; b < n; b++) {
                    float *plane = dinp + (c * B + b0 + b) * H * W;
                    for (size_t oh = 0; oh < OH; oh++) {
                        size_t ih = oh + ki;
                        if (ih < P || ih - P >= H || last == first) continue;
                        const float *from = row + b * S + oh * OW;
                        float *to = plane + (ih - P) * W + first + kj - P;
                        for (size_t ow = first; ow < last; ow++) to[ow - first] += from[ow];
                    }
                }
            }
}

void nn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       const NnConvShape *shape, float *workspace) {
    size_t B = shape->batch, OC = shape->out_channels;
    size_t CKK = shape->in_channels * shape->kernel * shape->kernel;
    size_t S = nn_conv2d_out_height(shape) * nn_conv2d_out_width(shape);
    /* Bias first, then the products add to it (beta = 1). */
    for (size_t o = 0; o < OC; o++) {
        float *out_o = out + o * B * S;
        for (size_t i = 0; i < B * S; i++) out_o[i] = bias[o];
    }
    size_t group = group_examples(shape);
    for (size_t b0 = 0; b0 < B; b0 += group) {
        size_t n = B - b0 < group ? B - b0 : group;
        im2col(workspace, inp, shape, b0, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)OC, (int)(n * S), (int)CKK, 1.0f, weight,
                    (int)CKK, workspace, (int)(n * S), 1.0f, out + b0 * S, (int)(B * S));
    }
}

void nn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const NnConvShape *shape, float *workspace) {
    size_t B = shape->batch, OC = shape->out_channels;
    size_t CKK = shape->in_channels * shape->kernel * shape->kernel;
    size_t S = nn_conv2d_out_height(shape) * nn_conv2d_out_width(shape);
    for (size_t o = 0; o < OC; o++) {
        const float *dout_o = dout + o * B * S;
        float sum = 0.0f;
        for (size_t i = 0; i < B * S; i++) sum += dout_o[i];
        dbias[o] += sum;
    }
    size_t group = group_examples(shape);
    for (size_t b0 = 0; b0 < B; b0 += group) {
        size_t n = B - b0 < group ? B - b0 : group;
        im2col(workspace, inp, shape, b0, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)OC, (int)CKK, (int)(n * S), 1.0f, dout + b0 * S,
                    (int)(B * S), workspace, (int)(n * S), 1.0f, dweight, (int)CKK);
        if (dinp == NULL) continue;
        /* col is no longer needed: reuse its room for dcol. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)(n * S), (int)OC, 1.0f, weight,
                    (int)CKK, dout + b0 * S, (int)(B * S), 0.0f, workspace, (int)(n * S));
        col2im_add(dinp, workspace, shape, b0, n);
    }
}

/* --- Naive reference: the definition, one multiply-add at a time --- */

/* The input value feeding output (oh, ow) through kernel tap (ki, kj) of
 * plane, or NULL in the padding. */
static const float *tap(const float *plane, const NnConvShape *shape, size_t oh, size_t ow, size_t ki, size_t kj) {
    size_t ih = oh + ki, iw = ow + kj, P = shape->padding;
    if (ih < P || iw < P || ih - P >= shape->height || iw - P >= shape->width) return NULL;
    return plane + (ih - P) * shape->width + (iw - P);
}

void nn_conv2d_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                             const NnConvShape *shape) {
    size_t B = shape->batch, C = shape->in_channels, OC = shape->out_channels, K = shape->kernel;
    size_t H = shape->height, W = shape->width;
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape);
    for (size_t o = 0; o < OC; o++)
        for (size_t b = 0; b < B; b++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    float sum = bias[o];
                    for (size_t c = 0; c < C; c++)
                        for (size_t ki = 0; ki < K; ki++)
                            for (size_t kj = 0; kj < K; kj++) {
                                const float *x = tap(inp + (c * B + b) * H * W, shape, oh, ow, ki, kj);
                                if (x) sum += weight[((o * C + c) * K + ki) * K + kj] * *x;
                            }
                    out[((o * B + b) * OH + oh) * OW + ow] = sum;
                }
}

void nn_conv2d_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, const NnConvShape *shape) {
    size_t B = shape->batch, C = shape->in_channels, OC = shape->out_channels, K = shape->kernel;
    size_t H = shape->height, W = shape->width;
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape);
    for (size_t o = 0; o < OC; o++)
        for (size_t b = 0; b < B; b++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    float d = dout[((o * B + b) * OH + oh) * OW + ow];
                    dbias[o] += d;
                    for (size_t c = 0; c < C; c++)
                        for (size_t ki = 0; ki < K; ki++)
                            for (size_t kj = 0; kj < K; kj++) {
                                size_t plane = (c * B + b) * H * W;
                                const float *x = tap(inp + plane, shape, oh, ow, ki, kj);
                                if (x == NULL) continue;
                                size_t w = ((o * C + c) * K + ki) * K + kj;
                                dweight[w] += d * *x;
                                if (dinp) dinp[plane + (size_t)(x - (inp + plane))] += d * weight[w];
                            }
                }
}
