/*
 * The public client: lifecycle, create-ping-swap connect, reconnect on
 * demand under the rate limit of SEMANTICS §2, close, credentials applied
 * by the IAM refresher, and what other layers need of a client (client.h).
 */
#include "api/client.h"
#include "topology/sentinel.h"
#include "topology/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- references ---------------------------------------------------------- */

static void destroy_client(vk_client *c)
{
    vk__sentinel_watch_free(c->watch);
    vk__sentinel_free(c->sentinel);
    vk__cluster_free(c->cluster);
    vk__refresher_free(c->refresher);
    vk__tls_free(c->tls);
    vk__credentials_destroy(&c->credentials);
    free(c->last_error);
    vk_config_free(c->cfg);
    vk__events_free(c->events);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->connect_lock);
    free(c);
}

vk_client *vk__client_ref(vk_client *c)
{
    if (c != NULL)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

void vk__client_unref(vk_client *c)
{
    if (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1)
        destroy_client(c);
}

bool vk__client_alive(const vk_client *c)
{
    return c != NULL && atomic_load(&((vk_client *)c)->alive);
}

vk_events *vk__client_events(vk_client *c)
{
    return c != NULL ? c->events : NULL;
}

const vk_config *vk__client_config(const vk_client *c)
{
    return c != NULL ? c->cfg : NULL;
}

static vk_status nil_client(const char *function)
{
    vk__misuse(function, "redis client is nil");
    return vk__fail(VK_ERR_NIL_CLIENT, NULL);
}

/* ---- status and counters ------------------------------------------------------ */

void vk__client_set_last_error(vk_client *c, const char *message)
{
    char *copy = message != NULL ? strdup(message) : NULL;
    pthread_mutex_lock(&c->lock);
    free(c->last_error);
    c->last_error = copy;
    pthread_mutex_unlock(&c->lock);
}

void vk__client_mark_disconnected(vk_client *c)
{
    atomic_store(&c->connected, false);
}

static void count_connection_failure(vk_client *c, const char *operation)
{
    if (!vk__events_has_metrics(c->events))
        return;
    const vk_field label[] = {{"operation", operation}};
    vk__metric(c->events, "redis_connection_failures_total", VK_METRIC_COUNTER, 1, label, 1);
}

static void count_reconnection(vk_client *c, const char *result)
{
    if (!vk__events_has_metrics(c->events))
        return;
    const vk_field label[] = {{"result", result}};
    vk__metric(c->events, "redis_reconnections_total", VK_METRIC_COUNTER, 1, label, 1);
}

/* ---- spans -------------------------------------------------------------------- */

static const char *mode_name(unsigned topology)
{
    if (topology & VK_TOPO_SENTINEL)
        return "sentinel";
    if (topology & VK_TOPO_CLUSTER)
        return "cluster";
    return "standalone";
}

/* What the client connects to, for logs and spans: the node, the
 * Sentinel master's name, or the first cluster seed. */
static void describe_target(const vk_client *c, char *out, size_t cap)
{
    if (c->sentinel != NULL)
        snprintf(out, cap, "sentinel master %s", c->cfg->sentinel_master);
    else if (c->cluster != NULL)
        snprintf(out, cap, "%s", c->cfg->cluster_addresses.items[0]);
    else
        vk__format_endpoint(out, cap, &c->endpoint);
}

/* A span about the client's connection (connect, reconnect, close). */
typedef struct client_span {
    vk_span span;
    char address[400];
} client_span;

static void client_span_start(client_span *cs, vk_client *c, const char *name, vk_context *ctx)
{
    if (VK_LIKELY(vk__events_tracer(c->events) == NULL)) {
        cs->span.tracer = NULL;
        return;
    }
    describe_target(c, cs->address, sizeof cs->address);
    const vk_field attrs[] = {{"db.system", "redis"},
                              {"redis.mode", mode_name(c->cfg->topology_mask)},
                              {"server.address", cs->address}};
    vk__span_start(&cs->span, c->events, name, ctx, attrs, 3);
}

static void client_span_end(client_span *cs, vk_status st)
{
    vk__span_end(&cs->span, st, NULL, NULL, 0);
}

/* ---- connect: create, ping, swap ------------------------------------------ */

/* Sentinel mode: the node must say it is a master (handshake.h). */
static vk_status verify_master(vk_client *c, vk_pool *pool, vk_context *ctx)
{
    vk_conn *conn;
    bool closed;
    vk_status st = vk__pool_get(pool, &conn, ctx, &closed);
    if (st != VK_OK)
        return st;
    const char *argv[] = {"ROLE"};
    const size_t len[] = {4};
    redisReply *r = NULL;
    bool sent;
    st = vk__conn_command(conn, &r, 1, argv, len, ctx, &sent);
    vk__pool_put(pool, conn);
    if (st != VK_OK)
        return st;
    char address[300];
    vk__format_endpoint(address, sizeof address, &c->endpoint);
    st = vk__handshake_role_check(address, r);
    vk__reply_free(r);
    return st;
}

/* Builds a new pool (its first connection opened and pinged by the
 * handshake) and swaps it in; the old pool is closed once its in-flight
 * users have returned their connections. On failure the old pool stays.
 * The caller holds connect_lock (or is the only user, in vk_client_new). */
static vk_status create_ping_swap(vk_client *c, vk_context *ctx)
{
    if (c->cluster != NULL) {
        /* Cluster mode: the slot map and the masters' pools take the place
         * of the single pool; a failed load keeps the old map in service. */
        vk_status st = vk__cluster_connect(c->cluster, ctx);
        if (st == VK_OK)
            atomic_store(&c->connected, true);
        return st;
    }
    /* Validation rules this out (a parsed port is never 0); a connect that
     * still finds no address says so rather than dial nothing. */
    if (!c->endpoint.is_unix && c->endpoint.port == 0)
        return vk__fail(VK_ERR_INVALID_CONFIG,
                        "no topology configured: at least one address is required");
    vk_pool_params params = {
        .endpoint = c->endpoint,
        .cfg = c->cfg,
        .tls = c->tls,
        .events = c->events,
        .credentials = &c->credentials,
        /* Sentinel: a master that hung up may have been replaced (and even
         * come back empty as a master of its own): ask the sentinels again
         * rather than dial the same address. */
        .report_dead_idle = c->sentinel != NULL,
    };
    vk_pool *fresh;
    vk_status st = vk__pool_new(&fresh, &params, ctx);
    if (st == VK_OK && c->sentinel != NULL && (st = verify_master(c, fresh, ctx)) != VK_OK) {
        char *cause = vk__error_dup();
        vk__pool_close(fresh);
        vk__pool_unref(fresh);
        vk__fail_restore(st, cause);
        free(cause);
    }
    if (st != VK_OK)
        return st;
    pthread_mutex_lock(&c->lock);
    vk_pool *old = c->pool;
    c->pool = fresh;
    c->serving = c->endpoint;
    c->serving_known = true;
    atomic_store(&c->connected, true);
    pthread_mutex_unlock(&c->lock);
    vk__pool_close(old);
    vk__pool_unref(old);
    return VK_OK;
}

/* A change of master seen under connect_lock, announced after it. */
typedef struct master_switch {
    bool happened;
    char from[300], to[300];
} master_switch;

static void note_switch(master_switch *sw, const vk_endpoint *from, const vk_endpoint *to)
{
    sw->happened = true;
    vk__format_endpoint(sw->from, sizeof sw->from, from);
    vk__format_endpoint(sw->to, sizeof sw->to, to);
}

/* Sentinel mode: asks the sentinels where the master is now. The caller
 * holds connect_lock. A reconnect may learn of a failover before the
 * sentinel watcher does: that is a switch too, noted in *sw. */
static vk_status locate_master(vk_client *c, vk_context *ctx, master_switch *sw)
{
    sw->happened = false;
    if (c->sentinel == NULL)
        return VK_OK;
    vk_endpoint master;
    vk_status st = vk__sentinel_discover(c->sentinel, &master, ctx);
    if (st == VK_OK) {
        bool had_master = c->endpoint.is_unix || c->endpoint.port != 0;
        if (had_master && !vk__endpoint_equal(&c->endpoint, &master))
            note_switch(sw, &c->endpoint, &master);
        c->endpoint = master;
    }
    return st;
}

/* Takes the current pool out of service at once; commands wait on
 * connect_lock (held by the caller) for the next one. */
static void retire_pool(vk_client *c)
{
    pthread_mutex_lock(&c->lock);
    vk_pool *old = c->pool;
    c->pool = NULL;
    atomic_store(&c->connected, false);
    pthread_mutex_unlock(&c->lock);
    vk__pool_close(old);
    vk__pool_unref(old);
}

static void count_failover(vk_client *c)
{
    if (!vk__events_has_metrics(c->events))
        return;
    const vk_field label[] = {{"master", c->cfg->sentinel_master}};
    vk__metric(c->events, "redis_sentinel_failovers_total", VK_METRIC_COUNTER, 1, label, 1);
}

/* Counts and logs a switch; called without connect_lock, as the sinks may
 * call back into the client. */
static void announce_switch(vk_client *c, const master_switch *sw)
{
    if (!sw->happened)
        return;
    atomic_fetch_add(&c->master_switches, 1);
    count_failover(c);
    const vk_field fields[] = {
        {"master", c->cfg->sentinel_master}, {"from", sw->from}, {"to", sw->to}};
    vk__log(c->events, VK_LOG_INFO, "redis sentinel: switched to the new master", fields, 3);
}

void vk__client_announce_switch(vk_client *c, const vk_endpoint *from, const vk_endpoint *to)
{
    master_switch sw;
    note_switch(&sw, from, to);
    announce_switch(c, &sw);
}

vk_status vk__client_follow_master(void *client, const vk_endpoint *master, vk_context *ctx)
{
    vk_client *c = client;
    pthread_mutex_lock(&c->connect_lock);
    bool changed = !vk__endpoint_equal(&c->endpoint, master);
    if (!changed && atomic_load(&c->connected)) {
        pthread_mutex_unlock(&c->connect_lock);
        return VK_OK;
    }
    master_switch sw = {.happened = false};
    if (changed) {
        note_switch(&sw, &c->endpoint, master);
        retire_pool(c);
    }
    c->endpoint = *master;
    vk_status st = create_ping_swap(c, ctx);
    if (st == VK_OK)
        vk__reconnect_gate_passed(&c->reconnects);
    pthread_mutex_unlock(&c->connect_lock);

    announce_switch(c, &sw);
    if (st == VK_OK) {
        vk__client_set_last_error(c, NULL);
    } else {
        char *cause = vk__error_dup();
        vk__client_set_last_error(c, cause);
        vk__fail_restore(st, cause);
        free(cause);
    }
    return st;
}

VK_API vk_status vk_client_connect(vk_client *client, vk_context *ctx)
{
    if (client == NULL)
        return nil_client("vk_client_connect");
    vk__client_check_fork(client);
    client_span span;
    client_span_start(&span, client, "redis.connect", ctx);
    pthread_mutex_lock(&client->connect_lock);
    master_switch sw;
    vk_status st = locate_master(client, ctx, &sw);
    if (st == VK_OK)
        st = create_ping_swap(client, ctx);
    if (st == VK_OK)
        vk__reconnect_gate_passed(&client->reconnects);
    pthread_mutex_unlock(&client->connect_lock);
    announce_switch(client, &sw);
    if (st != VK_OK) {
        count_connection_failure(client, "connect");
        client_span_end(&span, st);
        return st;
    }
    vk__client_set_last_error(client, NULL);
    st = vk__client_start_refresher(client);
    client_span_end(&span, st);
    return st;
}

/* Fails at once inside the back-off window after failed reconnects. */
static vk_status check_rate_limit(vk_client *c, int64_t now_ms)
{
    return vk__reconnect_gate_check(&c->reconnects, now_ms);
}

static void record_reconnect_failure(vk_client *c)
{
    vk__reconnect_gate_failed(&c->reconnects, vk__now_ms());
}

static vk_status reconnect_on_demand(vk_client *c, vk_context *ctx)
{
    pthread_mutex_lock(&c->connect_lock);
    if (atomic_load(&c->connected)) {
        /* Another caller reconnected while this one waited for the lock. */
        pthread_mutex_unlock(&c->connect_lock);
        return VK_OK;
    }
    vk_status st = check_rate_limit(c, vk__now_ms());
    if (st != VK_OK) {
        pthread_mutex_unlock(&c->connect_lock);
        return st;
    }
    client_span span;
    client_span_start(&span, c, "redis.reconnect", ctx);
    /* In sentinel mode a lost connection may mean a failover: ask again. */
    master_switch sw;
    st = locate_master(c, ctx, &sw);
    /* A closed client's refresh loop was stopped: its token may have
     * expired meanwhile. */
    if (st == VK_OK && c->refresher != NULL)
        st = vk__refresher_refresh_if_stale(c->refresher, ctx);
    if (st == VK_OK)
        st = create_ping_swap(c, ctx);
    if (st == VK_OK) {
        vk__reconnect_gate_passed(&c->reconnects);
        pthread_mutex_unlock(&c->connect_lock);
        /* The status reports the latest failure: this one is over. */
        vk__client_set_last_error(c, NULL);
        announce_switch(c, &sw);
        count_reconnection(c, "success");
        vk__log(c->events, VK_LOG_INFO, "reconnected to Redis/Valkey", NULL, 0);
        st = vk__client_start_refresher(c);
        client_span_end(&span, st);
        return st;
    }
    char *cause = vk__error_dup();
    record_reconnect_failure(c);
    pthread_mutex_unlock(&c->connect_lock);
    announce_switch(c, &sw);

    vk__client_set_last_error(c, cause);
    count_reconnection(c, "failure");
    count_connection_failure(c, "reconnect");
    const vk_field fields[] = {{"error", cause != NULL ? cause : ""}};
    vk__log(c->events, VK_LOG_WARN, "redis reconnect failed", fields, 1);
    vk__fail_restore(st, cause);
    free(cause);
    client_span_end(&span, st);
    return st;
}

vk_status vk__client_ensure_connected(vk_client *c, vk_context *ctx)
{
    if (VK_LIKELY(atomic_load_explicit(&c->connected, memory_order_acquire)))
        return VK_OK;
    return reconnect_on_demand(c, ctx);
}

vk_status vk__client_acquire_pool(vk_client *c, vk_pool **out, vk_context *ctx)
{
    for (;;) {
        if (VK_LIKELY(atomic_load_explicit(&c->connected, memory_order_acquire))) {
            pthread_mutex_lock(&c->lock);
            vk_pool *p = vk__pool_ref(c->pool);
            pthread_mutex_unlock(&c->lock);
            if (VK_LIKELY(p != NULL)) {
                *out = p;
                return VK_OK;
            }
        }
        vk_status st = reconnect_on_demand(c, ctx);
        if (st != VK_OK)
            return st;
    }
}

vk_status vk__client_take_conn(vk_client *c, vk_pool **pool, vk_conn **conn, vk_context *ctx)
{
    for (;;) {
        vk_status st = vk__client_acquire_pool(c, pool, ctx);
        if (st != VK_OK)
            return st;
        bool closed;
        st = vk__pool_get(*pool, conn, ctx, &closed);
        if (st == VK_OK)
            return VK_OK;
        vk__pool_unref(*pool);
        if (!closed) {
            if (st == VK_ERR_IO || st == VK_ERR_AUTH || st == VK_ERR_TLS)
                vk__client_mark_disconnected(c);
            return st;
        }
    }
}

/* ---- credentials from the refresher --------------------------------------- */

/* The longest one refresh spends re-authenticating idle connections: an
 * unresponsive node must not hold up the loop (or a close) for the whole
 * read timeout. What is left over catches up when next handed out. */
#define VK_REAUTH_BUDGET_MS 1000

/* New connections authenticate with the new pair at once; idle ones of an
 * older generation are re-authenticated here, on the refresh loop's thread
 * (or, past the budget, by the pool before being handed out), and ones in
 * use when they are next taken. No command ever runs on a connection with
 * a stale token. A failed re-authentication is not the refresh's failure:
 * that connection is replaced when next needed. */
vk_status vk__client_apply_credentials(void *client, const char *username,
                                       const char *password)
{
    vk_client *c = client;
    vk_status st = vk__credentials_set(&c->credentials, username, password);
    if (st != VK_OK)
        return st;
    vk_context *ctx = NULL;
    if (vk_context_new(&ctx) == VK_OK)
        vk_context_set_timeout_ms(ctx, VK_REAUTH_BUDGET_MS);
    if (c->cluster != NULL) {
        vk__cluster_reauth_idle(c->cluster, ctx);
    } else {
        pthread_mutex_lock(&c->lock);
        vk_pool *p = c->pool != NULL ? vk__pool_ref(c->pool) : NULL;
        pthread_mutex_unlock(&c->lock);
        if (p != NULL) {
            vk__pool_reauth_idle(p, ctx);
            vk__pool_unref(p);
        }
    }
    vk_context_free(ctx);
    return VK_OK;
}

vk_status vk__client_start_refresher(vk_client *c)
{
    vk_status st = VK_OK;
    if (c->watch != NULL && c->cfg->refresh_mode == VK_REFRESH_THREAD)
        st = vk__sentinel_watch_start(c->watch);   /* a no-op when running */
    if (st != VK_OK || c->refresher == NULL)
        return st;
    pthread_mutex_lock(&c->connect_lock);
    if (!c->refresher_running) {
        st = vk__refresher_start(c->refresher);
        c->refresher_running = st == VK_OK;
    }
    pthread_mutex_unlock(&c->connect_lock);
    return st;
}

/* ---- new / close / free ------------------------------------------------------ */

static vk_status alloc_client(vk_client **out, const vk_config *user_cfg)
{
    vk_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return vk__fail_nomem();
    vk_status st = vk_config_clone(&c->cfg, user_cfg);
    if (st != VK_OK) {
        free(c);
        return st;
    }
    c->events = vk__events_new(c->cfg->logger, c->cfg->metrics, c->cfg->tracer,
                               c->cfg->event_delivery);
    if (c->events == NULL) {
        vk_config_free(c->cfg);
        free(c);
        return vk__fail_nomem();
    }
    atomic_init(&c->refs, 1);
    atomic_init(&c->alive, true);
    atomic_init(&c->connected, false);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->connect_lock, NULL);
    vk__credentials_init(&c->credentials);
    vk__fork_watch();
    c->fork_generation = vk__fork_generation();
    *out = c;
    return VK_OK;
}

