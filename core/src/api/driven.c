/*
 * The part every driver of the engine shares (see driven.h).
 */
#include "api/driven.h"
#include "api/transaction.h"
#include "api/command_observe.h"

#include <stdio.h>
#include <stdlib.h>

static const char wrong_thread[] = "an event-loop client is used only on its loop's thread";

/* ---- the drivers' connection records ---------------------------------------------- */

void vk__driven_conn_init(vk_driven_conn *c, vk_driven *d, const vk_endpoint *ep, bool is_node)
{
    c->d = d;
    c->is_node = is_node;
    c->wake_at_ms = VK_ENGINE_NEVER;
    if (ep != NULL) {
        c->endpoint = *ep;
        vk__format_endpoint(c->peer, sizeof c->peer, ep);
    }
}

int64_t vk__driven_next_wake(const vk_driven *d, const vk_driven_conn *node)
{
    int64_t at = node->wake_at_ms;
    for (const vk_driven_conn *c = d->probes; c != NULL; c = c->next) {
        if (c->wake_at_ms < at)
            at = c->wake_at_ms;
    }
    return at;
}

static void tick_if_due(vk_driven_conn *c, int64_t now_ms)
{
    if (c->wake_at_ms > now_ms)
        return;
    c->wake_at_ms = VK_ENGINE_NEVER;
    vk__engine_tick(c->engine, now_ms);
}

void vk__driven_tick(vk_driven *d, vk_driven_conn *node, int64_t now_ms)
{
    tick_if_due(node, now_ms);
    for (vk_driven_conn *c = d->probes; c != NULL && !d->free_requested;) {
        vk_driven_conn *next = c->next;   /* a tick may close the probe */
        tick_if_due(c, now_ms);
        c = next;
    }
}

/* ---- Sentinel: the master, found before each dial and followed ------------------- */

vk_status vk__driven_conn_open(vk_driven *d, const vk_endpoint *ep, const vk_config *cfg,
                               vk_credentials *credentials, vk_driven_conn **out)
{
    vk_engine_driver driver;
    vk_driven_conn *c = d->conn_new(d, &driver);
    if (c == NULL)
        return vk__fail_nomem();
    vk__driven_conn_init(c, d, ep, false);
    vk_status st = vk__engine_new(&c->engine, cfg, credentials, c->peer, &driver);
    if (st != VK_OK) {
        d->conn_free(c);
        return st;
    }
    c->next = d->probes;
    d->probes = c;
    *out = c;
    return VK_OK;
}

/* A probe to the sentinel at ep (sentinel_seek.h). */
static vk_status seek_probe_open(void *userdata, const vk_endpoint *ep, const vk_config *cfg,
                                 vk_credentials *credentials, vk_engine **out)
{
    vk_driven_conn *c = NULL;
    vk_status st = vk__driven_conn_open(userdata, ep, cfg, credentials, &c);
    if (st == VK_OK)
        *out = c->engine;
    return st;
}

void vk__driven_probe_close(vk_driven *d, vk_engine *probe)
{
    for (vk_driven_conn **at = &d->probes; *at != NULL; at = &(*at)->next) {
        vk_driven_conn *c = *at;
        if (c->engine == probe) {
            *at = c->next;
            c->next = d->closed;
            d->closed = c;
            c->wake_at_ms = VK_ENGINE_NEVER;
            d->conn_closed(d, c);
            return;
        }
    }
}

void vk__driven_free_closed(vk_driven *d)
{
    /* Lanes and the nodes' engines (Cluster mode) are freed the same way. */
    while (d->closed != NULL) {
        vk_driven_conn *c = d->closed;
        d->closed = c->next;
        /* What is still pending on it (the client is going) is cancelled. */
        vk__engine_free(c->engine, d->closing ? "client closed" : "connection closed");
        d->conn_free(c);
    }
}

