/*
 * Bytes mode (vk_hosted) in Sentinel mode against a real group
 * (VKTEST_NEEDS_SERVER), driven by a host of this test that owns plain
 * blocking sockets, one per connection the client wants (the node's and
 * the probes to the sentinels): discovery, the blocking client's errors,
 * and a SENTINEL FAILOVER followed while writes go on.
 */
#include "vktest.h"
#include "sentinels.h"
#include "readback.h"

#include "vkclient_async.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define GROUP "vkhostedmaster"
#define MAX_SOCKETS 8

static vkt_sentinel_group *group;

/* ---- the host: a socket per wanted connection ---------------------------------- */

typedef struct host_socket {
    uint64_t conn;   /* 0: free */
    int fd;
} host_socket;

typedef struct host {
    vk_hosted *client;
    host_socket sockets[MAX_SOCKETS];
    int connects;
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
            CHECK(w.tls == 0 && w.host != NULL);
            h->connects++;
            host_socket *free_slot = socket_of(h, 0);
            CHECK(free_slot != NULL);
            int fd = free_slot != NULL ? vkt_dial_tcp(w.host, w.port) : -1;
            if (fd < 0) {
                vk_hosted_connect_failed(h->client, w.conn, VK_ERR_IO, strerror(errno));
                return true;
            }
            *free_slot = (host_socket){.conn = w.conn, .fd = fd};
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
    char text[512];   /* the reply's string, or the failure's text */
} result;

static void on_reply(void *userdata, vk_status st, vk_reply *reply)
{
    result *r = userdata;
    r->calls++;
    r->status = st;
    size_t len = 0;
    const char *s = st == VK_OK ? vk_reply_get_string(reply, &len) : vk_last_error();
    if (st != VK_OK)
        len = strlen(s);
    snprintf(r->text, sizeof r->text, "%.*s", (int)len, s != NULL ? s : "");
    vk_reply_free(reply);
}

/* Runs words through the client until its completion (10 s at most). */
static bool call(host *h, result *r, int argc, const char *const *argv)
{
    memset(r, 0, sizeof *r);
    size_t len[8];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    CHECK_OK(vk_hosted_command(h->client, argc, argv, len, on_reply, r, NULL));
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(10000);
    while (r->calls == 0 && vkt_now_ms() < deadline)
        host_step(h);
    CHECK_EQ_INT(r->calls, 1);
    return r->calls == 1;
}

static vk_hosted *hosted_new(vk_config *cfg)
{
    vk_hosted *c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static const char *master_address(vk_hosted *c)
{
    static char address[64];
    vk_snapshot *s = NULL;
    address[0] = '\0';
    if (vk_hosted_snapshot(&s, c) == VK_OK && vk_snapshot_master_address(s) != NULL)
        snprintf(address, sizeof address, "%s", vk_snapshot_master_address(s));
    vk_snapshot_free(s);
    return address;
}

/* ---- scenarios ------------------------------------------------------------------- */

/* Configured with one sentinel: probe connections to the sentinels, then
 * the master's; writes land on the master. */
static void test_discovery(void)
{
    host h;
    host_init(&h, hosted_new(vkt_sentinel_config(group, GROUP, 1)));
    if (h.client == NULL)
        return;
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 0);
    result r;
    const char *set[] = {"SET", "hosted:sentinel", "1"};
    if (call(&h, &r, 3, set)) {
        CHECK_EQ_INT(r.status, VK_OK);
        CHECK_EQ_STR(r.text, "OK");
    }
    int master = vkt_sentinel_group_master(group);
    CHECK(master >= 0);
    if (master >= 0) {
        vkt_server *node = vkt_sentinel_group_node(group, master);
        char *value = vkt_node_get(node, "hosted:sentinel");
        CHECK_EQ_STR(value, "1");
        free(value);
        CHECK_EQ_STR(master_address(h.client), vkt_server_address(node));
    }
    /* A sentinel (kept open for the checks) and the master. */
    CHECK_EQ_INT(h.connects, 2);
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 2);
    CHECK_EQ_INT(vk_hosted_is_connected(h.client), 1);
    host_free(&h);
}

