/* model.c -- the three models as layer lists over one parameter slab
 * (see include/spirt/nn.h).
 *
 * A model is built by appending layers to an Architecture, which assigns
 * each layer its parameter views (consecutive offsets in ONE vector, in
 * order) and its output activation region (consecutive regions in ONE
 * activation slab). Grads mirror params; grad_acts mirror acts. Forward runs
 * the list front to back, backward back to front; neither allocates.
 *
 * Activation slab, for max_batch examples, region by region:
 *   [input (B, 784)] [layer 0 output] ... [last layer output = logits (B, 10)]
 *   [probs (B, 10)] [losses (B)]
 * A region's offset is its per-example offset times max_batch; a batch of
 * B <= max_batch uses the first B * size floats of each region.
 *
 * The cnn's widths (16 and 32 channels, 128 hidden; 215,370 parameters):
 * it reaches the 0.90 test accuracy target in 5 epochs with room to spare
 * (0.913 with seed 1; docs/architecture.md has the figures) at ~3 M
 * multiply-adds per example forward, a quarter of 32/64 channels' ~11 M.
 * Training runs in the peers' stateless functions many times per round on
 * shared cores, so a model 3-4x cheaper that meets the target wins. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layers.h"
#include "spirt/nn.h"
#include "spirt/rng.h"
#include "spirt/tensor.h" /* tensor_buffer_alloc, tensor_all_finite */

enum { MAX_LAYERS = 16, MAX_BATCH_LIMIT = 65536 };

typedef enum LayerKind { LAYER_LINEAR, LAYER_CONV, LAYER_RELU, LAYER_MAXPOOL, LAYER_FLATTEN } LayerKind;

typedef struct Layer {
    LayerKind kind;
    size_t in_size, out_size;      /* floats per example, in and out */
    size_t channels, height, width; /* the input feature map (conv, pool, flatten) */
    size_t out_channels;           /* conv */
    size_t kernel, padding;        /* conv */
    size_t weight, bias;           /* parameter offsets (linear, conv) */
    size_t input, output;          /* per-example offsets of the activation regions */
} Layer;

/* A model's shape: what nn_model_create needs to allocate and run it. */
typedef struct Architecture {
    Layer layers[MAX_LAYERS];
    size_t layer_count;
    NnView views[NN_MAX_VIEWS];
    size_t view_count;
    size_t param_count;
    size_t activation_size; /* per example, all regions */
    size_t probs, losses;   /* per-example offsets of the loss's regions */
    /* The shape flowing out of the last layer added: a feature map
     * (channels x height x width, spatial = 1) or a vector of features. */
    int spatial;
    size_t channels, height, width, features;
    size_t current; /* per-example offset of that output's region */
} Architecture;

struct NnModel {
    NnModelKind kind;
    Architecture architecture;
    size_t max_batch;
    int threads;               /* threads for this model's matrix products */
    float *params, *grads;     /* param_count each */
    float *acts, *grad_acts;   /* activation_size * max_batch each */
    float *workspace;          /* the matrix products' scratch (NnWorkspace) */
    uint8_t *labels;           /* max_batch: the last forward's labels */
    size_t batch;              /* examples in the last forward (0: none yet) */
    int backward_ready;        /* the last forward had labels */
};

static const char *const kind_names[NN_MODEL_KIND_COUNT] = {"logreg", "mlp", "cnn"};

/* --- Building the layer list --- */

static size_t add_region(Architecture *a, size_t size) {
    size_t offset = a->activation_size;
    a->activation_size += size;
    return offset;
}

static void add_view(Architecture *a, const char *name, uint32_t ndim, const size_t *dims) {
    NnView *view = &a->views[a->view_count++];
    memset(view, 0, sizeof(*view));
    view->name = name;
    view->offset = a->param_count;
    view->ndim = ndim;
    view->count = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        view->dims[i] = dims[i];
        view->count *= dims[i];
    }
    a->param_count += view->count;
}

