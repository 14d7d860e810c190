/* prepare.c -- getting a peer's database ready for its first round.
 *
 * Everything a peer needs lives in its database: its shard of the training
 * data and a validation split, the initial model, spirt:config and the
 * membership. peer_prepare_database writes what is missing and keeps what
 * is there, so it is both the first start and the recovery path: a peer
 * restarted on its persisted database finds its data, model, optimizer
 * state and last round, and goes on.
 *
 * The shard is computed the same way by every peer from the shared data
 * spec (source, partition, shards, seed), so peers agree on who has what
 * without talking: normalisation uses the whole training set's statistics,
 * partition p goes to peer p, and each peer holds out `validation` examples
 * of its own shard. */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer/peer_internal.h"
#include "spirt/clock.h"
#include "spirt/data.h"
#include "spirt/keys.h"
#include "spirt/log.h"

#define KEY_DATA_SPEC "spirt:data:spec"

Dataset *peer_load_training_data(const char *source, SpirtError *error) {
    Dataset *all = data_load(source, DATA_TRAIN, error);
    if (all == NULL) return NULL;
    float mean, std;
    data_statistics(all, &mean, &std);
    if (data_normalize(all, mean, std, error) != SPIRT_OK) {
        dataset_free(all);
        return NULL;
    }
    return all;
}

/* The shard of a peer: a new train and validation dataset cut from the
 * whole (normalised) training set as `data_spec` says. */
static int compute_shard(const json_t *data_spec, const Dataset *all, Dataset **train, Dataset **validation,
                         SpirtError *error) {
    const char *partition = "iid";
    uint64_t shard = 0, shards = 1, validation_count = 0, seed = 1;
    const json_t *spec = data_spec;
    if (fn_json_string_or(spec, "partition", partition, &partition, error) != SPIRT_OK ||
        fn_json_u64_or(spec, "shard", 0, &shard, error) != SPIRT_OK ||
        fn_json_u64_or(spec, "shards", 1, &shards, error) != SPIRT_OK ||
        fn_json_u64_or(spec, "validation", 0, &validation_count, error) != SPIRT_OK ||
        fn_json_u64_or(spec, "seed", 1, &seed, error) != SPIRT_OK)
        return spirt_error_prefix(error, "data");
    if (shards == 0 || shard >= shards)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "data: shard %llu of %llu does not exist",
                               (unsigned long long)shard, (unsigned long long)shards);
    int status = SPIRT_OK;
    DataPartition parts = {0};
    if (strcmp(partition, "iid") == 0) {
        status = data_partition_iid(all->count, shards, seed, &parts, error);
    } else if (strncmp(partition, "dirichlet:", 10) == 0) {
        char *end = NULL;
        double alpha = strtod(partition + 10, &end);
        if (end == partition + 10 || *end != '\0' || !(alpha > 0))
            status = spirt_error_set(error, SPIRT_ERR_INVALID, "data: partition '%s': alpha must be a number > 0",
                                     partition);
        else
            status = data_partition_dirichlet(all->labels, all->count, all->classes, shards, alpha, seed, &parts, error);
    } else {
        status = spirt_error_set(error, SPIRT_ERR_INVALID, "data: unknown partition '%s' (iid or dirichlet:ALPHA)",
                                 partition);
    }
    Dataset *mine = NULL;
    if (status == SPIRT_OK) {
        mine = data_subset(all, parts.indices + parts.offsets[shard], parts.offsets[shard + 1] - parts.offsets[shard],
                           error);
        if (mine == NULL) status = error->code;
    }
    if (status == SPIRT_OK && validation_count >= mine->count)
        status = spirt_error_set(error, SPIRT_ERR_INVALID, "data: validation %llu leaves no training data in a shard of %zu",
                                 (unsigned long long)validation_count, mine->count);
    if (status == SPIRT_OK) {
        if (validation_count) {
            status = data_split_validation(mine, validation_count, seed + shard, train, validation, error);
        } else {
            *train = mine;
            *validation = NULL;
            mine = NULL;
        }
    }
    dataset_free(mine);
    data_partition_free(&parts);
    return status;
}

