/*
 * The event-loop client's one multiplexed connection against a real server
 * (VKTEST_NEEDS_SERVER), each scenario on libuv and on libevent: a
 * thousand operations in flight with error replies among them, an 8 MB
 * value while small operations keep going, 20,000 operations queued at
 * once (back-pressure); cancellation before the connection is ready,
 * behind the in-flight bound, after the request was written (the stream
 * stays in step) and from inside a completion; and the client's lifecycle:
 * free with operations pending or in flight, free from inside a completion
 * (also one run by cancel), and calls from another thread refused.
 */
#include "vktest.h"
#include "servers.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static vkt_server *server;
static vk_client *checker;   /* a blocking client, to look at the server */

#define CANCELLED_TEXT "operation cancelled"
#define THREAD_TEXT "invalid argument: an event-loop client is used only on its loop's thread"

static long long info_clients_field(const char *field)
{
    const char *info[] = {"INFO", "clients"};
    vk_reply *r = NULL;
    long long n = -1;
    if (vkt_blocking_run(checker, &r, 2, info) == VK_OK) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        const char *at = s != NULL ? memmem(s, len, field, strlen(field)) : NULL;
        if (at != NULL)
            n = atoll(at + strlen(field));
    }
    vk_reply_free(r);
    return n;
}

/* Turns the loop until the server has a client blocked (the BLPOP was
 * written and is waiting). */
static bool server_has_blocked_client(void *loop)
{
    vkt_loop_run_for(loop, 5);
    return info_clients_field("blocked_clients:") >= 1;
}

static bool wait_blocked(vkt_loop *loop)
{
    bool blocked = vkt_loop_run_until(loop, server_has_blocked_client, loop, 5000);
    VKT_CHECK_(blocked, "the BLPOP never reached the server");
    return blocked;
}

static vk_async *new_client(vkt_loop *loop)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return c;
}

/* ---- operations that know their expected reply ------------------------------------ */

typedef enum expect { EXPECT_TEXT, EXPECT_ERROR, EXPECT_INTEGER } expect;

typedef struct checked {
    expect kind;
    char want[48];
    long long want_integer;
    int calls;
    vk_status status;
    bool matched;
    long seq;
    int *done;           /* counter of completions shared by a batch */
} checked;

static void checked_fn(void *userdata, vk_status status, vk_reply *reply)
{
    checked *o = userdata;
    o->seq = vkt_note_completion();
    o->calls++;
    o->status = status;
    if (status == VK_OK) {
        if (o->kind == EXPECT_TEXT)
            o->matched = vkt_reply_is(reply, o->want) &&
                         vk_reply_get_type(reply) != VK_REPLY_ERROR;
        else if (o->kind == EXPECT_ERROR)
            o->matched = vk_reply_get_type(reply) == VK_REPLY_ERROR;
        else
            o->matched = vk_reply_get_type(reply) == VK_REPLY_INTEGER &&
                         vk_reply_get_integer(reply) == o->want_integer;
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

static vk_status submit_checked(vk_async *c, checked *o, uint64_t *id, int argc,
                                const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vkt_submitv(c, checked_fn, o, id, argc, argv, lens);
}

/* ---- multiplexing ------------------------------------------------------------------ */

static void test_thousand_in_flight_with_errors(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "mux:ctr", "mux:str"});
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "mux:str", "not a number"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    enum { N = 1000 };
    static checked ops[N];
    memset(ops, 0, sizeof ops);
    int done = 0;
    for (int i = 0; i < N; i++) {
        checked *o = &ops[i];
        o->done = &done;
        char key[32], value[32];
        switch (i % 4) {
        case 0:
            snprintf(key, sizeof key, "mux:%d", i);
            snprintf(value, sizeof value, "value-%d", i);
            o->kind = EXPECT_TEXT;
            snprintf(o->want, sizeof o->want, "OK");
            CHECK_OK(submit_checked(c, o, NULL, 3, (const char *[]){"SET", key, value}));
            break;
        case 1:
            snprintf(key, sizeof key, "mux:%d", i - 1);
            o->kind = EXPECT_TEXT;
            snprintf(o->want, sizeof o->want, "value-%d", i - 1);
            CHECK_OK(submit_checked(c, o, NULL, 2, (const char *[]){"GET", key}));
            break;
        case 2:
            o->kind = EXPECT_ERROR;
            CHECK_OK(submit_checked(c, o, NULL, 2, (const char *[]){"INCR", "mux:str"}));
            break;
        default:
            o->kind = EXPECT_INTEGER;
            o->want_integer = i / 4 + 1;
            CHECK_OK(submit_checked(c, o, NULL, 2, (const char *[]){"INCR", "mux:ctr"}));
            break;
        }
    }
    CHECK_EQ_INT(vk_async_pending(c), N);
    target t = {&done, N};
    CHECK(vkt_loop_run_until(loop, target_reached, &t, 20000));
    int mismatched = 0, out_of_order = 0;
    for (int i = 0; i < N; i++) {
        if (ops[i].calls != 1 || ops[i].status != VK_OK || !ops[i].matched)
            mismatched++;
        if (i > 0 && ops[i].seq <= ops[i - 1].seq)
            out_of_order++;
    }
    CHECK_EQ_INT(mismatched, 0);
    CHECK_EQ_INT(out_of_order, 0);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "mux:ctr"}), "250");
    vk_async_free(c);
}

