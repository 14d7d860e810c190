/* conv2d.c -- 2-D convolution, stride 1, zero padding P < K, channels-last
 * (see layers.h): the implicit-GEMM version the models use, and the
 * direct-loop version it is tested against.
 *
 * With output pixels n = (b, oh, ow) and kernel taps t = (ki, kj, c), the
 * convolution is out (B*OH*OW, OC) = col (B*OH*OW, K*K*C) W' (K*K*C, OC),
 * col[n][t] = inp[b][oh + ki - P][ow + kj - P][c] and W'[t][o] =
 * weight[o][c][ki][kj]. In a zero-padded copy of the input (B, Hp, Wp, C),
 * col[n][t] sits at pixel_offset(n) + tap_offset(t), with
 *   pixel_offset = ((b*Hp + oh)*Wp + ow)*C,   tap_offset = (ki*Wp + kj)*C + c,
 * and the pixels of one output row are C floats apart: exactly the operand
 * nn_conv_gemm reads in place (conv_gemm.h). The three products:
 *   forward   out    = col W'         groups = output rows, K = taps
 *   dweight  += (col^T dout)^T         groups = kernel rows ki (their K*C
 *                                      taps are consecutive floats), K = pixels
 *   dinp     += col'(dout) W''        a "full" convolution, groups = input rows
 * The last is the forward's adjoint written as a convolution: pad dout by
 * Q = K - 1 - P, flip the kernel and swap its channel axes, W''[(ki, kj,
 * o)][c] = weight[o][c][K-1-ki][K-1-kj]. Each input gradient is written
 * once; there is no col2im scatter.
 *
 * Workspace (nn_conv2d_workspace_floats), in this order: the padded input,
 * the padded output gradient, the repacked weights, the weight gradient
 * before it is scattered into PyTorch's layout, a copy of dout with whole
 * vectors of channels (only when OC is not a multiple of the vector), the
 * offset tables (uint32, one float each), and the bias padded to whole
 * vectors. */
#include <string.h>

#include "nn/conv_gemm.h"
#include "nn/layers.h"

size_t nn_conv2d_out_height(const NnConvShape *shape) {
    size_t padded = shape->height + 2 * shape->padding;
    return padded >= shape->kernel ? padded - shape->kernel + 1 : 0;
}

size_t nn_conv2d_out_width(const NnConvShape *shape) {
    size_t padded = shape->width + 2 * shape->padding;
    return padded >= shape->kernel ? padded - shape->kernel + 1 : 0;
}

typedef struct ConvWorkspace {
    float *padded_input;   /* (B, H + 2P, W + 2P, C) */
    float *padded_dout;    /* (B, OH + 2Q, OW + 2Q, OC) */
    float *weights;        /* (K*K*max(C, OC), padded max(C, OC)): W' or W'' */
    float *weight_grad;    /* (K*K*C, padded OC) */
    float *wide_dout;      /* (B*OH*OW, padded OC) */
    float *bias;           /* padded OC */
    uint32_t *group_offsets; /* max(B*OH, B*H, K) */
    uint32_t *col_offsets;   /* max(K*K*max(C, OC), B*OH*OW) */
} ConvWorkspace;

static size_t back_padding(const NnConvShape *s) { return s->kernel - 1 - s->padding; }

/* Carves `base` (if not NULL) into parts; returns the floats needed. */
static size_t workspace_layout(const NnConvShape *s, float *base, ConvWorkspace *parts) {
    size_t C = s->in_channels, OC = s->out_channels, B = s->batch, K = s->kernel, P = s->padding;
    size_t H = s->height, W = s->width, OH = nn_conv2d_out_height(s), OW = nn_conv2d_out_width(s);
    size_t Q = back_padding(s), wide = C > OC ? C : OC, taps = K * K * wide;
    size_t groups = B * (OH > H ? OH : H) > K ? B * (OH > H ? OH : H) : K;
    size_t sizes[8] = {
        B * (H + 2 * P) * (W + 2 * P) * C,
        B * (OH + 2 * Q) * (OW + 2 * Q) * OC,
        taps * nn_conv_gemm_padded_width(wide),
        K * K * C * nn_conv_gemm_padded_width(OC),
        OC % nn_conv_gemm_padded_width(1) ? B * OH * OW * nn_conv_gemm_padded_width(OC) : 0,
        groups,
        taps > B * OH * OW ? taps : B * OH * OW,
        nn_conv_gemm_padded_width(OC),
    };
    size_t total = 0;
    float *starts[8];
    for (int i = 0; i < 8; i++) {
        starts[i] = base ? base + total : NULL;
        total += (sizes[i] + 15) / 16 * 16; /* every part 64-byte aligned */
    }
    if (parts) {
        parts->padded_input = starts[0];
        parts->padded_dout = starts[1];
        parts->weights = starts[2];
        parts->weight_grad = starts[3];
        parts->wide_dout = starts[4];
        parts->group_offsets = (uint32_t *)(void *)starts[5];
        parts->col_offsets = (uint32_t *)(void *)starts[6];
        parts->bias = starts[7];
    }
    return total;
}

