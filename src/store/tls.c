/* tls.c -- the TLS transport (OpenSSL), for "rediss://" databases.
 *
 * hiredis 0.14 has no TLS, so the connection code writes and reads RESP
 * bytes through this transport instead of a plain socket (transport.h).
 * Verification is always on: the server's chain against the given CA file
 * (or the system store), and its name against the host (or server_name),
 * unless the caller explicitly skips the name check. A client certificate
 * and key make it mutual TLS.
 *
 * SSL_write has no gather form: a request's large pieces (tensor values)
 * are encrypted straight from the caller's memory, small ones gathered into
 * one record first (next_write).
 *
 * OpenSSL does its socket I/O through a small BIO of ours that sends with
 * MSG_NOSIGNAL: a server that vanishes mid-write is reported as an error
 * instead of raising SIGPIPE in a process that did not ask for it.
 *
 * Each connection has its own SSL_CTX (certificate files are read at each
 * connect, so renewed files are picked up by a reconnect). OpenSSL's error
 * queue is per thread; it is cleared before each call and drained after a
 * failure, so messages always belong to the call that failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "store/transport.h"

/* The largest plaintext of one TLS record: small pieces of a request are
 * gathered up to this before SSL_write (it has no writev). */
enum { TLS_STAGING_BYTES = 16 * 1024 };

typedef struct TlsTransport {
    StoreTransport base; /* first, so a StoreTransport * is a TlsTransport * */
    SSL_CTX *context;
    SSL *ssl;
    int failed; /* after a fatal error OpenSSL forbids SSL_shutdown */
    char staging[TLS_STAGING_BYTES];
} TlsTransport;

/* --- The socket BIO (created once per process, never freed: an immutable
 * method table, like a type handle) --- */

static BIO_METHOD *socket_method;
static pthread_once_t socket_method_once = PTHREAD_ONCE_INIT;

static int bio_fd(BIO *bio) { return (int)(intptr_t)BIO_get_data(bio); }

static int bio_socket_read(BIO *bio, char *buffer, int size) {
    BIO_clear_retry_flags(bio);
    for (;;) {
        ssize_t n = recv(bio_fd(bio), buffer, (size_t)size, 0);
        if (n >= 0) return (int)n; /* 0 is end of file */
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
        return -1;
    }
}

static int bio_socket_write(BIO *bio, const char *data, int size) {
    BIO_clear_retry_flags(bio);
    for (;;) {
        ssize_t n = send(bio_fd(bio), data, (size_t)size, MSG_NOSIGNAL);
        if (n >= 0) return (int)n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
        return -1;
    }
}

static long bio_socket_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)bio, (void)number, (void)pointer;
    /* Writes go straight to the socket, so there is never anything to
     * flush; every other control is unsupported, which OpenSSL accepts. */
    return command == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_socket_create(BIO *bio) {
    BIO_set_init(bio, 1);
    return 1;
}

static int bio_socket_destroy(BIO *bio) {
    (void)bio; /* the transport owns and closes the fd */
    return 1;
}

static void create_socket_method(void) {
    int index = BIO_get_new_index();
    if (index == -1) return;
    BIO_METHOD *method = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "spirt socket");
    if (method == NULL) return;
    BIO_meth_set_read(method, bio_socket_read);
    BIO_meth_set_write(method, bio_socket_write);
    BIO_meth_set_ctrl(method, bio_socket_ctrl);
    BIO_meth_set_create(method, bio_socket_create);
    BIO_meth_set_destroy(method, bio_socket_destroy);
    socket_method = method;
}

/* --- Errors --- */

/* The first queued OpenSSL error as text (and its reason code), then the
 * queue emptied. */
static unsigned long take_openssl_error(char *text, size_t size) {
    unsigned long code = ERR_get_error();
    if (code != 0)
        ERR_error_string_n(code, text, size);
    else
        snprintf(text, size, "no detail from OpenSSL");
    ERR_clear_error();
    return code;
}

/* Alerts by which a server says it refused our certificate (or the lack
 * of one): an authentication failure, not a broken network. */
