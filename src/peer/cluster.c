/* cluster.c -- the processes of a local run (see include/spirt/cluster.h). */
#define _GNU_SOURCE /* cpu_set_t, sched_getaffinity, sched_setaffinity */
#include "spirt/cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spirt/clock.h"
#include "spirt/log.h"
#include "spirt/store.h"

#define CLUSTER_MAX_CPU_GROUPS 256

struct Cluster {
    char run_dir[1024];
    ClusterProcess processes[CLUSTER_MAX_PROCESSES];
    size_t count;
    int cpu_group_count; /* 0: no plan */
    int current_cpu_group;
    cpu_set_t cpu_groups[CLUSTER_MAX_CPU_GROUPS];
};

Cluster *cluster_create(const char *run_dir, SpirtError *error) {
    Cluster *cluster = calloc(1, sizeof(*cluster));
    if (cluster == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(cluster->run_dir, sizeof(cluster->run_dir), "%s", run_dir);
    cluster->current_cpu_group = -1;
    return cluster;
}

int cluster_plan_cpu_groups(Cluster *cluster, int groups, SpirtError *error) {
    if (groups < 1 || groups > CLUSTER_MAX_CPU_GROUPS)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "CPU groups must be 1 to %d, not %d", CLUSTER_MAX_CPU_GROUPS,
                               groups);
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return spirt_error_set(error, SPIRT_ERR_IO, "sched_getaffinity: %s", strerror(errno));
    int cpus[CPU_SETSIZE], count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &allowed)) cpus[count++] = cpu;
    if (count == 0) return spirt_error_set(error, SPIRT_ERR_IO, "sched_getaffinity gave no CPU");
    /* Deal the CPUs round robin until every CPU and every group has had a
     * turn: CPU j to group j mod groups, and with fewer CPUs than groups
     * the CPUs again from the first. */
    for (int g = 0; g < groups; g++) CPU_ZERO(&cluster->cpu_groups[g]);
    for (int turn = 0; turn < (count > groups ? count : groups); turn++)
        CPU_SET(cpus[turn % count], &cluster->cpu_groups[turn % groups]);
    cluster->cpu_group_count = groups;
    return SPIRT_OK;
}

void cluster_use_cpu_group(Cluster *cluster, int group) {
    cluster->current_cpu_group = group >= 0 && group < cluster->cpu_group_count ? group : -1;
}

static void free_argv(char **argv) {
    for (size_t i = 0; argv && argv[i]; i++) free(argv[i]);
    free(argv);
}

void cluster_free(Cluster *cluster) {
    if (cluster == NULL) return;
    /* Workers and peers first, databases last: the others use them. */
    cluster_stop_kind(cluster, CLUSTER_WORKER, 2000);
    cluster_stop_kind(cluster, CLUSTER_PEER, 5000);
    cluster_stop_kind(cluster, CLUSTER_DATABASE, 10000);
    for (size_t i = 0; i < cluster->count; i++) free_argv(cluster->processes[i].argv);
    free(cluster);
}

static int spawn(const Cluster *cluster, ClusterProcess *process, SpirtError *error) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return spirt_error_set(error, SPIRT_ERR_IO, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        /* Own process group, so a terminal's Ctrl-C reaches only the
         * orchestrator, which then stops everyone in order. */
        setpgid(0, 0);
        /* Before exec, so every thread the program starts inherits it. A
         * failure only costs the placement. */
        if (process->cpu_group >= 0)
            (void)sched_setaffinity(0, sizeof(cpu_set_t), &cluster->cpu_groups[process->cpu_group]);
        int fd = open(process->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) {
            dup2(null_fd, STDIN_FILENO);
            close(null_fd);
        }
        execvp(process->argv[0], process->argv);
        fprintf(stderr, "cannot run %s: %s\n", process->argv[0], strerror(errno));
        _exit(127);
    }
    process->pid = pid;
    process->exited = 0;
    return SPIRT_OK;
}

int cluster_start_process(Cluster *cluster, const char *name, ClusterKind kind, const char *const *argv,
                          const char *log_path, int restart, ClusterProcess **out, SpirtError *error) {
    if (cluster->count == CLUSTER_MAX_PROCESSES)
        return spirt_error_set(error, SPIRT_ERR_PRECONDITION, "more than %d processes", CLUSTER_MAX_PROCESSES);
    ClusterProcess *process = &cluster->processes[cluster->count];
    memset(process, 0, sizeof(*process));
    snprintf(process->name, sizeof(process->name), "%s", name);
    snprintf(process->log_path, sizeof(process->log_path), "%s", log_path);
    process->kind = kind;
    process->restart = restart;
    process->cpu_group = cluster->current_cpu_group;
    size_t argc = 0;
    while (argv[argc]) argc++;
    process->argv = calloc(argc + 1, sizeof(char *));
    if (process->argv == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < argc; i++) process->argv[i] = strdup(argv[i]);
    int status = spawn(cluster, process, error);
    if (status != SPIRT_OK) {
        free_argv(process->argv);
        process->argv = NULL;
        return status;
    }
    cluster->count++;
    if (out) *out = process;
    return SPIRT_OK;
}

int cluster_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) == 0 &&
        getsockname(fd, (struct sockaddr *)&address, &length) == 0)
        port = ntohs(address.sin_port);
    close(fd);
    return port;
}

