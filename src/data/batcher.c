/* batcher.c -- minibatch index streams, reshuffled every epoch (see
 * include/spirt/data.h).
 *
 * Epoch e's order is a fresh shuffle of 0..count-1 drawn from the stream
 * (seed, DATA_STREAM_BATCHES + e), not a reshuffle of epoch e-1's: any
 * epoch's batches can be rebuilt from the seed and the epoch number alone,
 * which is what a restarted peer needs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/streams.h"
#include "spirt/data.h"
#include "spirt/rng.h"

/* `position` holds this after the end of an epoch has been reported (and
 * before the first one): the next call starts a new epoch. */
#define EPOCH_ENDED SIZE_MAX

int data_batcher_init(DataBatcher *batcher, size_t count, size_t batch_size, uint64_t seed, int drop_last,
                      SpirtError *error) {
    memset(batcher, 0, sizeof(*batcher));
    if (count == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "cannot batch 0 examples");
    if (batch_size == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "batch size must be > 0");
    if (drop_last && batch_size > count)
        return spirt_error_set(error, SPIRT_ERR_INVALID,
                               "batch size %zu is larger than the %zu examples: dropping the short batch leaves none",
                               batch_size, count);
    if (count > SIZE_MAX / sizeof(size_t))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "cannot batch %zu examples", count);
    batcher->order = malloc(count * sizeof(size_t));
    if (batcher->order == NULL)
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a batch order of %zu", count);
    batcher->count = count;
    batcher->batch_size = batch_size;
    batcher->seed = seed;
    batcher->drop_last = drop_last ? 1 : 0;
    batcher->epoch = 0;
    batcher->position = EPOCH_ENDED;
    return SPIRT_OK;
}

static void start_epoch(DataBatcher *batcher) {
    for (size_t i = 0; i < batcher->count; i++) batcher->order[i] = i;
    SpirtRng rng;
    rng_init_stream(&rng, batcher->seed, DATA_STREAM_BATCHES + batcher->epoch);
    rng_shuffle_indices(&rng, batcher->order, batcher->count);
    batcher->epoch++;
    batcher->position = 0;
}

size_t data_batcher_next(DataBatcher *batcher, size_t *indices) {
    if (batcher->position == EPOCH_ENDED) start_epoch(batcher);
    /* With drop_last the epoch ends before the short remainder. */
    size_t end = batcher->drop_last ? batcher->count - batcher->count % batcher->batch_size : batcher->count;
    if (batcher->position >= end) {
        batcher->position = EPOCH_ENDED;
        return 0;
    }
    size_t n = end - batcher->position < batcher->batch_size ? end - batcher->position : batcher->batch_size;
    memcpy(indices, batcher->order + batcher->position, n * sizeof(size_t));
    batcher->position += n;
    return n;
}

size_t data_batcher_batches(const DataBatcher *batcher) {
    if (batcher->batch_size == 0) return 0;
    size_t full = batcher->count / batcher->batch_size;
    return batcher->drop_last || batcher->count % batcher->batch_size == 0 ? full : full + 1;
}

void data_batcher_deinit(DataBatcher *batcher) {
    if (batcher == NULL) return;
    free(batcher->order);
    memset(batcher, 0, sizeof(*batcher));
}
