/* parallel.h -- a deterministic parallel for-loop over index ranges.
 *
 * parallel_for splits [0, count) into contiguous ranges whose boundaries are
 * multiples of `grain` and runs `body` on each, on up to `threads` threads
 * (the calling thread is one of them). It returns when every range is done.
 * Each helper thread starts on another CPU the caller may run on (the next
 * ones after the caller's) and is free to move from there.
 *
 * Determinism is the caller's contract and the reason this exists instead of
 * OpenMP: a body must compute each index the same way whatever range it is
 * in. Kernels that reduce (dot products, norms) reduce per fixed block of
 * indices and combine the blocks in order afterwards, so the result does not
 * depend on the thread count: peers with different core counts still agree
 * bit for bit. */
#ifndef SPIRT_PARALLEL_H
#define SPIRT_PARALLEL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*ParallelBody)(void *context, size_t begin, size_t end);

/* threads <= 0 means parallel_default_threads(). If threads cannot be started
 * the remaining ranges run on the calling thread: it never fails. */
void parallel_for(size_t count, size_t grain, int threads, ParallelBody body, void *context);

/* The number of CPUs the calling thread may run on (its affinity, at most
 * the CPUs online), or the SPIRT_THREADS environment variable if it is set
 * to a positive number. */
int parallel_default_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_PARALLEL_H */
