/*
 * The cluster topology: the slot map in service, one pool per master, and
 * the routing of single commands (pipelines: cluster_pipeline.c).
 *
 * Routing reads the current map under a short lock and keeps its own
 * reference while it runs, so a refresh can install a new map at any time.
 * Installed maps are never modified, except that a node's pool is opened
 * on first use: a MOVED installs a patched copy. Pools move from one map
 * to the next while the node stays a master, so a refresh reconnects
 * nothing.
 */
#include "topology/cluster.h"
#include "engine/retry.h"

#include <stdlib.h>
#include <string.h>

struct vk_cluster {
    vk_pool_params params;          /* template of each node's pool */
    vk_endpoint *seeds;
    size_t seed_count;

    pthread_mutex_t lock;           /* guards map; never held across I/O */
    vk_slot_map *map;               /* NULL: not connected */
    uint64_t map_version;           /* bumped by every install, under lock */

    pthread_mutex_t refresh_lock;   /* one map load at a time */
    _Atomic int64_t refreshed_ms;   /* monotonic time of the last load; 0: due */

    atomic_uint_fast64_t slot_refreshes;
    atomic_uint_fast64_t moved_redirects;
    atomic_uint_fast64_t ask_redirects;
};

/* ---- lifecycle --------------------------------------------------------------- */

vk_status vk__cluster_new(vk_cluster **out, const vk_pool_params *params)
{
    *out = NULL;
    const vk_strlist *addresses = &params->cfg->cluster_addresses;
    vk_cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL || (cl->seeds = calloc(addresses->count, sizeof *cl->seeds)) == NULL) {
        free(cl);
        return vk__fail_nomem();
    }
    cl->params = *params;
    /* A pool per node: each one's gauges carry its node's address. */
    cl->params.label_node = true;
    for (size_t i = 0; i < addresses->count; i++) {
        vk_status st = vk__parse_address(&cl->seeds[i], addresses->items[i]);
        if (st != VK_OK) {
            free(cl->seeds);
            free(cl);
            return st;
        }
    }
    cl->seed_count = addresses->count;
    pthread_mutex_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->refresh_lock, NULL);
    *out = cl;
    return VK_OK;
}

/* Swaps m in (NULL: none) and returns the previous map, whose reference
 * the caller now owns. */
static vk_slot_map *install_map(vk_cluster *cl, vk_slot_map *m)
{
    pthread_mutex_lock(&cl->lock);
    vk_slot_map *old = cl->map;
    cl->map = m;
    cl->map_version++;
    pthread_mutex_unlock(&cl->lock);
    return old;
}

static void close_pools(vk_slot_map *m)
{
    for (size_t i = 0; m != NULL && i < m->node_count; i++)
        vk__pool_close(atomic_load(&m->nodes[i].pool));
}

void vk__cluster_close(vk_cluster *cl)
{
    if (cl == NULL)
        return;
    vk_slot_map *old = install_map(cl, NULL);
    close_pools(old);
    vk__slot_map_unref(old);
}

void vk__cluster_free(vk_cluster *cl)
{
    if (cl == NULL)
        return;
    vk__cluster_close(cl);
    pthread_mutex_destroy(&cl->lock);
    pthread_mutex_destroy(&cl->refresh_lock);
    free(cl->seeds);
    free(cl);
}

void vk__cluster_after_fork(vk_cluster *cl)
{
    if (cl == NULL)
        return;
    /* Only this thread exists now; a lock may have been held by another
     * parent thread when fork() ran, so they are re-initialised. */
    pthread_mutex_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->refresh_lock, NULL);
    vk_slot_map *m = cl->map;
    cl->map = NULL;
    if (m == NULL)
        return;
    /* References held by the parent's other threads are gone with them:
     * the map and its pools are released whatever their counts. */
    for (size_t i = 0; i < m->node_count; i++)
        vk__pool_abandon(atomic_load(&m->nodes[i].pool));
    free(m->nodes);
    free(m);
}

