/*
 * The multiplexed connection's protocol state (mux.c), driven by a small
 * blocking-socket driver of this test against a real server
 * (VKTEST_NEEDS_SERVER): a thousand requests in flight with errors among
 * them, replies fed in random splits, a connection killed mid-stream,
 * cancellation before and after a request was written, back-pressure, an
 * 8 MB reply among small ones, streams the mux must refuse, a subscribed
 * connection's messages, and the handshake's steps sent through it.
 */
#include "vktest.h"
#include "servers.h"
#include "handshake.h"
#include "mux.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static vkt_server *server;

/* ---- what each operation expects, and what it got ------------------------ */

/* EXPECT_ANY: the reply is not checked (or none is expected). */
typedef enum expect { EXPECT_TEXT, EXPECT_ERROR, EXPECT_ANY } expect;

typedef struct op {
    expect kind;
    char text[64];         /* EXPECT_TEXT: the reply's bytes */
    int completions;
    vk_status status;
    bool sent;
    bool matched;          /* the reply was the one expected */
} op;

typedef struct run {
    op *ops;
    size_t completed;
    size_t order_breaks;   /* completions out of submission order */
    op *last;
} run;

static void on_done(void *userdata, void *opaque, vk_status status, redisReply *reply, bool sent)
{
    run *r = userdata;
    op *o = opaque;
    o->completions++;
    o->status = status;
    o->sent = sent;
    if (status == VK_OK) {
        if (o->kind == EXPECT_TEXT)
            o->matched = reply->type == REDIS_REPLY_STRING && reply->len == strlen(o->text) &&
                         memcmp(reply->str, o->text, reply->len) == 0;
        else if (o->kind == EXPECT_ERROR)
            o->matched = reply->type == REDIS_REPLY_ERROR;
        vk__reply_free(reply);
    }
    if (r->last != NULL && o < r->last)
        r->order_breaks++;
    r->last = o;
    r->completed++;
}

/* ---- the driver: a blocking socket ------------------------------------------ */

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)vkt_server_port(server)) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Writes what the mux has; counts the write calls. */
static bool flush_output(vk_mux *m, int fd, int *writes)
{
    size_t len;
    const char *bytes = vk__mux_output(m, &len);
    while (len > 0) {
        ssize_t n = send(fd, bytes, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        (*writes)++;
        vk__mux_wrote(m, (size_t)n);
        bytes = vk__mux_output(m, &len);
    }
    return true;
}

static unsigned next_random(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

/* Reads once (5 s at most) and feeds what came, in pieces of 1..split
 * bytes when split > 0. On end of stream or a read error the connection is
 * failed, as a driver must. False when nothing more will come. */
static bool pump(vk_mux *m, int fd, size_t split, unsigned *seed)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, (int)vkt_scaled_ms(5000)) != 1) {
        vk__fail(VK_ERR_TIMEOUT, "no reply");
        vk__mux_fail(m, VK_ERR_TIMEOUT);
        return false;
    }
    static char buf[65536];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
        vk__fail(VK_ERR_IO, "connection closed by the server");
        vk__mux_fail(m, VK_ERR_IO);
        return false;
    }
    size_t at = 0;
    while (at < (size_t)n) {
        size_t piece = (size_t)n - at;
        if (split > 0) {
            size_t most = 1 + next_random(seed) % split;
            piece = piece < most ? piece : most;
        }
        if (vk__mux_feed(m, buf + at, piece) != VK_OK)
            return false;
        at += piece;
    }
    return true;
}

static void submit_words(vk_mux *m, op *o, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    CHECK_OK(vk__mux_submit(m, o, argc, argv, lens));
}

/* ---- the tests ------------------------------------------------------------- */

/* A thousand requests in flight on one connection, every tenth an error
 * reply, written in as few writes as the socket takes them; each gets its
 * own reply, in order, with the stream split at random. */
