/* agg_internal.h -- what the files of src/agg share (not a public header).
 *
 * agg.c checks a request, lays out the caller's workspace and runs a rule
 * out of the kernels declared here, one file per concern:
 *   simd.h       the 16-float / 8-double vectors the kernels are written in
 *   source.c     the rows a coordinate-wise pass reads (inputs or NNM mixtures)
 *   mean.c       streaming (weighted) means and the finiteness scan
 *   gram.c       the Gram matrix of the inputs and pairwise distances
 *   sort.c       sorting and quickselect of doubles, no allocation
 *   krum.c       Krum scores and the Krum / Multi-Krum / Bulyan selections
 *   nnm.c        nearest-neighbour mixing: neighbour sets, mixed Gram, mixed rows
 *   network.c    sorting/selection networks (compare-exchange lists)
 *   order.c      coordinate-wise median, trimmed mean, Bulyan's last step
 *   weiszfeld.c  the fused combine pass of geometric median and centered clipping
 *   share.c      work sharing: a pass's pieces go to whichever thread is free
 *
 * Threads and determinism. Work over coordinates is split into blocks of
 * AGG_BLOCK coordinates (per-coordinate kernels) and reductions over d into
 * chunks of agg_chunk_length(n, d) coordinates whose boundaries depend only
 * on n and d; a chunk is always reduced by one thread in one order and the
 * chunks' partial results are added in chunk order afterwards. So every
 * result is the same for any thread count. Passes hand their pieces to
 * whichever thread is free next (agg_share), which keeps a shared machine's
 * busy core from holding a pass back and changes no result.
 *
 * No allocation: each parallel pass takes per-thread scratch "slots" carved
 * out of the caller's workspace; each of a pass's threads takes the next
 * free slot once (agg_share runs at most slot_count threads). */
#ifndef SPIRT_AGG_INTERNAL_H
#define SPIRT_AGG_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "spirt/agg.h"

/* Coordinates per block in coordinate-wise passes: a block of every row
 * (n * 2 KiB) stays in L1/L2 while a kernel works on it. */
#define AGG_BLOCK 512
/* Minimum coordinates per reduction chunk: large enough that the per-chunk
 * partials are few, small enough that 2-3 threads balance at d = 1M. */
#define AGG_CHUNK_MIN 65536
/* Sorting networks are used up to this many values per coordinate;
 * above it, a per-coordinate selection (quickselect). */
#define AGG_NETWORK_MAX_WIRES 32
#define AGG_NETWORK_MAX_COMPARATORS 192 /* Batcher's network on 32 wires: 191 */

static inline size_t agg_align64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* --- Per-thread scratch ---------------------------------------------- */

typedef struct AggSlots {
    unsigned char *base; /* slot_count * slot_bytes bytes, 64-aligned */
    size_t slot_bytes;   /* multiple of 64 */
    int slot_count;      /* >= the threads of any pass that uses them */
    atomic_int next;     /* the next free slot in the running pass */
} AggSlots;

/* Makes every slot free again; call before each parallel pass. */
static inline void agg_slots_reset(AggSlots *slots) { atomic_store(&slots->next, 0); }

/* The scratch of the calling range; NULL only if the pass ran more ranges
 * than slots (a bug: callers size slots to their thread count). */
static inline void *agg_slots_take(AggSlots *slots) {
    int slot = atomic_fetch_add(&slots->next, 1);
    if (slot >= slots->slot_count) return NULL;
    return slots->base + (size_t)slot * slots->slot_bytes;
}

/* Runs body(context, scratch, begin, end) over [0, count) in pieces of
 * `grain` units (the last one shorter), on up to `threads` threads (<= 0:
 * parallel_default_threads()), each piece on whichever thread is free
 * next. Each thread takes one slot of `slots` for all its pieces and
 * passes it as `scratch` (slots NULL: scratch is NULL). Returns when every
 * piece is done. */
typedef void (*AggShareBody)(void *context, void *scratch, size_t begin, size_t end);
void agg_share(size_t count, size_t grain, int threads, AggSlots *slots, AggShareBody body, void *context);

