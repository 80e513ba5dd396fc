/*
 * Bytes mode (vk_hosted), driven by a host of this test that owns plain
 * blocking sockets, against a real server (VKTEST_NEEDS_SERVER): the host
 * only does what the wants say (a socket per wanted connection), writes
 * and reads in random small pieces, and reports back. Commands, pipelines
 * and thousands in flight with errors among them; a connection killed
 * mid-stream (no write re-sent); a refused connect and the reconnect rate
 * limit; a read timeout; a wrong password; cancel after the write; events
 * of a connection no longer wanted; a blocking command's lane, a second
 * connection in the wants (kept idle and reused, closed by a cancel).
 */
#include "vktest.h"
#include "servers.h"

#include "vkclient.h"
#include "vkclient_async.h"
/* Below the API: the credentials a client hands its connections, as the
 * IAM refresh loop replaces them. */
#include "api/driven.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static vkt_server *server;

/* ---- the host ---------------------------------------------------------------- */

/* Sockets: the node's connection and the lanes, a connection of their own
 * for each command that waits on the server (BLPOP, ...). */
#define MAX_SOCKETS 8

/* Everything the host wrote, for a look at the bytes on the wire. */
typedef struct capture {
    char bytes[8192];
    size_t len;
} capture;

typedef struct host_socket {
    uint64_t conn;          /* the connection the socket belongs to; 0: free */
    int fd;
} host_socket;

typedef struct host {
    vk_hosted *client;
    host_socket sockets[MAX_SOCKETS];
    unsigned seed;          /* 0: whole writes and reads */
    int connects;
    bool refuse_connects;   /* report every connect as refused */
    capture *cap;           /* when set, keeps what is written */
} host;

static size_t piece(host *h, size_t len)
{
    if (h->seed == 0 || len <= 1)
        return len;
    size_t n = 1 + (size_t)(rand_r(&h->seed) % 13);
    return n < len ? n : len;
}

static host_socket *socket_of(host *h, uint64_t conn)
{
    for (int i = 0; i < MAX_SOCKETS; i++) {
        if (h->sockets[i].conn == conn)
            return &h->sockets[i];
    }
    return NULL;
}

static void drop_socket(host_socket *s)
{
    if (s->conn != 0)
        close(s->fd);
    s->conn = 0;
    s->fd = -1;
}

/* The i-th connection wanted is conn (0 when none). */
static uint64_t wanted_conn(host *h, size_t i)
{
    vk_hosted_wants w;
    return vk_hosted_get_wants(h->client, i, &w) == VK_OK ? w.conn : 0;
}

/* The sockets of connections the client no longer wants are closed. */
static void close_unwanted(host *h)
{
    size_t n = vk_hosted_connection_count(h->client);
    for (int i = 0; i < MAX_SOCKETS; i++) {
        host_socket *s = &h->sockets[i];
        bool wanted = false;
        for (size_t j = 0; j < n && s->conn != 0 && !wanted; j++)
            wanted = wanted_conn(h, j) == s->conn;
        if (!wanted)
            drop_socket(s);
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
        if (w.connect) {
            h->connects++;
            host_socket *slot = socket_of(h, 0);
            CHECK(slot != NULL);
            int fd = h->refuse_connects || slot == NULL ? -1 : vkt_dial_tcp(w.host, w.port);
            if (fd < 0) {
                vk_hosted_connect_failed(h->client, w.conn, VK_ERR_IO,
                                         h->refuse_connects ? "connection refused"
                                                            : strerror(errno));
                return true;
            }
            *slot = (host_socket){.conn = w.conn, .fd = fd};
            vk_hosted_connected(h->client, w.conn);
            return true;
        }
        host_socket *s = socket_of(h, w.conn);
        if (w.output_len > 0 && s != NULL) {
            ssize_t sent = send(s->fd, w.output, piece(h, w.output_len), MSG_NOSIGNAL);
            if (sent > 0 && h->cap != NULL) {
                size_t room = sizeof h->cap->bytes - h->cap->len;
                size_t keep = (size_t)sent < room ? (size_t)sent : room;
                memcpy(h->cap->bytes + h->cap->len, w.output, keep);
                h->cap->len += keep;
            }
            if (sent > 0)
                vk_hosted_wrote(h->client, w.conn, (size_t)sent);
            else
                vk_hosted_lost(h->client, w.conn, VK_ERR_IO, strerror(errno));
            return true;
        }
    }
    return false;
}

/* One round of what the client wants: close, connect or write what is
 * wanted, else wait (20 ms at most, or until the client's tick) for bytes
 * on the connections that read, and hand them over. */
static void host_step(host *h)
{
    close_unwanted(h);
    if (act_on_wants(h))
        return;
    struct pollfd p[MAX_SOCKETS];
    uint64_t conns[MAX_SOCKETS];
    nfds_t np = 0;
    size_t n = vk_hosted_connection_count(h->client);
    for (size_t i = 0; i < n; i++) {
        vk_hosted_wants w;
        host_socket *s;
        if (vk_hosted_get_wants(h->client, i, &w) == VK_OK && w.read &&
            (s = socket_of(h, w.conn)) != NULL) {
            p[np] = (struct pollfd){.fd = s->fd, .events = POLLIN};
            conns[np++] = w.conn;
        }
    }
    int64_t tick_in = vk_hosted_tick_in_ms(h->client);
    int wait_ms = tick_in >= 0 && tick_in < 20 ? (int)tick_in : 20;
    if (np > 0) {
        if (poll(p, np, wait_ms) > 0) {
            for (nfds_t i = 0; i < np; i++) {
                if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                char buf[65536];
                ssize_t got = recv(p[i].fd, buf, piece(h, sizeof buf), 0);
                if (got > 0)
                    vk_hosted_received(h->client, conns[i], buf, (size_t)got);
                else
                    vk_hosted_lost(h->client, conns[i], VK_ERR_IO,
                                   got == 0 ? "EOF" : strerror(errno));
                return;   /* the wants may have changed */
            }
        }
    } else if (wait_ms > 0) {
        vkt_sleep_ms(wait_ms);
    }
    if (vk_hosted_tick_in_ms(h->client) == 0)
        vk_hosted_tick(h->client);
}

