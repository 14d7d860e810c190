/* context.c -- a worker's warm state: connections, the run configuration,
 * the model's buffers, the peer's data and identity (see fn.h).
 *
 * Everything here is a cache of something in the database or on disk, so a
 * cold worker and a warm one compute the same results; a warm one just
 * skips the reads. Caches are keyed on what makes them valid: connections
 * on the address, data on the database and the shard's digest, the model
 * on its kind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"
#include "spirt/log.h"
#include "spirt/rng.h"

enum { MAX_CONNECTIONS = RUN_MAX_PEERS + 8, ORDER_CACHE = 2 };

typedef struct CachedConnection {
    char address[256];
    StoreConn *conn;
} CachedConnection;

typedef struct CachedData {
    char db[256];
    char digest[SPIRT_DIGEST_HEX_SIZE];
    size_t count;
    float *images;
    uint8_t *labels;
} CachedData;

typedef struct CachedOrder {
    int valid;
    uint64_t seed, epoch;
    char peer_id[SPIRT_PEER_ID_MAX + 1];
    size_t count;
    size_t *order;
} CachedOrder;

struct FnContext {
    StoreOptions store_defaults;
    char *identity_path;
    int threads;
    CachedConnection connections[MAX_CONNECTIONS];
    size_t connection_count;
    char *config_text;         /* the raw spirt:config last parsed */
    char config_db[256];
    RunConfig config;
    NnModel *model;
    CachedData train, validation;
    CachedOrder orders[ORDER_CACHE];
    Identity identity;
    char identity_source[1024];
};

FnContext *fn_context_create(const FnContextOptions *options, SpirtError *error) {
    FnContext *context = calloc(1, sizeof(*context));
    if (context == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a function context");
        return NULL;
    }
    if (options) {
        context->store_defaults = options->store;
        if (options->identity_path) context->identity_path = strdup(options->identity_path);
        context->threads = options->threads;
    }
    if (context->threads <= 0) context->threads = 1;
    return context;
}

static void data_clear(CachedData *data) {
    free(data->images);
    free(data->labels);
    memset(data, 0, sizeof(*data));
}

void fn_context_free(FnContext *context) {
    if (context == NULL) return;
    for (size_t i = 0; i < context->connection_count; i++) store_free(context->connections[i].conn);
    free(context->config_text);
    nn_model_free(context->model);
    data_clear(&context->train);
    data_clear(&context->validation);
    for (int i = 0; i < ORDER_CACHE; i++) free(context->orders[i].order);
    identity_wipe(&context->identity);
    free(context->identity_path);
    free(context);
}

int fn_compute_threads(const FnContext *context) { return context->threads; }

/* --- Connections --- */

static StoreConn *connect_with(FnContext *context, const char *address, int timeout_ms, SpirtError *error) {
    for (size_t i = 0; i < context->connection_count; i++) {
        CachedConnection *cached = &context->connections[i];
        if (strcmp(cached->address, address) != 0) continue;
        if (store_conn_status(cached->conn) == SPIRT_OK) return cached->conn;
        /* A broken connection: try once to reopen it. */
        if (store_reconnect(cached->conn, error) == SPIRT_OK) return cached->conn;
        return NULL;
    }
    if (strlen(address) >= sizeof(context->connections[0].address)) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "database address too long");
        return NULL;
    }
    if (context->connection_count == MAX_CONNECTIONS) {
        /* Evict the oldest peer connection; slot 0 is usually our own database. */
        store_free(context->connections[1].conn);
        memmove(&context->connections[1], &context->connections[2],
                (MAX_CONNECTIONS - 2) * sizeof(context->connections[0]));
        context->connection_count--;
    }
    StoreOptions options = context->store_defaults;
    if (timeout_ms > 0) {
        options.connect_timeout_ms = timeout_ms;
        options.read_timeout_ms = timeout_ms;
        options.write_timeout_ms = timeout_ms;
    }
    StoreConn *conn = store_connect_address(address, &options, error);
    if (conn == NULL) return NULL;
    CachedConnection *slot = &context->connections[context->connection_count++];
    snprintf(slot->address, sizeof(slot->address), "%s", address);
    slot->conn = conn;
    return conn;
}

StoreConn *fn_connect(FnContext *context, const char *address, SpirtError *error) {
    return connect_with(context, address, 0, error);
}

StoreConn *fn_connect_probe(FnContext *context, const char *address, int timeout_ms, SpirtError *error) {
    return connect_with(context, address, timeout_ms, error);
}

