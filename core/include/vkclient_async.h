/*
 * vkclient_async.h: the event-loop client.
 *
 * A vk_async runs commands and pipelines without blocking: each call queues
 * the operation and returns at once, and its completion function runs later
 * on the loop's thread with the reply or the failure. All operations share
 * one multiplexed connection to the server: requests are written back to
 * back (coalesced into as few writes as possible) and replies are matched in
 * order, so many operations are in flight at once.
 *
 * The client owns its sockets and TLS; the host's event loop only tells it
 * when a descriptor is ready and when its timer is due, through a
 * vk_loop_adapter (the shape of hiredis's adapters). Adapters for libuv and
 * libevent come as headers: <vkclient/libuv.h> and <vkclient/libevent.h>.
 *
 * Behaviour is the blocking client's (vkclient.h): the same config and
 * validation texts, handshake (HELLO/AUTH, SELECT, current IAM token, a
 * new token's AUTH sent in line with the requests), refused stateful
 * commands, retry policy (a write whose reply was lost is never re-sent)
 * and reconnect rate limit, and the same error codes and texts. The
 * operations waiting for a connection that cannot be opened fail with the
 * reason; inside the rate limit's window they fail without a connection
 * attempt, with VK_ERR_RECONNECT_RATE_LIMITED. A completion never runs
 * inside the call that queued its operation (it waits for the loop's next
 * turn), except for an empty pipeline. Operations run in the order they were
 * queued, a retried one included. The read timeout applies to the
 * connection: no reply for that long while replies are awaited fails it.
 *
 * Topologies: standalone, Sentinel and Cluster. In Sentinel mode the
 * client asks the sentinels
 * where the master is before each connection to it (on connections of its
 * own, with the sentinels' credentials; the one that answers is asked first
 * next time and its list of sentinels is merged in), checks that the node
 * says it is a master (ROLE), and while connected stays subscribed to the
 * first sentinel's +switch-master and +promoted-slave (as the blocking
 * client's watcher does) and asks the sentinels again about once a second.
 * It leaves a node that is no longer the master, or that answers READONLY
 * or MASTERDOWN (that command is retried on the new master by the retry
 * budget): requests already written get their replies, the next go to the
 * new master. The texts of a failed discovery are the
 * blocking client's; a switch is logged and counted as there.
 *
 * In Cluster mode the client loads the slot map (CLUSTER SHARDS, or
 * CLUSTER SLOTS before 7.0) from the seeds when the first operation needs
 * it, and keeps one multiplexed connection per master. Routing is the
 * blocking client's, from the same rules: a command goes to the master of
 * its keys' slot (COMMAND GETKEYS where the key table does not know the
 * command; keys in more than one slot: VK_ERR_INVALID_ARGUMENT "CROSSSLOT
 * ..." from vk_async_command, nothing queued), MOVED and ASK are followed,
 * TRYAGAIN / CLUSTERDOWN / LOADING / MASTERDOWN are retried for up to 5 s,
 * and a command that failed with its node is sent again (by the retry
 * policy) once the map is reloaded. The map is reloaded every 10 s while
 * in use, after a MOVED, a CLUSTERDOWN or a node's failure; commands go on
 * with the map they have meanwhile. A pipeline is split by node (one
 * write per node, the replies put back in order); a command of it that
 * was redirected or refused runs again alone, in order. MULTI/EXEC in a
 * cluster pipeline is refused, as in the blocking client. The texts (for
 * example "redis cluster: all nodes are unreachable: ...") and metrics are
 * the blocking client's.
 *
 * Threads: a vk_async belongs to the thread of its loop. Every function
 * must be called on that thread; a call from another thread is refused with
 * VK_ERR_INVALID_ARGUMENT ("an event-loop client is used only on its loop's
 * thread"). Completions run on that thread, from vk_async_handle_io(),
 * vk_async_handle_timer(), vk_async_cancel() or vk_async_free().
 */
#ifndef VKCLIENT_ASYNC_H
#define VKCLIENT_ASYNC_H