static void run_thousand(size_t split)
{
    enum { N = 1000 };
    const char *text_key[] = { "SET", "mux:text", "not a number" };
    free(vkt_server_cmd(server, text_key, 3));
    int fd = dial();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    run r = { .ops = calloc(N, sizeof(op)) };
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, N, on_done, &r));
    for (int i = 0; i < N; i++) {
        op *o = &r.ops[i];
        if (i % 10 == 9) {
            o->kind = EXPECT_ERROR;
            const char *argv[] = { "INCR", "mux:text" };
            submit_words(m, o, 2, argv);
        } else {
            o->kind = EXPECT_TEXT;
            snprintf(o->text, sizeof o->text, "reply-%d", i);
            const char *argv[] = { "ECHO", o->text };
            submit_words(m, o, 2, argv);
        }
    }
    CHECK_EQ_INT(vk__mux_in_flight(m), N);
    CHECK(!vk__mux_can_submit(m));
    int writes = 0;
    CHECK(flush_output(m, fd, &writes));
    /* About 22 KB of requests: the socket takes them in one or two writes,
     * never one per request. */
    CHECK(writes >= 1 && writes <= 4);
    unsigned seed = 7;
    while (r.completed < N && pump(m, fd, split, &seed)) {
    }
    CHECK_EQ_INT(r.completed, N);
    CHECK_EQ_INT(r.order_breaks, 0);
    size_t matched = 0;
    for (int i = 0; i < N; i++)
        matched += r.ops[i].completions == 1 && r.ops[i].status == VK_OK && r.ops[i].matched;
    CHECK_EQ_INT(matched, N);
    CHECK_EQ_INT(vk__mux_in_flight(m), 0);
    CHECK(vk__mux_can_submit(m));
    vk__mux_free(m);
    close(fd);
    free(r.ops);
}

static void test_thousand_in_flight(void)
{
    run_thousand(0);
}

static void test_thousand_in_flight_random_splits(void)
{
    run_thousand(7);    /* pieces of 1 to 7 bytes */
}

/* The server kills the connection in the middle of the stream: the
 * requests before the kill get their replies; those after it fail with
 * the connection's error, sent because they were written; requests not
 * yet written fail as not sent. */
static void test_connection_killed_mid_stream(void)
{
    int fd = dial();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    run r = { .ops = calloc(120, sizeof(op)) };
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 128, on_done, &r));
    for (int i = 0; i < 100; i++) {
        op *o = &r.ops[i];
        if (i == 50) {
            /* The server answers, then closes the connection. */
            o->kind = EXPECT_ANY;
            const char *argv[] = { "CLIENT", "KILL", "SKIPME", "no", "TYPE", "normal" };
            submit_words(m, o, 6, argv);
            continue;
        }
        o->kind = i < 50 ? EXPECT_TEXT : EXPECT_ANY;
        snprintf(o->text, sizeof o->text, "before-kill-%d", i);
        const char *argv[] = { "ECHO", o->text };
        submit_words(m, o, 2, argv);
    }
    int writes = 0;
    CHECK(flush_output(m, fd, &writes));
    for (int i = 100; i < 110; i++) {
        r.ops[i].kind = EXPECT_ANY;
        const char *argv[] = { "ECHO", "never-written" };
        submit_words(m, &r.ops[i], 2, argv);
    }
    unsigned seed = 1;
    while (vk__mux_status(m) == VK_OK && pump(m, fd, 0, &seed)) {
    }
    CHECK_EQ_INT(vk__mux_status(m), VK_ERR_IO);
    CHECK_EQ_INT(r.completed, 110);
    CHECK_EQ_INT(r.order_breaks, 0);
    for (int i = 0; i < 50; i++)
        CHECK(r.ops[i].status == VK_OK && r.ops[i].matched);
    CHECK(r.ops[50].status == VK_OK);   /* CLIENT KILL's own reply (an integer) */
    for (int i = 51; i < 100; i++)
        CHECK(r.ops[i].completions == 1 && r.ops[i].status == VK_ERR_IO && r.ops[i].sent);
    for (int i = 100; i < 110; i++)
        CHECK(r.ops[i].completions == 1 && r.ops[i].status == VK_ERR_IO && !r.ops[i].sent);
    CHECK_EQ_STR(vk_last_error(), "connection error: connection closed by the server");
    /* A failed connection takes nothing more. */
    const char *ping[] = { "PING" };
    size_t ping_len[] = { 4 };
    CHECK_EQ_INT(vk__mux_submit(m, &r.ops[110], 1, ping, ping_len), VK_ERR_IO);
    vk__mux_free(m);
    close(fd);
    free(r.ops);
}

