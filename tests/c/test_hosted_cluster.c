/*
 * Bytes mode (vk_hosted) in Cluster mode against a real cluster of 3
 * masters (VKTEST_NEEDS_SERVER), every node requiring a password, driven
 * by a host of this test that owns plain blocking sockets, one per
 * connection the client wants (the nodes', and any it loads the slot map
 * on): keys on every master (read back on the node that serves them), a
 * pipeline across the nodes with its replies in order, the cross-slot
 * refusal, a MOVED followed after the harness moved a slot, a scan that
 * walks every master, and seeds that are all unreachable (the blocking
 * client's text).
 */
#include "vktest.h"
#include "clusters.h"
#include "readback.h"

#include "vkclient_async.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MASTERS 3
#define PASSWORD "hosted-cluster-secret"
#define MAX_SOCKETS 16

static vkt_cluster *cluster;

/* ---- the host: a socket per wanted connection ---------------------------------- */

typedef struct host_socket {
    uint64_t conn;   /* 0: free */
    int fd;
} host_socket;

typedef struct host {
    vk_hosted *client;
    host_socket sockets[MAX_SOCKETS];
    int connects;
    int most_open;   /* the most sockets open at once */
} host;

static host_socket *socket_of(host *h, uint64_t conn)
{
    for (int i = 0; i < MAX_SOCKETS; i++) {
        if (h->sockets[i].conn == conn)
            return &h->sockets[i];
    }
    return NULL;
}

/* Sockets of connections the client no longer wants are closed. */
static void close_unwanted(host *h)
{
    size_t n = vk_hosted_connection_count(h->client);
    for (int i = 0; i < MAX_SOCKETS; i++) {
        host_socket *s = &h->sockets[i];
        if (s->conn == 0)
            continue;
        bool wanted = false;
        for (size_t j = 0; j < n && !wanted; j++) {
            vk_hosted_wants w;
            wanted = vk_hosted_get_wants(h->client, j, &w) == VK_OK && w.conn == s->conn;
        }
        if (!wanted) {
            close(s->fd);
            s->conn = 0;
            s->fd = -1;
        }
    }
}

/* Connects or writes for the first connection that wants it: true when
 * something was done (the wants must be read again). */
static bool act_on_wants(host *h)
{
    size_t n = vk_hosted_connection_count(h->client);
    for (size_t i = 0; i < n; i++) {
        vk_hosted_wants w;
        CHECK_OK(vk_hosted_get_wants(h->client, i, &w));
        host_socket *s = socket_of(h, w.conn);
        if (w.connect) {
            CHECK(w.tls == 0 && w.host != NULL && w.path == NULL);
            h->connects++;
            host_socket *free_slot = socket_of(h, 0);
            CHECK(free_slot != NULL);
            int fd = free_slot != NULL ? vkt_dial_tcp(w.host, w.port) : -1;
            if (fd < 0) {
                vk_hosted_connect_failed(h->client, w.conn, VK_ERR_IO, strerror(errno));
                return true;
            }
            *free_slot = (host_socket){.conn = w.conn, .fd = fd};
            int open_now = 0;
            for (int k = 0; k < MAX_SOCKETS; k++)
                open_now += h->sockets[k].conn != 0;
            if (open_now > h->most_open)
                h->most_open = open_now;
            vk_hosted_connected(h->client, w.conn);
            return true;
        }
        if (w.output_len > 0 && s != NULL) {
            ssize_t n_sent = send(s->fd, w.output, w.output_len, MSG_NOSIGNAL);
            if (n_sent > 0)
                vk_hosted_wrote(h->client, w.conn, (size_t)n_sent);
            else
                vk_hosted_lost(h->client, w.conn, VK_ERR_IO, strerror(errno));
            return true;
        }
    }
    return false;
}

/* One round: connect and write what is wanted, else wait (20 ms at most,
 * or until the client's tick) for bytes on any open connection. */
