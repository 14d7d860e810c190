/* nnm.c -- nearest-neighbour mixing (Allouah et al., AISTATS 2023) without
 * materialising the mixed vectors.
 *
 * NNM replaces each x_i by y_i = (1/k) sum_{j in N(i)} x_j, N(i) the k = n - f
 * inputs nearest to x_i (itself included). Every y_i is a fixed linear
 * combination of the inputs, so:
 *   - distances between mixed vectors follow from the Gram matrix:
 *     G_y = M G M^T (n^3 work on an n x n matrix instead of n * d floats);
 *   - a vector output that is an average of mixed vectors (Krum, Multi-Krum,
 *     the mean) is a weighted average of the inputs (agg_nnm_input_weights);
 *   - coordinate-wise rules compute mixed rows block by block (source.c).
 * Memory: n * (n - f) indices and two n x n matrices, never n * d floats. */
#include <string.h>

#include "agg/agg_internal.h"

size_t agg_nnm_scratch_bytes(size_t n) { return agg_align64(n * n * sizeof(double)); }

void agg_nnm_neighbours(const double *distances, size_t n, size_t f, uint32_t *members, void *scratch) {
    double *others = scratch;
    size_t k = n - f;
    for (size_t i = 0; i < n; i++) {
        const double *row = distances + i * n;
        uint32_t *out = members + i * k;
        if (k == 1) {
            out[0] = (uint32_t)i;
            continue;
        }
        /* The (k-1)-th nearest other distance is the threshold; of the
         * others at exactly that distance, the lowest indices fill up. */
        size_t count = 0;
        for (size_t j = 0; j < n; j++)
            if (j != i) others[count++] = row[j];
        agg_select_doubles(others, count, k - 2);
        double threshold = others[k - 2];
        size_t closer = 0;
        for (size_t j = 0; j < n; j++)
            if (j != i && row[j] < threshold) closer++;
        size_t ties_left = (k - 1) - closer, filled = 0;
        for (size_t j = 0; j < n; j++) {
            int take = j == i || row[j] < threshold;
            if (!take && row[j] == threshold && ties_left > 0) {
                take = 1;
                ties_left--;
            }
            if (take) out[filled++] = (uint32_t)j;
        }
    }
}

void agg_nnm_mixed_gram(const double *gram, size_t n, const AggMixing *mixing, double *mixed_gram, void *scratch) {
    double *half = scratch; /* M G: half[r * n + b] */
    size_t k = mixing->neighbours;
    double scale = 1.0 / (double)k;
    for (size_t r = 0; r < n; r++) {
        const uint32_t *members = mixing->members + r * k;
        double *out = half + r * n;
        memset(out, 0, n * sizeof(double));
        for (size_t a = 0; a < k; a++) {
            const double *row = gram + (size_t)members[a] * n;
            for (size_t b = 0; b < n; b++) out[b] += row[b];
        }
        for (size_t b = 0; b < n; b++) out[b] *= scale;
    }
    for (size_t r = 0; r < n; r++)
        for (size_t s = r; s < n; s++) {
            const uint32_t *members = mixing->members + s * k;
            double sum = 0.0;
            for (size_t b = 0; b < k; b++) sum += half[r * n + members[b]];
            mixed_gram[r * n + s] = mixed_gram[s * n + r] = sum * scale;
        }
}

void agg_nnm_input_weights(const AggMixing *mixing, size_t n, const uint32_t *rows, size_t count, double *weights) {
    for (size_t j = 0; j < n; j++) weights[j] = 0.0;
    for (size_t r = 0; r < count; r++) {
        const uint32_t *members = mixing->members + (size_t)rows[r] * mixing->neighbours;
        for (size_t a = 0; a < mixing->neighbours; a++) weights[members[a]] += 1.0;
    }
}
