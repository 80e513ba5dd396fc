/*
 * Failures of the event-loop client against real servers
 * (VKTEST_NEEDS_SERVER), each scenario on libuv and on libevent: the
 * connection killed (CLIENT KILL) or the server killed while hundreds of
 * operations are in flight (each completes once, with its own reply or an
 * error, and a write whose reply was lost is never sent again), among them
 * a BLPOP on its lane; a lane killed alone (the shared connection goes on
 * untouched); the reconnect rate limit while the server is down and
 * recovery once it is back, the read timeout (and a blocking command that
 * outlasts it on its lane while the commands behind it complete), a dial
 * to a port nobody listens on, a dial nobody answers and a handshake
 * nobody answers, with the blocking client's texts.
 *
 * Requests held on the server: a blocking command no longer holds up the
 * shared connection (it runs on a lane of its own), so what keeps hundreds
 * of requests written and unanswered is CLIENT PAUSE <ms> WRITE: the first
 * write command the client sends blocks that client on the server, and its
 * later commands wait behind it, unread, until the pause ends or the
 * client is killed (a killed client's postponed command never runs).
 */
#include "vktest.h"
#include "servers.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"
/* Below the API: the bit that marks the ids of operations on lanes. */
#include "api/driven.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static vkt_server *server;
static vk_client *checker;   /* a blocking client, to look at the server */

#define RATE_LIMITED_PREFIX "redis reconnect: rate-limited (next attempt in "

/* Clients the server (asked through probe) holds on cmd: blocked by a
 * blocking command, or postponed by CLIENT PAUSE (CLIENT LIST: flag b, and
 * the command it waits on in cmd=, on valkey 8 and redis 7 alike). *id,
 * when given, takes the server's id of the last one listed. */