static void host_step(host *h)
{
    close_unwanted(h);
    if (act_on_wants(h))
        return;
    struct pollfd p[MAX_SOCKETS];
    uint64_t conns[MAX_SOCKETS];
    int np = 0;
    for (int i = 0; i < MAX_SOCKETS; i++) {
        if (h->sockets[i].conn != 0) {
            p[np] = (struct pollfd){.fd = h->sockets[i].fd, .events = POLLIN};
            conns[np++] = h->sockets[i].conn;
        }
    }
    int64_t tick_in = vk_hosted_tick_in_ms(h->client);
    int wait_ms = tick_in >= 0 && tick_in < 20 ? (int)tick_in : 20;
    if (np > 0 && poll(p, (nfds_t)np, wait_ms) > 0) {
        for (int i = 0; i < np; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[65536];
            ssize_t n = recv(p[i].fd, buf, sizeof buf, 0);
            if (n > 0)
                vk_hosted_received(h->client, conns[i], buf, (size_t)n);
            else
                vk_hosted_lost(h->client, conns[i], VK_ERR_IO, n == 0 ? "EOF" : strerror(errno));
            return;   /* the wants may have changed */
        }
    } else if (np == 0 && wait_ms > 0) {
        vkt_sleep_ms(wait_ms);
    }
    if (vk_hosted_tick_in_ms(h->client) == 0)
        vk_hosted_tick(h->client);
}

static void host_init(host *h, vk_hosted *client)
{
    memset(h, 0, sizeof *h);
    h->client = client;
    for (int i = 0; i < MAX_SOCKETS; i++)
        h->sockets[i].fd = -1;
}

static void host_free(host *h)
{
    vk_hosted_free(h->client);
    for (int i = 0; i < MAX_SOCKETS; i++) {
        if (h->sockets[i].conn != 0)
            close(h->sockets[i].fd);
    }
}

/* ---- operations ---------------------------------------------------------------- */

typedef struct result {
    int calls;
    vk_status status;
    vk_reply *reply;   /* owned: freed by result_clear */
    char error[512];
} result;

static void on_reply(void *userdata, vk_status st, vk_reply *reply)
{
    result *r = userdata;
    r->calls++;
    r->status = st;
    r->reply = reply;
    if (st != VK_OK)
        snprintf(r->error, sizeof r->error, "%s", vk_last_error());
}

static void result_clear(result *r)
{
    vk_reply_free(r->reply);
    memset(r, 0, sizeof *r);
}

/* Turns the host until every one of the n results has its completion (10 s at most). */
static bool host_run(host *h, result *r, int n)
{
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(10000);
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += r[i].calls > 0;
        if (done == n)
            return true;
        if (vkt_now_ms() > deadline) {
            VKT_CHECK_(false, "%d of %d operations completed", done, n);
            return false;
        }
        host_step(h);
    }
}

static vk_status submit(host *h, result *r, int argc, const char *const *argv)
{
    size_t len[8];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    return vk_hosted_command(h->client, argc, argv, len, on_reply, r, NULL);
}

/* Runs words through the client until its completion. */
static bool call(host *h, result *r, int argc, const char *const *argv)
{
    memset(r, 0, sizeof *r);
    CHECK_OK(submit(h, r, argc, argv));
    return host_run(h, r, 1);
}

static bool reply_is(const vk_reply *r, const char *text)
{
    size_t len = 0;
    const char *s = r != NULL ? vk_reply_get_string(r, &len) : NULL;
    return s != NULL && vk_reply_get_type(r) != VK_REPLY_ERROR && len == strlen(text) &&
           memcmp(s, text, len) == 0;
}

static vk_config *cluster_config(int seed)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg,
                                           vkt_server_address(vkt_cluster_node(cluster, seed))));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    return cfg;
}

