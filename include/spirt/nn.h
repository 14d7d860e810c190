/* nn.h -- the neural-network engine: three small image classifiers over ONE
 * flat parameter vector.
 *
 * Models (input: 28x28 grey images as 784 floats, output: 10 class scores):
 *   logreg  linear 784 -> 10
 *   mlp     linear 784 -> 256, ReLU, linear 256 -> 128, ReLU, linear 128 -> 10
 *   cnn     conv 5x5 1 -> 16 (padding 2), ReLU, max-pool 2x2,
 *           conv 5x5 16 -> 32 (padding 2), ReLU, max-pool 2x2,
 *           flatten (32 x 7 x 7), linear 1568 -> 128, ReLU, linear 128 -> 10
 * The loss is softmax cross-entropy, averaged over the batch.
 *
 * All parameters live in ONE float32 vector and all gradients in another of
 * the same length and layout, so a model travels to a database (and to a
 * file) as one tensor. The layout is a table of named views, in this order,
 * each stored row-major with PyTorch's shapes and names:
 *
 *   logreg (7,850):    fc.weight (10, 784)      fc.bias (10)
 *   mlp (235,146):     fc1.weight (256, 784)    fc1.bias (256)
 *                      fc2.weight (128, 256)    fc2.bias (128)
 *                      fc3.weight (10, 128)     fc3.bias (10)
 *   cnn (215,370):     conv1.weight (16, 1, 5, 5)   conv1.bias (16)
 *                      conv2.weight (32, 16, 5, 5)  conv2.bias (32)
 *                      fc1.weight (128, 1568)       fc1.bias (128)
 *                      fc2.weight (10, 128)         fc2.bias (10)
 *
 * nn_model_views() returns the table with offsets; nn_model_layout_json()
 * the same as JSON for files and databases. fc1's input in the cnn is the
 * flattened (channel, row, column) feature map, as torch.flatten gives it.
 *
 * A step, as a stateless gradient function runs it:
 *
 *     NnModel *model = nn_model_create(NN_MLP, 64, &error);
 *     nn_model_load_params(model, params_from_db, count, &error);
 *     nn_model_zero_grads(model);
 *     nn_model_forward(model, images, labels, 64, &loss, &correct, &error);
 *     nn_model_backward(model, &error);
 *     ... write nn_model_grads(model) (nn_model_param_count floats) back ...
 *     nn_model_free(model);
 *
 * Backward ACCUMULATES into the gradient vector (as every layer's backward
 * does): zero it first for a fresh gradient, or not, to sum several batches.
 *
 * Threads: every kernel runs on the calling thread except the matrix
 * products, which split their output tiles over nn_model_set_threads()
 * threads (default 1; started per product with parallel_for, so an idle
 * model holds no threads). The products are the engine's own (src/nn/gemm.c,
 * conv_gemm.c), not OpenBLAS: Debian's OpenBLAS does not recognise recent
 * Xeons and falls back to SSE3 kernels there, 3-5x slower; see gemm.h. An
 * NnModel is not thread-safe: give each thread its own (they are cheap:
 * params, grads and activations).
 *
 * Determinism: the same parameters and batch give bit-identical loss and
 * gradients on the same build and machine, whatever the thread count or
 * max_batch: every sum is taken in an order fixed by the model alone.
 * Builds for different vector widths (simd.h) differ in the last bits.
 * nn does no I/O. */
#ifndef SPIRT_NN_H
#define SPIRT_NN_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h" /* SpirtError */

