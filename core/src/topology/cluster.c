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

/* A slot map older than this is reloaded on the next command. */
#define VK_CLUSTER_REFRESH_EVERY_MS 10000
/* MOVED / ASK hops one command may follow: a resharding settles within a
 * few; more means the nodes disagree and the caller should see the reply. */
#define VK_CLUSTER_MAX_REDIRECTS 16
/* How long a command refused with TRYAGAIN, CLUSTERDOWN, LOADING or
 * MASTERDOWN is retried (unless its context ends first), and the longest
 * pause between two tries. A refused command did not run, so retrying is
 * always safe, and what bounds it is time rather than a count: a multi-key
 * command on a migrating slot is refused until every key it names is on
 * one side (one that creates keys, until the migration ends), which lasts
 * as long as MIGRATE takes to move the slot's keys: tens of milliseconds
 * to seconds. go-redis retries these replies within MaxRedirects (3 tries,
 * 8-512 ms back-off) and redis-py within its 16-hop TTL (50 ms pauses in
 * its second half; 250 ms after CLUSTERDOWN, 3 times): both give up within
 * about a second, which a migration under load can outlast. The pauses
 * grow from min_retry_backoff to the cap, so a waiting caller tries about
 * 10 times a second and goes on within ~100 ms of the slot settling. */
#define VK_CLUSTER_REFUSED_WAIT_MS 5000
#define VK_CLUSTER_REFUSED_PAUSE_MS 100

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
    if (m == NULL)
        return VK_OK;
    /* A node that serves no slot (one only seen in a redirect) is not a
     * master of this map. */
    int *slots = calloc(m->node_count, sizeof *slots);
    vk_cluster_master *masters = calloc(m->node_count, sizeof *masters);
    if (slots == NULL || masters == NULL) {
        free(slots);
        free(masters);
        vk__slot_map_unref(m);
        return vk__fail_nomem();
    }
    for (int slot = 0; slot < VK_CLUSTER_SLOTS; slot++)
        if (m->owner[slot] != 0)
            slots[m->owner[slot] - 1]++;
    for (size_t i = 0; i < m->node_count; i++) {
        if (slots[i] == 0)
            continue;
        vk__format_endpoint(masters[out->masters].address,
                            sizeof masters[out->masters].address, &m->nodes[i].endpoint);
        masters[out->masters++].slots = slots[i];
    }
    free(slots);
    vk__slot_map_unref(m);
    if (out->masters == 0)
        free(masters);
    else
        out->master = masters;
    return VK_OK;
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