static vk_hosted *hosted_new(vk_config *cfg)
{
    vk_hosted *c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static bool node_value_is(int i, const char *key, const char *want)
{
    char *value = vkt_node_get(vkt_cluster_node(cluster, i), key);
    bool same = value != NULL && strcmp(value, want) == 0;
    if (!same)
        fprintf(stderr, "   node %d has %s = %s, want %s\n", i, key, value ? value : "(nil)",
                want);
    free(value);
    return same;
}

/* A key named <prefix><n>, for the first n whose key node `node` serves. */
static bool key_on_node(char *out, size_t cap, const char *prefix, int node)
{
    for (int n = 0; n < 10000; n++) {
        snprintf(out, cap, "%s%d", prefix, n);
        if (vkt_cluster_key_owner(cluster, out) == node)
            return true;
    }
    return false;
}

/* The snapshot: cluster mode, the masters serving every slot. */
static void check_snapshot(vk_hosted *c)
{
    vk_snapshot *s = NULL;
    CHECK_OK(vk_hosted_snapshot(&s, c));
    if (s == NULL)
        return;
    CHECK_EQ_STR(vk_snapshot_mode(s), "cluster");
    CHECK_EQ_INT(vk_snapshot_connected(s), vk_hosted_is_connected(c));
    CHECK(vk_snapshot_master_address(s) == NULL);
    CHECK(vk_snapshot_slot_map_refreshes(s) >= 1);
    CHECK_EQ_INT(vk_snapshot_node_count(s), MASTERS);
    int slots = 0;
    for (size_t i = 0; i < vk_snapshot_node_count(s); i++) {
        bool known = false;
        for (int m = 0; m < MASTERS; m++)
            known |= vk_snapshot_node_address(s, i) != NULL &&
                     strcmp(vk_snapshot_node_address(s, i),
                            vkt_server_address(vkt_cluster_node(cluster, m))) == 0;
        CHECK(known);
        slots += vk_snapshot_node_slots(s, i);
    }
    CHECK_EQ_INT(slots, 16384);
    vk_snapshot_free(s);
}

/* ---- scenarios ------------------------------------------------------------------- */

/* Configured with one seed: no connection wanted before the first
 * command; 30 SETs in flight at once land each on the master that serves
 * its key, on every master (a connection per master); the GETs read them
 * back. */
static void test_keys_on_every_master(void)
{
    enum { N = 30 };
    host h;
    host_init(&h, hosted_new(cluster_config(1)));
    if (h.client == NULL)
        return;
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 0);
    CHECK_EQ_INT(vk_hosted_is_connected(h.client), 0);
    vk_snapshot *s = NULL;
    CHECK_OK(vk_hosted_snapshot(&s, h.client));
    if (s != NULL)
        CHECK_EQ_STR(vk_snapshot_mode(s), "cluster");
    vk_snapshot_free(s);

    static char keys[N][32], values[N][32];
    static result r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "hosted:spread:%d", i);
        snprintf(values[i], sizeof values[i], "value-%d", i);
        CHECK_OK(submit(&h, &r[i], 3, (const char *[]){"SET", keys[i], values[i]}));
    }
    CHECK_EQ_INT(vk_hosted_pending(h.client), N);
    CHECK(host_run(&h, r, N));
    bool used[MASTERS] = {false};
    for (int i = 0; i < N; i++) {
        VKT_CHECK_(r[i].status == VK_OK && reply_is(r[i].reply, "OK"), "SET %s: %d %s", keys[i],
                   (int)r[i].status, r[i].error);
        int owner = vkt_cluster_key_owner(cluster, keys[i]);
        CHECK(owner >= 0 && owner < MASTERS);
        if (owner >= 0 && owner < MASTERS) {
            used[owner] = true;
            CHECK(node_value_is(owner, keys[i], values[i]));
        }
        result_clear(&r[i]);
    }
    for (int m = 0; m < MASTERS; m++)
        VKT_CHECK_(used[m], "no key landed on master %d", m);
    for (int i = 0; i < N; i++)
        CHECK_OK(submit(&h, &r[i], 2, (const char *[]){"GET", keys[i]}));
    CHECK(host_run(&h, r, N));
    for (int i = 0; i < N; i++) {
        VKT_CHECK_(r[i].status == VK_OK && reply_is(r[i].reply, values[i]), "GET %s: %d %s",
                   keys[i], (int)r[i].status, r[i].error);
        result_clear(&r[i]);
    }
    CHECK_EQ_INT(vk_hosted_is_connected(h.client), 1);
    /* A connection to each master (and perhaps one the map came on). */
    CHECK(h.connects >= MASTERS && h.connects <= MASTERS + 1);
    CHECK(vk_hosted_connection_count(h.client) >= MASTERS);
    check_snapshot(h.client);
    vk_snapshot *after = NULL;
    CHECK_OK(vk_hosted_snapshot(&after, h.client));
    if (after != NULL) {
        CHECK_EQ_INT(vk_snapshot_moved_redirects(after), 0);
        CHECK_EQ_INT(vk_snapshot_ask_redirects(after), 0);
    }
    vk_snapshot_free(after);
    host_free(&h);
}

