/*
 * Cluster topology: which master serves which of the 16384 hash slots, a
 * connection pool per master, and the routing of commands and pipelines
 * with MOVED / ASK / TRYAGAIN / CLUSTERDOWN handled.
 *
 * cluster_slots.c  CRC16 key hashing and the slot map (built from
 *                  CLUSTER SHARDS or CLUSTER SLOTS, patched on MOVED)
 * cluster_keys.c   where a command's keys are, hence its slot
 * cluster_rules.c  what both routers decide alike: redirects, refusals,
 *                  retries, the map's request and its failures
 * cluster.c        the vk_cluster object: refresh, routing, redirects
 * cluster_pipeline.c  pipelines split by node and put back in order
 * cluster_router.c the same routing without I/O, over one engine per node
 *                  (the event-loop client and the bytes mode)
 */
#ifndef VK_CLUSTER_H
#define VK_CLUSTER_H

#include "engine/pool.h"

#define VK_CLUSTER_SLOTS 16384

/* ---- cluster_slots.c ------------------------------------------------------ */

/* CRC16 (XMODEM) of the key, or of its hash tag: the bytes between the
 * first '{' and the next '}' when that span is not empty. */
unsigned vk__cluster_key_slot(const char *key, size_t len);

/* A master node of a slot map. The pool is created on first use and shared
 * by every later map that still names the node. */
typedef struct vk_cluster_node {
    vk_endpoint endpoint;
    _Atomic(vk_pool *) pool;   /* a reference, or NULL until first use */
} vk_cluster_node;

/* An immutable (except for the lazily created pools) snapshot of the
 * topology, refcounted so that a caller can keep using the map it routed
 * with while a refresh installs the next one. */
typedef struct vk_slot_map {
    atomic_int refs;
    size_t node_count, node_cap;
    vk_cluster_node *nodes;
    /* owner[slot] is the index of the serving node plus one; 0: unassigned. */
    uint16_t owner[VK_CLUSTER_SLOTS];
} vk_slot_map;

vk_slot_map *vk__slot_map_ref(vk_slot_map *m);
/* Drops a reference; the last one releases the node pools' references. */
void vk__slot_map_unref(vk_slot_map *m);
/* A copy of m (pools shared) with room for one more node. */
vk_slot_map *vk__slot_map_copy(const vk_slot_map *m);
/* The index of the node at ep in m, adding it (without slots) when absent;
 * -1 when out of memory. */
int vk__slot_map_node(vk_slot_map *m, const vk_endpoint *ep);
/* Builds a map from a CLUSTER SHARDS (shards) or CLUSTER SLOTS reply of the
 * node at `from` (whose host stands in for an unknown endpoint). tls picks
 * the TLS port where the reply gives one. Pools are taken from `previous`
 * (may be NULL) for nodes it already knew. VK_ERR_PROTOCOL when the reply
 * cannot be understood. */
vk_status vk__slot_map_parse(vk_slot_map **out, const redisReply *reply, bool shards,
                             const vk_endpoint *from, bool tls,
                             const vk_slot_map *previous);
/* Number of slots that have an owner. */
size_t vk__slot_map_covered(const vk_slot_map *m);
/* The index of the node at ep in m, or -1. */
int vk__slot_map_find(const vk_slot_map *m, const vk_endpoint *ep);

/* ---- cluster_keys.c ----------------------------------------------------------- */

/* The slot of a command from a table of the common commands' key
 * positions (fixed positions, numkeys-style and STREAMS-style arguments):
 * a slot, VK_SLOT_NONE, VK_SLOT_UNKNOWN or VK_SLOT_CROSS (command.h). */
int vk__command_slot(int argc, const char *const *argv, const size_t *argvlen);
/* The slot of the keys in a COMMAND GETKEYS reply (VK_SLOT_NONE when it
 * lists none, VK_SLOT_CROSS when they differ). */
int vk__getkeys_slot(const redisReply *keys);

/* ---- cluster_rules.c ------------------------------------------------------------ */

/* A slot map older than this is reloaded on the next command. */
#define VK_CLUSTER_REFRESH_EVERY_MS 10000

/* A MOVED or ASK read from an error reply. */
typedef struct vk_cluster_redirect {
    bool ask;             /* ASK (one command, with ASKING), else MOVED */
    int slot;
    vk_endpoint target;
} vk_cluster_redirect;

/* "MOVED <slot> <host>:<port>" or "ASK ..." (an empty host is the host of
 * the node at `from`, which answered): true and *out filled. */
bool vk__cluster_parse_redirect(const redisReply *r, const vk_endpoint *from,
                                vk_cluster_redirect *out);
/* After a MOVED: a copy of m whose slot is served by the target (added to
 * the nodes when new), or NULL when m already says so or memory ran out. */
vk_slot_map *vk__slot_map_moved(const vk_slot_map *m, const vk_cluster_redirect *rd);

/* The requests that ask a node for the slot map: CLUSTER SHARDS, and
 * CLUSTER SLOTS where the server refuses SHARDS (an error reply). */