size_t nn_conv2d_workspace_floats(const NnConvShape *shape) { return workspace_layout(shape, NULL, NULL); }

/* to (B, H + 2pad, W + 2pad, C) = from (B, H, W, C) framed by zeros. */
static void pad_images(float *to, const float *from, size_t B, size_t H, size_t W, size_t C, size_t pad) {
    size_t Wp = W + 2 * pad, row = W * C;
    for (size_t b = 0; b < B; b++) {
        float *image = to + b * (H + 2 * pad) * Wp * C;
        memset(image, 0, pad * Wp * C * sizeof(float));
        for (size_t h = 0; h < H; h++) {
            float *line = image + (pad + h) * Wp * C;
            memset(line, 0, pad * C * sizeof(float));
            memcpy(line + pad * C, from + (b * H + h) * row, row * sizeof(float));
            memset(line + pad * C + row, 0, pad * C * sizeof(float));
        }
        memset(image + (pad + H) * Wp * C, 0, pad * Wp * C * sizeof(float));
    }
}

/* The operand "one row of pixels per group" over padded images (B, Hp, Wp,
 * channels), for output rows of `width` pixels: tap (ki, kj, c) reads at
 * (ki*Wp + kj)*channels + c from the pixel. */
static NnConvOperand pixel_rows(const float *padded, uint32_t *group_offsets, uint32_t *col_offsets, size_t B,
                                size_t Hp, size_t Wp, size_t channels, size_t K, size_t rows, size_t width) {
    for (size_t b = 0; b < B; b++)
        for (size_t y = 0; y < rows; y++) group_offsets[b * rows + y] = (uint32_t)((b * Hp + y) * Wp * channels);
    for (size_t ki = 0; ki < K; ki++)
        for (size_t kj = 0; kj < K; kj++)
            for (size_t c = 0; c < channels; c++)
                col_offsets[(ki * K + kj) * channels + c] = (uint32_t)((ki * Wp + kj) * channels + c);
    NnConvOperand A = {padded, group_offsets, width, channels, col_offsets};
    return A;
}

static const float *padded_input(const float *inp, const NnConvShape *s, const ConvWorkspace *w) {
    if (s->padding == 0) return inp;
    pad_images(w->padded_input, inp, s->batch, s->height, s->width, s->in_channels, s->padding);
    return w->padded_input;
}

void nn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       const NnConvShape *shape, const NnWorkspace *workspace) {
    size_t B = shape->batch, C = shape->in_channels, OC = shape->out_channels, K = shape->kernel;
    size_t P = shape->padding, OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape);
    size_t taps = K * K * C, wide = nn_conv_gemm_padded_width(OC);
    ConvWorkspace w;
    workspace_layout(shape, workspace->data, &w);
    /* W'[(ki, kj, c)][o] = weight[o][c][ki][kj], columns past OC zero. */
    memset(w.weights, 0, taps * wide * sizeof(float));
    for (size_t o = 0; o < OC; o++)
        for (size_t c = 0; c < C; c++)
            for (size_t ki = 0; ki < K; ki++)
                for (size_t kj = 0; kj < K; kj++)
                    w.weights[((ki * K + kj) * C + c) * wide + o] = weight[((o * C + c) * K + ki) * K + kj];
    /* The sums start at the bias (padded to whole vectors). */
    memset(w.bias, 0, wide * sizeof(float));
    memcpy(w.bias, bias, OC * sizeof(float));
    NnConvOperand col = pixel_rows(padded_input(inp, shape, &w), w.group_offsets, w.col_offsets, B,
                                   shape->height + 2 * P, shape->width + 2 * P, C, K, OH, OW);
    nn_conv_gemm(B * OH * OW, OC, taps, &col, w.weights, wide, w.bias, out, OC, 0, workspace->threads);
}

