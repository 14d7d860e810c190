/* partition.c -- cutting a dataset into per-peer shards, IID or skewed by
 * Dirichlet draws (see include/spirt/data.h).
 *
 * Both partitioners first decide which part each example goes to, then
 * build the index lists from that assignment, so every shard lists its
 * examples in dataset order (good for locality; the batcher shuffles). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/streams.h"
#include "spirt/data.h"
#include "spirt/rng.h"

/* Redraws of the Dirichlet proportions before giving up on giving every
 * part an example. Even alpha 0.1 over 100 parts needs a redraw only about
 * one time in ten; failing 100 times means the request cannot be met. */
enum { DIRICHLET_MAX_DRAWS = 100 };

void data_partition_free(DataPartition *partition) {
    if (partition == NULL) return;
    free(partition->offsets);
    free(partition->indices);
    memset(partition, 0, sizeof(*partition));
}

static int check_parts(size_t count, size_t parts, SpirtError *error) {
    if (parts == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "cannot partition into 0 parts");
    if (parts > count)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "cannot give each of %zu parts an example out of %zu", parts,
                               count);
    return SPIRT_OK;
}

/* A stable counting sort: out[] receives items[k] (k itself when items is
 * NULL) grouped by keys[k] < buckets, and offsets[0..buckets] (zeroed by the
 * caller) the start of each group. */
static void group_by_key(const size_t *items, const size_t *keys, size_t count, size_t buckets, size_t *offsets,
                         size_t *out) {
    for (size_t k = 0; k < count; k++) offsets[keys[k] + 1]++;
    for (size_t b = 0; b < buckets; b++) offsets[b + 1] += offsets[b];
    /* offsets[b] serves as group b's fill cursor, then is restored. */
    for (size_t k = 0; k < count; k++) out[offsets[keys[k]]++] = items ? items[k] : k;
    for (size_t b = buckets; b > 0; b--) offsets[b] = offsets[b - 1];
    offsets[0] = 0;
}

/* Builds `partition` from part_of[i], the part of example i; each shard
 * keeps dataset order. */
static int partition_from_assignment(const size_t *part_of, size_t count, size_t parts, DataPartition *partition,
                                     SpirtError *error) {
    partition->offsets = calloc(parts + 1, sizeof(size_t));
    partition->indices = malloc((count ? count : 1) * sizeof(size_t));
    if (partition->offsets == NULL || partition->indices == NULL) {
        data_partition_free(partition);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a partition of %zu examples", count);
    }
    partition->parts = parts;
    group_by_key(NULL, part_of, count, parts, partition->offsets, partition->indices);
    return SPIRT_OK;
}

int data_partition_iid(size_t count, size_t parts, uint64_t seed, DataPartition *partition, SpirtError *error) {
    memset(partition, 0, sizeof(*partition));
    if (check_parts(count, parts, error) != SPIRT_OK) return error ? error->code : SPIRT_ERR_INVALID;
    size_t *order = malloc(count * sizeof(size_t));
    size_t *part_of = malloc(count * sizeof(size_t));
    if (order == NULL || part_of == NULL) {
        free(order);
        free(part_of);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a partition of %zu examples", count);
    }
    for (size_t i = 0; i < count; i++) order[i] = i;
    SpirtRng rng;
    rng_init_stream(&rng, seed, DATA_STREAM_IID);
    rng_shuffle_indices(&rng, order, count);
    /* Deal the shuffled examples out in runs: the first count % parts parts
     * get one example more than the rest. */
    size_t base = count / parts, extra = count % parts, position = 0;
    for (size_t p = 0; p < parts; p++) {
        size_t size = base + (p < extra ? 1 : 0);
        for (size_t k = 0; k < size; k++) part_of[order[position++]] = p;
    }
    int status = partition_from_assignment(part_of, count, parts, partition, error);
    free(order);
    free(part_of);
    return status;
}

/* Proportions ~ Dirichlet(alpha, ..., alpha) as normalised Gamma(alpha)
 * draws, written as cumulative sums into cumulative[0..parts). For tiny
 * alpha every Gamma draw can underflow to 0; the limit of the distribution
 * as alpha -> 0 is then used: everything to one part chosen uniformly. */