/* An 8 MB value written and read among small operations on the same
 * connection (all in order, each its own reply), while a second client on
 * the same loop keeps a chain of ECHOs going, each queued by the
 * completion of the one before, until the large GET has completed. */
typedef struct chain {
    vk_async *client;
    vkt_op *big_get;
    int next;
    int completed;
    int wrong;
    bool running;
} chain;

static void chain_fn(void *userdata, vk_status status, vk_reply *reply);

static void chain_submit(chain *ch)
{
    char text[32];
    snprintf(text, sizeof text, "chain-%d", ch->next);
    const char *argv[] = {"ECHO", text};
    const size_t lens[] = {4, strlen(text)};
    ch->running = vk_async_command(ch->client, 2, argv, lens, chain_fn, ch, NULL) == VK_OK;
    CHECK(ch->running);
}

static void chain_fn(void *userdata, vk_status status, vk_reply *reply)
{
    chain *ch = userdata;
    vkt_note_completion();
    char want[32];
    snprintf(want, sizeof want, "chain-%d", ch->next);
    if (status != VK_OK || !vkt_reply_is(reply, want))
        ch->wrong++;
    vk_reply_free(reply);
    ch->completed++;
    ch->next++;
    ch->running = false;
    if (!vkt_op_done(ch->big_get))
        chain_submit(ch);
}

typedef struct big_wait {
    vkt_op *get;
    chain *ch;
    target *smalls;
} big_wait;

static bool big_done(void *arg)
{
    big_wait *w = arg;
    return vkt_op_done(w->get) && !w->ch->running && target_reached(w->smalls);
}

static void test_large_value_among_small_ones(vkt_loop *loop)
{
    vk_async *c = new_client(loop);
    vk_async *other = new_client(loop);
    const size_t size = 8u << 20;
    char *value = malloc(size);
    CHECK(value != NULL);
    if (value == NULL || c == NULL || other == NULL) {
        free(value);
        vk_async_free(c);
        vk_async_free(other);
        return;
    }
    for (size_t i = 0; i < size; i++)
        value[i] = (char)(i * 7 + (i >> 13));
    enum { SMALL = 300 };
    static checked smalls[SMALL];
    memset(smalls, 0, sizeof smalls);
    int done = 0;
    vkt_op set = {0}, get = {0};
    const char *set_argv[] = {"SET", "mux:big", value};
    const size_t set_lens[] = {3, 7, size};
    const char *get_argv[] = {"GET", "mux:big"};
    const size_t get_lens[] = {3, 7};
    chain ch = {other, &get, 0, 0, 0, false};
    chain_submit(&ch);
    for (int i = 0; i < SMALL; i++) {
        checked *o = &smalls[i];
        o->done = &done;
        o->kind = EXPECT_TEXT;
        snprintf(o->want, sizeof o->want, "small-%d", i);
        if (i == SMALL / 3)
            CHECK_OK(vkt_submitv(c, vkt_op_fn, &set, NULL, 3, set_argv, set_lens));
        if (i == 2 * SMALL / 3)
            CHECK_OK(vkt_submitv(c, vkt_op_fn, &get, NULL, 2, get_argv, get_lens));
        CHECK_OK(submit_checked(c, o, NULL, 2, (const char *[]){"ECHO", o->want}));
    }
    /* The value was copied: the caller's buffer is free to go. */
    memset(value, 0, size);
    free(value);
    value = malloc(size);
    CHECK(value != NULL);
    if (value == NULL) {
        vk_async_free(c);
        vk_async_free(other);
        return;
    }
    for (size_t i = 0; i < size; i++)
        value[i] = (char)(i * 7 + (i >> 13));
    target t = {&done, SMALL};
    big_wait w = {&get, &ch, &t};
    CHECK(vkt_loop_run_until(loop, big_done, &w, 30000));
    CHECK_EQ_INT(set.status, VK_OK);
    CHECK(vkt_reply_is(set.reply, "OK"));
    CHECK_EQ_INT(get.status, VK_OK);
    size_t len = 0;
    const char *got = vk_reply_get_string(get.reply, &len);
    CHECK(got != NULL && len == size && memcmp(got, value, size) == 0);
    int wrong = 0, out_of_order = 0;
    for (int i = 0; i < SMALL; i++) {
        if (smalls[i].calls != 1 || smalls[i].status != VK_OK || !smalls[i].matched)
            wrong++;
        if (i > 0 && smalls[i].seq <= smalls[i - 1].seq)
            out_of_order++;
        if (i == SMALL / 3)
            CHECK(smalls[i - 1].seq < set.seq && set.seq < smalls[i].seq);
        if (i == 2 * SMALL / 3)
            CHECK(smalls[i - 1].seq < get.seq && get.seq < smalls[i].seq);
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(out_of_order, 0);
    CHECK(ch.completed >= 1);
    CHECK_EQ_INT(ch.wrong, 0);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    CHECK_EQ_INT(vk_async_pending(other), 0);
    vkt_op_clear(&set);
    vkt_op_clear(&get);
    free(value);
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "mux:big"});
    vk_async_free(c);
    vk_async_free(other);
}

