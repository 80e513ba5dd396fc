/*
 * Cluster routing over one engine per node, without I/O (see
 * cluster_router.h).
 *
 * An operation (a caller's command or pipeline) moves through steps; at
 * each one at most one thing of its own is out: its request with a node's
 * engine, a pause before trying again, a child operation (COMMAND GETKEYS
 * for its slot; for a pipeline, a command run alone), or, for a pipeline,
 * its parts (one per node). `holds` counts what is out. A caller's
 * operation completes once; after that (or a cancel) whatever is still
 * out is cancelled, and the operation is freed when the last of it comes
 * back.
 *
 * The node engines are in routed mode (vk__engine_route): they send and
 * match, the router decides every retry with the blocking router's rules
 * (cluster_rules.c): the redirect is followed, the refusal paused on, the
 * failed node's command sent again after the map is reloaded.
 *
 * The slot map is loaded when a command finds none (the commands wait for
 * it, and fail with its failure), and reloaded, while the commands go on
 * with the map they have, every 10 s, after a MOVED, a CLUSTERDOWN or a
 * connection failure. Nodes that leave the map are closed once idle; a
 * seed asked for the map that is not in it is closed after the load.
 */
#include "topology/cluster_router.h"
#include "engine/retry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum rop_kind {
    ROP_COMMAND,
    ROP_PIPELINE
} rop_kind;

typedef struct rop rop;
typedef struct part part;

/* How a child operation reports to its parent. */
typedef void (*child_fn)(rop *child, vk_status st, redisReply *reply);

/* A pipeline's commands bound for one node, as one engine pipeline. */
struct part {
    rop *op;
    vk_engine *engine;
    uint64_t sub_id;
    bool on_lane;             /* it holds a blocking command: engine is a lane */
    vk_endpoint node;
    size_t *index;            /* the commands', in the pipeline */
    size_t count;
};

struct rop {
    rop *prev, *next;         /* a caller's: in r->ops */
    rop *wait_next;           /* waiting: next in r->waiting */
    vk_router *r;
    uint64_t id;              /* 0: a child */
    rop_kind kind;
    bool waiting;             /* in the router's waiting list (the slot map) */
    vk_async_fn fn;           /* a caller's operation */
    void *userdata;
    rop *parent;              /* a child: what it works for, and how it tells */
    child_fn on_done;
    size_t index;             /* a pipeline's command run alone: its index */
    bool done;                /* completed or cancelled: only what is out keeps it */
    int holds;                /* things of its own still out */

    /* ROP_COMMAND */
    vk_command cmd;
    void *mem;                /* what cmd points into, unless a parent's */
    vk_cluster_tries tries;
    bool use_redirect;        /* the next try goes to redirect's target */
    vk_cluster_redirect redirect;
    vk_engine *engine;        /* where its request is, and its id (NULL: none) */
    uint64_t sub_id;
    bool on_lane;             /* a blocking command: engine is a lane of its own */
    vk_endpoint node;         /* the node of its last try */
    bool pinned;              /* runs on pinned_node only (SCAN's walk) */
    vk_endpoint pinned_node;
    uint64_t timer_id;        /* its pause before the next try (0: none) */
    rop *child;               /* a child working for it (NULL: none) */

    /* ROP_PIPELINE */
    vk_pipeline_commands cmds;
    redisReply *array;        /* the replies, at their commands' places */
    int *part_of;             /* per command: its part, or -1: to run alone */
    size_t slots_known;       /* commands whose slot is known, from the first */
    bool parts_sent;
    part **parts;             /* those out (NULL when back) */
    vk_endpoint *part_nodes;  /* each part's node */
    size_t part_count;
    size_t alone_next;        /* the next command checked after the parts */
    int64_t refused_until;    /* shared by its commands run alone */
    vk_status failure;        /* of a part that may have run */
    char *failure_detail;
};

/* A completion held back until the call that queued it has returned. */
typedef struct held {
    struct held *next;
    vk_async_fn fn;
    void *userdata;
    vk_status status;
    redisReply *reply;
    char *detail;
} held;

/* An engine for one node, opened on first use. */
typedef struct router_node {
    struct router_node *next;
    vk_endpoint endpoint;
    vk_engine *engine;
} router_node;

struct vk_router {
    const vk_config *cfg;
    vk_events *events;
    bool tls;
    vk_router_driver drv;
    vk_endpoint *seeds;
    size_t seed_count;
    uint64_t next_id;

    vk_slot_map *map;         /* NULL until the first load */
    uint64_t map_version;     /* bumped by every map set */
    vk_engine **engines;      /* per node of map: its engine, once used */
    router_node *nodes;
    int64_t refreshed_ms;     /* the last load; 0: one is due */

    /* The load in progress: the nodes to ask, in order, and the one asked. */
    bool loading;
    vk_endpoint *candidates;
    size_t candidate_count, candidate_next;
    vk_engine *load_engine;
    uint64_t load_id;
    vk_endpoint load_from;
    bool load_shards;
    vk_status load_failure;
    char *load_detail;

    rop *ops;                 /* the callers' operations not complete */
    size_t op_count;
    rop *waiting, *waiting_tail;
    int depth;                /* calls from the driver's caller running */
    held *held_head, *held_tail;
    uint64_t held_timer;      /* the wait that delivers them; 0: none */
    bool closing;

    uint64_t slot_refreshes, moved_redirects, ask_redirects;
};

