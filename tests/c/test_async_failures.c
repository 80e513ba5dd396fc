/*
 * Failures of the event-loop client against real servers
 * (VKTEST_NEEDS_SERVER), each scenario on libuv and on libevent: the
 * connection killed (CLIENT KILL) or the server killed while hundreds of
 * operations are in flight (each completes once, with its own reply or an
 * error, and a write whose reply was lost is never sent again), the
 * reconnect rate limit while the server is down and recovery once it is
 * back, the read timeout (and a blocking command that outlasts it), a dial
 * to a port nobody listens on, a dial nobody answers and a handshake
 * nobody answers, with the blocking client's texts.
 */
#include "vktest.h"
#include "servers.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static vkt_server *server;
static vk_client *checker;   /* a blocking client, to look at the server */

#define RATE_LIMITED_PREFIX "redis reconnect: rate-limited (next attempt in "

/* The server (asked through probe) has a client blocked: the BLPOP was
 * written and waits. */
static bool blocked_on(vk_client *probe)
{
    const char *info[] = {"INFO", "clients"};
    vk_reply *r = NULL;
    long long n = 0;
    if (vkt_blocking_run(probe, &r, 2, info) == VK_OK) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        const char *at = s != NULL ? memmem(s, len, "blocked_clients:", 16) : NULL;
        if (at != NULL)
            n = atoll(at + 16);
    }
    vk_reply_free(r);
    return n >= 1;
}

typedef struct blocked_wait {
    vkt_loop *loop;
    vk_client *probe;
} blocked_wait;

static bool server_has_blocked_client(void *arg)
{
    blocked_wait *w = arg;
    vkt_loop_run_for(w->loop, 5);
    return blocked_on(w->probe);
}

static bool wait_blocked(vkt_loop *loop, vk_client *probe)
{
    blocked_wait w = {loop, probe};
    bool blocked = vkt_loop_run_until(loop, server_has_blocked_client, &w, 5000);
    VKT_CHECK_(blocked, "the BLPOP never reached the server");
    return blocked;
}

static vk_config *config_for(vkt_server *s)
{
    return vkt_async_config(vkt_server_address(s));
}

/* ---- a stream of operations that each know their reply ---------------------------- */

typedef enum kind { KIND_GET, KIND_INCR, KIND_BLPOP } kind;

typedef struct stream_op {
    kind kind;
    int key;                /* KIND_GET: the number of its key */
    int calls;
    vk_status status;
    bool own_reply;         /* VK_OK with the reply this operation expects */
    long long integer;      /* KIND_INCR: the value it got */
    char error[256];
    long seq;
    int *done;
} stream_op;

static void op_fn(void *userdata, vk_status status, vk_reply *reply)
{
    stream_op *o = userdata;
    o->seq = vkt_note_completion();
    o->calls++;
    o->status = status;
    if (status == VK_OK) {
        char want[32];
        switch (o->kind) {
        case KIND_GET:
            snprintf(want, sizeof want, "value-%d", o->key);
            o->own_reply = vk_reply_get_type(reply) == VK_REPLY_STRING && vkt_reply_is(reply, want);
            break;
        case KIND_INCR:
            o->own_reply = vk_reply_get_type(reply) == VK_REPLY_INTEGER;
            o->integer = vk_reply_get_integer(reply);
            break;
        case KIND_BLPOP:
            o->own_reply = vk_reply_get_type(reply) == VK_REPLY_NIL;
            break;
        }
    } else {
        snprintf(o->error, sizeof o->error, "%s", vk_last_error());
    }
    vk_reply_free(reply);
    (*o->done)++;
}

typedef struct target {
    int *done;
    int want;
} target;

static bool target_reached(void *arg)
{
    target *t = arg;
    return *t->done >= t->want;
}

enum { BEFORE = 200, AFTER = 300, STREAM = BEFORE + 1 + AFTER, KEYS = 50 };

/* Queues BEFORE operations (GET and INCR in turn), a BLPOP on an empty
 * list that holds back everything after it on the server for up to
 * blpop_seconds, and AFTER more operations. */
