/*
 * The command path: pool → connection → reply, with the retry policy
 * documented above vk_client_command() in vkclient.h. The command is
 * classified once (command.c) and its descriptor goes down with it; those
 * that would change the pooled connection for its next caller are refused
 * first. The success path allocates nothing but the reply, reads no clock
 * unless a metrics sink wants the latency, and logs nothing.
 */
#include "api/client.h"
#include "api/command_observe.h"
#include "topology/cluster.h"

/* One attempt on one pooled connection. *sent tells whether the request
 * fully reached the socket. */
static vk_status run_once(vk_client *c, redisReply **reply, vk_context *ctx,
                          const vk_command *cmd, bool *sent)
{
    *sent = false;
    vk_pool *pool;
    vk_conn *conn;
    vk_status st = vk__client_take_conn(c, &pool, &conn, ctx);
    if (VK_UNLIKELY(st != VK_OK))
        return st;
    st = vk__conn_user_command(conn, reply, cmd, ctx, sent);
    if (VK_UNLIKELY(st != VK_OK) && vk__conn_is_broken(conn) && st != VK_ERR_TIMEOUT &&
        st != VK_ERR_CANCELLED)
        vk__client_mark_disconnected(c);
    vk__pool_put(pool, conn);
    vk__pool_unref(pool);
    return st;
}

static void observe_latency(vk_client *c, const vk_command *cmd, int64_t started_us)
{
    char name[VK_COMMAND_LABEL_MAX];
    vk__command_label(cmd, name);
    vk__command_observe_latency(c, name, started_us);
}

static vk_status check_args(vk_reply **out, int argc, const char *const *argv,
                            const size_t *argvlen)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (argc <= 0 || argv == NULL || argvlen == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a command needs argc >= 1, argv and argvlen");
    for (int i = 0; i < argc; i++) {
        if (argv[i] == NULL && argvlen[i] != 0)
            return vk__fail(VK_ERR_INVALID_ARGUMENT, "argument %d is NULL", i);
    }
    return VK_OK;
}

static vk_status command_with_retries(vk_client *c, redisReply **reply, vk_context *ctx,
                                      const vk_command *cmd)
{
    int max_retries = c->cfg->max_retries > 0 ? c->cfg->max_retries : 0;
    for (int attempt = 0;; attempt++) {
        bool sent;
        vk_status st = run_once(c, reply, ctx, cmd, &sent);
        bool retry;
        if (VK_UNLIKELY(st == VK_OK && vk__client_follows_master(c) &&
                        vk__reply_demands_rediscovery(*reply))) {
            /* The node is not (or no longer) the master and did not run the
             * command: find the master again and retry there. */
            vk__client_mark_disconnected(c);
            retry = attempt < max_retries;
        } else if (VK_LIKELY(st == VK_OK))
            retry = VK_UNLIKELY(vk__reply_is_refusal(*reply)) && attempt < max_retries;
        else
            retry = vk__retry_after_failure(c->cfg, attempt, st, sent, cmd);
        if (VK_LIKELY(!retry))
            return st;
        if (st == VK_OK) {
            vk__reply_free(*reply);
            *reply = NULL;
        }
        /* A deadline or cancel of the caller ends the retries at once. */
        vk_status wait = vk__ctx_sleep_ms(ctx, vk__retry_backoff_ms(c->cfg, attempt));
        if (wait != VK_OK)
            return wait;
    }
}

/* Cluster mode: the topology picks the node (or takes the given master),
 * follows redirects and applies the retry policy; the client only
 * reconnects (loads the slot map from the seeds again) when it is not
 * connected, under the same rate limit. */
static vk_status cluster_command(vk_client *c, redisReply **reply, vk_context *ctx,
                                 vk_command *cmd, const vk_endpoint *at)
{
    vk_status st = vk__client_ensure_connected(c, ctx);
    if (st != VK_OK)
        return st;
    if (at != NULL)
        return vk__cluster_command_at(c->cluster, reply, cmd, at, ctx);
    return vk__cluster_command(c->cluster, reply, cmd, ctx);
}

/* vk_client_command() once the client and arguments are checked; at (cluster
 * mode only) names the master to run it on, NULL: where its keys are. */
static vk_status run_command(redisReply **reply, vk_client *client, vk_context *ctx, int argc,
                             const char *const *argv, const size_t *argvlen,
                             const vk_endpoint *at)
{
    vk_status st;
    vk_command_span span;
    bool traced = VK_UNLIKELY(client->cfg->trace_commands) &&
                  vk__command_span_start(&span, client, argv[0], argvlen[0], 0, ctx);
    /* Before anything is sent: the pooled connection stays as it was. A
     * lone MULTI or EXEC is refused too; a transaction needs a pipeline. */
    vk_command cmd;
    vk__command_classify(&cmd, argc, argv, argvlen);
    if (VK_UNLIKELY(cmd.effect != VK_EFFECT_NONE)) {
        st = vk__fail(VK_ERR_COMMAND_NOT_ALLOWED, "%s", cmd.refusal);
        if (VK_UNLIKELY(traced))
            vk__command_span_end(&span, st);
        return st;
    }
    vk__client_check_fork(client);

    bool timed = vk__events_has_metrics(client->events);
    int64_t started_us = timed ? vk__now_us() : 0;
    if (client->cluster != NULL)
        st = cluster_command(client, reply, ctx, &cmd, at);
    else
        st = command_with_retries(client, reply, ctx, &cmd);
    if (VK_UNLIKELY(traced))
        vk__command_span_end(&span, st);
    if (timed)
        observe_latency(client, &cmd, started_us);
    return st;
}

VK_API vk_status vk_client_command(vk_reply **out, vk_client *client, vk_context *ctx,
                                   int argc, const char *const *argv, const size_t *argvlen)
{
    if (VK_UNLIKELY(client == NULL || !vk__client_alive(client))) {
        if (out != NULL)
            *out = NULL;
        vk__misuse("vk_client_command", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    vk_status st = check_args(out, argc, argv, argvlen);
    if (VK_UNLIKELY(st != VK_OK))
        return st;
    redisReply *reply = NULL;
    st = run_command(&reply, client, ctx, argc, argv, argvlen, NULL);
    *out = (vk_reply *)reply;
    return st;
}

vk_status vk__client_command_at(redisReply **reply, vk_client *client, vk_context *ctx,
                                int argc, const char *const *argv, const size_t *argvlen,
                                const vk_endpoint *at)
{
    *reply = NULL;
    return run_command(reply, client, ctx, argc, argv, argvlen, at);
}