static vk_status seek_watch_open(void *userdata, const vk_endpoint *ep, const vk_config *cfg,
                                 vk_credentials *credentials,
                                 void (*push)(void *push_userdata, redisReply *message),
                                 void *push_userdata, vk_engine **out)
{
    vk_driven *d = userdata;
    vk_status st = seek_probe_open(d, ep, cfg, credentials, out);
    if (st == VK_OK) {
        d->probes->push = push;   /* the record just added */
        d->probes->push_userdata = push_userdata;
    }
    return st;
}

void vk__driven_conn_push(void *userdata, redisReply *message)
{
    vk_driven_conn *c = userdata;
    if (c->push != NULL)
        c->push(c->push_userdata, message);
    else
        vk__reply_free(message);
}

static void seek_probe_close(void *userdata, vk_engine *probe)
{
    vk__driven_probe_close(userdata, probe);
}

static int64_t seek_now_ms(void *userdata)
{
    (void)userdata;
    return vk__now_ms();
}

/* The node's record takes the node d names. */
static void name_node(vk_driven *d, vk_driven_conn *node)
{
    node->endpoint = d->endpoint;
    snprintf(node->peer, sizeof node->peer, "%s", d->peer);
}

static void seek_found(void *userdata, vk_status st, const vk_endpoint *master)
{
    vk_driven *d = userdata;
    if (!d->seek_locates) {
        /* A check: a failure leaves things as they are (it was logged); a
         * new master is followed through a new dial. */
        if (st == VK_OK && d->has_endpoint && !vk__endpoint_equal(&d->endpoint, master))
            vk__engine_leave_node(d->engine, vk__now_ms());
        return;
    }
    d->seek_locates = false;
    if (st == VK_OK) {
        /* A master other than the one before is a failover followed. */
        if (d->has_endpoint && !vk__endpoint_equal(&d->endpoint, master))
            vk__client_announce_switch(d->core, &d->endpoint, master);
        d->endpoint = *master;
        d->has_endpoint = true;
        vk__format_endpoint(d->peer, sizeof d->peer, &d->endpoint);
        vk__engine_set_peer(d->engine, d->peer);
        name_node(d, d->node);
    }
    d->located(d, st);
}

/* The subscription heard of a switch: the node is left, and the next
 * dial goes to the announced master (checked by ROLE) without asking the
 * sentinels, some of whom may not know of it yet. */
static void seek_announced(void *userdata, const vk_endpoint *master, const vk_endpoint *via)
{
    (void)via;
    vk_driven *d = userdata;
    if (d->has_endpoint && vk__endpoint_equal(&d->endpoint, master))
        return;
    d->announced = *master;
    d->has_announced = true;
    vk__engine_leave_node(d->engine, vk__now_ms());
}

static vk_status start_seeking(vk_driven *d)
{
    const vk_seek_driver seek = {
        .userdata = d,
        .probe_open = seek_probe_open,
        .watch_open = seek_watch_open,
        .probe_close = seek_probe_close,
        .found = seek_found,
        .announced = seek_announced,
        .now_ms = seek_now_ms,
    };
    vk_status st = vk__seek_new(&d->seek, d->core->sentinel, vk__client_config(d->core), &seek);
    if (st != VK_OK)
        return st;
    vk__engine_follow_master(d->engine);
    snprintf(d->peer, sizeof d->peer, "sentinel master %s",
             vk__client_config(d->core)->sentinel_master);
    vk__engine_set_peer(d->engine, d->peer);
    return VK_OK;
}

bool vk__driven_dial_now(vk_driven *d, vk_driven_conn *node)
{
    d->node = node;
    if (d->seek == NULL) {
        name_node(d, node);
        return true;
    }
    if (d->has_announced) {
        d->has_announced = false;
        if (d->has_endpoint && !vk__endpoint_equal(&d->endpoint, &d->announced))
            vk__client_announce_switch(d->core, &d->endpoint, &d->announced);
        d->endpoint = d->announced;
        d->has_endpoint = true;
        vk__format_endpoint(d->peer, sizeof d->peer, &d->endpoint);
        vk__engine_set_peer(d->engine, d->peer);
        name_node(d, node);
        vk__engine_dial_started(d->engine, vk__now_ms());
        return true;
    }
    /* A check that runs now serves the dial as well. */
    d->seek_locates = true;
    vk__seek_start(d->seek);
    return false;
}