static Layer *add_layer(Architecture *a, LayerKind kind, size_t out_size) {
    Layer *layer = &a->layers[a->layer_count++];
    memset(layer, 0, sizeof(*layer));
    layer->kind = kind;
    layer->in_size = a->spatial ? a->channels * a->height * a->width : a->features;
    layer->out_size = out_size;
    layer->channels = a->channels;
    layer->height = a->height;
    layer->width = a->width;
    layer->input = a->current;
    layer->output = add_region(a, out_size);
    a->current = layer->output;
    return layer;
}

static void add_linear(Architecture *a, const char *weight_name, const char *bias_name, size_t out_features) {
    size_t in_features = a->features;
    Layer *layer = add_layer(a, LAYER_LINEAR, out_features);
    layer->weight = a->param_count;
    add_view(a, weight_name, 2, (size_t[]){out_features, in_features});
    layer->bias = a->param_count;
    add_view(a, bias_name, 1, (size_t[]){out_features});
    a->features = out_features;
}

static void add_conv(Architecture *a, const char *weight_name, const char *bias_name, size_t out_channels,
                     size_t kernel, size_t padding) {
    NnConvShape shape = {1, a->channels, out_channels, a->height, a->width, kernel, padding};
    size_t OH = nn_conv2d_out_height(&shape), OW = nn_conv2d_out_width(&shape);
    Layer *layer = add_layer(a, LAYER_CONV, out_channels * OH * OW);
    layer->out_channels = out_channels;
    layer->kernel = kernel;
    layer->padding = padding;
    layer->weight = a->param_count;
    add_view(a, weight_name, 4, (size_t[]){out_channels, a->channels, kernel, kernel});
    layer->bias = a->param_count;
    add_view(a, bias_name, 1, (size_t[]){out_channels});
    a->channels = out_channels;
    a->height = OH;
    a->width = OW;
}

static void add_relu(Architecture *a) {
    add_layer(a, LAYER_RELU, a->spatial ? a->channels * a->height * a->width : a->features);
}

static void add_maxpool(Architecture *a) {
    add_layer(a, LAYER_MAXPOOL, a->channels * (a->height / 2) * (a->width / 2));
    a->height /= 2;
    a->width /= 2;
}

static void add_flatten(Architecture *a) {
    add_layer(a, LAYER_FLATTEN, a->channels * a->height * a->width);
    a->features = a->channels * a->height * a->width;
    a->spatial = 0;
}

static void build_architecture(NnModelKind kind, Architecture *a) {
    memset(a, 0, sizeof(*a));
    a->current = add_region(a, NN_INPUT_FEATURES); /* the input images */
    a->features = NN_INPUT_FEATURES;
    switch (kind) {
    case NN_LOGREG:
        add_linear(a, "fc.weight", "fc.bias", NN_CLASSES);
        break;
    case NN_MLP:
        add_linear(a, "fc1.weight", "fc1.bias", 256);
        add_relu(a);
        add_linear(a, "fc2.weight", "fc2.bias", 128);
        add_relu(a);
        add_linear(a, "fc3.weight", "fc3.bias", NN_CLASSES);
        break;
    case NN_CNN:
    case NN_MODEL_KIND_COUNT:
        a->spatial = 1;
        a->channels = 1;
        a->height = NN_INPUT_ROWS;
        a->width = NN_INPUT_COLS;
        add_conv(a, "conv1.weight", "conv1.bias", NN_CNN_CONV1_CHANNELS, NN_CNN_KERNEL, NN_CNN_KERNEL / 2);
        add_relu(a);
        add_maxpool(a);
        add_conv(a, "conv2.weight", "conv2.bias", NN_CNN_CONV2_CHANNELS, NN_CNN_KERNEL, NN_CNN_KERNEL / 2);
        add_relu(a);
        add_maxpool(a);
        add_flatten(a);
        add_linear(a, "fc1.weight", "fc1.bias", NN_CNN_HIDDEN);
        add_relu(a);
        add_linear(a, "fc2.weight", "fc2.bias", NN_CLASSES);
        break;
    }
    a->probs = add_region(a, NN_CLASSES);
    a->losses = add_region(a, 1);
}