/* Runs the host until *count reaches want or the time is up. */
static bool host_run(host *h, const size_t *count, size_t want, int timeout_ms)
{
    int64_t deadline = vkt_now_ms() + timeout_ms;
    while (*count < want && vkt_now_ms() < deadline)
        host_step(h);
    return *count >= want;
}

static vk_hosted *hosted_new(const char *password)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    if (password != NULL)
        vk_config_set_static_password(cfg, NULL, password);
    vk_hosted *c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static void host_init(host *h, vk_hosted *c, unsigned seed)
{
    *h = (host){.client = c, .seed = seed};
    for (int i = 0; i < MAX_SOCKETS; i++)
        h->sockets[i].fd = -1;
}

static void host_done(host *h)
{
    vk_hosted_free(h->client);
    for (int i = 0; i < MAX_SOCKETS; i++)
        drop_socket(&h->sockets[i]);
}

/* ---- completions ------------------------------------------------------------------ */

typedef struct result {
    int completions;
    vk_status status;
    int type;               /* the reply's, or -1 */
    char text[128];         /* its string, or the failure's message */
    long long integer;
    size_t elements;
} result;

typedef struct tally {
    size_t done;
    result *results;
} tally;

typedef struct slot {
    tally *t;
    size_t i;
} slot;

static void on_reply(void *userdata, vk_status status, vk_reply *reply)
{
    slot *s = userdata;
    result *r = &s->t->results[s->i];
    r->completions++;
    r->status = status;
    r->type = reply != NULL ? (int)vk_reply_get_type(reply) : -1;
    if (reply != NULL) {
        size_t len = 0;
        const char *str = vk_reply_get_string(reply, &len);
        snprintf(r->text, sizeof r->text, "%.*s", (int)len, str != NULL ? str : "");
        r->integer = vk_reply_get_integer(reply);
        r->elements = vk_reply_get_length(reply);
    } else {
        snprintf(r->text, sizeof r->text, "%s", vk_last_error());
    }
    vk_reply_free(reply);
    s->t->done++;
}

static vk_status submit(vk_hosted *c, slot *s, int argc, const char *const *words, uint64_t *id)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(words[i]);
    return vk_hosted_command(c, argc, words, lens, on_reply, s, id);
}

/* A completion that keeps the reply (freed by the test). */
typedef struct kept {
    size_t done;
    vk_status status;
    vk_reply *reply;
} kept;

static void on_keep(void *userdata, vk_status status, vk_reply *reply)
{
    kept *k = userdata;
    k->done++;
    k->status = status;
    k->reply = reply;
}

/* ---- the server's view, through a blocking client ------------------------------- */

static vk_client *checker_new(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

/* Clients the server holds on cmd (CLIENT LIST: flag b, cmd=<cmd>); *id,
 * when given, takes the server's id of the last one listed. */
static int clients_held_on(vk_client *checker, const char *cmd, long long *id)
{
    const char *argv[] = {"CLIENT", "LIST"};
    const size_t lens[] = {6, 4};
    vk_reply *r = NULL;
    int n = 0;
    if (vk_client_command(&r, checker, NULL, 2, argv, lens) == VK_OK) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        char want[64];
        snprintf(want, sizeof want, " cmd=%s ", cmd);
        while (s != NULL && len > 0) {
            const char *eol = memchr(s, '\n', len);
            size_t line = eol != NULL ? (size_t)(eol - s) : len;
            const char *flags = memmem(s, line, " flags=", 7);
            if (flags != NULL && memmem(s, line, want, strlen(want)) != NULL) {
                const char *f = flags + 7, *end = s + line;
                while (f < end && *f != ' ' && *f != 'b')
                    f++;
                if (f < end && *f == 'b') {
                    n++;
                    if (id != NULL && line > 3 && memcmp(s, "id=", 3) == 0)
                        *id = atoll(s + 3);
                }
            }
            if (eol == NULL)
                break;
            len -= line + 1;
            s = eol + 1;
        }
    }
    vk_reply_free(r);
    return n;
}

/* Runs the host (NULL: only waits) until the server holds `want` clients
 * on cmd (0: none any more), 5 s at most. */
static bool host_run_until_held(host *h, vk_client *checker, const char *cmd, int want)
{
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(5000);
    for (;;) {
        int n = clients_held_on(checker, cmd, NULL);
        if (want == 0 ? n == 0 : n >= want)
            return true;
        if (vkt_now_ms() >= deadline) {
            VKT_CHECK_(false, "the server never held %d client(s) on %s", want, cmd);
            return false;
        }
        if (h != NULL)
            host_step(h);
        else
            vkt_sleep_ms(10);
    }
}

/* ---- tests ---------------------------------------------------------------------- */

/* 2,000 operations in flight with an error reply every tenth, bytes moved
 * a few at a time: every completion gets its own reply. */
