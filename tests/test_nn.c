/* test_nn.c -- the nn engine: every layer and every model against finite
 * differences, the tuned kernels against the naive ones, the loss against
 * known values, reproducible initialisation, and bad input.
 *
 * Gradient checks: central differences IN DOUBLE of an independent double
 * re-implementation (tests/support/nn_reference.c, NCHW, loops as in the
 * formulas), compared with the float analytic gradients of src/nn. Why
 * double: with h = 1e-6 the numerical derivative is good to ~1e-9, so any
 * disagreement above float rounding is a bug in the backward (or in the
 * forward, which the reference also checks), never noise of the check
 * itself; float differences would need a large h, and a loose tolerance,
 * to rise above float rounding of the loss. A coordinate passes when
 *   |analytic - numeric| <= 1e-3 |numeric| + 1e-4 max|analytic of that tensor|
 * (the second term allows for float accumulation over hundreds of terms
 * in entries much smaller than the tensor's largest). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "nn/conv_gemm.h"
#include "nn/gemm.h"
#include "nn/layers.h"
#include "nn_reference.h"
#include "spirt/nn.h"
#include "spirt/rng.h"
#include "spirt/tensor.h"
#include "test.h"

static void fill_uniform(float *values, size_t n, SpirtRng *rng, double low, double high) {
    for (size_t i = 0; i < n; i++) values[i] = (float)(low + (high - low) * rng_uniform(rng));
}

static double *to_double(const float *values, size_t n) {
    double *copy = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) copy[i] = values[i];
    return copy;
}

static double max_abs(const float *values, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(values[i]));
    return m;
}

/* --- The finite-difference harness --- */

/* One input of an objective: its values in double (perturbed in place by
 * the harness) and the float analytic gradient to check. */
typedef struct FdTensor {
    const char *name;
    double *values;
    size_t count;
    const float *analytic;
} FdTensor;

typedef double (*FdObjective)(void *context, const FdTensor *tensors);

/* Checks `samples` coordinates of each tensor (all if fewer), always
 * including the first and the last. */
static void check_gradients(const char *what, FdObjective objective, void *context, FdTensor *tensors,
                            size_t tensor_count, size_t samples, SpirtRng *rng) {
    const double h = 1e-6;
    for (size_t t = 0; t < tensor_count; t++) {
        FdTensor *tensor = &tensors[t];
        double scale = max_abs(tensor->analytic, tensor->count);
        size_t n = tensor->count < samples ? tensor->count : samples;
        double worst = 0;
        int failed = 0;
        for (size_t s = 0; s < n; s++) {
            size_t i = tensor->count <= samples ? s
                       : s == 0                 ? 0
                       : s == 1                 ? tensor->count - 1
                                                : (size_t)rng_below(rng, tensor->count);
            double saved = tensor->values[i];
            tensor->values[i] = saved + h;
            double plus = objective(context, tensors);
            tensor->values[i] = saved - h;
            double minus = objective(context, tensors);
            tensor->values[i] = saved;
            double numeric = (plus - minus) / (2 * h), analytic = tensor->analytic[i];
            double error = fabs(analytic - numeric);
            double allowed = 1e-3 * fabs(numeric) + 1e-4 * scale + 1e-12;
            if (error / allowed > worst) worst = error / allowed;
            if (error > allowed && failed++ < 3)
                CHECKF(0, "%s: d/d %s[%zu]: analytic %.9g, numeric %.9g", what, tensor->name, i, analytic, numeric);
        }
        CHECKF(!failed, "%s: %s: %d of %zu coordinates off (worst %.3g of the tolerance)", what, tensor->name,
               failed, n, worst);
    }
}

/* Sum of g * y: the objective whose gradient a backward with dout = g gives. */
static double dot(const double *g, const double *y, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += g[i] * y[i];
    return sum;
}

/* --- The matrix product --- */

static double operand_element(const NnOperand *op, size_t r, size_t c) {
    return op->kind == NN_OPERAND_DENSE ? op->data[r * op->stride + c] : op->data[c * op->stride + r];
}

/* An operand of rows x cols of the given kind over fresh random storage
 * (the caller frees *storage); dense ones with a stride wider than needed. */
static NnOperand make_operand(NnOperandKind kind, size_t rows, size_t cols, SpirtRng *rng, float **storage) {
    size_t size = rows * (cols + 3);
    *storage = malloc(size * sizeof(float));
    fill_uniform(*storage, size, rng, -1, 1);
    if (kind == NN_OPERAND_DENSE) return nn_operand_dense(*storage, cols + 3);
    return nn_operand_transposed(*storage, rows);
}

