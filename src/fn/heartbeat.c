/* heartbeat.c -- refresh our own liveness and probe the other peers.
 *
 * Event: {"peer", "round"}. Sets our spirt:heartbeat (with the run's time to
 * live), then looks at every other member's: present means alive; absent
 * (it expired: the peer stopped refreshing it) or unreachable makes an alive
 * member suspect, and a member suspect for longer than dead_after_ms dead.
 * A dead member whose heartbeat comes back is alive again (it recovered).
 * Statuses are written back to spirt:members. Result:
 * {"alive": [...], "suspect": [...], "dead": [...], "changed": [...]}.
 *
 * The peer process also refreshes its heartbeat from a thread of its own,
 * so a long round does not make a live peer look dead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"
#include "spirt/clock.h"
#include "spirt/log.h"

int fn_write_heartbeat(StoreConn *db, uint64_t round, int64_t ttl_ms, SpirtError *error) {
    char value[96];
    int length = snprintf(value, sizeof(value), "{\"round\":%llu,\"ms\":%lld}", (unsigned long long)round,
                          (long long)clock_wall_ms());
    return store_set_px(db, KEY_HEARTBEAT, value, (size_t)length, ttl_ms, error);
}

int fn_heartbeat(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    StoreConn *db;
    const RunConfig *config;
    int status = fn_begin(context, event, 0, &parsed, &db, &config, error);
    if (status != SPIRT_OK) return status;
    if ((status = fn_write_heartbeat(db, parsed.round, config->heartbeat_ttl_ms, error)) != SPIRT_OK) return status;

    Membership *membership = malloc(sizeof(*membership));
    if (membership == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    if ((status = fn_members_read(db, membership, error)) != SPIRT_OK) {
        free(membership);
        return status;
    }
    json_t *lists[3] = {json_array(), json_array(), json_array()};
    json_t *changed = json_array();
    int64_t now = clock_wall_ms();
    for (size_t i = 0; i < membership->count && status == SPIRT_OK; i++) {
        Member *member = &membership->members[i];
        if (strcmp(member->id, parsed.peer_id) == 0) {
            json_array_append_new(lists[MEMBER_ALIVE], json_string(member->id));
            continue;
        }
        int alive = 0;
        StoreConn *peer = fn_connect_probe(context, member->address, 500, NULL);
        if (peer && store_exists(peer, KEY_HEARTBEAT, &alive, NULL) != SPIRT_OK) alive = 0;
        MemberStatus next = member->status;
        if (alive)
            next = MEMBER_ALIVE;
        else if (member->status == MEMBER_ALIVE)
            next = MEMBER_SUSPECT;
        else if (member->status == MEMBER_SUSPECT && now - member->status_since_ms > config->dead_after_ms)
            next = MEMBER_DEAD;
        if (next != member->status) {
            log_info("round %llu: peer %s is %s (was %s)", (unsigned long long)parsed.round, member->id,
                     fn_member_status_name(next), fn_member_status_name(member->status));
            member->status = next;
            member->status_since_ms = now;
            status = fn_member_write(db, member, error);
            json_array_append_new(changed, json_string(member->id));
        }
        json_array_append_new(lists[member->status], json_string(member->id));
    }
    free(membership);
    if (status != SPIRT_OK) {
        for (int k = 0; k < 3; k++) json_decref(lists[k]);
        json_decref(changed);
        return status;
    }
    *result = json_pack("{s:o, s:o, s:o, s:o}", "alive", lists[MEMBER_ALIVE], "suspect", lists[MEMBER_SUSPECT], "dead",
                        lists[MEMBER_DEAD], "changed", changed);
    return SPIRT_OK;
}