/* 20,000 INCRs queued at once: all complete, in order, each once. */
typedef struct counter_op {
    long long value;
    vk_status status;
    int calls;
    int *done;
} counter_op;

static void counter_fn(void *userdata, vk_status status, vk_reply *reply)
{
    counter_op *o = userdata;
    vkt_note_completion();
    o->calls++;
    o->status = status;
    o->value = vk_reply_get_type(reply) == VK_REPLY_INTEGER ? vk_reply_get_integer(reply) : -1;
    vk_reply_free(reply);
    (*o->done)++;
}

enum { MANY = 20000 };
static counter_op many[MANY];
static uint64_t many_ids[MANY];

static void submit_many(vk_async *c, const char *key, int *done)
{
    memset(many, 0, sizeof many);
    memset(many_ids, 0, sizeof many_ids);
    const char *argv[] = {"INCR", key};
    const size_t lens[] = {4, strlen(key)};
    for (int i = 0; i < MANY; i++) {
        many[i].done = done;
        many[i].value = -1;
        if (vkt_submitv(c, counter_fn, &many[i], &many_ids[i], 2, argv, lens) != VK_OK) {
            VKT_CHECK_(false, "operation %d refused: %s", i, vk_last_error());
            break;
        }
    }
}

static void test_back_pressure(vkt_loop *loop)
{
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "mux:bp"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    int done = 0;
    submit_many(c, "mux:bp", &done);
    CHECK_EQ_INT(vk_async_pending(c), MANY);
    target t = {&done, MANY};
    CHECK(vkt_loop_run_until(loop, target_reached, &t, 60000));
    int wrong = 0;
    for (int i = 0; i < MANY; i++)
        if (many[i].calls != 1 || many[i].status != VK_OK || many[i].value != i + 1)
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "mux:bp"}), "20000");
    vk_async_free(c);
}

/* A reader that stops: the server is stopped (SIGSTOP) while 12 MB of
 * SETs are queued, more than the sockets can hold. The client never
 * blocks its loop on a full socket: the loop keeps turning, everything
 * waits in the client, and once the server reads again every SET and the
 * GET behind them complete in order with their own replies. */
#define SLOW_SETS 200
#define SLOW_VALUE (64 * 1024)

typedef struct slow_op {
    int calls;
    vk_status status;
    bool ok;
    long seq;
} slow_op;

static void slow_fn(void *userdata, vk_status status, vk_reply *reply)
{
    slow_op *o = userdata;
    o->seq = vkt_note_completion();
    o->calls++;
    o->status = status;
    o->ok = status == VK_OK && reply != NULL && vk_reply_get_type(reply) != VK_REPLY_ERROR;
    vk_reply_free(reply);
}

static bool slow_all_done(void *arg)
{
    slow_op *ops = arg;
    for (int i = 0; i <= SLOW_SETS; i++)
        if (ops[i].calls == 0)
            return false;
    return true;
}