static void check_gemm_case(size_t M, size_t N, size_t K, NnOperandKind kind_a, NnOperandKind kind_b,
                            float *workspace, SpirtRng *rng) {
    float *storage_a, *storage_b;
    NnOperand A = make_operand(kind_a, M, K, rng, &storage_a);
    NnOperand B = make_operand(kind_b, K, N, rng, &storage_b);
    size_t ldc = N + 5;
    float *c = malloc(M * ldc * sizeof(float)), *c_threads = malloc(M * ldc * sizeof(float));
    float *start = malloc(M * ldc * sizeof(float));
    fill_uniform(start, M * ldc, rng, -1, 1);
    int accumulate = (M + N + K) % 2;
    memcpy(c, start, M * ldc * sizeof(float));
    memcpy(c_threads, start, M * ldc * sizeof(float));
    nn_gemm(M, N, K, &A, &B, c, ldc, accumulate, workspace, 1);
    nn_gemm(M, N, K, &A, &B, c_threads, ldc, accumulate, workspace, 3);
    /* Against the sum in double, with float rounding allowed in proportion
     * to the sum of the terms' magnitudes. */
    double worst = 0;
    int outside_untouched = 1;
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double sum = accumulate ? start[i * ldc + j] : 0, magnitude = fabs(sum);
            for (size_t p = 0; p < K; p++) {
                double term = operand_element(&A, i, p) * operand_element(&B, p, j);
                sum += term;
                magnitude += fabs(term);
            }
            worst = fmax(worst, fabs(c[i * ldc + j] - sum) / (1e-6 * magnitude + 1e-30));
        }
        for (size_t j = N; j < ldc; j++) outside_untouched &= c[i * ldc + j] == start[i * ldc + j];
    }
    CHECKF(worst <= 1.0, "gemm %zux%zux%zu kinds %d,%d accumulate %d: error %.3g of the tolerance", M, N, K, kind_a,
           kind_b, accumulate, worst);
    CHECKF(outside_untouched, "gemm %zux%zux%zu wrote past N", M, N, K);
    CHECKF(memcmp(c, c_threads, M * ldc * sizeof(float)) == 0, "gemm %zux%zux%zu: 3 threads changed the bits", M, N, K);

    /* The naive definition, and OpenBLAS. */
    float *c_naive = malloc(M * ldc * sizeof(float));
    memcpy(c_naive, start, M * ldc * sizeof(float));
    nn_gemm_naive(M, N, K, &A, &B, c_naive, ldc, accumulate);
    CHECK(test_max_relative_error(c, c_naive, M * ldc) < 1e-4);
    {
        float *c_blas = malloc(M * ldc * sizeof(float));
        memcpy(c_blas, start, M * ldc * sizeof(float));
        cblas_sgemm(CblasRowMajor, kind_a == NN_OPERAND_DENSE ? CblasNoTrans : CblasTrans,
                    kind_b == NN_OPERAND_DENSE ? CblasNoTrans : CblasTrans, (int)M, (int)N, (int)K, 1.0f, A.data,
                    (int)A.stride, B.data, (int)B.stride, accumulate ? 1.0f : 0.0f, c_blas, (int)ldc);
        CHECK(test_max_relative_error(c, c_blas, M * ldc) < 1e-4);
        free(c_blas);
    }
    free(c_naive);
    free(c), free(c_threads), free(start);
    free(storage_a), free(storage_b);
}

static void test_gemm(void) {
    test_begin("gemm: dense and transposed operands, edges and blocks, against double sums, naive, OpenBLAS");
    SpirtRng rng;
    rng_init(&rng, 10);
    float *workspace = tensor_buffer_alloc(nn_gemm_workspace_floats());
    /* Sizes around the tile (up to 8 x 32) and block (128 x 256 x 1024)
     * edges, and the models' shapes. */
    const size_t sizes[][3] = {{1, 1, 1},     {7, 33, 5},    {8, 32, 16},  {17, 65, 257}, {129, 40, 20},
                               {9, 1100, 300}, {64, 10, 128}, {16, 50, 25}, {3, 2, 600}};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        for (int ka = 0; ka < 2; ka++)
            for (int kb = 0; kb < 2; kb++)
                check_gemm_case(sizes[s][0], sizes[s][1], sizes[s][2], (NnOperandKind)ka, (NnOperandKind)kb,
                                workspace, &rng);
    /* K = 0: C is left alone, or zeroed. */
    float c[6] = {1, 2, 3, 4, 5, 6}, a[1], b[1];
    NnOperand A = nn_operand_dense(a, 0), B = nn_operand_dense(b, 3);
    nn_gemm(2, 3, 0, &A, &B, c, 3, 1, workspace, 1);
    CHECK(c[0] == 1 && c[5] == 6);
    nn_gemm(2, 3, 0, &A, &B, c, 3, 0, workspace, 1);
    CHECK(c[0] == 0 && c[5] == 0);
    fprintf(stderr, "   micro-kernel: %s\n", nn_gemm_kernel_name());
    tensor_buffer_free(workspace);
}

/* --- The implicit product of the convolutions --- */

static void check_conv_gemm_case(size_t groups, size_t group_rows, size_t row_stride, size_t N, size_t K,
                                 SpirtRng *rng) {
    size_t M = groups * group_rows, ldb = nn_conv_gemm_padded_width(N) + 2, ldc = N + 3;
    /* A's rows and columns read a random field at random (overlapping)
     * offsets, like im2col reading a padded image. */
    size_t field = groups * 7 + group_rows * row_stride + K * 5 + 8;
    float *data = malloc(field * sizeof(float)), *B = malloc(K * ldb * sizeof(float));
    uint32_t *group_offsets = malloc(groups * sizeof(uint32_t)), *col_offsets = malloc(K * sizeof(uint32_t));
    fill_uniform(data, field, rng, -1, 1);
    fill_uniform(B, K * ldb, rng, -1, 1);
    for (size_t g = 0; g < groups; g++) group_offsets[g] = (uint32_t)(g * 7);
    for (size_t p = 0; p < K; p++) col_offsets[p] = (uint32_t)rng_below(rng, K * 5 + 8);
    NnConvOperand A = {data, group_offsets, group_rows, row_stride, col_offsets};
    float *start = malloc(M * ldc * sizeof(float)), *c = malloc(M * ldc * sizeof(float));
    float *c_threads = malloc(M * ldc * sizeof(float)), *c_naive = malloc(M * ldc * sizeof(float));
    fill_uniform(start, M * ldc, rng, -1, 1);
    int accumulate = (int)(N % 2);
    memcpy(c, start, M * ldc * sizeof(float));
    memcpy(c_threads, start, M * ldc * sizeof(float));
    memcpy(c_naive, start, M * ldc * sizeof(float));
    /* Every other case starts from a bias row. */
    float *bias = NULL;
    if (K % 2) {
        bias = calloc(nn_conv_gemm_padded_width(N), sizeof(float));
        fill_uniform(bias, N, rng, -1, 1);
    }
    nn_conv_gemm(M, N, K, &A, B, ldb, bias, c, ldc, accumulate, 1);
    nn_conv_gemm(M, N, K, &A, B, ldb, bias, c_threads, ldc, accumulate, 2);
    nn_conv_gemm_naive(M, N, K, &A, B, ldb, bias, c_naive, ldc, accumulate);
    double worst = 0;
    int outside_untouched = 1;
    for (size_t i = 0; i < M; i++) {
        const float *row = data + group_offsets[i / group_rows] + (i % group_rows) * row_stride;
        for (size_t j = 0; j < N; j++) {
            double sum = (accumulate ? start[i * ldc + j] : 0) + (bias ? bias[j] : 0), magnitude = fabs(sum);
            for (size_t p = 0; p < K; p++) {
                double term = (double)row[col_offsets[p]] * B[p * ldb + j];
                sum += term;
                magnitude += fabs(term);
            }
            worst = fmax(worst, fabs(c[i * ldc + j] - sum) / (1e-6 * magnitude + 1e-30));
        }
        for (size_t j = N; j < ldc; j++) outside_untouched &= c[i * ldc + j] == start[i * ldc + j];
    }
    CHECKF(worst <= 1.0, "conv_gemm %zu groups x %zu rows, N %zu, K %zu: error %.3g of the tolerance", groups,
           group_rows, N, K, worst);
    CHECKF(outside_untouched, "conv_gemm N %zu wrote past N", N);
    CHECK(memcmp(c, c_threads, M * ldc * sizeof(float)) == 0);
    CHECK(test_max_relative_error(c, c_naive, M * ldc) < 1e-4);
    free(bias);
    free(data), free(B), free(group_offsets), free(col_offsets);
    free(start), free(c), free(c_threads), free(c_naive);
}

