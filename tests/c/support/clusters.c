/*
 * A Redis/Valkey Cluster for the C tests (see clusters.h). Every node is a
 * vkt_server with cluster mode on and its bus on a port of its own
 * (cluster-port), so that the bus never lands above 65535 or on a port in
 * use; the nodes are joined and configured through vkt_server_cmd().
 */
#include "clusters.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VKT_CLUSTER_MAX_NODES 12
#define VKT_CLUSTER_SLOTS 16384

struct vkt_cluster {
    int masters;
    int size;
    vkt_server *nodes[VKT_CLUSTER_MAX_NODES];
    int bus_port[VKT_CLUSTER_MAX_NODES];
    char id[VKT_CLUSTER_MAX_NODES][48];
    const char *password;
    bool tls;
};

/* Runs argv on node i; true when the first reply line starts with want. */
static bool cmd_expect(vkt_cluster *c, int i, const char *const *argv, int argc,
                       const char *want)
{
    char *line = vkt_server_cmd(c->nodes[i], argv, argc);
    bool ok = line != NULL && strncmp(line, want, strlen(want)) == 0;
    if (!ok)
        fprintf(stderr, "clusters: %s %s on node %d answered %s\n", argv[0],
                argc > 1 ? argv[1] : "", i, line ? line : "nothing");
    free(line);
    return ok;
}

/* Line `line` of the reply to argv on node i (malloc'd) or NULL. */
static char *cmd_line(vkt_cluster *c, int i, const char *const *argv, int argc, int line)
{
    return vkt_server_cmd_line(c->nodes[i], argv, argc, line);
}

static bool start_node(vkt_cluster *c, int i)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        int bus = vkt_free_port();
        char bus_line[40], masterauth[160];
        snprintf(bus_line, sizeof bus_line, "cluster-port %d", bus);
        snprintf(masterauth, sizeof masterauth, "masterauth %s",
                 c->password != NULL ? c->password : "");
        const char *extra[10] = {
            "cluster-enabled yes", "cluster-config-file nodes.conf",
            "cluster-node-timeout 2000", bus_line,
            /* Replicas stay with the master the test gave them. */
            "cluster-allow-replica-migration no",
        };
        int n = 5;
        if (c->password != NULL)
            extra[n++] = masterauth;
        if (c->tls) {
            extra[n++] = "tls-cluster yes";
            extra[n++] = "tls-replication yes";
        }
        vkt_server_opts opts = { .extra = extra, .requirepass = c->password, .tls = c->tls };
        c->nodes[i] = vkt_server_start(&opts);
        if (c->nodes[i] != NULL) {
            c->bus_port[i] = bus;
            return true;
        }
    }
    return false;
}

static bool read_id(vkt_cluster *c, int i)
{
    const char *argv[] = { "CLUSTER", "MYID" };
    char *id = cmd_line(c, i, argv, 2, 1);
    bool ok = id != NULL && strlen(id) < sizeof c->id[i] && strlen(id) > 0;
    if (ok)
        strcpy(c->id[i], id);
    free(id);
    return ok;
}

/* CLUSTER INFO's line `field_line` (1: cluster_state, 6: known nodes). */
static char *info_line(vkt_cluster *c, int i, int field_line)
{
    const char *argv[] = { "CLUSTER", "INFO" };
    return cmd_line(c, i, argv, 2, field_line);
}

static bool all_know_everyone(vkt_cluster *c, int timeout_ms)
{
    char want[48];
    snprintf(want, sizeof want, "cluster_known_nodes:%d", c->size);
    int64_t deadline = vkt_now_ms() + timeout_ms;
    while (vkt_now_ms() < deadline) {
        bool all = true;
        for (int i = 0; i < c->size && all; i++) {
            char *line = info_line(c, i, 6);
            all = line != NULL && strcmp(line, want) == 0;
            free(line);
        }
        if (all)
            return true;
        vkt_sleep_ms(50);
    }
    fprintf(stderr, "clusters: the nodes did not all meet\n");
    return false;
}

bool vkt_cluster_wait_ok(vkt_cluster *c, int timeout_ms)
{
    int64_t deadline = vkt_now_ms() + timeout_ms;
    while (vkt_now_ms() < deadline) {
        bool all = true;
        for (int i = 0; i < c->size && all; i++) {
            if (vkt_server_pid(c->nodes[i]) <= 0)
                continue;
            char *line = info_line(c, i, 1);
            all = line != NULL && strcmp(line, "cluster_state:ok") == 0;
            free(line);
        }
        if (all)
            return true;
        vkt_sleep_ms(50);
    }
    fprintf(stderr, "clusters: cluster_state is not ok on every node\n");
    return false;
}