static int is_certificate_alert(int reason) {
    switch (reason) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return 1;
    default:
        return 0;
    }
}

/* Turns a failed SSL_* call into a SpirtStatus with a message. */
static int tls_failure(TlsTransport *tls, int result, const char *doing, SpirtError *error) {
    int kind = SSL_get_error(tls->ssl, result);
    int saved_errno = errno;
    tls->failed = kind == SSL_ERROR_SYSCALL || kind == SSL_ERROR_SSL;
    if (kind == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return spirt_error_set(error, SPIRT_ERR_CLOSED, "connection closed by the server (TLS close_notify)");
    }
    if (kind == SSL_ERROR_SYSCALL) {
        char detail[256];
        unsigned long code = take_openssl_error(detail, sizeof(detail));
        if (code != 0) return spirt_error_set(error, SPIRT_ERR_IO, "TLS %s: %s", doing, detail);
        if (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE)
            return spirt_error_set(error, SPIRT_ERR_CLOSED, "connection closed by the server during TLS %s",
                                   doing);
        return spirt_error_set(error, SPIRT_ERR_IO, "TLS %s: %s", doing, strerror(saved_errno));
    }
    /* Our side refused the server's certificate: say why in X.509 terms. */
    long verify = SSL_get_verify_result(tls->ssl);
    if (kind == SSL_ERROR_SSL && verify != X509_V_OK) {
        ERR_clear_error();
        return spirt_error_set(error, SPIRT_ERR_AUTH, "TLS certificate verification failed: %s",
                               X509_verify_cert_error_string(verify));
    }
    char detail[256];
    unsigned long code = take_openssl_error(detail, sizeof(detail));
    int reason = ERR_GET_REASON(code);
    if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        return spirt_error_set(error, SPIRT_ERR_CLOSED, "connection closed by the server during TLS %s", doing);
    if (is_certificate_alert(reason))
        return spirt_error_set(error, SPIRT_ERR_AUTH, "the server refused the TLS client certificate: %s",
                               detail);
    return spirt_error_set(error, SPIRT_ERR_IO, "TLS %s: %s", doing, detail);
}

/* --- The transport --- */

/* 1 (with transport->want set) if an SSL_read/SSL_write result only
 * means "not ready yet": TLS may need to read to write and the other way
 * round, so the wait is for what OpenSSL asks, not for what we did. */
static int not_ready(TlsTransport *tls, int result) {
    int kind = SSL_get_error(tls->ssl, result);
    if (kind != SSL_ERROR_WANT_READ && kind != SSL_ERROR_WANT_WRITE) return 0;
    tls->base.want = kind == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
    return 1;
}

/* Decrypts into the pieces in turn. Only the first read may wait for the
 * socket; later pieces are filled only from what OpenSSL already holds
 * decrypted (SSL_pending), so one call never blocks on a second record. */
static ssize_t tls_read(StoreTransport *transport, const struct iovec *pieces, int count, SpirtError *error) {
    TlsTransport *tls = (TlsTransport *)transport;
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        size_t size = pieces[i].iov_len;
        if (size == 0) continue;
        if (total > 0 && SSL_pending(tls->ssl) <= 0) break;
        ERR_clear_error();
        int n = SSL_read(tls->ssl, pieces[i].iov_base, size > INT_MAX ? INT_MAX : (int)size);
        if (n <= 0) {
            /* Bytes already moved come first; a failure here shows again
             * on the next call. */
            if (total > 0) {
                ERR_clear_error();
                break;
            }
            if (not_ready(tls, n)) return 0;
            return tls_failure(tls, n, "read", error);
        }
        total += (size_t)n;
        if ((size_t)n < size) break;
    }
    return (ssize_t)total;
}

/* The pieces from `skip` bytes on (0-length pieces skipped): the index of
 * the piece where they start, and the offset into it. */
static int find_start(const struct iovec *pieces, int count, size_t *offset) {
    int i = 0;
    while (i < count && *offset >= pieces[i].iov_len) *offset -= pieces[i++].iov_len;
    return i;
}

