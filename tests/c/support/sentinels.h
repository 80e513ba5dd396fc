/*
 * A Sentinel group for the C tests: one master, two replicas and three
 * sentinels (quorum 2), all real processes on free loopback ports, each in
 * its own temporary folder, stopped by PID (see servers.h).
 */
#ifndef VKTEST_SENTINELS_H
#define VKTEST_SENTINELS_H

#include "servers.h"
#include "vkclient.h"

#define VKT_SENTINELS 3
#define VKT_SENTINEL_NODES 3   /* node 0 starts as the master */

typedef struct vkt_sentinel_group vkt_sentinel_group;

/* Starts the group monitoring its master as `name` (down-after 1 s,
 * failover-timeout 5 s) and waits until every sentinel knows both replicas
 * and the other sentinels, so that a failover can run at once. NULL on
 * failure (the reason is printed). */
vkt_sentinel_group *vkt_sentinel_group_start(const char *name);
/* The same with every node and sentinel serving TLS only (the harness CA,
 * see vkt_ca_base64()), replicating and monitoring over TLS. */
vkt_sentinel_group *vkt_sentinel_group_start_tls(const char *name);
vkt_server *vkt_sentinel_group_sentinel(vkt_sentinel_group *g, int i);
vkt_server *vkt_sentinel_group_node(vkt_sentinel_group *g, int i);
/* The data node the sentinels name as master: the answer of the first
 * sentinel that names one of the nodes; -1 when none does. */
int vkt_sentinel_group_master(vkt_sentinel_group *g);
/* The data node that sentinel i names as master; -1 when it does not
 * answer or the port is not one of the nodes. */
int vkt_sentinel_group_master_named_by(vkt_sentinel_group *g, int sentinel);
/* True when node i says (ROLE) it is a master. */
bool vkt_sentinel_group_node_is_master(vkt_sentinel_group *g, int i);
/* Waits until the sentinels name a master other than node `old` and that
 * node says it is a master; its index, or -1 after timeout_ms. */
int vkt_sentinel_group_wait_new_master(vkt_sentinel_group *g, int old, int timeout_ms);
/* The same, but waits until every sentinel names that node: a client that
 * asks any of them is then sent there. */
int vkt_sentinel_group_wait_agreed_master(vkt_sentinel_group *g, int old, int timeout_ms);
/* One sentinel on its own, monitoring the master at master_port as name,
 * with `password` (or none) required of its clients; stop it with
 * vkt_server_stop(). Start it after any failover test of a group it
 * watches: the group's sentinels learn of it and count it in their
 * majority. */
vkt_server *vkt_sentinel_start_single(const char *name, int master_port, const char *password);
/* The same over TLS only. */
vkt_server *vkt_sentinel_start_single_tls(const char *name, int master_port);
/* Asks sentinel 0 for a failover of `name` away from node `from` and
 * waits until every sentinel names the promoted node: its index, or -1
 * after 40 s (scaled). A failover the sentinels refuse for now or abort
 * (their failover-timeout is 5 s) is asked for again. */
int vkt_sentinel_group_failover(vkt_sentinel_group *g, const char *name, int from);
/* A client config for g's sentinels 0..count-1 and master `name`, with
 * the group tests' timeouts (dial 500 ms, read 1 s). */
vk_config *vkt_sentinel_config(vkt_sentinel_group *g, const char *name, int count);
/* What the clients of a Sentinel test logged and counted (any thread),
 * through the sinks vkt_sentinel_log_attach() puts on a config. Warnings
 * and lines about sentinels are also printed, with their time. */
typedef struct vkt_sentinel_log {
    int connected;             /* "connected to Redis/Valkey in sentinel mode" */
    int discovered;            /* "redis sentinel discovered" */
    int query_failures;        /* "redis sentinel query failed" */
    int switches;              /* "redis sentinel: switched to the new master" */
    int announced;             /* "redis sentinel announced a new master" */
    long long last_switch_us;  /* monotonic time of the last switch (0: none) */
    char last_switch_to[64];   /* its "to" field */
    int failovers;             /* redis_sentinel_failovers_total */
} vkt_sentinel_log;

void vkt_sentinel_log_attach(vk_config *cfg);
void vkt_sentinel_log_reset(void);
/* A copy of what was recorded since the last reset. */
vkt_sentinel_log vkt_sentinel_log_read(void);
/* The switches logged so far, and (to, when to_cap > 0) the last one's
 * new master. */
int vkt_sentinel_log_switches(char *to, size_t to_cap);
/* Stops every process, removes the folders, frees. NULL-safe. */
void vkt_sentinel_group_stop(vkt_sentinel_group *g);

#endif