static void test_slow_reader(vkt_loop *loop)
{
    vk_async *c = new_client(loop);
    vkt_op ping = {0};
    if (c == NULL || !vkt_call(loop, c, &ping, 1, (const char *[]){"PING"})) {
        vk_async_free(c);
        return;
    }
    vkt_op_clear(&ping);
    static char value[SLOW_VALUE];
    memset(value, 'v', sizeof value);
    static slow_op ops[SLOW_SETS + 1];
    memset(ops, 0, sizeof ops);

    pid_t pid = vkt_server_pid(server);
    CHECK_EQ_INT(kill(pid, SIGSTOP), 0);
    for (int i = 0; i < SLOW_SETS; i++) {
        char key[32];
        snprintf(key, sizeof key, "mux:slow:%d", i);
        const char *argv[] = {"SET", key, value};
        const size_t lens[] = {3, strlen(key), sizeof value};
        CHECK_OK(vkt_submitv(c, slow_fn, &ops[i], NULL, 3, argv, lens));
    }
    const char *get[] = {"GET", "mux:slow:0"};
    const size_t get_lens[] = {3, 10};
    CHECK_OK(vkt_submitv(c, slow_fn, &ops[SLOW_SETS], NULL, 2, get, get_lens));
    /* The loop turns while nothing can be written or read. */
    vkt_loop_run_for(loop, 300);
    CHECK_EQ_INT(vk_async_pending(c), SLOW_SETS + 1);
    CHECK(!slow_all_done(ops));
    CHECK_EQ_INT(kill(pid, SIGCONT), 0);

    CHECK(vkt_loop_run_until(loop, slow_all_done, ops, 30000));
    int wrong = 0;
    for (int i = 0; i <= SLOW_SETS; i++)
        if (ops[i].calls != 1 || !ops[i].ok || (i > 0 && ops[i].seq <= ops[i - 1].seq))
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                   (const char *[]){"STRLEN", "mux:slow:199"}),
                 "65536");
    vk_async_free(c);
}

/* ---- cancel ------------------------------------------------------------------------- */

static bool cancelled(const vkt_op *op)
{
    return op->calls == 1 && op->status == VK_ERR_CANCELLED && op->reply == NULL &&
           strncmp(op->error, CANCELLED_TEXT, strlen(CANCELLED_TEXT)) == 0;
}

static void test_cancel_before_ready(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "cancel:ctr", "cancel:k"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    enum { N = 10 };
    vkt_op ops[N];
    uint64_t ids[N];
    memset(ops, 0, sizeof ops);
    const char *incr[] = {"INCR", "cancel:ctr"};
    for (int i = 0; i < N; i++)
        CHECK_OK(vkt_submit(c, &ops[i], &ids[i], 2, incr));
    vkt_op set = {0};
    uint64_t set_id = 0;
    CHECK_OK(vkt_submit(c, &set, &set_id, 3, (const char *[]){"SET", "cancel:k", "ran"}));
    CHECK_EQ_INT(vk_async_is_connected(c), 0);

    /* The completion runs before cancel returns. */
    CHECK_OK(vk_async_cancel(c, ids[3]));
    CHECK(cancelled(&ops[3]));
    CHECK_OK(vk_async_cancel(c, ids[7]));
    CHECK(cancelled(&ops[7]));
    CHECK_OK(vk_async_cancel(c, set_id));
    CHECK(cancelled(&set));
    CHECK_EQ_INT(vk_async_pending(c), N - 2);
    /* Twice, or an id never given: not in flight. */
    CHECK_EQ_INT(vk_async_cancel(c, ids[3]), VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(vk_async_cancel(c, 0), VK_ERR_INVALID_ARGUMENT);
    uint64_t unknown = set_id + 1000;
    CHECK_EQ_INT(vk_async_cancel(c, unknown), VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(ops[3].calls, 1);

    CHECK(vkt_loop_run_until(loop, vkt_op_done, &ops[N - 1], 10000));
    long long want = 1;
    for (int i = 0; i < N; i++) {
        if (i == 3 || i == 7) {
            CHECK_EQ_INT(ops[i].calls, 1);   /* not again */
            continue;
        }
        VKT_CHECK_(ops[i].status == VK_OK && vk_reply_get_integer(ops[i].reply) == want,
                   "INCR %d: status %d value %lld, want %lld", i, (int)ops[i].status,
                   vk_reply_get_integer(ops[i].reply), want);
        want++;
    }
    /* A completed operation is no longer in flight. */
    CHECK_EQ_INT(vk_async_cancel(c, ids[0]), VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(ops[0].calls, 1);
    /* The cancelled commands did not run. */
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "cancel:ctr"}), "8");
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "cancel:k"}), "(nil)");
    for (int i = 0; i < N; i++)
        vkt_op_clear(&ops[i]);
    vkt_op_clear(&set);
    vk_async_free(c);
}