static void submit_stream(vk_async *c, stream_op *ops, int *done, const char *blpop_seconds)
{
    for (int i = 0; i < STREAM; i++) {
        stream_op *o = &ops[i];
        memset(o, 0, sizeof *o);
        o->done = done;
        char key[32];
        vk_status st;
        if (i == BEFORE) {
            o->kind = KIND_BLPOP;
            const char *argv[] = {"BLPOP", "fail:empty", blpop_seconds};
            const size_t lens[] = {5, 10, strlen(blpop_seconds)};
            st = vkt_submitv(c, op_fn, o, NULL, 3, argv, lens);
        } else if (i % 2 == 0) {
            o->kind = KIND_GET;
            o->key = i % KEYS;
            snprintf(key, sizeof key, "fail:%d", o->key);
            const char *argv[] = {"GET", key};
            const size_t lens[] = {3, strlen(key)};
            st = vkt_submitv(c, op_fn, o, NULL, 2, argv, lens);
        } else {
            o->kind = KIND_INCR;
            const char *argv[] = {"INCR", "fail:ctr"};
            const size_t lens[] = {4, 8};
            st = vkt_submitv(c, op_fn, o, NULL, 2, argv, lens);
        }
        VKT_CHECK_(st == VK_OK, "operation %d refused: %s", i, vk_last_error());
    }
}

typedef struct outcome {
    int completed_once;
    int own_replies;
    int incr_ok;
    int failed;
    int failed_io;
    int failed_rate_limited;
    int wrong_reply;
    int distinct_incr_values;
    long long max_incr;
} outcome;

static outcome tally(const stream_op *ops)
{
    outcome out = {0};
    static bool seen[STREAM + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < STREAM; i++) {
        const stream_op *o = &ops[i];
        if (o->calls == 1)
            out.completed_once++;
        if (o->status == VK_OK) {
            if (o->own_reply)
                out.own_replies++;
            else
                out.wrong_reply++;
            if (o->kind == KIND_INCR && o->own_reply) {
                out.incr_ok++;
                if (o->integer >= 1 && o->integer <= STREAM && !seen[o->integer]) {
                    seen[o->integer] = true;
                    out.distinct_incr_values++;
                }
                if (o->integer > out.max_incr)
                    out.max_incr = o->integer;
            }
        } else {
            out.failed++;
            if (o->status == VK_ERR_IO)
                out.failed_io++;
            if (o->status == VK_ERR_RECONNECT_RATE_LIMITED)
                out.failed_rate_limited++;
        }
    }
    return out;
}

static void prepare_keys(void)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "fail:ctr", "fail:empty"});
    for (int i = 0; i < KEYS; i++) {
        char key[32], value[32];
        snprintf(key, sizeof key, "fail:%d", i);
        snprintf(value, sizeof value, "value-%d", i);
        vkt_blocking_do(checker, 3, (const char *[]){"SET", key, value});
    }
}

static stream_op stream_ops[STREAM];