/* Everything between allocation and the first connection. */
static vk_status prepare_client(vk_client *c)
{
    vk_status st = vk__config_prepare(c->cfg, c->events);
    if (st != VK_OK)
        return st;
    if (c->cfg->tls_enabled && (st = vk__tls_new(&c->tls, c->cfg)) != VK_OK)
        return st;
    if (c->cfg->topology_mask & VK_TOPO_SENTINEL) {
        /* The endpoint comes from the sentinels at each connect. */
        if ((st = vk__sentinel_new(&c->sentinel, c->cfg, c->tls, c->events)) != VK_OK ||
            (st = vk__sentinel_watch_new(&c->watch, c->sentinel, vk__client_follow_master,
                                         c)) != VK_OK)
            return st;
    } else if (c->cfg->topology_mask & VK_TOPO_CLUSTER) {
        /* Every node's pool is built like the standalone one: same config,
         * TLS and (shared) credentials, only the endpoint differs. */
        const vk_pool_params params = {
            .cfg = c->cfg,
            .tls = c->tls,
            .events = c->events,
            .credentials = &c->credentials,
        };
        if ((st = vk__cluster_new(&c->cluster, &params)) != VK_OK)
            return st;
    } else if ((st = vk__parse_address(&c->endpoint, c->cfg->standalone_address)) != VK_OK) {
        return st;
    }
    if (c->cfg->auth_static &&
        (st = vk__credentials_set(&c->credentials, c->cfg->username, c->cfg->password)) != VK_OK)
        return st;
    if (c->cfg->auth_gcp_iam)
        st = vk__refresher_new(&c->refresher, c->cfg, c->events,
                               vk__client_apply_credentials, c);
    return st;
}

