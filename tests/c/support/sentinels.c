/*
 * A Sentinel group for the C tests (see sentinels.h). The sentinels are the
 * server binary started under its sentinel name (valkey-sentinel /
 * redis-sentinel, the same program as `<server> <conf> --sentinel`), so the
 * server harness runs them like any other server: own folder, free port,
 * stopped by PID.
 */
#include "sentinels.h"
#include "vktest.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { READY_TIMEOUT_MS = 30000 };

struct vkt_sentinel_group {
    char name[64];
    bool tls;
    vkt_server *nodes[VKT_SENTINEL_NODES];
    vkt_server *sentinels[VKT_SENTINELS];
};

/* "valkey-server" -> "valkey-sentinel". */
static void sentinel_binary(char *out, size_t cap)
{
    const char *server = vkt_server_binary();
    const char *suffix = strstr(server, "-server");
    int prefix = suffix != NULL ? (int)(suffix - server) : (int)strlen(server);
    snprintf(out, cap, "%.*s-sentinel", prefix, server);
}

/* True when line `line` of the reply to argv on s starts with want. */
static bool reply_line_starts(vkt_server *s, const char *const *argv, int argc, int line,
                              const char *want)
{
    char *text = vkt_server_cmd_line(s, argv, argc, line);
    bool ok = text != NULL && strncmp(text, want, strlen(want)) == 0;
    free(text);
    return ok;
}

/* Replication (and a sentinel's links) over TLS when the group uses it. */
static const char *tls_replication(bool tls)
{
    return tls ? "tls-replication yes" : "tls-replication no";
}

static bool start_nodes(vkt_sentinel_group *g)
{
    /* No 5 s wait before a diskless full sync (the default). */
    const char *const master_extra[] = { "repl-diskless-sync-delay 0", tls_replication(g->tls),
                                         NULL };
    g->nodes[0] = vkt_server_start(&(vkt_server_opts){ .tls = g->tls, .extra = master_extra });
    if (g->nodes[0] == NULL)
        return false;
    char replicaof[64];
    snprintf(replicaof, sizeof replicaof, "replicaof 127.0.0.1 %d", vkt_server_port(g->nodes[0]));
    const char *const replica_extra[] = { replicaof, "repl-diskless-sync-delay 0",
                                          tls_replication(g->tls), NULL };
    for (int i = 1; i < VKT_SENTINEL_NODES; i++) {
        g->nodes[i] = vkt_server_start(&(vkt_server_opts){ .tls = g->tls,
                                                           .extra = replica_extra });
        if (g->nodes[i] == NULL)
            return false;
    }
    return true;
}

static vkt_server *start_sentinel(const char *name, int master_port, const char *password,
                                  bool tls)
{
    char binary[64], monitor[160], down_after[128], failover_timeout[128];
    sentinel_binary(binary, sizeof binary);
    snprintf(monitor, sizeof monitor, "sentinel monitor %s 127.0.0.1 %d 2", name, master_port);
    snprintf(down_after, sizeof down_after, "sentinel down-after-milliseconds %s 1000", name);
    snprintf(failover_timeout, sizeof failover_timeout, "sentinel failover-timeout %s 5000",
             name);
    const char *const extra[] = { "sentinel resolve-hostnames no", tls_replication(tls),
                                  monitor, down_after, failover_timeout, NULL };
    return vkt_server_start(&(vkt_server_opts){ .binary = binary, .extra = extra,
                                                .requirepass = password, .tls = tls });
}

vkt_server *vkt_sentinel_start_single(const char *name, int master_port, const char *password)
{
    return start_sentinel(name, master_port, password, false);
}

vkt_server *vkt_sentinel_start_single_tls(const char *name, int master_port)
{
    return start_sentinel(name, master_port, NULL, true);
}

static bool start_sentinels(vkt_sentinel_group *g)
{
    for (int i = 0; i < VKT_SENTINELS; i++) {
        g->sentinels[i] = start_sentinel(g->name, vkt_server_port(g->nodes[0]), NULL, g->tls);
        if (g->sentinels[i] == NULL)
            return false;
    }
    return true;
}