static void test_conv_gemm(void) {
    test_begin("conv_gemm: tiles of every height and width, K blocks, against double sums and naive");
    SpirtRng rng;
    rng_init(&rng, 17);
    /* (groups, rows per group, row stride, N, K): tiles from 1 to 30 rows,
     * one vector, two, and partial ones; K across the 256 block. */
    const size_t cases[][5] = {{3, 14, 16, 32, 400}, {2, 28, 1, 16, 25}, {5, 80, 1, 32, 300}, {4, 30, 3, 17, 9},
                               {1, 1, 1, 1, 1},     {2, 13, 2, 33, 260}, {3, 5, 4, 8, 600},  {2, 29, 1, 48, 20}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
        check_conv_gemm_case(cases[k][0], cases[k][1], cases[k][2], cases[k][3], cases[k][4], &rng);
}

/* --- Linear --- */

typedef struct LinearCase {
    size_t B, C, OC;
    double *g; /* (B, OC) */
} LinearCase;

static double linear_objective(void *context, const FdTensor *t) {
    LinearCase *c = context;
    double *out = malloc(c->B * c->OC * sizeof(double));
    nn_reference_linear(out, t[0].values, t[1].values, t[2].values, c->B, c->C, c->OC);
    double result = dot(c->g, out, c->B * c->OC);
    free(out);
    return result;
}

static void test_linear(void) {
    test_begin("linear: GEMM vs naive, accumulation, finite differences");
    SpirtRng rng;
    rng_init(&rng, 11);
    LinearCase c = {5, 37, 11, NULL};
    size_t nx = c.B * c.C, nw = c.OC * c.C, ny = c.B * c.OC;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(c.OC * 4), *g = malloc(ny * 4);
    float *y = malloc(ny * 4), *y_naive = malloc(ny * 4);
    NnWorkspace workspace = {tensor_buffer_alloc(nn_linear_workspace_floats()), 1};
    fill_uniform(x, nx, &rng, -1, 1);
    fill_uniform(w, nw, &rng, -0.5, 0.5);
    fill_uniform(b, c.OC, &rng, -0.5, 0.5);
    fill_uniform(g, ny, &rng, -1, 1);
    nn_linear_forward(y, x, w, b, c.B, c.C, c.OC, &workspace);
    nn_linear_forward_naive(y_naive, x, w, b, c.B, c.C, c.OC);
    CHECK(test_max_relative_error(y, y_naive, ny) < 1e-5);

    /* Backward into buffers that already hold values: both versions must
     * add to them, and agree. */
    float *dx = malloc(nx * 4), *dw = malloc(nw * 4), *db = malloc(c.OC * 4);
    float *dx_naive = malloc(nx * 4), *dw_naive = malloc(nw * 4), *db_naive = malloc(c.OC * 4);
    fill_uniform(dx, nx, &rng, -1, 1);
    fill_uniform(dw, nw, &rng, -1, 1);
    fill_uniform(db, c.OC, &rng, -1, 1);
    memcpy(dx_naive, dx, nx * 4);
    memcpy(dw_naive, dw, nw * 4);
    memcpy(db_naive, db, c.OC * 4);
    nn_linear_backward(dx, dw, db, g, x, w, c.B, c.C, c.OC, &workspace);
    nn_linear_backward_naive(dx_naive, dw_naive, db_naive, g, x, w, c.B, c.C, c.OC);
    CHECK(test_max_relative_error(dx, dx_naive, nx) < 1e-5);
    CHECK(test_max_relative_error(dw, dw_naive, nw) < 1e-5);
    CHECK(test_max_relative_error(db, db_naive, c.OC) < 1e-5);

    /* Fresh gradients against finite differences of the double reference. */
    memset(dx, 0, nx * 4);
    memset(dw, 0, nw * 4);
    memset(db, 0, c.OC * 4);
    nn_linear_backward(dx, dw, db, g, x, w, c.B, c.C, c.OC, &workspace);
    c.g = to_double(g, ny);
    FdTensor tensors[3] = {{"inp", to_double(x, nx), nx, dx},
                           {"weight", to_double(w, nw), nw, dw},
                           {"bias", to_double(b, c.OC), c.OC, db}};
    check_gradients("linear", linear_objective, &c, tensors, 3, 60, &rng);
    /* A NULL dinp skips the input gradient and changes nothing else. */
    float before = dw[0];
    nn_linear_backward(NULL, dw, db, g, x, w, c.B, c.C, c.OC, &workspace);
    CHECK_NEAR(dw[0], 2 * before, 1e-5 * fabs(before) + 1e-7);
    for (int t = 0; t < 3; t++) free(tensors[t].values);
    free(c.g);
    free(x), free(w), free(b), free(g), free(y), free(y_naive);
    free(dx), free(dw), free(db), free(dx_naive), free(dw_naive), free(db_naive);
    tensor_buffer_free(workspace.data);
}

/* --- Convolution --- */

typedef struct ConvCase {
    NnConvShape shape;
    double *g; /* (B, OH, OW, OC): channels-last, like the kernels */
} ConvCase;

/* The reference works in NCHW: transpose each example on the way in and
 * back on the way out. */
static double conv_objective(void *context, const FdTensor *t) {
    ConvCase *c = context;
    const NnConvShape *s = &c->shape;
    size_t OH = nn_conv2d_out_height(s), OW = nn_conv2d_out_width(s);
    size_t nx = s->in_channels * s->batch * s->height * s->width, ny = s->out_channels * s->batch * OH * OW;
    double *x_nchw = malloc(nx * sizeof(double)), *y_nchw = malloc(ny * sizeof(double));
    double *y = malloc(ny * sizeof(double));
    nn_reference_nhwc_to_nchw(x_nchw, t[0].values, s->batch, s->height * s->width, s->in_channels);
    nn_reference_conv2d(y_nchw, x_nchw, t[1].values, t[2].values, s->batch, s->in_channels, s->out_channels,
                        s->height, s->width, s->kernel, s->padding);
    nn_reference_nchw_to_nhwc(y, y_nchw, s->batch, OH * OW, s->out_channels);
    double result = dot(c->g, y, ny);
    free(x_nchw), free(y_nchw), free(y);
    return result;
}

static void check_conv_case(const NnConvShape *shape, int finite_differences, SpirtRng *rng) {
    char what[128];
    snprintf(what, sizeof(what), "conv B=%zu C=%zu OC=%zu %zux%zu K=%zu P=%zu", shape->batch, shape->in_channels,
             shape->out_channels, shape->height, shape->width, shape->kernel, shape->padding);
    size_t OH = nn_conv2d_out_height(shape), OW = nn_conv2d_out_width(shape);
    size_t nx = shape->in_channels * shape->batch * shape->height * shape->width;
    size_t nw = shape->out_channels * shape->in_channels * shape->kernel * shape->kernel;
    size_t nb = shape->out_channels, ny = shape->out_channels * shape->batch * OH * OW;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(nb * 4), *g = malloc(ny * 4);
    float *y = malloc(ny * 4), *y_naive = malloc(ny * 4);
    NnWorkspace workspace = {tensor_buffer_alloc(nn_conv2d_workspace_floats(shape)), 1};
    fill_uniform(x, nx, rng, -1, 1);
    fill_uniform(w, nw, rng, -0.3, 0.3);
    fill_uniform(b, nb, rng, -0.3, 0.3);
    fill_uniform(g, ny, rng, -1, 1);
    nn_conv2d_forward(y, x, w, b, shape, &workspace);
    nn_conv2d_forward_naive(y_naive, x, w, b, shape);
    CHECKF(test_max_relative_error(y, y_naive, ny) < 1e-5, "%s: forward differs from naive by %.3g", what,
           test_max_relative_error(y, y_naive, ny));

    float *dx = calloc(nx, 4), *dw = calloc(nw, 4), *db = calloc(nb, 4);
    float *dx_naive = calloc(nx, 4), *dw_naive = calloc(nw, 4), *db_naive = calloc(nb, 4);
    /* Start from non-zero gradients: both must accumulate. */
    for (size_t i = 0; i < nw; i++) dw[i] = dw_naive[i] = 0.25f;
    for (size_t i = 0; i < nx; i++) dx[i] = dx_naive[i] = -0.5f;
    nn_conv2d_backward(dx, dw, db, g, x, w, shape, &workspace);
    nn_conv2d_backward_naive(dx_naive, dw_naive, db_naive, g, x, w, shape);
    double scale_x = max_abs(dx_naive, nx), scale_w = max_abs(dw_naive, nw), scale_b = max_abs(db_naive, nb);
    double err_x = 0, err_w = 0, err_b = 0;
    for (size_t i = 0; i < nx; i++) err_x = fmax(err_x, fabs(dx[i] - dx_naive[i]) / scale_x);
    for (size_t i = 0; i < nw; i++) err_w = fmax(err_w, fabs(dw[i] - dw_naive[i]) / scale_w);
    for (size_t i = 0; i < nb; i++) err_b = fmax(err_b, fabs(db[i] - db_naive[i]) / scale_b);
    CHECKF(err_x < 1e-5 && err_w < 1e-5 && err_b < 1e-5, "%s: backward differs from naive: dinp %.3g dweight %.3g dbias %.3g",
           what, err_x, err_w, err_b);

    if (finite_differences) {
        memset(dx, 0, nx * 4), memset(dw, 0, nw * 4), memset(db, 0, nb * 4);
        nn_conv2d_backward(dx, dw, db, g, x, w, shape, &workspace);
        ConvCase c = {*shape, to_double(g, ny)};
        FdTensor tensors[3] = {{"inp", to_double(x, nx), nx, dx},
                               {"weight", to_double(w, nw), nw, dw},
                               {"bias", to_double(b, nb), nb, db}};
        check_gradients(what, conv_objective, &c, tensors, 3, 40, rng);
        for (int t = 0; t < 3; t++) free(tensors[t].values);
        free(c.g);
    }
    free(x), free(w), free(b), free(g), free(y), free(y_naive);
    free(dx), free(dw), free(db), free(dx_naive), free(dw_naive), free(db_naive);
    tensor_buffer_free(workspace.data);
}

static void test_conv2d(void) {
    test_begin("conv2d: im2col+GEMM vs direct loops, finite differences");
    SpirtRng rng;
    rng_init(&rng, 12);
    NnConvShape small[] = {
        {3, 1, 4, 8, 8, 5, 2},  /* the cnn's first layer in miniature */
        {2, 3, 5, 7, 9, 3, 0},  /* no padding, non-square */
        {4, 2, 3, 6, 6, 3, 1},
        {2, 2, 2, 4, 5, 5, 3},  /* padding wider than needed: rows of pure padding */
    };
    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++) check_conv_case(&small[i], 1, &rng);
    /* Many examples and channel counts that are not whole vectors. */
    NnConvShape grouped = {70, 4, 3, 12, 12, 5, 2};
    check_conv_case(&grouped, 0, &rng);
    NnConvShape cnn_second = {5, 16, 32, 14, 14, 5, 2};
    check_conv_case(&cnn_second, 0, &rng);
}