static int clients_held_on(vk_client *probe, const char *cmd, long long *id)
{
    vk_reply *r = NULL;
    int n = 0;
    if (vkt_blocking_run(probe, &r, 2, (const char *[]){"CLIENT", "LIST"}) == VK_OK) {
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

typedef struct held_wait {
    vkt_loop *loop;
    vk_client *probe;
    const char *cmd;
    int want;
} held_wait;

static bool enough_held(void *arg)
{
    held_wait *w = arg;
    vkt_loop_run_for(w->loop, 5);
    return clients_held_on(w->probe, w->cmd, NULL) >= w->want;
}

/* Turns the loop until the server holds `want` clients on cmd. */
static bool wait_held(vkt_loop *loop, vk_client *probe, const char *cmd, int want)
{
    held_wait w = {loop, probe, cmd, want};
    bool held = vkt_loop_run_until(loop, enough_held, &w, 5000);
    VKT_CHECK_(held, "the server never held %d client(s) on %s", want, cmd);
    return held;
}

/* The server's id of c's shared connection (CLIENT ID through c); -1 when
 * it did not answer. */
static long long shared_id(vkt_loop *loop, vk_async *c)
{
    vkt_op op = {0};
    long long id = -1;
    if (vkt_call(loop, c, &op, 2, (const char *[]){"CLIENT", "ID"}) && op.status == VK_OK &&
        vk_reply_get_type(op.reply) == VK_REPLY_INTEGER)
        id = vk_reply_get_integer(op.reply);
    vkt_op_clear(&op);
    return id;
}

/* Pauses the server's writers for ms through probe (what the probe sends
 * meanwhile, CLIENT LIST, CLIENT KILL, CLIENT UNPAUSE, is not a write: it
 * is not held). */
static void pause_writes(vk_client *probe, const char *ms)
{
    vkt_blocking_do(probe, 4, (const char *[]){"CLIENT", "PAUSE", ms, "WRITE"});
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

/* Queues the operations of the stream from `from` to `to` (excluded): GET
 * and INCR in turn, and at BEFORE an INCR, the stall: once the server's
 * writers are paused, it is the first write the client sends, which holds
 * everything after it on the server. */
static void submit_stream(vk_async *c, stream_op *ops, int from, int to, int *done)
{
    for (int i = from; i < to; i++) {
        stream_op *o = &ops[i];
        memset(o, 0, sizeof *o);
        o->done = done;
        char key[32];
        vk_status st;
        if (i % 2 == 0 && i != BEFORE) {
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

/* A BLPOP without a timeout on an empty list: on its lane, it waits there
 * until the connection goes. */
static void submit_lane_pop(vk_async *c, stream_op *o, int *done)
{
    memset(o, 0, sizeof *o);
    o->kind = KIND_BLPOP;
    o->done = done;
    const char *argv[] = {"BLPOP", "fail:empty", "0"};
    const size_t lens[] = {5, 10, 1};
    uint64_t id = 0;
    CHECK_OK(vkt_submitv(c, op_fn, o, &id, 3, argv, lens));
    CHECK(id & VK_LANE_ID_BIT);
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

/* The read timeout of the stream's clients: the pause must not be taken
 * for a dead connection (the BLPOP that held the stream before stretched
 * the read timeout by its own 5 s). */
#define STREAM_READ_TIMEOUT_MS 30000

static void test_connection_killed_mid_stream(vkt_loop *loop)
{
    prepare_keys();
    vk_config *cfg = config_for(server);
    vk_config_set_read_timeout_ms(cfg, STREAM_READ_TIMEOUT_MS);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    int done = 0, lane_done = 0;
    submit_stream(c, stream_ops, 0, BEFORE, &done);
    target first = {&done, BEFORE};
    CHECK(vkt_loop_run_until(loop, target_reached, &first, 10000));
    /* Everything so far was answered. Now the server holds writers: the
     * stall (an INCR) is held, and everything after it is written and
     * waits on the server behind it. A BLPOP waits on its lane. */
    pause_writes(checker, "20000");
    submit_stream(c, stream_ops, BEFORE, STREAM, &done);
    stream_op lane_pop;
    submit_lane_pop(c, &lane_pop, &lane_done);
    /* A pipeline of writes behind them too. */
    vk_pipeline *p = NULL;
    vkt_op piped = {0};
    CHECK_OK(vk_async_pipeline_new(&p, c));
    for (int i = 0; p != NULL && i < 3; i++)
        CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"INCR", "fail:ctr"},
                                    (const size_t[]){4, 8}));
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &piped, NULL));
    vk_pipeline_free(p);
    CHECK(wait_held(loop, checker, "incr", 1));
    CHECK(wait_held(loop, checker, "blpop", 1));
    vkt_loop_run_for(loop, 20);
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    CHECK_EQ_INT(done, BEFORE);
    CHECK_EQ_INT(vk_async_pending(c), STREAM - BEFORE + 2);
    /* The server drops the shared connection and the lane (the checker's
     * own is skipped), then lets writers go. */
    CHECK(vkt_blocking_integer(checker, 4, (const char *[]){"CLIENT", "KILL", "TYPE", "normal"}) >= 2);
    vkt_blocking_do(checker, 2, (const char *[]){"CLIENT", "UNPAUSE"});
    target all = {&done, STREAM};
    CHECK(vkt_loop_run_until(loop, target_reached, &all, 20000));
    target popped = {&lane_done, 1};
    CHECK(vkt_loop_run_until(loop, target_reached, &popped, 10000));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &piped, 10000));
    CHECK_EQ_INT(piped.status, VK_ERR_IO);
    vkt_op_clear(&piped);

    outcome out = tally(stream_ops);
    CHECK_EQ_INT(out.completed_once, STREAM);
    CHECK_EQ_INT(out.wrong_reply, 0);
    for (int i = 0; i < BEFORE; i++)
        VKT_CHECK_(stream_ops[i].status == VK_OK && stream_ops[i].own_reply,
                   "operation %d before the kill: status %d", i, (int)stream_ops[i].status);
    /* The stall, the writes behind it and the BLPOP lost their replies:
     * failed, not sent again. Reads may have been retried on a new
     * connection. */
    CHECK_EQ_INT(stream_ops[BEFORE].status, VK_ERR_IO);
    CHECK(strncmp(stream_ops[BEFORE].error, vk_strerror(VK_ERR_IO), strlen(vk_strerror(VK_ERR_IO))) == 0);
    CHECK_EQ_INT(lane_pop.calls, 1);
    CHECK_EQ_INT(lane_pop.status, VK_ERR_IO);
    CHECK(strncmp(lane_pop.error, vk_strerror(VK_ERR_IO), strlen(vk_strerror(VK_ERR_IO))) == 0);
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
    /* Each INCR ran at most once, and the held ones not at all (a killed
     * client's postponed command never runs): the counter is exactly the
     * answered ones. */
    CHECK_EQ_INT(vkt_blocking_integer(checker, 2, (const char *[]){"GET", "fail:ctr"}), out.incr_ok);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    CHECK_EQ_INT(clients_held_on(checker, "blpop", NULL), 0);

    /* The client reconnects for what comes next. */
    vkt_op get = {0};
    if (vkt_call(loop, c, &get, 2, (const char *[]){"GET", "fail:7"}))
        CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "value-7"));
    vkt_op_clear(&get);
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    vk_async_free(c);
}

