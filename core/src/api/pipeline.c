/*
 * Pipelines. With one node to talk to (standalone, sentinel) each appended
 * command is formatted at once into the pipeline's request buffer, which
 * exec writes in one go before reading the replies in order. In cluster
 * mode the commands are kept as arguments (their bytes in one arena), for
 * the topology to split by node. A pipeline is never retried once any of
 * it was written: some of its commands may have run.
 *
 * Each command is classified once, at append (command.c). Commands that
 * change the state of a connection are refused there, and then the whole
 * pipeline is refused at exec, so nothing of it is sent. A transaction is
 * the exception where it can be kept on one connection, that is outside
 * cluster mode: MULTI, then EXEC or DISCARD, in the same pipeline. Every
 * reply then comes back as the server sent it (OK, QUEUED..., EXEC's
 * array), and a connection whose transaction may not have ended is closed
 * rather than pooled.
 */
#include "api/client.h"
#include "api/command_observe.h"
#include "topology/cluster.h"
#include "engine/conn.h"
#include "api/pipeline.h"
#include "api/transaction.h"

#include <stdlib.h>
#include <string.h>

/* A request buffer larger than this is released after exec rather than
 * kept for the next pipeline. */
#define VK_PIPELINE_KEEP_BYTES (1024 * 1024)

struct vk_pipeline {
    vk_client *client;     /* a reference: the pipeline may outlive vk_client_free */
    bool formatted;        /* one node: commands go to `requests`; cluster: to the arena */
    char *requests;        /* RESP of every command, back to back */
    size_t requests_len, requests_cap;
    char *bytes;           /* every argument's bytes, back to back */
    size_t bytes_len, bytes_cap;
    size_t *arg_offset;    /* per argument: where it starts in bytes */
    size_t *arg_len;
    size_t args_len, offsets_cap, lens_cap;
    vk_command *commands;  /* cluster: per command, classified at append; its argv is set
                            * at exec, once the arena no longer moves */
    size_t count, count_cap;
    const char *refusal;   /* an append was refused: exec refuses, with this text */
    bool in_multi;         /* a MULTI waits for its EXEC or DISCARD */
    unsigned flags;        /* VK_COMMAND_BLOCKING: a command waits on the server, */
    int64_t block_ms;      /* for this long together (0: without limit) */
    void *owner;           /* an event-loop client's: vk_pipeline_exec refuses it */
    size_t *ends;          /* per transaction: the index of its EXEC or DISCARD */
    size_t ends_len, ends_cap;
    bool transaction;      /* exec wraps the commands in MULTI ... EXEC (transaction.c) */
};

/* Details of VK_ERR_COMMAND_NOT_ALLOWED that only pipelines give. */
static const char nested_multi[] = "MULTI inside MULTI; transactions cannot be nested";
static const char multi_arguments[] = "MULTI, EXEC and DISCARD take no arguments";
static const char multi_open[] =
    "MULTI without EXEC or DISCARD; end the transaction in the same pipeline";
static const char transaction_multi[] =
    "MULTI, EXEC and DISCARD in a transaction pipeline: exec sends MULTI and EXEC itself";
static const char cluster_multi[] =
    "MULTI, EXEC and DISCARD in a cluster pipeline, which is split by node: a transaction "
    "cannot be kept on one connection (use a transaction pipeline, its keys in one slot)";

static vk_status invalid_pipeline(const char *function)
{
    vk__misuse(function, "pipeline is nil");
    return vk__fail(VK_ERR_INVALID_ARGUMENT, "pipeline is nil");
}