static NnConvShape conv_shape(const Layer *layer, size_t batch) {
    NnConvShape shape = {batch,         layer->channels, layer->out_channels, layer->height,
                         layer->width, layer->kernel,   layer->padding};
    return shape;
}

/* --- Kinds --- */

int nn_model_kind_parse(const char *name, NnModelKind *kind, SpirtError *error) {
    for (int k = 0; k < NN_MODEL_KIND_COUNT; k++)
        if (name && strcmp(name, kind_names[k]) == 0) {
            *kind = (NnModelKind)k;
            return SPIRT_OK;
        }
    return spirt_error_set(error, SPIRT_ERR_INVALID, "unknown model '%s' (expected logreg, mlp or cnn)",
                           name ? name : "(null)");
}

const char *nn_model_kind_name(NnModelKind kind) {
    return (int)kind >= 0 && kind < NN_MODEL_KIND_COUNT ? kind_names[kind] : "unknown";
}

size_t nn_model_kind_param_count(NnModelKind kind) {
    Architecture architecture;
    build_architecture(kind, &architecture);
    return architecture.param_count;
}

int nn_model_kind_from_param_count(size_t count, NnModelKind *kind, SpirtError *error) {
    for (int k = 0; k < NN_MODEL_KIND_COUNT; k++)
        if (nn_model_kind_param_count((NnModelKind)k) == count) {
            *kind = (NnModelKind)k;
            return SPIRT_OK;
        }
    return spirt_error_set(error, SPIRT_ERR_SHAPE,
                           "%zu parameters match no model (logreg %zu, mlp %zu, cnn %zu)", count,
                           nn_model_kind_param_count(NN_LOGREG), nn_model_kind_param_count(NN_MLP),
                           nn_model_kind_param_count(NN_CNN));
}

/* --- Lifecycle --- */

NnModel *nn_model_create(NnModelKind kind, size_t max_batch, SpirtError *error) {
    if ((int)kind < 0 || kind >= NN_MODEL_KIND_COUNT) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "unknown model kind %d", (int)kind);
        return NULL;
    }
    if (max_batch < 1 || max_batch > MAX_BATCH_LIMIT) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "max batch %zu is out of range (1 to %d)", max_batch,
                        MAX_BATCH_LIMIT);
        return NULL;
    }
    NnModel *model = calloc(1, sizeof(*model));
    if (model == NULL) goto out_of_memory;
    model->kind = kind;
    model->max_batch = max_batch;
    model->threads = 1;
    build_architecture(kind, &model->architecture);
    const Architecture *a = &model->architecture;
    size_t workspace = nn_linear_workspace_floats();
    for (size_t i = 0; i < a->layer_count; i++)
        if (a->layers[i].kind == LAYER_CONV) {
            NnConvShape shape = conv_shape(&a->layers[i], max_batch);
            size_t need = nn_conv2d_workspace_floats(&shape);
            if (need > workspace) workspace = need;
        }
    model->params = tensor_buffer_alloc(a->param_count);
    model->grads = tensor_buffer_alloc(a->param_count);
    model->acts = tensor_buffer_alloc(a->activation_size * max_batch);
    model->grad_acts = tensor_buffer_alloc(a->activation_size * max_batch);
    model->workspace = tensor_buffer_alloc(workspace);
    model->labels = calloc(max_batch, 1);
    if (!model->params || !model->grads || !model->acts || !model->grad_acts || !model->workspace || !model->labels)
        goto out_of_memory;
    return model;

out_of_memory:
    nn_model_free(model);
    spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory creating a %s model for batches of %zu",
                    nn_model_kind_name(kind), max_batch);
    return NULL;
}

void nn_model_free(NnModel *model) {
    if (model == NULL) return;
    tensor_buffer_free(model->params);
    tensor_buffer_free(model->grads);
    tensor_buffer_free(model->acts);
    tensor_buffer_free(model->grad_acts);
    tensor_buffer_free(model->workspace);
    free(model->labels);
    free(model);
}