void nn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const NnConvShape *shape, const NnWorkspace *workspace) {
    size_t B = shape->batch, C = shape->in_channels, OC = shape->out_channels, K = shape->kernel;
    size_t H = shape->height, W = shape->width, P = shape->padding, Hp = H + 2 * P, Wp = W + 2 * P;
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape), pixels = B * OH * OW;
    size_t wide_out = nn_conv_gemm_padded_width(OC);
    ConvWorkspace w;
    workspace_layout(shape, workspace->data, &w);
    for (size_t n = 0; n < pixels; n++)
        for (size_t o = 0; o < OC; o++) dbias[o] += dout[n * OC + o];

    /* dweight: G (K*K*C, OC) = col^T dout, with the taps of kernel row ki
     * as one group (consecutive floats from a pixel) and the pixels as K. */
    const float *rows_of_dout = dout;
    if (wide_out != OC) {
        memset(w.wide_dout, 0, pixels * wide_out * sizeof(float));
        for (size_t n = 0; n < pixels; n++) memcpy(w.wide_dout + n * wide_out, dout + n * OC, OC * sizeof(float));
        rows_of_dout = w.wide_dout;
    }
    const float *padded = padded_input(inp, shape, &w);
    for (size_t ki = 0; ki < K; ki++) w.group_offsets[ki] = (uint32_t)(ki * Wp * C);
    for (size_t b = 0; b < B; b++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++)
                w.col_offsets[(b * OH + oh) * OW + ow] = (uint32_t)(((b * Hp + oh) * Wp + ow) * C);
    NnConvOperand taps = {padded, w.group_offsets, K * C, 1, w.col_offsets};
    nn_conv_gemm(K * K * C, OC, pixels, &taps, rows_of_dout, wide_out, NULL, w.weight_grad, wide_out, 0,
                 workspace->threads);
    for (size_t o = 0; o < OC; o++)
        for (size_t c = 0; c < C; c++)
            for (size_t ki = 0; ki < K; ki++)
                for (size_t kj = 0; kj < K; kj++)
                    dweight[((o * C + c) * K + ki) * K + kj] += w.weight_grad[((ki * K + kj) * C + c) * wide_out + o];
    if (dinp == NULL) return;

    /* dinp (B*H*W, C) += col'(dout) (B*H*W, K*K*OC) W'' (K*K*OC, C). */
    size_t Q = back_padding(shape), wide_in = nn_conv_gemm_padded_width(C);
    pad_images(w.padded_dout, dout, B, OH, OW, OC, Q);
    memset(w.weights, 0, K * K * OC * wide_in * sizeof(float));
    for (size_t o = 0; o < OC; o++)
        for (size_t c = 0; c < C; c++)
            for (size_t ki = 0; ki < K; ki++)
                for (size_t kj = 0; kj < K; kj++)
                    w.weights[((ki * K + kj) * OC + o) * wide_in + c] =
                        weight[((o * C + c) * K + (K - 1 - ki)) * K + (K - 1 - kj)];
    NnConvOperand col = pixel_rows(w.padded_dout, w.group_offsets, w.col_offsets, B, OH + 2 * Q, OW + 2 * Q, OC,
                                   K, H, W);
    nn_conv_gemm(B * H * W, C, K * K * OC, &col, w.weights, wide_in, NULL, dinp, C, 1, workspace->threads);
}

/* --- Naive reference: the definition, one multiply-add at a time --- */

/* The input value feeding output (b, oh, ow) through tap (ki, kj) of
 * channel c, or NULL in the padding. */
static const float *tap(const float *inp, const NnConvShape *s, size_t b, size_t oh, size_t ow, size_t ki,
                        size_t kj, size_t c) {
    size_t ih = oh + ki, iw = ow + kj, P = s->padding;
    if (ih < P || iw < P || ih - P >= s->height || iw - P >= s->width) return NULL;
    return inp + ((b * s->height + ih - P) * s->width + iw - P) * s->in_channels + c;
}

void nn_conv2d_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                             const NnConvShape *shape) {
    size_t B = shape->batch, C = shape->in_channels, OC = shape->out_channels, K = shape->kernel;
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape);
    for (size_t b = 0; b < B; b++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++)
                for (size_t o = 0; o < OC; o++) {
                    float sum = bias[o];
                    for (size_t c = 0; c < C; c++)
                        for (size_t ki = 0; ki < K; ki++)
                            for (size_t kj = 0; kj < K; kj++) {
                                const float *x = tap(inp, shape, b, oh, ow, ki, kj, c);
                                if (x) sum += weight[((o * C + c) * K + ki) * K + kj] * *x;
                            }
                    out[((b * OH + oh) * OW + ow) * OC + o] = sum;
                }
}

void nn_conv2d_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, const NnConvShape *shape) {
    size_t B = shape->batch, C = shape->in_channels, OC = shape->out_channels, K = shape->kernel;
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape);
    for (size_t b = 0; b < B; b++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++)
                for (size_t o = 0; o < OC; o++) {
                    float d = dout[((b * OH + oh) * OW + ow) * OC + o];
                    dbias[o] += d;
                    for (size_t c = 0; c < C; c++)
                        for (size_t ki = 0; ki < K; ki++)
                            for (size_t kj = 0; kj < K; kj++) {
                                const float *x = tap(inp, shape, b, oh, ow, ki, kj, c);
                                if (x == NULL) continue;
                                size_t at = ((o * C + c) * K + ki) * K + kj;
                                dweight[at] += d * *x;
                                if (dinp) dinp[x - inp] += d * weight[at];
                            }
                }
}