static void test_connection_killed_mid_stream(vkt_loop *loop)
{
    prepare_keys();
    vk_config *cfg = config_for(server);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    int done = 0;
    submit_stream(c, stream_ops, &done, "5");
    target first = {&done, BEFORE};
    CHECK(vkt_loop_run_until(loop, target_reached, &first, 10000));
    CHECK(wait_blocked(loop, checker));
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    /* Everything before the BLPOP was answered; the rest is written and
     * waits on the server behind it. Now the server drops the connection
     * (the checker's own is skipped). */
    /* A pipeline of writes behind them too. */
    vk_pipeline *p = NULL;
    vkt_op piped = {0};
    CHECK_OK(vk_async_pipeline_new(&p, c));
    for (int i = 0; p != NULL && i < 3; i++)
        CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"INCR", "fail:ctr"},
                                    (const size_t[]){4, 8}));
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &piped, NULL));
    vk_pipeline_free(p);
    vkt_loop_run_for(loop, 20);
    CHECK(vkt_blocking_integer(checker, 4, (const char *[]){"CLIENT", "KILL", "TYPE", "normal"}) >= 1);
    target all = {&done, STREAM};
    CHECK(vkt_loop_run_until(loop, target_reached, &all, 20000));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &piped, 10000));
    CHECK_EQ_INT(piped.status, VK_ERR_IO);
    vkt_op_clear(&piped);

    outcome out = tally(stream_ops);
    CHECK_EQ_INT(out.completed_once, STREAM);
    CHECK_EQ_INT(out.wrong_reply, 0);
    for (int i = 0; i < BEFORE; i++)
        VKT_CHECK_(stream_ops[i].status == VK_OK && stream_ops[i].own_reply,
                   "operation %d before the kill: status %d", i, (int)stream_ops[i].status);
    /* The BLPOP and the writes behind it lost their replies: failed, not
     * sent again. Reads may have been retried on a new connection. */
    CHECK_EQ_INT(stream_ops[BEFORE].status, VK_ERR_IO);
    CHECK(strncmp(stream_ops[BEFORE].error, vk_strerror(VK_ERR_IO), strlen(vk_strerror(VK_ERR_IO))) == 0);
    for (int i = BEFORE + 1; i < STREAM; i++) {
        if (stream_ops[i].kind == KIND_INCR)
            VKT_CHECK_(stream_ops[i].status == VK_ERR_IO,
                       "INCR %d after the kill: status %d (%s)", i, (int)stream_ops[i].status,
                       stream_ops[i].error);
        else
            VKT_CHECK_(stream_ops[i].status == VK_OK || stream_ops[i].status == VK_ERR_IO,
                       "GET %d after the kill: status %d (%s)", i, (int)stream_ops[i].status,
                       stream_ops[i].error);
    }
    CHECK_EQ_INT(out.failed, out.failed_io);
    /* The reads that were retried ran in the order they were queued. */
    int out_of_order = 0;
    long last = 0;
    for (int i = BEFORE + 1; i < STREAM; i++) {
        if (stream_ops[i].status != VK_OK)
            continue;
        if (stream_ops[i].seq <= last)
            out_of_order++;
        last = stream_ops[i].seq;
    }
    CHECK_EQ_INT(out_of_order, 0);
    CHECK_EQ_INT(out.incr_ok, BEFORE / 2);
    CHECK_EQ_INT(out.distinct_incr_values, out.incr_ok);
    CHECK_EQ_INT(out.max_incr, out.incr_ok);
    /* Each INCR ran at most once: the counter is exactly the answered ones. */
    CHECK_EQ_INT(vkt_blocking_integer(checker, 2, (const char *[]){"GET", "fail:ctr"}), out.incr_ok);
    CHECK_EQ_INT(vk_async_pending(c), 0);

    /* The client reconnects for what comes next. */
    vkt_op get = {0};
    if (vkt_call(loop, c, &get, 2, (const char *[]){"GET", "fail:7"}))
        CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "value-7"));
    vkt_op_clear(&get);
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    vk_async_free(c);
}

/* Turns the loop, then runs one PING to completion. */
static vk_status ping_once(vkt_loop *loop, vk_async *c, char *error, size_t cap)
{
    vkt_op op = {0};
    vk_status st = vkt_submit(c, &op, NULL, 1, (const char *[]){"PING"});
    VKT_CHECK_(st == VK_OK, "PING refused at once: %d (%s)", (int)st, vk_last_error());
    if (st != VK_OK)
        return st;
    if (!vkt_loop_run_until(loop, vkt_op_done, &op, 10000)) {
        VKT_CHECK_(false, "PING did not complete");
        return VK_ERR_TIMEOUT;
    }
    st = op.status;
    if (st == VK_OK)
        VKT_CHECK_(vkt_reply_is(op.reply, "PONG"), "PING got another reply");
    snprintf(error, cap, "%s", op.error);
    vkt_op_clear(&op);
    return st;
}