NnModelKind nn_model_kind(const NnModel *model) { return model->kind; }
size_t nn_model_max_batch(const NnModel *model) { return model->max_batch; }
size_t nn_model_param_count(const NnModel *model) { return model->architecture.param_count; }
float *nn_model_params(NnModel *model) { return model->params; }
float *nn_model_grads(NnModel *model) { return model->grads; }

const NnView *nn_model_views(const NnModel *model, size_t *count) {
    if (count) *count = model->architecture.view_count;
    return model->architecture.views;
}

void nn_model_set_threads(NnModel *model, int threads) { model->threads = threads >= 1 ? threads : 1; }

/* --- Parameters --- */

void nn_model_init_params(NnModel *model, uint64_t seed) {
    SpirtRng rng;
    rng_init_stream(&rng, seed, NN_INIT_STREAM);
    const Architecture *a = &model->architecture;
    for (size_t i = 0; i < a->layer_count; i++) {
        const Layer *layer = &a->layers[i];
        size_t fan_in, weights, biases;
        if (layer->kind == LAYER_LINEAR) {
            fan_in = layer->in_size;
            biases = layer->out_size;
        } else if (layer->kind == LAYER_CONV) {
            fan_in = layer->channels * layer->kernel * layer->kernel;
            biases = layer->out_channels;
        } else {
            continue;
        }
        weights = fan_in * biases;
        /* kaiming_uniform_(a = sqrt(5)) gives the same bound for weights as
         * PyTorch's bias rule: 1 / sqrt(fan_in). */
        double bound = 1.0 / sqrt((double)fan_in);
        for (size_t k = 0; k < weights; k++)
            model->params[layer->weight + k] = (float)((2.0 * rng_uniform(&rng) - 1.0) * bound);
        for (size_t k = 0; k < biases; k++)
            model->params[layer->bias + k] = (float)((2.0 * rng_uniform(&rng) - 1.0) * bound);
    }
    nn_model_zero_grads(model);
}

int nn_model_load_params(NnModel *model, const float *values, size_t count, SpirtError *error) {
    size_t expected = model->architecture.param_count;
    if (count != expected)
        return spirt_error_set(error, SPIRT_ERR_SHAPE, "a %s model has %zu parameters, not %zu",
                               nn_model_kind_name(model->kind), expected, count);
    size_t bad = 0;
    if (!tensor_all_finite(values, count, &bad))
        return spirt_error_set(error, SPIRT_ERR_NONFINITE, "parameter %zu is %g (not finite)", bad,
                               (double)values[bad]);
    memcpy(model->params, values, count * sizeof(float));
    return SPIRT_OK;
}

void nn_model_zero_grads(NnModel *model) {
    memset(model->grads, 0, model->architecture.param_count * sizeof(float));
}

/* --- Forward and backward --- */

static float *region(const NnModel *model, float *slab, size_t per_example_offset) {
    return slab + per_example_offset * model->max_batch;
}

static size_t argmax(const float *values, size_t count) {
    size_t best = 0;
    for (size_t k = 1; k < count; k++)
        if (values[k] > values[best]) best = k;
    return best;
}

/* The forward pass proper: images -> logits, and with labels the losses;
 * *loss_sum (double) and *correct if labels. Inputs already checked. */