static void count_metric(vk_cluster *cl, const char *name, const char *type)
{
    if (!vk__events_has_metrics(cl->params.events))
        return;
    const vk_field label[] = {{"type", type}};
    vk__metric(cl->params.events, name, VK_METRIC_COUNTER, 1, label, type != NULL ? 1 : 0);
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

static bool is_error_reply(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR;
}

/* Asks the node behind pool for the slot map: CLUSTER SHARDS, or CLUSTER
 * SLOTS where the server does not know SHARDS. */
static vk_status load_from(vk_cluster *cl, vk_pool *pool, const vk_endpoint *ep,
                           vk_slot_map *previous, vk_slot_map **out, vk_context *ctx)
{
    static const char *const shards_argv[] = {"CLUSTER", "SHARDS"};
    static const char *const slots_argv[] = {"CLUSTER", "SLOTS"};
    static const size_t lens[] = {7, 6};
    static const size_t slots_lens[] = {7, 5};
    redisReply *r;
    bool sent;
    bool shards = true;
    vk_command cmd;
    vk__command_internal(&cmd, 2, shards_argv, lens);
    vk_status st = run_on(pool, false, &r, &cmd, ctx, &sent);
    if (st == VK_OK && is_error_reply(r)) {
        vk__reply_free(r);
        shards = false;
        vk__command_internal(&cmd, 2, slots_argv, slots_lens);
        st = run_on(pool, false, &r, &cmd, ctx, &sent);
    }
    if (st != VK_OK)
        return st;
    char address[300];
    vk__format_endpoint(address, sizeof address, ep);
    if (is_error_reply(r)) {
        st = vk__fail_msg(VK_ERR_SERVER, "redis cluster: %s refused CLUSTER SLOTS: %.*s",
                          address, (int)r->len, r->str);
    } else if ((st = vk__slot_map_parse(out, r, shards, ep, cl->params.tls != NULL,
                                        previous)) == VK_OK &&
               vk__slot_map_covered(*out) == 0) {
        vk__slot_map_unref(*out);
        *out = NULL;
        st = vk__fail_msg(VK_ERR_SERVER, "redis cluster: %s reports no served slots",
                          address);
    }
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
    if (st == VK_ERR_IO) {
        char *cause = vk__error_dup();
        st = vk__fail_msg(VK_ERR_IO, "redis cluster: all nodes are unreachable: %s",
                          cause != NULL ? cause : vk_strerror(st));
        free(cause);
    }
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
        count_metric(cl, "redis_cluster_slot_refreshes_total", NULL);
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

static bool has_prefix(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->type == REDIS_REPLY_ERROR && r->len >= n && memcmp(r->str, prefix, n) == 0;
}

/* "MOVED <slot> <host>:<port>" or "ASK ..."; an empty host is the host of
 * the node that answered. */
static bool parse_redirect(const redisReply *r, const vk_endpoint *from,
                           vk_cluster_redirect *out)
{
    size_t skip;
    if (has_prefix(r, "MOVED "))
        out->ask = false, skip = 6;
    else if (has_prefix(r, "ASK "))
        out->ask = true, skip = 4;
    else
        return false;
    char text[320];
    size_t n = r->len - skip < sizeof text - 1 ? r->len - skip : sizeof text - 1;
    memcpy(text, r->str + skip, n);
    text[n] = '\0';
    char *space = strchr(text, ' ');
    char *colon = strrchr(text, ':');
    if (space == NULL || colon == NULL || colon < space)
        return false;
    *space = *colon = '\0';
    char *end;
    long slot = strtol(text, &end, 10);
    long port = strtol(colon + 1, NULL, 10);
    if (*end != '\0' || slot < 0 || slot >= VK_CLUSTER_SLOTS || port <= 0 || port > 65535)
        return false;
    const char *host = space + 1;
    if (*host == '\0')
        host = from->host;
    memset(&out->target, 0, sizeof out->target);
    if (strlen(host) >= sizeof out->target.host)
        return false;
    strcpy(out->target.host, host);
    out->target.port = (int)port;
    out->slot = (int)slot;
    return true;
}

/* After MOVED: the slot is served by target from now on. The full map is
 * reloaded soon too: a MOVED usually means more than one slot moved. */
static void apply_moved(vk_cluster *cl, const vk_cluster_redirect *rd)
{
    pthread_mutex_lock(&cl->lock);
    vk_slot_map *m = cl->map;
    vk_slot_map *patched = NULL;
    if (m != NULL) {
        int owner = m->owner[rd->slot] - 1;
        bool known = owner >= 0 && m->nodes[owner].endpoint.port == rd->target.port &&
                     strcmp(m->nodes[owner].endpoint.host, rd->target.host) == 0;
        if (!known && (patched = vk__slot_map_copy(m)) != NULL) {
            int node = vk__slot_map_node(patched, &rd->target);
            if (node >= 0) {
                patched->owner[rd->slot] = (uint16_t)(node + 1);
                cl->map = patched;
                cl->map_version++;
            } else {
                vk__slot_map_unref(patched);
                patched = NULL;
            }
        }
    }
    pthread_mutex_unlock(&cl->lock);
    if (patched != NULL)
        vk__slot_map_unref(m);
    atomic_store(&cl->refreshed_ms, 0);
}

bool vk__cluster_take_redirect(vk_cluster *cl, const redisReply *r, const vk_endpoint *from,
                               vk_cluster_redirect *out)
{
    if (!parse_redirect(r, from, out))
        return false;
    if (out->ask) {
        atomic_fetch_add(&cl->ask_redirects, 1);
        count_metric(cl, "redis_cluster_redirects_total", "ask");
    } else {
        atomic_fetch_add(&cl->moved_redirects, 1);
        count_metric(cl, "redis_cluster_redirects_total", "moved");
        apply_moved(cl, out);
    }
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

/* The pause before retrying a refused command (the refusals-th so far),
 * never past `until`. */
static int64_t refused_pause_ms(const vk_config *cfg, int refusals, int64_t until)
{
    int64_t pause = vk__retry_backoff_ms(cfg, refusals);
    if (pause > VK_CLUSTER_REFUSED_PAUSE_MS)
        pause = VK_CLUSTER_REFUSED_PAUSE_MS;
    int64_t left = until - vk__now_ms();
    return pause < left ? pause : left > 0 ? left : 0;
}

/* Counts a refusal by its reply's first word: "tryagain", "clusterdown",
 * "loading" or "masterdown". */
static void count_refusal(vk_cluster *cl, const redisReply *r)
{
    char type[16];
    size_t n = 0;
    while (n < r->len && n < sizeof type - 1 && r->str[n] != ' ') {
        char ch = r->str[n];
        type[n++] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    type[n] = '\0';
    count_metric(cl, "redis_cluster_refusals_total", type);
}

vk_status vk__cluster_route(vk_cluster *cl, const vk_command *cmd,
                            const vk_cluster_redirect *first, redisReply **reply,
                            int64_t *refused_until, vk_context *ctx)
{
    const vk_config *cfg = cl->params.cfg;
    int retries = 0, redirects = 0, refusals = 0;
    int64_t own_until = 0;
    if (refused_until == NULL)
        refused_until = &own_until;
    vk_cluster_redirect rd;
    bool use_redirect = first != NULL;
    if (first != NULL)
        rd = *first;
    for (;;) {
        bool sent;
        uint64_t version;
        vk_endpoint node_ep;
        vk_status st =
            attempt(cl, cmd, &rd, use_redirect, reply, ctx, &sent, &version, &node_ep);
        use_redirect = false;
        bool retry, reload;
        int64_t pause;
        if (st == VK_OK) {
            vk_cluster_redirect next;
            if (redirects < VK_CLUSTER_MAX_REDIRECTS &&
                vk__cluster_take_redirect(cl, *reply, &node_ep, &next)) {
                redirects++;
                vk__reply_free(*reply);
                *reply = NULL;
                rd = next;
                use_redirect = true;
                continue;   /* the command did not run: follow at once */
            }
            if (!vk__reply_is_refusal(*reply))
                return VK_OK;
            count_refusal(cl, *reply);
            /* max_retries -1 turns these retries off too; otherwise the
             * time bound above applies, whatever max_retries says. */
            if (*refused_until == 0)
                *refused_until = vk__now_ms() + VK_CLUSTER_REFUSED_WAIT_MS;
            retry = cfg->max_retries >= 0 && vk__now_ms() < *refused_until;
            pause = refused_pause_ms(cfg, refusals++, *refused_until);
            /* During a migration a command may go ASK, TRYAGAIN, ASK, ...
             * for as long as the time bound allows: the hop limit is for
             * redirects without a refusal in between. */
            redirects = 0;
            reload = has_prefix(*reply, "CLUSTERDOWN");
        } else {
            /* Closed meanwhile: nothing to retry on until a reconnect. */
            retry = vk__retry_after_failure(cfg, retries, st, sent, cmd) &&
                    vk__cluster_connected(cl);
            pause = vk__retry_backoff_ms(cfg, retries++);
            reload = true;
        }
        if (!retry)
            return st;
        if (*reply != NULL) {
            vk__reply_free(*reply);
            *reply = NULL;
        }
        vk_status wait = vk__ctx_sleep_ms(ctx, pause);
        if (wait != VK_OK)
            return wait;
        /* A node failed or gave up its slots: the map may be out of date.
         * A failed reload leaves the old map; the next attempt tells. */
        if (reload)
            refresh(cl, version, version == 0 ? REFRESH_NOW : REFRESH_IF_UNCHANGED, ctx);
    }
}

/* ---- key positions from the server --------------------------------------------------- */

/* COMMAND GETKEYS <the command>, on any node: fills cmd->slot. */
static vk_status server_slot(vk_cluster *cl, vk_command *cmd, vk_context *ctx)
{
    int argc = cmd->argc;
    const char **args = malloc(((size_t)argc + 2) * sizeof *args);
    size_t *lens = malloc(((size_t)argc + 2) * sizeof *lens);
    if (args == NULL || lens == NULL) {
        free((void *)args);
        free(lens);
        return vk__fail_nomem();
    }
    args[0] = "COMMAND", lens[0] = 7;
    args[1] = "GETKEYS", lens[1] = 7;
    memcpy(args + 2, cmd->argv, (size_t)argc * sizeof *args);
    memcpy(lens + 2, cmd->argvlen, (size_t)argc * sizeof *lens);
    vk_command getkeys;
    vk__command_internal(&getkeys, argc + 2, args, lens);
    redisReply *r = NULL;
    vk_status st = vk__cluster_route(cl, &getkeys, NULL, &r, NULL, ctx);
    free((void *)args);
    free(lens);
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
        st = vk__fail(VK_ERR_INVALID_ARGUMENT,
                      "CROSSSLOT keys in request don't hash to the same slot");
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