#include "vkclient.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vk_async vk_async;
/* One descriptor the client watches (a connection's socket). */
typedef struct vk_async_io vk_async_io;

/* Readiness, for vk_loop_adapter.watch() and vk_async_handle_io(). */
#define VK_EV_READ 1
#define VK_EV_WRITE 2

#define VK_LOOP_ADAPTER_VERSION 1

/*
 * What the client asks of the host's loop. The adapter keeps what it needs
 * per descriptor and for the timer in the `slot` the client hands it (NULL
 * the first time; the client keeps whatever the adapter stores there).
 */
typedef struct vk_loop_adapter {
    unsigned int version;   /* VK_LOOP_ADAPTER_VERSION */
    void *data;             /* the adapter's own: its loop */
    /* Watch fd for `events` (VK_EV_READ | VK_EV_WRITE), replacing what was
     * watched before; when fd becomes ready, call
     * vk_async_handle_io(io, <the ready events>). events 0: stop watching
     * and release *slot (set it to NULL); the client closes fd right after
     * and never uses this io again. Returns 0, or -1 when the loop refuses
     * (the connection then fails with VK_ERR_IO). */
    int (*watch)(void *data, vk_async_io *io, int fd, int events, void **slot);
    /* Call vk_async_handle_timer(client) once, ms (>= 0) milliseconds from
     * now, replacing any earlier request; ms < 0: cancel it. release != 0
     * (from vk_async_free, with ms < 0): also release *slot. Returns 0 or
     * -1. */
    int (*timer)(void *data, vk_async *client, int64_t ms, int release, void **slot);
} vk_loop_adapter;

/*
 * New: copies cfg, normalises and validates it (the blocking client's
 * texts), and copies the adapter. No I/O: the connection opens on the first
 * operation. On failure *out is NULL. A host name is looked up on a
 * resolver thread whose descriptor the loop watches (the loop never waits
 * for it), within the dial timeout. With GCP IAM auth the token refresh
 * runs on a thread of its own, which fetches the first token at once:
 * operations wait for it (within the dial timeout: "dial <node>: waiting
 * for the first GCP IAM token"), and a fetch that fails fails them with
 * vk_client_new()'s code and text; VK_REFRESH_DRIVEN is refused
 * (VK_ERR_INVALID_CONFIG).
 */
VK_API vk_status vk_async_new(vk_async **out, const vk_config *cfg,
                              const vk_loop_adapter *adapter);
/*
 * Closes the connection and releases the client. Every operation not yet
 * complete runs its completion with VK_ERR_CANCELLED ("client closed")
 * before this returns. Called from inside a completion (or an adapter
 * callback), all of this happens once that call returns to the client;
 * meanwhile new operations are refused with VK_ERR_NIL_CLIENT. NULL-safe.
 */
VK_API void vk_async_free(vk_async *client);

/* For the adapter: io's descriptor is ready for `events` (VK_EV_*). */
VK_API void vk_async_handle_io(vk_async_io *io, int events);
/* For the adapter: the timer requested through vk_loop_adapter.timer is due. */
VK_API void vk_async_handle_timer(vk_async *client);

/*
 * A completion. status VK_OK: reply is the result and belongs to the
 * function (release it with vk_reply_free); an error reply of the server is
 * a reply of type VK_REPLY_ERROR, as with vk_client_command(). Otherwise
 * reply is NULL and vk_last_error() gives the full message while the
 * function runs. It runs exactly once per operation.
 */
typedef void (*vk_async_fn)(void *userdata, vk_status status, vk_reply *reply);