static void forward_batch(NnModel *model, const float *images, const uint8_t *labels, size_t B, double *loss_sum,
                          size_t *correct) {
    const Architecture *a = &model->architecture;
    NnWorkspace workspace = {model->workspace, model->threads};
    memcpy(model->acts, images, B * NN_INPUT_FEATURES * sizeof(float));
    for (size_t i = 0; i < a->layer_count; i++) {
        const Layer *layer = &a->layers[i];
        const float *in = region(model, model->acts, layer->input);
        float *out = region(model, model->acts, layer->output);
        switch (layer->kind) {
        case LAYER_LINEAR:
            nn_linear_forward(out, in, model->params + layer->weight, model->params + layer->bias, B,
                              layer->in_size, layer->out_size, &workspace);
            break;
        case LAYER_CONV: {
            NnConvShape shape = conv_shape(layer, B);
            nn_conv2d_forward(out, in, model->params + layer->weight, model->params + layer->bias, &shape,
                              &workspace);
            break;
        }
        case LAYER_RELU:
            nn_relu_forward(out, in, B * layer->in_size);
            break;
        case LAYER_MAXPOOL:
            nn_maxpool2x2_forward(out, in, B, layer->height, layer->width, layer->channels);
            break;
        case LAYER_FLATTEN:
            nn_flatten_forward(out, in, B, layer->height * layer->width, layer->channels);
            break;
        }
    }
    model->batch = B;
    model->backward_ready = labels != NULL;
    if (labels == NULL) return;
    memcpy(model->labels, labels, B);
    const float *logits = region(model, model->acts, a->current);
    float *losses = region(model, model->acts, a->losses);
    nn_softmax_xent_forward(losses, region(model, model->acts, a->probs), logits, labels, B, NN_CLASSES);
    double sum = 0.0;
    size_t right = 0;
    for (size_t b = 0; b < B; b++) {
        sum += losses[b];
        right += argmax(logits + b * NN_CLASSES, NN_CLASSES) == labels[b];
    }
    *loss_sum = sum;
    *correct = right;
}

static int check_batch(const NnModel *model, const float *images, const uint8_t *labels, size_t batch,
                       SpirtError *error) {
    if (images == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no images");
    if (batch < 1 || batch > model->max_batch)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "batch of %zu examples (this model takes 1 to %zu)", batch,
                               model->max_batch);
    for (size_t b = 0; labels && b < batch; b++)
        if (labels[b] >= NN_CLASSES)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "label %u of example %zu is not a class (0 to %d)",
                                   labels[b], b, NN_CLASSES - 1);
    return SPIRT_OK;
}

int nn_model_forward(NnModel *model, const float *images, const uint8_t *labels, size_t batch, float *loss,
                     size_t *correct, SpirtError *error) {
    int status = check_batch(model, images, labels, batch, error);
    if (status != SPIRT_OK) return status;
    double loss_sum = 0.0;
    size_t right = 0;
    forward_batch(model, images, labels, batch, &loss_sum, &right);
    if (loss) *loss = labels ? (float)(loss_sum / (double)batch) : 0.0f;
    if (correct) *correct = right;
    return SPIRT_OK;
}

int nn_model_backward(NnModel *model, SpirtError *error) {
    if (!model->backward_ready)
        return spirt_error_set(error, SPIRT_ERR_PRECONDITION, "backward needs a forward with labels first");
    const Architecture *a = &model->architecture;
    size_t B = model->batch;
    NnWorkspace workspace = {model->workspace, model->threads};
    /* Each activation gradient has exactly one writer (the layers form a
     * chain), but kernels accumulate, so start them all at zero. */
    for (size_t i = 0; i < a->layer_count; i++) {
        const Layer *layer = &a->layers[i];
        memset(region(model, model->grad_acts, layer->output), 0, B * layer->out_size * sizeof(float));
    }
    nn_softmax_xent_backward(region(model, model->grad_acts, a->current), region(model, model->acts, a->probs),
                             model->labels, 1.0f / (float)B, B, NN_CLASSES);
    for (size_t i = a->layer_count; i-- > 0;) {
        const Layer *layer = &a->layers[i];
        const float *in = region(model, model->acts, layer->input);
        const float *out = region(model, model->acts, layer->output);
        const float *dout = region(model, model->grad_acts, layer->output);
        /* The images need no gradient: the first layer skips that product. */
        float *din = i == 0 ? NULL : region(model, model->grad_acts, layer->input);
        switch (layer->kind) {
        case LAYER_LINEAR:
            nn_linear_backward(din, model->grads + layer->weight, model->grads + layer->bias, dout, in,
                               model->params + layer->weight, B, layer->in_size, layer->out_size, &workspace);
            break;
        case LAYER_CONV: {
            NnConvShape shape = conv_shape(layer, B);
            nn_conv2d_backward(din, model->grads + layer->weight, model->grads + layer->bias, dout, in,
                               model->params + layer->weight, &shape, &workspace);
            break;
        }
        case LAYER_RELU:
            if (din) nn_relu_backward(din, dout, out, B * layer->in_size);
            break;
        case LAYER_MAXPOOL:
            if (din) nn_maxpool2x2_backward(din, dout, in, B, layer->height, layer->width, layer->channels);
            break;
        case LAYER_FLATTEN:
            if (din) nn_flatten_backward(din, dout, B, layer->height * layer->width, layer->channels);
            break;
        }
    }
    return SPIRT_OK;
}