static void route(rop *op);
static void continue_op(rop *op);
static void pipeline_step(rop *op);
static void start_load(vk_router *r);

static int64_t now_ms(const vk_router *r)
{
    return r->drv.now_ms(r->drv.userdata);
}

/* ---- nodes ------------------------------------------------------------------------- */

/* The engine of the node at ep, opened when new. */
static vk_status node_engine(vk_router *r, const vk_endpoint *ep, vk_engine **out)
{
    for (router_node *n = r->nodes; n != NULL; n = n->next) {
        if (vk__endpoint_equal(&n->endpoint, ep)) {
            *out = n->engine;
            return VK_OK;
        }
    }
    router_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return vk__fail_nomem();
    vk_status st = r->drv.node_open(r->drv.userdata, ep, &n->engine);
    if (st != VK_OK) {
        free(n);
        return st;
    }
    vk__engine_route(n->engine);
    n->endpoint = *ep;
    n->next = r->nodes;
    r->nodes = n;
    *out = n->engine;
    return VK_OK;
}

/* The engine of node i of the map. */
static vk_status engine_at(vk_router *r, int i, vk_engine **out)
{
    if (VK_LIKELY(r->engines[i] != NULL)) {
        *out = r->engines[i];
        return VK_OK;
    }
    vk_status st = node_engine(r, &r->map->nodes[i].endpoint, out);
    if (st == VK_OK)
        r->engines[i] = *out;
    return st;
}

/* The map in service becomes m (its reference taken over). */
static void set_map(vk_router *r, vk_slot_map *m)
{
    vk_engine **engines = calloc(m->node_count > 0 ? m->node_count : 1, sizeof *engines);
    if (engines == NULL) {
        vk__slot_map_unref(m);   /* keep the old one: it still routes */
        return;
    }
    vk__slot_map_unref(r->map);
    r->map = m;
    r->map_version++;
    free(r->engines);
    r->engines = engines;
}

/* Closes the engines of nodes that are not in the map and have nothing
 * pending (a seed only asked for the map, a node gone from it). */
static void close_idle_strangers(vk_router *r)
{
    for (router_node **at = &r->nodes; *at != NULL;) {
        router_node *n = *at;
        bool known = r->map != NULL && vk__slot_map_find(r->map, &n->endpoint) >= 0;
        if (known || vk__engine_pending(n->engine) > 0 || n->engine == r->load_engine) {
            at = &n->next;
            continue;
        }
        *at = n->next;
        r->drv.node_close(r->drv.userdata, n->engine);
        free(n);
    }
}

/* An engine for a blocking command to the node at ep: a lane of its own. */
static vk_status take_lane(vk_router *r, const vk_endpoint *ep, vk_engine **out)
{
    vk_status st = r->drv.lane_take(r->drv.userdata, ep, out);
    if (st == VK_OK)
        vk__engine_route(*out);
    return st;
}

static void give_back_lane(vk_router *r, vk_engine *lane, bool keep)
{
    r->drv.lane_give_back(r->drv.userdata, lane, keep && !r->closing);
}

/* ---- completing ---------------------------------------------------------------------- */

static void free_op(rop *op)
{
    free(op->mem);
    if (op->kind == ROP_PIPELINE) {
        vk__pipeline_commands_free(&op->cmds);
        vk__reply_free(op->array);
        free(op->part_of);
        free(op->parts);
        free(op->part_nodes);
        free(op->failure_detail);
    }
    free(op);
}

/* A caller's operation leaves the list of those not complete. */
static void unlink_op(rop *op)
{
    vk_router *r = op->r;
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        r->ops = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    r->op_count--;
}

/* An operation done with and with nothing out goes; its parent, which
 * held it, may go then too. */
static void release(rop *op)
{
    while (op != NULL && op->done && op->holds == 0) {
        rop *parent = op->parent;
        if (parent != NULL) {
            if (parent->child == op)
                parent->child = NULL;
            parent->holds--;
        }
        free_op(op);
        op = parent;
    }
}

static void deliver_held(void *userdata, vk_status st, vk_reply *reply)
{
    (void)st;
    (void)reply;
    vk_router *r = userdata;
    r->held_timer = 0;
    while (r->held_head != NULL) {
        held *h = r->held_head;
        r->held_head = h->next;
        if (r->held_head == NULL)
            r->held_tail = NULL;
        if (h->status != VK_OK)
            vk__fail_restore(h->status, h->detail);
        r->drv.complete(r->drv.userdata, h->fn, h->userdata, h->status, h->reply);
        free(h->detail);
        free(h);
    }
}

/* The caller learns the outcome: now, or once the call that queued the
 * operation has returned (a wait of no time delivers it). */
static void tell_caller(vk_router *r, vk_async_fn fn, void *userdata, vk_status st,
                        redisReply *reply)
{
    if (VK_LIKELY(r->depth == 0)) {
        r->drv.complete(r->drv.userdata, fn, userdata, st, reply);
        return;
    }
    held *h = calloc(1, sizeof *h);
    if (h != NULL && r->held_timer == 0 &&
        r->drv.after(r->drv.userdata, now_ms(r), deliver_held, r, &r->held_timer) != VK_OK) {
        free(h);
        h = NULL;
    }
    if (h == NULL) {
        /* Out of memory: better now than never. */
        r->drv.complete(r->drv.userdata, fn, userdata, st, reply);
        return;
    }
    *h = (held){.fn = fn, .userdata = userdata, .status = st, .reply = reply,
                .detail = st != VK_OK ? vk__error_dup() : NULL};
    if (r->held_tail != NULL)
        r->held_tail->next = h;
    else
        r->held_head = h;
    r->held_tail = h;
}