int cluster_start_database(Cluster *cluster, const char *name, const char *data_dir, const char *module_path,
                           int appendonly, const char *const *extra_args, ClusterProcess **out, SpirtError *error) {
    char log_path[1024];
    snprintf(log_path, sizeof(log_path), "%s/redis.log", data_dir);
    for (int attempt = 0; attempt < 3; attempt++) {
        int port = cluster_free_port();
        if (port < 0) return spirt_error_set(error, SPIRT_ERR_IO, "no free port: %s", strerror(errno));
        char port_text[16];
        snprintf(port_text, sizeof(port_text), "%d", port);
        const char *argv[64] = {"redis-server", "--port", port_text, "--bind", "127.0.0.1", "--dir", data_dir,
                                "--logfile", "redis.log", "--save", "", "--appendonly", appendonly ? "yes" : "no",
                                "--appendfsync", "everysec", "--daemonize", "no", "--loadmodule", module_path};
        size_t argc = 19;
        for (size_t i = 0; extra_args && extra_args[i] && argc < 62; i++) argv[argc++] = extra_args[i];
        argv[argc] = NULL;
        ClusterProcess *process = NULL;
        int status = cluster_start_process(cluster, name, CLUSTER_DATABASE, argv, log_path, 0, &process, error);
        if (status != SPIRT_OK) return status;
        process->port = port;
        /* Wait for PING, or for the server to give up (busy port, bad module). */
        char address[64];
        snprintf(address, sizeof(address), "127.0.0.1:%d", port);
        StoreOptions options = {.connect_timeout_ms = 1000};
        for (int i = 0; i < 1000; i++) {
            int child_status;
            if (waitpid(process->pid, &child_status, WNOHANG) == process->pid) {
                process->pid = 0;
                process->exited = 1;
                process->exit_code = WIFEXITED(child_status) ? WEXITSTATUS(child_status) : 128 + WTERMSIG(child_status);
                break;
            }
            StoreConn *conn = store_connect_address(address, &options, NULL);
            if (conn) {
                store_free(conn);
                if (out) *out = process;
                return SPIRT_OK;
            }
            clock_sleep_ms(20);
        }
        if (!process->exited) cluster_stop(cluster, process, 1000);
        log_warn("%s did not start on port %d (attempt %d); see %s", name, port, attempt + 1, log_path);
    }
    return spirt_error_set(error, SPIRT_ERR_IO, "%s: redis-server did not start (see %s)", name, log_path);
}

size_t cluster_poll(Cluster *cluster) {
    size_t ended = 0;
    for (size_t i = 0; i < cluster->count; i++) {
        ClusterProcess *process = &cluster->processes[i];
        if (process->pid <= 0) continue;
        int status;
        if (waitpid(process->pid, &status, WNOHANG) != process->pid) continue;
        process->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        process->pid = 0;
        if (process->restart && process->exit_code != 0) {
            process->restarts++;
            log_info("%s exited (%d); starting it again", process->name, process->exit_code);
            if (spawn(cluster, process, NULL) == SPIRT_OK) continue;
        }
        process->exited = 1;
        ended++;
    }
    return ended;
}

size_t cluster_running(const Cluster *cluster, ClusterKind kind) {
    size_t running = 0;
    for (size_t i = 0; i < cluster->count; i++)
        if (cluster->processes[i].kind == kind && cluster->processes[i].pid > 0) running++;
    return running;
}

ClusterProcess *cluster_process(Cluster *cluster, size_t index) {
    return index < cluster->count ? &cluster->processes[index] : NULL;
}

size_t cluster_process_count(const Cluster *cluster) { return cluster->count; }

static void stop_many(ClusterProcess **processes, size_t count, int grace_ms) {
    for (size_t i = 0; i < count; i++) {
        processes[i]->restart = 0;
        if (processes[i]->pid > 0) kill(processes[i]->pid, SIGTERM);
    }
    double deadline = clock_monotonic_ms() + grace_ms;
    for (;;) {
        size_t alive = 0;
        for (size_t i = 0; i < count; i++) {
            ClusterProcess *process = processes[i];
            if (process->pid <= 0) continue;
            int status;
            pid_t reaped = waitpid(process->pid, &status, WNOHANG);
            if (reaped == process->pid || (reaped < 0 && errno == ECHILD)) {
                if (reaped == process->pid)
                    process->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                process->pid = 0;
                process->exited = 1;
            } else {
                alive++;
            }
        }
        if (alive == 0) return;
        if (clock_monotonic_ms() > deadline) break;
        clock_sleep_ms(10);
    }
    for (size_t i = 0; i < count; i++) {
        ClusterProcess *process = processes[i];
        if (process->pid <= 0) continue;
        log_warn("%s did not stop in %d ms; killing it", process->name, grace_ms);
        kill(process->pid, SIGKILL);
        waitpid(process->pid, NULL, 0);
        process->pid = 0;
        process->exited = 1;
        process->exit_code = 128 + SIGKILL;
    }
}

void cluster_stop(Cluster *cluster, ClusterProcess *process, int grace_ms) {
    (void)cluster;
    stop_many(&process, 1, grace_ms);
}

void cluster_stop_kind(Cluster *cluster, ClusterKind kind, int grace_ms) {
    ClusterProcess *selected[CLUSTER_MAX_PROCESSES];
    size_t count = 0;
    for (size_t i = 0; i < cluster->count; i++)
        if (cluster->processes[i].kind == kind) selected[count++] = &cluster->processes[i];
    stop_many(selected, count, grace_ms);
}