/* Every replica synced, every sentinel sees both replicas and a quorum. */
static bool group_ready(vkt_sentinel_group *g)
{
    for (int i = 1; i < VKT_SENTINEL_NODES; i++) {
        const char *info[] = { "INFO", "replication" };
        if (!reply_line_starts(g->nodes[i], info, 2, 5, "master_link_status:up"))
            return false;
    }
    for (int i = 0; i < VKT_SENTINELS; i++) {
        const char *replicas[] = { "SENTINEL", "REPLICAS", g->name };
        const char *quorum[] = { "SENTINEL", "CKQUORUM", g->name };
        if (!reply_line_starts(g->sentinels[i], replicas, 3, 0, "*2") ||
            !reply_line_starts(g->sentinels[i], quorum, 3, 0, "+OK 3 usable"))
            return false;
    }
    return true;
}

static vkt_sentinel_group *start_group(const char *name, bool tls)
{
    vkt_sentinel_group *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->tls = tls;
    snprintf(g->name, sizeof g->name, "%s", name);
    if (!start_nodes(g) || !start_sentinels(g)) {
        vkt_sentinel_group_stop(g);
        return NULL;
    }
    int64_t deadline = vkt_now_ms() + READY_TIMEOUT_MS;
    while (!group_ready(g)) {
        if (vkt_now_ms() >= deadline) {
            fprintf(stderr, "sentinels: the group did not become ready in %d ms\n",
                    READY_TIMEOUT_MS);
            vkt_sentinel_group_stop(g);
            return NULL;
        }
        vkt_sleep_ms(100);
    }
    return g;
}

vkt_sentinel_group *vkt_sentinel_group_start(const char *name)
{
    return start_group(name, false);
}

vkt_sentinel_group *vkt_sentinel_group_start_tls(const char *name)
{
    return start_group(name, true);
}

vkt_server *vkt_sentinel_group_sentinel(vkt_sentinel_group *g, int i)
{
    return g != NULL && i >= 0 && i < VKT_SENTINELS ? g->sentinels[i] : NULL;
}

vkt_server *vkt_sentinel_group_node(vkt_sentinel_group *g, int i)
{
    return g != NULL && i >= 0 && i < VKT_SENTINEL_NODES ? g->nodes[i] : NULL;
}

int vkt_sentinel_group_master_named_by(vkt_sentinel_group *g, int sentinel)
{
    const char *argv[] = { "SENTINEL", "GET-MASTER-ADDR-BY-NAME", g->name };
    char *port = vkt_server_cmd_line(vkt_sentinel_group_sentinel(g, sentinel), argv, 3, 4);
    if (port == NULL)
        return -1;
    int p = atoi(port);
    free(port);
    for (int n = 0; n < VKT_SENTINEL_NODES; n++) {
        if (vkt_server_port(g->nodes[n]) == p)
            return n;
    }
    return -1;
}

int vkt_sentinel_group_master(vkt_sentinel_group *g)
{
    for (int i = 0; i < VKT_SENTINELS; i++) {
        int m = vkt_sentinel_group_master_named_by(g, i);
        if (m >= 0)
            return m;
    }
    return -1;
}

bool vkt_sentinel_group_node_is_master(vkt_sentinel_group *g, int i)
{
    const char *argv[] = { "ROLE" };
    return reply_line_starts(g->nodes[i], argv, 1, 2, "master");
}

int vkt_sentinel_group_wait_new_master(vkt_sentinel_group *g, int old, int timeout_ms)
{
    int64_t deadline = vkt_now_ms() + timeout_ms;
    while (vkt_now_ms() < deadline) {
        int m = vkt_sentinel_group_master(g);
        if (m >= 0 && m != old && vkt_sentinel_group_node_is_master(g, m))
            return m;
        vkt_sleep_ms(50);
    }
    return -1;
}

int vkt_sentinel_group_wait_agreed_master(vkt_sentinel_group *g, int old, int timeout_ms)
{
    int64_t deadline = vkt_now_ms() + timeout_ms;
    while (vkt_now_ms() < deadline) {
        int m = vkt_sentinel_group_master_named_by(g, 0);
        bool agreed = m >= 0 && m != old;
        for (int i = 1; i < VKT_SENTINELS && agreed; i++)
            agreed = vkt_sentinel_group_master_named_by(g, i) == m;
        if (agreed && vkt_sentinel_group_node_is_master(g, m))
            return m;
        vkt_sleep_ms(50);
    }
    return -1;
}