static vk_status first_connect_traced(vk_client *c);

/* vk_client_new's connection, in its "redis.connect" span. */
static vk_status first_connect(vk_client *c)
{
    client_span span;
    client_span_start(&span, c, "redis.connect", NULL);
    vk_status st = first_connect_traced(c);
    client_span_end(&span, st);
    return st;
}

static vk_status first_connect_traced(vk_client *c)
{
    char address[400];
    const char *mode = mode_name(c->cfg->topology_mask);
    describe_target(c, address, sizeof address);
    vk_field fields[] = {{"mode", mode}, {"address", address}};
    vk__log(c->events, VK_LOG_INFO, "connecting to Redis/Valkey", fields, 2);

    vk_status st;
    if (c->refresher != NULL && (st = vk__refresher_fetch_now(c->refresher, NULL)) != VK_OK)
        return st;
    master_switch first; /* the first master: nothing to switch from */
    if ((st = locate_master(c, NULL, &first)) != VK_OK ||
        (st = create_ping_swap(c, NULL)) != VK_OK) {
        count_connection_failure(c, "connect");
        return st;
    }
    if (c->cluster == NULL)
        vk__format_endpoint(address, sizeof address, &c->endpoint);
    char message[80];
    snprintf(message, sizeof message, "connected to Redis/Valkey in %s mode", mode);
    vk__log(c->events, VK_LOG_INFO, message, fields, 2);
    if (c->tls == NULL)
        vk__log(c->events, VK_LOG_WARN,
                "redis connection established without TLS; consider configuring TLS for production use",
                fields, 2);
    return vk__client_start_refresher(c);
}