static int upload_dataset(StoreConn *db, const Dataset *dataset, const char *images_key, const char *labels_key,
                          SpirtError *error) {
    uint64_t dims[2] = {dataset->count, dataset->features};
    TensorShape shape;
    int status = tensor_shape_init(&shape, 2, dims, error);
    if (status == SPIRT_OK) status = store_tensor_set(db, images_key, &shape, dataset->images, error);
    float *labels = malloc(dataset->count * sizeof(float));
    if (labels == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < dataset->count; i++) labels[i] = (float)dataset->labels[i];
    if (status == SPIRT_OK) status = tensor_shape_vector(&shape, dataset->count, error);
    if (status == SPIRT_OK) status = store_tensor_set(db, labels_key, &shape, labels, error);
    free(labels);
    return status;
}

#define KEY_DATA_INFO "spirt:data:info"

int peer_upload_shard(StoreConn *db, const Dataset *all, const json_t *data_spec, SpirtError *error) {
    double start = clock_monotonic_ms();
    Dataset *train = NULL, *validation = NULL;
    int status = compute_shard(data_spec, all, &train, &validation, error);
    if (status == SPIRT_OK) status = upload_dataset(db, train, KEY_TRAIN_IMAGES, KEY_TRAIN_LABELS, error);
    if (status == SPIRT_OK && validation)
        status = upload_dataset(db, validation, KEY_VALIDATION_IMAGES, KEY_VALIDATION_LABELS, error);
    if (status == SPIRT_OK) {
        char digest[SPIRT_DIGEST_HEX_SIZE];
        tensor_digest_hex(train->images, train->count * train->features, digest);
        json_t *info = json_pack("{s:I, s:I, s:s}", "train_count", (json_int_t)train->count, "validation_count",
                                 validation ? (json_int_t)validation->count : 0, "data_digest", digest);
        char *info_text = json_dumps(info, JSON_COMPACT);
        char *spec_text = json_dumps(data_spec, JSON_COMPACT | JSON_SORT_KEYS);
        /* The spec last: its presence says the shard is complete. */
        status = store_set(db, KEY_DATA_INFO, info_text, strlen(info_text), error);
        if (status == SPIRT_OK) status = store_set(db, KEY_DATA_SPEC, spec_text, strlen(spec_text), error);
        free(info_text);
        free(spec_text);
        json_decref(info);
        log_info("shard of %zu examples (+%zu validation) loaded in %.0f ms", train->count,
                 validation ? validation->count : 0, clock_monotonic_ms() - start);
    }
    dataset_free(train);
    dataset_free(validation);
    return status;
}

/* Resolves `path` relative to the configuration file's folder. */
void peer_resolve_path(const char *config_path, const char *path, char *out, size_t size) {
    if (path[0] == '/' || config_path == NULL) {
        snprintf(out, size, "%s", path);
        return;
    }
    char copy[1024];
    snprintf(copy, sizeof(copy), "%s", config_path);
    snprintf(out, size, "%s/%s", dirname(copy), path);
}