/* The operation's outcome (a failure's detail set): to its caller, or to
 * its parent. */
static void finish(rop *op, vk_status st, redisReply *reply)
{
    if (op->done) {
        vk__reply_free(reply);
        return;
    }
    op->done = true;
    vk_router *r = op->r;
    if (op->parent != NULL) {
        op->holds++;   /* kept while the parent reads it */
        op->on_done(op, st, reply);
        op->holds--;
    } else {
        unlink_op(op);
        if (op->kind == ROP_PIPELINE && st == VK_OK) {
            reply = op->array;
            op->array = NULL;
        }
        tell_caller(r, op->fn, op->userdata, st, reply);
    }
    release(op);
}

/* What an operation done with (cancelled, or its parent gone) still has
 * out is cancelled. */
static void abort_op(rop *op)
{
    vk_router *r = op->r;
    op->holds++;   /* kept while its pieces come back */
    if (op->waiting) {
        rop **at = &r->waiting;
        while (*at != NULL && *at != op)
            at = &(*at)->wait_next;
        if (*at == op) {
            *at = op->wait_next;
            if (r->waiting_tail == op) {
                r->waiting_tail = NULL;
                for (rop *w = r->waiting; w != NULL; w = w->wait_next)
                    r->waiting_tail = w;
            }
        }
        op->waiting = false;
    }
    if (op->engine != NULL)
        vk__engine_cancel(op->engine, op->sub_id, now_ms(r));
    if (op->timer_id != 0)
        r->drv.cancel_after(r->drv.userdata, op->timer_id);
    if (op->child != NULL) {
        rop *child = op->child;
        child->done = true;
        abort_op(child);
    }
    for (size_t i = 0; op->parts != NULL && i < op->part_count; i++) {
        if (op->parts[i] != NULL)
            vk__engine_cancel(op->parts[i]->engine, op->parts[i]->sub_id, now_ms(r));
    }
    op->holds--;
    release(op);
}

/* ---- waiting for the map -------------------------------------------------------------- */

static void wait_for_map(rop *op)
{
    vk_router *r = op->r;
    op->waiting = true;
    op->wait_next = NULL;
    if (r->waiting_tail != NULL)
        r->waiting_tail->wait_next = op;
    else
        r->waiting = op;
    r->waiting_tail = op;
    start_load(r);
}

/* The load ended: the waiting operations go on, or fail with st (its
 * detail set) when there is no map. */
static void end_waiting(vk_router *r, vk_status st)
{
    rop *w = r->waiting;
    r->waiting = r->waiting_tail = NULL;
    char *detail = st != VK_OK ? vk__error_dup() : NULL;
    while (w != NULL) {
        rop *op = w;
        w = w->wait_next;
        op->waiting = false;
        op->holds++;   /* kept while it goes on */
        if (r->map != NULL) {
            continue_op(op);
        } else {
            vk__fail_restore(st, detail);
            finish(op, st, NULL);
        }
        op->holds--;
        release(op);
    }
    free(detail);
}

/* ---- loading the slot map ------------------------------------------------------------- */

static void ask_next(vk_router *r);

static void load_ended(vk_router *r, vk_status st)
{
    r->loading = false;
    r->load_engine = NULL;
    free(r->candidates);
    r->candidates = NULL;
    if (st != VK_OK) {
        if (st == VK_ERR_IO)
            st = vk__cluster_fail_unreachable();
        char *cause = vk__error_dup();
        const vk_field fields[] = {{"error", cause != NULL ? cause : ""}};
        if (r->map != NULL) {
            vk__log(r->events, VK_LOG_WARN, "redis cluster: slot map refresh failed", fields, 1);
            /* Try again in a while, not on every command; the map in
             * service stays, and the commands tell whether it still works. */
            r->refreshed_ms = now_ms(r) - VK_CLUSTER_REFRESH_EVERY_MS / 2;
        }
        vk__fail_restore(st, cause);
        free(cause);
    }
    close_idle_strangers(r);
    end_waiting(r, st);
}

/* A failure of the node asked (detail set): the next one is asked. */
static void load_failed_at(vk_router *r, vk_status st)
{
    free(r->load_detail);
    r->load_failure = st;
    r->load_detail = vk__error_dup();
    r->load_engine = NULL;
    ask_next(r);
}

static void load_reply(void *userdata, vk_status st, vk_reply *vreply)
{
    vk_router *r = userdata;
    redisReply *reply = (redisReply *)vreply;
    if (r->closing || !r->loading) {
        vk__reply_free(reply);
        return;
    }
    if (st == VK_OK && reply->type == REDIS_REPLY_ERROR && r->load_shards) {
        /* No CLUSTER SHARDS here (before 7.0): CLUSTER SLOTS. */
        vk__reply_free(reply);
        r->load_shards = false;
        vk_command cmd;
        vk__cluster_map_request(&cmd, false);
        st = vk__engine_command(r->load_engine, &cmd, load_reply, r, now_ms(r), &r->load_id);
        if (st != VK_OK)
            load_failed_at(r, st);
        return;
    }
    vk_slot_map *m = NULL;
    if (st == VK_OK) {
        st = vk__cluster_map_from_reply(&m, reply, r->load_shards, &r->load_from, r->tls,
                                        r->map);
        vk__reply_free(reply);
    }
    if (st != VK_OK) {
        load_failed_at(r, st);
        return;
    }
    set_map(r, m);
    r->refreshed_ms = now_ms(r);
    r->slot_refreshes++;
    vk__cluster_count(r->events, "redis_cluster_slot_refreshes_total", NULL);
    load_ended(r, VK_OK);
}