/* --- ReLU, pooling, flatten --- */

typedef struct ElementCase {
    size_t n, planes, H, W; /* pooling: n images of H x W pixels of `planes` channels */
    double *g;
} ElementCase;

static double relu_objective(void *context, const FdTensor *t) {
    ElementCase *c = context;
    double *y = malloc(c->n * sizeof(double));
    memcpy(y, t[0].values, c->n * sizeof(double));
    nn_reference_relu(y, c->n);
    double result = dot(c->g, y, c->n);
    free(y);
    return result;
}

/* Pooling over (B, H, W, C) channels-last, through the NCHW reference. */
static double pool_objective(void *context, const FdTensor *t) {
    ElementCase *c = context;
    size_t planes = c->planes, S = c->H * c->W, OS = (c->H / 2) * (c->W / 2), B = c->n;
    double *x = malloc(B * planes * S * sizeof(double)), *y = malloc(B * planes * OS * sizeof(double));
    double *y_nhwc = malloc(B * planes * OS * sizeof(double));
    nn_reference_nhwc_to_nchw(x, t[0].values, B, S, planes);
    nn_reference_maxpool2x2(y, x, B * planes, c->H, c->W);
    nn_reference_nchw_to_nhwc(y_nhwc, y, B, OS, planes);
    double result = dot(c->g, y_nhwc, B * planes * OS);
    free(x), free(y), free(y_nhwc);
    return result;
}