VK_API vk_status vk_pipeline_new(vk_pipeline **out, vk_client *client)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL || !vk__client_alive(client)) {
        vk__misuse("vk_pipeline_new", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    vk_pipeline *p = calloc(1, sizeof *p);
    if (p == NULL)
        return vk__fail_nomem();
    p->client = vk__client_ref(client);
    p->formatted = client->cluster == NULL;
    *out = p;
    return VK_OK;
}

vk_status vk__pipeline_new_detached(vk_pipeline **out, vk_client *client, void *owner)
{
    vk_status st = vk_pipeline_new(out, client);
    if (st == VK_OK)
        (*out)->owner = owner;
    return st;
}

void *vk__pipeline_owner(const vk_pipeline *p)
{
    return vk__client_alive(p->client) ? p->owner : NULL;
}

VK_API void vk_pipeline_free(vk_pipeline *pipeline)
{
    if (pipeline == NULL)
        return;
    vk__client_unref(pipeline->client);
    free(pipeline->requests);
    free(pipeline->bytes);
    free(pipeline->arg_offset);
    free(pipeline->arg_len);
    free(pipeline->commands);
    free(pipeline->ends);
    free(pipeline);
}

/* Grows *buf (of elements of size `size`) so that `need` elements fit. */
static bool grow(void **buf, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *grown = realloc(*buf, n * size);
    if (grown == NULL)
        return false;
    *buf = grown;
    *cap = n;
    return true;
}

static bool reserve(vk_pipeline *p, int argc, size_t total)
{
    size_t need_args = p->args_len + (size_t)argc;
    return grow((void **)&p->bytes, &p->bytes_cap, p->bytes_len + total + 1, 1) &&
           grow((void **)&p->arg_offset, &p->offsets_cap, need_args, sizeof(size_t)) &&
           grow((void **)&p->arg_len, &p->lens_cap, need_args, sizeof(size_t)) &&
           grow((void **)&p->commands, &p->count_cap, p->count + 1, sizeof(vk_command));
}

/* One node: the command (len bytes encoded) is written now, straight into
 * the request bytes. */
static vk_status append_formatted(vk_pipeline *p, int argc, const char *const *argv,
                                  const size_t *argvlen, size_t len)
{
    if (len > SIZE_MAX - p->requests_len)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    if (!grow((void **)&p->requests, &p->requests_cap, p->requests_len + len, 1))
        return vk__fail_nomem();
    vk__request_encode(p->requests + p->requests_len, argc, argv, argvlen);
    p->requests_len += len;
    p->count++;
    return VK_OK;
}

/* Decides whether the command may join the pipeline, given the
 * transaction it may open, end or sit in. A refusal is remembered for
 * exec. */
static vk_status check_state(vk_pipeline *p, const vk_command *cmd)
{
    if (VK_LIKELY(cmd->effect == VK_EFFECT_NONE))
        return VK_OK;
    const char *reason = cmd->refusal;
    if (cmd->effect != VK_EFFECT_STATEFUL) {
        if (p->transaction)
            reason = transaction_multi;
        else if (!p->formatted)
            reason = cluster_multi;
        else if (cmd->argc != 1)
            reason = multi_arguments;   /* an arity error would not end a transaction */
        else if (cmd->effect == VK_EFFECT_OPENS_MULTI)
            reason = p->in_multi ? nested_multi : NULL;
        else if (p->in_multi)
            reason = NULL;
        if (reason == NULL)
            return grow((void **)&p->ends, &p->ends_cap, p->ends_len + 1, sizeof(size_t))
                       ? VK_OK
                       : vk__fail_nomem();
    }
    p->refusal = reason;
    return vk__fail(VK_ERR_COMMAND_NOT_ALLOWED, "%s", reason);
}

/* Records the transaction state of the command just appended. */
static void record_state(vk_pipeline *p, vk_conn_effect effect)
{
    if (VK_LIKELY(effect == VK_EFFECT_NONE))
        return;
    p->in_multi = effect == VK_EFFECT_OPENS_MULTI;
    if (effect == VK_EFFECT_CLOSES_MULTI)
        p->ends[p->ends_len++] = p->count - 1;
}

VK_API vk_status vk_pipeline_append(vk_pipeline *pipeline, int argc, const char *const *argv,
                                    const size_t *argvlen)
{
    if (pipeline == NULL)
        return invalid_pipeline("vk_pipeline_append");
    if (argc <= 0 || argv == NULL || argvlen == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a command needs argc >= 1, argv and argvlen");
    size_t total = 0;
    for (int i = 0; i < argc; i++) {
        if (argv[i] == NULL && argvlen[i] != 0)
            return vk__fail(VK_ERR_INVALID_ARGUMENT, "argument %d is NULL", i);
        total += argvlen[i];
    }
    /* The encoded size bounds the argument bytes too (no overflow below). */
    size_t request;
    if (!vk__request_size(argc, argvlen, &request))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    vk_command cmd;
    vk__command_classify(&cmd, argc, argv, argvlen);
    vk_status st = check_state(pipeline, &cmd);
    if (VK_UNLIKELY(st != VK_OK))
        return st;
    if (pipeline->formatted) {
        st = append_formatted(pipeline, argc, argv, argvlen, request);
        if (st == VK_OK) {
            record_state(pipeline, cmd.effect);
            vk__batch_add_wait(&pipeline->flags, &pipeline->block_ms, &cmd);
        }
        return st;
    }
    if (!reserve(pipeline, argc, total))
        return vk__fail_nomem();
    for (int i = 0; i < argc; i++) {
        if (argvlen[i] > 0)
            memcpy(pipeline->bytes + pipeline->bytes_len, argv[i], argvlen[i]);
        pipeline->arg_offset[pipeline->args_len] = pipeline->bytes_len;
        pipeline->arg_len[pipeline->args_len] = argvlen[i];
        pipeline->args_len++;
        pipeline->bytes_len += argvlen[i];
    }
    /* The caller's argv is not ours to keep: exec points the descriptor at
     * the copies. */
    cmd.argv = NULL;
    cmd.argvlen = NULL;
    pipeline->commands[pipeline->count++] = cmd;
    vk__batch_add_wait(&pipeline->flags, &pipeline->block_ms, &cmd);
    return VK_OK;
}

VK_API size_t vk_pipeline_length(const vk_pipeline *pipeline)
{
    return pipeline != NULL ? pipeline->count : 0;
}

VK_API vk_status vk_pipeline_set_transaction(vk_pipeline *pipeline, int on)
{
    if (pipeline == NULL)
        return invalid_pipeline("vk_pipeline_set_transaction");
    if (pipeline->count > 0 || pipeline->refusal != NULL || pipeline->in_multi)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "the transaction mode of a pipeline is set before its first command");
    pipeline->transaction = on != 0;
    return VK_OK;
}

VK_API int vk_pipeline_is_transaction(const vk_pipeline *pipeline)
{
    return pipeline != NULL && pipeline->transaction;
}

/* Empties the pipeline for its next commands; its transaction mode stays. */
static void reset(vk_pipeline *p)
{
    p->requests_len = 0;
    if (p->requests_cap > VK_PIPELINE_KEEP_BYTES) {
        free(p->requests);
        p->requests = NULL;
        p->requests_cap = 0;
    }
    p->bytes_len = 0;
    p->args_len = 0;
    p->count = 0;
    p->refusal = NULL;
    p->in_multi = false;
    p->ends_len = 0;
    p->flags = 0;
    p->block_ms = 0;
}

/* Writes the commands on one connection and reads every reply in order. */
static vk_status exec_on(vk_pipeline *p, vk_conn *conn, redisReply *array, vk_context *ctx)
{
    vk_status st = vk__conn_write(conn, p->requests, p->requests_len, ctx);
    for (size_t i = 0; i < p->count && st == VK_OK; i++) {
        redisReply *reply;
        if ((st = vk__conn_read(conn, &reply, ctx)) == VK_OK)
            array->element[i] = reply;
    }
    /* Sentinel mode: a node that is no longer the master sends the client
     * back to discovery (the pipeline itself is not retried). */
    for (size_t i = 0; i < p->count && st == VK_OK && vk__client_follows_master(p->client); i++) {
        if (vk__reply_demands_rediscovery(array->element[i])) {
            vk__client_mark_disconnected(p->client);
            break;
        }
    }
    return st;
}

static bool transactions_ended(const vk_pipeline *p, const redisReply *array)
{
    return vk__transactions_ended(p->ends, p->ends_len, array);
}

/* Cluster mode: points each command's argv and argvlen at its arguments
 * in the arena, which no longer moves; the pointers' array is returned
 * (NULL: out of memory). */
static const char **point_args(vk_pipeline *p)
{
    const char **args = malloc(p->args_len * sizeof *args);
    if (args == NULL)
        return NULL;
    size_t arg = 0;
    for (size_t i = 0; i < p->count; i++) {
        vk_command *cmd = &p->commands[i];
        cmd->argv = args + arg;
        cmd->argvlen = p->arg_len + arg;
        for (int j = 0; j < cmd->argc; j++, arg++)
            args[arg] = p->bytes + p->arg_offset[arg];
    }
    return args;
}

/* Cluster mode: the topology splits the commands by node and puts each
 * reply back at its command's place in array. */
static vk_status exec_cluster(vk_pipeline *p, redisReply *array, vk_context *ctx)
{
    vk_status st = vk__client_ensure_connected(p->client, ctx);
    if (st != VK_OK)
        return st;
    const char **args = point_args(p);
    if (args == NULL)
        return vk__fail_nomem();
    st = vk__cluster_pipeline(p->client->cluster, p->count, p->commands, array->element, ctx);
    free((void *)args);
    return st;
}

/* A refused append, or a MULTI left open, refuses the whole pipeline
 * (which empties). */
static vk_status check_refusals(vk_pipeline *p)
{
    if (VK_LIKELY(p->refusal == NULL && !p->in_multi))
        return VK_OK;
    const char *reason = p->refusal != NULL ? p->refusal : multi_open;
    reset(p);
    return vk__fail(VK_ERR_COMMAND_NOT_ALLOWED, "%s", reason);
}

/* ---- transactions and pinned connections ------------------------------------ */

/* The bytes to write: the commands, framed by MULTI and EXEC for a
 * transaction. One node: the commands are already encoded in the request
 * buffer, which exec empties anyway, so the frame is put around them in
 * place. Cluster: the commands are kept as arguments (pointed by
 * point_args) and encoded here into *owned. */
static vk_status encode(vk_pipeline *p, const char **buf, size_t *len, char **owned)
{
    *owned = NULL;
    size_t head = p->transaction ? VK_MULTI_REQUEST_LEN : 0;
    size_t frame = p->transaction ? VK_MULTI_REQUEST_LEN + VK_EXEC_REQUEST_LEN : 0;
    size_t body = 0;
    char *out;
    if (p->formatted) {
        body = p->requests_len;
        if (frame > 0 && !grow((void **)&p->requests, &p->requests_cap, body + frame, 1))
            return vk__fail_nomem();
        out = p->requests;
        memmove(out + head, out, body);
    } else {
        for (size_t i = 0; i < p->count; i++) {
            size_t n;
            const vk_command *cmd = &p->commands[i];
            if (!vk__request_size(cmd->argc, cmd->argvlen, &n) || n > SIZE_MAX - frame - body)
                return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
            body += n;
        }
        if ((out = *owned = malloc(body + frame + 1)) == NULL)
            return vk__fail_nomem();
        char *at = out + head;
        for (size_t i = 0; i < p->count; i++) {
            const vk_command *cmd = &p->commands[i];
            at = vk__request_encode(at, cmd->argc, cmd->argv, cmd->argvlen);
        }
    }
    if (frame > 0) {
        memcpy(out, vk__multi_request, VK_MULTI_REQUEST_LEN);
        memcpy(out + head + body, vk__exec_request, VK_EXEC_REQUEST_LEN);
    }
    *buf = out;
    *len = body + frame;
    return VK_OK;
}

/* Cluster mode: the first command of a discarded transaction that its
 * node refused with MOVED or ASK (taken out of replies), or NULL. */
static redisReply *take_queued_redirect(redisReply *replies)
{
    for (size_t i = 1; i + 1 < replies->elements; i++) {
        redisReply *r = replies->element[i];
        if (r->type == REDIS_REPLY_ERROR &&
            ((r->len >= 6 && memcmp(r->str, "MOVED ", 6) == 0) ||
             (r->len >= 4 && memcmp(r->str, "ASK ", 4) == 0))) {
            replies->element[i] = NULL;
            return r;
        }
    }
    return NULL;
}

/* Writes the pipeline on conn and reads its replies: EXEC's array for a
 * transaction (transaction.c), else one reply per command. *ended: the
 * connection is surely outside any transaction on the server (otherwise
 * it must not be pooled). */
static vk_status run_on(vk_pipeline *p, vk_conn *conn, redisReply **out, vk_context *ctx,
                        bool *ended, redisReply **redirect)
{
    *out = NULL;
    *ended = true;
    if (redirect != NULL)
        *redirect = NULL;
    const char *buf = NULL;
    size_t len = 0;
    char *owned;
    vk_status st = encode(p, &buf, &len, &owned);
    if (st != VK_OK)
        return st;
    size_t n = p->count + (p->transaction ? 2 : 0);
    redisReply *array = vk__array_reply_new(n);
    if (array == NULL) {
        free(owned);
        return vk__fail_nomem();
    }
    st = vk__conn_write(conn, buf, len, ctx);
    free(owned);
    for (size_t i = 0; i < n && st == VK_OK; i++)
        st = vk__conn_read(conn, &array->element[i], ctx);
    for (size_t i = 0; i < n && st == VK_OK && vk__client_follows_master(p->client); i++) {
        if (vk__reply_demands_rediscovery(array->element[i])) {
            vk__client_mark_disconnected(p->client);
            break;
        }
    }
    if (st == VK_OK && p->transaction) {
        st = vk__transaction_result(array, out, ended);
        if (st == VK_ERR_SERVER && redirect != NULL)
            *redirect = take_queued_redirect(array);
    } else if (st == VK_OK) {
        *ended = transactions_ended(p, array);
        *out = array;
        return VK_OK;
    }
    char *cause = st != VK_OK ? vk__error_dup() : NULL;
    vk__reply_free(array);
    if (st != VK_OK)
        vk__fail_restore(st, cause);
    free(cause);
    return st;
}

/* The text of a command refused because its keys are in another slot. */
#define SLOT_ADVICE "give keys that go together one hash tag, e.g. {user:1}:a and {user:1}:b"

/* Cluster mode: the one slot of the commands' keys (VK_SLOT_NONE when none
 * has a key), asking the server for the key positions the table does not
 * know; the commands point at their arguments (point_args). pinned: the
 * slot of a session, which every key must be in (VK_SLOT_NONE: any one
 * slot). */
static vk_status common_slot(vk_pipeline *p, vk_cluster *cl, int pinned, int *slot,
                             vk_context *ctx)
{
    *slot = pinned;
    for (size_t i = 0; i < p->count; i++) {
        vk_command *cmd = &p->commands[i];
        vk_status st = vk__cluster_command_slot(cl, cmd, ctx);
        if (st != VK_OK)
            return st;
        if (cmd->slot < 0 || cmd->slot == *slot)
            continue;
        if (pinned >= 0)
            return vk__fail(VK_ERR_INVALID_ARGUMENT,
                            "the session is pinned to the master of hash slot %d, and the keys "
                            "of command %zu hash to slot %d; " SLOT_ADVICE,
                            pinned, i + 1, cmd->slot);
        if (*slot >= 0)
            return vk__fail(VK_ERR_INVALID_ARGUMENT,
                            "CROSSSLOT keys in request don't hash to the same slot: a "
                            "transaction runs on the master of one slot; " SLOT_ADVICE);
        *slot = cmd->slot;
    }
    return VK_OK;
}

/* Cluster mode: one try of a transaction on the master of slot in the
 * map in service. *moved: its node sent it elsewhere with MOVED (the map
 * now says where): nothing of it ran. */
static vk_status try_cluster_transaction(vk_pipeline *p, int slot, redisReply **out,
                                         vk_context *ctx, bool *moved)
{
    *moved = false;
    vk_cluster *cl = p->client->cluster;
    vk_pool *pool;
    vk_conn *conn;
    vk_endpoint node;
    vk_status st = vk__cluster_slot_conn(cl, slot, &pool, &conn, &node, ctx);
    if (st != VK_OK)
        return st;
    bool ended;
    redisReply *redirect = NULL;
    st = run_on(p, conn, out, ctx, &ended, &redirect);
    if (VK_UNLIKELY(!ended && !vk__conn_is_broken(conn)))
        vk__pool_discard(pool, conn);
    else
        vk__pool_put(pool, conn);
    vk__pool_unref(pool);
    vk_cluster_redirect rd;
    if (redirect != NULL && vk__cluster_take_redirect(cl, redirect, &node, &rd))
        *moved = !rd.ask;
    vk__reply_free(redirect);
    return st;
}

/* Cluster mode: a transaction goes whole to the master of its keys' slot
 * (any master when it has no key). A node that answers MOVED to its
 * commands discards it unrun (EXECABORT): the map is patched and it is
 * sent once more, to the new master. An ASK (the slot is migrating) is
 * not followed: a transaction cannot be split between two nodes, and the
 * caller gets the discarded transaction. */
static vk_status exec_cluster_transaction(vk_pipeline *p, redisReply **out, vk_context *ctx)
{
    vk_client *c = p->client;
    vk_status st = vk__client_ensure_connected(c, ctx);
    if (st != VK_OK)
        return st;
    vk__cluster_refresh_when_due(c->cluster, ctx);
    const char **args = point_args(p);
    if (args == NULL)
        return vk__fail_nomem();
    int slot;
    st = common_slot(p, c->cluster, VK_SLOT_NONE, &slot, ctx);
    bool moved = st == VK_OK;
    for (int attempt = 0; moved && attempt < 2; attempt++)
        st = try_cluster_transaction(p, slot, out, ctx, &moved);
    free((void *)args);
    return st;
}

/* Standalone and sentinel: a transaction on one pooled connection. */
static vk_status exec_transaction(vk_pipeline *p, redisReply **out, vk_context *ctx)
{
    vk_pool *pool;
    vk_conn *conn;
    vk_status st = vk__client_take_conn(p->client, &pool, &conn, ctx);
    if (st != VK_OK)
        return st;
    bool ended;
    st = run_on(p, conn, out, ctx, &ended, NULL);
    if (st != VK_OK && vk__conn_is_broken(conn) && st != VK_ERR_TIMEOUT &&
        st != VK_ERR_CANCELLED)
        vk__client_mark_disconnected(p->client);
    if (VK_UNLIKELY(!ended && !vk__conn_is_broken(conn)))
        vk__pool_discard(pool, conn);
    else
        vk__pool_put(pool, conn);
    vk__pool_unref(pool);
    return st;
}

vk_status vk__pipeline_run_pinned(vk_pipeline *p, vk_client *client, vk_conn *conn, int slot,
                                  bool in_multi, redisReply **out, vk_context *ctx,
                                  bool *ended)
{
    *out = NULL;
    *ended = true;
    if (p->client != client) {
        reset(p);
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "the pipeline was made from another client than the session");
    }
    if (p->transaction && in_multi) {
        reset(p);
        return vk__fail(VK_ERR_COMMAND_NOT_ALLOWED,
                        "the session is inside MULTI: a transaction pipeline would nest it; "
                        "send EXEC or DISCARD first");
    }
    vk_status st = check_refusals(p);
    if (st != VK_OK)
        return st;
    if (p->count == 0) {
        reset(p);
        if ((*out = vk__array_reply_new(0)) == NULL)
            return vk__fail_nomem();
        return VK_OK;
    }
    const char **args = NULL;
    if (!p->formatted) {
        if ((args = point_args(p)) == NULL) {
            reset(p);
            return vk__fail_nomem();
        }
        int common;
        st = common_slot(p, client->cluster, slot, &common, ctx);
    }
    if (st == VK_OK)
        st = run_on(p, conn, out, ctx, ended, NULL);
    free((void *)args);
    reset(p);
    return st;
}