static void test_many_in_flight_with_random_splits(void)
{
    host h;
    host_init(&h, hosted_new(NULL), 7);
    enum { N = 2000 };
    static result results[N];
    static slot slots[N];
    memset(results, 0, sizeof results);
    tally t = {0, results};
    const char *set_bad[] = {"SET", "hosted:text", "abc"};
    slot s0 = {&t, 0};
    CHECK_OK(submit(h.client, &s0, 3, set_bad, NULL));
    host_run(&h, &t.done, 1, 5000);
    t.done = 0;
    memset(results, 0, sizeof results);
    char keys[N][32];
    for (size_t i = 0; i < N; i++) {
        slots[i] = (slot){&t, i};
        if (i % 10 == 9) {
            const char *incr[] = {"INCR", "hosted:text"};
            CHECK_OK(submit(h.client, &slots[i], 2, incr, NULL));
        } else {
            snprintf(keys[i], sizeof keys[i], "v%zu", i);
            const char *echo[] = {"ECHO", keys[i]};
            CHECK_OK(submit(h.client, &slots[i], 2, echo, NULL));
        }
    }
    CHECK_EQ_INT(vk_hosted_pending(h.client), N);
    CHECK(host_run(&h, &t.done, N, 30000));
    size_t wrong = 0;
    for (size_t i = 0; i < N; i++) {
        const result *r = &results[i];
        bool ok = r->completions == 1 && r->status == VK_OK &&
                  (i % 10 == 9 ? r->type == VK_REPLY_ERROR
                               : r->type == VK_REPLY_STRING && strcmp(r->text, keys[i]) == 0);
        wrong += !ok;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK(vk_hosted_is_connected(h.client));
    CHECK_EQ_INT(vk_hosted_pending(h.client), 0);
    CHECK_EQ_INT(h.connects, 1);
    host_done(&h);
}

static void test_pipeline_and_transaction(void)
{
    host h;
    host_init(&h, hosted_new(NULL), 3);
    result results[2] = {0};
    tally t = {0, results};
    slot s0 = {&t, 0}, s1 = {&t, 1};
    vk_pipeline *p = NULL;
    CHECK_OK(vk_hosted_pipeline_new(&p, h.client));
    const char *multi[] = {"MULTI"}, *incr[] = {"INCR", "hosted:tx"}, *exec[] = {"EXEC"};
    const size_t l1[] = {5}, l2[] = {4, 9}, l3[] = {4};
    CHECK_OK(vk_pipeline_append(p, 1, multi, l1));
    CHECK_OK(vk_pipeline_append(p, 2, incr, l2));
    CHECK_OK(vk_pipeline_append(p, 1, exec, l3));
    CHECK_OK(vk_hosted_pipeline_exec(p, on_reply, &s0, NULL));
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    /* The pipeline is empty again and runs once more at once. */
    CHECK_OK(vk_pipeline_append(p, 2, incr, l2));
    CHECK_OK(vk_hosted_pipeline_exec(p, on_reply, &s1, NULL));
    CHECK(host_run(&h, &t.done, 2, 5000));
    CHECK_EQ_INT(results[0].completions, 1);
    CHECK_EQ_INT(results[1].completions, 1);
    CHECK_EQ_INT(results[0].status, VK_OK);
    CHECK_EQ_INT(results[0].type, VK_REPLY_ARRAY);
    CHECK_EQ_INT(results[0].elements, 3);
    CHECK_EQ_INT(results[1].elements, 1);
    /* In transaction mode the completion gets EXEC's results. */
    result tx_results[1] = {0};
    tally tx = {0, tx_results};
    slot tx0 = {&tx, 0};
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    CHECK_OK(vk_pipeline_append(p, 2, incr, l2));
    CHECK_OK(vk_pipeline_append(p, 2, incr, l2));
    CHECK_OK(vk_hosted_pipeline_exec(p, on_reply, &tx0, NULL));
    CHECK(host_run(&h, &tx.done, 1, 5000));
    CHECK_EQ_INT(tx_results[0].completions, 1);
    CHECK_EQ_INT(tx_results[0].status, VK_OK);
    CHECK_EQ_INT(tx_results[0].type, VK_REPLY_ARRAY);
    CHECK_EQ_INT(tx_results[0].elements, 2);
    CHECK_OK(vk_pipeline_set_transaction(p, 0));
    /* A blocking pipeline run refuses this one. */
    vk_reply *out = NULL;
    CHECK_OK(vk_pipeline_append(p, 2, incr, l2));
    CHECK_FAILS(vk_pipeline_exec(&out, p, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: the pipeline belongs to an event-loop client: run it with "
                "vk_async_pipeline_exec");
    vk_pipeline_free(p);
    host_done(&h);
}

/* The server drops the connection with INCRs in flight: each completes
 * once, with its reply or an error, and no INCR runs twice. */
static void test_connection_killed_mid_stream(void)
{
    host h;
    host_init(&h, hosted_new(NULL), 11);
    enum { N = 300 };
    static result results[N];
    static slot slots[N];
    memset(results, 0, sizeof results);
    tally t = {0, results};
    const char *del[] = {"DEL", "hosted:counter"};
    slot first = {&t, 0};
    CHECK_OK(submit(h.client, &first, 2, del, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    t.done = 0;
    memset(results, 0, sizeof results);
    for (size_t i = 0; i < N; i++) {
        slots[i] = (slot){&t, i};
        const char *incr[] = {"INCR", "hosted:counter"};
        CHECK_OK(submit(h.client, &slots[i], 2, incr, NULL));
    }
    /* Some go out, then the server kills every normal connection. */
    for (int i = 0; i < 40; i++)
        host_step(&h);
    const char *kill[] = {"CLIENT", "KILL", "TYPE", "normal"};
    free(vkt_server_cmd(server, kill, 4));
    CHECK(host_run(&h, &t.done, N, 15000));
    size_t replied = 0, failed = 0, twice = 0;
    bool seen[N + 1] = {false};
    for (size_t i = 0; i < N; i++) {
        if (results[i].completions != 1)
            twice++;
        if (results[i].status == VK_OK) {
            replied++;
            long long v = results[i].integer;
            if (v < 1 || v > N || seen[v])
                twice++;
            else
                seen[v] = true;
        } else {
            failed++;
        }
    }
    CHECK_EQ_INT(twice, 0);
    CHECK_EQ_INT(replied + failed, N);
    const char *get[] = {"GET", "hosted:counter"};
    char *value = vkt_server_cmd_line(server, get, 2, 1);
    long long on_server = value != NULL ? atoll(value) : -1;
    free(value);
    /* Every INCR that got a reply ran; a lost one may have run, once. */
    CHECK(on_server >= (long long)replied && on_server <= N);
    /* The client reconnects for the next command. */
    result again = {0};
    tally t2 = {0, &again};
    slot s2 = {&t2, 0};
    const char *ping[] = {"PING"};
    CHECK_OK(submit(h.client, &s2, 1, ping, NULL));
    CHECK(host_run(&h, &t2.done, 1, 5000));
    CHECK_EQ_INT(again.status, VK_OK);
    CHECK_EQ_STR(again.text, "PONG");
    CHECK(h.connects >= 2);
    host_done(&h);
}

/* A refused connect fails the waiting operations with the dial's text;
 * inside the rate limit's window the next fails at once. */
static void test_refused_connect_and_rate_limit(void)
{
    host h;
    host_init(&h, hosted_new(NULL), 0);
    h.refuse_connects = true;
    result results[2] = {0};
    tally t = {0, results};
    slot s0 = {&t, 0}, s1 = {&t, 1};
    const char *ping[] = {"PING"};
    CHECK_OK(submit(h.client, &s0, 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    char want[200];
    snprintf(want, sizeof want, "connection error: dial %s: connection refused",
             vkt_server_address(server));
    CHECK_EQ_INT(results[0].status, VK_ERR_IO);
    CHECK_EQ_STR(results[0].text, want);
    CHECK_OK(submit(h.client, &s1, 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 2, 5000));
    CHECK_EQ_INT(results[1].status, VK_ERR_RECONNECT_RATE_LIMITED);
    CHECK(strncmp(results[1].text, "redis reconnect: rate-limited (next attempt in ", 47) == 0);
    CHECK_EQ_INT(h.connects, 1);
    host_done(&h);
}

/* No reply within the read timeout fails the connection with its text;
 * ticks are the only clock the host gives. */
static void test_read_timeout(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_read_timeout_ms(cfg, 300);
    vk_config_set_max_retries(cfg, -1);
    vk_hosted *c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    vk_config_free(cfg);
    host h;
    host_init(&h, c, 0);
    result r = {0};
    tally t = {0, &r};
    slot s0 = {&t, 0};
    const char *ping[] = {"PING"};
    CHECK_OK(submit(c, &s0, 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));   /* connected */
    t.done = 0;
    const char *pause[] = {"CLIENT", "PAUSE", "1500"};
    free(vkt_server_cmd(server, pause, 3));
    CHECK_OK(submit(c, &s0, 1, ping, NULL));
    int64_t started = vkt_now_ms();
    CHECK(host_run(&h, &t.done, 1, 5000));
    char want[200];
    snprintf(want, sizeof want, "i/o timeout: read %s", vkt_server_address(server));
    CHECK_EQ_INT(r.status, VK_ERR_TIMEOUT);
    CHECK_EQ_STR(r.text, want);
    CHECK(vkt_now_ms() - started < 1400);
    const char *unpause[] = {"CLIENT", "UNPAUSE"};
    free(vkt_server_cmd(server, unpause, 2));
    host_done(&h);
}

/* A wrong password: the blocking client's text. */
static void test_wrong_password(void)
{
    vkt_server_opts opts = {.requirepass = "right-secret"};
    vkt_server *locked = vkt_server_start(&opts);
    CHECK(locked != NULL);
    if (locked == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(locked));
    vk_config_set_static_password(cfg, NULL, "wrong-secret");
    vk_client *blocking = NULL;
    CHECK(vk_client_new(&blocking, cfg) == VK_ERR_AUTH);
    char expected[300];
    snprintf(expected, sizeof expected, "%s", vk_last_error());
    vk_hosted *c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    vk_config_free(cfg);
    host h;
    host_init(&h, c, 5);
    result r = {0};
    tally t = {0, &r};
    slot s0 = {&t, 0};
    const char *ping[] = {"PING"};
    CHECK_OK(submit(c, &s0, 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    CHECK_EQ_INT(r.status, VK_ERR_AUTH);
    CHECK_EQ_STR(r.text, expected);
    CHECK(strstr(r.text, "wrong-secret") == NULL);
    host_done(&h);
    vkt_server_stop(locked);
}

/* Cancelled after its bytes went out and before its reply was read: the
 * reply is read and dropped, and the next command gets its own (on the
 * same connection). A command that waits on the server is on its lane, a
 * second connection in the wants: cancelled once the server has it
 * waiting, it completes at once, its connection is no longer wanted (the
 * host closes it, which ends the wait on the server), and the node's
 * connection goes on. (Before lanes the cancelled command here was that
 * BLPOP, on the one connection.) Events about a connection that is no
 * longer wanted, or never was, are ignored. */
static void test_cancel_after_write_and_stale_events(void)
{
    vk_client *checker = checker_new();
    host h;
    host_init(&h, hosted_new(NULL), 0);
    result results[5] = {0};
    tally t = {0, results};
    slot s0 = {&t, 0}, s1 = {&t, 1}, s2 = {&t, 2}, s3 = {&t, 3}, s4 = {&t, 4};
    const char *del[] = {"DEL", "hosted:cancelled", "hosted:empty"};
    CHECK_OK(submit(h.client, &s0, 3, del, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 1);
    uint64_t node = wanted_conn(&h, 0);
    CHECK(node != 0);

    /* Written (one step writes it whole), its reply not read yet. */
    const char *incr[] = {"INCR", "hosted:cancelled"};
    uint64_t id = 0;
    CHECK_OK(submit(h.client, &s1, 2, incr, &id));
    host_step(&h);
    vk_hosted_wants w;
    CHECK_OK(vk_hosted_get_wants(h.client, 0, &w));
    CHECK_EQ_INT(w.output_len, 0);
    CHECK_EQ_INT(results[1].completions, 0);
    CHECK_OK(vk_hosted_cancel(h.client, id));
    CHECK_EQ_INT(results[1].status, VK_ERR_CANCELLED);
    CHECK_EQ_INT(results[1].completions, 1);
    CHECK_FAILS(vk_hosted_cancel(h.client, id), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: no operation 2 in flight");
    const char *echo[] = {"ECHO", "after"};
    CHECK_OK(submit(h.client, &s2, 2, echo, NULL));
    CHECK(host_run(&h, &t.done, 3, 5000));
    CHECK_EQ_INT(results[2].status, VK_OK);
    CHECK_EQ_STR(results[2].text, "after");
    CHECK_EQ_INT(results[1].completions, 1);
    /* It ran, once. */
    const char *get[] = {"GET", "hosted:cancelled"};
    char *value = vkt_server_cmd_line(server, get, 2, 1);
    CHECK_EQ_STR(value, "1");
    free(value);

    /* A BLPOP without a timeout: a lane, wanted after the node's
     * connection, to the same node. */
    const char *blpop[] = {"BLPOP", "hosted:empty", "0"};
    uint64_t lane_id = 0;
    CHECK_OK(submit(h.client, &s3, 3, blpop, &lane_id));
    CHECK(lane_id & VK_LANE_ID_BIT);
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 2);
    CHECK_EQ_INT(wanted_conn(&h, 0), node);
    uint64_t lane = wanted_conn(&h, 1);
    CHECK(lane != 0 && lane != node);
    CHECK_OK(vk_hosted_get_wants(h.client, 1, &w));
    CHECK(w.connect && w.host != NULL && strcmp(w.host, "127.0.0.1") == 0 &&
          w.port == vkt_server_port(server));
    CHECK(host_run_until_held(&h, checker, "blpop", 1));
    CHECK_EQ_INT(results[3].completions, 0);
    CHECK_EQ_INT(vk_hosted_pending(h.client), 1);
    CHECK_OK(vk_hosted_cancel(h.client, lane_id));
    CHECK_EQ_INT(results[3].status, VK_ERR_CANCELLED);
    CHECK_EQ_INT(results[3].completions, 1);
    CHECK_EQ_INT(vk_hosted_pending(h.client), 0);
    char text[128];
    snprintf(text, sizeof text, "invalid argument: no operation %" PRIu64 " in flight", lane_id);
    CHECK_FAILS(vk_hosted_cancel(h.client, lane_id), VK_ERR_INVALID_ARGUMENT, text);
    /* Its connection is no longer wanted: closed, the wait ends. */
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 1);
    CHECK_EQ_INT(wanted_conn(&h, 0), node);
    CHECK(host_run_until_held(&h, checker, "blpop", 0));
    CHECK(socket_of(&h, lane) == NULL);

    /* News of the closed lane, or of a connection never wanted, changes
     * nothing. */
    const char popped[] = "*2\r\n$12\r\nhosted:empty\r\n$1\r\nx\r\n";
    vk_hosted_received(h.client, lane, popped, sizeof popped - 1);
    vk_hosted_lost(h.client, lane, VK_ERR_IO, "EOF");
    vk_hosted_lost(h.client, node + 100, VK_ERR_IO, "EOF");
    vk_hosted_received(h.client, node + 100, "+BOGUS\r\n", 8);
    CHECK_EQ_INT(results[3].completions, 1);
    const char *echo2[] = {"ECHO", "still"};
    CHECK_OK(submit(h.client, &s4, 2, echo2, NULL));
    CHECK(host_run(&h, &t.done, 5, 5000));
    CHECK_EQ_INT(results[4].status, VK_OK);
    CHECK_EQ_STR(results[4].text, "still");
    CHECK(vk_hosted_is_connected(h.client));
    /* The node's connection and the lane. */
    CHECK_EQ_INT(h.connects, 2);
    host_done(&h);
    vk_client_free(checker);
}

/* The lane in the wants: a BLPOP asks for a second connection (to the
 * node, after the node's own); while it waits there, fifty ECHOs on the
 * node's connection complete, with the bytes moved a few at a time. Once
 * answered, the lane stays wanted, idle, and serves the next BLPOP and a
 * pipeline holding one (its replies in order) without another connect.
 * vk_hosted_pending counts the operation on the lane. Freed while a BLPOP
 * waits there: it completes cancelled ("client closed") and the server's
 * wait ends with the host's socket. */
static void test_lane_is_a_second_connection(void)
{
    vk_client *checker = checker_new();
    const char *del[] = {"DEL", "hosted:lane"};
    free(vkt_server_cmd(server, del, 2));
    host h;
    host_init(&h, hosted_new(NULL), 5);
    enum { ECHOS = 50 };
    result results[ECHOS + 4];
    memset(results, 0, sizeof results);
    tally t = {0, results};
    slot slots[ECHOS + 4];
    for (size_t i = 0; i < ECHOS + 4; i++)
        slots[i] = (slot){&t, i};
    /* The node's connection first. */
    const char *ping[] = {"PING"};
    CHECK_OK(submit(h.client, &slots[0], 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 1);
    uint64_t node = wanted_conn(&h, 0);

    const char *blpop[] = {"BLPOP", "hosted:lane", "0"};
    uint64_t id = 0;
    result *pop = &results[1];
    CHECK_OK(submit(h.client, &slots[1], 3, blpop, &id));
    CHECK(id & VK_LANE_ID_BIT);
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 2);
    vk_hosted_wants w;
    CHECK_OK(vk_hosted_get_wants(h.client, 0, &w));
    CHECK(w.conn == node && !w.connect && w.read);
    CHECK_OK(vk_hosted_get_wants(h.client, 1, &w));
    uint64_t lane = w.conn;
    CHECK(lane != 0 && lane != node && w.connect && !w.read && w.output_len == 0);
    CHECK(w.host != NULL && strcmp(w.host, "127.0.0.1") == 0 &&
          w.port == vkt_server_port(server) && w.path == NULL && !w.tls);
    char texts[ECHOS][16];
    for (size_t i = 0; i < ECHOS; i++) {
        snprintf(texts[i], sizeof texts[i], "e%zu", i);
        const char *echo[] = {"ECHO", texts[i]};
        CHECK_OK(submit(h.client, &slots[2 + i], 2, echo, NULL));
    }
    CHECK_EQ_INT(vk_hosted_pending(h.client), ECHOS + 1);
    CHECK(host_run(&h, &t.done, 1 + ECHOS, 10000));
    size_t wrong = 0;
    for (size_t i = 0; i < ECHOS; i++)
        wrong += results[2 + i].status != VK_OK || strcmp(results[2 + i].text, texts[i]) != 0;
    CHECK_EQ_INT(wrong, 0);
    /* All answered while the BLPOP waits on the lane. */
    CHECK(host_run_until_held(&h, checker, "blpop", 1));
    CHECK_EQ_INT(pop->completions, 0);
    CHECK_EQ_INT(vk_hosted_pending(h.client), 1);
    CHECK_EQ_INT(h.connects, 2);
    const char *push[] = {"RPUSH", "hosted:lane", "pushed"};
    free(vkt_server_cmd(server, push, 3));
    CHECK(host_run(&h, &t.done, 2 + ECHOS, 5000));
    CHECK_EQ_INT(pop->status, VK_OK);
    CHECK_EQ_INT(pop->type, VK_REPLY_ARRAY);
    CHECK_EQ_INT(pop->elements, 2);
    CHECK_EQ_INT(vk_hosted_pending(h.client), 0);
    /* Idle, still wanted, nothing to write. */
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 2);
    CHECK_EQ_INT(wanted_conn(&h, 1), lane);

    /* The next BLPOP (it times out) and a pipeline holding one: the same
     * lane, no connect. */
    const char *timed[] = {"BLPOP", "hosted:lane", "0.05"};
    uint64_t again = 0;
    CHECK_OK(submit(h.client, &slots[2 + ECHOS], 3, timed, &again));
    CHECK((again & VK_LANE_ID_BIT) && again != id);
    CHECK_EQ_INT(wanted_conn(&h, 1), lane);
    CHECK(host_run(&h, &t.done, 3 + ECHOS, 5000));
    CHECK_EQ_INT(results[2 + ECHOS].status, VK_OK);
    CHECK_EQ_INT(results[2 + ECHOS].type, VK_REPLY_NIL);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_hosted_pipeline_new(&p, h.client));
    CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"RPUSH", "hosted:lane", "first"},
                                (const size_t[]){5, 11, 5}));
    CHECK_OK(vk_pipeline_append(p, 3, timed, (const size_t[]){5, 11, 4}));
    CHECK_OK(vk_pipeline_append(p, 3, timed, (const size_t[]){5, 11, 4}));
    kept piped = {0};
    uint64_t piped_id = 0;
    CHECK_OK(vk_hosted_pipeline_exec(p, on_keep, &piped, &piped_id));
    vk_pipeline_free(p);
    CHECK(piped_id & VK_LANE_ID_BIT);
    CHECK_EQ_INT(vk_hosted_connection_count(h.client), 2);
    CHECK(host_run(&h, &piped.done, 1, 5000));
    CHECK_EQ_INT(piped.status, VK_OK);
    const vk_reply *r = piped.reply;
    CHECK(vk_reply_get_type(r) == VK_REPLY_ARRAY && vk_reply_get_length(r) == 3);
    if (vk_reply_get_length(r) == 3) {
        CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 0)), 1);
        const vk_reply *popped = vk_reply_get_element(r, 1);
        size_t len = 0;
        const char *got = vk_reply_get_string(vk_reply_get_element(popped, 1), &len);
        CHECK(vk_reply_get_length(popped) == 2 && got != NULL && len == 5 &&
              memcmp(got, "first", 5) == 0);
        CHECK(vk_reply_get_type(vk_reply_get_element(r, 2)) == VK_REPLY_NIL);
    }
    vk_reply_free(piped.reply);
    CHECK_EQ_INT(h.connects, 2);

    /* Freed while a BLPOP waits on the lane. */
    result last = {0};
    tally t2 = {0, &last};
    slot s = {&t2, 0};
    CHECK_OK(submit(h.client, &s, 3, blpop, NULL));
    CHECK(host_run_until_held(&h, checker, "blpop", 1));
    host_done(&h);
    CHECK_EQ_INT(last.completions, 1);
    CHECK_EQ_INT(last.status, VK_ERR_CANCELLED);
    CHECK_EQ_STR(last.text, "operation cancelled: client closed");
    CHECK(host_run_until_held(NULL, checker, "blpop", 0));
    vk_client_free(checker);
}