void vk__driven_node_closed(vk_driven *d)
{
    d->seek_locates = false;
    vk__seek_stop(d->seek);
}

void vk__driven_conn_check_master(void *userdata)
{
    vk__driven_check_master(((vk_driven_conn *)userdata)->d);
}

void vk__driven_check_master(vk_driven *d)
{
    if (d->seek == NULL)
        return;
    vk__seek_watch(d->seek);
    if (!vk__seek_running(d->seek))
        vk__seek_start(d->seek);
}

/* ---- Cluster: the router's driver ------------------------------------------------- */

static vk_status router_node_open(void *userdata, const vk_endpoint *ep, vk_engine **out)
{
    vk_driven *d = userdata;
    return seek_probe_open(d, ep, vk__client_config(d->core), &d->core->credentials, out);
}

static void router_node_close(void *userdata, vk_engine *node)
{
    vk__driven_probe_close(userdata, node);
}

static vk_status router_lane_take(void *userdata, const vk_endpoint *ep, vk_engine **out)
{
    return vk__driven_lane_take(userdata, ep, out);
}

static void router_lane_give_back(void *userdata, vk_engine *lane, bool keep)
{
    vk__driven_lane_give_back(userdata, lane, keep);
}

static vk_status router_after(void *userdata, int64_t at_ms, vk_async_fn fn, void *op_userdata,
                              uint64_t *id)
{
    vk_driven *d = userdata;
    return vk__engine_after(d->engine, at_ms, fn, op_userdata, vk__now_ms(), id);
}

static void router_cancel_after(void *userdata, uint64_t id)
{
    vk_driven *d = userdata;
    vk__engine_cancel(d->engine, id, vk__now_ms());
}

static vk_status start_routing(vk_driven *d)
{
    const vk_router_driver driver = {
        .userdata = d,
        .node_open = router_node_open,
        .node_close = router_node_close,
        .lane_take = router_lane_take,
        .lane_give_back = router_lane_give_back,
        .after = router_after,
        .cancel_after = router_cancel_after,
        .complete = vk__driven_complete,
        .now_ms = seek_now_ms,
    };
    const vk_config *cfg = vk__client_config(d->core);
    snprintf(d->peer, sizeof d->peer, "%s", cfg->cluster_addresses.items[0]);
    vk__engine_set_peer(d->engine, d->peer);
    return vk__router_new(&d->router, cfg, d->core->events, d->core->tls != NULL, &driver);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

vk_status vk__driven_init(vk_driven *d, const vk_config *cfg, const vk_engine_driver *driver)
{
    d->owner = pthread_self();
    vk_status st = vk__client_new_detached(
        &d->core, cfg, VK_TOPO_STANDALONE | VK_TOPO_SENTINEL | VK_TOPO_CLUSTER, NULL);
    if (st != VK_OK)
        return st;
    d->endpoint = d->core->endpoint;
    d->has_endpoint = d->core->sentinel == NULL && d->core->cluster == NULL;
    vk__format_endpoint(d->peer, sizeof d->peer, &d->endpoint);
    st = vk__engine_new(&d->engine, vk__client_config(d->core), &d->core->credentials, d->peer,
                        driver);
    if (st == VK_OK && d->core->sentinel != NULL)
        st = start_seeking(d);
    if (st == VK_OK && d->core->cluster != NULL)
        st = start_routing(d);
    if (st != VK_OK) {
        char *cause = vk__error_dup();
        vk__engine_free(d->engine, "client closed");
        d->engine = NULL;
        vk_client_free(d->core);
        d->core = NULL;
        vk__fail_restore(st, cause);
        free(cause);
    }
    return st;
}

void vk__driven_watch(vk_driven *d, vk_driven_watch *w)
{
    w->next = d->watches;
    d->watches = w;
}

void vk__driven_unwatch(vk_driven *d, vk_driven_watch *w)
{
    for (vk_driven_watch **at = &d->watches; *at != NULL; at = &(*at)->next) {
        if (*at == w) {
            *at = w->next;
            return;
        }
    }
}

void vk__driven_destroy(vk_driven *d)
{
    d->closing = true;
    vk_driven_watch *w = d->watches;
    d->watches = NULL;
    while (w != NULL) {
        vk_driven_watch *next = w->next;
        w->gone(w);
        w = next;
    }
    d->depth++;   /* completions that call back in are refused, not re-entered */
    vk__seek_free(d->seek);
    d->seek = NULL;
    /* The router's operations complete first; its nodes' engines, freed
     * next, give it their cancelled requests back. */
    vk__router_close(d->router, "client closed");
    while (d->probes != NULL)
        vk__driven_probe_close(d, d->probes->engine);
    vk__driven_free_closed(d);
    vk__router_free(d->router);
    d->router = NULL;
    vk__engine_free(d->engine, "client closed");
    d->engine = NULL;
    vk_client_free(d->core);
    d->core = NULL;
    d->release(d);
}

bool vk__driven_on_thread(const vk_driven *d, const char *function)
{
    if (pthread_equal(pthread_self(), d->owner))
        return true;
    vk__misuse(function, wrong_thread);
    return false;
}

vk_status vk__driven_check_thread(const vk_driven *d, const char *function)
{
    if (!vk__driven_on_thread(d, function))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "%s", wrong_thread);
    return VK_OK;
}