/* Only a lane is killed while its BLPOP waits: the BLPOP fails (its reply
 * was lost; it is not sent again), the shared connection goes on
 * untouched (the same connection on the server, its requests answered),
 * and the next blocking command opens a new lane. */
static void test_lane_killed(vkt_loop *loop)
{
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "fail:lane"});
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "fail:lane:k", "kv"});
    vk_config *cfg = config_for(server);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    long long shared = shared_id(loop, c);
    CHECK(shared > 0);
    vkt_op pop = {0}, get = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &pop, &id, 3, (const char *[]){"BLPOP", "fail:lane", "0"}));
    CHECK(id & VK_LANE_ID_BIT);
    long long lane = -1;
    if (wait_held(loop, checker, "blpop", 1)) {
        CHECK_EQ_INT(clients_held_on(checker, "blpop", &lane), 1);
        CHECK(lane > 0 && lane != shared);
        char kill_id[32];
        snprintf(kill_id, sizeof kill_id, "%lld", lane);
        CHECK_EQ_INT(vkt_blocking_integer(checker, 4, (const char *[]){"CLIENT", "KILL", "ID", kill_id}),
                     1);
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &pop, 10000));
        CHECK_EQ_INT(pop.status, VK_ERR_IO);
        CHECK(strncmp(pop.error, vk_strerror(VK_ERR_IO), strlen(vk_strerror(VK_ERR_IO))) == 0);
        CHECK(pop.reply == NULL);
    }
    /* The shared connection never noticed. */
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    if (vkt_call(loop, c, &get, 2, (const char *[]){"GET", "fail:lane:k"}))
        CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "kv"));
    CHECK_EQ_INT(shared_id(loop, c), shared);
    /* Not sent again: nothing waits on the server for the lost BLPOP. */
    CHECK_EQ_INT(clients_held_on(checker, "blpop", NULL), 0);
    vkt_op_clear(&pop);
    vkt_op_clear(&get);

    /* The next BLPOP waits on a new lane, and gets what is pushed. */
    CHECK_OK(vkt_submit(c, &pop, &id, 3, (const char *[]){"BLPOP", "fail:lane", "0"}));
    if (wait_held(loop, checker, "blpop", 1)) {
        long long again = -1;
        CHECK_EQ_INT(clients_held_on(checker, "blpop", &again), 1);
        CHECK(again > 0 && again != lane && again != shared);
        vkt_blocking_do(checker, 3, (const char *[]){"RPUSH", "fail:lane", "pushed"});
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &pop, 10000));
        CHECK_EQ_INT(pop.status, VK_OK);
        CHECK(vk_reply_get_length(pop.reply) == 2 &&
              vkt_reply_is(vk_reply_get_element(pop.reply, 1), "pushed"));
    }
    vkt_op_clear(&pop);
    CHECK_EQ_INT(vk_async_pending(c), 0);
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
    vk_config_set_read_timeout_ms(cfg, STREAM_READ_TIMEOUT_MS);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL || direct == NULL) {
        vk_client_free(direct);
        vk_async_free(c);
        vkt_server_stop(own);
        return;
    }
    int done = 0, lane_done = 0;
    submit_stream(c, stream_ops, 0, BEFORE, &done);
    target first = {&done, BEFORE};
    CHECK(vkt_loop_run_until(loop, target_reached, &first, 10000));
    /* The rest is held on the server behind the stall (writers paused; the
     * server goes before the pause ends), and a BLPOP waits on its lane. */
    pause_writes(direct, "20000");
    submit_stream(c, stream_ops, BEFORE, STREAM, &done);
    stream_op lane_pop;
    submit_lane_pop(c, &lane_pop, &lane_done);
    CHECK(wait_held(loop, direct, "incr", 1));
    CHECK(wait_held(loop, direct, "blpop", 1));
    vkt_loop_run_for(loop, 20);
    CHECK_EQ_INT(done, BEFORE);
    vk_client_free(direct);
    vkt_server_kill(own);
    target all = {&done, STREAM};
    CHECK(vkt_loop_run_until(loop, target_reached, &all, 20000));
    target popped = {&lane_done, 1};
    CHECK(vkt_loop_run_until(loop, target_reached, &popped, 10000));
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
    /* The BLPOP's lane went with the server: written, so failed, once. */
    CHECK_EQ_INT(lane_pop.calls, 1);
    CHECK_EQ_INT(lane_pop.status, VK_ERR_IO);
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