/* Cancelled after it was written: its reply is read and dropped, and the
 * next operation gets its own. Cancelled before: its bytes never go out
 * and it completes at once as cancelled, not sent. */
static void test_cancel(void)
{
    int fd = dial();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    run r = { .ops = calloc(6, sizeof(op)) };
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 8, on_done, &r));
    const char *names[] = { "a", "b", "c", "d", "e", "f" };
    for (int i = 0; i < 3; i++) {
        r.ops[i].kind = EXPECT_TEXT;
        snprintf(r.ops[i].text, sizeof r.ops[i].text, "%s", names[i]);
        const char *argv[] = { "ECHO", names[i] };
        submit_words(m, &r.ops[i], 2, argv);
    }
    int writes = 0;
    CHECK(flush_output(m, fd, &writes));
    CHECK(vk__mux_cancel(m, &r.ops[1]));
    CHECK(!vk__mux_cancel(m, &r.ops[1]));    /* once */
    CHECK_EQ_INT(r.ops[1].completions, 0);   /* its reply is still to come */
    for (int i = 3; i < 6; i++) {
        r.ops[i].kind = EXPECT_TEXT;
        snprintf(r.ops[i].text, sizeof r.ops[i].text, "%s", names[i]);
        const char *argv[] = { "ECHO", names[i] };
        submit_words(m, &r.ops[i], 2, argv);
    }
    CHECK(vk__mux_cancel(m, &r.ops[4]));
    CHECK_EQ_INT(r.ops[4].completions, 1);
    CHECK_EQ_INT(r.ops[4].status, VK_ERR_CANCELLED);
    CHECK(!r.ops[4].sent);
    /* e's bytes left the output: only d and f remain to be written. */
    size_t len;
    const char *bytes = vk__mux_output(m, &len);
    CHECK(len == 2 * strlen("*2\r\n$4\r\nECHO\r\n$1\r\nd\r\n"));
    CHECK(len >= 2 && memmem(bytes, len, "\r\ne\r\n", 5) == NULL);
    CHECK(flush_output(m, fd, &writes));
    CHECK_EQ_INT(vk__mux_in_flight(m), 5);   /* a, b (cancelled, in line), c, d, f */
    unsigned seed = 3;
    while (vk__mux_in_flight(m) > 0 && pump(m, fd, 0, &seed)) {
    }
    CHECK(r.ops[0].matched && r.ops[2].matched && r.ops[3].matched && r.ops[5].matched);
    CHECK_EQ_INT(r.ops[1].completions, 0);   /* dropped: never completed */
    CHECK_EQ_INT(r.completed, 5);
    CHECK(!vk__mux_cancel(m, &r.ops[0]));    /* already complete */
    vk__mux_free(m);
    close(fd);
    free(r.ops);
}

/* The in-flight bound: a submit beyond it is refused and nothing is
 * queued; a reply makes room again. */
static void test_back_pressure(void)
{
    int fd = dial();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    run r = { .ops = calloc(6, sizeof(op)) };
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 4, on_done, &r));
    const char *argv[] = { "ECHO", "x" };
    size_t lens[] = { 4, 1 };
    for (int i = 0; i < 4; i++) {
        r.ops[i].kind = EXPECT_TEXT;
        strcpy(r.ops[i].text, "x");
        CHECK_OK(vk__mux_submit(m, &r.ops[i], 2, argv, lens));
    }
    CHECK(!vk__mux_can_submit(m));
    size_t before;
    vk__mux_output(m, &before);
    CHECK_EQ_INT(vk__mux_submit(m, &r.ops[4], 2, argv, lens), VK_ERR_INVALID_ARGUMENT);
    size_t after;
    vk__mux_output(m, &after);
    CHECK_EQ_INT(after, before);
    int writes = 0;
    CHECK(flush_output(m, fd, &writes));
    unsigned seed = 5;
    while (vk__mux_in_flight(m) > 0 && pump(m, fd, 0, &seed)) {
    }
    CHECK(vk__mux_can_submit(m));
    r.ops[4].kind = EXPECT_TEXT;
    strcpy(r.ops[4].text, "x");
    CHECK_OK(vk__mux_submit(m, &r.ops[4], 2, argv, lens));
    CHECK(flush_output(m, fd, &writes));
    while (vk__mux_in_flight(m) > 0 && pump(m, fd, 0, &seed)) {
    }
    CHECK_EQ_INT(r.completed, 5);
    vk__mux_free(m);
    close(fd);
    free(r.ops);
}