/* The last operations of 20,000 queued at once wait behind the in-flight
 * bound: cancelled there, they are never sent. */
static void test_cancel_behind_the_bound(vkt_loop *loop)
{
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "cancel:bp"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    int done = 0;
    submit_many(c, "cancel:bp", &done);
    enum { CANCEL = 100 };
    for (int i = MANY - CANCEL; i < MANY; i++) {
        CHECK_OK(vk_async_cancel(c, many_ids[i]));
        VKT_CHECK_(many[i].calls == 1 && many[i].status == VK_ERR_CANCELLED,
                   "operation %d: %d completions, status %d", i, many[i].calls,
                   (int)many[i].status);
    }
    CHECK_EQ_INT(vk_async_pending(c), MANY - CANCEL);
    target t = {&done, MANY};
    CHECK(vkt_loop_run_until(loop, target_reached, &t, 60000));
    int wrong = 0;
    for (int i = 0; i < MANY - CANCEL; i++)
        if (many[i].calls != 1 || many[i].status != VK_OK || many[i].value != i + 1)
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    vkt_loop_run_for(loop, 50);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "cancel:bp"}), "19900");
    vk_async_free(c);
}

/* Cancelled after it was written: the reply is read and dropped, and the
 * operations behind it get their own replies. */
static void test_cancel_after_write(vkt_loop *loop)
{
    vkt_blocking_do(checker, 4, (const char *[]){"DEL", "cancel:list", "cancel:a", "cancel:b"});
    vkt_blocking_do(checker, 5, (const char *[]){"MSET", "cancel:a", "va", "cancel:b", "vb"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    const char *blpop[] = {"BLPOP", "cancel:list", "1"};
    const char *get_a[] = {"GET", "cancel:a"};
    const char *get_b[] = {"GET", "cancel:b"};

    /* The BLPOP is woken by a push after it was cancelled: its reply (an
     * array) is dropped. */
    vkt_op pop = {0}, a = {0}, b = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &pop, &id, 3, blpop));
    if (wait_blocked(loop)) {
        CHECK_OK(vk_async_cancel(c, id));
        CHECK(cancelled(&pop));
        CHECK_EQ_INT(vk_async_pending(c), 0);
        CHECK_EQ_INT(vk_async_cancel(c, id), VK_ERR_INVALID_ARGUMENT);
        CHECK_OK(vkt_submit(c, &a, NULL, 2, get_a));
        vkt_blocking_do(checker, 3, (const char *[]){"LPUSH", "cancel:list", "x"});
        CHECK_OK(vkt_submit(c, &b, NULL, 2, get_b));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &b, 10000));
        CHECK(a.status == VK_OK && vkt_reply_is(a.reply, "va"));
        CHECK(b.status == VK_OK && vkt_reply_is(b.reply, "vb"));
        CHECK_EQ_INT(pop.calls, 1);
        /* It ran: the element was taken. */
        char buf[64];
        CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"LLEN", "cancel:list"}),
                     "0");
    }
    vkt_op_clear(&pop);
    vkt_op_clear(&a);
    vkt_op_clear(&b);

    /* The BLPOP times out after it was cancelled: its nil is dropped. */
    CHECK_OK(vkt_submit(c, &pop, &id, 3, blpop));
    if (wait_blocked(loop)) {
        CHECK_OK(vkt_submit(c, &a, NULL, 2, get_a));
        CHECK_OK(vk_async_cancel(c, id));
        CHECK(cancelled(&pop));
        CHECK_OK(vkt_submit(c, &b, NULL, 2, get_b));
        CHECK_EQ_INT(vk_async_pending(c), 2);
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &b, 10000));
        CHECK(a.status == VK_OK && vkt_reply_is(a.reply, "va"));
        CHECK(b.status == VK_OK && vkt_reply_is(b.reply, "vb"));
    }
    vkt_op_clear(&pop);
    vkt_op_clear(&a);
    vkt_op_clear(&b);
    vk_async_free(c);
}

/* A written BLPOP without a timeout is cancelled: the server might never
 * answer it, so the connection goes at once. The GET behind it is sent
 * again on a new connection; the INCR behind it was written and is not
 * sent again: it fails with the reason. */
