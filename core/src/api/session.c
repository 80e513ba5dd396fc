/*
 * Sessions: one pooled connection pinned to one caller, for the commands
 * that change the state of a connection (WATCH, MULTI, EXEC, DISCARD,
 * SELECT, CLIENT ...), which the shared command path refuses. In cluster
 * mode a session belongs to the master of one key's slot, and a command
 * whose keys hash elsewhere is refused before anything is sent.
 *
 * A session is stateful, so nothing is retried on it: a connection that
 * fails (I/O error, timeout, cancelled mid-command) fails the session, is
 * closed rather than pooled, and every later call says so.
 *
 * Giving the connection back. Two ways were possible: RESET (Redis 6.2+,
 * Valkey), then the handshake again (AUTH or HELLO, SELECT); or undoing
 * exactly what the session did. The second is used, because RESET is not
 * enough and not everywhere: it leaves a CLIENT SETNAME in place and clears
 * CLIENT NO-EVICT / NO-TOUCH only on some versions, it does not exist
 * before 6.2, and it logs the connection out, so a handshake (with the
 * current IAM token) must follow before the connection may be pooled.
 * Instead the session records what it sent: MULTI (undone by DISCARD),
 * WATCH (UNWATCH) and SELECT (SELECT of the configured db) are undone in
 * one round trip at close, and only when they were used; any other command
 * that changes the connection (CLIENT SETNAME, HELLO, AUTH, RESET, CLIENT
 * TRACKING, ...) leaves it in a state the pool cannot vouch for, and the
 * connection is then closed instead of pooled. Commands whose replies do
 * not pair one to one with requests (SUBSCRIBE and kin, MONITOR, SYNC,
 * CLIENT REPLY) are refused: a session reads one reply per command.
 */
#include "api/client.h"
#include "api/command_observe.h"
#include "api/pipeline.h"
#include "api/transaction.h"
#include "topology/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct vk_session {
    vk_client *client;     /* a reference: the session may outlive vk_client_free */
    vk_pool *pool;         /* a reference on the pool conn came from */
    vk_conn *conn;
    int slot;              /* cluster: the slot pinned; VK_SLOT_NONE otherwise */
    vk_endpoint node;      /* cluster: the master it talks to */
    unsigned fork_generation;
    bool failed;           /* the connection failed: every later call is refused */
    bool in_multi;         /* MULTI sent and not yet ended */
    bool watching;         /* WATCH sent and not known undone */
    bool db_changed;       /* SELECT sent */
    bool unknown;          /* another state-changing command was sent */
};

static vk_status nil_session(const char *function)
{
    vk__misuse(function, "session is nil");
    return vk__fail(VK_ERR_INVALID_ARGUMENT, "session is nil");
}

static bool named(const vk_command *cmd, int i, const char *name)
{
    size_t n = strlen(name);
    return cmd->argc > i && cmd->argv[i] != NULL && cmd->argvlen[i] == n &&
           strncasecmp(cmd->argv[i], name, n) == 0;
}

/* ---- open ------------------------------------------------------------------ */