/* The blocking client's text for an unknown master name. */
static void test_unknown_master_name(void)
{
    host h;
    host_init(&h, hosted_new(vkt_sentinel_config(group, "no-such-master", VKT_SENTINELS)));
    if (h.client == NULL)
        return;
    result r;
    const char *get[] = {"GET", "k"};
    if (call(&h, &r, 2, get)) {
        CHECK_EQ_INT(r.status, VK_ERR_SERVER);
        CHECK_EQ_STR(r.text, "redis sentinel: master \"no-such-master\" is unknown to every "
                             "reachable sentinel");
    }
    CHECK_EQ_INT(h.connects, VKT_SENTINELS);
    host_free(&h);
}

/* SENTINEL FAILOVER while the host keeps writing: the client follows the
 * new master by its checks; the writes after the switch land there. */
static void test_failover(void)
{
    host h;
    host_init(&h, hosted_new(vkt_sentinel_config(group, GROUP, VKT_SENTINELS)));
    if (h.client == NULL)
        return;
    result r;
    const char *first[] = {"SET", "hosted:before", "1"};
    CHECK(call(&h, &r, 3, first) && r.status == VK_OK);
    int old = vkt_sentinel_group_master(group);
    char old_address[64];
    snprintf(old_address, sizeof old_address, "%s", master_address(h.client));
    const char *argv[] = {"SENTINEL", "FAILOVER", GROUP};
    int promoted = -1;
    for (int attempt = 0; attempt < 3 && promoted < 0; attempt++) {
        char *reply = vkt_server_cmd(vkt_sentinel_group_sentinel(group, 0), argv, 3);
        CHECK(reply != NULL && (strcmp(reply, "+OK") == 0 ||
                                (attempt > 0 && strncmp(reply, "-INPROG", 7) == 0)));
        free(reply);
        /* Writes go on while the sentinels fail over and the client
         * notices (its check, about once a second). */
        int64_t deadline = vkt_now_ms() + vkt_scaled_ms(8000);
        long n = 0;
        while (vkt_now_ms() < deadline && strcmp(master_address(h.client), old_address) == 0) {
            char key[48];
            snprintf(key, sizeof key, "hosted:during:%ld", n++);
            const char *set[] = {"SET", key, "1"};
            CHECK(call(&h, &r, 3, set));
            CHECK_EQ_INT(r.status, VK_OK);
        }
        if (strcmp(master_address(h.client), old_address) != 0)
            promoted = vkt_sentinel_group_wait_new_master(group, old, (int)vkt_scaled_ms(10000));
    }
    CHECK(promoted >= 0 && promoted != old);
    if (promoted >= 0) {
        vkt_server *node = vkt_sentinel_group_node(group, promoted);
        CHECK_EQ_STR(master_address(h.client), vkt_server_address(node));
        const char *after[] = {"SET", "hosted:after", "2"};
        CHECK(call(&h, &r, 3, after) && r.status == VK_OK);
        char *value = vkt_node_get(node, "hosted:after");
        CHECK_EQ_STR(value, "2");
        free(value);
        value = vkt_node_get(vkt_sentinel_group_node(group, old), "hosted:after");
        CHECK(value == NULL);
        free(value);
        vk_snapshot *s = NULL;
        CHECK_OK(vk_hosted_snapshot(&s, h.client));
        CHECK_EQ_INT(vk_snapshot_master_switches(s), 1);
        CHECK_EQ_STR(vk_snapshot_mode(s), "sentinel");
        vk_snapshot_free(s);
    }
    host_free(&h);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    group = vkt_sentinel_group_start(GROUP);
    CHECK(group != NULL);
    if (group == NULL)
        return vkt_finish();
    RUN(test_discovery);
    RUN(test_unknown_master_name);
    RUN(test_failover);
    vkt_sentinel_group_stop(group);
    return vkt_finish();
}
