/* test_cluster.c -- CPU groups of a cluster: a process started in a group
 * runs on exactly that group's CPUs, read back from the kernel
 * (/proc/PID/status), for 1, 2 and 3 groups and more groups than CPUs;
 * every process is stopped by the cluster. */
#define _GNU_SOURCE /* cpu_set_t, sched_getaffinity */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spirt/cluster.h"
#include "test.h"

/* The CPUs a process may run on, as the kernel says. */
static int read_allowed(pid_t pid, cpu_set_t *set) {
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *file = fopen(path, "r");
    if (file == NULL) return -1;
    int found = -1;
    CPU_ZERO(set);
    while (fgets(line, sizeof(line), file)) {
        if (strncmp(line, "Cpus_allowed_list:", 18) != 0) continue;
        /* "0-3,6,8-9" */
        char *cursor = line + 18;
        while (*cursor) {
            char *end = NULL;
            long first = strtol(cursor, &end, 10);
            if (end == cursor) {
                cursor++;
                continue;
            }
            long last = first;
            if (*end == '-') last = strtol(end + 1, &end, 10);
            for (long cpu = first; cpu <= last; cpu++) CPU_SET((int)cpu, set);
            cursor = end;
        }
        found = 0;
    }
    fclose(file);
    return found;
}

int main(void) {
    test_begin("cluster: processes started in a CPU group run on its CPUs only");
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    CHECK(sched_getaffinity(0, sizeof(allowed), &allowed) == 0);
    int cpus[CPU_SETSIZE], count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &allowed)) cpus[count++] = cpu;
    SpirtError error;
    Cluster *cluster = cluster_create(test_temp_dir(), &error);
    CHECK(cluster != NULL);
    if (cluster == NULL) return test_finish();
    CHECK_ERROR(cluster_plan_cpu_groups(cluster, 0, &error), SPIRT_ERR_INVALID, &error, "CPU groups");

    const char *sleeper[] = {"sleep", "30", NULL};
    char log_path[600];
    test_temp_path(log_path, sizeof(log_path), "sleep.log");
    const int plans[] = {1, 2, 3, count + 1};
    for (size_t p = 0; p < sizeof(plans) / sizeof(plans[0]); p++) {
        int groups = plans[p];
        CHECK_OK(cluster_plan_cpu_groups(cluster, groups, &error), &error);
        for (int g = -1; g < groups; g++) {
            cluster_use_cpu_group(cluster, g);
            ClusterProcess *process = NULL;
            CHECK_OK(cluster_start_process(cluster, "sleeper", CLUSTER_WORKER, sleeper, log_path, 0, &process, &error),
                     &error);
            if (process == NULL) continue;
            /* Expected, worked out here: CPU j of the allowed list is in
             * group j mod groups; a group with none gets CPU g mod count. */
            cpu_set_t expected;
            CPU_ZERO(&expected);
            if (g < 0) {
                expected = allowed;
            } else {
                for (int j = 0; j < count; j++)
                    if (j % groups == g) CPU_SET(cpus[j], &expected);
                if (CPU_COUNT(&expected) == 0) CPU_SET(cpus[g % count], &expected);
            }
            cpu_set_t actual;
            int read = -1;
            /* The child sets its affinity before exec: wait for the exec. */
            for (int attempt = 0; attempt < 200; attempt++) {
                char path[64], name[32] = "";
                snprintf(path, sizeof(path), "/proc/%d/comm", (int)process->pid);
                FILE *file = fopen(path, "r");
                if (file && fgets(name, sizeof(name), file) && strncmp(name, "sleep", 5) == 0) {
                    fclose(file);
                    read = read_allowed(process->pid, &actual);
                    break;
                }
                if (file) fclose(file);
                struct timespec pause = {0, 10 * 1000 * 1000};
                nanosleep(&pause, NULL);
            }
            CHECKF(read == 0 && CPU_EQUAL(&actual, &expected), "%d groups, group %d: %d CPUs allowed, %d expected",
                   groups, g, read == 0 ? CPU_COUNT(&actual) : -1, CPU_COUNT(&expected));
            cluster_stop(cluster, process, 1000);
        }
    }
    cluster_use_cpu_group(cluster, 5000); /* out of the plan: anywhere */
    ClusterProcess *anywhere = NULL;
    CHECK_OK(cluster_start_process(cluster, "anywhere", CLUSTER_WORKER, sleeper, log_path, 0, &anywhere, &error), &error);
    CHECK(anywhere && anywhere->cpu_group == -1);
    cluster_free(cluster); /* stops what is still running, by pid */
    return test_finish();
}