VK_API vk_status vk_session_open(vk_session **out, vk_client *client, vk_context *ctx,
                                 const char *key, size_t keylen)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL || !vk__client_alive(client)) {
        vk__misuse("vk_session_open", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    if (key == NULL && keylen != 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "key is NULL");
    if (client->cluster != NULL && key == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "a session in cluster mode needs a key: it runs on the master of that "
                        "key's hash slot");
    vk__client_check_fork(client);
    vk_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return vk__fail_nomem();
    s->slot = VK_SLOT_NONE;
    vk_status st;
    if (client->cluster != NULL) {
        s->slot = (int)vk__cluster_key_slot(key, keylen);
        st = vk__client_ensure_connected(client, ctx);
        if (st == VK_OK) {
            vk__cluster_refresh_when_due(client->cluster, ctx);
            st = vk__cluster_slot_conn(client->cluster, s->slot, &s->pool, &s->conn, &s->node,
                                       ctx);
        }
    } else {
        st = vk__client_take_conn(client, &s->pool, &s->conn, ctx);
    }
    if (st != VK_OK) {
        free(s);
        return st;
    }
    s->client = vk__client_ref(client);
    s->fork_generation = vk__fork_generation();
    *out = s;
    return VK_OK;
}

/* ---- commands -------------------------------------------------------------- */

/* Fails calls on a session whose connection failed, or that a fork left in
 * the parent. */
static vk_status check_usable(vk_session *s, const char *function)
{
    if (!vk__client_alive(s->client)) {
        vk__misuse(function, "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    if (VK_UNLIKELY(s->fork_generation != vk__fork_generation()))
        return vk__fail(VK_ERR_IO, "the session's connection belongs to the parent process; "
                                   "open a new session in the child");
    if (VK_UNLIKELY(s->failed))
        return vk__fail(VK_ERR_IO, "the session's connection failed (an error, a timeout or "
                                   "a cancel mid-command) and was closed; close the session "
                                   "and open a new one");
    return VK_OK;
}

/* Commands a session refuses: their replies do not pair one to one with
 * requests. The shared path's refusal text says why. */
static bool refused_in_session(const vk_command *cmd)
{
    return named(cmd, 0, "SUBSCRIBE") || named(cmd, 0, "PSUBSCRIBE") ||
           named(cmd, 0, "SSUBSCRIBE") || named(cmd, 0, "UNSUBSCRIBE") ||
           named(cmd, 0, "PUNSUBSCRIBE") || named(cmd, 0, "SUNSUBSCRIBE") ||
           named(cmd, 0, "MONITOR") || named(cmd, 0, "SYNC") || named(cmd, 0, "PSYNC") ||
           named(cmd, 0, "REPLCONF") || (named(cmd, 0, "CLIENT") && named(cmd, 1, "REPLY"));
}

/* Records, before it is sent, what the command may change on the
 * connection (close undoes it, or closes the connection). */
static void note_sent(vk_session *s, const vk_command *cmd)
{
    if (named(cmd, 0, "WATCH"))
        s->watching = true;
    else if (named(cmd, 0, "SELECT"))
        s->db_changed = true;
    else if (cmd->effect == VK_EFFECT_STATEFUL && !named(cmd, 0, "UNWATCH"))
        s->unknown = true;
}

static bool is_error(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR;
}

/* Follows the transaction state from the reply. */
static void note_reply(vk_session *s, const vk_command *cmd, const redisReply *r)
{
    if (cmd->effect == VK_EFFECT_OPENS_MULTI) {
        /* An error is a nested MULTI (still inside) or a refusal (not). */
        if (!is_error(r))
            s->in_multi = true;
    } else if (cmd->effect == VK_EFFECT_CLOSES_MULTI && s->in_multi) {
        /* EXEC and DISCARD end the transaction and forget the watched keys,
         * EXECABORT included; another error leaves things unknown, and
         * close then undoes both (a DISCARD too many is harmless). */
        if (!is_error(r) || (r->len >= 9 && memcmp(r->str, "EXECABORT", 9) == 0)) {
            s->in_multi = false;
            s->watching = false;
        }
    } else if (named(cmd, 0, "UNWATCH") && !s->in_multi && !is_error(r)) {
        s->watching = false;
    }
}

/* Cluster mode: the command's keys must be in the session's slot. */
static vk_status check_slot(vk_session *s, vk_command *cmd, vk_context *ctx)
{
    vk_status st = vk__cluster_command_slot(s->client->cluster, cmd, ctx);
    if (st != VK_OK)
        return st;
    if (cmd->slot >= 0 && cmd->slot != s->slot)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "the session is pinned to the master of hash slot %d, and the "
                        "command's keys hash to slot %d; give keys that go together one hash "
                        "tag, e.g. {user:1}:a and {user:1}:b",
                        s->slot, cmd->slot);
    return VK_OK;
}

/* After a call that may have used the connection: a broken one fails the
 * session. */
static void after_io(vk_session *s, vk_status st)
{
    if (st == VK_OK || !vk__conn_is_broken(s->conn))
        return;
    s->failed = true;
    if (st != VK_ERR_TIMEOUT && st != VK_ERR_CANCELLED)
        vk__client_mark_disconnected(s->client);
}

VK_API vk_status vk_session_command(vk_reply **out, vk_session *session, vk_context *ctx,
                                    int argc, const char *const *argv, const size_t *argvlen)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (session == NULL)
        return nil_session("vk_session_command");
    vk_status st = check_usable(session, "vk_session_command");
    if (st != VK_OK)
        return st;
    if ((st = vk__command_check(argc, argv, argvlen)) != VK_OK)
        return st;
    vk_command cmd;
    vk__command_classify(&cmd, argc, argv, argvlen);
    if (VK_UNLIKELY(refused_in_session(&cmd)))
        return vk__fail(VK_ERR_COMMAND_NOT_ALLOWED, "%s", cmd.refusal);
    if (session->client->cluster != NULL && (st = check_slot(session, &cmd, ctx)) != VK_OK)
        return st;
    note_sent(session, &cmd);
    vk_client *c = session->client;
    vk_command_span span;
    bool traced = VK_UNLIKELY(c->cfg->trace_commands) &&
                  vk__command_span_start(&span, c, argv[0], argvlen[0], 0, ctx);
    bool timed = vk__events_has_metrics(c->events);
    int64_t started_us = timed ? vk__now_us() : 0;
    bool sent;
    redisReply *reply = NULL;
    bool was_in_multi = session->in_multi;
    st = vk__conn_user_command(session->conn, &reply, &cmd, ctx, &sent);
    after_io(session, st);
    if (VK_UNLIKELY(traced))
        vk__command_span_end(&span, st);
    if (timed) {
        char label[VK_COMMAND_LABEL_MAX];
        vk__command_label(&cmd, label);
        vk__command_observe_latency(c, label, started_us);
    }
    if (st != VK_OK)
        return st;
    note_reply(session, &cmd, reply);
    if (vk__client_follows_master(session->client) && vk__reply_demands_rediscovery(reply))
        vk__client_mark_disconnected(session->client);
    /* A session is not redirected (its state is on this connection), but
     * a MOVED puts the map right for the next ones. */
    vk_cluster_redirect moved;
    if (VK_UNLIKELY(session->client->cluster != NULL && reply->type == REDIS_REPLY_ERROR))
        (void)vk__cluster_take_redirect(session->client->cluster, reply, &session->node, &moved);
    if (cmd.effect == VK_EFFECT_CLOSES_MULTI && was_in_multi && named(&cmd, 0, "EXEC") &&
        vk__exec_aborted(reply)) {
        vk__reply_free(reply);
        return vk__fail(VK_ERR_WATCH_CONFLICT, NULL);
    }
    *out = (vk_reply *)reply;
    return VK_OK;
}

VK_API vk_status vk_session_pipeline_exec(vk_reply **out, vk_session *session,
                                          vk_pipeline *pipeline, vk_context *ctx)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (session == NULL)
        return nil_session("vk_session_pipeline_exec");
    if (pipeline == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "pipeline is nil");
    vk_status st = check_usable(session, "vk_session_pipeline_exec");
    if (st != VK_OK)
        return st;
    bool ended;
    redisReply *reply = NULL;
    bool transaction = vk_pipeline_is_transaction(pipeline);
    vk_client *c = session->client;
    vk_command_span span;
    bool traced = VK_UNLIKELY(c->cfg->trace_commands) &&
                  vk__command_span_start(&span, c, NULL, 0, vk_pipeline_length(pipeline), ctx);
    st = vk__pipeline_run_pinned(pipeline, session->client, session->conn, session->slot,
                                 session->in_multi, &reply, ctx, &ended);
    after_io(session, st);
    if (VK_UNLIKELY(traced))
        vk__command_span_end(&span, st);
    /* A transaction that ran ended the session's WATCH with it. */
    if (transaction && ended && !session->failed && (st == VK_OK || st == VK_ERR_WATCH_CONFLICT))
        session->watching = false;
    if (!ended)
        session->unknown = true;
    *out = (vk_reply *)reply;
    return st;
}

