/* update.c -- the in-database optimizer step, applied once per round.
 *
 * Event: {"peer", "round", "optimizer": {...} (optional; default the run's),
 * "snapshot": true (optional: keep a copy of the new parameters under
 * spirt:snapshot:{r}, for evaluating the model's history later)}.
 * Applies SPIRT.UPDATE spirt:params spirt:r:{r}:agg with the optimizer
 * state under spirt:opt:state and step r + 1, then deletes the keys of the
 * round that falls out of the kept window. Result: {"applied": bool,
 * "step": r + 1, "digest": the new parameters' digest}.
 *
 * A retried update must not step twice: the step and the marker
 * spirt:r:{r}:updated are set together by one Lua script (atomic in Redis),
 * and a marker already there means "done". If the step fails the script
 * stops before the marker, so the retry runs it.
 *
 * Persistence is by checkpoint: every checkpoint_every rounds (and on the
 * last) the step is propagated to the AOF together with spirt:checkpoint =
 * r, in the script's one atomic unit; other rounds' steps and markers stay
 * in memory only (PERSIST NO, redis.set_repl). A peer restarted from its
 * AOF thus finds the model, the optimizer state and the checkpoint's round
 * consistent, and redoes the rounds after it. Writing a 1 MB model and its
 * state to the AOF every round was, with the other per-round tensors, the
 * largest single cost of a round. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"

/* KEYS: params, aggregate, state, marker, checkpoint. ARGV: the round, then
 * the SPIRT.UPDATE options (PERSIST YES or NO among them, last). */
static const char update_once_script[] =
    "if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end\n"
    "local arguments = {KEYS[1], KEYS[2]}\n"
    "for i = 2, #ARGV do arguments[#arguments + 1] = ARGV[i] end\n"
    "arguments[#arguments + 1] = 'STATE'\n"
    "arguments[#arguments + 1] = KEYS[3]\n"
    "local persist = ARGV[#ARGV] == 'YES'\n"
    "redis.call('SPIRT.UPDATE', unpack(arguments))\n"
    "if persist then\n"
    "  redis.call('SET', KEYS[5], ARGV[1])\n"
    "else\n"
    "  redis.set_repl(redis.REPL_NONE)\n"
    "end\n"
    "redis.call('SET', KEYS[4], '1')\n"
    "return 1\n";

static int optimizer_from_event(const json_t *event, const OptimConfig *fallback, OptimConfig *optimizer,
                                SpirtError *error) {
    const json_t *json = json_object_get(event, "optimizer");
    *optimizer = *fallback;
    if (json == NULL || json_is_null(json)) return SPIRT_OK;
    /* The same object form as in spirt:config. */
    json_t *wrapper = json_pack("{s:s, s:O}", "peer_id", "x", "optimizer", json);
    RunConfig parsed;
    int status = run_config_from_json(wrapper, &parsed, error);
    json_decref(wrapper);
    if (status == SPIRT_OK) *optimizer = parsed.optimizer;
    return status;
}

/* Deletes every per-round key of `round` and its publication. */
static int delete_round(StoreConn *db, uint64_t round, SpirtError *error) {
    char pattern[KEY_MAX], published[KEY_MAX], cursor[32] = "0";
    key_round_pattern(pattern, round);
    key_published(published, round);
    int status = store_del(db, published, NULL, error);
    do {
        StoreReply *reply = NULL;
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        if (status == SPIRT_OK) status = store_command_argv(db, 6, argv, NULL, &reply, error);
        if (status != SPIRT_OK) break;
        if (reply->type != STORE_REPLY_ARRAY || reply->elements != 2 || reply->element[1]->type != STORE_REPLY_ARRAY) {
            store_reply_free(reply);
            return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "SCAN: unexpected reply");
        }
        snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str ? reply->element[0]->str : "0");
        const StoreReply *keys = reply->element[1];
        if (keys->elements) {
            const char **unlink = calloc(keys->elements + 1, sizeof(char *));
            if (unlink == NULL) {
                store_reply_free(reply);
                return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
            }
            unlink[0] = "UNLINK";
            for (size_t i = 0; i < keys->elements; i++) unlink[1 + i] = keys->element[i]->str;
            status = store_command_argv(db, keys->elements + 1, unlink, NULL, NULL, error);
            free(unlink);
        }
        store_reply_free(reply);
    } while (status == SPIRT_OK && strcmp(cursor, "0") != 0);
    return status;
}

