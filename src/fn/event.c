/* event.c -- reading fields of events and configurations, with errors that
 * name the field. */
#include <math.h>
#include <string.h>

#include "fn/fn_internal.h"

static int missing(const char *name, SpirtError *error) {
    return spirt_error_set(error, SPIRT_ERR_INVALID, "field '%s' is missing", name);
}

int fn_json_u64_or(const json_t *object, const char *name, uint64_t fallback, uint64_t *value, SpirtError *error) {
    const json_t *field = json_object_get(object, name);
    if (field == NULL || json_is_null(field)) {
        *value = fallback;
        return SPIRT_OK;
    }
    if (json_is_integer(field) && json_integer_value(field) >= 0) {
        *value = (uint64_t)json_integer_value(field);
        return SPIRT_OK;
    }
    /* Whole numbers written as reals (1.0) are accepted: JSON does not
     * distinguish, and hand-written events use both. */
    if (json_is_real(field)) {
        double real = json_real_value(field);
        if (real >= 0 && real <= 9007199254740992.0 && real == floor(real)) {
            *value = (uint64_t)real;
            return SPIRT_OK;
        }
    }
    return spirt_error_set(error, SPIRT_ERR_INVALID, "field '%s' must be a non-negative integer", name);
}

int fn_json_u64(const json_t *object, const char *name, uint64_t *value, SpirtError *error) {
    if (json_object_get(object, name) == NULL) return missing(name, error);
    return fn_json_u64_or(object, name, 0, value, error);
}

int fn_json_double_or(const json_t *object, const char *name, double fallback, double *value, SpirtError *error) {
    const json_t *field = json_object_get(object, name);
    if (field == NULL || json_is_null(field)) {
        *value = fallback;
        return SPIRT_OK;
    }
    if (!json_is_number(field) || !isfinite(json_number_value(field)))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "field '%s' must be a finite number", name);
    *value = json_number_value(field);
    return SPIRT_OK;
}

int fn_json_bool_or(const json_t *object, const char *name, int fallback, int *value, SpirtError *error) {
    const json_t *field = json_object_get(object, name);
    if (field == NULL || json_is_null(field)) {
        *value = fallback;
        return SPIRT_OK;
    }
    if (!json_is_boolean(field)) return spirt_error_set(error, SPIRT_ERR_INVALID, "field '%s' must be true or false", name);
    *value = json_is_true(field);
    return SPIRT_OK;
}

int fn_json_string_or(const json_t *object, const char *name, const char *fallback, const char **value,
                      SpirtError *error) {
    const json_t *field = json_object_get(object, name);
    if (field == NULL || json_is_null(field)) {
        *value = fallback;
        return SPIRT_OK;
    }
    if (!json_is_string(field)) return spirt_error_set(error, SPIRT_ERR_INVALID, "field '%s' must be a string", name);
    *value = json_string_value(field);
    return SPIRT_OK;
}

int fn_json_string(const json_t *object, const char *name, const char **value, SpirtError *error) {
    if (json_object_get(object, name) == NULL) return missing(name, error);
    int status = fn_json_string_or(object, name, NULL, value, error);
    if (status == SPIRT_OK && *value == NULL) return missing(name, error);
    return status;
}

int fn_event_parse(const json_t *event, int needs_round, FnEvent *parsed, SpirtError *error) {
    memset(parsed, 0, sizeof(*parsed));
    if (!json_is_object(event)) return spirt_error_set(error, SPIRT_ERR_INVALID, "the event must be a JSON object");
    const json_t *peer = json_object_get(event, "peer");
    if (!json_is_object(peer))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "field 'peer' must be an object {\"id\": ..., \"db\": ...}");
    if (fn_json_string(peer, "id", &parsed->peer_id, error) != SPIRT_OK) return spirt_error_prefix(error, "peer");
    if (!identity_peer_id_valid(parsed->peer_id))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "peer.id '%.80s' is not a valid peer id", parsed->peer_id);
    if (fn_json_string(peer, "db", &parsed->db, error) != SPIRT_OK) return spirt_error_prefix(error, "peer");
    if (needs_round) return fn_json_u64(event, "round", &parsed->round, error);
    return fn_json_u64_or(event, "round", 0, &parsed->round, error);
}