/* Asks the next candidate for the map; none left: the load failed with
 * the last cause. */
static void ask_next(vk_router *r)
{
    while (r->candidate_next < r->candidate_count) {
        r->load_from = r->candidates[r->candidate_next++];
        vk_engine *engine;
        vk_status st = node_engine(r, &r->load_from, &engine);
        if (st == VK_OK) {
            vk_command cmd;
            vk__cluster_map_request(&cmd, true);
            r->load_shards = true;
            r->load_engine = engine;
            st = vk__engine_command(engine, &cmd, load_reply, r, now_ms(r), &r->load_id);
            if (st == VK_OK)
                return;
            r->load_engine = NULL;
        }
        free(r->load_detail);
        r->load_failure = st;
        r->load_detail = vk__error_dup();
    }
    vk__fail_restore(r->load_failure, r->load_detail);
    load_ended(r, r->load_failure);
}

/* Starts loading the map unless a load runs: the masters of the map in
 * service first (they know the latest changes; from a random one), then
 * the seeds. */
static void start_load(vk_router *r)
{
    if (r->loading || r->closing)
        return;
    size_t known = r->map != NULL ? r->map->node_count : 0;
    r->candidates = calloc(known + r->seed_count, sizeof *r->candidates);
    if (r->candidates == NULL) {
        r->loading = true;   /* ended at once, with the failure */
        vk__fail_nomem();
        load_ended(r, VK_ERR_NO_MEMORY);
        return;
    }
    size_t start = known > 0 ? (size_t)vk__jitter((int64_t)known) : 0;
    for (size_t k = 0; k < known; k++)
        r->candidates[k] = r->map->nodes[(start + k) % known].endpoint;
    memcpy(r->candidates + known, r->seeds, r->seed_count * sizeof *r->seeds);
    r->candidate_count = known + r->seed_count;
    r->candidate_next = 0;
    r->load_failure = vk__fail_msg(VK_ERR_IO, "no node is known");
    free(r->load_detail);
    r->load_detail = vk__error_dup();
    r->loading = true;
    ask_next(r);
}

/* ---- one command ------------------------------------------------------------------------ */

static void pause_done(void *userdata, vk_status st, vk_reply *reply)
{
    (void)reply;
    rop *op = userdata;
    op->timer_id = 0;
    op->holds--;
    if (op->done) {
        release(op);
        return;
    }
    if (st != VK_OK) {
        finish(op, st, NULL);
        return;
    }
    /* A reload asked for is awaited; else the map in service routes it. */
    if (op->r->loading)
        wait_for_map(op);
    else
        continue_op(op);
}

/* Tries again after next's pause, the map reloaded first when asked. */
static void pause_then_retry(rop *op, const vk_cluster_next *next)
{
    vk_router *r = op->r;
    if (next->reload)
        start_load(r);
    vk_status st = r->drv.after(r->drv.userdata, now_ms(r) + next->pause_ms, pause_done, op,
                                &op->timer_id);
    if (st != VK_OK) {
        finish(op, st, NULL);
        return;
    }
    op->holds++;
}

/* A try that failed (detail set): again when the rules allow. */
static void try_failed(rop *op, vk_status st, bool may_resend)
{
    vk_cluster_next next;
    vk_router *r = op->r;
    if (vk__cluster_after_failure(r->cfg, &op->tries, may_resend, &next) == VK_CLUSTER_ANSWER) {
        r->refreshed_ms = vk__cluster_reload_due_after(st, r->refreshed_ms, now_ms(r));
        finish(op, st, NULL);
        return;
    }
    char *detail = vk__error_dup();
    pause_then_retry(op, &next);
    vk__fail_restore(st, detail);
    free(detail);
}

/* A redirect followed: counted, and a MOVED applied to the map (which is
 * reloaded soon: a MOVED usually means more than one slot moved). */
static void note_redirect(vk_router *r, const vk_cluster_redirect *rd)
{
    if (rd->ask) {
        r->ask_redirects++;
        return;
    }
    r->moved_redirects++;
    vk_slot_map *patched = r->map != NULL ? vk__slot_map_moved(r->map, rd) : NULL;
    if (patched != NULL)
        set_map(r, patched);
    r->refreshed_ms = 0;
}

static void node_done(void *userdata, vk_status st, vk_reply *vreply)
{
    rop *op = userdata;
    redisReply *reply = (redisReply *)vreply;
    bool may_resend = st != VK_OK && vk__engine_may_resend(op->engine);
    if (op->on_lane)
        give_back_lane(op->r, op->engine, st == VK_OK);
    op->engine = NULL;
    op->on_lane = false;
    op->sub_id = 0;
    op->holds--;
    if (op->done) {
        vk__reply_free(reply);
        release(op);
        return;
    }
    if (st != VK_OK) {
        try_failed(op, st, may_resend);
        return;
    }
    vk_router *r = op->r;
    vk_cluster_next next;
    switch (vk__cluster_after_reply(r->cfg, r->events, &op->tries, reply, &op->node,
                                    now_ms(r), &next)) {
    case VK_CLUSTER_ANSWER:
        finish(op, VK_OK, reply);
        return;
    case VK_CLUSTER_FOLLOW:
        if (op->pinned) {
            /* Meant for that node: the redirect is its answer. */
            finish(op, VK_OK, reply);
            return;
        }
        vk__reply_free(reply);
        note_redirect(r, &next.redirect);
        op->use_redirect = true;
        op->redirect = next.redirect;
        route(op);
        return;
    case VK_CLUSTER_AGAIN:
        vk__reply_free(reply);
        pause_then_retry(op, &next);
        return;
    }
}

