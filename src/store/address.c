/* address.c -- database addresses as text ("host:port", "rediss://...").
 *
 * Peers pass each other's database addresses inside JSON events, so an
 * address is one string. Accepted forms (see store.h):
 *   host | host:port | [ipv6] | [ipv6]:port | ipv6 (no port)
 *   redis://[user:password@ | :password@]host[:port][/db]
 *   rediss://...  (the same over TLS)
 * Anything else is refused with a message saying which part is wrong; the
 * message never repeats a password. */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/store.h"

/* A whole decimal number in [minimum, maximum] from text[0..length). */
static int parse_number(const char *text, size_t length, long minimum, long maximum, long *value) {
    if (length == 0 || length > 10) return 0;
    long result = 0;
    for (size_t i = 0; i < length; i++) {
        if (!isdigit((unsigned char)text[i])) return 0;
        result = result * 10 + (text[i] - '0');
    }
    if (result < minimum || result > maximum) return 0;
    *value = result;
    return 1;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Copies text[0..length) into out (size bytes) undoing %XX escapes. */
static int decode_part(const char *text, size_t length, char *out, size_t size) {
    size_t written = 0;
    for (size_t i = 0; i < length; i++) {
        char c = text[i];
        if (c == '%') {
            int high = i + 2 < length ? hex_value(text[i + 1]) : -1;
            int low = i + 2 < length ? hex_value(text[i + 2]) : -1;
            if (high < 0 || low < 0 || (high == 0 && low == 0)) return 0;
            c = (char)(high * 16 + low);
            i += 2;
        }
        if (written + 1 >= size) return 0;
        out[written++] = c;
    }
    out[written] = '\0';
    return 1;
}

/* "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address. */
static int parse_host_port(const char *text, size_t length, StoreAddress *address, SpirtError *error) {
    const char *host = text, *port = NULL;
    size_t host_length = length, port_length = 0;
    if (length > 0 && text[0] == '[') {
        const char *close = memchr(text, ']', length);
        if (close == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "address: '[' without ']'");
        host = text + 1;
        host_length = (size_t)(close - host);
        const char *rest = close + 1;
        size_t rest_length = length - (size_t)(rest - text);
        if (rest_length > 0) {
            if (rest[0] != ':') return spirt_error_set(error, SPIRT_ERR_INVALID, "address: junk after ']'");
            port = rest + 1;
            port_length = rest_length - 1;
        }
    } else {
        const char *colon = memchr(text, ':', length);
        /* More than one colon without brackets: an IPv6 address, no port. */
        if (colon != NULL && memchr(colon + 1, ':', length - (size_t)(colon + 1 - text)) == NULL) {
            host_length = (size_t)(colon - text);
            port = colon + 1;
            port_length = length - host_length - 1;
        }
    }
    if (host_length == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "address: no host");
    if (host_length >= sizeof(address->host))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "address: host longer than %zu bytes",
                               sizeof(address->host) - 1);
    for (size_t i = 0; i < host_length; i++)
        if (isspace((unsigned char)host[i]) || host[i] == '/' || host[i] == '@' || host[i] == '[' || host[i] == ']')
            return spirt_error_set(error, SPIRT_ERR_INVALID, "address: bad character in host");
    memcpy(address->host, host, host_length);
    address->host[host_length] = '\0';
    if (port != NULL) {
        long value;
        if (!parse_number(port, port_length, 1, 65535, &value))
            return spirt_error_set(error, SPIRT_ERR_INVALID, "address: port '%.*s' is not a number in 1..65535",
                                   (int)(port_length > 16 ? 16 : port_length), port);
        address->port = (int)value;
    }
    return SPIRT_OK;
}

/* "user:password" or ":password" (escaped). */
static int parse_credentials(const char *text, size_t length, StoreAddress *address, SpirtError *error) {
    const char *colon = memchr(text, ':', length);
    if (colon == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID,
                               "address: credentials must be user:password or :password");
    size_t user_length = (size_t)(colon - text);
    if (!decode_part(text, user_length, address->username, sizeof(address->username)))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "address: bad or over-long user name");
    if (!decode_part(colon + 1, length - user_length - 1, address->password, sizeof(address->password)))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "address: bad or over-long password");
    address->has_password = 1;
    return SPIRT_OK;
}

int store_address_parse(const char *text, StoreAddress *address, SpirtError *error) {
    if (address == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "address: nowhere to store it");
    memset(address, 0, sizeof(*address));
    address->tls = -1;
    address->database = -1;
    if (text == NULL || text[0] == '\0') return spirt_error_set(error, SPIRT_ERR_INVALID, "address: empty");
    /* "unix:/path" or a bare absolute path: a Unix-domain socket. */
    if (strncmp(text, "unix:", 5) == 0 || text[0] == '/') {
        const char *path = text[0] == '/' ? text : text + 5;
        if (path[0] != '/')
            return spirt_error_set(error, SPIRT_ERR_INVALID, "address: a Unix socket path must be absolute");
        if (strlen(path) >= sizeof(address->host))
            return spirt_error_set(error, SPIRT_ERR_INVALID, "address: socket path longer than %zu bytes",
                                   sizeof(address->host) - 1);
        memcpy(address->host, path, strlen(path) + 1);
        address->tls = 0;
        return SPIRT_OK;
    }
    const char *rest = text;
    const char *scheme_end = strstr(text, "://");
    if (scheme_end != NULL) {
        size_t scheme_length = (size_t)(scheme_end - text);
        if (scheme_length == 5 && strncmp(text, "redis", 5) == 0)
            address->tls = 0;
        else if (scheme_length == 6 && strncmp(text, "rediss", 6) == 0)
            address->tls = 1;
        else
            return spirt_error_set(error, SPIRT_ERR_INVALID, "address: unknown scheme '%.*s' (redis or rediss)",
                                   (int)(scheme_length > 16 ? 16 : scheme_length), text);
        rest = scheme_end + 3;
    }
    size_t length = strlen(rest);
    if (scheme_end != NULL) {
        /* Credentials end at the last '@' (a password may contain '@'
         * escaped or not); the database follows the first '/' after it. */
        const char *at = NULL;
        for (const char *c = rest; *c; c++)
            if (*c == '@') at = c;
        if (at != NULL) {
            int status = parse_credentials(rest, (size_t)(at - rest), address, error);
            if (status != SPIRT_OK) {
                memset(address->password, 0, sizeof(address->password));
                return status;
            }
            rest = at + 1;
            length = strlen(rest);
        }
        const char *slash = memchr(rest, '/', length);
        if (slash != NULL) {
            size_t db_length = length - (size_t)(slash + 1 - rest);
            long value = 0;
            if (db_length > 0 && !parse_number(slash + 1, db_length, 0, INT_MAX, &value))
                return spirt_error_set(error, SPIRT_ERR_INVALID, "address: database '%.*s' is not a number",
                                       (int)(db_length > 16 ? 16 : db_length), slash + 1);
            if (db_length > 0) address->database = (int)value;
            length = (size_t)(slash - rest);
        }
    }
    return parse_host_port(rest, length, address, error);
}

void store_options_use_address(StoreOptions *options, const StoreAddress *address) {
    options->host = address->host;
    if (address->port != 0) options->port = address->port;
    if (address->tls >= 0) options->tls.enabled = address->tls;
    if (address->has_password) {
        options->username = address->username[0] ? address->username : NULL;
        options->password = address->password;
    }
    if (address->database >= 0) options->database = address->database;
}