/* ---- close ----------------------------------------------------------------- */

/* Undoes what the session did to the connection (see the top of the
 * file), in one round trip; false when that failed. */
static bool undo_state(vk_session *s)
{
    static const char *const discard[] = {"DISCARD"};
    static const size_t discard_len[] = {7};
    static const char *const unwatch[] = {"UNWATCH"};
    static const size_t unwatch_len[] = {7};
    char db[16];
    const char *select[] = {"SELECT", db};
    size_t select_len[] = {6, 0};
    const vk_config *cfg = vk__client_config(s->client);
    select_len[1] = (size_t)snprintf(db, sizeof db, "%d", cfg->db);
    vk_status st = VK_OK;
    int replies = 0;
    if (s->in_multi && (st = vk__conn_append(s->conn, 1, discard, discard_len)) == VK_OK)
        replies++;
    if (st == VK_OK && s->watching &&
        (st = vk__conn_append(s->conn, 1, unwatch, unwatch_len)) == VK_OK)
        replies++;
    if (st == VK_OK && s->db_changed &&
        (st = vk__conn_append(s->conn, 2, select, select_len)) == VK_OK)
        replies++;
    if (st == VK_OK)
        st = vk__conn_flush(s->conn, NULL);
    for (int i = 0; i < replies && st == VK_OK; i++) {
        redisReply *r;
        if ((st = vk__conn_read(s->conn, &r, NULL)) != VK_OK)
            break;
        /* DISCARD may find the transaction ended already. */
        bool is_discard = s->in_multi && i == 0;
        if (is_error(r) && !is_discard)
            st = VK_ERR_SERVER;
        vk__reply_free(r);
    }
    return st == VK_OK;
}

/* undo_state, leaving the caller's last error as it was: close reports
 * nothing. */
static bool undo_quietly(vk_session *s)
{
    vk_status code = vk_last_status();
    char *detail = vk__error_dup();
    bool ok = undo_state(s);
    vk__fail_restore(code, detail);
    free(detail);
    return ok;
}

VK_API void vk_session_close(vk_session *session)
{
    if (session == NULL)
        return;
    vk_session *s = session;
    if (s->fork_generation != vk__fork_generation()) {
        /* The parent owns the socket: drop ours unseen. The child's first
         * call into the client abandons the parent's pools (whatever their
         * references), so the session's pool is not touched either. */
        vk__client_check_fork(s->client);
        vk__conn_abandon(s->conn);
    } else if (s->failed || vk__conn_is_broken(s->conn) || !vk__client_alive(s->client)) {
        /* The pool closes a broken connection, and every one once the
         * client's close closed it. */
        vk__pool_put(s->pool, s->conn);
        vk__pool_unref(s->pool);
    } else if (s->unknown ||
               ((s->in_multi || s->watching || s->db_changed) && !undo_quietly(s))) {
        vk__pool_discard(s->pool, s->conn);
        vk__pool_unref(s->pool);
    } else {
        vk__pool_put(s->pool, s->conn);
        vk__pool_unref(s->pool);
    }
    vk__client_unref(s->client);
    free(s);
}