/* ROLE says "slave" with a "connected" link (line 7 of the reply). */
static bool replica_in_sync(vkt_cluster *c, int i)
{
    const char *argv[] = { "ROLE" };
    char *role = cmd_line(c, i, argv, 1, 2);
    char *link = cmd_line(c, i, argv, 1, 7);
    bool ok = role != NULL && strcmp(role, "slave") == 0 && link != NULL &&
              strcmp(link, "connected") == 0;
    free(role);
    free(link);
    return ok;
}

static bool node_is_master(vkt_cluster *c, int i)
{
    const char *argv[] = { "ROLE" };
    char *role = cmd_line(c, i, argv, 1, 2);
    bool ok = role != NULL && strcmp(role, "master") == 0;
    free(role);
    return ok;
}

static bool assign_slots(vkt_cluster *c)
{
    for (int m = 0; m < c->masters; m++) {
        char first[16], last[16];
        snprintf(first, sizeof first, "%d", m * VKT_CLUSTER_SLOTS / c->masters);
        snprintf(last, sizeof last, "%d", (m + 1) * VKT_CLUSTER_SLOTS / c->masters - 1);
        const char *argv[] = { "CLUSTER", "ADDSLOTSRANGE", first, last };
        if (!cmd_expect(c, m, argv, 4, "+OK"))
            return false;
    }
    return true;
}

static bool meet_all(vkt_cluster *c)
{
    char port[16], bus[16];
    snprintf(port, sizeof port, "%d", vkt_server_port(c->nodes[0]));
    snprintf(bus, sizeof bus, "%d", c->bus_port[0]);
    for (int i = 1; i < c->size; i++) {
        const char *argv[] = { "CLUSTER", "MEET", "127.0.0.1", port, bus };
        if (!cmd_expect(c, i, argv, 5, "+OK"))
            return false;
    }
    return all_know_everyone(c, 20000);
}

static bool attach_replicas(vkt_cluster *c, int timeout_ms)
{
    for (int r = c->masters; r < c->size; r++) {
        const char *argv[] = { "CLUSTER", "REPLICATE", c->id[r - c->masters] };
        if (!cmd_expect(c, r, argv, 3, "+OK"))
            return false;
    }
    int64_t deadline = vkt_now_ms() + timeout_ms;
    for (int r = c->masters; r < c->size; r++) {
        while (!replica_in_sync(c, r)) {
            if (vkt_now_ms() > deadline) {
                fprintf(stderr, "clusters: replica %d did not sync\n", r);
                return false;
            }
            vkt_sleep_ms(50);
        }
    }
    return true;
}

vkt_cluster *vkt_cluster_start(int masters, int replicated, const char *password, bool tls)
{
    if (masters < 1 || replicated < 0 || replicated > masters ||
        masters + replicated > VKT_CLUSTER_MAX_NODES)
        return NULL;
    vkt_cluster *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->masters = masters;
    c->size = masters + replicated;
    c->password = password;
    c->tls = tls;
    bool ok = true;
    for (int i = 0; i < c->size && ok; i++)
        ok = start_node(c, i) && read_id(c, i);
    ok = ok && assign_slots(c) && meet_all(c) && attach_replicas(c, 20000) &&
         vkt_cluster_wait_ok(c, 20000);
    if (!ok) {
        vkt_cluster_stop(c);
        return NULL;
    }
    return c;
}

int vkt_cluster_size(const vkt_cluster *c)
{
    return c ? c->size : 0;
}

vkt_server *vkt_cluster_node(vkt_cluster *c, int i)
{
    return c && i >= 0 && i < c->size ? c->nodes[i] : NULL;
}

const char *vkt_cluster_node_id(const vkt_cluster *c, int i)
{
    return c && i >= 0 && i < c->size ? c->id[i] : NULL;
}

int vkt_cluster_key_owner(vkt_cluster *c, const char *key)
{
    for (int i = 0; i < c->size; i++) {
        if (vkt_server_pid(c->nodes[i]) <= 0)
            continue;
        const char *argv[] = { "EXISTS", key };
        char *line = vkt_server_cmd(c->nodes[i], argv, 2);
        bool serves = line != NULL && line[0] == ':';
        free(line);
        if (serves)
            return i;
    }
    return -1;
}