/* What one SSL_write sends: a large piece goes as it is (no copy), smaller
 * ones are gathered into the staging buffer up to a full TLS record, so a
 * request of many small arguments does not become many tiny records. Both
 * depend only on the pieces, so a retry after "not ready" (which OpenSSL
 * requires to offer the same bytes again) offers exactly the same bytes. */
static const void *next_write(TlsTransport *tls, const struct iovec *pieces, int count, size_t *size) {
    size_t offset = 0;
    int first = find_start(pieces, count, &offset);
    *size = 0;
    if (first == count) return NULL;
    size_t rest = pieces[first].iov_len - offset;
    if (rest >= TLS_STAGING_BYTES) {
        *size = rest > INT_MAX ? INT_MAX : rest;
        return (const char *)pieces[first].iov_base + offset;
    }
    size_t used = 0;
    for (int i = first; i < count && used < TLS_STAGING_BYTES; i++, offset = 0) {
        size_t take = pieces[i].iov_len - offset;
        if (take > TLS_STAGING_BYTES - used) take = TLS_STAGING_BYTES - used;
        memcpy(tls->staging + used, (const char *)pieces[i].iov_base + offset, take);
        used += take;
    }
    *size = used;
    return tls->staging;
}

static ssize_t tls_write(StoreTransport *transport, const struct iovec *pieces, int count, SpirtError *error) {
    TlsTransport *tls = (TlsTransport *)transport;
    size_t size = 0;
    const void *data = next_write(tls, pieces, count, &size);
    if (size == 0) return spirt_error_set(error, SPIRT_ERR_INTERNAL, "TLS write of nothing");
    ERR_clear_error();
    int n = SSL_write(tls->ssl, data, (int)size);
    if (n > 0) return n;
    if (not_ready(tls, n)) return 0;
    int status = tls_failure(tls, n, "write", error);
    if (status == SPIRT_ERR_CLOSED) {
        /* A server that refuses our certificate sends an alert and hangs
         * up, and in TLS 1.3 that comes after our handshake has finished:
         * the first write then meets a closed socket. The alert may still
         * be readable, and it is the real reason. */
        char scratch[256];
        ERR_clear_error();
        int got = SSL_read(tls->ssl, scratch, sizeof(scratch));
        if (got <= 0 && SSL_get_error(tls->ssl, got) == SSL_ERROR_SSL) {
            SpirtError alert;
            if (tls_failure(tls, got, "write", &alert) == SPIRT_ERR_AUTH)
                return spirt_error_set(error, SPIRT_ERR_AUTH, "%s", alert.message);
        }
        ERR_clear_error();
    }
    return status;
}

static void tls_close(StoreTransport *transport) {
    if (transport == NULL) return;
    TlsTransport *tls = (TlsTransport *)transport;
    if (tls->ssl != NULL) {
        /* One non-blocking attempt at close_notify; the server does not
         * need it (RESP is framed), it is only polite. */
        if (!tls->failed && SSL_is_init_finished(tls->ssl)) SSL_shutdown(tls->ssl);
        ERR_clear_error();
        SSL_free(tls->ssl); /* frees the BIO too */
    }
    SSL_CTX_free(tls->context);
    if (transport->fd >= 0) close(transport->fd);
    free(tls);
}

static const StoreTransportOps tls_ops = {"tls", tls_read, tls_write, tls_close};

/* An encrypted key file would otherwise make OpenSSL prompt on the
 * terminal; a library must fail instead. */
static int refuse_passphrase(char *buffer, int size, int writing, void *data) {
    (void)buffer, (void)size, (void)writing, (void)data;
    return 0;
}