bool vk__cluster_connected(vk_cluster *cl)
{
    if (cl == NULL)
        return false;
    pthread_mutex_lock(&cl->lock);
    bool connected = cl->map != NULL;
    pthread_mutex_unlock(&cl->lock);
    return connected;
}

vk_status vk__cluster_stats(vk_cluster *cl, vk_cluster_stats *out)
{
    memset(out, 0, sizeof *out);
    if (cl == NULL)
        return VK_OK;
    out->slot_refreshes = atomic_load(&cl->slot_refreshes);
    out->moved_redirects = atomic_load(&cl->moved_redirects);
    out->ask_redirects = atomic_load(&cl->ask_redirects);
    vk_slot_map *m = vk__cluster_map(cl, NULL);
    vk_status st = vk__slot_map_masters(m, out);
    vk__slot_map_unref(m);
    return st;
}

/* ---- maps and pools ------------------------------------------------------------- */

vk_slot_map *vk__cluster_map(vk_cluster *cl, uint64_t *version)
{
    pthread_mutex_lock(&cl->lock);
    vk_slot_map *m = vk__slot_map_ref(cl->map);
    if (version != NULL)
        *version = cl->map_version;
    pthread_mutex_unlock(&cl->lock);
    return m;
}

vk_status vk__cluster_node_pool(vk_cluster *cl, vk_slot_map *m, size_t i, vk_pool **out,
                                vk_context *ctx)
{
    vk_cluster_node *node = &m->nodes[i];
    vk_pool *p = atomic_load(&node->pool);
    if (p != NULL) {
        *out = vk__pool_ref(p);
        return VK_OK;
    }
    vk_pool_params params = cl->params;
    params.endpoint = node->endpoint;
    vk_pool *fresh;
    vk_status st = vk__pool_new(&fresh, &params, ctx);
    if (st != VK_OK)
        return st;
    vk_pool *expected = NULL;
    if (atomic_compare_exchange_strong(&node->pool, &expected, fresh)) {
        *out = vk__pool_ref(fresh);
        return VK_OK;
    }
    /* Another caller opened one meanwhile: use that one. */
    vk__pool_close(fresh);
    vk__pool_unref(fresh);
    *out = vk__pool_ref(expected);
    return VK_OK;
}

void vk__cluster_reauth_idle(vk_cluster *cl, vk_context *ctx)
{
    vk_slot_map *m = vk__cluster_map(cl, NULL);
    for (size_t i = 0; m != NULL && i < m->node_count; i++) {
        vk_pool *p = atomic_load(&m->nodes[i].pool);
        if (p != NULL)
            vk__pool_reauth_idle(p, ctx);
    }
    vk__slot_map_unref(m);
}

void vk__cluster_report_pool_gauges(vk_cluster *cl)
{
    vk_slot_map *m = vk__cluster_map(cl, NULL);
    for (size_t i = 0; m != NULL && i < m->node_count; i++)
        vk__pool_report_gauges(atomic_load(&m->nodes[i].pool));
    vk__slot_map_unref(m);
}

/* ---- one request on one node -------------------------------------------------------- */

/* Runs a command on a connection of pool, preceded by ASKING when asked
 * to; a blocking command's reply gets its wait either way. *sent: the
 * request fully reached the socket. */
