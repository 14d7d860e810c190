/* jobs.c -- runs a command's work inline or on a worker thread
 * (see SpirtJob in spirt_module.h).
 *
 * Threading model. A long command (AVG, AGG, UPDATE, INFO over big tensors)
 * must not stall Redis's single main thread, which also answers heartbeats.
 * So, on the main thread, the command parses its arguments and takes
 * references to its input tensors (cheap: no copy), then blocks its client
 * (RedisModule_BlockClient) and starts a detached worker thread. The worker
 * computes into new tensors it allocates itself; inputs are never written by
 * anyone, so no lock is needed. It then unblocks the client; Redis calls
 * job_reply on the main thread, which stores the results, propagates them
 * and replies. Meanwhile the server keeps serving every other client,
 * including writes to the very keys the job reads (the job computes on the
 * values it took references to).
 *
 * Blocking is impossible inside MULTI, scripts, while loading, and for
 * commands from our master; there, and for small inputs (where a thread
 * costs more than it saves), the same three steps run inline. */
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "spirt_module.h"

/* For INFO spirt. Main thread only: jobs are submitted and destroyed there. */
static long long jobs_running, jobs_inline_total, jobs_threaded_total;

static void job_destroy(SpirtJob *job) {
    jobs_running--;
    job->destroy(job);
}

void spirt_jobs_info(RedisModuleInfoCtx *ctx) {
    RedisModule_InfoAddFieldLongLong(ctx, "jobs_running", jobs_running);
    RedisModule_InfoAddFieldLongLong(ctx, "jobs_inline_total", jobs_inline_total);
    RedisModule_InfoAddFieldLongLong(ctx, "jobs_threaded_total", jobs_threaded_total);
}

static int job_reply(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv, (void)argc;
    SpirtJob *job = RedisModule_GetBlockedClientPrivateData(ctx);
    return job->finish(ctx, job);
}

/* Called after job_reply, or instead of it when the client went away. */
static void job_free(RedisModuleCtx *ctx, void *privdata) {
    (void)ctx;
    SpirtJob *job = privdata;
    if (job) job_destroy(job);
}

static void *job_thread(void *argument) {
    SpirtJob *job = argument;
    job->compute(job);
    RedisModule_BlockedClientMeasureTimeEnd(job->blocked);
    RedisModule_UnblockClient(job->blocked, job);
    return NULL;
}

static int run_inline(RedisModuleCtx *ctx, SpirtJob *job) {
    job->blocked = NULL;
    jobs_inline_total++;
    job->compute(job);
    int status = job->finish(ctx, job);
    job_destroy(job);
    return status;
}

void *spirt_job_create(size_t size, void (*compute)(SpirtJob *job), int (*finish)(RedisModuleCtx *ctx, SpirtJob *job),
                       void (*destroy)(SpirtJob *job)) {
    SpirtJob *job = RedisModule_Alloc(size);
    memset(job, 0, size);
    job->compute = compute;
    job->finish = finish;
    job->destroy = destroy;
    return job;
}

int spirt_job_client_can_block(RedisModuleCtx *ctx) {
    int flags = RedisModule_GetContextFlags(ctx);
    int forbidden = REDISMODULE_CTX_FLAGS_LUA | REDISMODULE_CTX_FLAGS_MULTI | REDISMODULE_CTX_FLAGS_LOADING |
                    REDISMODULE_CTX_FLAGS_REPLICATED | REDISMODULE_CTX_FLAGS_DENY_BLOCKING;
    return (flags & forbidden) == 0;
}

int spirt_job_submit(RedisModuleCtx *ctx, SpirtJob *job, size_t work_floats) {
    spirt_error_clear(&job->error);
    jobs_running++;
    if (work_floats <= spirt_config.inline_max || !spirt_job_client_can_block(ctx)) return run_inline(ctx, job);

    job->blocked = RedisModule_BlockClient(ctx, job_reply, NULL, job_free, 0);
    if (job->blocked == NULL) return run_inline(ctx, job);
    jobs_threaded_total++;
    /* The blocked time shows in the command's statistics and slow log. */
    RedisModule_BlockedClientMeasureTimeStart(job->blocked);

    /* The worker (and the kernel threads it starts) block every signal, so
     * signals meant for Redis keep going to its own threads. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int started = pthread_create(&thread, &attributes, job_thread, job) == 0;
    pthread_attr_destroy(&attributes);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);

    if (!started) {
        /* No thread to be had: do the work here; the reply still goes
         * through job_reply once the event loop sees the unblock. */
        RedisModule_Log(ctx, "warning", "cannot start a worker thread; computing on the main thread");
        job_thread(job);
    }
    return REDISMODULE_OK;
}