/* Freed with operations waiting: each completes once, cancelled. */
static void test_free_cancels(void)
{
    host h;
    host_init(&h, hosted_new(NULL), 0);
    result results[3] = {0};
    tally t = {0, results};
    slot slots[3] = {{&t, 0}, {&t, 1}, {&t, 2}};
    const char *ping[] = {"PING"};
    for (size_t i = 0; i < 3; i++)
        CHECK_OK(submit(h.client, &slots[i], 1, ping, NULL));
    host_done(&h);
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ_INT(results[i].completions, 1);
        CHECK_EQ_INT(results[i].status, VK_ERR_CANCELLED);
        CHECK_EQ_STR(results[i].text, "operation cancelled: client closed");
    }
}

/* New credentials (as the IAM refresh loop hands over a new token) go to
 * the open connection as an AUTH in line, written before the next command
 * and on the same connection: no reconnect, no command without it. */
static void test_new_credentials_authenticate_in_line(void)
{
    vkt_server_opts opts = {.requirepass = "first-token"};
    vkt_server *locked = vkt_server_start(&opts);
    CHECK(locked != NULL);
    if (locked == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(locked));
    vk_config_set_static_password(cfg, NULL, "first-token");
    vk_hosted *c = NULL;
    CHECK_OK(vk_hosted_new(&c, cfg));
    vk_config_free(cfg);
    host h;
    host_init(&h, c, 0);
    result results[2] = {0};
    tally t = {0, results};
    slot s0 = {&t, 0}, s1 = {&t, 1};
    const char *ping[] = {"PING"};
    CHECK_OK(submit(c, &s0, 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    CHECK_EQ_STR(results[0].text, "PONG");

    /* The server takes the new token, then the client is handed it. */
    const char *rotate[] = {"CONFIG", "SET", "requirepass", "second-token"};
    char *ok = vkt_server_cmd(locked, rotate, 4);
    CHECK(ok != NULL && strcmp(ok, "+OK") == 0);
    free(ok);
    vk_driven *d = (vk_driven *)c;
    CHECK_OK(vk__credentials_set(&d->core->credentials, NULL, "second-token"));

    capture cap = {{0}, 0};
    h.cap = &cap;
    const char *echo[] = {"ECHO", "after-rotation"};
    CHECK_OK(submit(c, &s1, 2, echo, NULL));
    int64_t deadline = vkt_now_ms() + 5000;
    while (t.done < 2 && vkt_now_ms() < deadline)
        host_step(&h);
    h.cap = NULL;
    CHECK_EQ_INT(results[1].status, VK_OK);
    CHECK_EQ_STR(results[1].text, "after-rotation");
    const char auth[] = "*2\r\n$4\r\nAUTH\r\n$12\r\nsecond-token\r\n";
    const char echo_bytes[] = "*2\r\n$4\r\nECHO\r\n";
    const char *at_auth = memmem(cap.bytes, cap.len, auth, sizeof auth - 1);
    const char *at_echo = memmem(cap.bytes, cap.len, echo_bytes, sizeof echo_bytes - 1);
    CHECK(at_auth != NULL && at_echo != NULL && at_auth < at_echo);
    CHECK_EQ_INT(h.connects, 1);
    host_done(&h);
    vkt_server_stop(locked);
}

/* Success leaves the thread's last error alone: connecting, replies and
 * freeing a client with nothing pending set none. */
static void test_success_keeps_last_error(void)
{
    CHECK(vk_config_set_db(NULL, 1) != VK_OK);
    char before[200];
    snprintf(before, sizeof before, "%s", vk_last_error());
    host h;
    host_init(&h, hosted_new(NULL), 0);
    result r = {0};
    tally t = {0, &r};
    slot s0 = {&t, 0};
    const char *ping[] = {"PING"};
    CHECK_OK(submit(h.client, &s0, 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    CHECK_EQ_STR(r.text, "PONG");
    CHECK_EQ_STR(vk_last_error(), before);
    host_done(&h);
    CHECK_EQ_STR(vk_last_error(), before);
}

/* ---- the distributed lock through a hosted client ------------------------------- */

static int lock_call_depth;   /* vk_async_lock_* calls in progress */

typedef struct lock_result {
    size_t done;
    vk_status status;
    vk_lock *lock;
    char text[256];
} lock_result;

static void on_lock(void *userdata, vk_status status, vk_lock *lock)
{
    lock_result *r = userdata;
    VKT_CHECK_(lock_call_depth == 0, "a lock completion ran inside the call that started it");
    r->done++;
    VKT_CHECK_(r->done == 1, "a lock completion ran %zu times", r->done);
    r->status = status;
    r->lock = lock;
    snprintf(r->text, sizeof r->text, "%s", status == VK_OK ? "" : vk_last_error());
}

static void on_lock_done(void *userdata, vk_status status)
{
    on_lock(userdata, status, NULL);
}

/* The value a server holds under key ("" when none). */
static void server_value(const char *key, char *out, size_t cap)
{
    const char *get[] = {"GET", key};
    char *head = vkt_server_cmd(server, get, 2);
    char *value = head != NULL && strcmp(head, "$-1") != 0
                      ? vkt_server_cmd_line(server, get, 2, 1) : NULL;
    snprintf(out, cap, "%s", value != NULL ? value : "");
    free(head);
    free(value);
}

/* A lock manager over a hosted client: try, contention and unlock, an
 * acquire that waits between tries on the client's ticks, with the bytes
 * moved in small random pieces. The value the client wrote is the one
 * the server holds. */
/* A script through the hosted client: after SCRIPT FLUSH, EVALSHA is
 * answered NOSCRIPT and EVAL follows on the same connection; the
 * completion sees only the final reply; the next run is EVALSHA alone. */
static void test_script_through_hosted_client(void)
{
    const char *flush[] = {"SCRIPT", "FLUSH"};
    free(vkt_server_cmd(server, flush, 2));
    host h;
    host_init(&h, hosted_new(NULL), 23);
    vk_script *script = NULL;
    const char *source = "return ARGV[1] .. KEYS[1]";
    CHECK_OK(vk_script_new(&script, source, strlen(source)));
    const char *keys[] = {"hosted:script"};
    const size_t keylens[] = {13};
    const char *args[] = {"run:"};
    const size_t arglens[] = {4};
    for (int run = 0; run < 2; run++) {
        capture cap = {{0}, 0};
        h.cap = &cap;
        kept k = {0};
        CHECK_OK(vk_hosted_script_run(h.client, script, 1, keys, keylens, 1, args, arglens,
                                      on_keep, &k, NULL));
        CHECK_EQ_INT(k.done, 0);
        CHECK(host_run(&h, &k.done, 1, (int)vkt_scaled_ms(5000)));
        h.cap = NULL;
        CHECK_EQ_INT(k.status, VK_OK);
        size_t len = 0;
        const char *text = vk_reply_get_string(k.reply, &len);
        CHECK(vk_reply_get_type(k.reply) == VK_REPLY_STRING && len == 17 &&
              memcmp(text, "run:hosted:script", 17) == 0);
        vk_reply_free(k.reply);
        CHECK(memmem(cap.bytes, cap.len, "EVALSHA", 7) != NULL);
        /* EVAL with the source only the first time. */
        bool by_source = memmem(cap.bytes, cap.len, source, strlen(source)) != NULL;
        CHECK(by_source == (run == 0));
    }
    CHECK_FAILS(vk_hosted_script_run(NULL, script, 0, NULL, NULL, 0, NULL, NULL, on_keep, NULL,
                                     NULL),
                VK_ERR_NIL_CLIENT, "redis client is nil");
    vk_script_free(script);
    host_done(&h);
}

static void test_lock_through_hosted_client(void)
{
    const char *key = "hosted:lock";
    const char *del[] = {"DEL", key, "{hosted:lock}:fencing"};
    free(vkt_server_cmd(server, del, 3));
    host h;
    host_init(&h, hosted_new(NULL), 17);
    vk_async_lock_manager *m = NULL;
    CHECK_OK(vk_hosted_lock_manager_new(&m, &h.client, 1));
    if (m == NULL) {
        host_done(&h);
        return;
    }

    lock_result got = {0};
    lock_call_depth++;
    CHECK_OK(vk_async_lock_try(m, key, strlen(key), on_lock, &got, NULL));
    lock_call_depth--;
    CHECK_EQ_INT(got.done, 0);
    capture cap = {{0}, 0};
    h.cap = &cap;
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(5000);
    while (got.done < 1 && vkt_now_ms() < deadline)
        host_step(&h);
    h.cap = NULL;
    CHECK_EQ_INT(got.done, 1);
    CHECK_EQ_INT(got.status, VK_OK);
    CHECK(got.lock != NULL);
    if (got.lock == NULL) {
        vk_async_lock_manager_free(m);
        host_done(&h);
        return;
    }
    int64_t token = vk_lock_fencing_token(got.lock);
    CHECK(token > 0);
    CHECK(vk_lock_validity_ms(got.lock) > 0 && vk_lock_validity_ms(got.lock) <= 10000);
    char value[128], wire[160];
    server_value(key, value, sizeof value);
    CHECK_EQ_INT(strlen(value), 32);
    snprintf(wire, sizeof wire, "\r\n$32\r\n%s\r\n", value);
    CHECK(memmem(cap.bytes, cap.len, wire, strlen(wire)) != NULL);
    char counter[32];
    server_value("{hosted:lock}:fencing", counter, sizeof counter);
    CHECK_EQ_INT(atoll(counter), token);

    /* Taken: a second try completes with VK_OK and no handle. */
    lock_result again = {0};
    lock_call_depth++;
    CHECK_OK(vk_async_lock_try(m, key, strlen(key), on_lock, &again, NULL));
    lock_call_depth--;
    CHECK(host_run(&h, &again.done, 1, vkt_scaled_ms(5000)));
    CHECK_EQ_INT(again.status, VK_OK);
    CHECK(again.lock == NULL);

    /* Released through the hosted client. */
    lock_result released = {0};
    lock_call_depth++;
    CHECK_OK(vk_async_lock_unlock(got.lock, on_lock_done, &released));
    lock_call_depth--;
    CHECK_EQ_INT(released.done, 0);
    CHECK(host_run(&h, &released.done, 1, vkt_scaled_ms(5000)));
    CHECK_EQ_INT(released.status, VK_OK);
    server_value(key, value, sizeof value);
    CHECK_EQ_STR(value, "");
    CHECK_EQ_INT(vk_lock_validity_ms(got.lock), 0);
    vk_lock_free(got.lock);

    /* Someone holds it for 300 ms: an acquire waits on the ticks. */
    const char *set[] = {"SET", key, "someone-else", "PX", "300"};
    free(vkt_server_cmd(server, set, 5));
    int64_t started = vkt_now_ms();
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 40;
    opts.retry_delay_ms = 25;
    lock_result waited = {0};
    lock_call_depth++;
    CHECK_OK(vk_async_lock_acquire(m, key, strlen(key), &opts, on_lock, &waited, NULL));
    lock_call_depth--;
    CHECK(host_run(&h, &waited.done, 1, vkt_scaled_ms(5000)));
    CHECK_EQ_INT(waited.status, VK_OK);
    CHECK(waited.lock != NULL);
    VKT_CHECK_(vkt_now_ms() - started >= 290, "acquired after %lld ms",
               (long long)(vkt_now_ms() - started));
    if (waited.lock != NULL) {
        CHECK(vk_lock_fencing_token(waited.lock) > token);
        lock_result out = {0};
        lock_call_depth++;
        CHECK_OK(vk_async_lock_unlock(waited.lock, on_lock_done, &out));
        lock_call_depth--;
        CHECK(host_run(&h, &out.done, 1, vkt_scaled_ms(5000)));
        CHECK_EQ_INT(out.status, VK_OK);
        server_value(key, value, sizeof value);
        CHECK_EQ_STR(value, "");
        vk_lock_free(waited.lock);
    }
    vk_async_lock_manager_free(m);
    host_done(&h);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(NULL);
    if (server == NULL) {
        fprintf(stderr, "no server\n");
        return 1;
    }
    RUN(test_many_in_flight_with_random_splits);
    RUN(test_pipeline_and_transaction);
    RUN(test_connection_killed_mid_stream);
    RUN(test_refused_connect_and_rate_limit);
    RUN(test_read_timeout);
    RUN(test_wrong_password);
    RUN(test_cancel_after_write_and_stale_events);
    RUN(test_lane_is_a_second_connection);
    RUN(test_free_cancels);
    RUN(test_success_keeps_last_error);
    RUN(test_new_credentials_authenticate_in_line);
    RUN(test_lock_through_hosted_client);
    RUN(test_script_through_hosted_client);
    vkt_server_stop(server);
    return vkt_finish();
}
