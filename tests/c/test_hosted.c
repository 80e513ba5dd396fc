/*
 * Bytes mode (vk_hosted), driven by a host of this test that owns plain
 * blocking sockets, against a real server (VKTEST_NEEDS_SERVER): the host
 * only does what the wants say, writes and reads in random small pieces,
 * and reports back. Commands, pipelines and thousands in flight with
 * errors among them; a connection killed mid-stream (no write re-sent);
 * a refused connect and the reconnect rate limit; a read timeout; a wrong
 * password; cancel after the write; events of a replaced connection.
 */
#include "vktest.h"
#include "servers.h"

#include "vkclient_async.h"
/* Below the API: the credentials a client hands its connections, as the
 * IAM refresh loop replaces them. */
#include "api/driven.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static vkt_server *server;

/* ---- the host ---------------------------------------------------------------- */

typedef struct host {
    vk_hosted *client;
    uint64_t conn;          /* the connection the socket belongs to */
    int fd;
    unsigned seed;          /* 0: whole writes and reads */
    int connects;
    bool refuse_connects;   /* report every connect as refused */
} host;

static size_t piece(host *h, size_t len)
{
    if (h->seed == 0 || len <= 1)
        return len;
    size_t n = 1 + (size_t)(rand_r(&h->seed) % 13);
    return n < len ? n : len;
}

static void drop_socket(host *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}

/* One round of what the client wants (one connection: standalone). */
static void host_step(host *h)
{
    vk_hosted_wants w = {0};
    if (vk_hosted_connection_count(h->client) == 1)
        CHECK_OK(vk_hosted_get_wants(h->client, 0, &w));
    if (w.conn != h->conn) {
        drop_socket(h);
        h->conn = w.conn;
    }
    if (w.connect) {
        h->connects++;
        int fd = h->refuse_connects ? -1 : vkt_dial_tcp(w.host, w.port);
        if (fd < 0) {
            vk_hosted_connect_failed(h->client, w.conn, VK_ERR_IO,
                                     h->refuse_connects ? "connection refused"
                                                        : strerror(errno));
            return;
        }
        h->fd = fd;
        vk_hosted_connected(h->client, w.conn);
        return;
    }
    if (w.output_len > 0 && h->fd >= 0) {
        ssize_t n = send(h->fd, w.output, piece(h, w.output_len), MSG_NOSIGNAL);
        if (n > 0)
            vk_hosted_wrote(h->client, w.conn, (size_t)n);
        else
            vk_hosted_lost(h->client, w.conn, VK_ERR_IO, strerror(errno));
        return;
    }
    int64_t tick_in = vk_hosted_tick_in_ms(h->client);
    int wait_ms = tick_in >= 0 && tick_in < 20 ? (int)tick_in : 20;
    if (w.read && h->fd >= 0) {
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        if (poll(&p, 1, wait_ms) == 1) {
            char buf[65536];
            ssize_t n = recv(h->fd, buf, piece(h, sizeof buf), 0);
            if (n > 0)
                vk_hosted_received(h->client, w.conn, buf, (size_t)n);
            else
                vk_hosted_lost(h->client, w.conn, VK_ERR_IO, n == 0 ? "EOF" : strerror(errno));
            return;
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
    *h = (host){.client = c, .fd = -1, .seed = seed};
}

static void host_done(host *h)
{
    vk_hosted_free(h->client);
    drop_socket(h);
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

/* Cancelled after its bytes went out: its reply is read and dropped, and
 * the next command gets its own. Events about a replaced connection are
 * ignored. */
static void test_cancel_after_write_and_stale_events(void)
{
    host h;
    host_init(&h, hosted_new(NULL), 0);
    result results[3] = {0};
    tally t = {0, results};
    slot s0 = {&t, 0}, s1 = {&t, 1}, s2 = {&t, 2};
    const char *ping[] = {"PING"};
    CHECK_OK(submit(h.client, &s0, 1, ping, NULL));
    CHECK(host_run(&h, &t.done, 1, 5000));
    uint64_t conn = h.conn;
    const char *blpop[] = {"BLPOP", "hosted:empty", "1"};
    uint64_t id = 0;
    CHECK_OK(submit(h.client, &s1, 3, blpop, &id));
    host_step(&h);   /* written */
    CHECK_OK(vk_hosted_cancel(h.client, id));
    CHECK_EQ_INT(results[1].status, VK_ERR_CANCELLED);
    CHECK_EQ_INT(results[1].completions, 1);
    CHECK_FAILS(vk_hosted_cancel(h.client, id), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: no operation 2 in flight");
    const char *echo[] = {"ECHO", "after"};
    CHECK_OK(submit(h.client, &s2, 2, echo, NULL));
    /* A stale connection's news changes nothing. */
    vk_hosted_lost(h.client, conn + 100, VK_ERR_IO, "EOF");
    vk_hosted_received(h.client, conn + 100, "+BOGUS\r\n", 8);
    CHECK(host_run(&h, &t.done, 3, 5000));
    CHECK_EQ_INT(results[2].status, VK_OK);
    CHECK_EQ_STR(results[2].text, "after");
    CHECK_EQ_INT(results[1].completions, 1);
    CHECK_EQ_INT(h.connects, 1);
    host_done(&h);
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

/* Everything the host wrote, for a look at the bytes on the wire. */
typedef struct capture {
    char bytes[8192];
    size_t len;
} capture;

/* host_step that also keeps what it writes. */
static void host_step_capturing(host *h, capture *cap)
{
    vk_hosted_wants w = {0};
    if (vk_hosted_connection_count(h->client) == 1 &&
        vk_hosted_get_wants(h->client, 0, &w) == VK_OK && !w.connect && w.output_len > 0 &&
        h->fd >= 0 && w.conn == h->conn) {
        size_t n = w.output_len < sizeof cap->bytes - cap->len ? w.output_len
                                                               : sizeof cap->bytes - cap->len;
        memcpy(cap->bytes + cap->len, w.output, n);
        cap->len += n;
        ssize_t sent = send(h->fd, w.output, w.output_len, MSG_NOSIGNAL);
        if (sent > 0)
            vk_hosted_wrote(h->client, w.conn, (size_t)sent);
        return;
    }
    host_step(h);
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
    const char *echo[] = {"ECHO", "after-rotation"};
    CHECK_OK(submit(c, &s1, 2, echo, NULL));
    int64_t deadline = vkt_now_ms() + 5000;
    while (t.done < 2 && vkt_now_ms() < deadline)
        host_step_capturing(&h, &cap);
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
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(5000);
    while (got.done < 1 && vkt_now_ms() < deadline)
        host_step_capturing(&h, &cap);
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
    RUN(test_free_cancels);
    RUN(test_success_keeps_last_error);
    RUN(test_new_credentials_authenticate_in_line);
    RUN(test_lock_through_hosted_client);
    vkt_server_stop(server);
    return vkt_finish();
}