static void test_server_killed_and_back(vkt_loop *loop)
{
    vkt_server *own = vkt_server_start(&(vkt_server_opts){0});
    CHECK(own != NULL);
    if (own == NULL)
        return;
    vk_client *direct = NULL;
    vk_config *cfg = config_for(own);
    CHECK_OK(vk_client_new(&direct, cfg));
    for (int i = 0; direct != NULL && i < KEYS; i++) {
        char key[32], value[32];
        snprintf(key, sizeof key, "fail:%d", i);
        snprintf(value, sizeof value, "value-%d", i);
        vk_reply *r = NULL;
        CHECK_OK(vkt_blocking_run(direct, &r, 3, (const char *[]){"SET", key, value}));
        vk_reply_free(r);
    }
    vk_config_set_dial_timeout_ms(cfg, 300);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL || direct == NULL) {
        vk_client_free(direct);
        vk_async_free(c);
        vkt_server_stop(own);
        return;
    }
    int done = 0;
    submit_stream(c, stream_ops, &done, "5");
    target first = {&done, BEFORE};
    CHECK(vkt_loop_run_until(loop, target_reached, &first, 10000));
    CHECK(wait_blocked(loop, direct));
    vk_client_free(direct);
    vkt_server_kill(own);
    target all = {&done, STREAM};
    CHECK(vkt_loop_run_until(loop, target_reached, &all, 20000));
    outcome out = tally(stream_ops);
    CHECK_EQ_INT(out.completed_once, STREAM);
    CHECK_EQ_INT(out.wrong_reply, 0);
    CHECK_EQ_INT(out.own_replies, BEFORE);
    CHECK_EQ_INT(out.failed, STREAM - BEFORE);
    CHECK_EQ_INT(out.failed, out.failed_io + out.failed_rate_limited);
    CHECK_EQ_INT(stream_ops[BEFORE].status, VK_ERR_IO);
    for (int i = BEFORE + 1; i < STREAM; i++)
        if (stream_ops[i].kind == KIND_INCR)
            VKT_CHECK_(stream_ops[i].status == VK_ERR_IO, "INCR %d: status %d (%s)", i,
                       (int)stream_ops[i].status, stream_ops[i].error);
    CHECK_EQ_INT(out.distinct_incr_values, BEFORE / 2);
    CHECK_EQ_INT(vk_async_is_connected(c), 0);
    CHECK_EQ_INT(vk_async_pending(c), 0);

    /* While it is down: every attempt fails, and inside the window after a
     * failed reconnect an operation fails at once with the documented
     * text, through its completion. */
    int failed = 0, rate_limited = 0;
    char error[512];
    for (int i = 0; i < 40 && rate_limited == 0; i++) {
        vk_status st = ping_once(loop, c, error, sizeof error);
        if (st != VK_OK)
            failed++;
        if (st == VK_ERR_RECONNECT_RATE_LIMITED) {
            rate_limited++;
            VKT_CHECK_(strncmp(error, RATE_LIMITED_PREFIX, strlen(RATE_LIMITED_PREFIX)) == 0 &&
                           error[strlen(error) - 1] == ')',
                       "rate-limited text: \"%s\"", error);
            /* A pipeline at once after it fails the same way. */
            vk_pipeline *p = NULL;
            vkt_op piped = {0};
            CHECK_OK(vk_async_pipeline_new(&p, c));
            CHECK_OK(vk_pipeline_append(p, 1, (const char *[]){"PING"}, (const size_t[]){4}));
            CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &piped, NULL));
            vk_pipeline_free(p);
            CHECK(vkt_loop_run_until(loop, vkt_op_done, &piped, 10000));
            CHECK(piped.status == VK_ERR_RECONNECT_RATE_LIMITED || piped.status == VK_ERR_IO);
            vkt_op_clear(&piped);
        } else if (st != VK_OK) {
            VKT_CHECK_(st == VK_ERR_IO, "PING while down: %d (%s)", (int)st, error);
        }
        vkt_loop_run_for(loop, 20);
    }
    CHECK(failed > 0);
    CHECK_EQ_INT(rate_limited, 1);
    CHECK_EQ_INT(vk_async_is_connected(c), 0);

    /* Back: the same client recovers once the window has passed. */
    CHECK(vkt_server_restart(own));
    vk_status st = VK_ERR_IO;
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(20000);
    while (st != VK_OK && vkt_now_ms() < deadline) {
        st = ping_once(loop, c, error, sizeof error);
        if (st != VK_OK) {
            VKT_CHECK_(st == VK_ERR_RECONNECT_RATE_LIMITED || st == VK_ERR_IO,
                       "PING once back: %d (%s)", (int)st, error);
            vkt_loop_run_for(loop, 50);
        }
    }
    CHECK_OK(st);
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    vk_async_free(c);
    vkt_server_stop(own);
}

/* ---- timeouts ----------------------------------------------------------------------- */

static void pause_server(const char *ms)
{
    const char *pause[] = {"CLIENT", "PAUSE", ms, "ALL"};
    char *line = vkt_server_cmd(server, pause, 4);
    CHECK_EQ_STR(line, "+OK");
    free(line);
}