static void test_relu_and_pool(void) {
    test_begin("relu and max-pool: finite differences, zero and ties");
    SpirtRng rng;
    rng_init(&rng, 13);
    enum { N = 300 };
    float x[N], y[N], g[N], dx[N];
    fill_uniform(x, N, &rng, -1, 1);
    fill_uniform(g, N, &rng, -1, 1);
    nn_relu_forward(y, x, N);
    memset(dx, 0, sizeof(dx));
    nn_relu_backward(dx, g, y, N);
    ElementCase relu = {N, 0, 0, 0, to_double(g, N)};
    FdTensor relu_input = {"inp", to_double(x, N), N, dx};
    check_gradients("relu", relu_objective, &relu, &relu_input, 1, N, &rng);
    free(relu.g), free(relu_input.values);
    /* At exactly 0 the derivative is taken as 0. */
    float zero = 0.0f, zero_out, one = 1.0f, dzero = 0.0f;
    nn_relu_forward(&zero_out, &zero, 1);
    nn_relu_backward(&dzero, &one, &zero_out, 1);
    CHECK(zero_out == 0.0f && dzero == 0.0f);

    /* 2 images of 5x6 pixels, 3 channels: the odd last row is dropped. */
    enum { PB = 2, H = 5, W = 6, PC = 3, NX = PB * H * W * PC, NY = PB * 2 * 3 * PC };
    float px[NX], py[NY], pg[NY], pdx[NX];
    fill_uniform(px, NX, &rng, -1, 1);
    fill_uniform(pg, NY, &rng, -1, 1);
    nn_maxpool2x2_forward(py, px, PB, H, W, PC);
    int same = 1;
    for (int b = 0; b < PB; b++)
        for (int row = 0; row < 2; row++)
            for (int column = 0; column < 3; column++)
                for (int c = 0; c < PC; c++) {
                    float best = -INFINITY;
                    for (int i = 0; i < 2; i++)
                        for (int j = 0; j < 2; j++)
                            best = fmaxf(best, px[((b * H + 2 * row + i) * W + 2 * column + j) * PC + c]);
                    same &= py[((b * 2 + row) * 3 + column) * PC + c] == best;
                }
    CHECK(same);
    memset(pdx, 0, sizeof(pdx));
    nn_maxpool2x2_backward(pdx, pg, px, PB, H, W, PC);
    int dropped_row_untouched = 1;
    for (int b = 0; b < PB; b++)
        for (int j = 0; j < W * PC; j++) dropped_row_untouched &= pdx[(b * H + 4) * W * PC + j] == 0.0f;
    CHECK(dropped_row_untouched);
    ElementCase pool = {PB, PC, H, W, to_double(pg, NY)};
    FdTensor pool_input = {"inp", to_double(px, NX), NX, pdx};
    check_gradients("maxpool", pool_objective, &pool, &pool_input, 1, NX, &rng);
    free(pool.g), free(pool_input.values);

    /* A tie: the gradient goes to the first maximum, once. */
    float tie[4] = {2, 2, 2, 2}, tie_out, tie_grad = 1.0f, dtie[4] = {0};
    nn_maxpool2x2_forward(&tie_out, tie, 1, 2, 2, 1);
    nn_maxpool2x2_backward(dtie, &tie_grad, tie, 1, 2, 2, 1);
    CHECK(tie_out == 2 && dtie[0] == 1 && dtie[1] == 0 && dtie[2] == 0 && dtie[3] == 0);
}