static void close_client(vk_client *client);

VK_API vk_status vk_client_new(vk_client **out, const vk_config *cfg)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (cfg == NULL)
        return vk__fail(VK_ERR_INVALID_CONFIG, "config is NULL");
    /* No check of the config here: validation comes first (SEMANTICS §1),
     * so a config without a topology gets validation's own reason. */
    vk_client *c = NULL;
    vk_status st = alloc_client(&c, cfg);
    if (st != VK_OK)
        return st;
    if ((st = prepare_client(c)) == VK_OK)
        st = first_connect(c);
    if (st != VK_OK) {
        /* Keep the failure's text across the teardown's own calls. */
        char *cause = vk__error_dup();
        close_client(c);   /* a client that never was: no "redis.close" span */
        vk__client_unref(c);
        vk__fail_restore(st, cause);
        free(cause);
        return st;
    }
    *out = c;
    return VK_OK;
}

/* A detached client's refresher failed to fetch a token: connections that
 * wait for the first one fail with it. */
static void token_fetch_failed(void *client, vk_status st, const char *text)
{
    vk_client *c = client;
    vk__credentials_fetch_failed(&c->credentials, st, text);
}

vk_status vk__client_new_detached(vk_client **out, const vk_config *cfg, unsigned topologies,
                                  const char *refusal)
{
    *out = NULL;
    vk_client *c = NULL;
    vk_status st = alloc_client(&c, cfg);
    if (st != VK_OK)
        return st;
    /* Preparing does no I/O (a sentinel or cluster topology is only set
     * up), so the topology can be checked after validation. */
    if ((st = prepare_client(c)) == VK_OK && (c->cfg->topology_mask & ~topologies) != 0)
        st = vk__fail(VK_ERR_INVALID_CONFIG, "%s", refusal);
    /* The driver follows the master itself, on its own connections: the
     * blocking watcher thread is not for it. */
    vk__sentinel_watch_free(c->watch);
    c->watch = NULL;
    /* IAM: the first token is fetched on the refresh thread, not on the
     * caller's (a loop must not wait for Google); connections wait for it
     * and operations fail with a failed fetch's reason. Nobody would tick
     * a driven refresh loop here. */
    if (st == VK_OK && c->refresher != NULL && c->cfg->refresh_mode == VK_REFRESH_DRIVEN)
        st = vk__fail(VK_ERR_INVALID_CONFIG,
                      "the event-loop client refreshes GCP IAM tokens on a thread of its own: "
                      "refresh mode VK_REFRESH_DRIVEN is for vk_client_tick");
    if (st == VK_OK && c->refresher != NULL) {
        vk__credentials_await_token(&c->credentials);
        vk__refresher_on_failure(c->refresher, token_fetch_failed);
        st = vk__client_start_refresher(c);
    }
    if (st != VK_OK) {
        char *cause = vk__error_dup();
        atomic_store(&c->alive, false);
        close_client(c);   /* a client that never was: no "redis.close" span */
        vk__client_unref(c);
        vk__fail_restore(st, cause);
        free(cause);
        return st;
    }
    *out = c;
    return VK_OK;
}