void vkt_sentinel_group_stop(vkt_sentinel_group *g)
{
    if (g == NULL)
        return;
    for (int i = 0; i < VKT_SENTINELS; i++)
        vkt_server_stop(g->sentinels[i]);
    for (int i = 0; i < VKT_SENTINEL_NODES; i++)
        vkt_server_stop(g->nodes[i]);
    free(g);
}

vk_config *vkt_sentinel_config(vkt_sentinel_group *g, const char *name, int count)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_sentinel(cfg, name);
    for (int i = 0; i < count; i++)
        vk_config_add_sentinel_address(cfg, vkt_server_address(vkt_sentinel_group_sentinel(g, i)));
    vk_config_set_dial_timeout_ms(cfg, 500);
    vk_config_set_read_timeout_ms(cfg, 1000);
    return cfg;
}

int vkt_sentinel_group_failover(vkt_sentinel_group *g, const char *name, int from)
{
    long long deadline = vkt_now_ms() + vkt_scaled_ms(40000);
    while (vkt_now_ms() < deadline) {
        const char *argv[] = {"SENTINEL", "FAILOVER", name};
        char *reply = vkt_server_cmd(vkt_sentinel_group_sentinel(g, 0), argv, 3);
        bool asked = reply != NULL && strcmp(reply, "+OK") == 0;
        free(reply);
        if (!asked) {
            vkt_sleep_ms(200);
            continue;
        }
        int promoted = vkt_sentinel_group_wait_agreed_master(g, from, (int)vkt_scaled_ms(10000));
        if (promoted >= 0)
            return promoted;
    }
    return -1;
}

/* ---- what the clients logged and counted ---------------------------------------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static vkt_sentinel_log recorded;

static void log_sink(void *userdata, vk_log_level level, const char *message,
                     const vk_field *fields, size_t nfields)
{
    (void)userdata;
    long long now = vkt_now_us();
    if (level >= VK_LOG_WARN || strstr(message, "sentinel") != NULL) {
        fprintf(stderr, "log at %lld: %s", now / 1000, message);
        for (size_t i = 0; i < nfields; i++)
            fprintf(stderr, " %s=%s", fields[i].key, fields[i].value);
        fputc('\n', stderr);
    }
    pthread_mutex_lock(&log_lock);
    if (strcmp(message, "connected to Redis/Valkey in sentinel mode") == 0)
        recorded.connected++;
    if (strcmp(message, "redis sentinel discovered") == 0)
        recorded.discovered++;
    if (strcmp(message, "redis sentinel query failed") == 0)
        recorded.query_failures++;
    if (strcmp(message, "redis sentinel announced a new master") == 0)
        recorded.announced++;
    if (strcmp(message, "redis sentinel: switched to the new master") == 0) {
        recorded.switches++;
        recorded.last_switch_us = now;
        for (size_t i = 0; i < nfields; i++) {
            if (strcmp(fields[i].key, "to") == 0)
                snprintf(recorded.last_switch_to, sizeof recorded.last_switch_to, "%s",
                         fields[i].value);
        }
    }
    pthread_mutex_unlock(&log_lock);
}

static void metric_sink(void *userdata, const char *name, vk_metric_kind kind, double value,
                        const vk_field *labels, size_t nlabels)
{
    (void)userdata;
    (void)kind;
    (void)labels;
    (void)nlabels;
    if (strcmp(name, "redis_sentinel_failovers_total") == 0) {
        pthread_mutex_lock(&log_lock);
        recorded.failovers += (int)value;
        pthread_mutex_unlock(&log_lock);
    }
}

void vkt_sentinel_log_attach(vk_config *cfg)
{
    vk_config_set_logger(cfg, log_sink, NULL, NULL);
    vk_config_set_metrics(cfg, metric_sink, NULL, NULL);
}

void vkt_sentinel_log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    memset(&recorded, 0, sizeof recorded);
    pthread_mutex_unlock(&log_lock);
}

vkt_sentinel_log vkt_sentinel_log_read(void)
{
    pthread_mutex_lock(&log_lock);
    vkt_sentinel_log copy = recorded;
    pthread_mutex_unlock(&log_lock);
    return copy;
}

int vkt_sentinel_log_switches(char *to, size_t to_cap)
{
    vkt_sentinel_log copy = vkt_sentinel_log_read();
    if (to_cap > 0)
        snprintf(to, to_cap, "%s", copy.last_switch_to);
    return copy.switches;
}