static void test_flatten(void) {
    test_begin("flatten: the (B, S, C) -> (B, C*S) transpose and its adjoint");
    enum { B = 3, S = 5, C = 4, N = B * S * C };
    float x[N], y[N], d[N], dx[N];
    for (int i = 0; i < N; i++) x[i] = (float)i;
    nn_flatten_forward(y, x, B, S, C);
    int placed = 1;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            for (int c = 0; c < C; c++) placed &= y[b * C * S + c * S + s] == x[(b * S + s) * C + c];
    CHECK(placed);
    /* <flatten(x), d> = <x, flatten_backward(d)> for a linear map. */
    SpirtRng rng;
    rng_init(&rng, 14);
    fill_uniform(x, N, &rng, -1, 1);
    fill_uniform(d, N, &rng, -1, 1);
    nn_flatten_forward(y, x, B, S, C);
    memset(dx, 0, sizeof(dx));
    nn_flatten_backward(dx, d, B, S, C);
    double left = 0, right = 0;
    for (int i = 0; i < N; i++) left += (double)y[i] * d[i], right += (double)x[i] * dx[i];
    CHECK_NEAR(left, right, 1e-5);
}

/* --- Softmax cross-entropy --- */

typedef struct XentCase {
    size_t B, K;
    const uint8_t *labels;
} XentCase;

static double xent_objective(void *context, const FdTensor *t) {
    XentCase *c = context;
    return nn_reference_softmax_xent(t[0].values, c->labels, c->B, c->K);
}

static void test_softmax_xent(void) {
    test_begin("softmax cross-entropy: known values, extremes, finite differences");
    /* Known values: uniform scores give log K; log(e + e^2 + e^3) - 3 =
     * 0.40760596444438; huge scores neither overflow nor underflow. */
    float logits[5 * 3] = {0, 0, 0, 1, 2, 3, 1000, 0, -1000, 1000, 0, -1000, -1000, -1000, -1000};
    uint8_t labels[5] = {1, 2, 0, 1, 2};
    float losses[5], probs[15];
    nn_softmax_xent_forward(losses, probs, logits, labels, 5, 3);
    CHECK_NEAR(losses[0], log(3.0), 1e-6);
    CHECK_NEAR(losses[1], 0.40760596444438, 1e-6);
    CHECK_NEAR(losses[2], 0.0, 1e-6);
    CHECK_NEAR(losses[3], 1000.0, 1e-3);
    CHECK_NEAR(losses[4], log(3.0), 1e-6);
    for (int b = 0; b < 5; b++) CHECK_NEAR(probs[3 * b] + probs[3 * b + 1] + probs[3 * b + 2], 1.0, 1e-6);
    CHECK_NEAR(probs[3], exp(1.0) / (exp(1.0) + exp(2.0) + exp(3.0)), 1e-7);

    SpirtRng rng;
    rng_init(&rng, 15);
    enum { B = 6, K = 10 };
    float x[B * K], p[B * K], l[B], dx[B * K] = {0};
    uint8_t y[B] = {0, 3, 9, 9, 5, 1};
    fill_uniform(x, B * K, &rng, -4, 4);
    nn_softmax_xent_forward(l, p, x, y, B, K);
    nn_softmax_xent_backward(dx, p, y, 1.0f / B, B, K);
    XentCase c = {B, K, y};
    FdTensor input = {"logits", to_double(x, B * K), B * K, dx};
    check_gradients("softmax-xent", xent_objective, &c, &input, 1, B * K, &rng);
    double mean = 0;
    for (int b = 0; b < B; b++) mean += l[b] / B;
    CHECK_NEAR(mean, nn_reference_softmax_xent(input.values, y, B, K), 1e-6);
    free(input.values);
}

/* --- Models --- */

typedef struct ModelCase {
    NnModelKind kind;
    const double *params; /* the whole vector; the checked tensor is a window of it */
    const float *images;
    const uint8_t *labels;
    size_t batch;
} ModelCase;

static double model_objective(void *context, const FdTensor *t) {
    (void)t; /* a window of c->params, perturbed in place */
    ModelCase *c = context;
    return nn_reference_model_loss(c->kind, c->params, c->images, c->labels, c->batch);
}

static void test_layouts(void) {
    test_begin("model layouts: the documented table, contiguous views, JSON");
    SpirtError error;
    /* The counts nn.h documents, by hand: 784*10+10; 784*256+256 +
     * 256*128+128 + 128*10+10; 16*25+16 + 32*16*25+32 + 128*1568+128 + 128*10+10. */
    const size_t documented[NN_MODEL_KIND_COUNT] = {7850, 235146, 215370};
    const char *first_view[NN_MODEL_KIND_COUNT] = {"fc.weight", "fc1.weight", "conv1.weight"};
    for (int k = 0; k < NN_MODEL_KIND_COUNT; k++) {
        NnModel *model = nn_model_create((NnModelKind)k, 4, &error);
        CHECKF(model != NULL, "%s", error.message);
        if (model == NULL) continue;
        CHECK(nn_model_param_count(model) == documented[k]);
        CHECK(nn_model_kind_param_count((NnModelKind)k) == documented[k]);
        NnModelKind found;
        CHECK(nn_model_kind_from_param_count(documented[k], &found, &error) == SPIRT_OK && found == (NnModelKind)k);
        size_t count = 0, next = 0;
        const NnView *views = nn_model_views(model, &count);
        CHECK(count >= 2 && count <= NN_MAX_VIEWS && strcmp(views[0].name, first_view[k]) == 0);
        int contiguous = 1;
        for (size_t v = 0; v < count; v++) {
            size_t product = 1;
            for (uint32_t d = 0; d < views[v].ndim; d++) product *= views[v].dims[d];
            contiguous &= views[v].offset == next && views[v].count == product;
            next += views[v].count;
        }
        CHECK(contiguous && next == documented[k]);

        char *text = nn_model_layout_json(model);
        json_error_t parse_error;
        json_t *layout = text ? json_loads(text, 0, &parse_error) : NULL;
        CHECKF(layout != NULL, "layout JSON does not parse: %s", text ? text : "(null)");
        if (layout) {
            CHECK(strcmp(json_string_value(json_object_get(layout, "model")), nn_model_kind_name((NnModelKind)k)) == 0);
            CHECK((size_t)json_integer_value(json_object_get(layout, "param_count")) == documented[k]);
            json_t *json_views = json_object_get(layout, "views");
            CHECK(json_array_size(json_views) == count);
            json_t *last = json_array_get(json_views, count - 1);
            CHECK((size_t)json_integer_value(json_object_get(last, "offset")) == views[count - 1].offset);
            CHECK(strcmp(json_string_value(json_object_get(last, "name")), views[count - 1].name) == 0);
            CHECK(json_array_size(json_object_get(last, "shape")) == views[count - 1].ndim);
            json_decref(layout);
        }
        free(text);
        nn_model_free(model);
    }
    NnModelKind kind;
    CHECK_ERROR(nn_model_kind_from_param_count(1234, &kind, &error), SPIRT_ERR_SHAPE, &error, "1234");
    CHECK(nn_model_kind_parse("cnn", &kind, &error) == SPIRT_OK && kind == NN_CNN);
    CHECK_ERROR(nn_model_kind_parse("resnet", &kind, &error), SPIRT_ERR_INVALID, &error, "resnet");
}

