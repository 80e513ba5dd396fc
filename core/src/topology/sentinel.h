/*
 * Sentinel topology: finding the master of a named group through the
 * sentinels, and following its failovers.
 *
 * sentinel_link.c  one plain connection to one sentinel (requests, replies
 *                  and pub/sub messages, with waits that do not break it)
 * sentinel.c       the sentinel list, master discovery, list refresh
 * sentinel_watch.c the background subscriber to +switch-master
 */
#ifndef VK_SENTINEL_H
#define VK_SENTINEL_H

#include "net/transport.h"

/* ---- sentinel_link.c ----------------------------------------------------- */

/* A connection to a sentinel. Unlike a pooled vk_conn it can wait for a
 * pub/sub message for any length of time, and give up waiting, without the
 * connection being considered broken. */
typedef struct vk_sentinel_link {
    vk_transport t;
    redisReader *reader;
    vk_reply_budget budget;
} vk_sentinel_link;

/* Connects (TLS like the data nodes) and authenticates with the sentinels'
 * own username/password when one is configured. */
vk_status vk__sentinel_link_open(vk_sentinel_link *link, const vk_endpoint *ep,
                                 const vk_config *cfg, vk_tls *tls, vk_context *ctx);
/* Sends one command of NUL-terminated arguments. */
vk_status vk__sentinel_link_send(vk_sentinel_link *link, int argc, const char *const *argv,
                                 vk_context *ctx);
/* Reads one reply or pub/sub message (within the read timeout). */
vk_status vk__sentinel_link_read(vk_sentinel_link *link, redisReply **out, vk_context *ctx);
/* send + read. */
vk_status vk__sentinel_link_command(vk_sentinel_link *link, redisReply **out, int argc,
                                    const char *const *argv, vk_context *ctx);
/* Waits until something can be read or deadline_us passes: VK_OK when
 * readable, VK_ERR_TIMEOUT when not (the link stays usable), or the ctx's
 * failure. */
vk_status vk__sentinel_link_wait(vk_sentinel_link *link, int64_t deadline_us,
                                 vk_context *ctx);
/* graceful: a TLS close_notify is sent first (false after fork). NULL-safe
 * for a link that was never opened. */
void vk__sentinel_link_close(vk_sentinel_link *link, bool graceful);

/* ---- sentinel.c ------------------------------------------------------------ */

typedef struct vk_sentinel vk_sentinel;

/* Reads the sentinel settings of a prepared cfg; tls and ev are borrowed. */
vk_status vk__sentinel_new(vk_sentinel **out, const vk_config *cfg, vk_tls *tls,
                           vk_events *ev);
/* Stops the watcher and frees. NULL-safe. */
void vk__sentinel_free(vk_sentinel *s);
/* Asks each known sentinel in turn for the master's address; the first
 * that answers moves to the front of the list, and its view of the other
 * sentinels is merged into the list. Errors:
 * - VK_ERR_SERVER "redis sentinel: master \"<name>\" is unknown to every
 *   reachable sentinel" when sentinels answered but none knows the name;
 * - VK_ERR_IO "redis sentinel: all sentinels are unreachable: <cause>". */
vk_status vk__sentinel_discover(vk_sentinel *s, vk_endpoint *out, vk_context *ctx);
/* Asks one sentinel (on an open link) for the master's address.
 * *known is false when that sentinel does not know the name. */
vk_status vk__sentinel_ask_master(vk_sentinel *s, vk_sentinel_link *link, vk_endpoint *out,
                                  bool *known, vk_context *ctx);
/* Merges the sentinels that the one on link knows (SENTINEL SENTINELS). */
void vk__sentinel_refresh_list(vk_sentinel *s, vk_sentinel_link *link, vk_context *ctx);

/* The rules of a discovery, shared with the engine's (sentinel_seek.c),
 * which does the same walk without blocking. */