/*
 * Queues one command (argv with lengths, binary safe; copied). Refused at
 * once, without a completion, when the arguments are invalid or the command
 * would change the state of the shared connection (VK_ERR_COMMAND_NOT_ALLOWED,
 * as vk_client_command()). *id (when id is not NULL) names the operation for
 * vk_async_cancel(); ids are never reused by a client.
 *
 * A blocking command (BLPOP, XREAD BLOCK, WAIT, ...; see
 * vk_command_is_blocking) waits for its own timeout plus the read timeout,
 * on a connection of its own to the node (a lane): the operations queued
 * after it on the shared connection do not wait for it. Each blocking
 * command in flight has its lane (n of them: n connections). A lane is
 * kept for the next blocking command once its command completes (up to 8
 * idle per client), and closed when its command is cancelled, which ends
 * the wait on the server at once. In Sentinel mode a lane goes to the master last
 * found; before one is found, and when the lane's node answers READONLY or
 * MASTERDOWN (the command is then sent again, once, where the shared
 * connection finds the master), the command waits on the shared
 * connection, in line. A pipeline holding a blocking command runs on a
 * lane the same way.
 */
VK_API vk_status vk_async_command(vk_async *client, int argc, const char *const *argv,
                                  const size_t *argvlen, vk_async_fn fn, void *userdata,
                                  uint64_t *id);

/* A pipeline for this client: append with vk_pipeline_append() as usual
 * (same rules, MULTI...EXEC kept whole), run with vk_async_pipeline_exec();
 * vk_pipeline_exec() refuses it. Free with vk_pipeline_free(). */
VK_API vk_status vk_async_pipeline_new(vk_pipeline **out, vk_async *client);
/* Queues every command of the pipeline at once and empties it (it can be
 * filled again at once). The completion gets an array reply with one
 * element per command, as vk_pipeline_exec() returns. A pipeline is never
 * re-sent once any of it was written. A transaction (MULTI...EXEC) is
 * sent alone: requests queued after it wait for its replies. A transaction
 * pipeline (vk_pipeline_set_transaction) completes with EXEC's array, or
 * with the transaction's failure as vk_pipeline_exec() gives it; in
 * Cluster mode it is refused (VK_ERR_COMMAND_NOT_ALLOWED). An empty
 * pipeline completes (empty array) before this returns. */
VK_API vk_status vk_async_pipeline_exec(vk_pipeline *pipeline, vk_async_fn fn,
                                        void *userdata, uint64_t *id);

/*
 * Cancels an operation: its completion runs with VK_ERR_CANCELLED before
 * this returns. When its request was already written, its reply is read
 * and dropped when it comes, so the connection stays in step; a blocking
 * command's lane is closed instead (the server's wait ends). A written
 * command that waits without a limit (BLPOP k 0) on the shared connection
 * (see vk_async_command) closes it, and the requests behind it are sent
 * again or fail (VK_ERR_IO) by the retry policy. An id that
 * is not in flight (completed, or never given) is VK_ERR_INVALID_ARGUMENT.
 */
VK_API vk_status vk_async_cancel(vk_async *client, uint64_t id);

/* 1 while the connection is open and ready (handshake done), else 0; in
 * Cluster mode, while a slot map is in service. */
VK_API int vk_async_is_connected(const vk_async *client);
/* Operations queued and not yet complete. */
VK_API size_t vk_async_pending(const vk_async *client);
/* A status snapshot, read with the vk_snapshot_ functions of vkclient.h:
 * connected, the mode ("standalone", "sentinel" or "cluster"), the node
 * (in Sentinel mode the master last found, NULL before; NULL in Cluster
 * mode), the master switches followed, in Cluster mode the masters of the
 * slot map and the maps and redirects counted, and the token refresh state
 * (GCP IAM). Free it with vk_snapshot_free. */
VK_API vk_status vk_async_snapshot(vk_snapshot **out, vk_async *client);
/* With the config's event delivery VK_EVENTS_QUEUED: delivers the events
 * queued by background threads (the GCP IAM refresh) to the logger and
 * metrics sinks, on this thread, at most max (0: all); the events of the
 * client's own calls reach the sinks at once. Returns how many were
 * delivered, or -1 (NULL client, another thread). */
VK_API int vk_async_poll_events(vk_async *client, int max);

/*
 * Runs a script (vkclient.h, vk_script_run) without blocking: EVALSHA, and
 * on NOSCRIPT the same call as EVAL on the node the keys route to. fn runs
 * once with the final reply (the script's result or its error reply), as
 * for vk_async_command; argument errors and CROSSSLOT are returned at once
 * without a completion. The script may be freed while the operation runs.
 * *id names the whole run for vk_async_cancel, whichever of its two
 * requests is in flight.
 */
