/* share.c -- work sharing: the pieces of a pass go to whichever thread is
 * free next.
 *
 * parallel_for gives each thread one fixed share of the work. On a machine
 * shared with other programs (2 cores here, often one of them busy), a
 * thread that loses its core for a while finishes last, and the pass takes
 * as long as its slowest share: with two threads and one core busy
 * elsewhere, about twice as long as on one thread alone. Here every thread
 * takes the next `grain` units each time it is free, so whichever thread
 * runs keeps taking work, and a pass slows down in proportion to the CPU
 * time it gets.
 *
 * Determinism is unaffected: every pass computes a unit the same way
 * whichever thread runs it (element-wise results, or per-chunk partial sums
 * combined in chunk order afterwards), so results stay bit-identical for any
 * thread count and any interleaving. */
#include "agg/agg_internal.h"
#include "spirt/parallel.h"

typedef struct Share {
    atomic_size_t next; /* the first unit not handed out yet */
    size_t count, grain;
    AggSlots *slots;
    AggShareBody body;
    void *context;
} Share;

static void share_worker(void *argument, size_t first, size_t last) {
    (void)first, (void)last; /* one call per thread; the pieces come from `next` */
    Share *share = argument;
    void *scratch = NULL;
    if (share->slots && (scratch = agg_slots_take(share->slots)) == NULL) return;
    for (;;) {
        size_t begin = atomic_fetch_add(&share->next, share->grain);
        if (begin >= share->count) return;
        size_t end = share->count - begin < share->grain ? share->count : begin + share->grain;
        share->body(share->context, scratch, begin, end);
    }
}

void agg_share(size_t count, size_t grain, int threads, AggSlots *slots, AggShareBody body, void *context) {
    if (count == 0) return;
    if (grain == 0) grain = 1;
    if (threads <= 0) threads = parallel_default_threads();
    size_t pieces = (count + grain - 1) / grain;
    if ((size_t)threads > pieces) threads = (int)pieces;
    if (slots) {
        if (threads > slots->slot_count) threads = slots->slot_count;
        agg_slots_reset(slots);
    }
    Share share = {.count = count, .grain = grain, .slots = slots, .body = body, .context = context};
    atomic_init(&share.next, 0);
    /* One range per thread: parallel_for only starts the workers. */
    parallel_for((size_t)threads, 1, threads, share_worker, &share);
}