void vk__cluster_map_request(vk_command *cmd, bool shards);
/* The map in a reply to that request from the node at `from` (tls: pick
 * TLS ports), or the failure: the node's refusal, a reply that cannot be
 * understood, or a map without a served slot. */
vk_status vk__cluster_map_from_reply(vk_slot_map **out, const redisReply *r, bool shards,
                                     const vk_endpoint *from, bool tls,
                                     const vk_slot_map *previous);
/* No node could give a map: VK_ERR_IO "redis cluster: all nodes are
 * unreachable: <the detail set now>". */
vk_status vk__cluster_fail_unreachable(void);
/* A command whose keys are in more than one slot. */
vk_status vk__cluster_fail_crossslot(void);
/* COMMAND GETKEYS <cmd>, in memory of its own (*mem, to free). */
vk_status vk__cluster_getkeys_command(const vk_command *cmd, vk_command *out, void **mem);

/* The counters both routers keep, as metrics (type NULL: no label). */
void vk__cluster_count(vk_events *events, const char *name, const char *type);
/* A refusal, by its reply's first word: "tryagain", "clusterdown", ... */
void vk__cluster_count_refusal(vk_events *events, const redisReply *r);

/* One command's attempts so far, for the rules below. */
typedef struct vk_cluster_tries {
    int retries;              /* after connection failures */
    int redirects;            /* MOVED / ASK followed since the last refusal */
    int refusals;
    int64_t *refused_until;   /* when refusals stop being retried (0: none
                               * yet); a pipeline's commands share one */
    int64_t own_until;
} vk_cluster_tries;

static inline void vk__cluster_tries_init(vk_cluster_tries *t, int64_t *shared_until)
{
    *t = (vk_cluster_tries){0};
    t->refused_until = shared_until != NULL ? shared_until : &t->own_until;
}

typedef enum vk_cluster_step {
    VK_CLUSTER_ANSWER,        /* the reply (or failure) goes to the caller */
    VK_CLUSTER_FOLLOW,        /* a redirect: run it at the target, at once */
    VK_CLUSTER_AGAIN          /* run it again after a pause */
} vk_cluster_step;

typedef struct vk_cluster_next {
    vk_cluster_redirect redirect;   /* VK_CLUSTER_FOLLOW */
    int64_t pause_ms;               /* VK_CLUSTER_AGAIN */
    bool reload;                    /* VK_CLUSTER_AGAIN: reload the map first */
} vk_cluster_next;

/* What follows a reply from the node at `from`: a redirect is followed
 * (up to 16 in a row); a refusal (TRYAGAIN, CLUSTERDOWN, LOADING,
 * MASTERDOWN) is tried again for up to 5 s, CLUSTERDOWN with the map
 * reloaded; anything else is the answer. Redirects and refusals are
 * counted in events. */
vk_cluster_step vk__cluster_after_reply(const vk_config *cfg, vk_events *events,
                                        vk_cluster_tries *t, const redisReply *r,
                                        const vk_endpoint *from, int64_t now_ms,
                                        vk_cluster_next *next);
/* What follows a failure: another try, with the map reloaded, when the
 * command may be re-sent (vk__retry_may_resend) and the retry budget
 * allows; else the failure is the answer (then see
 * vk__cluster_reload_due_after). */
vk_cluster_step vk__cluster_after_failure(const vk_config *cfg, vk_cluster_tries *t,
                                          bool may_resend, vk_cluster_next *next);

/* A command failed for good with st: when a node failed (its connection,
 * or its reconnect rate limit), the map may be out of date, and the time
 * of the last load is moved back so that the next reload is due within
 * 250 ms (not at once: a dead node fails every command sent to it until
 * the cluster promotes its replica, and a reload after each would keep the
 * nodes busy). Returns the new time of the last load. */
int64_t vk__cluster_reload_due_after(vk_status st, int64_t refreshed_ms, int64_t now_ms);

/* ---- cluster.c ------------------------------------------------------------------ */

typedef struct vk_cluster vk_cluster;

/* One master of the current map, for the snapshot. */
typedef struct vk_cluster_master {
    char address[300];          /* vk__format_endpoint() form */
    int slots;                  /* slots it serves */
} vk_cluster_master;

/* Counters and the current masters, for the snapshot. */
typedef struct vk_cluster_stats {
    uint64_t slot_refreshes;    /* slot maps loaded */
    uint64_t moved_redirects;
    uint64_t ask_redirects;
    size_t masters;             /* masters in the current map */
    vk_cluster_master *master;  /* masters entries (malloc'd), NULL if none */
} vk_cluster_stats;

/* Allocates the topology for a prepared config (its cluster addresses are
 * the seeds). params is the template of every node's pool: its endpoint is
 * ignored, the rest (cfg, tls, events, credentials) is borrowed from the
 * client and shared by every node, so that a new IAM token reaches all of
 * them. No I/O: vk__cluster_connect() loads the first map. */
vk_status vk__cluster_new(vk_cluster **out, const vk_pool_params *params);
/* Stops using every node and frees. NULL-safe. */
void vk__cluster_free(vk_cluster *cl);
/* Loads the slot map from the known masters or, failing those, from each
 * seed in turn, and opens the masters' pools (create-ping-swap: the old
 * map stays in service when this fails). */