VK_API vk_status vk_async_script_run(vk_async *client, const vk_script *script, int nkeys,
                                     const char *const *keys, const size_t *keylens,
                                     int nargs, const char *const *args,
                                     const size_t *arglens, vk_async_fn fn, void *userdata,
                                     uint64_t *id);

/*
 * Scans (vk_scan of vkclient.h) on an event-loop client: the same
 * options, pages, cluster walk and texts as vk_scan_new / vk_scan_new_key
 * / vk_scan_next, one page per call, its completion with the page's array
 * reply (or the failure; a server error reply is VK_ERR_SERVER, as from
 * vk_scan_next). One page is in flight at a time (a second call meanwhile
 * is VK_ERR_INVALID_ARGUMENT); a failed page leaves the cursor where it
 * was. vk_scan_done and vk_scan_free serve these scans; vk_scan_next
 * refuses them (VK_ERR_INVALID_ARGUMENT). vk_scan_free with a page in
 * flight cancels it: the completion runs with VK_ERR_CANCELLED before it
 * returns. A scan outlives its client: freeing the client completes the
 * page in flight with VK_ERR_CANCELLED and later pages fail with
 * VK_ERR_NIL_CLIENT. In Cluster mode a key-space scan walks every master
 * of the router's slot map (loaded first when there is none yet).
 */
VK_API vk_status vk_async_scan_new(vk_scan **out, vk_async *client, const char *match,
                                   size_t matchlen, int64_t count, const char *type);
VK_API vk_status vk_async_scan_new_key(vk_scan **out, vk_async *client, const char *command,
                                       const char *key, size_t keylen, const char *match,
                                       size_t matchlen, int64_t count);
VK_API vk_status vk_async_scan_next(vk_scan *scan, vk_async_fn fn, void *userdata);

/* ------------------------------------------------------------------------ */
/* Bytes mode: the host owns the sockets                                    */
/* ------------------------------------------------------------------------ */

/*
 * A vk_hosted is the same client for a host that does its own I/O (an
 * OpenResty worker with cosockets, a test driver): the client never makes
 * a system call for the connection; it says what it wants done and takes
 * the bytes back. Every decision (handshake, retries, timeouts, matching
 * replies) is the client's, as in vk_async. Same config, same operations,
 * same completions and texts; every topology; one thread.
 *
 * The host's loop: after any call, read what the client wants of each of
 * its connections (vk_hosted_connection_count, vk_hosted_get_wants; one
 * connection in the standalone topology, more where a client talks to
 * several nodes (Sentinel, Cluster) or a blocking command has a lane of its
 * own) and act on it:
 *   - a socket whose connection id is no longer wanted: close it;
 *   - connect: open `conn` to host:port (or the unix path), with TLS when
 *     tls is set (verifying server_name), then vk_hosted_connected() or
 *     vk_hosted_connect_failed();
 *   - output_len > 0: write those bytes on conn, then vk_hosted_wrote()
 *     with how many went out;
 *   - read: conn is open: read from it and give what arrives to
 *     vk_hosted_received(); a failed or closed socket goes to
 *     vk_hosted_lost().
 * And call vk_hosted_tick() within vk_hosted_tick_in_ms() (-1: no need).
 * Events that name a connection no longer wanted are ignored, so a reader
 * that finishes after its connection was replaced is harmless.
 */
typedef struct vk_hosted vk_hosted;

typedef struct vk_hosted_wants {
    uint64_t conn;              /* the connection's id (never 0, never reused) */
    int connect;                /* 1: it is to be opened */
    const char *host;           /* its node: host and port, or ... */
    int port;
    const char *path;           /* ... a unix socket path (NULL otherwise) */
    int tls;                    /* 1: TLS over it */
    const char *server_name;    /* the name to verify (TLS) */
    const char *output;         /* bytes to write on it now */
    size_t output_len;
    int read;                   /* 1: it is open: keep reading it */
} vk_hosted_wants;