/* Sends the command to the node its redirect names, or to its slot's
 * master. */
static void route(rop *op)
{
    vk_router *r = op->r;
    if (r->map == NULL) {
        wait_for_map(op);
        return;
    }
    vk_engine *engine = NULL;
    vk_status st;
    bool asking = false;
    bool blocking = (op->cmd.flags & VK_COMMAND_BLOCKING) != 0;
    if (op->use_redirect) {
        op->use_redirect = false;
        asking = op->redirect.ask;
        op->node = op->redirect.target;
        st = blocking ? take_lane(r, &op->node, &engine) : node_engine(r, &op->node, &engine);
    } else if (op->pinned) {
        /* Only a node of the map in service: one that left it is not
         * dialled again on the word of an older map. */
        int i = vk__slot_map_find(r->map, &op->pinned_node);
        if (i < 0) {
            char address[300];
            vk__format_endpoint(address, sizeof address, &op->pinned_node);
            vk__fail_msg(VK_ERR_IO, "redis cluster: node %s is not in the slot map", address);
            finish(op, VK_ERR_IO, NULL);
            return;
        }
        op->node = r->map->nodes[i].endpoint;
        st = engine_at(r, i, &engine);
    } else {
        int i = vk__cluster_node_for_slot(r->map, op->cmd.slot);
        if (i < 0) {
            /* Nobody serves it in this map: a reload may tell who does. */
            vk__fail_msg(VK_ERR_IO, "redis cluster: hash slot %d is not served", op->cmd.slot);
            try_failed(op, VK_ERR_IO, true);
            return;
        }
        op->node = r->map->nodes[i].endpoint;
        st = blocking ? take_lane(r, &op->node, &engine) : engine_at(r, i, &engine);
    }
    int64_t now = now_ms(r);
    if (st == VK_OK && asking) {
        /* ASKING goes just before the command on the same connection; if
         * that connection fails between them, the command goes without it
         * and is redirected again. Its reply is of no interest. */
        static const char *const asking_argv[] = {"ASKING"};
        static const size_t asking_len[] = {6};
        vk_command cmd;
        uint64_t ignored;
        vk__command_internal(&cmd, 1, asking_argv, asking_len);
        st = vk__engine_command(engine, &cmd, NULL, NULL, now, &ignored);
    }
    if (st == VK_OK)
        st = vk__engine_command(engine, &op->cmd, node_done, op, now, &op->sub_id);
    if (st != VK_OK) {
        if (blocking && engine != NULL)
            give_back_lane(r, engine, false);
        finish(op, st, NULL);
        return;
    }
    op->engine = engine;
    op->on_lane = blocking;
    op->holds++;
}

/* ---- child operations -------------------------------------------------------------------- */

/* A command run for op (its argv borrowed, or in mem, taken over). */
static vk_status new_child(rop *op, const vk_command *cmd, void *mem, child_fn on_done,
                           rop **out)
{
    rop *child = calloc(1, sizeof *child);
    if (child == NULL) {
        free(mem);
        return vk__fail_nomem();
    }
    child->r = op->r;
    child->kind = ROP_COMMAND;
    child->parent = op;
    child->on_done = on_done;
    child->cmd = *cmd;
    child->mem = mem;
    vk__cluster_tries_init(&child->tries, NULL);
    op->child = child;
    op->holds++;
    *out = child;
    return VK_OK;
}

/* The slot of a command whose keys the table does not know, from COMMAND
 * GETKEYS on any node: then `then` goes on with op. */
static void ask_slot(rop *op, vk_command *cmd, size_t index, child_fn then)
{
    vk_command getkeys;
    void *mem;
    rop *child = NULL;
    vk_status st = vk__cluster_getkeys_command(cmd, &getkeys, &mem);
    if (st == VK_OK)
        st = new_child(op, &getkeys, mem, then, &child);
    if (st != VK_OK) {
        finish(op, st, NULL);
        return;
    }
    child->cmd.slot = VK_SLOT_NONE;
    child->index = index;
    route(child);
}

/* GETKEYS answered (an error reply: any node will do, and its own reply
 * tells the caller what is wrong). */
static bool slot_from_getkeys(rop *parent, vk_command *cmd, vk_status st, redisReply *reply)
{
    if (st != VK_OK) {
        vk__reply_free(reply);
        finish(parent, st, NULL);
        return false;
    }
    cmd->slot = vk__getkeys_slot(reply);
    vk__reply_free(reply);
    if (cmd->slot == VK_SLOT_CROSS) {
        finish(parent, vk__cluster_fail_crossslot(), NULL);
        return false;
    }
    return true;
}

static void command_slot_known(rop *child, vk_status st, redisReply *reply)
{
    rop *op = child->parent;
    if (slot_from_getkeys(op, &op->cmd, st, reply))
        route(op);
}

/* ---- pipelines --------------------------------------------------------------------------- */