static vk_status run_on(vk_pool *pool, bool asking, redisReply **reply, const vk_command *cmd,
                        vk_context *ctx, bool *sent)
{
    *sent = false;
    *reply = NULL;
    vk_conn *conn;
    bool closed;
    vk_status st = vk__pool_get(pool, &conn, ctx, &closed);
    if (st != VK_OK)
        return st;
    if (!asking) {
        st = vk__conn_user_command(conn, reply, cmd, ctx, sent);
    } else {
        static const char *const asking_argv[] = {"ASKING"};
        static const size_t asking_len[] = {6};
        redisReply *ok = NULL;
        if ((st = vk__conn_append(conn, 1, asking_argv, asking_len)) == VK_OK &&
            (st = vk__conn_append(conn, cmd->argc, cmd->argv, cmd->argvlen)) == VK_OK &&
            (st = vk__conn_flush(conn, ctx)) == VK_OK) {
            *sent = true;
            if ((st = vk__conn_read(conn, &ok, ctx)) == VK_OK)
                st = vk__conn_read_reply_of(conn, reply, cmd, ctx);
        }
        if (ok != NULL)
            vk__reply_free(ok);
    }
    vk__pool_put(pool, conn);
    return st;
}

/* ---- loading the slot map ------------------------------------------------------------ */

/* Asks the node behind pool for the slot map: CLUSTER SHARDS, or CLUSTER
 * SLOTS where the server does not know SHARDS. */
static vk_status load_from(vk_cluster *cl, vk_pool *pool, const vk_endpoint *ep,
                           vk_slot_map *previous, vk_slot_map **out, vk_context *ctx)
{
    redisReply *r;
    bool sent;
    bool shards = true;
    vk_command cmd;
    vk__cluster_map_request(&cmd, true);
    vk_status st = run_on(pool, false, &r, &cmd, ctx, &sent);
    if (st == VK_OK && r->type == REDIS_REPLY_ERROR) {
        vk__reply_free(r);
        shards = false;
        vk__cluster_map_request(&cmd, false);
        st = run_on(pool, false, &r, &cmd, ctx, &sent);
    }
    if (st != VK_OK)
        return st;
    st = vk__cluster_map_from_reply(out, r, shards, ep, cl->params.tls != NULL, previous);
    vk__reply_free(r);
    return st;
}

/* Tries the masters of the current map (they know the latest changes),
 * then the seeds. When none could be reached, the failure names the last
 * cause: "redis cluster: all nodes are unreachable: <cause>". */
static vk_status load_map(vk_cluster *cl, vk_slot_map **out, vk_context *ctx)
{
    vk_slot_map *previous = vk__cluster_map(cl, NULL);
    vk_status st = vk__fail_msg(VK_ERR_IO, "no node is known");
    size_t known = previous != NULL ? previous->node_count : 0;
    size_t start = known > 0 ? (size_t)vk__jitter((int64_t)known) : 0;
    for (size_t k = 0; k < known + cl->seed_count; k++) {
        if (vk__ctx_check(ctx) != VK_OK) {
            st = vk__ctx_check(ctx);
            break;
        }
        vk_pool *pool;
        const vk_endpoint *ep;
        if (k < known) {
            size_t i = (start + k) % known;
            ep = &previous->nodes[i].endpoint;
            st = vk__cluster_node_pool(cl, previous, i, &pool, ctx);
        } else {
            vk_pool_params params = cl->params;
            params.endpoint = cl->seeds[k - known];
            ep = &cl->seeds[k - known];
            st = vk__pool_new(&pool, &params, ctx);
        }
        if (st != VK_OK)
            continue;
        st = load_from(cl, pool, ep, previous, out, ctx);
        if (k >= known)
            vk__pool_close(pool);   /* a seed outside the map: not kept */
        vk__pool_unref(pool);
        if (st == VK_OK)
            break;
    }
    vk__slot_map_unref(previous);
    if (st == VK_ERR_IO)
        st = vk__cluster_fail_unreachable();
    return st;
}

typedef enum refresh_mode {
    REFRESH_IF_UNCHANGED,   /* unless a map was installed since `seen` */
    REFRESH_NOW,            /* whatever the map's version */
    REFRESH_CONNECT         /* also when there is no map (connect) */
} refresh_mode;

/* Loads and installs a new map. Only a connect installs one where there
 * is none: a closed cluster stays closed until the client reconnects. */