vk_status vk__driven_usable(vk_driven *d, const char *function)
{
    if (d == NULL || d->closing || d->free_requested) {
        vk__misuse(function, "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    return vk__driven_check_thread(d, function);
}

bool vk__driven_leave(vk_driven *d)
{
    if (--d->depth > 0 || !d->free_requested)
        return false;
    vk__driven_destroy(d);
    return true;
}

void vk__driven_free(vk_driven *d, const char *function)
{
    if (d == NULL || d->closing || !vk__driven_on_thread(d, function))
        return;
    if (d->depth > 0) {
        d->free_requested = true;
        return;
    }
    vk__driven_destroy(d);
}

/* Standalone and Sentinel: a command waiting on the server goes on a lane
 * (driven_lane.c), the others on the shared connection. */
static vk_status submit_command(vk_driven *d, int argc, const char *const *argv,
                                const size_t *argvlen, vk_async_fn fn, void *userdata,
                                uint64_t *id)
{
    vk_command cmd;
    vk_status st = vk__command_accept(&cmd, argc, argv, argvlen);
    if (st != VK_OK)
        return st;
    if (VK_UNLIKELY(cmd.flags & VK_COMMAND_BLOCKING) &&
        vk__driven_lane_command(d, &cmd, fn, userdata, id, &st))
        return st;
    return vk__engine_command(d->engine, &cmd, fn, userdata, vk__now_ms(), id);
}

vk_status vk__driven_command(vk_driven *d, const char *function, int argc,
                             const char *const *argv, const size_t *argvlen, vk_async_fn fn,
                             void *userdata, uint64_t *id)
{
    return vk__driven_command_at(d, function, argc, argv, argvlen, NULL, fn, userdata, id);
}

vk_status vk__driven_command_at(vk_driven *d, const char *function, int argc,
                                const char *const *argv, const size_t *argvlen,
                                const vk_endpoint *at, vk_async_fn fn, void *userdata,
                                uint64_t *id)
{
    if (id != NULL)
        *id = 0;
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    uint64_t op_id = 0;
    /* Malformed arguments are refused below and not observed. */
    bool observed = argc > 0 && argv != NULL && argvlen != NULL && argv[0] != NULL &&
                    vk__command_observe_wrap(d->core, argv[0], argvlen[0], 0, &fn, &userdata);
    vk__driven_enter(d);
    if (d->router != NULL && at != NULL)
        st = vk__router_command_at(d->router, argc, argv, argvlen, at, fn, userdata, &op_id);
    else if (d->router != NULL)
        st = vk__router_command(d->router, argc, argv, argvlen, fn, userdata, &op_id);
    else
        st = submit_command(d, argc, argv, argvlen, fn, userdata, &op_id);
    if (VK_UNLIKELY(observed) && st != VK_OK)
        vk__command_observe_unwrap(fn, userdata, st);
    if (!vk__driven_leave(d) && st == VK_OK && id != NULL)
        *id = op_id;
    return st;
}

vk_status vk__driven_pipeline_new(vk_driven *d, const char *function, vk_pipeline **out)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    return vk__pipeline_new_detached(out, d->core, d);
}

/* A transaction pipeline's completion: the engine gives every reply
 * (MULTI's, the QUEUED ones, EXEC's), the caller gets EXEC's results or
 * the transaction's failure, as vk_pipeline_exec gives them. */
typedef struct transaction_op {
    vk_async_fn fn;
    void *userdata;
} transaction_op;

static void transaction_complete(void *userdata, vk_status status, vk_reply *reply)
{
    transaction_op *op = userdata;
    vk_async_fn fn = op->fn;
    void *fn_userdata = op->userdata;
    free(op);
    redisReply *exec = NULL;
    if (status == VK_OK) {
        bool ended;
        status = vk__transaction_result((redisReply *)reply, &exec, &ended);
        char *detail = status != VK_OK ? vk__error_dup() : NULL;
        vk__reply_free(reply);
        if (status != VK_OK)
            vk__fail_restore(status, detail);
        free(detail);
    }
    fn(fn_userdata, status, (vk_reply *)exec);
}

/* Sends a batch on the shared connection, or on a lane when a command of
 * it waits on the server. */
static vk_status submit_batch(vk_driven *d, vk_pipeline_batch *batch, vk_async_fn fn,
                              void *op_userdata, uint64_t *id)
{
    vk_status st;
    if (!(batch->flags & VK_COMMAND_BLOCKING) ||
        !vk__driven_lane_pipeline(d, batch, fn, op_userdata, id, &st))
        st = vk__engine_pipeline(d->engine, batch, fn, op_userdata, vk__now_ms(), id);
    return st;
}

/* A transaction: its completion goes through transaction_complete. */
static vk_status submit_transaction(vk_driven *d, vk_pipeline_batch *batch, vk_async_fn fn,
                                    void *op_userdata, uint64_t *id)
{
    transaction_op *op = malloc(sizeof *op);
    if (op == NULL)
        return vk__fail_nomem();
    op->fn = fn;
    op->userdata = op_userdata;
    vk_status st = submit_batch(d, batch, transaction_complete, op, id);
    if (st != VK_OK)
        free(op);   /* refused: no completion will run */
    return st;
}

/* A pipeline's commands as one operation, after its refusals (those of
 * vk_pipeline_exec); the pipeline empties. An empty one completes (empty
 * array) before this returns. Cluster mode: the router splits it. */
static vk_status submit_pipeline(vk_driven *d, vk_pipeline *pipeline, vk_async_fn fn,
                                 void *op_userdata, uint64_t *id)
{
    vk_status st;
    if (d->router != NULL) {
        vk_pipeline_commands cmds;
        if ((st = vk__pipeline_take_commands(pipeline, &cmds)) != VK_OK)
            return st;
        if (cmds.count > 0)
            return vk__router_pipeline(d->router, &cmds, fn, op_userdata, id);
    } else {
        vk_pipeline_batch batch;
        if ((st = vk__pipeline_take(pipeline, &batch)) != VK_OK)
            return st;
        if (batch.count > 0) {
            st = batch.transaction ? submit_transaction(d, &batch, fn, op_userdata, id)
                                   : submit_batch(d, &batch, fn, op_userdata, id);
            vk__pipeline_batch_free(&batch);
            return st;
        }
    }
    /* Nothing to send: the empty array completes at once. */
    redisReply *array = vk__array_reply_new(0);
    if (array == NULL)
        return vk__fail_nomem();
    vk__driven_complete(NULL, fn, op_userdata, VK_OK, array);
    return VK_OK;
}

vk_status vk__driven_pipeline_exec(vk_driven_kind kind, const char *function,
                                   vk_pipeline *pipeline, vk_async_fn fn, void *userdata,
                                   uint64_t *id)
{
    if (id != NULL)
        *id = 0;
    if (pipeline == NULL) {
        vk__misuse(function, "pipeline is nil");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "pipeline is nil");
    }
    vk_driven *d = vk__pipeline_owner(pipeline);
    if (d != NULL && d->kind != kind)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "the pipeline belongs to another kind of "
                                                 "client");
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    uint64_t op_id = 0;
    bool observed = vk__command_observe_wrap(d->core, NULL, 0, vk_pipeline_length(pipeline),
                                             &fn, &userdata);
    vk__driven_enter(d);
    st = submit_pipeline(d, pipeline, fn, userdata, &op_id);
    if (VK_UNLIKELY(observed) && st != VK_OK)
        vk__command_observe_unwrap(fn, userdata, st);
    if (!vk__driven_leave(d) && st == VK_OK && id != NULL)
        *id = op_id;
    return st;
}