const float *nn_model_logits(const NnModel *model) {
    return model->acts + model->architecture.current * model->max_batch;
}

int nn_model_predict(NnModel *model, const float *images, size_t count, uint8_t *predictions, SpirtError *error) {
    if (predictions == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no room for predictions");
    for (size_t start = 0; start < count; start += model->max_batch) {
        size_t batch = count - start < model->max_batch ? count - start : model->max_batch;
        int status = check_batch(model, images + start * NN_INPUT_FEATURES, NULL, batch, error);
        if (status != SPIRT_OK) return status;
        forward_batch(model, images + start * NN_INPUT_FEATURES, NULL, batch, NULL, NULL);
        const float *logits = nn_model_logits(model);
        for (size_t b = 0; b < batch; b++)
            predictions[start + b] = (uint8_t)argmax(logits + b * NN_CLASSES, NN_CLASSES);
    }
    return SPIRT_OK;
}

int nn_model_evaluate(NnModel *model, const float *images, const uint8_t *labels, size_t count, double *mean_loss,
                      size_t *correct, SpirtError *error) {
    if (count == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "nothing to evaluate (0 examples)");
    if (labels == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no labels to evaluate against");
    double loss_sum = 0.0;
    size_t right = 0;
    for (size_t start = 0; start < count; start += model->max_batch) {
        size_t batch = count - start < model->max_batch ? count - start : model->max_batch;
        const float *batch_images = images + start * NN_INPUT_FEATURES;
        int status = check_batch(model, batch_images, labels + start, batch, error);
        if (status != SPIRT_OK) return status;
        double batch_loss = 0.0;
        size_t batch_right = 0;
        forward_batch(model, batch_images, labels + start, batch, &batch_loss, &batch_right);
        loss_sum += batch_loss;
        right += batch_right;
    }
    /* An evaluation is not a training step: no backward may follow it. */
    model->backward_ready = 0;
    if (mean_loss) *mean_loss = loss_sum / (double)count;
    if (correct) *correct = right;
    return SPIRT_OK;
}

/* --- Description --- */

char *nn_model_layout_json(const NnModel *model) {
    const Architecture *a = &model->architecture;
    /* Bounded: 8 views of at most ~160 characters each, plus the header. */
    size_t capacity = 256 + NN_MAX_VIEWS * 192, used = 0;
    char *text = malloc(capacity);
    if (text == NULL) return NULL;
    used += (size_t)snprintf(text + used, capacity - used,
                             "{\"model\":\"%s\",\"param_count\":%zu,\"dtype\":\"float32-le\",\"views\":[",
                             nn_model_kind_name(model->kind), a->param_count);
    for (size_t v = 0; v < a->view_count && used < capacity; v++) {
        const NnView *view = &a->views[v];
        used += (size_t)snprintf(text + used, capacity - used, "%s{\"name\":\"%s\",\"offset\":%zu,\"count\":%zu,\"shape\":[",
                                 v ? "," : "", view->name, view->offset, view->count);
        for (uint32_t d = 0; d < view->ndim && used < capacity; d++)
            used += (size_t)snprintf(text + used, capacity - used, d ? ",%zu" : "%zu", view->dims[d]);
        if (used < capacity) used += (size_t)snprintf(text + used, capacity - used, "]}");
    }
    if (used < capacity) used += (size_t)snprintf(text + used, capacity - used, "]}");
    if (used >= capacity) { /* cannot happen with the bound above */
        free(text);
        return NULL;
    }
    return text;
}