int fn_fetch_target(const FnContext *context, const char *address, FnFetchTarget *target) {
    StoreAddress parsed;
    if (store_address_parse(address, &parsed, NULL) != SPIRT_OK) return 0;
    StoreOptions options = context->store_defaults;
    store_options_use_address(&options, &parsed);
    if (options.tls.enabled || options.database != 0) return 0;
    memset(target, 0, sizeof(*target));
    int port = options.port ? options.port : STORE_DEFAULT_PORT;
    int written;
    if (parsed.host[0] == '/')
        written = snprintf(target->address, sizeof(target->address), "unix:%s", parsed.host);
    else if (strchr(parsed.host, ':'))
        written = snprintf(target->address, sizeof(target->address), "[%s]:%d", parsed.host, port);
    else
        written = snprintf(target->address, sizeof(target->address), "%s:%d", parsed.host, port);
    if (written < 0 || (size_t)written >= sizeof(target->address)) return 0;
    if (options.password) {
        if (strlen(options.password) >= sizeof(target->password) ||
            (options.username && strlen(options.username) >= sizeof(target->username)))
            return 0;
        snprintf(target->password, sizeof(target->password), "%s", options.password);
        if (options.username) snprintf(target->username, sizeof(target->username), "%s", options.username);
        target->has_password = 1;
    }
    return 1;
}

void fn_context_drop_broken(FnContext *context) {
    size_t kept = 0;
    for (size_t i = 0; i < context->connection_count; i++) {
        if (store_conn_status(context->connections[i].conn) == SPIRT_OK)
            context->connections[kept++] = context->connections[i];
        else
            store_free(context->connections[i].conn);
    }
    context->connection_count = kept;
}

/* --- The run configuration --- */

const RunConfig *fn_run_config(FnContext *context, StoreConn *db, SpirtError *error) {
    char *text = NULL;
    size_t length = 0;
    int status = store_get(db, KEY_CONFIG, &text, &length, error);
    if (status == SPIRT_ERR_NOT_FOUND) {
        spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "%s has no %s: the peer's database is not prepared",
                        store_conn_address(db), KEY_CONFIG);
        return NULL;
    }
    if (status != SPIRT_OK) return NULL;
    if (context->config_text && strcmp(context->config_db, store_conn_address(db)) == 0 &&
        strcmp(context->config_text, text) == 0) {
        free(text);
        return &context->config;
    }
    json_error_t parse_error;
    json_t *json = json_loadb(text, length, 0, &parse_error);
    if (json == NULL) {
        free(text);
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: %s is not JSON: %s", store_conn_address(db), KEY_CONFIG,
                        parse_error.text);
        return NULL;
    }
    RunConfig parsed;
    status = run_config_from_json(json, &parsed, error);
    json_decref(json);
    if (status != SPIRT_OK) {
        free(text);
        return NULL;
    }
    free(context->config_text);
    context->config_text = text;
    snprintf(context->config_db, sizeof(context->config_db), "%s", store_conn_address(db));
    context->config = parsed;
    return &context->config;
}

int fn_begin(FnContext *context, const json_t *event, int needs_round, FnEvent *parsed, StoreConn **db,
             const RunConfig **config, SpirtError *error) {
    int status = fn_event_parse(event, needs_round, parsed, error);
    if (status != SPIRT_OK) return status;
    if ((*db = fn_connect(context, parsed->db, error)) == NULL) return error->code;
    if ((*config = fn_run_config(context, *db, error)) == NULL) return error->code;
    return SPIRT_OK;
}

/* --- The model --- */

NnModel *fn_model(FnContext *context, NnModelKind kind, size_t max_batch, SpirtError *error) {
    if (context->model && nn_model_kind(context->model) == kind && nn_model_max_batch(context->model) >= max_batch)
        return context->model;
    nn_model_free(context->model);
    context->model = nn_model_create(kind, max_batch, error);
    if (context->model) nn_model_set_threads(context->model, context->threads);
    return context->model;
}

/* --- Data --- */