static void test_cancel_unbounded_blocking(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "cancel:forever", "cancel:n"});
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "cancel:a", "va"});
    /* A read timeout far beyond the bounds below: only the cancel can free
     * the line in time. */
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 600000));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    const char *blpop[] = {"BLPOP", "cancel:forever", "0"};
    const char *get_a[] = {"GET", "cancel:a"};
    const char *incr[] = {"INCR", "cancel:n"};
    vkt_op pop = {0}, a = {0}, n = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &pop, &id, 3, blpop));
    if (wait_blocked(loop)) {
        CHECK_OK(vkt_submit(c, &a, NULL, 2, get_a));
        CHECK_OK(vkt_submit(c, &n, NULL, 2, incr));
        vkt_loop_run_for(loop, 50);   /* both written behind the BLPOP */
        CHECK_EQ_INT(a.calls + n.calls, 0);
        CHECK_OK(vk_async_cancel(c, id));
        CHECK(cancelled(&pop));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &a, 5000));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &n, 5000));
        CHECK(a.status == VK_OK && vkt_reply_is(a.reply, "va"));
        CHECK_EQ_INT(n.status, VK_ERR_IO);
        char want[160];
        snprintf(want, sizeof want,
                 "connection error: %s: connection closed: a blocking command without a timeout "
                 "was cancelled after it was sent",
                 vkt_server_address(server));
        CHECK_EQ_STR(n.error, want);
        char buf[64];
        CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                       (const char *[]){"GET", "cancel:n"}),
                     "(nil)");
        /* The client goes on. */
        vkt_op again = {0};
        if (vkt_call(loop, c, &again, 2, get_a))
            CHECK(again.status == VK_OK && vkt_reply_is(again.reply, "va"));
        vkt_op_clear(&again);
    }
    vkt_op_clear(&pop);
    vkt_op_clear(&a);
    vkt_op_clear(&n);
    vk_async_free(c);
}

/* A completion cancels another operation: that completion runs inside it. */
typedef struct canceller {
    vk_async *client;
    uint64_t victim;
    vkt_op *victim_op;
    vk_status cancel_status;
    bool victim_done_inside;
    int calls;
} canceller;

static void canceller_fn(void *userdata, vk_status status, vk_reply *reply)
{
    canceller *k = userdata;
    vkt_note_completion();
    k->calls++;
    vk_reply_free(reply);
    k->cancel_status = vk_async_cancel(k->client, k->victim);
    k->victim_done_inside = vkt_op_done(k->victim_op);
}

static bool canceller_done(void *arg)
{
    return ((canceller *)arg)->calls > 0;
}

static void test_cancel_from_a_completion(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "cancel:c", "vc"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op victim = {0}, after = {0};
    canceller k = {c, 0, &victim, VK_OK, false, 0};
    const char *ping[] = {"PING"};
    const size_t ping_len[] = {4};
    CHECK_OK(vkt_submitv(c, canceller_fn, &k, NULL, 1, ping, ping_len));
    CHECK_OK(vkt_submit(c, &victim, &k.victim, 2, (const char *[]){"GET", "cancel:c"}));
    CHECK_OK(vkt_submit(c, &after, NULL, 2, (const char *[]){"ECHO", "after"}));
    CHECK(vkt_loop_run_until(loop, canceller_done, &k, 10000));
    CHECK_OK(k.cancel_status);
    CHECK(k.victim_done_inside);
    CHECK(cancelled(&victim));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &after, 10000));
    CHECK(after.status == VK_OK && vkt_reply_is(after.reply, "after"));
    CHECK_EQ_INT(victim.calls, 1);
    vkt_op_clear(&victim);
    vkt_op_clear(&after);
    vk_async_free(c);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static bool closed_by_free(const vkt_op *op)
{
    return cancelled(op) && strstr(op->error, "client closed") != NULL;
}