/* Stops the background work and closes every connection; idempotent. */
static void close_client(vk_client *client)
{
    vk__sentinel_watch_stop(client->watch);
    if (client->refresher != NULL) {
        vk__refresher_stop(client->refresher);
        pthread_mutex_lock(&client->connect_lock);
        client->refresher_running = false;
        pthread_mutex_unlock(&client->connect_lock);
    }
    pthread_mutex_lock(&client->lock);
    vk_pool *old = client->pool;
    client->pool = NULL;
    atomic_store(&client->connected, false);
    pthread_mutex_unlock(&client->lock);
    vk__pool_close(old);
    vk__pool_unref(old);
    vk__cluster_close(client->cluster);
}

VK_API vk_status vk_client_close(vk_client *client)
{
    if (client == NULL)
        return nil_client("vk_client_close");
    vk__client_check_fork(client);
    client_span span;
    client_span_start(&span, client, "redis.close", NULL);
    close_client(client);
    client_span_end(&span, VK_OK);
    return VK_OK;
}

VK_API void vk_client_free(vk_client *client)
{
    if (client == NULL)
        return;
    atomic_store(&client->alive, false);
    vk_client_close(client);
    vk__client_unref(client);
}

VK_API vk_status vk_client_report_pool_gauges(vk_client *client)
{
    if (client == NULL)
        return nil_client("vk_client_report_pool_gauges");
    vk__client_check_fork(client);
    if (client->cluster != NULL) {
        vk__cluster_report_pool_gauges(client->cluster);
        return VK_OK;
    }
    pthread_mutex_lock(&client->lock);
    vk_pool *p = client->pool != NULL ? vk__pool_ref(client->pool) : NULL;
    pthread_mutex_unlock(&client->lock);
    if (p != NULL)
        vk__pool_report_gauges(p);
    else
        vk__pool_report_none(client->events);
    vk__pool_unref(p);
    return VK_OK;
}