static int load_files(SSL_CTX *context, const StoreTlsOptions *options, SpirtError *error) {
    char detail[256];
    SSL_CTX_set_default_passwd_cb(context, refuse_passphrase);
    if (options->ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(context, options->ca_file, NULL) != 1) {
            take_openssl_error(detail, sizeof(detail));
            return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS CA file %s: %s", options->ca_file, detail);
        }
    } else if (SSL_CTX_set_default_verify_paths(context) != 1) {
        take_openssl_error(detail, sizeof(detail));
        return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS: cannot load the system CA store: %s", detail);
    }
    if ((options->cert_file == NULL) != (options->key_file == NULL))
        return spirt_error_set(error, SPIRT_ERR_INVALID,
                               "TLS: a client certificate needs both cert_file and key_file");
    if (options->cert_file == NULL) return SPIRT_OK;
    if (SSL_CTX_use_certificate_chain_file(context, options->cert_file) != 1) {
        take_openssl_error(detail, sizeof(detail));
        return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS certificate file %s: %s", options->cert_file, detail);
    }
    if (SSL_CTX_use_PrivateKey_file(context, options->key_file, SSL_FILETYPE_PEM) != 1) {
        take_openssl_error(detail, sizeof(detail));
        return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS key file %s (for %s): %s", options->key_file,
                               options->cert_file, detail);
    }
    if (SSL_CTX_check_private_key(context) != 1) {
        take_openssl_error(detail, sizeof(detail));
        return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS key file %s does not match %s: %s",
                               options->key_file, options->cert_file, detail);
    }
    return SPIRT_OK;
}

/* SNI and the expected name (DNS name or IP address) on the session. */
static int set_expected_name(SSL *ssl, const StoreTlsOptions *options, const char *host, SpirtError *error) {
    const char *name = options->server_name != NULL ? options->server_name : host;
    unsigned char scratch[sizeof(struct in6_addr)];
    int is_ip = inet_pton(AF_INET, name, scratch) == 1 || inet_pton(AF_INET6, name, scratch) == 1;
    /* SNI carries host names only (RFC 6066), never literal addresses. */
    if (!is_ip && SSL_set_tlsext_host_name(ssl, name) != 1)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS: cannot use '%s' as server name", name);
    if (options->skip_hostname_check) return SPIRT_OK;
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) : SSL_set1_host(ssl, name);
    if (ok != 1) return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS: cannot verify against name '%s'", name);
    return SPIRT_OK;
}

StoreTransport *store_tls_transport(int fd, const StoreTlsOptions *options, const char *host, uint64_t deadline_ns,
                                    SpirtError *error) {
    TlsTransport *tls = calloc(1, sizeof(*tls));
    if (tls == NULL) {
        close(fd);
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a TLS connection");
        return NULL;
    }
    tls->base.ops = &tls_ops;
    tls->base.fd = fd;
    pthread_once(&socket_method_once, create_socket_method);
    ERR_clear_error();
    tls->context = SSL_CTX_new(TLS_client_method());
    if (socket_method == NULL || tls->context == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "TLS: cannot set up OpenSSL");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(tls->context, TLS1_2_VERSION);
    SSL_CTX_set_verify(tls->context, SSL_VERIFY_PEER, NULL);
    if (load_files(tls->context, options, error) != SPIRT_OK) goto fail;

    tls->ssl = SSL_new(tls->context);
    BIO *bio = tls->ssl ? BIO_new(socket_method) : NULL;
    if (bio == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "TLS: cannot create a session");
        goto fail;
    }
    BIO_set_data(bio, (void *)(intptr_t)fd);
    SSL_set_bio(tls->ssl, bio, bio); /* the session owns the BIO from here */
    /* Partial writes and a buffer that may move between retries let the
     * connection code treat TLS like a socket. */
    SSL_set_mode(tls->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (set_expected_name(tls->ssl, options, host, error) != SPIRT_OK) goto fail;

    for (;;) {
        ERR_clear_error();
        int result = SSL_connect(tls->ssl);
        if (result == 1) break;
        int kind = SSL_get_error(tls->ssl, result);
        if (kind != SSL_ERROR_WANT_READ && kind != SSL_ERROR_WANT_WRITE) {
            tls_failure(tls, result, "handshake", error);
            goto fail;
        }
        int ready = store_wait_fd(fd, kind == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_ns, error);
        if (ready < 0) goto fail;
        if (ready == 0) {
            spirt_error_set(error, SPIRT_ERR_TIMEOUT, "TLS handshake timed out");
            goto fail;
        }
    }
    return &tls->base;

fail:
    tls->failed = 1;
    tls_close(&tls->base);
    return NULL;
}