static vk_status refresh(vk_cluster *cl, uint64_t seen, refresh_mode mode, vk_context *ctx)
{
    pthread_mutex_lock(&cl->refresh_lock);
    pthread_mutex_lock(&cl->lock);
    bool closed = cl->map == NULL && mode != REFRESH_CONNECT;
    bool stale = mode != REFRESH_IF_UNCHANGED || cl->map_version == seen;
    pthread_mutex_unlock(&cl->lock);
    if (closed || !stale) {
        pthread_mutex_unlock(&cl->refresh_lock);
        return closed ? vk__fail_msg(VK_ERR_IO, "redis cluster: not connected") : VK_OK;
    }
    vk_slot_map *fresh = NULL;
    vk_status st = load_map(cl, &fresh, ctx);
    if (st == VK_OK) {
        vk__slot_map_unref(install_map(cl, fresh));
        atomic_store(&cl->refreshed_ms, vk__now_ms());
        atomic_fetch_add(&cl->slot_refreshes, 1);
        vk__cluster_count(cl->params.events, "redis_cluster_slot_refreshes_total", NULL);
    } else {
        char *cause = vk__error_dup();
        const vk_field fields[] = {{"error", cause != NULL ? cause : ""}};
        vk__log(cl->params.events, VK_LOG_WARN, "redis cluster: slot map refresh failed",
                fields, 1);
        vk__fail_restore(st, cause);
        free(cause);
    }
    pthread_mutex_unlock(&cl->refresh_lock);
    return st;
}

void vk__cluster_refresh_when_due(vk_cluster *cl, vk_context *ctx)
{
    int64_t last = atomic_load(&cl->refreshed_ms);
    if (VK_LIKELY(vk__now_ms() - last < VK_CLUSTER_REFRESH_EVERY_MS))
        return;
    if (pthread_mutex_trylock(&cl->refresh_lock) != 0)
        return;
    pthread_mutex_unlock(&cl->refresh_lock);
    if (refresh(cl, 0, REFRESH_NOW, ctx) != VK_OK)
        /* Try again in a while, not on every command; the map in service
         * stays, and the command tells whether it still works. */
        atomic_store(&cl->refreshed_ms, vk__now_ms() - VK_CLUSTER_REFRESH_EVERY_MS / 2);
}

vk_status vk__cluster_connect(vk_cluster *cl, vk_context *ctx)
{
    vk_status st = refresh(cl, 0, REFRESH_CONNECT, ctx);
    if (st != VK_OK)
        return st;
    /* Open (and ping, through the handshake) every master's pool now, so
     * that the first commands do not pay for it; a master that cannot be
     * reached is retried when a command needs it. */
    vk_slot_map *m = vk__cluster_map(cl, NULL);
    for (size_t i = 0; m != NULL && i < m->node_count; i++) {
        vk_pool *pool;
        if (vk__cluster_node_pool(cl, m, i, &pool, ctx) == VK_OK)
            vk__pool_unref(pool);
    }
    vk__slot_map_unref(m);
    return VK_OK;
}

/* ---- redirects ---------------------------------------------------------------------- */

/* After MOVED: the slot is served by target from now on. The full map is
 * reloaded soon too: a MOVED usually means more than one slot moved. */
static void apply_moved(vk_cluster *cl, const vk_cluster_redirect *rd)
{
    pthread_mutex_lock(&cl->lock);
    vk_slot_map *m = cl->map;
    vk_slot_map *patched = m != NULL ? vk__slot_map_moved(m, rd) : NULL;
    if (patched != NULL) {
        cl->map = patched;
        cl->map_version++;
    }
    pthread_mutex_unlock(&cl->lock);
    if (patched != NULL)
        vk__slot_map_unref(m);
    atomic_store(&cl->refreshed_ms, 0);
}