static void draw_cumulative_proportions(SpirtRng *rng, size_t parts, double alpha, double *cumulative) {
    double total = 0.0;
    for (size_t p = 0; p < parts; p++) {
        total += rng_gamma(rng, alpha);
        cumulative[p] = total;
    }
    if (!(total > 0.0) || !isfinite(total)) {
        size_t winner = (size_t)rng_below(rng, parts);
        for (size_t p = 0; p < parts; p++) cumulative[p] = p >= winner ? 1.0 : 0.0;
        return;
    }
    for (size_t p = 0; p < parts; p++) cumulative[p] /= total;
    cumulative[parts - 1] = 1.0; /* exactly, whatever the rounding */
}

/* One draw: deals each class's examples (class_members[class_offsets[c] ..
 * class_offsets[c + 1]), in shuffled order) to the parts in proportion to
 * fresh Dirichlet proportions. Returns 1 if every part got an example. */
static int deal_classes(SpirtRng *rng, const size_t *class_members, const size_t *class_offsets, size_t classes,
                        size_t parts, double alpha, double *cumulative, size_t *part_sizes, size_t *part_of) {
    memset(part_sizes, 0, parts * sizeof(size_t));
    for (size_t c = 0; c < classes; c++) {
        size_t first = class_offsets[c], members = class_offsets[c + 1] - first;
        if (members == 0) continue;
        draw_cumulative_proportions(rng, parts, alpha, cumulative);
        size_t start = 0;
        for (size_t p = 0; p < parts; p++) {
            /* Rounded cumulative boundaries: sizes add up to `members` exactly
             * and each differs from members * proportion by less than 1. */
            size_t end = (size_t)floor((double)members * cumulative[p] + 0.5);
            if (end > members) end = members;
            if (end < start) end = start;
            for (size_t k = start; k < end; k++) part_of[class_members[first + k]] = p;
            part_sizes[p] += end - start;
            start = end;
        }
    }
    for (size_t p = 0; p < parts; p++)
        if (part_sizes[p] == 0) return 0;
    return 1;
}

int data_partition_dirichlet(const uint8_t *labels, size_t count, size_t classes, size_t parts, double alpha,
                             uint64_t seed, DataPartition *partition, SpirtError *error) {
    memset(partition, 0, sizeof(*partition));
    if (check_parts(count, parts, error) != SPIRT_OK) return error ? error->code : SPIRT_ERR_INVALID;
    if (classes == 0 || classes > 256)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "classes %zu must be in 1..256", classes);
    if (!(alpha > 0.0) || !isfinite(alpha))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "Dirichlet alpha %g must be finite and > 0", alpha);
    for (size_t i = 0; i < count; i++)
        if (labels[i] >= classes)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "label %u at index %zu is not below %zu classes",
                                   labels[i], i, classes);

    size_t *order = malloc(count * sizeof(size_t));
    size_t *class_members = malloc(count * sizeof(size_t));
    size_t *part_of = malloc(count * sizeof(size_t));
    size_t *class_offsets = calloc(classes + 1, sizeof(size_t));
    size_t *part_sizes = malloc(parts * sizeof(size_t));
    double *cumulative = malloc(parts * sizeof(double));
    int status = SPIRT_OK;
    if (!order || !class_members || !part_of || !class_offsets || !part_sizes || !cumulative) {
        status = spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a partition of %zu examples", count);
        goto done;
    }
    /* Shuffle once, then group by class keeping the shuffled order, so which
     * examples of a class land in which part is random too. */
    SpirtRng rng;
    rng_init_stream(&rng, seed, DATA_STREAM_DIRICHLET);
    for (size_t i = 0; i < count; i++) order[i] = i;
    rng_shuffle_indices(&rng, order, count);
    for (size_t k = 0; k < count; k++) part_of[k] = labels[order[k]]; /* borrowed as the sort keys */
    group_by_key(order, part_of, count, classes, class_offsets, class_members);

    int every_part_served = 0;
    for (int draw = 0; draw < DIRICHLET_MAX_DRAWS && !every_part_served; draw++)
        every_part_served = deal_classes(&rng, class_members, class_offsets, classes, parts, alpha, cumulative,
                                         part_sizes, part_of);
    if (!every_part_served)
        status = spirt_error_set(error, SPIRT_ERR_PRECONDITION,
                                 "no Dirichlet(%g) draw in %d gave each of %zu parts an example; use fewer parts or "
                                 "a larger alpha",
                                 alpha, DIRICHLET_MAX_DRAWS, parts);
    else
        status = partition_from_assignment(part_of, count, parts, partition, error);
done:
    free(order);
    free(class_members);
    free(part_of);
    free(class_offsets);
    free(part_sizes);
    free(cumulative);
    return status;
}