/* An 8 MB reply between small ones, fed as the socket delivers it. */
static void test_big_reply_among_small(void)
{
    enum { BIG = 8 * 1024 * 1024 };
    int fd = dial();
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    char *big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    run r = { .ops = calloc(4, sizeof(op)) };
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 8, on_done, &r));
    const char *set[] = { "SET", "mux:big", big };
    size_t set_lens[] = { 3, 7, BIG };
    r.ops[0].kind = EXPECT_ANY;   /* +OK: a status, checked below */
    CHECK_OK(vk__mux_submit(m, &r.ops[0], 3, set, set_lens));
    const char *echo1[] = { "ECHO", "small-1" };
    r.ops[1].kind = EXPECT_TEXT;
    strcpy(r.ops[1].text, "small-1");
    submit_words(m, &r.ops[1], 2, echo1);
    const char *strlen_cmd[] = { "STRLEN", "mux:big" };
    r.ops[2].kind = EXPECT_ANY;
    submit_words(m, &r.ops[2], 2, strlen_cmd);
    const char *echo2[] = { "ECHO", "small-2" };
    r.ops[3].kind = EXPECT_TEXT;
    strcpy(r.ops[3].text, "small-2");
    submit_words(m, &r.ops[3], 2, echo2);
    int writes = 0;
    CHECK(flush_output(m, fd, &writes));
    unsigned seed = 9;
    while (vk__mux_in_flight(m) > 0 && pump(m, fd, 0, &seed)) {
    }
    CHECK_EQ_INT(r.completed, 4);
    CHECK(r.ops[1].matched && r.ops[3].matched);

    /* Now the big one comes back in the middle. */
    run r2 = { .ops = calloc(3, sizeof(op)) };
    vk_mux *m2 = NULL;
    CHECK_OK(vk__mux_new(&m2, 8, on_done, &r2));
    r2.ops[0].kind = EXPECT_TEXT;
    strcpy(r2.ops[0].text, "before");
    const char *e1[] = { "ECHO", "before" };
    submit_words(m2, &r2.ops[0], 2, e1);
    const char *get[] = { "GET", "mux:big" };
    r2.ops[1].kind = EXPECT_ANY;
    submit_words(m2, &r2.ops[1], 2, get);
    r2.ops[2].kind = EXPECT_TEXT;
    strcpy(r2.ops[2].text, "after");
    const char *e2[] = { "ECHO", "after" };
    submit_words(m2, &r2.ops[2], 2, e2);
    CHECK(flush_output(m2, fd, &writes));
    while (vk__mux_in_flight(m2) > 0 && pump(m2, fd, 0, &seed)) {
    }
    CHECK_EQ_INT(r2.completed, 3);
    CHECK(r2.ops[0].matched && r2.ops[2].matched && r2.ops[1].status == VK_OK);
    vk__mux_free(m2);
    vk__mux_free(m);
    close(fd);
    free(r.ops);
    free(r2.ops);
    free(big);
}

/* Streams no server may send: each fails the connection with a protocol
 * error, and every operation in line gets it. */
