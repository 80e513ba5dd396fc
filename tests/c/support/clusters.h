/*
 * A Redis/Valkey Cluster for the C tests: N masters sharing the 16384 slots
 * evenly, optionally one replica for each of the first masters, all real
 * processes on free loopback ports, each in its own temporary folder,
 * stopped by PID (see servers.h).
 */
#ifndef VKTEST_CLUSTERS_H
#define VKTEST_CLUSTERS_H

#include "servers.h"

typedef struct vkt_cluster vkt_cluster;

/* Starts `masters` masters and one replica for each of the first
 * `replicated` of them, joins them (CLUSTER MEET), assigns the slots
 * (CLUSTER ADDSLOTSRANGE) and the replicas (CLUSTER REPLICATE), and waits
 * until every node says cluster_state:ok and every replica is in sync.
 * Node i < masters is master i; node masters + j is the replica of master
 * j. password (or NULL) is required of clients by every node, and used by
 * the replicas towards their masters. With tls, every node serves TLS only
 * (harness CA), its cluster bus and replication included. NULL on failure
 * (the reason is printed). */
vkt_cluster *vkt_cluster_start(int masters, int replicated, const char *password, bool tls);
int vkt_cluster_size(const vkt_cluster *c);
vkt_server *vkt_cluster_node(vkt_cluster *c, int i);
/* The node's cluster ID (CLUSTER MYID). */
const char *vkt_cluster_node_id(const vkt_cluster *c, int i);
/* The node that serves key now: the master that does not answer -MOVED to
 * EXISTS key; -1 when none does. */
int vkt_cluster_key_owner(vkt_cluster *c, const char *key);
/* The slot of key, as the server computes it (CLUSTER KEYSLOT). */
int vkt_cluster_keyslot(vkt_cluster *c, const char *key);
/* Moves slot from node `from` to node `to` the way redis-cli --cluster
 * reshard does: IMPORTING on to, MIGRATING on from, MIGRATE of its keys
 * (batches of the listed keys, until the slot is empty on `from`), then
 * SETSLOT NODE on every master. pause_ms is slept between the steps, so
 * that clients meet the ASK and MOVED phases. True on success. */
bool vkt_cluster_move_slot(vkt_cluster *c, int slot, int from, int to,
                           const char *const *keys, int nkeys, int pause_ms);
/* CLUSTER FAILOVER on replica node i, then waits until it says it is a
 * master and every node says cluster_state:ok. True on success. */
bool vkt_cluster_failover(vkt_cluster *c, int replica, int timeout_ms);
/* True once every running node says cluster_state:ok. */
bool vkt_cluster_wait_ok(vkt_cluster *c, int timeout_ms);
/* Stops every node, removes the folders, frees. NULL-safe. */
void vkt_cluster_stop(vkt_cluster *c);

#endif