static void test_free_with_operations_pending(vkt_loop *loop)
{
    /* Before the connection is ready. */
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op early[5];
    memset(early, 0, sizeof early);
    for (int i = 0; i < 5; i++)
        CHECK_OK(vkt_submit(c, &early[i], NULL, 2, (const char *[]){"ECHO", "early"}));
    vk_async_free(c);
    for (int i = 0; i < 5; i++) {
        VKT_CHECK_(closed_by_free(&early[i]), "operation %d: %d completions, status %d \"%s\"",
                   i, early[i].calls, (int)early[i].status, early[i].error);
    }
    long seq = early[0].seq;
    for (int i = 1; i < 5; i++)
        CHECK(early[i].seq > seq && (seq = early[i].seq) > 0);

    /* Written and waiting for replies: a BLPOP holds the rest back. */
    long long clients = info_clients_field("connected_clients:");
    c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op pop = {0};
    CHECK_OK(vkt_submit(c, &pop, NULL, 3, (const char *[]){"BLPOP", "life:none", "2"}));
    if (!wait_blocked(loop)) {
        vk_async_free(c);
        return;
    }
    enum { N = 100 };
    vkt_op ops[N];
    memset(ops, 0, sizeof ops);
    for (int i = 0; i < N; i++)
        CHECK_OK(vkt_submit(c, &ops[i], NULL, 2, (const char *[]){"GET", "life:k"}));
    vkt_loop_run_for(loop, 20);   /* written too */
    CHECK_EQ_INT(vk_async_pending(c), N + 1);
    vk_async_free(c);
    CHECK(closed_by_free(&pop));
    int wrong = 0;
    for (int i = 0; i < N; i++)
        if (!closed_by_free(&ops[i]))
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    /* The connection is closed: the server sees it go. */
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(5000);
    while (info_clients_field("connected_clients:") > clients && vkt_now_ms() < deadline)
        vkt_sleep_ms(10);
    CHECK(info_clients_field("connected_clients:") <= clients);
    /* Nothing more runs after free. */
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(pop.calls, 1);
    CHECK_EQ_INT(ops[0].calls, 1);
}

/* A completion that frees its client; the others still pending complete
 * once, cancelled, during that free. */
typedef struct freer {
    vk_async *client;
    int calls;
    vk_status status;
    vk_status after_free;   /* a command queued once free was called */
    char after_free_text[128];
} freer;

static void freer_fn(void *userdata, vk_status status, vk_reply *reply)
{
    freer *f = userdata;
    vkt_note_completion();
    f->calls++;
    f->status = status;
    vk_reply_free(reply);
    vk_async_free(f->client);
    /* The release waits until this returns; meanwhile nothing new. */
    const char *ping[] = {"PING"};
    const size_t len[] = {4};
    f->after_free = vk_async_command(f->client, 1, ping, len, vkt_op_fn, NULL, NULL);
    snprintf(f->after_free_text, sizeof f->after_free_text, "%s", vk_last_error());
}

static bool freer_done(void *arg)
{
    return ((freer *)arg)->calls > 0;
}

static void test_free_inside_a_completion(vkt_loop *loop)
{
    /* From a reply (vk_async_handle_io). */
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    freer f = {c, 0, VK_OK, VK_OK, ""};
    const char *ping[] = {"PING"};
    const size_t ping_len[] = {4};
    CHECK_OK(vkt_submitv(c, freer_fn, &f, NULL, 1, ping, ping_len));
    enum { N = 20 };
    vkt_op rest[N];
    memset(rest, 0, sizeof rest);
    for (int i = 0; i < N; i++)
        CHECK_OK(vkt_submit(c, &rest[i], NULL, 3, (const char *[]){"BLPOP", "life:none", "1"}));
    CHECK(vkt_loop_run_until(loop, freer_done, &f, 10000));
    CHECK_EQ_INT(f.status, VK_OK);
    CHECK_EQ_INT(f.after_free, VK_ERR_NIL_CLIENT);
    CHECK_EQ_STR(f.after_free_text, "redis client is nil");
    int wrong = 0;
    for (int i = 0; i < N; i++)
        if (!cancelled(&rest[i]))
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    vkt_loop_run_for(loop, 50);   /* nothing of the client is left to run */
    CHECK_EQ_INT(f.calls, 1);
    CHECK_EQ_INT(rest[0].calls, 1);

    /* From a failure (a port nobody listens on). */
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", vkt_free_port());
    vk_config *cfg = vkt_async_config(address);
    vk_config_set_max_retries(cfg, -1);
    c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    freer g = {c, 0, VK_OK, VK_OK, ""};
    vkt_op other = {0};
    CHECK_OK(vkt_submitv(c, freer_fn, &g, NULL, 1, ping, ping_len));
    CHECK_OK(vkt_submit(c, &other, NULL, 1, ping));
    CHECK(vkt_loop_run_until(loop, freer_done, &g, 10000));
    CHECK_EQ_INT(g.status, VK_ERR_IO);
    CHECK_EQ_INT(g.after_free, VK_ERR_NIL_CLIENT);
    CHECK_EQ_INT(other.calls, 1);
    CHECK(other.status != VK_OK);
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(g.calls, 1);
    CHECK_EQ_INT(other.calls, 1);
    vkt_op_clear(&other);

    /* From vk_async_cancel: the release waits until the completion returns. */
    c = new_client(loop);
    if (c == NULL)
        return;
    freer h = {c, 0, VK_OK, VK_OK, ""};
    uint64_t id = 0;
    vkt_op next = {0};
    CHECK_OK(vkt_submitv(c, freer_fn, &h, &id, 1, ping, ping_len));
    CHECK_OK(vkt_submit(c, &next, NULL, 1, ping));
    CHECK_OK(vk_async_cancel(c, id));
    CHECK_EQ_INT(h.calls, 1);
    CHECK_EQ_INT(h.status, VK_ERR_CANCELLED);
    CHECK_EQ_INT(h.after_free, VK_ERR_NIL_CLIENT);
    CHECK(cancelled(&next));
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(next.calls, 1);
    vkt_op_clear(&next);
}