/* ---- status ------------------------------------------------------------------- */

VK_API int vk_client_is_connected(const vk_client *client)
{
    if (client == NULL) {
        nil_client("vk_client_is_connected");
        return 0;
    }
    return atomic_load(&((vk_client *)client)->connected) ? 1 : 0;
}

VK_API vk_status vk_client_last_refresh_error(char **out, const vk_client *client)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL)
        return nil_client("vk_client_last_refresh_error");
    vk_client *c = (vk_client *)client;
    vk__client_check_fork(c);   /* c->lock may be a parent thread's */
    char *refresh_error = NULL;
    int64_t at;
    bool running;
    if (c->refresher != NULL)
        vk__refresher_status(c->refresher, &refresh_error, &at, &running);
    if (refresh_error != NULL) {
        *out = refresh_error;
        return VK_OK;
    }
    pthread_mutex_lock(&c->lock);
    if (c->last_error != NULL && (*out = strdup(c->last_error)) == NULL) {
        pthread_mutex_unlock(&c->lock);
        return vk__fail_nomem();
    }
    pthread_mutex_unlock(&c->lock);
    return VK_OK;
}

/* ---- events and the driven refresh mode ----------------------------------- */

VK_API int vk_client_poll_events(vk_client *client, int max)
{
    if (client == NULL) {
        nil_client("vk_client_poll_events");
        return -1;
    }
    vk__client_check_fork(client);   /* the child's own queue */
    return vk__events_poll(client->events, max);
}

VK_API vk_status vk_client_wait_events(vk_client *client, vk_context *ctx, int64_t timeout_ms)
{
    if (client == NULL)
        return nil_client("vk_client_wait_events");
    vk__client_check_fork(client);   /* the child's own eventfd */
    return vk__events_wait(client->events, ctx, timeout_ms);
}

VK_API vk_status vk_client_tick(vk_client *client, vk_context *ctx)
{
    if (client == NULL)
        return nil_client("vk_client_tick");
    vk__client_check_fork(client);
    vk_status st = VK_OK;
    if (client->watch != NULL && client->cfg->refresh_mode == VK_REFRESH_DRIVEN)
        st = vk__sentinel_watch_tick(client->watch, ctx);
    if (st != VK_OK || client->refresher == NULL)
        return st;
    return vk__refresher_tick(client->refresher, ctx);
}