static void test_refused_streams(void)
{
    run r = { .ops = calloc(2, sizeof(op)) };
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 4, on_done, &r));
    CHECK_FAILS(vk__mux_feed(m, "+OK\r\n", 5), VK_ERR_PROTOCOL,
                "protocol error: a reply that no request asked for");
    CHECK_EQ_INT(vk__mux_status(m), VK_ERR_PROTOCOL);
    vk__mux_free(m);

    CHECK_OK(vk__mux_new(&m, 4, on_done, &r));
    const char *argv[] = { "PING" };
    size_t lens[] = { 4 };
    CHECK_OK(vk__mux_submit(m, &r.ops[0], 1, argv, lens));
    CHECK_OK(vk__mux_submit(m, &r.ops[1], 1, argv, lens));
    size_t queued;
    vk__mux_output(m, &queued);
    vk__mux_wrote(m, queued);   /* all of both requests */
    CHECK_EQ_INT(vk__mux_feed(m, "!garbage\r\n", 10), VK_ERR_PROTOCOL);
    CHECK(r.ops[0].status == VK_ERR_PROTOCOL && r.ops[0].sent && r.ops[0].completions == 1);
    CHECK(r.ops[1].status == VK_ERR_PROTOCOL && r.ops[1].sent && r.ops[1].completions == 1);
    vk__mux_free(m);

    /* Closing a mux with operations in line fails them once, not sent. */
    memset(r.ops, 0, 2 * sizeof(op));
    CHECK_OK(vk__mux_new(&m, 4, on_done, &r));
    CHECK_OK(vk__mux_submit(m, &r.ops[0], 1, argv, lens));
    vk__mux_free(m);
    CHECK(r.ops[0].completions == 1 && r.ops[0].status == VK_ERR_IO && !r.ops[0].sent);
    free(r.ops);
}

/* ---- pub/sub messages --------------------------------------------------------- */

typedef struct pushed {
    int count;
    char last[64];
} pushed;

static pushed *messages_seen;

static void count_push(void *userdata, redisReply *message)
{
    (void)userdata;
    messages_seen->count++;
    if (message->type == REDIS_REPLY_ARRAY && message->elements == 3 &&
        message->element[2]->type == REDIS_REPLY_STRING)
        snprintf(messages_seen->last, sizeof messages_seen->last, "%.*s",
                 (int)message->element[2]->len, message->element[2]->str);
    vk__reply_free(message);
}

/* A subscribed connection: its messages go to the push function, in
 * order, between the replies of the requests (SUBSCRIBE's confirmation, a
 * subscribed PING's "pong"), which still go to their operations; without
 * a push function a message fails the stream as any unasked reply does. */
static void test_subscriber_messages(void)
{
    static const char message[] = "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
    run r = { .ops = calloc(2, sizeof(op)) };
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 4, on_done, &r));
    CHECK_FAILS(vk__mux_feed(m, message, sizeof message - 1), VK_ERR_PROTOCOL,
                "protocol error: a reply that no request asked for");
    vk__mux_free(m);

    pushed seen = {0};
    messages_seen = &seen;
    int fd = dial();
    CHECK(fd >= 0);
    CHECK_OK(vk__mux_new(&m, 4, on_done, &r));
    vk__mux_set_push(m, count_push);
    const char *subscribe[] = { "SUBSCRIBE", "vk:mux:channel" };
    size_t sub_lens[] = { 9, 14 };
    r.ops[0].kind = EXPECT_ANY;
    CHECK_OK(vk__mux_submit(m, &r.ops[0], 2, subscribe, sub_lens));
    int writes = 0;
    unsigned seed = 7;
    CHECK(flush_output(m, fd, &writes));
    while (r.ops[0].completions == 0 && pump(m, fd, 3, &seed))
        ;
    CHECK(r.ops[0].completions == 1 && r.ops[0].status == VK_OK);
    for (int i = 0; i < 5; i++) {
        char text[8];
        snprintf(text, sizeof text, "m%d", i);
        const char *publish[] = { "PUBLISH", "vk:mux:channel", text };
        free(vkt_server_cmd(server, publish, 3));
    }
    /* A PING in the middle: its reply is not a message. */
    const char *ping[] = { "PING" };
    size_t ping_len[] = { 4 };
    r.ops[1].kind = EXPECT_ANY;
    CHECK_OK(vk__mux_submit(m, &r.ops[1], 1, ping, ping_len));
    CHECK(flush_output(m, fd, &writes));
    while ((r.ops[1].completions == 0 || seen.count < 5) && pump(m, fd, 3, &seed))
        ;
    CHECK_EQ_INT(seen.count, 5);
    CHECK_EQ_STR(seen.last, "m4");
    CHECK(r.ops[1].completions == 1 && r.ops[1].status == VK_OK);
    CHECK_EQ_INT(vk__mux_status(m), VK_OK);
    vk__mux_free(m);
    close(fd);
    free(r.ops);
}

/* The handshake's steps (handshake.c), sent through the mux as a driver
 * of the engine sends them, in one write: an ACL user, a database, PING;
 * then a command on the ready connection. A wrong password is refused as
 * an authentication failure by the same rule the blocking client uses. */
