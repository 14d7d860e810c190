/* members.c -- membership records in spirt:members: one hash field per
 * peer, its value a small JSON object
 *   {"address": "host:port", "public_key": "hex", "status": "alive",
 *    "since_ms": 1700000000000, "joined_round": 0}
 * Reading sorts by peer id, so every peer walks the members in one order. */
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"

static const char *const status_names[] = {"alive", "suspect", "dead"};

const char *fn_member_status_name(MemberStatus status) {
    return (unsigned)status <= MEMBER_DEAD ? status_names[status] : "unknown";
}

int fn_member_from_json(const char *id, const char *text, size_t length, Member *member, SpirtError *error) {
    memset(member, 0, sizeof(*member));
    if (!identity_peer_id_valid(id)) return spirt_error_set(error, SPIRT_ERR_FORMAT, "member id '%.80s' is not valid", id);
    snprintf(member->id, sizeof(member->id), "%s", id);
    json_error_t parse_error;
    json_t *json = json_loadb(text, length, 0, &parse_error);
    if (!json_is_object(json)) {
        json_decref(json);
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "member %s: not a JSON object", id);
    }
    const char *address = NULL, *key = NULL, *status = NULL;
    uint64_t since = 0, joined = 0;
    int result = SPIRT_OK;
    if (fn_json_string(json, "address", &address, error) != SPIRT_OK ||
        fn_json_string(json, "public_key", &key, error) != SPIRT_OK ||
        fn_json_string_or(json, "status", "alive", &status, error) != SPIRT_OK ||
        fn_json_u64_or(json, "since_ms", 0, &since, error) != SPIRT_OK ||
        fn_json_u64_or(json, "joined_round", 0, &joined, error) != SPIRT_OK) {
        result = spirt_error_prefix(error, "member %s", id);
    } else if (strlen(address) >= sizeof(member->address) || strlen(key) != SPIRT_PUBLIC_KEY_HEX_SIZE - 1) {
        result = spirt_error_set(error, SPIRT_ERR_FORMAT, "member %s: bad address or public key", id);
    } else {
        snprintf(member->address, sizeof(member->address), "%s", address);
        snprintf(member->public_key, sizeof(member->public_key), "%s", key);
        member->status = MEMBER_ALIVE;
        for (int s = 0; s <= MEMBER_DEAD; s++)
            if (strcmp(status, status_names[s]) == 0) member->status = (MemberStatus)s;
        member->status_since_ms = (int64_t)since;
        member->joined_round = joined;
    }
    json_decref(json);
    return result;
}

char *fn_member_to_json(const Member *member) {
    json_t *json = json_pack("{s:s, s:s, s:s, s:I, s:I}", "address", member->address, "public_key", member->public_key,
                             "status", fn_member_status_name(member->status), "since_ms",
                             (json_int_t)member->status_since_ms, "joined_round", (json_int_t)member->joined_round);
    char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    return text;
}

static int compare_members(const void *a, const void *b) {
    return strcmp(((const Member *)a)->id, ((const Member *)b)->id);
}

int fn_members_read(StoreConn *db, Membership *membership, SpirtError *error) {
    StoreReply *reply = NULL;
    const char *argv[] = {"HGETALL", KEY_MEMBERS};
    int status = store_command_argv(db, 2, argv, NULL, &reply, error);
    if (status != SPIRT_OK) return status;
    membership->count = 0;
    if (reply->type != STORE_REPLY_ARRAY || reply->elements % 2) {
        store_reply_free(reply);
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "HGETALL %s: unexpected reply", KEY_MEMBERS);
    }
    for (size_t i = 0; i + 1 < reply->elements && status == SPIRT_OK; i += 2) {
        if (membership->count == RUN_MAX_PEERS) {
            status = spirt_error_set(error, SPIRT_ERR_PRECONDITION, "more than %d members", RUN_MAX_PEERS);
            break;
        }
        status = fn_member_from_json(reply->element[i]->str, reply->element[i + 1]->str, reply->element[i + 1]->len,
                                     &membership->members[membership->count], error);
        if (status == SPIRT_OK) membership->count++;
    }
    store_reply_free(reply);
    qsort(membership->members, membership->count, sizeof(Member), compare_members);
    return status;
}

int fn_member_write(StoreConn *db, const Member *member, SpirtError *error) {
    char *text = fn_member_to_json(member);
    if (text == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    int status = store_hset(db, KEY_MEMBERS, member->id, text, strlen(text), error);
    free(text);
    return status;
}
