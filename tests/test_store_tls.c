/* test_store_tls.c -- the client over TLS against a real TLS redis-server.
 *
 * The test makes its own PKI with the `openssl` command in its temp folder:
 * a CA, a server certificate for localhost / 127.0.0.1, a client
 * certificate, and a second, unrelated CA with its own client. The server
 * runs with --tls-port and, once the fixture has seen it answer, its plain
 * port closed (CONFIG SET port 0), so everything after that is TLS only.
 *
 * SPIRT_TEST_LABELS: db */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "redis_fixture.h"
#include "spirt/rng.h"
#include "spirt/store.h"
#include "store_round_trip.h"
#include "test.h"

/* Runs a command, its output into the temp folder's openssl.log. */
static int run(const char *const *argv) {
    char log_path[600];
    test_temp_path(log_path, sizeof(log_path), "openssl.log");
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (log >= 0) {
            dup2(log, STDOUT_FILENO);
            dup2(log, STDERR_FILENO);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int write_file(const char *path, const char *text) {
    FILE *file = fopen(path, "w");
    if (file == NULL) return -1;
    fputs(text, file);
    return fclose(file);
}

typedef struct Pki {
    char ca[512], server_cert[512], server_key[512], client_cert[512], client_key[512];
    char other_ca[512], other_client_cert[512], other_client_key[512];
} Pki;

/* A self-signed CA named `name` (name.crt, name.key). */
static int make_ca(const char *name, char *certificate, size_t size) {
    char key[512], subject[128];
    snprintf(certificate, size, "%s/%s.crt", test_temp_dir(), name);
    snprintf(key, sizeof(key), "%s/%s.key", test_temp_dir(), name);
    snprintf(subject, sizeof(subject), "/CN=%s", name);
    const char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                          "-nodes", "-keyout", key, "-out", certificate, "-days", "2", "-subj", subject, NULL};
    return run(argv);
}

/* A certificate `name` signed by CA `ca_name`, with extensions `extensions`. */
static int make_signed(const char *ca_name, const char *name, const char *extensions, char *certificate,
                       char *key, size_t size) {
    char request[512], ext_path[512], ca_cert[512], ca_key[512], subject[128];
    const char *dir = test_temp_dir();
    snprintf(certificate, size, "%s/%s.crt", dir, name);
    snprintf(key, size, "%s/%s.key", dir, name);
    snprintf(request, sizeof(request), "%s/%s.csr", dir, name);
    snprintf(ext_path, sizeof(ext_path), "%s/%s.ext", dir, name);
    snprintf(ca_cert, sizeof(ca_cert), "%s/%s.crt", dir, ca_name);
    snprintf(ca_key, sizeof(ca_key), "%s/%s.key", dir, ca_name);
    snprintf(subject, sizeof(subject), "/CN=%s", name);
    if (write_file(ext_path, extensions) != 0) return -1;
    const char *request_argv[] = {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                  "-nodes", "-keyout", key, "-out", request, "-subj", subject, NULL};
    const char *sign_argv[] = {"openssl", "x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key,
                               "-CAcreateserial", "-days", "2", "-out", certificate, "-extfile", ext_path, NULL};
    return run(request_argv) == 0 && run(sign_argv) == 0 ? 0 : -1;
}

static int make_pki(Pki *pki) {
    if (make_ca("spirt-ca", pki->ca, sizeof(pki->ca)) != 0) return -1;
    if (make_ca("other-ca", pki->other_ca, sizeof(pki->other_ca)) != 0) return -1;
    if (make_signed("spirt-ca", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
                    pki->server_cert, pki->server_key, sizeof(pki->server_cert)) != 0)
        return -1;
    if (make_signed("spirt-ca", "peer-client", "extendedKeyUsage=clientAuth\n", pki->client_cert, pki->client_key,
                    sizeof(pki->client_cert)) != 0)
        return -1;
    return make_signed("other-ca", "stranger", "extendedKeyUsage=clientAuth\n", pki->other_client_cert,
                       pki->other_client_key, sizeof(pki->other_client_cert));
}

static int connect_status(const StoreOptions *options, SpirtError *error) {
    StoreConn *conn = store_connect(options, error);
    if (conn == NULL) return error->code;
    int status = store_ping(conn, error);
    store_free(conn);
    return status;
}

static void test_tls(const Pki *pki, TestRedis *redis, int tls_port) {
    SpirtError error;
    test_begin("TLS and plain do not mix");
    StoreOptions tls_to_plain = {.port = redis->port, .connect_timeout_ms = 2000};
    tls_to_plain.tls = (StoreTlsOptions){.enabled = 1, .ca_file = pki->ca};
    int status = connect_status(&tls_to_plain, &error);
    CHECKF(status == SPIRT_ERR_IO || status == SPIRT_ERR_CLOSED || status == SPIRT_ERR_TIMEOUT, "status %d: %s",
           status, error.message);
    StoreOptions plain_to_tls = {.port = tls_port, .connect_timeout_ms = 2000};
    status = connect_status(&plain_to_tls, &error);
    CHECKF(status == SPIRT_ERR_IO || status == SPIRT_ERR_CLOSED || status == SPIRT_ERR_TIMEOUT ||
               status == SPIRT_ERR_PROTOCOL,
           "status %d: %s", status, error.message);

    /* From here on the server speaks TLS only. */
    redisContext *direct = test_redis_connect(redis);
    redisReply *reply = direct ? redisCommand(direct, "CONFIG SET port 0") : NULL;
    CHECK(reply && reply->type == REDIS_REPLY_STATUS);
    if (reply) freeReplyObject(reply);
    if (direct) redisFree(direct);
    StoreOptions plain = {.port = redis->port};
    CHECK_ERROR(connect_status(&plain, &error), SPIRT_ERR_IO, &error, "refused");

    test_begin("TLS with server verification");
    StoreOptions options = {.host = "127.0.0.1", .port = tls_port};
    options.tls = (StoreTlsOptions){.enabled = 1, .ca_file = pki->ca};
    StoreConn *conn = store_connect(&options, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        /* 4 MB of random bytes: many TLS records, partial writes. */
        size_t size = (size_t)4 << 20;
        unsigned char *blob = malloc(size);
        SpirtRng rng;
        rng_init(&rng, 99);
        for (size_t i = 0; blob && i < size; i++) blob[i] = (unsigned char)rng_next_u64(&rng);
        CHECK_OK(store_set(conn, "tls:blob", blob, size, &error), &error);
        char *value = NULL;
        size_t length = 0;
        CHECK_OK(store_get(conn, "tls:blob", &value, &length, &error), &error);
        CHECK(value && length == size && memcmp(value, blob, size) == 0);
        free(value);
        free(blob);
        for (int i = 0; i < 2000; i++) store_append(conn, &error, "INCR tls:counter");
        int pipeline_ok = 1;
        for (int i = 1; i <= 2000; i++) {
            StoreReply *incr = NULL;
            pipeline_ok &= store_get_reply(conn, &incr, &error) == SPIRT_OK && incr->integer == i;
            store_reply_free(incr);
        }
        CHECK(pipeline_ok);
        test_begin("values and tensors of every size round-trip bit for bit (TLS)");
        store_check_round_trips(conn, 34, 1);
        store_free(conn);
    }
    StoreOptions by_name = options;
    by_name.host = "localhost"; /* verified as a DNS name */
    CHECK_OK(connect_status(&by_name, &error), &error);
    char text[64];
    snprintf(text, sizeof(text), "rediss://127.0.0.1:%d", tls_port);
    StoreOptions defaults = {0};
    defaults.tls.ca_file = pki->ca;
    conn = store_connect_address(text, &defaults, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    store_free(conn);

    test_begin("TLS verification failures are clear");
    StoreOptions wrong_name = options;
    wrong_name.tls.server_name = "db.elsewhere.example";
    CHECK_ERROR(connect_status(&wrong_name, &error), SPIRT_ERR_AUTH, &error, "hostname mismatch");
    wrong_name.tls.skip_hostname_check = 1; /* the chain alone still holds */
    CHECK_OK(connect_status(&wrong_name, &error), &error);
    StoreOptions wrong_ca = options;
    wrong_ca.tls.ca_file = pki->other_ca;
    CHECK_ERROR(connect_status(&wrong_ca, &error), SPIRT_ERR_AUTH, &error, "verification failed");
    wrong_ca.tls.skip_hostname_check = 1; /* no switch turns the chain check off */
    CHECK_ERROR(connect_status(&wrong_ca, &error), SPIRT_ERR_AUTH, &error, "verification failed");
    StoreOptions missing = options;
    missing.tls.ca_file = "/nonexistent/ca.pem";
    CHECK_ERROR(connect_status(&missing, &error), SPIRT_ERR_INVALID, &error, "/nonexistent/ca.pem");
    StoreOptions half = options;
    half.tls.cert_file = pki->client_cert;
    CHECK_ERROR(connect_status(&half, &error), SPIRT_ERR_INVALID, &error, "key_file");
    StoreOptions mismatched = options;
    mismatched.tls.cert_file = pki->client_cert;
    mismatched.tls.key_file = pki->server_key;
    CHECK_ERROR(connect_status(&mismatched, &error), SPIRT_ERR_INVALID, &error, "mismatch");

    test_begin("mutual TLS");
    StoreOptions mutual = options;
    mutual.tls.cert_file = pki->client_cert;
    mutual.tls.key_file = pki->client_key;
    conn = store_connect(&mutual, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        CHECK_OK(store_command(conn, NULL, &error, "CONFIG SET tls-auth-clients yes"), &error);
        store_free(conn);
    }
    CHECK_ERROR(connect_status(&options, &error), SPIRT_ERR_AUTH, &error, "client certificate");
    CHECK_OK(connect_status(&mutual, &error), &error);
    StoreOptions stranger = options;
    stranger.tls.cert_file = pki->other_client_cert;
    stranger.tls.key_file = pki->other_client_key;
    CHECK_ERROR(connect_status(&stranger, &error), SPIRT_ERR_AUTH, &error, "client certificate");

    test_begin("a TLS server killed mid-session");
    conn = store_connect(&mutual, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        test_redis_kill(redis);
        /* A large write into a dead connection: an error, never SIGPIPE
         * (which is at its default here, and would end the test). */
        size_t size = (size_t)8 << 20;
        char *big = calloc(1, size);
        status = store_set(conn, "gone", big, size, &error);
        CHECKF(status == SPIRT_ERR_CLOSED || status == SPIRT_ERR_IO, "status %d: %s", status, error.message);
        free(big);
        CHECK(store_conn_status(conn) == status);
        store_free(conn);
    }
}

int main(void) {
    signal(SIGPIPE, SIG_DFL);
    Pki pki;
    if (make_pki(&pki) != 0) {
        CHECK(!"openssl could not make the test certificates (see openssl.log)");
        return test_finish();
    }
    int tls_port = test_free_port();
    char port_text[16];
    snprintf(port_text, sizeof(port_text), "%d", tls_port);
    const char *args[] = {"--tls-port",          port_text,       "--tls-cert-file",   pki.server_cert,
                          "--tls-key-file",      pki.server_key,  "--tls-ca-cert-file", pki.ca,
                          "--tls-auth-clients",  "optional",      NULL};
    TestRedisOptions options = {.extra_args = args, .load_module = 1}; /* tensors over TLS too */
    TestRedis redis;
    if (test_redis_start(&redis, &options) != 0) {
        CHECK(!"redis-server with TLS did not start");
        return test_finish();
    }
    test_tls(&pki, &redis, tls_port);
    test_redis_stop(&redis);
    return test_finish();
}