static void check_model_gradients(NnModelKind kind, size_t batch, size_t samples) {
    char what[64];
    snprintf(what, sizeof(what), "%s model", nn_model_kind_name(kind));
    SpirtError error;
    SpirtRng rng;
    rng_init(&rng, 100 + (uint64_t)kind);
    /* max_batch above the batch: a batch uses the front of each region. */
    NnModel *model = nn_model_create(kind, batch + 2, &error);
    NnModel *tight = nn_model_create(kind, batch, &error);
    CHECKF(model && tight, "%s", error.message);
    if (!model || !tight) return;
    nn_model_init_params(model, 7);
    size_t n = nn_model_param_count(model);
    float *images = malloc(batch * NN_INPUT_FEATURES * sizeof(float));
    uint8_t labels[16];
    fill_uniform(images, batch * NN_INPUT_FEATURES, &rng, 0, 1);
    for (size_t b = 0; b < batch; b++) labels[b] = (uint8_t)rng_below(&rng, NN_CLASSES);

    float loss = -1;
    size_t correct = 99;
    CHECK_OK(nn_model_forward(model, images, labels, batch, &loss, &correct, &error), &error);
    CHECK_OK(nn_model_backward(model, &error), &error);
    double *params = to_double(nn_model_params(model), n);
    double reference = nn_reference_model_loss(kind, params, images, labels, batch);
    CHECKF(fabs(loss - reference) <= 1e-5 * fabs(reference) + 1e-6, "%s: loss %.9g, reference %.9g", what, loss,
           reference);
    CHECK(correct <= batch);

    /* Every view, sampled, against the double reference's derivative. */
    float *grads = nn_model_grads(model);
    ModelCase c = {kind, params, images, labels, batch};
    size_t view_count;
    const NnView *views = nn_model_views(model, &view_count);
    for (size_t v = 0; v < view_count; v++) {
        FdTensor view = {views[v].name, params + views[v].offset, views[v].count, grads + views[v].offset};
        check_gradients(what, model_objective, &c, &view, 1, samples, &rng);
    }

    /* Backward accumulates: a second backward doubles the gradient (up to
     * rounding: sgemm adds its partial products into the old values). */
    float *first = malloc(n * sizeof(float));
    memcpy(first, grads, n * sizeof(float));
    CHECK_OK(nn_model_backward(model, &error), &error);
    double scale = max_abs(first, n), worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(grads[i] - 2 * first[i]) / scale);
    CHECKF(worst < 1e-6, "%s: second backward is not twice the first (%.3g)", what, worst);

    /* The same batch through a model sized exactly for it: the same bits. */
    CHECK_OK(nn_model_load_params(tight, nn_model_params(model), n, &error), &error);
    float tight_loss;
    CHECK_OK(nn_model_forward(tight, images, labels, batch, &tight_loss, NULL, &error), &error);
    CHECK_OK(nn_model_backward(tight, &error), &error);
    CHECK(tight_loss == loss);
    CHECK(memcmp(nn_model_grads(tight), first, n * sizeof(float)) == 0);

    free(first);
    free(params);
    free(images);
    nn_model_free(model);
    nn_model_free(tight);
}

static void test_model_gradients(void) {
    test_begin("models: loss and gradients against the double reference");
    check_model_gradients(NN_LOGREG, 5, 12);
    check_model_gradients(NN_MLP, 4, 10);
    check_model_gradients(NN_CNN, 3, 8);
}

static void test_init(void) {
    test_begin("initialisation: reproducible, seeded, PyTorch's bounds");
    SpirtError error;
    NnModel *a = nn_model_create(NN_CNN, 2, &error), *b = nn_model_create(NN_CNN, 2, &error);
    CHECKF(a && b, "%s", error.message);
    if (!a || !b) return;
    size_t n = nn_model_param_count(a);
    char digest_a[SPIRT_DIGEST_HEX_SIZE], digest_b[SPIRT_DIGEST_HEX_SIZE], digest_c[SPIRT_DIGEST_HEX_SIZE];
    nn_model_grads(a)[5] = 3.0f;
    nn_model_init_params(a, 1);
    nn_model_init_params(b, 1);
    tensor_digest_hex(nn_model_params(a), n, digest_a);
    tensor_digest_hex(nn_model_params(b), n, digest_b);
    CHECK(strcmp(digest_a, digest_b) == 0);
    CHECK(nn_model_grads(a)[5] == 0.0f);
    nn_model_init_params(b, 2);
    tensor_digest_hex(nn_model_params(b), n, digest_c);
    CHECK(strcmp(digest_a, digest_c) != 0);

    /* Every view inside +-1/sqrt(fan_in), with the uniform's variance
     * bound^2 / 3 on the large ones (4 standard errors). */
    size_t count;
    const NnView *views = nn_model_views(a, &count);
    const float *params = nn_model_params(a);
    for (size_t v = 0; v < count; v++) {
        /* A bias shares its weight's fan-in: weight dims after the first. */
        const NnView *weight = views[v].ndim == 1 ? &views[v - 1] : &views[v];
        size_t fan_in = weight->count / weight->dims[0];
        double bound = 1.0 / sqrt((double)fan_in), sum_squares = 0;
        int inside = 1;
        for (size_t i = 0; i < views[v].count; i++) {
            double x = params[views[v].offset + i];
            inside &= fabs(x) <= bound;
            sum_squares += x * x;
        }
        CHECKF(inside, "%s outside +-%.4g", views[v].name, bound);
        if (views[v].count >= 10000) {
            double variance = sum_squares / views[v].count, expected = bound * bound / 3;
            CHECK_NEAR(variance / expected, 1.0, 4 * sqrt(0.8 / views[v].count));
        }
    }
    nn_model_free(a);
    nn_model_free(b);
}

