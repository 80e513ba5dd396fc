/*
 * Blocking operations on connections of their own: lanes (driven.h).
 *
 * A command that waits on the server (BLPOP, BRPOP, BLMOVE, XREAD BLOCK,
 * WAIT, ...) would hold up every request queued behind it on the shared,
 * multiplexed connection for as long as it waits. It runs instead on a
 * lane: a connection to the same node, kept idle from an earlier blocking
 * operation or opened for it, and given back when it completes (a few are
 * kept). Cancelling it closes its lane, which ends the wait on the server
 * at once; on a shared connection the cancelled request's reply would
 * still be due, and BLPOP k 0 may never give one. A pipeline holding such
 * a command runs on a lane the same way.
 *
 * The cluster router takes its lanes per node through its driver; here
 * are those of the single-node topologies. In Sentinel mode a lane goes to
 * the master last found. Before one is found, the command goes on the
 * shared connection, whose engine finds the master; and when a lane's node
 * answers that it is no longer the master (READONLY, MASTERDOWN: the
 * command did not run), the shared engine leaves that node and the command
 * is sent again there, on the master it finds (when the retry budget
 * allows one retry).
 */
#include "api/driven.h"
#include "engine/retry.h"

#include <stdlib.h>

/* Idle lanes kept per client, whatever their nodes. */
#define VK_LANES_IDLE_MAX 8

struct vk_lane_op {
    vk_lane_op *next;         /* in d->lane_ops */
    vk_driven *d;
    uint64_t id;              /* the caller's */
    vk_engine *engine;        /* where it is: its lane, or the shared engine */
    uint64_t sub_id;          /* its id there */
    vk_async_fn fn;
    void *userdata;
    bool has_command;         /* a command (not a pipeline): cmd, its arguments in mem */
    vk_command cmd;
    void *mem;
};

/* ---- lanes ---------------------------------------------------------------------- */

static vk_driven_conn *lane_of(const vk_driven *d, const vk_engine *engine)
{
    for (vk_driven_conn *c = d->probes; c != NULL; c = c->next) {
        if (c->lane && c->engine == engine)
            return c;
    }
    return NULL;
}

vk_status vk__driven_lane_take(vk_driven *d, const vk_endpoint *ep, vk_engine **out)
{
    for (vk_driven_conn *c = d->probes; c != NULL; c = c->next) {
        if (c->lane && c->lane_idle && vk__endpoint_equal(&c->endpoint, ep)) {
            c->lane_idle = false;
            *out = c->engine;
            return VK_OK;
        }
    }
    vk_driven_conn *c = NULL;
    vk_status st = vk__driven_conn_open(d, ep, vk__client_config(d->core), &d->core->credentials,
                                        &c);
    if (st != VK_OK)
        return st;
    c->lane = true;
    *out = c->engine;
    return VK_OK;
}

void vk__driven_lane_give_back(vk_driven *d, vk_engine *lane, bool keep)
{
    vk_driven_conn *c = lane_of(d, lane);
    if (c == NULL)
        return;   /* closed already (the client is going) */
    size_t idle = 0;
    for (const vk_driven_conn *p = d->probes; p != NULL; p = p->next)
        idle += p->lane && p->lane_idle;
    if (keep && idle < VK_LANES_IDLE_MAX && vk__engine_ready(lane) &&
        vk__engine_pending(lane) == 0) {
        c->lane_idle = true;
        return;
    }
    vk__driven_probe_close(d, lane);
}

/* Sentinel mode: idle lanes to a node that is no longer the master go. */
static void close_stale_lanes(vk_driven *d)
{
    for (vk_driven_conn *c = d->probes; c != NULL;) {
        vk_driven_conn *next = c->next;
        if (c->lane && c->lane_idle && !vk__endpoint_equal(&c->endpoint, &d->endpoint))
            vk__driven_probe_close(d, c->engine);
        c = next;
    }
}

/* ---- operations on lanes ------------------------------------------------------------ */

static void unlink_op(vk_driven *d, vk_lane_op *op)
{
    for (vk_lane_op **at = &d->lane_ops; *at != NULL; at = &(*at)->next) {
        if (*at == op) {
            *at = op->next;
            return;
        }
    }
}