int peer_prepare_database(StoreConn *db, const json_t *config, const char *config_path, SpirtError *error) {
    const char *peer_id;
    int status = fn_json_string(config, "peer_id", &peer_id, error);
    if (status != SPIRT_OK) return status;
    const json_t *run = json_object_get(config, "run");
    const json_t *data_spec = json_object_get(config, "data");
    if (run && !json_is_object(run)) return spirt_error_set(error, SPIRT_ERR_INVALID, "'run' must be an object");
    if (!json_is_object(data_spec)) return spirt_error_set(error, SPIRT_ERR_INVALID, "'data' must be an object");

    /* The run configuration, completed with what the data gives. */
    json_t *run_json = run ? json_deep_copy(run) : json_object();
    json_object_set_new(run_json, "peer_id", json_string(peer_id));
    /* The data: kept if the stored shard was made from the same spec
     * (`spirt train` uploads it before starting the peer), else made here. */
    json_t *spec = json_deep_copy(data_spec);
    const char *source = json_string_value(json_object_get(spec, "source"));
    if (source && strcmp(source, "fashion-mnist") != 0) {
        char resolved[1024];
        peer_resolve_path(config_path, source, resolved, sizeof(resolved));
        json_object_set_new(spec, "source", json_string(resolved));
    }
    char *spec_text = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS);
    char *stored = NULL;
    size_t stored_length = 0;
    int have_data = store_get(db, KEY_DATA_SPEC, &stored, &stored_length, NULL) == SPIRT_OK &&
                    strcmp(stored, spec_text) == 0;
    free(stored);
    free(spec_text);
    if (!have_data) {
        Dataset *all = peer_load_training_data(source ? json_string_value(json_object_get(spec, "source")) : "fashion-mnist",
                                               error);
        status = all ? peer_upload_shard(db, all, spec, error) : error->code;
        dataset_free(all);
    }
    json_decref(spec);
    char *info_text = NULL;
    size_t info_length = 0;
    if (status == SPIRT_OK) status = store_get(db, KEY_DATA_INFO, &info_text, &info_length, error);
    json_t *info = info_text ? json_loadb(info_text, info_length, 0, NULL) : NULL;
    free(info_text);
    if (status == SPIRT_OK && !json_is_object(info))
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s is not a JSON object", KEY_DATA_INFO);
    if (status == SPIRT_OK) json_object_update(run_json, info);
    json_decref(info);

    /* Check the configuration by parsing it, then store it. */
    RunConfig parsed;
    if (status == SPIRT_OK) status = run_config_from_json(run_json, &parsed, error);
    char *run_text = status == SPIRT_OK ? json_dumps(run_json, JSON_COMPACT) : NULL;
    json_decref(run_json);
    if (status == SPIRT_OK) status = store_set(db, KEY_CONFIG, run_text, strlen(run_text), error);
    free(run_text);
    if (status != SPIRT_OK) return status;

    /* The initial model: seeded, so every peer of the run starts equal. */
    int exists = 0;
    if ((status = store_exists(db, KEY_PARAMS, &exists, error)) != SPIRT_OK) return status;
    if (!exists) {
        NnModel *model = nn_model_create(parsed.model, 1, error);
        if (model == NULL) return error->code;
        nn_model_init_params(model, parsed.seed);
        TensorShape shape;
        tensor_shape_vector(&shape, nn_model_param_count(model), NULL);
        status = store_tensor_set(db, KEY_PARAMS, &shape, nn_model_params(model), error);
        nn_model_free(model);
        if (status != SPIRT_OK) return status;
    }

    /* Membership: every configured peer not yet known, as alive, and the
     * allow-list of keys that may join later. */
    const json_t *peers = json_object_get(config, "peers");
    if (!json_is_array(peers)) return spirt_error_set(error, SPIRT_ERR_INVALID, "'peers' must be a list");
    size_t index;
    const json_t *entry;
    json_array_foreach((json_t *)peers, index, entry) {
        const char *id, *address, *key;
        if (fn_json_string(entry, "id", &id, error) != SPIRT_OK ||
            fn_json_string(entry, "address", &address, error) != SPIRT_OK ||
            fn_json_string(entry, "public_key", &key, error) != SPIRT_OK)
            return spirt_error_prefix(error, "peers[%zu]", index);
        Member member = {0};
        if (!identity_peer_id_valid(id) || strlen(address) >= sizeof(member.address) ||
            strlen(key) != SPIRT_PUBLIC_KEY_HEX_SIZE - 1)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "peers[%zu]: bad id, address or public_key", index);
        char *existing = NULL;
        size_t length = 0;
        Member known;
        int have = store_hget(db, KEY_MEMBERS, id, &existing, &length, NULL) == SPIRT_OK &&
                   fn_member_from_json(id, existing, length, &known, NULL) == SPIRT_OK;
        free(existing);
        /* A known member keeps its status; the configuration is the
         * authority on where it is and which key it signs with. */
        if (have) member = known;
        snprintf(member.id, sizeof(member.id), "%s", id);
        snprintf(member.address, sizeof(member.address), "%s", address);
        snprintf(member.public_key, sizeof(member.public_key), "%s", key);
        if (!have) {
            member.status = MEMBER_ALIVE;
            member.status_since_ms = clock_wall_ms();
        }
        if (!have || strcmp(known.address, member.address) != 0 || strcmp(known.public_key, member.public_key) != 0)
            if ((status = fn_member_write(db, &member, error)) != SPIRT_OK) return status;
        if ((status = store_hset(db, "spirt:allowed", id, key, strlen(key), error)) != SPIRT_OK) return status;
    }
    return SPIRT_OK;
}