/* A redirect followed: counted, and a MOVED applied to the map. */
static void note_redirect(vk_cluster *cl, const vk_cluster_redirect *rd)
{
    if (rd->ask) {
        atomic_fetch_add(&cl->ask_redirects, 1);
    } else {
        atomic_fetch_add(&cl->moved_redirects, 1);
        apply_moved(cl, rd);
    }
}

bool vk__cluster_take_redirect(vk_cluster *cl, const redisReply *r, const vk_endpoint *from,
                               vk_cluster_redirect *out)
{
    if (!vk__cluster_parse_redirect(r, from, out))
        return false;
    vk__cluster_count(cl->params.events, "redis_cluster_redirects_total",
                      out->ask ? "ask" : "moved");
    note_redirect(cl, out);
    return true;
}

/* The index of the node at ep in the current map, adding it when absent
 * (an ASK may name a node that serves no slot yet). *m gets a reference. */
static int node_at(vk_cluster *cl, const vk_endpoint *ep, vk_slot_map **m)
{
    pthread_mutex_lock(&cl->lock);
    vk_slot_map *cur = cl->map;
    int found = -1;
    for (size_t i = 0; cur != NULL && i < cur->node_count; i++) {
        if (cur->nodes[i].endpoint.port == ep->port &&
            strcmp(cur->nodes[i].endpoint.host, ep->host) == 0)
            found = (int)i;
    }
    vk_slot_map *old = NULL;
    if (cur != NULL && found < 0) {
        vk_slot_map *grown = vk__slot_map_copy(cur);
        if (grown != NULL && (found = vk__slot_map_node(grown, ep)) >= 0) {
            old = cur;
            cl->map = cur = grown;
            cl->map_version++;
        } else {
            vk__slot_map_unref(grown);
        }
    }
    *m = vk__slot_map_ref(cur);
    pthread_mutex_unlock(&cl->lock);
    vk__slot_map_unref(old);
    return found;
}

/* ---- routing ------------------------------------------------------------------------- */

int vk__cluster_node_for_slot(const vk_slot_map *m, int slot)
{
    if (slot >= 0)
        return m->owner[slot] - 1;
    /* Keyless: the owner of a random slot, which spreads the load the way
     * the slots are spread. */
    return m->owner[vk__jitter(VK_CLUSTER_SLOTS)] - 1;
}

/* One step of vk__cluster_route(): picks the node (the redirect's target,
 * else the slot's master) and runs the command there. *node_ep gets the
 * node. */
static vk_status attempt(vk_cluster *cl, const vk_command *cmd, const vk_cluster_redirect *rd,
                         bool use_redirect, redisReply **reply, vk_context *ctx, bool *sent,
                         uint64_t *version, vk_endpoint *node_ep)
{
    int slot = cmd->slot;
    *sent = false;
    vk_slot_map *m;
    int node;
    if (use_redirect) {
        node = node_at(cl, &rd->target, &m);
        *version = 0;
    } else {
        m = vk__cluster_map(cl, version);
        node = m != NULL ? vk__cluster_node_for_slot(m, slot) : -1;
    }
    if (m == NULL)
        return vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
    if (node < 0) {
        vk__slot_map_unref(m);
        return vk__fail_msg(VK_ERR_IO, "redis cluster: hash slot %d is not served", slot);
    }
    *node_ep = m->nodes[node].endpoint;
    vk_pool *pool;
    vk_status st = vk__cluster_node_pool(cl, m, (size_t)node, &pool, ctx);
    vk__slot_map_unref(m);
    if (st != VK_OK)
        return st;
    st = run_on(pool, use_redirect && rd->ask, reply, cmd, ctx, sent);
    vk__pool_unref(pool);
    return st;
}

/* A failed attempt's next step; a client closed meanwhile has nothing to
 * retry on until a reconnect. */
static vk_cluster_step step_after_failure(vk_cluster *cl, vk_cluster_tries *tries, vk_status st,
                                          bool sent, const vk_command *cmd,
                                          vk_cluster_next *next)
{
    if (!vk__cluster_connected(cl))
        return VK_CLUSTER_ANSWER;
    return vk__cluster_after_failure(cl->params.cfg, tries, vk__retry_may_resend(st, sent, cmd),
                                     next);
}