static void test_read_timeout(vkt_loop *loop)
{
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "timeout:ctr"});
    vk_config *cfg = config_for(server);
    vk_config_set_read_timeout_ms(cfg, 200);
    vk_config_set_max_retries(cfg, -1);
    vk_client *blocking = NULL;
    CHECK_OK(vk_client_new(&blocking, cfg));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL || blocking == NULL) {
        vk_client_free(blocking);
        vk_async_free(c);
        return;
    }
    vkt_op ping = {0};
    vkt_call(loop, c, &ping, 1, (const char *[]){"PING"});   /* connected before the pause */
    CHECK_EQ_INT(ping.status, VK_OK);
    vkt_op_clear(&ping);

    /* Both timeouts (200 ms each, one after the other) must run out inside
     * the pause: on a machine too busy for that, the pause ended first and
     * proves nothing, so it is made longer and the scenario runs again. */
    long long pause_ms = vkt_scaled_ms(1000);
    vkt_op op = {0}, behind = {0};
    char text[512] = "";
    for (int attempt = 0; attempt < 3; attempt++, pause_ms *= 2) {
        vkt_op_clear(&op);
        vkt_op_clear(&behind);
        char pause_text[32];
        snprintf(pause_text, sizeof pause_text, "%lld", pause_ms);
        pause_server(pause_text);
        int64_t paused_at = vkt_now_ms();
        vk_reply *r = NULL;
        const char *incr[] = {"INCR", "timeout:ctr"};
        vk_status blocking_st = vkt_blocking_run(blocking, &r, 2, incr);
        snprintf(text, sizeof text, "%s", vk_last_error());
        vk_reply_free(r);
        CHECK_OK(vkt_submit(c, &op, NULL, 2, incr));
        CHECK_OK(vkt_submit(c, &behind, NULL, 2, (const char *[]){"ECHO", "behind"}));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 5000));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &behind, 5000));
        bool inside = vkt_now_ms() - paused_at < pause_ms;
        /* Once the pause is over the client works again. */
        int64_t left = pause_ms + 100 - (vkt_now_ms() - paused_at);
        if (left > 0)
            vkt_loop_run_for(loop, left);
        if (inside) {
            CHECK_EQ_INT(blocking_st, VK_ERR_TIMEOUT);
            break;
        }
        fprintf(stderr, "the pause of %lld ms ended before the timeouts: again\n", pause_ms);
    }
    CHECK_EQ_INT(op.status, VK_ERR_TIMEOUT);
    CHECK_EQ_STR(op.error, text);
    CHECK_EQ_INT(behind.calls, 1);
    vkt_op after = {0};
    if (vkt_call(loop, c, &after, 2, (const char *[]){"ECHO", "after"}))
        CHECK(after.status == VK_OK && vkt_reply_is(after.reply, "after"));
    vkt_op_clear(&op);
    vkt_op_clear(&behind);
    vkt_op_clear(&after);
    vk_client_free(blocking);
    vk_async_free(c);
}

/* A blocking command waits for its own timeout plus the read timeout. */
static void test_blocking_command_outlasts_read_timeout(vkt_loop *loop)
{
    vkt_blocking_do(checker, 4, (const char *[]){"DEL", "timeout:list", "timeout:forever", "timeout:k"});
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "timeout:k", "kv"});
    vk_config *cfg = config_for(server);
    vk_config_set_read_timeout_ms(cfg, 200);
    vk_config_set_max_retries(cfg, -1);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vkt_op pop = {0}, get = {0};
    CHECK_OK(vkt_submit(c, &pop, NULL, 3, (const char *[]){"BLPOP", "timeout:list", "1"}));
    CHECK_OK(vkt_submit(c, &get, NULL, 2, (const char *[]){"GET", "timeout:k"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &get, 10000));
    CHECK_EQ_INT(pop.status, VK_OK);
    CHECK(vk_reply_get_type(pop.reply) == VK_REPLY_NIL);
    CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "kv"));
    CHECK(pop.seq < get.seq);
    vkt_op_clear(&pop);
    vkt_op_clear(&get);

    /* Timeout 0 waits as long as it takes: still waiting well past the
     * read timeout, then answered by a push. */
    CHECK_OK(vkt_submit(c, &pop, NULL, 3, (const char *[]){"BLPOP", "timeout:forever", "0"}));
    CHECK_OK(vkt_submit(c, &get, NULL, 2, (const char *[]){"GET", "timeout:k"}));
    vkt_loop_run_for(loop, 700);
    CHECK_EQ_INT(pop.calls, 0);
    CHECK_EQ_INT(get.calls, 0);
    vkt_blocking_do(checker, 3, (const char *[]){"RPUSH", "timeout:forever", "pushed"});
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &get, 10000));
    CHECK_EQ_INT(pop.status, VK_OK);
    CHECK(vk_reply_get_length(pop.reply) == 2 &&
          vkt_reply_is(vk_reply_get_element(pop.reply, 1), "pushed"));
    CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "kv"));
    vkt_op_clear(&pop);
    vkt_op_clear(&get);
    vk_async_free(c);
}