/* A scan of the key space walks every master, one page per call: the 30
 * keys written above (spread over the masters) all come back, and HSCAN
 * of a hash larger than a page gives every field. */
static void test_scan_walks_every_master(void)
{
    host h;
    host_init(&h, hosted_new(cluster_config(2)));
    if (h.client == NULL)
        return;
    vk_scan *s = NULL;
    CHECK_OK(vk_hosted_scan_new(&s, h.client, "hosted:spread:*", 15, 5, NULL));
    bool seen[30] = {false};
    result r;
    int pages = 0;
    while (s != NULL && !vk_scan_done(s)) {
        memset(&r, 0, sizeof r);
        CHECK_OK(vk_hosted_scan_next(s, on_reply, &r));
        CHECK_EQ_INT(r.calls, 0);   /* never from inside the call */
        if (!host_run(&h, &r, 1) || r.status != VK_OK) {
            VKT_CHECK_(false, "page %d: %s", pages, r.error);
            break;
        }
        pages++;
        for (size_t i = 0; i < vk_reply_get_length(r.reply); i++) {
            size_t len;
            const char *key = vk_reply_get_string(vk_reply_get_element(r.reply, i), &len);
            int n = key != NULL && len > 14 ? atoi(key + 14) : -1;
            if (n >= 0 && n < 30)
                seen[n] = true;
        }
        result_clear(&r);
    }
    for (int i = 0; i < 30; i++)
        VKT_CHECK_(seen[i], "hosted:spread:%d not returned", i);
    CHECK(pages >= MASTERS);
    vk_scan_free(s);

    /* A hash bigger than a page, on the master of its key. */
    vk_pipeline *p = NULL;
    CHECK_OK(vk_hosted_pipeline_new(&p, h.client));
    for (int i = 0; i < 1000; i++) {
        char field[16];
        snprintf(field, sizeof field, "f%d", i);
        const char *argv[] = {"HSET", "hosted:bighash", field, "v"};
        size_t len[] = {4, 14, strlen(field), 1};
        CHECK_OK(vk_pipeline_append(p, 4, argv, len));
    }
    memset(&r, 0, sizeof r);
    CHECK_OK(vk_hosted_pipeline_exec(p, on_reply, &r, NULL));
    CHECK(host_run(&h, &r, 1));
    result_clear(&r);
    vk_pipeline_free(p);
    CHECK_OK(vk_hosted_scan_new_key(&s, h.client, "HSCAN", "hosted:bighash", 14, NULL, 0, 50));
    static bool fields[1000];
    memset(fields, 0, sizeof fields);
    pages = 0;
    while (s != NULL && !vk_scan_done(s)) {
        memset(&r, 0, sizeof r);
        CHECK_OK(vk_hosted_scan_next(s, on_reply, &r));
        if (!host_run(&h, &r, 1) || r.status != VK_OK)
            break;
        pages++;
        for (size_t i = 0; i < vk_reply_get_length(r.reply); i += 2) {
            size_t len;
            const char *f = vk_reply_get_string(vk_reply_get_element(r.reply, i), &len);
            int n = f != NULL && len > 1 ? atoi(f + 1) : -1;
            if (n >= 0 && n < 1000)
                fields[n] = true;
        }
        result_clear(&r);
    }
    int count = 0;
    for (int i = 0; i < 1000; i++)
        count += fields[i];
    CHECK_EQ_INT(count, 1000);
    CHECK(pages > 1);
    /* Each kind of scan runs with its own functions. */
    CHECK_FAILS(vk_async_scan_next(s, on_reply, &r), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: the scan belongs to another kind of client");
    vk_scan_free(s);
    host_free(&h);
}

static void on_pipeline(void *userdata, vk_status st, vk_reply *reply)
{
    on_reply(userdata, st, reply);
}

/* 40 SET/GET pairs and a PING in one pipeline, split over every master:
 * one reply per command, in order; the pipeline runs again. */
static void test_pipeline_across_nodes(void)
{
    enum { N = 40 };
    host h;
    host_init(&h, hosted_new(cluster_config(2)));
    if (h.client == NULL)
        return;
    vk_pipeline *p = NULL;
    CHECK_OK(vk_hosted_pipeline_new(&p, h.client));
    if (p == NULL) {
        host_free(&h);
        return;
    }
    static char keys[N][32], values[N][32];
    bool used[MASTERS] = {false};
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            snprintf(keys[i], sizeof keys[i], "hosted:pipe:%d", i);
            snprintf(values[i], sizeof values[i], "r%d-v%d", round, i * 3);
            const size_t set_len[] = {3, strlen(keys[i]), strlen(values[i])};
            const size_t get_len[] = {3, strlen(keys[i])};
            CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", keys[i], values[i]},
                                        set_len));
            CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", keys[i]}, get_len));
        }
        CHECK_OK(vk_pipeline_append(p, 1, (const char *[]){"PING"}, (const size_t[]){4}));
        result r = {0};
        CHECK_OK(vk_hosted_pipeline_exec(p, on_pipeline, &r, NULL));
        CHECK_EQ_INT(vk_pipeline_length(p), 0);
        CHECK(host_run(&h, &r, 1));
        CHECK(r.status == VK_OK && vk_reply_get_length(r.reply) == 2 * N + 1);
        if (r.status == VK_OK && vk_reply_get_length(r.reply) == 2 * N + 1) {
            for (int i = 0; i < N; i++)
                VKT_CHECK_(reply_is(vk_reply_get_element(r.reply, (size_t)(2 * i)), "OK") &&
                               reply_is(vk_reply_get_element(r.reply, (size_t)(2 * i + 1)),
                                        values[i]),
                           "round %d, replies %d and %d", round, 2 * i, 2 * i + 1);
            CHECK(reply_is(vk_reply_get_element(r.reply, 2 * N), "PONG"));
        }
        result_clear(&r);
    }
    for (int i = 0; i < N; i++) {
        int owner = vkt_cluster_key_owner(cluster, keys[i]);
        if (owner >= 0 && owner < MASTERS) {
            used[owner] = true;
            CHECK(node_value_is(owner, keys[i], values[i]));
        }
    }
    for (int m = 0; m < MASTERS; m++)
        VKT_CHECK_(used[m], "no key of the pipeline on master %d", m);
    vk_pipeline_free(p);
    host_free(&h);
}