/* Calls from another thread are refused, and change nothing. */
typedef struct intruder {
    vk_async *client;
    vk_pipeline *pipeline;
    uint64_t victim;
    vk_status command, cancel, pipeline_new, pipeline_exec;
    char texts[4][160];
    int completions;
} intruder;

static void intruder_fn(void *userdata, vk_status status, vk_reply *reply)
{
    intruder *t = userdata;
    (void)status;
    t->completions++;
    vk_reply_free(reply);
}

static void *intrude(void *arg)
{
    intruder *t = arg;
    const char *set[] = {"SET", "thread:k", "from another thread"};
    const size_t lens[] = {3, 8, 19};
    uint64_t id = 0;
    t->command = vk_async_command(t->client, 3, set, lens, intruder_fn, t, &id);
    snprintf(t->texts[0], sizeof t->texts[0], "%s", vk_last_error());
    t->cancel = vk_async_cancel(t->client, t->victim);
    snprintf(t->texts[1], sizeof t->texts[1], "%s", vk_last_error());
    vk_pipeline *p = NULL;
    t->pipeline_new = vk_async_pipeline_new(&p, t->client);
    snprintf(t->texts[2], sizeof t->texts[2], "%s", vk_last_error());
    vk_pipeline_free(p);
    t->pipeline_exec = vk_async_pipeline_exec(t->pipeline, intruder_fn, t, &id);
    snprintf(t->texts[3], sizeof t->texts[3], "%s", vk_last_error());
    return NULL;
}

static void test_other_thread_refused(vkt_loop *loop)
{
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "thread:k"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op victim = {0};
    uint64_t victim_id = 0;
    CHECK_OK(vkt_submit(c, &victim, &victim_id, 2, (const char *[]){"ECHO", "mine"}));
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", "thread:k", "piped"},
                                (const size_t[]){3, 8, 5}));
    intruder t = {.client = c, .pipeline = p, .victim = victim_id};
    pthread_t thread;
    CHECK_EQ_INT(pthread_create(&thread, NULL, intrude, &t), 0);
    pthread_join(thread, NULL);
    CHECK_EQ_INT(t.command, VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(t.texts[0], THREAD_TEXT);
    CHECK_EQ_INT(t.cancel, VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(t.texts[1], THREAD_TEXT);
    CHECK_EQ_INT(t.pipeline_new, VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(t.texts[2], THREAD_TEXT);
    CHECK_EQ_INT(t.pipeline_exec, VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_STR(t.texts[3], THREAD_TEXT);
    /* Nothing changed: the victim runs, nothing else was queued. */
    CHECK_EQ_INT(victim.calls, 0);
    CHECK_EQ_INT(vk_async_pending(c), 1);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &victim, 10000));
    CHECK(victim.status == VK_OK && vkt_reply_is(victim.reply, "mine"));
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(t.completions, 0);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "thread:k"}), "(nil)");
    vkt_op_clear(&victim);
    vk_pipeline_free(p);
    vk_async_free(c);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL)
        return 1;
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_client_new(&checker, cfg));
    vk_config_free(cfg);
    if (checker == NULL)
        return vkt_finish();
    RUN_ON_LOOPS(test_thousand_in_flight_with_errors);
    RUN_ON_LOOPS(test_large_value_among_small_ones);
    RUN_ON_LOOPS(test_back_pressure);
    RUN_ON_LOOPS(test_slow_reader);
    RUN_ON_LOOPS(test_cancel_before_ready);
    RUN_ON_LOOPS(test_cancel_behind_the_bound);
    RUN_ON_LOOPS(test_cancel_after_write);
    RUN_ON_LOOPS(test_cancel_unbounded_blocking);
    RUN_ON_LOOPS(test_cancel_from_a_completion);
    RUN_ON_LOOPS(test_free_with_operations_pending);
    RUN_ON_LOOPS(test_free_inside_a_completion);
    RUN_ON_LOOPS(test_other_thread_refused);
    vk_client_free(checker);
    vkt_server_stop(server);
    return vkt_finish();
}