/* The event-loop client in cluster mode splits a pipeline by node, and
 * does not keep a transaction together yet. */
static vk_status refuse_cluster_transaction(vk_pipeline *p)
{
    if (VK_LIKELY(!p->transaction))
        return VK_OK;
    reset(p);
    return vk__fail(VK_ERR_COMMAND_NOT_ALLOWED,
                    "a transaction pipeline of an event-loop client in cluster mode: run it "
                    "on the blocking client or on a session");
}

vk_status vk__pipeline_take_commands(vk_pipeline *p, vk_pipeline_commands *out)
{
    memset(out, 0, sizeof *out);
    vk_status st = refuse_cluster_transaction(p);
    if (st != VK_OK)
        return st;
    st = check_refusals(p);
    if (st != VK_OK || p->count == 0)
        return st;
    const char **args = point_args(p);
    if (args == NULL)
        return vk__fail_nomem();
    /* The arena changes hands: the pipeline starts new ones. */
    *out = (vk_pipeline_commands){.commands = p->commands, .count = p->count,
                                  .bytes = p->bytes, .arg_len = p->arg_len, .args = args};
    p->commands = NULL;
    p->count_cap = 0;
    p->bytes = NULL;
    p->bytes_cap = 0;
    p->arg_len = NULL;
    p->lens_cap = 0;
    reset(p);
    return VK_OK;
}