static void test_bad_input(void) {
    test_begin("bad input: clear errors, nothing changed");
    SpirtError error;
    CHECK(nn_model_create(NN_MLP, 0, &error) == NULL && error.code == SPIRT_ERR_INVALID);
    CHECK(nn_model_create(NN_MLP, 1u << 20, &error) == NULL && strstr(error.message, "out of range"));
    CHECK(nn_model_create((NnModelKind)7, 4, &error) == NULL && error.code == SPIRT_ERR_INVALID);
    NnModel *model = nn_model_create(NN_MLP, 4, &error);
    if (model == NULL) return;
    nn_model_init_params(model, 3);
    size_t n = nn_model_param_count(model);
    float images[4 * NN_INPUT_FEATURES] = {0};
    uint8_t labels[4] = {1, 2, 3, 10};
    CHECK_ERROR(nn_model_backward(model, &error), SPIRT_ERR_PRECONDITION, &error, "forward");
    CHECK_ERROR(nn_model_forward(model, images, labels, 0, NULL, NULL, &error), SPIRT_ERR_INVALID, &error, "batch");
    CHECK_ERROR(nn_model_forward(model, images, labels, 5, NULL, NULL, &error), SPIRT_ERR_INVALID, &error, "1 to 4");
    CHECK_ERROR(nn_model_forward(model, images, labels, 4, NULL, NULL, &error), SPIRT_ERR_INVALID, &error,
                "label 10");
    CHECK_ERROR(nn_model_forward(model, NULL, labels, 2, NULL, NULL, &error), SPIRT_ERR_INVALID, &error, "images");
    /* Inference only: no backward may follow. */
    CHECK_OK(nn_model_forward(model, images, NULL, 3, NULL, NULL, &error), &error);
    CHECK_ERROR(nn_model_backward(model, &error), SPIRT_ERR_PRECONDITION, &error, "labels");

    char before[SPIRT_DIGEST_HEX_SIZE], after[SPIRT_DIGEST_HEX_SIZE];
    tensor_digest_hex(nn_model_params(model), n, before);
    float *values = malloc(n * sizeof(float));
    memcpy(values, nn_model_params(model), n * sizeof(float));
    values[1000] = 9.0f;
    values[n - 1] = NAN;
    CHECK_ERROR(nn_model_load_params(model, values, n, &error), SPIRT_ERR_NONFINITE, &error, "parameter 235145");
    CHECK_ERROR(nn_model_load_params(model, values, n - 1, &error), SPIRT_ERR_SHAPE, &error, "235146");
    tensor_digest_hex(nn_model_params(model), n, after);
    CHECK(strcmp(before, after) == 0);
    CHECK_ERROR(nn_model_evaluate(model, images, labels, 0, NULL, NULL, &error), SPIRT_ERR_INVALID, &error, "0");
    CHECK_ERROR(nn_model_evaluate(model, images, labels, 4, NULL, NULL, &error), SPIRT_ERR_INVALID, &error,
                "label 10");
    free(values);
    nn_model_free(model);
}

static void test_evaluate_and_predict(void) {
    test_begin("evaluate and predict agree with forward, in any batching");
    SpirtError error;
    SpirtRng rng;
    rng_init(&rng, 16);
    enum { COUNT = 11 };
    float *images = malloc(COUNT * NN_INPUT_FEATURES * sizeof(float));
    uint8_t labels[COUNT], predictions[COUNT];
    fill_uniform(images, COUNT * NN_INPUT_FEATURES, &rng, 0, 1);
    for (int i = 0; i < COUNT; i++) labels[i] = (uint8_t)rng_below(&rng, NN_CLASSES);
    NnModel *small = nn_model_create(NN_CNN, 4, &error), *large = nn_model_create(NN_CNN, COUNT, &error);
    if (!small || !large) return;
    nn_model_init_params(small, 9);
    nn_model_init_params(large, 9);
    double loss_small, loss_large;
    size_t correct_small, correct_large;
    CHECK_OK(nn_model_evaluate(small, images, labels, COUNT, &loss_small, &correct_small, &error), &error);
    CHECK_OK(nn_model_evaluate(large, images, labels, COUNT, &loss_large, &correct_large, &error), &error);
    CHECK_NEAR(loss_small, loss_large, 1e-6 * loss_large);
    CHECK(correct_small == correct_large);
    CHECK_OK(nn_model_predict(small, images, COUNT, predictions, &error), &error);
    size_t agree = 0;
    for (int i = 0; i < COUNT; i++) agree += predictions[i] == labels[i];
    CHECK(agree == correct_small);
    /* The mean over examples of the reference loss, in double. */
    size_t n = nn_model_param_count(large);
    double *params = to_double(nn_model_params(large), n);
    CHECK_NEAR(loss_large, nn_reference_model_loss(NN_CNN, params, images, labels, COUNT), 1e-5);
    CHECK_ERROR(nn_model_backward(large, &error), SPIRT_ERR_PRECONDITION, &error, "forward");
    free(params);
    free(images);
    nn_model_free(small);
    nn_model_free(large);
}

int main(void) {
    test_gemm();
    test_conv_gemm();
    test_linear();
    test_conv2d();
    test_relu_and_pool();
    test_flatten();
    test_softmax_xent();
    test_layouts();
    test_model_gradients();
    test_init();
    test_bad_input();
    test_evaluate_and_predict();
    return test_finish();
}