/* Ends an attempt whose step is known. The answer (a failure makes the
 * next reload due soon) settles the call: true, *result set. Otherwise the
 * reply goes, the pause is waited (a cancel or deadline settles the call)
 * and, when the step asks, the map is reloaded: a node failed or gave up
 * its slots (a failed reload leaves the old map; the next attempt tells);
 * version 0 (a redirect's node) reloads unconditionally. */
static bool attempt_settled(vk_cluster *cl, vk_cluster_step step, vk_status st,
                            redisReply **reply, const vk_cluster_next *next, uint64_t version,
                            vk_context *ctx, vk_status *result)
{
    if (step == VK_CLUSTER_ANSWER) {
        if (st != VK_OK) {
            int64_t last = atomic_load(&cl->refreshed_ms);
            atomic_store(&cl->refreshed_ms, vk__cluster_reload_due_after(st, last, vk__now_ms()));
        }
        *result = st;
        return true;
    }
    if (*reply != NULL) {
        vk__reply_free(*reply);
        *reply = NULL;
    }
    vk_status wait = vk__ctx_sleep_ms(ctx, next->pause_ms);
    if (wait != VK_OK) {
        *result = wait;
        return true;
    }
    if (next->reload)
        refresh(cl, version, version == 0 ? REFRESH_NOW : REFRESH_IF_UNCHANGED, ctx);
    return false;
}

vk_status vk__cluster_route(vk_cluster *cl, const vk_command *cmd,
                            const vk_cluster_redirect *first, redisReply **reply,
                            int64_t *refused_until, vk_context *ctx)
{
    vk_cluster_tries tries;
    vk__cluster_tries_init(&tries, refused_until);
    vk_cluster_next next;
    bool use_redirect = first != NULL;
    if (first != NULL)
        next.redirect = *first;
    for (;;) {
        bool sent;
        uint64_t version;
        vk_endpoint node_ep;
        vk_status st = attempt(cl, cmd, &next.redirect, use_redirect, reply, ctx, &sent,
                               &version, &node_ep);
        use_redirect = false;
        vk_cluster_step step;
        if (st == VK_OK) {
            step = vk__cluster_after_reply(cl->params.cfg, cl->params.events, &tries, *reply,
                                           &node_ep, vk__now_ms(), &next);
            if (step == VK_CLUSTER_FOLLOW) {
                note_redirect(cl, &next.redirect);
                vk__reply_free(*reply);
                *reply = NULL;
                use_redirect = true;
                continue;
            }
        } else {
            step = step_after_failure(cl, &tries, st, sent, cmd, &next);
        }
        vk_status result;
        if (attempt_settled(cl, step, st, reply, &next, version, ctx, &result))
            return result;
    }
}

/* ---- one command on one given master (SCAN's walk) ---------------------------------- */

vk_status vk__cluster_command_at(vk_cluster *cl, redisReply **reply, const vk_command *cmd,
                                 const vk_endpoint *ep, vk_context *ctx)
{
    *reply = NULL;
    vk_cluster_tries tries;
    vk__cluster_tries_init(&tries, NULL);
    for (;;) {
        uint64_t version;
        vk_slot_map *m = vk__cluster_map(cl, &version);
        if (m == NULL)
            return vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
        /* Only a node of the map in service: a node that left it is not
         * dialled again on the word of an older map. */
        int node = vk__slot_map_find(m, ep);
        if (node < 0) {
            vk__slot_map_unref(m);
            char address[300];
            vk__format_endpoint(address, sizeof address, ep);
            return vk__fail_msg(VK_ERR_IO, "redis cluster: node %s is not in the slot map",
                                address);
        }
        vk_pool *pool;
        bool sent = false;
        vk_status st = vk__cluster_node_pool(cl, m, (size_t)node, &pool, ctx);
        vk__slot_map_unref(m);
        if (st == VK_OK) {
            st = run_on(pool, false, reply, cmd, ctx, &sent);
            vk__pool_unref(pool);
        }
        vk_cluster_next next;
        vk_cluster_step step;
        if (st == VK_OK) {
            step = vk__cluster_after_reply(cl->params.cfg, cl->params.events, &tries, *reply,
                                           ep, vk__now_ms(), &next);
            /* A redirect is the answer: the command was meant for this node. */
            if (step == VK_CLUSTER_FOLLOW)
                step = VK_CLUSTER_ANSWER;
        } else {
            step = step_after_failure(cl, &tries, st, sent, cmd, &next);
        }
        vk_status result;
        if (attempt_settled(cl, step, st, reply, &next, version, ctx, &result))
            return result;
    }
}