vk_status vk__driven_after(vk_driven *d, const char *function, int64_t delay_ms,
                           vk_async_fn fn, void *userdata, uint64_t *id)
{
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    uint64_t op_id = 0;
    int64_t now_ms = vk__now_ms();
    vk__driven_enter(d);
    st = vk__engine_after(d->engine, now_ms + (delay_ms > 0 ? delay_ms : 0), fn, userdata,
                          now_ms, &op_id);
    if (!vk__driven_leave(d) && st == VK_OK && id != NULL)
        *id = op_id;
    return st;
}

vk_status vk__driven_cancel(vk_driven *d, const char *function, uint64_t id)
{
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    vk__driven_enter(d);
    st = vk__driven_cancel_id(d, id);
    vk__driven_leave(d);
    return st;
}

vk_status vk__driven_cancel_id(vk_driven *d, uint64_t id)
{
    if (d->router != NULL && vk__router_owns_id(id))
        return vk__router_cancel(d->router, id);
    if (id & VK_LANE_ID_BIT)
        return vk__driven_lane_cancel(d, id);
    if (id & VK_SCRIPT_ID_BIT)
        return vk__driven_script_cancel(d, id);
    return vk__engine_cancel(d->engine, id, vk__now_ms());
}

int vk__driven_poll_events(vk_driven *d, const char *function, int max)
{
    if (vk__driven_usable(d, function) != VK_OK)
        return -1;
    return vk_client_poll_events(d->core, max);
}

size_t vk__driven_pending(const vk_driven *d)
{
    if (d == NULL || d->engine == NULL)
        return 0;
    return vk__engine_pending(d->engine) + vk__driven_lane_pending(d) +
           (d->router != NULL ? vk__router_pending(d->router) : 0);
}

bool vk__driven_connected(const vk_driven *d)
{
    if (d == NULL || d->engine == NULL)
        return false;
    return d->router != NULL ? vk__router_connected(d->router) : vk__engine_ready(d->engine);
}

void vk__driven_complete(void *userdata, vk_async_fn fn, void *op_userdata, vk_status st,
                         redisReply *reply)
{
    (void)userdata;
    if (fn != NULL)
        fn(op_userdata, st, (vk_reply *)reply);
    else
        vk__reply_free(reply);
}
