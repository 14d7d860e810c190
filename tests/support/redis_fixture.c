/* redis_fixture.c -- real redis-server processes for tests
 * (see tests/redis_fixture.h). */
#include "redis_fixture.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spirt/cluster.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define FIXTURE_SANITIZED 1
#else
#define FIXTURE_SANITIZED 0
#endif

const char *test_module_path(void) {
    static char path[1024];
    const char *build = getenv("SPIRT_BUILD_DIR");
    snprintf(path, sizeof(path), "%s/spirt.so", build && *build ? build : SPIRT_BUILD_DIR);
    return path;
}

int test_free_port(void) { return cluster_free_port(); }

/* The sanitizer runtimes this process was linked with, as an LD_PRELOAD
 * value, so an instrumented module can load into an uninstrumented server. */
static void sanitizer_preload(char *out, size_t size) {
    out[0] = '\0';
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL) return;
    char line[1024], asan[512] = "", ubsan[512] = "";
    while (fgets(line, sizeof(line), maps)) {
        char *path = strchr(line, '/');
        if (path == NULL) continue;
        path[strcspn(path, "\n")] = '\0';
        if (!asan[0] && strstr(path, "/libasan.so")) snprintf(asan, sizeof(asan), "%s", path);
        if (!ubsan[0] && strstr(path, "/libubsan.so")) snprintf(ubsan, sizeof(ubsan), "%s", path);
    }
    fclose(maps);
    snprintf(out, size, "%s%s%s", asan, asan[0] && ubsan[0] ? ":" : "", ubsan);
}

static void print_log(const TestRedis *server) {
    FILE *log = fopen(server->log_path, "r");
    if (log == NULL) return;
    char line[1024];
    fprintf(stderr, "---- %s ----\n", server->log_path);
    while (fgets(line, sizeof(line), log)) fputs(line, stderr);
    fclose(log);
}

static int wait_for_pong(TestRedis *server, double seconds) {
    struct timespec pause = {0, 20 * 1000 * 1000};
    int attempts = (int)(seconds / 0.02);
    for (int i = 0; i < attempts; i++) {
        int status;
        if (waitpid(server->pid, &status, WNOHANG) == server->pid) {
            server->pid = 0;
            return -1; /* exited: a bad argument, a busy port, a module that failed to load */
        }
        struct timeval timeout = {1, 0};
        redisContext *context = redisConnectWithTimeout("127.0.0.1", server->port, timeout);
        if (context && !context->err) {
            redisReply *reply = redisCommand(context, "PING");
            int ok = reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
            if (reply) freeReplyObject(reply);
            redisFree(context);
            if (ok) return 0;
        } else if (context) {
            redisFree(context);
        }
        nanosleep(&pause, NULL);
    }
    return -1;
}

static int start_once(TestRedis *server, const TestRedisOptions *options) {
    char port_text[16];
    snprintf(port_text, sizeof(port_text), "%d", server->port);
    const char *argv[64];
    int argc = 0;
    argv[argc++] = "redis-server";
    argv[argc++] = "--port";
    argv[argc++] = port_text;
    argv[argc++] = "--bind";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "--dir";
    argv[argc++] = server->dir;
    argv[argc++] = "--logfile";
    argv[argc++] = server->log_path;
    argv[argc++] = "--save";
    argv[argc++] = "";
    argv[argc++] = "--appendonly";
    argv[argc++] = options->appendonly ? "yes" : "no";
    argv[argc++] = "--daemonize";
    argv[argc++] = "no";
    if (options->load_module) {
        argv[argc++] = "--loadmodule";
        argv[argc++] = test_module_path();
    }
    for (int i = 0; options->extra_args && options->extra_args[i] && argc < 62; i++)
        argv[argc++] = options->extra_args[i];
    argv[argc] = NULL;

    char preload[1100] = "";
    if (FIXTURE_SANITIZED && options->load_module) sanitizer_preload(preload, sizeof(preload));

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        /* Die with the test, whatever way it ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        if (preload[0]) {
            setenv("LD_PRELOAD", preload, 1);
            /* Redis does not free everything at exit; leaks are checked in
             * the test processes, not in the server. */
            setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1", 1);
        }
        execvp("redis-server", (char *const *)argv);
        fprintf(stderr, "cannot run redis-server: %s\n", strerror(errno));
        _exit(127);
    }
    server->pid = pid;
    if (wait_for_pong(server, 20.0) == 0) return 0;
    return -1;
}

int test_redis_start(TestRedis *server, const TestRedisOptions *options) {
    static const TestRedisOptions defaults = {0};
    if (options == NULL) options = &defaults;
    memset(server, 0, sizeof(*server));
    if (options->dir) {
        snprintf(server->dir, sizeof(server->dir), "%s", options->dir);
        mkdir(server->dir, 0700);
    } else {
        static int counter;
        snprintf(server->dir, sizeof(server->dir), "%s/redis-%d", test_temp_dir(), ++counter);
        if (mkdir(server->dir, 0700) != 0 && errno != EEXIST) {
            perror(server->dir);
            return -1;
        }
    }
    snprintf(server->log_path, sizeof(server->log_path), "%s/redis.log", server->dir);
    for (int attempt = 0; attempt < 3; attempt++) {
        server->port = options->port ? options->port : test_free_port();
        if (start_once(server, options) == 0) return 0;
        if (server->pid) test_redis_kill(server);
        if (options->port) break; /* a fixed port will not get better */
    }
    fprintf(stderr, "redis-server did not start (port %d)\n", server->port);
    print_log(server);
    return -1;
}

static void stop_with(TestRedis *server, int signal_number, double grace_seconds) {
    if (server->pid <= 0) return;
    kill(server->pid, signal_number);
    struct timespec pause = {0, 10 * 1000 * 1000};
    for (int i = 0; i < (int)(grace_seconds * 100); i++) {
        if (waitpid(server->pid, NULL, WNOHANG) == server->pid) {
            server->pid = 0;
            return;
        }
        nanosleep(&pause, NULL);
    }
    kill(server->pid, SIGKILL);
    waitpid(server->pid, NULL, 0);
    server->pid = 0;
}

void test_redis_stop(TestRedis *server) { stop_with(server, SIGTERM, 10.0); }

void test_redis_kill(TestRedis *server) { stop_with(server, SIGKILL, 5.0); }

int test_redis_alive(TestRedis *server) {
    if (server->pid <= 0) return 0;
    if (waitpid(server->pid, NULL, WNOHANG) == server->pid) {
        server->pid = 0;
        return 0;
    }
    return kill(server->pid, 0) == 0;
}

redisContext *test_redis_connect(const TestRedis *server) {
    struct timeval timeout = {10, 0};
    redisContext *context = redisConnectWithTimeout("127.0.0.1", server->port, timeout);
    if (context == NULL || context->err) {
        fprintf(stderr, "cannot connect to redis on port %d: %s\n", server->port,
                context ? context->errstr : "out of memory");
        if (context) redisFree(context);
        return NULL;
    }
    redisSetTimeout(context, timeout);
    return context;
}