/* As vk_async_new(), without a loop. */
VK_API vk_status vk_hosted_new(vk_hosted **out, const vk_config *cfg);
/* As vk_async_free(). */
VK_API void vk_hosted_free(vk_hosted *client);
/* The connections the client wants now. */
VK_API size_t vk_hosted_connection_count(const vk_hosted *client);
/* What the client wants of its connection number i (< the count); the
 * pointers stay valid until the next call on the client.
 * VK_ERR_INVALID_ARGUMENT when there is no such connection. */
VK_API vk_status vk_hosted_get_wants(const vk_hosted *client, size_t i,
                                     vk_hosted_wants *wants);
/* Call vk_hosted_tick() within this many ms; -1: no need. */
VK_API int64_t vk_hosted_tick_in_ms(const vk_hosted *client);

VK_API void vk_hosted_connected(vk_hosted *client, uint64_t conn);
/* status VK_ERR_IO, VK_ERR_TLS or VK_ERR_TIMEOUT; why says what failed
 * ("connection refused"); the operations waiting for the connection get
 * "<status text>: dial <node>: <why>" (TLS: "handshake with <node> failed:
 * <why>"), as from the blocking client. */
VK_API void vk_hosted_connect_failed(vk_hosted *client, uint64_t conn, vk_status status,
                                     const char *why);
VK_API void vk_hosted_wrote(vk_hosted *client, uint64_t conn, size_t n);
VK_API void vk_hosted_received(vk_hosted *client, uint64_t conn, const char *bytes,
                               size_t len);
/* The connection failed or closed ("read <node>: <why>"). */
VK_API void vk_hosted_lost(vk_hosted *client, uint64_t conn, vk_status status,
                           const char *why);
VK_API void vk_hosted_tick(vk_hosted *client);

/* As the vk_async_ functions of the same names. */
VK_API vk_status vk_hosted_command(vk_hosted *client, int argc, const char *const *argv,
                                   const size_t *argvlen, vk_async_fn fn, void *userdata,
                                   uint64_t *id);
VK_API vk_status vk_hosted_pipeline_new(vk_pipeline **out, vk_hosted *client);
VK_API vk_status vk_hosted_pipeline_exec(vk_pipeline *pipeline, vk_async_fn fn,
                                         void *userdata, uint64_t *id);
VK_API vk_status vk_hosted_script_run(vk_hosted *client, const vk_script *script, int nkeys,
                                      const char *const *keys, const size_t *keylens,
                                      int nargs, const char *const *args,
                                      const size_t *arglens, vk_async_fn fn, void *userdata,
                                      uint64_t *id);
VK_API vk_status vk_hosted_cancel(vk_hosted *client, uint64_t id);
VK_API int vk_hosted_is_connected(const vk_hosted *client);
VK_API vk_status vk_hosted_snapshot(vk_snapshot **out, vk_hosted *client);
VK_API size_t vk_hosted_pending(const vk_hosted *client);
/* As vk_async_poll_events(). */
VK_API int vk_hosted_poll_events(vk_hosted *client, int max);
/* Scans, as the vk_async_scan_ functions. */
VK_API vk_status vk_hosted_scan_new(vk_scan **out, vk_hosted *client, const char *match,
                                    size_t matchlen, int64_t count, const char *type);
VK_API vk_status vk_hosted_scan_new_key(vk_scan **out, vk_hosted *client, const char *command,
                                        const char *key, size_t keylen, const char *match,
                                        size_t matchlen, int64_t count);
VK_API vk_status vk_hosted_scan_next(vk_scan *scan, vk_async_fn fn, void *userdata);

