/* parallel.c -- parallel_for on short-lived POSIX threads
 * (see include/spirt/parallel.h).
 *
 * Threads are started per call. Starting one costs tens of microseconds,
 * nothing next to the millisecond-scale kernels that use this, and it keeps
 * the module free of a long-lived pool inside redis-server.
 *
 * Each helper starts on a CPU of its own. Left to itself, Linux often puts a
 * new thread on its creator's CPU when the creator is itself a thread that
 * has just started (a module job's worker in redis-server): the two then
 * share one CPU for the whole millisecond-scale kernel while the other CPU
 * idles. Measured with SPIRT.AVGUPDATE at 1M parameters and 4 sources on 2
 * CPUs (back to back, medians): 1.63 ms on a job thread, as slow as one
 * kernel thread (1.75), and 1.17 inline; with the helpers placed, 0.95 on
 * a job thread and 0.91-0.95 inline. So helper t is created on the t-th
 * allowed CPU after the caller's, and its affinity is widened back to every
 * CPU the caller may use right after: created there, Linux queues it there,
 * and the widening leaves it free to move (to the caller's CPU, say, if
 * its own is busy and the caller finishes first). A caller confined to one
 * CPU (a peer's share under `spirt train --placement peer`) keeps its
 * helpers there. */
#define _GNU_SOURCE /* cpu_set_t, sched_getcpu, pthread_attr_setaffinity_np */
#include "spirt/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

enum { MAX_THREADS = 64 };

typedef struct Range {
    ParallelBody body;
    void *context;
    size_t begin, end;
} Range;

static void *run_range(void *argument) {
    Range *range = argument;
    range->body(range->context, range->begin, range->end);
    return NULL;
}

/* The CPUs the calling thread may use, in order from the one after the CPU
 * it runs on (wrapping around); returns how many, 0 if unknown. */
static int cpus_after_current(cpu_set_t *allowed, int *cpus) {
    if (sched_getaffinity(0, sizeof(cpu_set_t), allowed) != 0) return 0;
    int current = sched_getcpu(), count = 0;
    if (current < 0) current = 0;
    for (int step = 1; step <= CPU_SETSIZE; step++) {
        int cpu = (current + step) % CPU_SETSIZE;
        if (CPU_ISSET(cpu, allowed)) cpus[count++] = cpu;
    }
    return count;
}

/* Starts a helper on `cpu`, then lets it run on any CPU of `allowed`
 * (cpu < 0: wherever Linux puts it); 1 if started. */
static int start_helper(pthread_t *id, Range *range, int cpu, const cpu_set_t *allowed) {
    pthread_attr_t attributes;
    if (pthread_attr_init(&attributes) != 0) return 0;
    int placed = 0;
    if (cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        placed = pthread_attr_setaffinity_np(&attributes, sizeof(one), &one) == 0;
    }
    int started = pthread_create(id, &attributes, run_range, range) == 0;
    pthread_attr_destroy(&attributes);
    if (started && placed) (void)pthread_setaffinity_np(*id, sizeof(cpu_set_t), allowed);
    return started;
}

int parallel_default_threads(void) {
    const char *configured = getenv("SPIRT_THREADS");
    if (configured) {
        int threads = atoi(configured);
        if (threads > 0) return threads > MAX_THREADS ? MAX_THREADS : threads;
    }
    /* The CPUs this thread may run on, not every CPU online: a process
     * confined to one CPU (a peer under `spirt train --placement peer`)
     * gains nothing from a second kernel thread taking turns with the
     * first. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) >= 1 &&
        (cpus < 1 || CPU_COUNT(&allowed) < cpus))
        cpus = CPU_COUNT(&allowed);
    if (cpus < 1) cpus = 1;
    return cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
}

void parallel_for(size_t count, size_t grain, int threads, ParallelBody body, void *context) {
    if (count == 0) return;
    if (grain == 0) grain = 1;
    if (threads <= 0) threads = parallel_default_threads();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    size_t grains = (count + grain - 1) / grain;
    if ((size_t)threads > grains) threads = (int)grains;
    if (threads <= 1) {
        body(context, 0, count);
        return;
    }
    Range ranges[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    size_t per_thread = (grains + (size_t)threads - 1) / (size_t)threads;
    cpu_set_t allowed;
    int cpus[CPU_SETSIZE];
    int cpu_count = cpus_after_current(&allowed, cpus);
    for (int t = 0; t < threads; t++) {
        size_t begin = (size_t)t * per_thread * grain;
        size_t end = begin + per_thread * grain;
        if (begin > count) begin = count;
        if (end > count) end = count;
        ranges[t] = (Range){body, context, begin, end};
    }
    for (int t = 1; t < threads; t++)
        if (ranges[t].begin < ranges[t].end)
            started[t] = start_helper(&ids[t], &ranges[t], cpu_count > 1 ? cpus[(t - 1) % cpu_count] : -1, &allowed);
    run_range(&ranges[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else if (ranges[t].begin < ranges[t].end)
            run_range(&ranges[t]); /* could not start a thread: do it here */
    }
}
