/* admit.c -- verify join requests and add the joiners to the membership.
 *
 * A peer that wants to join pushes a join request onto spirt:inbox of a
 * member's database: an envelope of kind JOIN_REQUEST, signed with its own
 * key, whose payload is {"id", "address", "public_key"}. The request is
 * admitted only if the operator has listed that id with that public key in
 * spirt:allowed (a hash id -> hex key): a valid signature proves the joiner
 * holds the key, the allow-list says the key is welcome, so nobody can join
 * in another's name or add peers of their own. Admitted peers become members
 * (alive, joined at the next round); refused requests are dropped with the
 * reason in the result.
 *
 * Event: {"peer", "round"}. Result: {"admitted": [ids], "refused":
 * [{"peer", "reason"}]}. */
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"
#include "spirt/clock.h"
#include "spirt/log.h"

static int check_request(StoreConn *db, const unsigned char *envelope, size_t size, Member *member,
                         SpirtError *error) {
    EnvelopeContents claimed;
    int status = envelope_peek(envelope, size, &claimed, error);
    if (status != SPIRT_OK) return status;
    char *allowed_key = NULL;
    size_t allowed_length = 0;
    status = store_hget(db, "spirt:allowed", claimed.peer_id, &allowed_key, &allowed_length, error);
    if (status == SPIRT_ERR_NOT_FOUND)
        return spirt_error_set(error, SPIRT_ERR_AUTH, "%s is not in spirt:allowed", claimed.peer_id);
    if (status != SPIRT_OK) return status;
    Identity sender;
    status = identity_from_public_hex(&sender, claimed.peer_id, allowed_key, error);
    free(allowed_key);
    EnvelopeContents contents;
    if (status == SPIRT_OK)
        status = envelope_open(envelope, size, &sender, ENVELOPE_KIND_JOIN_REQUEST, 0, &contents, error);
    if (status != SPIRT_OK) return status;
    json_error_t parse_error;
    json_t *payload = json_loadb((const char *)contents.payload, contents.payload_size, 0, &parse_error);
    const char *id = NULL, *address = NULL, *key = NULL;
    if (!json_is_object(payload) || fn_json_string(payload, "id", &id, error) != SPIRT_OK ||
        fn_json_string(payload, "address", &address, error) != SPIRT_OK ||
        fn_json_string(payload, "public_key", &key, error) != SPIRT_OK) {
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "join request of %s: payload is not {id, address, public_key}",
                                 contents.peer_id);
    } else if (strcmp(id, contents.peer_id) != 0 || strcmp(key, json_string_value(json_object_get(payload, "public_key"))) != 0) {
        status = spirt_error_set(error, SPIRT_ERR_AUTH, "join request of %s names another id", contents.peer_id);
    } else {
        char signer_hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
        identity_public_hex(&sender, signer_hex);
        if (strcmp(signer_hex, key) != 0)
            status = spirt_error_set(error, SPIRT_ERR_AUTH, "join request of %s names another key", id);
        else if (strlen(address) >= sizeof(member->address))
            status = spirt_error_set(error, SPIRT_ERR_FORMAT, "join request of %s: address too long", id);
        else {
            memset(member, 0, sizeof(*member));
            snprintf(member->id, sizeof(member->id), "%s", id);
            snprintf(member->address, sizeof(member->address), "%s", address);
            snprintf(member->public_key, sizeof(member->public_key), "%s", key);
        }
    }
    json_decref(payload);
    return status;
}

int fn_admit(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    int status = fn_event_parse(event, 0, &parsed, error);
    if (status != SPIRT_OK) return status;
    StoreConn *db = fn_connect(context, parsed.db, error);
    if (db == NULL) return error->code;
    json_t *admitted = json_array(), *refused = json_array();
    /* Take requests one at a time (LPOP), so two admit invocations never
     * process the same one. */
    for (int taken = 0; taken < 64 && status == SPIRT_OK; taken++) {
        StoreReply *reply = NULL;
        const char *argv[] = {"LPOP", KEY_INBOX};
        if ((status = store_command_argv(db, 2, argv, NULL, &reply, error)) != SPIRT_OK) break;
        if (reply->type != STORE_REPLY_STRING) {
            store_reply_free(reply);
            break;
        }
        Member member;
        SpirtError reason;
        if (check_request(db, (const unsigned char *)reply->str, reply->len, &member, &reason) == SPIRT_OK) {
            member.status = MEMBER_ALIVE;
            member.status_since_ms = clock_wall_ms();
            member.joined_round = parsed.round + 1;
            status = fn_member_write(db, &member, error);
            if (status == SPIRT_OK) {
                log_info("round %llu: admitted %s at %s", (unsigned long long)parsed.round, member.id, member.address);
                json_array_append_new(admitted, json_string(member.id));
            }
        } else {
            EnvelopeContents claimed;
            const char *who = envelope_peek((const unsigned char *)reply->str, reply->len, &claimed, NULL) == SPIRT_OK
                                  ? claimed.peer_id
                                  : "(unreadable)";
            log_warn("round %llu: refused a join request from %s: %s", (unsigned long long)parsed.round, who,
                     reason.message);
            json_array_append_new(refused, json_pack("{s:s, s:s}", "peer", who, "reason", reason.message));
        }
        store_reply_free(reply);
    }
    if (status != SPIRT_OK) {
        json_decref(admitted);
        json_decref(refused);
        return status;
    }
    *result = json_pack("{s:o, s:o}", "admitted", admitted, "refused", refused);
    return SPIRT_OK;
}