vk_status vk__cluster_slot_conn(vk_cluster *cl, int slot, vk_pool **pool, vk_conn **conn,
                                vk_endpoint *node_ep, vk_context *ctx)
{
    /* A pool closed meanwhile belongs to a map replaced since: look again. */
    for (int tries = 0;; tries++) {
        vk_slot_map *m = vk__cluster_map(cl, NULL);
        if (m == NULL)
            return vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
        int node = vk__cluster_node_for_slot(m, slot);
        if (node < 0) {
            vk__slot_map_unref(m);
            return vk__fail_msg(VK_ERR_IO, "redis cluster: hash slot %d is not served", slot);
        }
        if (node_ep != NULL)
            *node_ep = m->nodes[node].endpoint;
        vk_status st = vk__cluster_node_pool(cl, m, (size_t)node, pool, ctx);
        vk__slot_map_unref(m);
        if (st != VK_OK)
            return st;
        bool closed;
        st = vk__pool_get(*pool, conn, ctx, &closed);
        if (st == VK_OK)
            return VK_OK;
        vk__pool_unref(*pool);
        if (!closed || tries == 2)
            return st;
    }
}

/* ---- key positions from the server --------------------------------------------------- */

/* COMMAND GETKEYS <the command>, on any node: fills cmd->slot. */
static vk_status server_slot(vk_cluster *cl, vk_command *cmd, vk_context *ctx)
{
    vk_command getkeys;
    void *mem;
    vk_status st = vk__cluster_getkeys_command(cmd, &getkeys, &mem);
    if (st != VK_OK)
        return st;
    redisReply *r = NULL;
    st = vk__cluster_route(cl, &getkeys, NULL, &r, NULL, ctx);
    free(mem);
    if (st != VK_OK)
        return st;
    /* An error reply (no key arguments, unknown command): any node will do,
     * and its own reply tells the caller what is wrong. */
    cmd->slot = vk__getkeys_slot(r);
    vk__reply_free(r);
    return VK_OK;
}

vk_status vk__cluster_command_slot(vk_cluster *cl, vk_command *cmd, vk_context *ctx)
{
    if (cmd->slot == VK_SLOT_PENDING)
        cmd->slot = vk__command_slot(cmd->argc, cmd->argv, cmd->argvlen);
    vk_status st = VK_OK;
    if (cmd->slot == VK_SLOT_UNKNOWN)
        st = server_slot(cl, cmd, ctx);
    if (st == VK_OK && cmd->slot == VK_SLOT_CROSS)
        st = vk__cluster_fail_crossslot();
    return st;
}

vk_status vk__cluster_command(vk_cluster *cl, redisReply **reply, vk_command *cmd,
                              vk_context *ctx)
{
    *reply = NULL;
    vk__cluster_refresh_when_due(cl, ctx);
    vk_status st = vk__cluster_command_slot(cl, cmd, ctx);
    if (st != VK_OK)
        return st;
    return vk__cluster_route(cl, cmd, NULL, reply, NULL, ctx);
}