/* A blocking command waits for its own timeout plus the read timeout, on
 * its lane: it outlasts the read timeout there, while the GET submitted
 * after it goes on the shared connection and completes first, as soon as
 * the server answers it (the BLPOP no longer holds it back). */
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
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &pop, &id, 3, (const char *[]){"BLPOP", "timeout:list", "1"}));
    CHECK(id & VK_LANE_ID_BIT);
    CHECK_OK(vkt_submit(c, &get, NULL, 2, (const char *[]){"GET", "timeout:k"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &get, 10000));
    CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "kv"));
    /* The BLPOP cannot answer before its second is up. */
    CHECK_EQ_INT(pop.calls, 0);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &pop, 10000));
    CHECK_EQ_INT(pop.status, VK_OK);
    CHECK(vk_reply_get_type(pop.reply) == VK_REPLY_NIL);
    CHECK(get.seq < pop.seq);
    vkt_op_clear(&pop);
    vkt_op_clear(&get);

    /* Timeout 0 waits as long as it takes: still waiting well past the
     * read timeout, then answered by a push. The GET behind it was
     * answered meanwhile. */
    CHECK_OK(vkt_submit(c, &pop, NULL, 3, (const char *[]){"BLPOP", "timeout:forever", "0"}));
    CHECK_OK(vkt_submit(c, &get, NULL, 2, (const char *[]){"GET", "timeout:k"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &get, 10000));
    CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "kv"));
    vkt_loop_run_for(loop, 700);
    CHECK_EQ_INT(pop.calls, 0);
    CHECK_EQ_INT(vk_async_pending(c), 1);
    vkt_blocking_do(checker, 3, (const char *[]){"RPUSH", "timeout:forever", "pushed"});
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &pop, 10000));
    CHECK_EQ_INT(pop.status, VK_OK);
    CHECK(vk_reply_get_length(pop.reply) == 2 &&
          vkt_reply_is(vk_reply_get_element(pop.reply, 1), "pushed"));
    CHECK(get.seq < pop.seq);
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
    RUN_ON_LOOPS(test_lane_killed);
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