static void pipeline_slot_known(rop *child, vk_status st, redisReply *reply)
{
    rop *op = child->parent;
    if (!slot_from_getkeys(op, &op->cmds.commands[child->index], st, reply))
        return;
    op->slots_known++;
    pipeline_step(op);
}

/* A command run alone (after its part) answered. */
static void alone_done(rop *child, vk_status st, redisReply *reply)
{
    rop *op = child->parent;
    if (st != VK_OK) {
        finish(op, st, NULL);
        return;
    }
    op->array->element[child->index] = reply;
    op->alone_next++;
    pipeline_step(op);
}

static void part_done(void *userdata, vk_status st, vk_reply *vreply)
{
    part *p = userdata;
    rop *op = p->op;
    redisReply *array = (redisReply *)vreply;
    bool may_resend = st != VK_OK && vk__engine_may_resend(p->engine);
    if (p->on_lane)
        give_back_lane(op->r, p->engine, st == VK_OK);
    for (size_t i = 0; i < op->part_count; i++) {
        if (op->parts[i] == p)
            op->parts[i] = NULL;
    }
    op->holds--;
    if (!op->done) {
        if (st == VK_OK) {
            for (size_t j = 0; j < p->count; j++) {
                op->array->element[p->index[j]] = array->element[j];
                array->element[j] = NULL;
            }
        } else if (may_resend) {
            /* Nothing of it left this process: each runs alone. */
            for (size_t j = 0; j < p->count; j++)
                op->part_of[p->index[j]] = -1;
        } else if (op->failure == VK_OK) {
            op->failure = st;
            op->failure_detail = vk__error_dup();
            vk_router *r = op->r;
            r->refreshed_ms = vk__cluster_reload_due_after(st, r->refreshed_ms, now_ms(r));
        }
    }
    vk__reply_free(array);
    free(p->index);
    free(p);
    if (op->done) {
        release(op);
        return;
    }
    for (size_t i = 0; i < op->part_count; i++) {
        if (op->parts[i] != NULL)
            return;   /* others are still out */
    }
    pipeline_step(op);
}

/* Encodes the part's commands back to back and gives them to its node. */
static vk_status send_part(rop *op, part *p, int node)
{
    vk_router *r = op->r;
    size_t total = 0;
    unsigned flags = 0;
    int64_t block_ms = 0;
    for (size_t j = 0; j < p->count; j++) {
        const vk_command *c = &op->cmds.commands[p->index[j]];
        size_t len;
        if (!vk__request_size(c->argc, c->argvlen, &len) || len > SIZE_MAX - total)
            return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
        total += len;
        vk__batch_add_wait(&flags, &block_ms, c);
    }
    vk_pipeline_batch batch = {.requests = malloc(total), .len = total, .count = p->count,
                               .flags = flags, .block_ms = block_ms};
    if (batch.requests == NULL)
        return vk__fail_nomem();
    char *at = batch.requests;
    for (size_t j = 0; j < p->count; j++) {
        const vk_command *c = &op->cmds.commands[p->index[j]];
        at = vk__request_encode(at, c->argc, c->argv, c->argvlen);
    }
    p->node = r->map->nodes[node].endpoint;
    p->on_lane = (flags & VK_COMMAND_BLOCKING) != 0;
    vk_status st = p->on_lane ? take_lane(r, &p->node, &p->engine)
                              : engine_at(r, node, &p->engine);
    if (st == VK_OK)
        st = vk__engine_pipeline(p->engine, &batch, part_done, p, now_ms(r), &p->sub_id);
    if (st != VK_OK && p->on_lane && p->engine != NULL)
        give_back_lane(r, p->engine, false);
    vk__pipeline_batch_free(&batch);
    return st;
}

/* Splits the pipeline by node (the commands of one node keep their order)
 * and sends each part; a part that cannot be sent runs alone later. */
static void send_parts(rop *op)
{
    vk_router *r = op->r;
    size_t count = op->cmds.count;
    size_t nodes = r->map->node_count;
    size_t *per_node = calloc(nodes, sizeof *per_node);
    int *node_of = malloc(count * sizeof *node_of);
    op->parts = calloc(nodes, sizeof *op->parts);
    op->part_nodes = calloc(nodes, sizeof *op->part_nodes);
    if (per_node == NULL || node_of == NULL || op->parts == NULL || op->part_nodes == NULL) {
        free(per_node);
        free(node_of);
        finish(op, vk__fail_nomem(), NULL);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        node_of[i] = vk__cluster_node_for_slot(r->map, op->cmds.commands[i].slot);
        op->part_of[i] = -1;
        if (node_of[i] >= 0)
            per_node[node_of[i]]++;
    }
    op->parts_sent = true;
    op->holds++;   /* kept while the parts go out */
    for (size_t n = 0; n < nodes; n++) {
        if (per_node[n] == 0)
            continue;
        part *p = calloc(1, sizeof *p);
        size_t *index = malloc(per_node[n] * sizeof *index);
        if (p == NULL || index == NULL) {
            free(p);
            free(index);
            continue;   /* its commands run alone */
        }
        p->op = op;
        p->index = index;
        for (size_t i = 0; i < count; i++) {
            if (node_of[i] == (int)n)
                p->index[p->count++] = i;
        }
        size_t k = op->part_count++;
        op->parts[k] = p;
        op->holds++;
        if (send_part(op, p, (int)n) != VK_OK) {
            /* Nothing of it left: its commands run alone, with the rules. */
            op->parts[k] = NULL;
            op->holds--;
            free(p->index);
            free(p);
            continue;
        }
        op->part_nodes[k] = p->node;
        for (size_t j = 0; j < p->count; j++)
            op->part_of[p->index[j]] = (int)k;
    }
    free(per_node);
    free(node_of);
    op->holds--;
    if (op->done) {
        release(op);
        return;
    }
    for (size_t i = 0; i < op->part_count; i++) {
        if (op->parts[i] != NULL)
            return;   /* part_done goes on */
    }
    pipeline_step(op);
}