/*
 * Connection reuse: a keepalive pool of the host's (nginx's cosocket pool:
 * sock:connect with pool = name, sock:getreusedtimes(), sock:setkeepalive).
 * The client decides which connection may be kept and under which name;
 * the host keeps them and hands them back.
 *
 * Pool names. A connection fit for reuse was opened to the same node, with
 * the same TLS server name, db, protocol and user, and logged in with the
 * credentials the client has now. The name says all of that: node
 * (host:port or unix:path), TLS server name ("-" without TLS), db,
 * protocol, user, and the credentials generation as "cred=<client>.<n>":
 * <client> is a number of the client's own in this process (two clients
 * never share a pool: their passwords may differ) and <n> moves on with
 * every change of its credentials (a new GCP IAM token), so a connection
 * logged in with old credentials is never taken again. No secret is in
 * it. For example "vkclient|node=10.0.0.5:6379|tls=-|db=2|proto=2|
 * cred=1.3|user=app". The sentinels' connections are never pooled.
 *
 * Opening: for a connection whose wants say connect, vk_hosted_pool_name()
 * names the pool to take it from. When the host takes one from there
 * (ngx: getreusedtimes() > 0) it reports vk_hosted_connected_reused()
 * instead of vk_hosted_connected(): the handshake (HELLO/AUTH, SELECT,
 * PING) is not sent again, and a TLS connection is already through its
 * TLS handshake (the host skips it). In Sentinel mode ROLE is still
 * asked. A token newer than the connection's name is sent (AUTH) in line
 * before the first request.
 *
 * Giving up. The client gives a connection up clean only when it is
 * ready (handshake done), nothing is in flight (no reply awaited, not
 * even of a cancelled request; no blocking command), nothing is queued
 * or left to write, it is not subscribed nor in a transaction, it has not
 * failed, and its credentials are current. Such a connection may go to
 * the pool; any other one the host must close, never pool:
 *   - vk_hosted_release(): the host would put conn away (its driver goes
 *     idle). VK_OK when conn is clean (with credentials replaced since it
 *     logged in, their AUTH goes first): the client writes a PING on it and,
 *     once the reply is read (unless an operation was queued meanwhile,
 *     which keeps the connection), gives it up: conn leaves the wants.
 *     The PING lets a host whose read cannot be interrupted (a cosocket
 *     read ends only with data or by closing) get its reader back: the
 *     reader returns with the reply, and after handing it over
 *     (vk_hosted_received) finds vk_hosted_pool_name(conn) set: it puts
 *     the socket in that pool and stops reading. Otherwise
 *     VK_ERR_INVALID_ARGUMENT, and nothing changes.
 *   - a connection the client leaves on its own (a lane beyond those it
 *     keeps idle, a node that left the cluster's slot map): when it was
 *     clean, vk_hosted_pool_name(conn) names the pool it may go to.
 * The client remembers the last 32 connections given up clean.
 */
/* The keepalive pool of connection conn: one to be opened (take it from
 * there), or one given up clean (put it there). NULL otherwise: an open
 * connection still wanted, one given up that must be closed, or one that
 * is never pooled. Valid until the next call on the client. */
VK_API const char *vk_hosted_pool_name(const vk_hosted *client, uint64_t conn);
/* Instead of vk_hosted_connected(): conn was taken from its pool. For a
 * connection that has no pool (vk_hosted_pool_name() NULL) the dial fails
 * (VK_ERR_IO "closed: the connection has no keepalive pool"): close it. */
VK_API void vk_hosted_connected_reused(vk_hosted *client, uint64_t conn);
/* Gives conn up for the pool once a PING's reply is in (see above). */
VK_API vk_status vk_hosted_release(vk_hosted *client, uint64_t conn);

/* ------------------------------------------------------------------------ */
/* Distributed lock on event-loop and hosted clients                        */
/* ------------------------------------------------------------------------ */

