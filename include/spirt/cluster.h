/* cluster.h -- the processes of a local run: one redis-server per peer (the
 * module loaded), the peer processes and their workers.
 *
 * `spirt train` and the end-to-end tests start everything through a Cluster
 * and stop everything through it, by pid: databases are stopped with
 * SIGTERM (so they flush their AOF), then SIGKILL if they linger. Every
 * child also gets PR_SET_PDEATHSIG, so if the process that owns the cluster
 * dies, whatever way, its children die with it and nothing is left behind.
 * Processes marked `restart` (workers) are started again when they crash,
 * as a platform replaces a crashed function instance (a cold start).
 *
 * CPU groups (optional): the CPUs this process may use can be split into
 * groups, and a process started "in" a group runs on that group's CPUs
 * only (its threads too). `spirt train` puts each peer's database, workers
 * and engine in the peer's own group: the messages inside a peer (the
 * engine's invocations, the worker's reads and writes) then wake a process
 * on the same CPU, where the data just written is still in cache, instead
 * of another CPU by an interrupt -- on a 2-vCPU VM with 4 peers that made
 * rounds about 15% shorter (docs/benchmarks.md). */
#ifndef SPIRT_CLUSTER_H
#define SPIRT_CLUSTER_H

#include <stddef.h>
#include <sys/types.h>

#include "spirt/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CLUSTER_MAX_PROCESSES 512

typedef enum ClusterKind { CLUSTER_DATABASE = 0, CLUSTER_PEER = 1, CLUSTER_WORKER = 2 } ClusterKind;

typedef struct ClusterProcess {
    char name[64];       /* "db-0", "peer-0", "peer-0-worker-1" */
    ClusterKind kind;
    pid_t pid;           /* 0 once it has exited and not been restarted */
    int restart;         /* start it again when it exits with a failure */
    int restarts;        /* how many times it was started again */
    int exited;          /* it ended (and was not restarted) */
    int exit_code;       /* exit status, or 128 + signal */
    int port;            /* databases: the port */
    int cpu_group;       /* cluster_use_cpu_group when it started; -1: none */
    char log_path[1024];
    char **argv;         /* owned copy, for restarts */
} ClusterProcess;

typedef struct Cluster Cluster;

/* A cluster whose children log under `run_dir`. Owned: cluster_free (which
 * stops everything still running). */
Cluster *cluster_create(const char *run_dir, SpirtError *error);
void cluster_free(Cluster *cluster);

/* Starts redis-server on a free loopback port with `module_path` loaded and
 * its files in `data_dir` (AOF on if `appendonly`), and waits until it
 * answers PING. Extra arguments (NULL-terminated, may be NULL) go last. */
int cluster_start_database(Cluster *cluster, const char *name, const char *data_dir, const char *module_path,
                           int appendonly, const char *const *extra_args, ClusterProcess **process, SpirtError *error);

/* Starts argv[0] (a path) with its output appended to `log_path`. */
int cluster_start_process(Cluster *cluster, const char *name, ClusterKind kind, const char *const *argv,
                          const char *log_path, int restart, ClusterProcess **process, SpirtError *error);

/* Splits the CPUs this process may run on (sched_getaffinity) into
 * `groups` groups: CPU j of the allowed list goes to group j mod groups, so
 * every group gets an equal share when there are at least as many CPUs as
 * groups, and group g shares CPU g mod n with others when there are fewer.
 * SPIRT_ERR_INVALID for groups < 1, SPIRT_ERR_IO if the CPUs cannot be read. */
int cluster_plan_cpu_groups(Cluster *cluster, int groups, SpirtError *error);
/* Processes started from now on (and their restarts) run in `group` (0 to
 * groups - 1 of the plan), or anywhere for -1 (the default). */
void cluster_use_cpu_group(Cluster *cluster, int group);

/* Reaps children that exited since the last call, restarting those marked
 * `restart` that failed. Returns how many processes ended for good. */
size_t cluster_poll(Cluster *cluster);

/* A TCP port on 127.0.0.1 that is free right now (the kernel's choice;
 * another process may take it before it is used: callers retry). -1 if
 * none. */
int cluster_free_port(void);

/* How many processes of `kind` are still running. */
size_t cluster_running(const Cluster *cluster, ClusterKind kind);
/* Every process, in start order. */
ClusterProcess *cluster_process(Cluster *cluster, size_t index);
size_t cluster_process_count(const Cluster *cluster);

/* Stops one process (SIGTERM, then SIGKILL after grace_ms) and reaps it. */
void cluster_stop(Cluster *cluster, ClusterProcess *process, int grace_ms);
/* Stops every process of `kind`, all at once. */
void cluster_stop_kind(Cluster *cluster, ClusterKind kind, int grace_ms);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_CLUSTER_H */