/* Coordinates per reduction chunk for n inputs of d floats: a multiple of
 * AGG_BLOCK, at least AGG_CHUNK_MIN, and large enough that the Gram
 * partials (chunks * n * n doubles) stay under 64 MiB. */
size_t agg_chunk_length(size_t n, size_t d);
static inline size_t agg_chunk_count(size_t n, size_t d) {
    size_t length = agg_chunk_length(n, d);
    return (d + length - 1) / length;
}

/* --- Where a pass reads its rows from ------------------------------- */

/* Nearest-neighbour mixing: mixed vector r is the mean of the inputs
 * members[r * neighbours .. + neighbours) (ascending indices). */
typedef struct AggMixing {
    size_t neighbours;       /* k = n - f */
    const uint32_t *members; /* n rows of k input indices */
} AggMixing;

/* The rows a coordinate-wise pass works on: `count` rows, row j being input
 * row_ids[j] (or j if row_ids is NULL), or the mixed vector of that index
 * when `mixing` is set. */
typedef struct AggSource {
    const float *const *inputs;
    size_t d;
    size_t count;
    const uint32_t *row_ids;
    const AggMixing *mixing;
} AggSource;

/* Scratch bytes agg_source_block needs per thread for this source. */
size_t agg_source_scratch_bytes(size_t count, int mixing);
/* Pointers to coordinates [begin, begin + length) of every row (length <=
 * AGG_BLOCK), stored at the start of `scratch`. Plain rows point into the
 * inputs; mixed rows are computed into `scratch` (double sums in member
 * order, times 1/k, rounded once), each AGG_BLOCK floats long. */
const float **agg_source_block(const AggSource *source, size_t begin, size_t length, void *scratch);

/* --- mean.c ----------------------------------------------------------- */

/* out[c] = (sum_j weight_j * rows[j][c]) * inverse_divisor for c < d, with
 * the sum in double in row order (weights NULL: all 1). Parallel over
 * blocks of coordinates, hence deterministic. */
void agg_mean_rows(const float *const *rows, size_t count, const double *weights, double inverse_divisor, size_t d,
                   float *out, int threads);
/* The lowest index of an input holding a NaN or an infinity (and, in
 * *coordinate, its first such coordinate), or n if every value is finite. */
size_t agg_find_nonfinite(const float *const *inputs, size_t n, size_t d, int threads, size_t *coordinate);
/* 1 if all d values are finite. */
int agg_all_finite(const float *values, size_t d);

/* --- gram.c ----------------------------------------------------------- */

/* Bytes of per-thread scratch and of chunk partials agg_gram needs. */
size_t agg_gram_scratch_bytes(size_t n);
size_t agg_gram_partials_bytes(size_t n, size_t d);
/* gram[i * n + j] = x_i . x_j in double (exact float products, double sums;
 * symmetric), and the lowest index of an input with a non-finite value (n
 * if none): the finiteness check rides on the same pass over the data. */
size_t agg_gram(const float *const *inputs, size_t n, size_t d, int threads, AggSlots *slots, double *partials,
                double *gram);
/* distances[i * n + j] = max(0, G_ii + G_jj - 2 G_ij), 0 on the diagonal. */
void agg_gram_distances(const double *gram, size_t n, double *distances);

/* --- krum.c ------------------------------------------------------------ */

/* Bytes of scratch agg_krum_* need for n inputs. */
size_t agg_krum_scratch_bytes(size_t n);
/* Krum score of each active index: the sum, in ascending order, of the
 * max(0, active_count - f - 2) smallest squared distances to the other
 * active indices. scores[a] belongs to active[a]. */
void agg_krum_scores(const double *distances, size_t n, const uint32_t *active, size_t active_count, size_t f,
                     double *scores, void *scratch);
/* The m indices with the lowest Krum scores over all n, best first (ties:
 * lowest index), into selected[0..m); returns the best score. */