/* Cross-slot commands are refused when queued, with the blocking
 * client's code and text; nothing completes and nothing is pending. */
static void test_cross_slot_is_refused(void)
{
    static const char want[] =
        "invalid argument: CROSSSLOT keys in request don't hash to the same slot";
    host h;
    host_init(&h, hosted_new(cluster_config(0)));
    if (h.client == NULL)
        return;
    result r = {0};
    CHECK_FAILS(submit(&h, &r, 3, (const char *[]){"MGET", "alpha", "beta"}),
                VK_ERR_INVALID_ARGUMENT, want);
    CHECK_FAILS(submit(&h, &r, 5, (const char *[]){"MSET", "alpha", "1", "beta", "2"}),
                VK_ERR_INVALID_ARGUMENT, want);
    CHECK_EQ_INT(vk_hosted_pending(h.client), 0);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_hosted_pipeline_new(&p, h.client));
    if (p != NULL) {
        CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", "hosted:cross", "1"},
                                    (const size_t[]){3, 12, 1}));
        CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"MGET", "alpha", "beta"},
                                    (const size_t[]){4, 5, 4}));
        CHECK_FAILS(vk_hosted_pipeline_exec(p, on_pipeline, &r, NULL), VK_ERR_INVALID_ARGUMENT,
                    want);
        CHECK_EQ_INT(vk_pipeline_length(p), 0);
    }
    vk_pipeline_free(p);
    for (int i = 0; i < 5; i++)
        host_step(&h);
    CHECK_EQ_INT(r.calls, 0);
    /* Nothing of the pipeline was sent; the client goes on. */
    result get = {0};
    CHECK(call(&h, &get, 2, (const char *[]){"GET", "hosted:cross"}));
    CHECK(get.status == VK_OK && vk_reply_get_type(get.reply) == VK_REPLY_NIL);
    result_clear(&get);
    host_free(&h);
}

/* The harness moves a slot behind the client's back: the next command for
 * it meets MOVED on the old owner and is answered by the new one; later
 * ones go there directly. */