/* A transaction's batch: MULTI and EXEC around the commands, in place in
 * the request buffer, and EXEC's index as the end the engine checks (it
 * sends such a batch alone on its connection and closes the connection if
 * the transaction may not have ended). */
static vk_status frame_transaction(vk_pipeline *p, vk_pipeline_batch *batch)
{
    const char *buf;
    size_t len;
    char *owned;
    vk_status st = encode(p, &buf, &len, &owned);   /* in place: one node, owned stays NULL */
    if (st != VK_OK)
        return st;
    (void)buf;
    if ((batch->ends = malloc(sizeof *batch->ends)) == NULL)
        return vk__fail_nomem();
    p->requests_len = len;
    p->count += 2;
    batch->ends[0] = p->count - 1;
    batch->ends_len = 1;
    batch->transaction = true;
    return VK_OK;
}

vk_status vk__pipeline_take(vk_pipeline *p, vk_pipeline_batch *batch)
{
    memset(batch, 0, sizeof *batch);
    vk_status st = check_refusals(p);
    if (st != VK_OK)
        return st;
    if (p->count == 0)
        return VK_OK;
    if (p->transaction) {
        if ((st = frame_transaction(p, batch)) != VK_OK) {
            reset(p);
            return st;
        }
    }
    if (p->ends_len > 0 && !batch->transaction) {
        batch->ends = malloc(p->ends_len * sizeof *batch->ends);
        if (batch->ends == NULL)
            return vk__fail_nomem();
        memcpy(batch->ends, p->ends, p->ends_len * sizeof *batch->ends);
        batch->ends_len = p->ends_len;
    }
    /* The request bytes change hands: the pipeline starts a new buffer. */
    batch->requests = p->requests;
    batch->len = p->requests_len;
    batch->count = p->count;
    batch->flags = p->flags;
    batch->block_ms = p->block_ms;
    p->requests = NULL;
    p->requests_cap = 0;
    reset(p);
    return VK_OK;
}