static void test_dial_refused(vkt_loop *loop)
{
    int port = vkt_free_port();
    CHECK(port > 0);
    char address[64], shape[96];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    snprintf(shape, sizeof shape, "dial 127.0.0.1:%d: ", port);
    vk_config *cfg = vkt_async_config(address);
    vk_config_set_max_retries(cfg, -1);
    vk_config_set_dial_timeout_ms(cfg, 1000);
    vk_client *blocking = NULL;
    CHECK_EQ_INT(vk_client_new(&blocking, cfg), VK_ERR_IO);
    char text[512];
    snprintf(text, sizeof text, "%s", vk_last_error());
    CHECK(strstr(text, shape) != NULL);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vkt_op op = {0};
    if (vkt_call(loop, c, &op, 1, (const char *[]){"PING"})) {
        CHECK_EQ_INT(op.status, VK_ERR_IO);
        CHECK_EQ_STR(op.error, text);
        CHECK(strstr(op.error, shape) != NULL);
    }
    CHECK_EQ_INT(vk_async_is_connected(c), 0);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    vkt_op_clear(&op);
    vk_async_free(c);
}

/* A listening socket on the loopback that never accepts: with a backlog
 * of 0 and one connection already queued, a further connect is not
 * answered (the dial times out); with room in the backlog a connect
 * succeeds but nothing ever answers (the handshake times out). */
static int silent_listener(int backlog, int *port, int *filler)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    *filler = -1;
    if (backlog == 0) {
        *filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (*filler < 0 || connect(*filler, (struct sockaddr *)&sa, sizeof sa) != 0) {
            if (*filler >= 0)
                close(*filler);
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void check_silent(vkt_loop *loop, int backlog)
{
    int port = 0, filler = -1;
    int fd = silent_listener(backlog, &port, &filler);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    vk_config *cfg = vkt_async_config(address);
    vk_config_set_max_retries(cfg, -1);
    vk_config_set_dial_timeout_ms(cfg, 300);
    vk_config_set_read_timeout_ms(cfg, 300);
    vk_config_set_write_timeout_ms(cfg, 300);
    vk_client *blocking = NULL;
    vk_status code = vk_client_new(&blocking, cfg);
    char text[512];
    snprintf(text, sizeof text, "%s", vk_last_error());
    CHECK_EQ_INT(code, VK_ERR_TIMEOUT);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c != NULL) {
        vkt_op op = {0};
        if (vkt_call(loop, c, &op, 1, (const char *[]){"PING"})) {
            CHECK_EQ_INT(op.status, code);
            CHECK_EQ_STR(op.error, text);
        }
        CHECK_EQ_INT(vk_async_is_connected(c), 0);
        vkt_op_clear(&op);
        vk_async_free(c);
    }
    if (filler >= 0)
        close(filler);
    close(fd);
}

/* Nothing answers the connect: the dial timeout, with the blocking
 * client's code and text. */
static void test_dial_timeout(vkt_loop *loop)
{
    check_silent(loop, 0);
}

/* Connected, but nothing answers the handshake: the same as the blocking
 * client. */
static void test_handshake_unanswered(vkt_loop *loop)
{
    check_silent(loop, 8);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL)
        return 1;
    vk_config *cfg = config_for(server);
    CHECK_OK(vk_client_new(&checker, cfg));
    vk_config_free(cfg);
    if (checker == NULL)
        return vkt_finish();
    RUN_ON_LOOPS(test_connection_killed_mid_stream);
    RUN_ON_LOOPS(test_server_killed_and_back);
    RUN_ON_LOOPS(test_read_timeout);
    RUN_ON_LOOPS(test_blocking_command_outlasts_read_timeout);
    RUN_ON_LOOPS(test_dial_refused);
    RUN_ON_LOOPS(test_dial_timeout);
    RUN_ON_LOOPS(test_handshake_unanswered);
    vk_client_free(checker);
    vkt_server_stop(server);
    return vkt_finish();
}