static void test_moved_after_migration(void)
{
    host h;
    host_init(&h, hosted_new(cluster_config(0)));
    if (h.client == NULL)
        return;
    char key[48];
    CHECK(key_on_node(key, sizeof key, "hosted:moving:", 0));
    result r = {0};
    CHECK(call(&h, &r, 3, (const char *[]){"SET", key, "before"}));
    CHECK(r.status == VK_OK && reply_is(r.reply, "OK"));
    result_clear(&r);
    check_snapshot(h.client);

    int slot = vkt_cluster_keyslot(cluster, key);
    const char *names[] = {key};
    CHECK(vkt_cluster_move_slot(cluster, slot, 0, 1, names, 1, 0));
    CHECK_EQ_INT(vkt_cluster_key_owner(cluster, key), 1);

    CHECK(call(&h, &r, 2, (const char *[]){"GET", key}));
    VKT_CHECK_(r.status == VK_OK && reply_is(r.reply, "before"), "GET %s: %d %s", key,
               (int)r.status, r.error);
    result_clear(&r);
    vk_snapshot *s = NULL;
    CHECK_OK(vk_hosted_snapshot(&s, h.client));
    uint64_t moved = s != NULL ? vk_snapshot_moved_redirects(s) : 0;
    CHECK(moved >= 1);
    vk_snapshot_free(s);
    CHECK(call(&h, &r, 3, (const char *[]){"SET", key, "after"}));
    CHECK(r.status == VK_OK && reply_is(r.reply, "OK"));
    result_clear(&r);
    CHECK(node_value_is(1, key, "after"));
    CHECK_OK(vk_hosted_snapshot(&s, h.client));
    if (s != NULL)
        CHECK_EQ_INT(vk_snapshot_moved_redirects(s), moved);   /* went there directly */
    vk_snapshot_free(s);

    /* Moved back, for the scenarios after this one. */
    CHECK(vkt_cluster_move_slot(cluster, slot, 1, 0, names, 1, 0));
    CHECK(call(&h, &r, 2, (const char *[]){"GET", key}));
    CHECK(r.status == VK_OK && reply_is(r.reply, "after"));
    result_clear(&r);
    CHECK(node_value_is(0, key, "after"));
    host_free(&h);
}

/* Every seed refuses the connection: the host reports it, and the
 * operations fail with the blocking client's code and text. */
static void test_unreachable_seeds(void)
{
    static const char want[] = "redis cluster: all nodes are unreachable: connection error: "
                               "dial 127.0.0.1:1: Connection refused";
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:1"));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    vk_client *b = NULL;
    CHECK_FAILS(vk_client_new(&b, cfg), VK_ERR_IO, want);
    vk_client_free(b);
    host h;
    vk_hosted *c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    host_init(&h, c);
    if (h.client != NULL) {
        result r[2];
        memset(r, 0, sizeof r);
        CHECK_OK(submit(&h, &r[0], 3, (const char *[]){"SET", "k", "v"}));
        CHECK_OK(submit(&h, &r[1], 2, (const char *[]){"GET", "k"}));
        CHECK(host_run(&h, r, 2));
        for (int i = 0; i < 2; i++) {
            CHECK_EQ_INT(r[i].status, VK_ERR_IO);
            CHECK_EQ_STR(r[i].error, want);
            result_clear(&r[i]);
        }
        CHECK(h.connects >= 1);
        CHECK_EQ_INT(vk_hosted_is_connected(h.client), 0);
        host_free(&h);
    }
    /* A seed that is down is skipped when another one answers. */
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 2))));
    c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    host_init(&h, c);
    if (h.client != NULL) {
        result r = {0};
        CHECK(call(&h, &r, 3, (const char *[]){"SET", "hosted:seeds", "1"}));
        CHECK(r.status == VK_OK && reply_is(r.reply, "OK"));
        result_clear(&r);
        host_free(&h);
    }
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    cluster = vkt_cluster_start(MASTERS, 0, PASSWORD, false);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start a cluster of %s\n", vkt_server_binary());
        return 1;
    }
    RUN(test_keys_on_every_master);
    RUN(test_scan_walks_every_master);
    RUN(test_pipeline_across_nodes);
    RUN(test_cross_slot_is_refused);
    RUN(test_moved_after_migration);
    RUN(test_unreachable_seeds);
    vkt_cluster_stop(cluster);
    return vkt_finish();
}