int vkt_cluster_keyslot(vkt_cluster *c, const char *key)
{
    const char *argv[] = { "CLUSTER", "KEYSLOT", key };
    char *line = vkt_server_cmd(c->nodes[0], argv, 3);
    int slot = line != NULL && line[0] == ':' ? atoi(line + 1) : -1;
    free(line);
    return slot;
}

static bool keys_left(vkt_cluster *c, int node, const char *slot)
{
    const char *argv[] = { "CLUSTER", "COUNTKEYSINSLOT", slot };
    char *line = vkt_server_cmd(c->nodes[node], argv, 3);
    bool left = line == NULL || strcmp(line, ":0") != 0;
    free(line);
    return left;
}

/* MIGRATE host port "" 0 timeout [AUTH password] KEYS k...: moves the listed keys that are
 * still on `from`; +NOKEY when none is. */
static bool migrate_keys(vkt_cluster *c, int from, int to, const char *const *keys, int nkeys)
{
    if (nkeys <= 0)
        return true;
    const char **argv = calloc((size_t)nkeys + 9, sizeof *argv);
    if (argv == NULL)
        return false;
    char port[16];
    snprintf(port, sizeof port, "%d", vkt_server_port(c->nodes[to]));
    int n = 0;
    argv[n++] = "MIGRATE";
    argv[n++] = "127.0.0.1";
    argv[n++] = port;
    argv[n++] = "";
    argv[n++] = "0";
    argv[n++] = "5000";
    if (c->password != NULL) {
        argv[n++] = "AUTH";
        argv[n++] = c->password;
    }
    argv[n++] = "KEYS";
    for (int k = 0; k < nkeys; k++)
        argv[n++] = keys[k];
    char *line = vkt_server_cmd(c->nodes[from], argv, n);
    bool ok = line != NULL && (strcmp(line, "+OK") == 0 || strcmp(line, "+NOKEY") == 0);
    if (!ok)
        fprintf(stderr, "clusters: MIGRATE answered %s\n", line ? line : "nothing");
    free(line);
    free(argv);
    return ok;
}

bool vkt_cluster_move_slot(vkt_cluster *c, int slot, int from, int to,
                           const char *const *keys, int nkeys, int pause_ms)
{
    char s[16];
    snprintf(s, sizeof s, "%d", slot);
    const char *importing[] = { "CLUSTER", "SETSLOT", s, "IMPORTING", c->id[from] };
    const char *migrating[] = { "CLUSTER", "SETSLOT", s, "MIGRATING", c->id[to] };
    if (!cmd_expect(c, to, importing, 5, "+OK") || !cmd_expect(c, from, migrating, 5, "+OK"))
        return false;
    vkt_sleep_ms(pause_ms);
    /* Keys are moved in two halves with a pause, so that for a while some
     * keys of the slot are on each side (the ASK phase). */
    int half = nkeys / 2;
    if (!migrate_keys(c, from, to, keys, half))
        return false;
    vkt_sleep_ms(pause_ms);
    int64_t deadline = vkt_now_ms() + 10000;
    do {
        if (!migrate_keys(c, from, to, keys, nkeys))
            return false;
    } while (keys_left(c, from, s) && vkt_now_ms() < deadline);
    if (keys_left(c, from, s)) {
        fprintf(stderr, "clusters: slot %s still has keys on node %d\n", s, from);
        return false;
    }
    const char *node[] = { "CLUSTER", "SETSLOT", s, "NODE", c->id[to] };
    if (!cmd_expect(c, to, node, 5, "+OK") || !cmd_expect(c, from, node, 5, "+OK"))
        return false;
    for (int i = 0; i < c->masters; i++) {
        if (i != to && i != from && node_is_master(c, i) && !cmd_expect(c, i, node, 5, "+OK"))
            return false;
    }
    return true;
}

bool vkt_cluster_failover(vkt_cluster *c, int replica, int timeout_ms)
{
    const char *argv[] = { "CLUSTER", "FAILOVER" };
    if (!cmd_expect(c, replica, argv, 2, "+OK"))
        return false;
    int64_t deadline = vkt_now_ms() + timeout_ms;
    while (!node_is_master(c, replica)) {
        if (vkt_now_ms() > deadline) {
            fprintf(stderr, "clusters: node %d did not become a master\n", replica);
            return false;
        }
        vkt_sleep_ms(50);
    }
    return vkt_cluster_wait_ok(c, (int)(deadline - vkt_now_ms()));
}

void vkt_cluster_stop(vkt_cluster *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->size; i++)
        vkt_server_stop(c->nodes[i]);
    free(c);
}