int fn_update(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    StoreConn *db;
    const RunConfig *config;
    int status = fn_begin(context, event, 1, &parsed, &db, &config, error);
    if (status != SPIRT_OK) return status;
    OptimConfig optimizer;
    if ((status = optimizer_from_event(event, &config->optimizer, &optimizer, error)) != SPIRT_OK) return status;

    const char *kind = optim_kind_name(optimizer.kind);
    if (optimizer.kind == OPTIM_MOMENTUM && optimizer.nesterov) kind = "nesterov";
    if (optimizer.kind == OPTIM_ADAM && optimizer.decoupled) kind = "adamw";
    char aggregate[KEY_MAX], marker[KEY_MAX], lr[32], momentum[32], beta1[32], beta2[32], epsilon[32], decay[32],
        step[32];
    key_round_aggregate(aggregate, parsed.round);
    key_round_updated(marker, parsed.round);
    /* The event's optimizer gives the base rate; the run's schedule scales
     * it for this round. */
    RunConfig scheduled = *config;
    scheduled.optimizer = optimizer;
    snprintf(lr, sizeof(lr), "%.9g", run_learning_rate(&scheduled, parsed.round));
    snprintf(momentum, sizeof(momentum), "%.9g", (double)optimizer.momentum);
    snprintf(beta1, sizeof(beta1), "%.9g", (double)optimizer.beta1);
    snprintf(beta2, sizeof(beta2), "%.9g", (double)optimizer.beta2);
    snprintf(epsilon, sizeof(epsilon), "%.9g", (double)optimizer.epsilon);
    snprintf(decay, sizeof(decay), "%.9g", (double)optimizer.weight_decay);
    snprintf(step, sizeof(step), "%llu", (unsigned long long)parsed.round + 1);
    const char *argv[32];
    size_t argc = 0;
    char round_text[32];
    snprintf(round_text, sizeof(round_text), "%llu", (unsigned long long)parsed.round);
    int persist = (parsed.round + 1) % config->checkpoint_every == 0 || parsed.round + 1 >= config->rounds;
    argv[argc++] = "EVAL";
    argv[argc++] = update_once_script;
    argv[argc++] = "5";
    argv[argc++] = KEY_PARAMS;
    argv[argc++] = aggregate;
    argv[argc++] = KEY_OPTIMIZER_STATE;
    argv[argc++] = marker;
    argv[argc++] = KEY_CHECKPOINT;
    argv[argc++] = round_text;
    argv[argc++] = "OPT";
    argv[argc++] = kind;
    argv[argc++] = "LR";
    argv[argc++] = lr;
    argv[argc++] = "WD";
    argv[argc++] = decay;
    argv[argc++] = "STEP";
    argv[argc++] = step;
    if (optimizer.kind == OPTIM_MOMENTUM) {
        argv[argc++] = "MOMENTUM";
        argv[argc++] = momentum;
    } else if (optimizer.kind == OPTIM_ADAM) {
        argv[argc++] = "BETA1";
        argv[argc++] = beta1;
        argv[argc++] = "BETA2";
        argv[argc++] = beta2;
        argv[argc++] = "EPS";
        argv[argc++] = epsilon;
    }
    argv[argc++] = "PERSIST";
    argv[argc++] = persist ? "YES" : "NO";
    StoreReply *reply = NULL;
    if ((status = store_command_argv(db, argc, argv, NULL, &reply, error)) != SPIRT_OK)
        return spirt_error_prefix(error, "SPIRT.UPDATE");
    int applied = reply->type == STORE_REPLY_INTEGER && reply->integer == 1;
    store_reply_free(reply);

    if (parsed.round >= config->keep_rounds &&
        (status = delete_round(db, parsed.round - config->keep_rounds, error)) != SPIRT_OK)
        return status;

    int snapshot = 0;
    if ((status = fn_json_bool_or(event, "snapshot", 0, &snapshot, error)) != SPIRT_OK) return status;
    if (snapshot) {
        char key[KEY_MAX];
        snprintf(key, sizeof(key), "spirt:snapshot:%llu", (unsigned long long)parsed.round);
        const char *copy_argv[] = {"COPY", KEY_PARAMS, key, "REPLACE"};
        if ((status = store_command_argv(db, 4, copy_argv, NULL, NULL, error)) != SPIRT_OK) return status;
    }

    /* At checkpoints, the new parameters' digest, for comparing peers'
     * models (hashing 1 MB every round would cost more than the step). */
    char digest[SPIRT_DIGEST_HEX_SIZE] = "";
    if (persist) {
        const char *info_argv[] = {"SPIRT.INFO", KEY_PARAMS};
        if ((status = store_command_argv(db, 2, info_argv, NULL, &reply, error)) != SPIRT_OK) return status;
        for (size_t i = 0; reply->type == STORE_REPLY_ARRAY && i + 1 < reply->elements; i += 2)
            if (reply->element[i]->str && strcmp(reply->element[i]->str, "digest") == 0 && reply->element[i + 1]->str)
                snprintf(digest, sizeof(digest), "%s", reply->element[i + 1]->str);
        store_reply_free(reply);
    }
    *result = json_pack("{s:b, s:I, s:o, s:b}", "applied", applied, "step", (json_int_t)parsed.round + 1, "digest",
                        digest[0] ? json_string(digest) : json_null(), "checkpoint", persist);
    return SPIRT_OK;
}