#define VK_SENTINEL_ASK_MASTER "GET-MASTER-ADDR-BY-NAME"
#define VK_SENTINEL_LIST "SENTINELS"
/* SENTINEL <what> <master name>. */
void vk__sentinel_query(const vk_sentinel *s, const char *what, const char *argv[3]);
/* The meaning of a sentinel's (peer's) answer to GET-MASTER-ADDR-BY-NAME:
 * VK_OK with *known false when it does not monitor the name; an error
 * reply is VK_ERR_SERVER "sentinel <peer>: <error>", any other reply
 * VK_ERR_PROTOCOL. */
vk_status vk__sentinel_read_master(const char *peer, const redisReply *r, vk_endpoint *out,
                                   bool *known);
/* Merges the sentinels of a SENTINEL SENTINELS reply (new ones logged). */
void vk__sentinel_merge_list(vk_sentinel *s, const redisReply *r);
/* Moves ep to the front of the list: it is asked first next time. */
void vk__sentinel_promote(vk_sentinel *s, const vk_endpoint *ep);
/* Logs "redis sentinel query failed" for the sentinel at ep. */
void vk__sentinel_warn_failure(vk_sentinel *s, const vk_endpoint *ep, const char *cause);
/* The failure of a discovery in which every sentinel was asked: answered
 * (some sentinel answered, none knew the name) or not (last_cause: the
 * last sentinel's failure). */
vk_status vk__sentinel_gave_up(const vk_sentinel *s, bool answered, const char *last_cause);
/* A copy of the i-th known sentinel; false past the end. */
bool vk__sentinel_address(vk_sentinel *s, size_t i, vk_endpoint *out);
const char *vk__sentinel_master_name(const vk_sentinel *s);
const vk_config *vk__sentinel_config(const vk_sentinel *s);
vk_tls *vk__sentinel_tls(const vk_sentinel *s);
vk_events *vk__sentinel_events(const vk_sentinel *s);

/* ---- sentinel_watch.c ------------------------------------------------------- */

/* What a message on a sentinel's +switch-master / +promoted-slave
 * subscription says about the master named name. */
typedef enum vk_sentinel_news {
    VK_SENTINEL_NEWS_NONE,      /* nothing for us (another master, a reply) */
    VK_SENTINEL_NEWS_PONG,      /* a subscribed PING's answer */
    VK_SENTINEL_NEWS_PROMOTED,  /* a replica of ours was promoted: ask again */
    VK_SENTINEL_NEWS_SWITCHED   /* the master is now *master */
} vk_sentinel_news;

/* The channels to subscribe to, one SUBSCRIBE each. */
#define VK_SENTINEL_SWITCH_CHANNEL "+switch-master"
#define VK_SENTINEL_PROMOTED_CHANNEL "+promoted-slave"

vk_sentinel_news vk__sentinel_read_news(const redisReply *r, const char *name,
                                        vk_endpoint *master);
/* Logs "redis sentinel announced a new master" (heard from the sentinel
 * at via). */
void vk__sentinel_log_announced(vk_sentinel *s, const vk_endpoint *master,
                                const vk_endpoint *via);

/* Called by the watcher with the master's address whenever it may have
 * changed; the client switches to it when it differs from the current one. */
typedef vk_status (*vk_follow_master_fn)(void *client, const vk_endpoint *master,
                                         vk_context *ctx);

typedef struct vk_sentinel_watch vk_sentinel_watch;

vk_status vk__sentinel_watch_new(vk_sentinel_watch **out, vk_sentinel *s,
                                 vk_follow_master_fn follow, void *client);
/* Stops and frees. NULL-safe. */
void vk__sentinel_watch_free(vk_sentinel_watch *w);
/* Starts the subscriber thread unless it runs. */
vk_status vk__sentinel_watch_start(vk_sentinel_watch *w);
/* Stops and joins it. Idempotent. */
void vk__sentinel_watch_stop(vk_sentinel_watch *w);
bool vk__sentinel_watch_running(vk_sentinel_watch *w);
/* After fork() in the child: forgets the parent's thread and link without
 * joining or a byte on the wire; start it again on next use. */
void vk__sentinel_watch_after_fork(vk_sentinel_watch *w);
/* Driven mode (no thread): checks the master with one sentinel when the
 * last check is older than the check interval. */
vk_status vk__sentinel_watch_tick(vk_sentinel_watch *w, vk_context *ctx);

#endif /* VK_SENTINEL_H */