double agg_krum_select(const double *distances, size_t n, size_t f, size_t m, uint32_t *selected, void *scratch);
/* Bulyan's selection: theta = n - 2f picks by Krum over the remaining set,
 * in pick order; returns the first pick's score. */
double agg_bulyan_select(const double *distances, size_t n, size_t f, uint32_t *selected, void *scratch);

/* --- sort.c ----------------------------------------------------------- */

/* Sorts values[0..count) ascending (deterministic, no allocation). */
void agg_sort_doubles(double *values, size_t count);
/* Reorders values so that values[k] is the k-th smallest, with nothing
 * larger before it and nothing smaller after it (quickselect). */
void agg_select_doubles(double *values, size_t count, size_t k);

/* --- nnm.c ------------------------------------------------------------- */

size_t agg_nnm_scratch_bytes(size_t n);
/* members[i * (n - f) ..] = the n - f inputs nearest to input i, itself
 * included, ties broken by index, sorted ascending. */
void agg_nnm_neighbours(const double *distances, size_t n, size_t f, uint32_t *members, void *scratch);
/* mixed_gram = M G M^T for the mixing matrix M of `mixing` (n x n). */
void agg_nnm_mixed_gram(const double *gram, size_t n, const AggMixing *mixing, double *mixed_gram, void *scratch);
/* How many mixed rows among rows[0..count) include input j, for each j: the
 * weights that express an average of mixed rows over the inputs. */
void agg_nnm_input_weights(const AggMixing *mixing, size_t n, const uint32_t *rows, size_t count, double *weights);

/* --- network.c --------------------------------------------------------- */

typedef struct AggNetwork {
    size_t wires;
    size_t count;
    uint8_t pairs[AGG_NETWORK_MAX_COMPARATORS][2]; /* (low, high) wire; low < high */
} AggNetwork;

/* Wire labels for agg_network_build. */
enum { AGG_WIRE_FREE = 0, AGG_WIRE_EXACT = 1, AGG_WIRE_GROUP = 2 };

/* A network on `wires` (1..AGG_NETWORK_MAX_WIRES) values that leaves on
 * every wire labelled EXACT the value a full sort puts there, and on the
 * wires labelled GROUP the same set of values as a full sort (in any order).
 * Built from Batcher's odd-even merge sort, pruned of every comparator
 * these outputs do not need. */
void agg_network_build(AggNetwork *network, size_t wires, const unsigned char *labels);

/* --- order.c ----------------------------------------------------------- */

typedef enum AggOrderKind { AGG_ORDER_MEDIAN, AGG_ORDER_TRIMMED, AGG_ORDER_BULYAN } AggOrderKind;

/* Per-thread scratch of agg_order_pass for `count` rows (beyond the source's). */
size_t agg_order_scratch_bytes(size_t count);
/* Coordinate-wise median, trimmed mean (drop `trim` per side) or Bulyan's
 * coordinate step (f = trim: average the count - 4f values nearest to the
 * median) of the source's rows, into out. */
void agg_order_pass(const AggSource *source, AggOrderKind kind, size_t trim, float *out, int threads, AggSlots *slots);

/* --- weiszfeld.c ------------------------------------------------------- */

size_t agg_combine_scratch_bytes(size_t count);
size_t agg_combine_partials_bytes(size_t count, size_t d);
/* One fused pass over the rows:
 *   next = (previous_weight * previous + sum_j row_weights[j] * row_j) * inverse_divisor
 * (sums in double; previous may be NULL when previous_weight is 0, and may
 * equal next), and, about the new point, distances2[j] = ||next - row_j||^2,
 * *change2 = ||next - previous||^2 (0 without previous) and *norm2 =
 * ||next||^2, each reduced per chunk and added in chunk order. */
void agg_combine_pass(const AggSource *source, double previous_weight, const float *previous,
                      const double *row_weights, double inverse_divisor, float *next, int threads, AggSlots *slots,
                      double *partials, double *distances2, double *change2, double *norm2);

#endif /* SPIRT_AGG_INTERNAL_H */
