/*
 * Cluster pipelines: the commands are grouped by the master of their slot,
 * each group is written to its node in one go (every node first, then the
 * replies are read, so the nodes work in parallel), and each reply is put
 * at its command's index. A command answered with MOVED or ASK (a slot
 * moving meanwhile), or refused with TRYAGAIN / CLUSTERDOWN, did not run:
 * it is run again alone, in order, through the single-command route.
 */
#include "topology/cluster.h"
#include "engine/retry.h"

#include <stdlib.h>
#include <string.h>

/* The commands of a pipeline bound for one node. */
typedef struct batch {
    vk_pool *pool;
    vk_conn *conn;
    vk_status st;        /* of sending; VK_OK when every request was written */
    bool sent;           /* something may have reached the node */
} batch;

/* Sends every command of batch b (those with node[i] == n) in one write. */
static void send_batch(vk_cluster *cl, vk_slot_map *m, size_t n, batch *b, size_t count,
                       const int *node, const vk_command *cmds, vk_context *ctx)
{
    bool closed;
    if ((b->st = vk__cluster_node_pool(cl, m, n, &b->pool, ctx)) != VK_OK)
        return;
    if ((b->st = vk__pool_get(b->pool, &b->conn, ctx, &closed)) != VK_OK)
        return;
    for (size_t i = 0; i < count && b->st == VK_OK; i++) {
        if (node[i] == (int)n)
            b->st = vk__conn_append(b->conn, cmds[i].argc, cmds[i].argv, cmds[i].argvlen);
    }
    if (b->st == VK_OK) {
        b->sent = true;
        b->st = vk__conn_flush(b->conn, ctx);
    }
}

static void release_batch(batch *b)
{
    if (b->conn != NULL)
        vk__pool_put(b->pool, b->conn);
    vk__pool_unref(b->pool);
}

/* Runs one round: every command whose node is known goes out in one batch
 * per node; node[i] = -1 marks the ones left to run alone. Fills replies;
 * a failure after something was sent is returned (the round is not run
 * again: some commands may have run). */
static vk_status run_batches(vk_cluster *cl, vk_slot_map *m, size_t count, int *node,
                             const vk_command *cmds, redisReply **replies, vk_context *ctx)
{
    batch *batches = calloc(m->node_count, sizeof *batches);
    if (batches == NULL)
        return vk__fail_nomem();
    bool *used = calloc(m->node_count, sizeof *used);
    if (used == NULL) {
        free(batches);
        return vk__fail_nomem();
    }
    for (size_t i = 0; i < count; i++) {
        if (node[i] >= 0)
            used[node[i]] = true;
    }
    /* Write to every node first, then read: the nodes work in parallel. */
    for (size_t n = 0; n < m->node_count; n++) {
        if (used[n])
            send_batch(cl, m, n, &batches[n], count, node, cmds, ctx);
    }
    vk_status failure = VK_OK;
    char *cause = NULL;
    for (size_t i = 0; i < count; i++) {
        if (node[i] < 0)
            continue;
        batch *b = &batches[node[i]];
        if (b->st == VK_OK)
            b->st = vk__conn_read(b->conn, &replies[i], ctx);
        if (b->st == VK_OK)
            continue;
        if (!b->sent) {
            node[i] = -1;   /* never left this process: run it alone */
        } else if (failure == VK_OK) {
            failure = b->st;
            cause = vk__error_dup();
        }
    }
    for (size_t n = 0; n < m->node_count; n++) {
        if (used[n])
            release_batch(&batches[n]);
    }
    free(batches);
    free(used);
    if (failure != VK_OK)
        vk__fail_restore(failure, cause);
    free(cause);
    return failure;
}

vk_status vk__cluster_pipeline(vk_cluster *cl, size_t count, vk_command *cmds,
                               redisReply **replies, vk_context *ctx)
{
    vk__cluster_refresh_when_due(cl, ctx);
    int *node = malloc(count * sizeof *node);
    if (node == NULL)
        return vk__fail_nomem();
    /* Every slot is known before anything is sent, so that a cross-slot
     * command fails the pipeline while nothing has run. */
    vk_status st = VK_OK;
    for (size_t i = 0; i < count && st == VK_OK; i++)
        st = vk__cluster_command_slot(cl, &cmds[i], ctx);
    vk_slot_map *m = st == VK_OK ? vk__cluster_map(cl, NULL) : NULL;
    if (st == VK_OK && m == NULL)
        st = vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
    if (st == VK_OK) {
        for (size_t i = 0; i < count; i++)
            node[i] = vk__cluster_node_for_slot(m, cmds[i].slot);
        st = run_batches(cl, m, count, node, cmds, replies, ctx);
    }
    /* What could not be sent, and what was redirected or refused, runs
     * again alone, in order, with the full redirect and retry handling. */
    int64_t refused_until = 0;
    for (size_t i = 0; i < count && st == VK_OK; i++) {
        vk_cluster_redirect rd;
        bool redirected = false;
        if (node[i] >= 0 && replies[i] != NULL) {
            redirected =
                vk__cluster_take_redirect(cl, replies[i], &m->nodes[node[i]].endpoint, &rd);
            if (!redirected && !vk__reply_is_refusal(replies[i]))
                continue;
            vk__reply_free(replies[i]);
            replies[i] = NULL;
        }
        st = vk__cluster_route(cl, &cmds[i], redirected ? &rd : NULL, &replies[i],
                               &refused_until, ctx);
    }
    vk__slot_map_unref(m);
    free(node);
    return st;
}