/* After the parts: a command that was redirected or refused (it did not
 * run), or could not be sent, runs again alone, in order, with the full
 * redirect and retry rules; the pipeline completes after the last. */
static void run_alone(rop *op)
{
    vk_router *r = op->r;
    if (op->failure != VK_OK) {
        vk__fail_restore(op->failure, op->failure_detail);
        finish(op, op->failure, NULL);
        return;
    }
    while (op->alone_next < op->cmds.count) {
        size_t i = op->alone_next;
        redisReply *reply = op->array->element[i];
        vk_cluster_redirect rd;
        bool redirected = false;
        if (reply != NULL && op->part_of[i] >= 0) {
            redirected = reply->type == REDIS_REPLY_ERROR &&
                         vk__cluster_parse_redirect(reply, &op->part_nodes[op->part_of[i]], &rd);
            if (!redirected && !vk__reply_is_refusal(reply)) {
                op->alone_next++;
                continue;
            }
            if (redirected) {
                vk__cluster_count(r->events, "redis_cluster_redirects_total",
                                  rd.ask ? "ask" : "moved");
                note_redirect(r, &rd);
            }
            vk__reply_free(reply);
            op->array->element[i] = NULL;
        }
        rop *child = NULL;
        vk_status st = new_child(op, &op->cmds.commands[i], NULL, alone_done, &child);
        if (st != VK_OK) {
            finish(op, st, NULL);
            return;
        }
        child->index = i;
        vk__cluster_tries_init(&child->tries, &op->refused_until);
        child->use_redirect = redirected;
        if (redirected)
            child->redirect = rd;
        route(child);
        return;
    }
    finish(op, VK_OK, NULL);
}

/* The pipeline's next step: the slots it does not know yet, the parts,
 * then the commands to run alone. */
static void pipeline_step(rop *op)
{
    while (op->slots_known < op->cmds.count) {
        vk_command *cmd = &op->cmds.commands[op->slots_known];
        if (cmd->slot == VK_SLOT_UNKNOWN) {
            ask_slot(op, cmd, op->slots_known, pipeline_slot_known);
            return;
        }
        op->slots_known++;
    }
    if (!op->parts_sent) {
        if (op->r->map == NULL)
            wait_for_map(op);
        else
            send_parts(op);
        return;
    }
    run_alone(op);
}

static void continue_op(rop *op)
{
    if (op->kind == ROP_PIPELINE)
        pipeline_step(op);
    else
        route(op);
}

/* ---- the API ----------------------------------------------------------------------------- */

vk_status vk__router_new(vk_router **out, const vk_config *cfg, vk_events *events, bool tls,
                         const vk_router_driver *driver)
{
    *out = NULL;
    const vk_strlist *addresses = &cfg->cluster_addresses;
    vk_router *r = calloc(1, sizeof *r);
    if (r == NULL || (r->seeds = calloc(addresses->count, sizeof *r->seeds)) == NULL) {
        free(r);
        return vk__fail_nomem();
    }
    for (size_t i = 0; i < addresses->count; i++) {
        vk_status st = vk__parse_address(&r->seeds[i], addresses->items[i]);
        if (st != VK_OK) {
            free(r->seeds);
            free(r);
            return st;
        }
    }
    r->seed_count = addresses->count;
    r->cfg = cfg;
    r->events = events;
    r->tls = tls;
    r->drv = *driver;
    *out = r;
    return VK_OK;
}

void vk__router_close(vk_router *r, const char *why)
{
    if (r == NULL || r->closing)
        return;
    r->closing = true;
    /* Completions already decided are delivered first, in order. */
    if (r->held_timer != 0) {
        uint64_t timer = r->held_timer;
        r->held_timer = 0;
        r->drv.cancel_after(r->drv.userdata, timer);
    }
    deliver_held(r, VK_OK, NULL);
    while (r->ops != NULL) {
        rop *op = r->ops;
        op->holds++;
        vk__fail(VK_ERR_CANCELLED, "%s", why);
        finish(op, VK_ERR_CANCELLED, NULL);
        abort_op(op);
        op->holds--;
        release(op);
    }
    if (r->loading && r->load_engine != NULL)
        vk__engine_cancel(r->load_engine, r->load_id, now_ms(r));
    r->loading = false;
    while (r->nodes != NULL) {
        router_node *n = r->nodes;
        r->nodes = n->next;
        r->drv.node_close(r->drv.userdata, n->engine);
        free(n);
    }
}

void vk__router_free(vk_router *r)
{
    if (r == NULL)
        return;
    vk__slot_map_unref(r->map);
    free(r->engines);
    free(r->candidates);
    free(r->load_detail);
    free(r->seeds);
    free(r);
}

/* Unlinks a caller's operation never queued, and frees it. */
static void discard_new(rop *op)
{
    unlink_op(op);
    free_op(op);
}