#ifdef __cplusplus
extern "C" {
#endif

#define NN_INPUT_ROWS 28
#define NN_INPUT_COLS 28
#define NN_INPUT_FEATURES (NN_INPUT_ROWS * NN_INPUT_COLS)
#define NN_CLASSES 10
/* The cnn's widths (the choice is argued in src/nn/model.c). */
#define NN_CNN_CONV1_CHANNELS 16
#define NN_CNN_CONV2_CHANNELS 32
#define NN_CNN_HIDDEN 128
#define NN_CNN_KERNEL 5
/* Views per model: at most 8 (the cnn's). */
#define NN_MAX_VIEWS 8

typedef enum NnModelKind { NN_LOGREG = 0, NN_MLP = 1, NN_CNN = 2, NN_MODEL_KIND_COUNT } NnModelKind;

/* One named slice of the parameter (and gradient) vector. */
typedef struct NnView {
    const char *name;  /* "fc1.weight": static storage */
    size_t offset;     /* first float in the vector */
    size_t count;      /* floats: the product of dims */
    uint32_t ndim;     /* 1, 2 or 4 */
    size_t dims[4];    /* row-major shape; unused dims are 0 */
} NnView;

typedef struct NnModel NnModel;

/* "logreg", "mlp" or "cnn"; SPIRT_ERR_INVALID (listing them) otherwise. */
int nn_model_kind_parse(const char *name, NnModelKind *kind, SpirtError *error);
const char *nn_model_kind_name(NnModelKind kind);
/* Parameters of a model of this kind, without building one. */
size_t nn_model_kind_param_count(NnModelKind kind);
/* The kind whose parameter count is `count` (the three differ), for files
 * that carry only the vector. SPIRT_ERR_SHAPE if none matches. */
int nn_model_kind_from_param_count(size_t count, NnModelKind *kind, SpirtError *error);

/* A new model with room for batches of up to max_batch examples (1 to
 * 65536). Parameters and gradients start at zero: call nn_model_init_params
 * or nn_model_load_params. The caller owns it: nn_model_free. */
NnModel *nn_model_create(NnModelKind kind, size_t max_batch, SpirtError *error);
void nn_model_free(NnModel *model); /* NULL is allowed */

NnModelKind nn_model_kind(const NnModel *model);
size_t nn_model_max_batch(const NnModel *model);
size_t nn_model_param_count(const NnModel *model);
/* The flat vectors, nn_model_param_count floats each, 64-byte aligned,
 * borrowed: they live as long as the model. Writing the parameters directly
 * is allowed (e.g. an optimizer step). */
float *nn_model_params(NnModel *model);
float *nn_model_grads(NnModel *model);
/* The layout table: *count views (borrowed, static per kind). */
const NnView *nn_model_views(const NnModel *model, size_t *count);

/* Threads this model's matrix products may use (>= 1; default 1). More
 * threads do not change any result bit: they split a product by output
 * tiles, never along the summed dimension. */
void nn_model_set_threads(NnModel *model, int threads);

/* PyTorch's default initialisation, drawn from rng_init_stream(seed,
 * NN_INIT_STREAM) in view order: every weight and bias of a layer with
 * fan_in inputs (in features, or in_channels * k * k) is uniform in
 * [-1/sqrt(fan_in), 1/sqrt(fan_in)). Same seed, same bits. Zeroes the grads. */
#define NN_INIT_STREAM 0x6e6e /* "nn" */
void nn_model_init_params(NnModel *model, uint64_t seed);
/* Copies `count` values into the parameters after checking the count and
 * that every value is finite (the vector is untouched otherwise). */
int nn_model_load_params(NnModel *model, const float *values, size_t count, SpirtError *error);
void nn_model_zero_grads(NnModel *model);

/* Runs the model on `batch` images (batch x 784 floats, row-major; copied,
 * so the caller's buffer may change afterwards). With labels (batch values,
 * each < 10): *loss gets the mean cross-entropy and *correct the number of
 * examples whose highest score is the label, and a backward may follow.
 * labels may be NULL (inference only); loss and correct may be NULL.
 * SPIRT_ERR_INVALID for batch 0 or > max_batch, or a label >= 10. */
int nn_model_forward(NnModel *model, const float *images, const uint8_t *labels, size_t batch, float *loss,
                     size_t *correct, SpirtError *error);
/* Adds the gradient of the last forward's mean loss to the gradient vector.
 * SPIRT_ERR_PRECONDITION unless the last forward had labels. */
int nn_model_backward(NnModel *model, SpirtError *error);
/* The last forward's class scores (batch x 10, before softmax), borrowed
 * until the next forward. */
const float *nn_model_logits(const NnModel *model);

/* The predicted class of each of `count` images (any count: it runs batches
 * of max_batch). */
int nn_model_predict(NnModel *model, const float *images, size_t count, uint8_t *predictions, SpirtError *error);
/* Mean loss and number correct over `count` labelled images, in batches of
 * max_batch; the loss is summed in double, so it does not depend on the
 * batching beyond float rounding of each example. */
int nn_model_evaluate(NnModel *model, const float *images, const uint8_t *labels, size_t count, double *mean_loss,
                      size_t *correct, SpirtError *error);

/* The layout as one JSON object, e.g.
 *   {"model":"mlp","param_count":235146,"dtype":"float32-le","views":[
 *     {"name":"fc1.weight","offset":0,"count":200704,"shape":[256,784]},...]}
 * A new NUL-terminated string the caller frees with free(); NULL on OOM. */
char *nn_model_layout_json(const NnModel *model);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_NN_H */