typedef struct step_op {
    const vk_handshake_step *step;   /* NULL: a command, its reply kept */
    vk_status verdict;
    bool done;
    char text[512];
} step_op;

static void on_step(void *userdata, void *opaque, vk_status status, redisReply *reply, bool sent)
{
    (void)userdata, (void)sent;
    step_op *o = opaque;
    o->done = true;
    o->verdict = status;
    if (status == VK_OK && o->step != NULL)
        o->verdict = vk__handshake_check(o->step, reply);
    else if (status == VK_OK)
        snprintf(o->text, sizeof o->text, "%.*s", (int)reply->len, reply->str);
    vk__reply_free(reply);
}

/* Runs the handshake for user/password/db, then CLIENT INFO; returns the
 * handshake's verdict and, when it passed, the CLIENT INFO line in info. */
static vk_status handshake_through_mux(const char *user, const char *password, int db,
                                       char *info, size_t cap)
{
    info[0] = '\0';
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_db(cfg, db);
    CHECK_OK(vk__config_prepare(cfg, NULL));
    vk_handshake h;
    vk__handshake_plan(&h, cfg, user, password);
    int fd = dial();
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 8, on_step, NULL));
    step_op ops[VK_HANDSHAKE_MAX_STEPS + 1];
    memset(ops, 0, sizeof ops);
    for (int i = 0; i < h.count; i++) {
        ops[i].step = &h.steps[i];
        CHECK_OK(vk__mux_submit_secret(m, &ops[i], h.steps[i].argc, h.steps[i].argv,
                                       h.steps[i].lens, h.steps[i].secret));
    }
    int writes = 0;
    CHECK(flush_output(m, fd, &writes));
    CHECK_EQ_INT(writes, 1);
    unsigned seed = 11;
    while (vk__mux_in_flight(m) > 0 && pump(m, fd, 0, &seed)) {
    }
    vk_status verdict = VK_OK;
    for (int i = 0; i < h.count; i++) {
        CHECK(ops[i].done);
        if (verdict == VK_OK)
            verdict = ops[i].verdict;   /* the first refusal decides */
    }
    if (verdict == VK_OK) {
        const char *argv[] = { "CLIENT", "INFO" };
        size_t lens[] = { 6, 4 };
        step_op *command = &ops[h.count];
        CHECK_OK(vk__mux_submit(m, command, 2, argv, lens));
        CHECK(flush_output(m, fd, &writes));
        while (vk__mux_in_flight(m) > 0 && pump(m, fd, 0, &seed)) {
        }
        snprintf(info, cap, "%s", command->text);
    }
    vk__mux_free(m);
    close(fd);
    vk_config_free(cfg);
    return verdict;
}

static void test_handshake_through_mux(void)
{
    const char *setuser[] = { "ACL", "SETUSER", "mux-user", "on", ">mux-secret", "~*", "&*",
                              "+@all" };
    free(vkt_server_cmd(server, setuser, 8));
    char info[512];
    CHECK_OK(handshake_through_mux("mux-user", "mux-secret", 3, info, sizeof info));
    CHECK(strstr(info, " db=3 ") != NULL);
    CHECK(strstr(info, " user=mux-user ") != NULL);
    CHECK_FAILS(handshake_through_mux("mux-user", "wrong", 3, info, sizeof info), VK_ERR_AUTH,
                "authentication failed: WRONGPASS invalid username-password pair or user is "
                "disabled.");
    /* No password: SELECT and PING only, as the default user. */
    CHECK_OK(handshake_through_mux(NULL, NULL, 5, info, sizeof info));
    CHECK(strstr(info, " db=5 ") != NULL);
    CHECK(strstr(info, " user=default ") != NULL);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){ 0 });
    if (server == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    RUN(test_thousand_in_flight);
    RUN(test_thousand_in_flight_random_splits);
    RUN(test_connection_killed_mid_stream);
    RUN(test_cancel);
    RUN(test_back_pressure);
    RUN(test_big_reply_among_small);
    RUN(test_refused_streams);
    RUN(test_subscriber_messages);
    RUN(test_handshake_through_mux);
    vkt_server_stop(server);
    return vkt_finish();
}