/* vk_pipeline_exec of a transaction pipeline with commands. */
static vk_status exec_transaction_traced(vk_reply **out, vk_pipeline *p, vk_context *ctx)
{
    vk_client *c = p->client;
    vk_command_span span;
    bool traced = VK_UNLIKELY(c->cfg->trace_commands) &&
                  vk__command_span_start(&span, c, NULL, 0, p->count, ctx);
    redisReply *exec = NULL;
    vk_status st = c->cluster != NULL ? exec_cluster_transaction(p, &exec, ctx)
                                      : exec_transaction(p, &exec, ctx);
    reset(p);
    if (VK_UNLIKELY(traced))
        vk__command_span_end(&span, st);
    *out = (vk_reply *)exec;
    return st;
}

VK_API vk_status vk_pipeline_exec(vk_reply **out, vk_pipeline *pipeline, vk_context *ctx)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (pipeline == NULL)
        return invalid_pipeline("vk_pipeline_exec");
    vk_client *c = pipeline->client;
    if (!vk__client_alive(c)) {
        reset(pipeline);
        vk__misuse("vk_pipeline_exec", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    if (VK_UNLIKELY(pipeline->owner != NULL)) {
        vk__misuse("vk_pipeline_exec", "the pipeline belongs to an event-loop client");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "the pipeline belongs to an event-loop "
                                                 "client: run it with vk_async_pipeline_exec");
    }
    vk_status st = check_refusals(pipeline);
    if (VK_UNLIKELY(st != VK_OK))
        return st;
    vk__client_check_fork(c);
    if (VK_UNLIKELY(pipeline->transaction) && pipeline->count > 0)
        return exec_transaction_traced(out, pipeline, ctx);
    redisReply *array = vk__array_reply_new(pipeline->count);
    if (array == NULL)
        return vk__fail_nomem();
    if (pipeline->count == 0) {
        *out = (vk_reply *)array;
        return VK_OK;
    }
    vk_command_span span;
    bool traced = VK_UNLIKELY(c->cfg->trace_commands) &&
                  vk__command_span_start(&span, c, NULL, 0, pipeline->count, ctx);
    vk_pool *pool;
    vk_conn *conn;
    st = c->cluster != NULL ? exec_cluster(pipeline, array, ctx)
                            : vk__client_take_conn(c, &pool, &conn, ctx);
    if (st == VK_OK && c->cluster == NULL) {
        st = exec_on(pipeline, conn, array, ctx);
        if (st != VK_OK && vk__conn_is_broken(conn) && st != VK_ERR_TIMEOUT &&
            st != VK_ERR_CANCELLED)
            vk__client_mark_disconnected(c);
        /* A failed exec broke the connection, and the pool closes it. */
        if (VK_UNLIKELY(st == VK_OK && !transactions_ended(pipeline, array)))
            vk__pool_discard(pool, conn);
        else
            vk__pool_put(pool, conn);
        vk__pool_unref(pool);
    }
    reset(pipeline);
    if (VK_UNLIKELY(traced))
        vk__command_span_end(&span, st);
    if (st != VK_OK) {
        char *cause = vk__error_dup();
        vk__reply_free(array);
        vk__fail_restore(st, cause);
        free(cause);
        return st;
    }
    *out = (vk_reply *)array;
    return VK_OK;
}