/* A caller's operation, in the list of those not complete. */
static rop *new_op(vk_router *r, rop_kind kind, vk_async_fn fn, void *userdata)
{
    rop *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NULL;
    op->r = r;
    op->kind = kind;
    op->id = VK_ROUTER_ID_BIT | ++r->next_id;
    op->fn = fn;
    op->userdata = userdata;
    op->next = r->ops;
    if (r->ops != NULL)
        r->ops->prev = op;
    r->ops = op;
    r->op_count++;
    vk__cluster_tries_init(&op->tries, NULL);
    return op;
}

/* The periodic reload, while the commands go on with the map in service. */
static void refresh_when_due(vk_router *r)
{
    if (r->map != NULL && !r->loading &&
        now_ms(r) - r->refreshed_ms >= VK_CLUSTER_REFRESH_EVERY_MS)
        start_load(r);
}

vk_status vk__router_command(vk_router *r, int argc, const char *const *argv,
                             const size_t *argvlen, vk_async_fn fn, void *op_userdata,
                             uint64_t *id)
{
    vk_command cmd;
    vk_status st = vk__command_accept(&cmd, argc, argv, argvlen);
    if (st != VK_OK)
        return st;
    cmd.slot = vk__command_slot(argc, argv, argvlen);
    if (cmd.slot == VK_SLOT_CROSS)
        return vk__cluster_fail_crossslot();
    rop *op = new_op(r, ROP_COMMAND, fn, op_userdata);
    if (op == NULL)
        return vk__fail_nomem();
    /* The arguments are copied with the operation. */
    if ((st = vk__command_copy(&cmd, &op->cmd, &op->mem)) != VK_OK) {
        discard_new(op);
        return st;
    }
    *id = op->id;
    r->depth++;
    refresh_when_due(r);
    if (op->cmd.slot == VK_SLOT_UNKNOWN)
        ask_slot(op, &op->cmd, 0, command_slot_known);
    else
        route(op);
    r->depth--;
    return VK_OK;
}

vk_status vk__router_command_at(vk_router *r, int argc, const char *const *argv,
                                const size_t *argvlen, const vk_endpoint *at, vk_async_fn fn,
                                void *op_userdata, uint64_t *id)
{
    vk_command cmd;
    vk_status st = vk__command_accept(&cmd, argc, argv, argvlen);
    if (st != VK_OK)
        return st;
    cmd.slot = VK_SLOT_NONE;
    rop *op = new_op(r, ROP_COMMAND, fn, op_userdata);
    if (op == NULL)
        return vk__fail_nomem();
    if ((st = vk__command_copy(&cmd, &op->cmd, &op->mem)) != VK_OK) {
        discard_new(op);
        return st;
    }
    op->pinned = true;
    op->pinned_node = *at;
    *id = op->id;
    r->depth++;
    refresh_when_due(r);
    route(op);
    r->depth--;
    return VK_OK;
}

const vk_slot_map *vk__router_map(const vk_router *r, uint64_t *version)
{
    *version = r->map_version;
    return r->map;
}

vk_status vk__router_pipeline(vk_router *r, vk_pipeline_commands *cmds, vk_async_fn fn,
                              void *op_userdata, uint64_t *id)
{
    /* Every slot the table knows is known before anything is sent, so that
     * a cross-slot command fails the pipeline while nothing has run. */
    for (size_t i = 0; i < cmds->count; i++) {
        vk_command *c = &cmds->commands[i];
        if (c->slot == VK_SLOT_PENDING)
            c->slot = vk__command_slot(c->argc, c->argv, c->argvlen);
        if (c->slot == VK_SLOT_CROSS) {
            vk__pipeline_commands_free(cmds);
            return vk__cluster_fail_crossslot();
        }
    }
    rop *op = new_op(r, ROP_PIPELINE, fn, op_userdata);
    if (op != NULL) {
        op->array = vk__array_reply_new(cmds->count);
        op->part_of = malloc(cmds->count * sizeof *op->part_of);
    }
    if (op == NULL || op->array == NULL || op->part_of == NULL) {
        vk__pipeline_commands_free(cmds);
        if (op != NULL)
            discard_new(op);
        return vk__fail_nomem();
    }
    op->cmds = *cmds;
    *cmds = (vk_pipeline_commands){0};
    *id = op->id;
    r->depth++;
    refresh_when_due(r);
    pipeline_step(op);
    r->depth--;
    return VK_OK;
}

vk_status vk__router_cancel(vk_router *r, uint64_t id)
{
    rop *op = r->ops;
    while (op != NULL && op->id != id)
        op = op->next;
    if (op == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "no operation %llu in flight",
                        (unsigned long long)id);
    op->holds++;
    vk__fail(VK_ERR_CANCELLED, NULL);
    finish(op, VK_ERR_CANCELLED, NULL);
    abort_op(op);
    op->holds--;
    release(op);
    return VK_OK;
}

size_t vk__router_pending(const vk_router *r)
{
    return r->op_count;
}

bool vk__router_connected(const vk_router *r)
{
    return r->map != NULL && !r->closing;
}

vk_status vk__router_stats(const vk_router *r, vk_cluster_stats *out)
{
    memset(out, 0, sizeof *out);
    out->slot_refreshes = r->slot_refreshes;
    out->moved_redirects = r->moved_redirects;
    out->ask_redirects = r->ask_redirects;
    return vk__slot_map_masters(r->map, out);
}