static void free_op(vk_lane_op *op)
{
    free(op->mem);
    free(op);
}

static void lane_done(void *userdata, vk_status st, vk_reply *reply);

/* Sends op's command or batch on engine. */
static vk_status send_on(vk_lane_op *op, vk_engine *engine, vk_pipeline_batch *batch)
{
    op->engine = engine;
    if (batch != NULL)
        return vk__engine_pipeline(engine, batch, lane_done, op, vk__now_ms(), &op->sub_id);
    return vk__engine_command(engine, &op->cmd, lane_done, op, vk__now_ms(), &op->sub_id);
}

static void lane_done(void *userdata, vk_status st, vk_reply *vreply)
{
    vk_lane_op *op = userdata;
    vk_driven *d = op->d;
    redisReply *reply = (redisReply *)vreply;
    if (op->engine != d->engine) {
        vk_engine *lane = op->engine;
        bool moved = st == VK_OK && op->has_command && d->seek != NULL &&
                     vk__reply_demands_rediscovery(reply) &&
                     vk__retry_budget_left(vk__client_config(d->core), 0);
        if (moved) {
            /* The node is no longer the master and did not run it. */
            vk__engine_leave_node(d->engine, vk__now_ms());
            moved = send_on(op, d->engine, NULL) == VK_OK;
        }
        vk__driven_lane_give_back(d, lane, st == VK_OK && !moved);
        if (moved) {
            vk__reply_free(reply);
            return;
        }
    }
    unlink_op(d, op);
    vk__driven_complete(NULL, op->fn, op->userdata, st, reply);
    free_op(op);
}

/* Sends op on a lane to the node (standalone), or to the master last found
 * (Sentinel); on success it joins the operations on lanes. */
static vk_status start(vk_driven *d, vk_lane_op *op, vk_pipeline_batch *batch, uint64_t *id)
{
    if (d->seek != NULL)
        close_stale_lanes(d);
    vk_engine *lane;
    vk_status st = vk__driven_lane_take(d, &d->endpoint, &lane);
    if (st != VK_OK)
        return st;
    if ((st = send_on(op, lane, batch)) != VK_OK) {
        vk__driven_lane_give_back(d, lane, false);
        return st;
    }
    op->id = VK_LANE_ID_BIT | ++d->next_lane_id;
    op->next = d->lane_ops;
    d->lane_ops = op;
    *id = op->id;
    return VK_OK;
}

bool vk__driven_lane_command(vk_driven *d, const vk_command *cmd, vk_async_fn fn,
                             void *userdata, uint64_t *id, vk_status *st)
{
    if (!d->has_endpoint)
        return false;
    vk_lane_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        *st = vk__fail_nomem();
        return true;
    }
    *op = (vk_lane_op){.d = d, .fn = fn, .userdata = userdata, .has_command = true};
    /* Kept, for a move to the shared engine. */
    if ((*st = vk__command_copy(cmd, &op->cmd, &op->mem)) != VK_OK) {
        free_op(op);
        return true;
    }
    if ((*st = start(d, op, NULL, id)) != VK_OK)
        free_op(op);
    return true;
}

bool vk__driven_lane_pipeline(vk_driven *d, vk_pipeline_batch *batch, vk_async_fn fn,
                              void *userdata, uint64_t *id, vk_status *st)
{
    if (!d->has_endpoint)
        return false;
    vk_lane_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        *st = vk__fail_nomem();
        return true;
    }
    *op = (vk_lane_op){.d = d, .fn = fn, .userdata = userdata};
    if ((*st = start(d, op, batch, id)) != VK_OK)
        free_op(op);
    return true;
}

vk_status vk__driven_lane_cancel(vk_driven *d, uint64_t id)
{
    vk_lane_op *op = d->lane_ops;
    while (op != NULL && op->id != id)
        op = op->next;
    if (op == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "no operation %llu in flight",
                        (unsigned long long)id);
    /* It completes, cancelled, from inside; its lane then closes. */
    return vk__engine_cancel(op->engine, op->sub_id, vk__now_ms());
}

size_t vk__driven_lane_pending(const vk_driven *d)
{
    size_t n = 0;
    for (const vk_lane_op *op = d->lane_ops; op != NULL; op = op->next)
        n++;
    return n;
}