static int load_data(StoreConn *db, const RunConfig *config, const char *images_key, const char *labels_key,
                     size_t expected, CachedData *cache, FnData *data, SpirtError *error) {
    if (expected == 0)
        return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "the run has no data under %s", images_key);
    if (cache->images && cache->count == expected && strcmp(cache->db, store_conn_address(db)) == 0 &&
        strcmp(cache->digest, config->data_digest) == 0) {
        *data = (FnData){cache->count, cache->images, cache->labels};
        return SPIRT_OK;
    }
    data_clear(cache);
    Tensor *images = NULL, *labels = NULL;
    int status = store_tensor_get(db, images_key, &images, error);
    if (status == SPIRT_OK) status = store_tensor_get(db, labels_key, &labels, error);
    if (status == SPIRT_OK && (images->count != expected * NN_INPUT_FEATURES || labels->count != expected))
        status = spirt_error_set(error, SPIRT_ERR_SHAPE, "%s holds %zu values and %s %zu, expected %zu examples",
                                 images_key, images->count, labels_key, labels->count, expected);
    if (status == SPIRT_OK) {
        cache->labels = malloc(expected);
        if (cache->labels == NULL) status = spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for labels");
    }
    for (size_t i = 0; status == SPIRT_OK && i < expected; i++) {
        float label = labels->data[i];
        if (!(label >= 0 && label < NN_CLASSES && label == (float)(int)label))
            status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s[%zu] = %g is not a class number", labels_key, i,
                                     (double)label);
        else
            cache->labels[i] = (uint8_t)label;
    }
    if (status == SPIRT_OK) {
        /* Keep the tensor's buffer: it is already the images, aligned. */
        cache->images = images->data;
        images->data = NULL;
        cache->count = expected;
        snprintf(cache->db, sizeof(cache->db), "%s", store_conn_address(db));
        snprintf(cache->digest, sizeof(cache->digest), "%s", config->data_digest);
        *data = (FnData){cache->count, cache->images, cache->labels};
    } else {
        free(cache->labels);
        cache->labels = NULL;
    }
    tensor_free(images);
    tensor_free(labels);
    return status;
}

int fn_training_data(FnContext *context, StoreConn *db, const RunConfig *config, FnData *data, SpirtError *error) {
    return load_data(db, config, KEY_TRAIN_IMAGES, KEY_TRAIN_LABELS, config->train_count, &context->train, data, error);
}

int fn_validation_data(FnContext *context, StoreConn *db, const RunConfig *config, FnData *data, SpirtError *error) {
    return load_data(db, config, KEY_VALIDATION_IMAGES, KEY_VALIDATION_LABELS, config->validation_count,
                     &context->validation, data, error);
}

/* --- Epoch orders --- */

const size_t *fn_epoch_order(FnContext *context, const RunConfig *config, uint64_t epoch, SpirtError *error) {
    for (int i = 0; i < ORDER_CACHE; i++) {
        CachedOrder *cached = &context->orders[i];
        if (cached->valid && cached->epoch == epoch && cached->seed == config->seed &&
            cached->count == config->train_count && strcmp(cached->peer_id, config->peer_id) == 0)
            return cached->order;
    }
    /* Replace the entry for the older epoch. */
    CachedOrder *slot = &context->orders[0];
    if (context->orders[0].valid && (!context->orders[1].valid || context->orders[1].epoch < context->orders[0].epoch))
        slot = &context->orders[1];
    free(slot->order);
    slot->valid = 0;
    slot->order = malloc(config->train_count * sizeof(size_t));
    if (slot->order == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for an epoch order");
        return NULL;
    }
    for (size_t i = 0; i < config->train_count; i++) slot->order[i] = i;
    /* The stream mixes the peer id in, so peers with equal shard sizes
     * still visit their data in unrelated orders. */
    uint64_t peer_hash = 1469598103934665603ull;
    for (const char *c = config->peer_id; *c; c++) peer_hash = (peer_hash ^ (unsigned char)*c) * 1099511628211ull;
    SpirtRng rng;
    rng_init_stream(&rng, config->seed ^ peer_hash, 0x65706f6368ull /* "epoch" */ + epoch);
    rng_shuffle_indices(&rng, slot->order, config->train_count);
    slot->valid = 1;
    slot->epoch = epoch;
    slot->seed = config->seed;
    slot->count = config->train_count;
    snprintf(slot->peer_id, sizeof(slot->peer_id), "%s", config->peer_id);
    return slot->order;
}

/* --- Identity --- */

const Identity *fn_identity(FnContext *context, const json_t *event, SpirtError *error) {
    const char *path = json_string_value(json_object_get(event, "identity"));
    if (path == NULL) path = context->identity_path;
    if (path == NULL) {
        spirt_error_set(error, SPIRT_ERR_INVALID,
                        "no identity: start the worker with --identity FILE or give \"identity\" in the event");
        return NULL;
    }
    if (context->identity.has_secret && strcmp(context->identity_source, path) == 0) return &context->identity;
    identity_wipe(&context->identity);
    if (identity_load(&context->identity, path, error) != SPIRT_OK) return NULL;
    snprintf(context->identity_source, sizeof(context->identity_source), "%s", path);
    return &context->identity;
}