vk_status vk__cluster_connect(vk_cluster *cl, vk_context *ctx);
/* Re-authenticates every node pool's idle connections with the current
 * credentials (vk__pool_reauth_idle). */
void vk__cluster_reauth_idle(vk_cluster *cl, vk_context *ctx);
/* Reports the gauges of the masters' pools to the metrics sink now. */
void vk__cluster_report_pool_gauges(vk_cluster *cl);
/* Drops the map and closes every pool. Idempotent. */
void vk__cluster_close(vk_cluster *cl);
/* Runs one command on the master of its keys' slot (any master when it
 * has none), following MOVED and ASK, retrying TRYAGAIN / CLUSTERDOWN /
 * LOADING / MASTERDOWN for up to a few seconds (a resharding or failover
 * settles meanwhile; cluster.c says why) and connection failures per the
 * client's retry policy (a write whose request was sent is never re-sent).
 * Multi-key commands across slots fail with VK_ERR_INVALID_ARGUMENT. */
vk_status vk__cluster_command(vk_cluster *cl, redisReply **reply, vk_command *cmd,
                              vk_context *ctx);
/* Runs one command on the master at ep (SCAN's walk of every master):
 * refusals and failures are retried as vk__cluster_command() does, a
 * redirect is returned as the reply. VK_ERR_IO "redis cluster: node <ep>
 * is not in the slot map" when the map in service (reloaded after a
 * failure) no longer has that node. */
vk_status vk__cluster_command_at(vk_cluster *cl, redisReply **reply, const vk_command *cmd,
                                 const vk_endpoint *ep, vk_context *ctx);
/* Runs count commands, one batch per node, and stores each reply at its
 * command's index (redirected commands are re-run one by one). */
vk_status vk__cluster_pipeline(vk_cluster *cl, size_t count, vk_command *cmds,
                               redisReply **replies, vk_context *ctx);
/* ---- cluster.c: what cluster_pipeline.c shares ------------------------------- */

/* The map in service (a new reference; NULL when not connected) and, when
 * version is not NULL, its version. */
vk_slot_map *vk__cluster_map(vk_cluster *cl, uint64_t *version);
/* The pool of node i of m (a new reference), opened on first use. */
vk_status vk__cluster_node_pool(vk_cluster *cl, vk_slot_map *m, size_t i, vk_pool **out,
                                vk_context *ctx);
/* The node index a slot goes to; a random serving master for VK_SLOT_NONE.
 * -1 when the slot has no master in m. */
int vk__cluster_node_for_slot(const vk_slot_map *m, int slot);
/* The periodic refresh, done lazily by the first command that finds the
 * map older than 10 s; the others go on with the map they have. */
void vk__cluster_refresh_when_due(vk_cluster *cl, vk_context *ctx);
/* Fills cmd->slot once (asking the server when the table does not know
 * it); VK_ERR_INVALID_ARGUMENT "CROSSSLOT ..." when its keys differ. */
vk_status vk__cluster_command_slot(vk_cluster *cl, vk_command *cmd, vk_context *ctx);
/* A connection (and a reference on its pool) to the master of slot (any
 * master for VK_SLOT_NONE), in the map in service, and that node
 * (node_ep, may be NULL); for a caller that keeps one connection for
 * several commands (transactions, sessions). */
vk_status vk__cluster_slot_conn(vk_cluster *cl, int slot, vk_pool **pool, vk_conn **conn,
                                vk_endpoint *node_ep, vk_context *ctx);
/* True when r is a MOVED or ASK from the node at `from`: fills *out,
 * counts it, and applies a MOVED to the map. */
bool vk__cluster_take_redirect(vk_cluster *cl, const redisReply *r, const vk_endpoint *from,
                               vk_cluster_redirect *out);
/* Runs a command on the master of its slot (cmd->slot, known by now;
 * VK_SLOT_NONE: any), following redirects and retrying as
 * vk__cluster_command() does; it starts at `first` when the command was
 * already redirected (in a pipeline). *refused_until (0 until the first
 * refusal sets it; NULL: the command's own) is when refusals stop being
 * retried: a pipeline shares one, so that its commands together wait no
 * longer than one command would. */
vk_status vk__cluster_route(vk_cluster *cl, const vk_command *cmd,
                            const vk_cluster_redirect *first, redisReply **reply,
                            int64_t *refused_until, vk_context *ctx);

/* After fork() in the child: drops the parent's connections without a byte
 * on the wire; the next command loads the map again. */
void vk__cluster_after_fork(vk_cluster *cl);
/* True while a slot map is in service. */
bool vk__cluster_connected(vk_cluster *cl);
/* Fills out (its master array is the caller's to free); VK_ERR_NOMEM. */
vk_status vk__cluster_stats(vk_cluster *cl, vk_cluster_stats *out);
/* The masters of m (NULL: none) into out's master array (cluster_rules.c). */
vk_status vk__slot_map_masters(const vk_slot_map *m, vk_cluster_stats *out);

#endif /* VK_CLUSTER_H */
