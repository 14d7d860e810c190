/* redis_fixture.h -- real redis-server processes for tests.
 *
 * test_redis_start() forks a redis-server on a free loopback port (with the
 * spirt module loaded if asked), waits until it answers PING and records its
 * pid. test_redis_stop() stops it by that pid (SIGTERM, then SIGKILL). The
 * child is also tied to the test with PR_SET_PDEATHSIG, so a test that
 * crashes or is killed by CTest's time-out never leaves a server behind.
 *
 * In the sanitizer build the module is instrumented, so the server is started
 * with the sanitizer runtimes preloaded (found in this process's own maps). */
#ifndef SPIRT_TEST_REDIS_FIXTURE_H
#define SPIRT_TEST_REDIS_FIXTURE_H

#include <hiredis/hiredis.h>
#include <sys/types.h>

typedef struct TestRedisOptions {
    int load_module;               /* load build/spirt.so */
    int appendonly;                /* AOF on (fsync everysec) */
    const char *dir;               /* data folder kept across restarts; NULL: a new one */
    const char *const *extra_args; /* NULL-terminated extra arguments, or NULL */
    int port;                      /* 0: pick a free port */
} TestRedisOptions;

typedef struct TestRedis {
    pid_t pid; /* 0 when not running */
    int port;
    char dir[512];      /* working folder (RDB/AOF files, redis.log) */
    char log_path[600]; /* the server's log file */
} TestRedis;

/* 0 on success; -1 with a message on stderr (including the server's log). */
int test_redis_start(TestRedis *server, const TestRedisOptions *options);
/* Graceful stop (SIGTERM: Redis saves/fsyncs per its configuration). */
void test_redis_stop(TestRedis *server);
/* Immediate SIGKILL, as a crash would. */
void test_redis_kill(TestRedis *server);
/* 1 if the process is still alive (and not a zombie). */
int test_redis_alive(TestRedis *server);
/* A blocking hiredis connection with a 10 s time-out; NULL on failure. */
redisContext *test_redis_connect(const TestRedis *server);
/* Path of build/spirt.so for this build. */
const char *test_module_path(void);
/* A free TCP port on 127.0.0.1 (racy by nature, good enough for tests). */
int test_free_port(void);

#endif /* SPIRT_TEST_REDIS_FIXTURE_H */