/*
 * The lock of vkclient.h (SEMANTICS §4), driven without blocking: the same
 * keys, values, fencing counters, scripts, quorum, drift allowance, retry
 * rule and texts, decided by the same code, so a lock taken here excludes
 * holders of the blocking API in every language and the other way round.
 *
 * A manager spans one client (a lock on one node) or n independent ones
 * (a Redlock quorum, majority of n). Each node's part runs on its client's
 * connection, multiplexed with everything else on it; the nodes of one
 * attempt are asked at once, not one after the other. The waits between
 * tries and automatic renewal run on the first (live) client's timer.
 *
 * Threads and lifetime: as the clients: everything on the loop's thread.
 * The manager, its handles and its running operations keep what they
 * need, so they may be freed in any order. A client may be freed while
 * the manager lives: from then on its node fails as a freed client does
 * (VK_ERR_NIL_CLIENT; a majority of the others still decides), and an
 * acquisition waiting between tries on its timer ends with
 * VK_ERR_CANCELLED; waits then run on the next client. The handles are vk_lock (vkclient.h): vk_lock_validity_ms,
 * vk_lock_fencing_token, vk_lock_key, vk_lock_is_lost, vk_lock_auto_renew
 * and vk_lock_free serve them; vk_lock_unlock and vk_lock_extend refuse
 * them (VK_ERR_INVALID_ARGUMENT), as the vk_async_lock_ functions refuse
 * handles of a blocking manager.
 */
typedef struct vk_async_lock_manager vk_async_lock_manager;

/* A manager over n event-loop clients (n >= 1, all on one thread). */
VK_API vk_status vk_async_lock_manager_new(vk_async_lock_manager **out,
                                           vk_async *const *clients, size_t n);
/* The same over hosted (bytes mode) clients. */
VK_API vk_status vk_hosted_lock_manager_new(vk_async_lock_manager **out,
                                            vk_hosted *const *clients, size_t n);
/* Handles and running operations keep what they need. NULL-safe. */
VK_API void vk_async_lock_manager_free(vk_async_lock_manager *manager);

/* An acquisition's completion. status VK_OK: lock is the handle, owned by
 * the function (vk_lock_free), or NULL when a try found the lock taken.
 * Otherwise lock is NULL and vk_last_error() has the full text. */
typedef void (*vk_async_lock_fn)(void *userdata, vk_status status, vk_lock *lock);
/* An unlock's or extend's completion. */
typedef void (*vk_async_done_fn)(void *userdata, vk_status status);

/* One attempt with the default options (vk_lock_manager_try_lock):
 * contention completes with VK_OK and a NULL lock. Argument errors (a NULL
 * manager or fn, an empty key) are returned at once, without a completion;
 * otherwise the completion runs exactly once, never inside this call.
 * *id (when id is not NULL) names the acquisition for
 * vk_async_lock_cancel; ids are never reused by a manager. */
VK_API vk_status vk_async_lock_try(vk_async_lock_manager *manager, const char *key,
                                   size_t keylen, vk_async_lock_fn fn, void *userdata,
                                   uint64_t *id);
/* Tries per opts (NULL: defaults), waiting retry_delay_ms (jittered)
 * between tries on the loop; contention after the last try is
 * VK_ERR_LOCK_ACQUIRE (vk_lock_manager_acquire). With opts->auto_renew the
 * handle comes back renewing. Invalid options are returned at once. */
VK_API vk_status vk_async_lock_acquire(vk_async_lock_manager *manager, const char *key,
                                       size_t keylen, const vk_lock_options *opts,
                                       vk_async_lock_fn fn, void *userdata, uint64_t *id);
/* Cancels an acquisition: its completion runs with VK_ERR_CANCELLED before
 * this returns. Waiting between tries, it ends there; with an attempt's
 * requests out, it still reads their replies and gives back on every node
 * whatever that attempt took, so a cancelled acquisition never leaves a
 * lock behind. An id not in flight (completed, or never given) is
 * VK_ERR_INVALID_ARGUMENT. */
VK_API vk_status vk_async_lock_cancel(vk_async_lock_manager *manager, uint64_t id);
/* vk_lock_unlock's release and results (VK_ERR_LOCK_NOT_HELD when it
 * expired or was taken over); renewal stops at once. */
VK_API vk_status vk_async_lock_unlock(vk_lock *lock, vk_async_done_fn fn, void *userdata);
/* vk_lock_extend's reset of the expiry to expiry_ms, only while it is ours. */
VK_API vk_status vk_async_lock_extend(vk_lock *lock, int64_t expiry_ms,
                                      vk_async_done_fn fn, void *userdata);

#ifdef __cplusplus
}
#endif

#endif /* VKCLIENT_ASYNC_H */
