/*
 * The event-loop client's one multiplexed connection against a real server
 * (VKTEST_NEEDS_SERVER), each scenario on libuv and on libevent: a
 * thousand operations in flight with error replies among them, an 8 MB
 * value while small operations keep going, 20,000 operations queued at
 * once (back-pressure); cancellation before the connection is ready,
 * behind the in-flight bound, after the request was written (the stream
 * stays in step; a BLPOP's lane closes, with or without a timeout, and the
 * server's wait ends) and from inside a completion; lanes, the
 * connections of their own that blocking commands run on (operations
 * queued after a BLPOP complete while it waits, lanes are reused and a few
 * kept idle, a pipeline holding a BLPOP runs on one with its replies in
 * order, vk_async_pending counts them); and the client's lifecycle: free
 * with operations pending or in flight (a BLPOP on its lane among them),
 * free from inside a completion (also one run by cancel), and calls from
 * another thread refused.
 *
 * Requests held on the server, written and unanswered: CLIENT PAUSE <ms>
 * WRITE holds the first write a client sends, and the client's later
 * commands behind it, until CLIENT UNPAUSE (a blocking command no longer
 * does that: it runs on its lane).
 */
#include "vktest.h"
#include "servers.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"
/* Below the API: the bit that marks the ids of operations on lanes. */
#include "api/driven.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static vkt_server *server;
static vk_client *checker;   /* a blocking client, to look at the server */

#define CANCELLED_TEXT "operation cancelled"
#define THREAD_TEXT "invalid argument: an event-loop client is used only on its loop's thread"

/* A field of INFO <section> on the server, or -1. */
static long long info_field(const char *section, const char *field)
{
    const char *info[] = {"INFO", section};
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

static long long info_clients_field(const char *field)
{
    return info_field("clients", field);
}

/* Connections the server accepted so far (the checker keeps its own open,
 * so the growth is what the client under test opened). */
static long long connections_received(void)
{
    return info_field("stats", "total_connections_received:");
}

/* Clients the server holds on cmd: blocked by a blocking command, or
 * postponed by CLIENT PAUSE (CLIENT LIST: flag b, and the command it
 * waits on in cmd=, on valkey 8 and redis 7 alike). *id, when given,
 * takes the server's id of the last one listed. */
static int clients_held_on(const char *cmd, long long *id)
{
    vk_reply *r = NULL;
    int n = 0;
    if (vkt_blocking_run(checker, &r, 2, (const char *[]){"CLIENT", "LIST"}) == VK_OK) {
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
    const char *cmd;
    int want;
} held_wait;

static bool held_as_wanted(void *arg)
{
    held_wait *w = arg;
    vkt_loop_run_for(w->loop, 5);
    int n = clients_held_on(w->cmd, NULL);
    return w->want == 0 ? n == 0 : n >= w->want;
}

/* Turns the loop until the server holds `want` clients on cmd (0: none
 * any more). */
static bool wait_held(vkt_loop *loop, const char *cmd, int want)
{
    held_wait w = {loop, cmd, want};
    bool held = vkt_loop_run_until(loop, held_as_wanted, &w, 5000);
    VKT_CHECK_(held, "the server never held %d client(s) on %s", want, cmd);
    return held;
}

/* Turns the loop until the server has a client blocked (the BLPOP was
 * written and is waiting). */
static bool wait_blocked(vkt_loop *loop)
{
    return wait_held(loop, "blpop", 1);
}

/* Pauses the server's writers for ms: the first write a client sends is
 * held, and the client's later commands wait behind it, until the pause
 * ends (CLIENT UNPAUSE) or the client goes (its held command never runs).
 * The checker's own commands here are not writes. */
static void pause_writes(const char *ms)
{
    vkt_blocking_do(checker, 4, (const char *[]){"CLIENT", "PAUSE", ms, "WRITE"});
}

static void unpause(void)
{
    vkt_blocking_do(checker, 2, (const char *[]){"CLIENT", "UNPAUSE"});
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
 * operations behind it get their own replies. The server holds the
 * cancelled command (writers paused; it is a write) and everything behind
 * it, so the cancel surely falls between the write and the reply: an
 * array reply (LPOP with a count) and an integer one (INCR) are dropped
 * once the pause ends, the commands ran. A BLPOP cancelled after it was
 * written is on its lane (before, on the shared connection, its reply was
 * read and dropped the same way): the lane closes, which ends its wait on
 * the server, so a later push stays in the list, and the shared connection
 * is not involved. */
static void test_cancel_after_write(vkt_loop *loop)
{
    vkt_blocking_do(checker, 5, (const char *[]){"DEL", "cancel:list", "cancel:a", "cancel:b",
                                                 "cancel:n"});
    vkt_blocking_do(checker, 5, (const char *[]){"MSET", "cancel:a", "va", "cancel:b", "vb"});
    vkt_blocking_do(checker, 5, (const char *[]){"RPUSH", "cancel:list", "x", "y", "z"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    long long shared = shared_id(loop, c);
    CHECK(shared > 0);
    const char *get_a[] = {"GET", "cancel:a"};
    const char *get_b[] = {"GET", "cancel:b"};
    char buf[64];

    /* Written, held by the server, cancelled, then answered: the replies
     * (an array, then an integer) are dropped. */
    const char *held[][3] = {{"LPOP", "cancel:list", "2"}, {"INCR", "cancel:n", NULL}};
    const char *held_cmd[] = {"lpop", "incr"};
    const int held_argc[] = {3, 2};
    for (int k = 0; k < 2; k++) {
        vkt_op op = {0}, a = {0}, b = {0};
        uint64_t id = 0;
        pause_writes("20000");
        CHECK_OK(vkt_submit(c, &op, &id, held_argc[k], held[k]));
        CHECK((id & VK_LANE_ID_BIT) == 0);
        CHECK_OK(vkt_submit(c, &a, NULL, 2, get_a));
        if (wait_held(loop, held_cmd[k], 1)) {
            vkt_loop_run_for(loop, 20);   /* the GET is written behind it */
            CHECK_EQ_INT(op.calls + a.calls, 0);
            CHECK_OK(vk_async_cancel(c, id));
            CHECK(cancelled(&op));
            CHECK_EQ_INT(vk_async_pending(c), 1);
            CHECK_EQ_INT(vk_async_cancel(c, id), VK_ERR_INVALID_ARGUMENT);
            CHECK_OK(vkt_submit(c, &b, NULL, 2, get_b));
        }
        unpause();
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &b, 10000));
        CHECK(a.status == VK_OK && vkt_reply_is(a.reply, "va"));
        CHECK(b.status == VK_OK && vkt_reply_is(b.reply, "vb"));
        CHECK_EQ_INT(op.calls, 1);
        vkt_op_clear(&op);
        vkt_op_clear(&a);
        vkt_op_clear(&b);
    }
    /* Both ran: two elements taken, the counter at 1. */
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"LLEN", "cancel:list"}),
                 "1");
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "cancel:n"}),
                 "1");
    /* The same connection all along. */
    CHECK_EQ_INT(shared_id(loop, c), shared);

    /* A BLPOP with a timeout on its lane, cancelled once the server has it
     * waiting: the server's wait ends, and a push after that is not taken
     * by it. */
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "cancel:list"});
    vkt_op pop = {0}, a = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &pop, &id, 3, (const char *[]){"BLPOP", "cancel:list", "30"}));
    CHECK(id & VK_LANE_ID_BIT);
    if (wait_blocked(loop)) {
        CHECK_OK(vk_async_cancel(c, id));
        CHECK(cancelled(&pop));
        CHECK_EQ_INT(vk_async_pending(c), 0);
        CHECK_EQ_INT(vk_async_cancel(c, id), VK_ERR_INVALID_ARGUMENT);
        CHECK(wait_held(loop, "blpop", 0));
        vkt_blocking_do(checker, 3, (const char *[]){"LPUSH", "cancel:list", "x"});
        if (vkt_call(loop, c, &a, 2, get_a))
            CHECK(a.status == VK_OK && vkt_reply_is(a.reply, "va"));
        CHECK_EQ_INT(pop.calls, 1);
        CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                       (const char *[]){"LLEN", "cancel:list"}),
                     "1");
    }
    CHECK_EQ_INT(shared_id(loop, c), shared);
    vkt_op_clear(&pop);
    vkt_op_clear(&a);
    vk_async_free(c);
}

/* A written BLPOP without a timeout is cancelled: the server might never
 * answer it. It waits on its lane, which closes: the server's wait ends
 * at once, the list is untouched, and the shared connection is not
 * affected at all. (Before lanes, the GET and the INCR queued after the
 * BLPOP waited behind it on the shared connection, which the cancel
 * closed: the GET was sent again, the INCR failed with VK_ERR_IO. Now
 * they are answered while the BLPOP waits, and the shared connection is
 * the same one before and after.) */
static void test_cancel_unbounded_blocking(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "cancel:forever", "cancel:n"});
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "cancel:a", "va"});
    /* A read timeout far beyond the bounds below: only the cancel can end
     * the wait in time. */
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 600000));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    long long shared = shared_id(loop, c);
    CHECK(shared > 0);
    long long opened = connections_received();
    const char *blpop[] = {"BLPOP", "cancel:forever", "0"};
    const char *get_a[] = {"GET", "cancel:a"};
    const char *incr[] = {"INCR", "cancel:n"};
    vkt_op pop = {0}, a = {0}, n = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &pop, &id, 3, blpop));
    CHECK(id & VK_LANE_ID_BIT);
    CHECK_OK(vkt_submit(c, &a, NULL, 2, get_a));
    CHECK_OK(vkt_submit(c, &n, NULL, 2, incr));
    CHECK_EQ_INT(vk_async_pending(c), 3);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &a, 5000));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &n, 5000));
    CHECK(a.status == VK_OK && vkt_reply_is(a.reply, "va"));
    CHECK(n.status == VK_OK && vk_reply_get_integer(n.reply) == 1);
    if (wait_blocked(loop)) {
        long long lane = -1;
        CHECK_EQ_INT(clients_held_on("blpop", &lane), 1);
        CHECK(lane > 0 && lane != shared);
        CHECK_EQ_INT(pop.calls, 0);
        CHECK_EQ_INT(vk_async_pending(c), 1);
        CHECK_OK(vk_async_cancel(c, id));
        CHECK(cancelled(&pop));
        CHECK_EQ_INT(vk_async_pending(c), 0);
        /* The lane closed: the server stops waiting, soon (the bound is
         * far below the read timeout). */
        CHECK(wait_held(loop, "blpop", 0));
        /* Nothing took from the list. */
        vkt_blocking_do(checker, 3, (const char *[]){"LPUSH", "cancel:forever", "x"});
        char buf[64];
        CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                       (const char *[]){"LLEN", "cancel:forever"}),
                     "1");
        /* The INCR ran once. */
        CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2,
                                       (const char *[]){"GET", "cancel:n"}),
                     "1");
        /* The client goes on, on the same shared connection: the lane was
         * the only connection opened. */
        vkt_op again = {0};
        if (vkt_call(loop, c, &again, 2, get_a))
            CHECK(again.status == VK_OK && vkt_reply_is(again.reply, "va"));
        vkt_op_clear(&again);
        CHECK_EQ_INT(shared_id(loop, c), shared);
        CHECK_EQ_INT(connections_received() - opened, 1);
        CHECK_EQ_INT(vk_async_is_connected(c), 1);
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

/* ---- lanes: blocking commands on connections of their own ----------------------- */

/* A BLPOP with a timeout, then 200 operations queued behind it on the same
 * client: they complete, in order, each with its own reply, while the
 * server still has the BLPOP waiting; a push then answers it. */
static void test_lane_does_not_hold_back(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "lanes:list", "lanes:ctr"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op pop = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &pop, &id, 3, (const char *[]){"BLPOP", "lanes:list", "30"}));
    CHECK(id & VK_LANE_ID_BIT);
    enum { N = 200 };
    static checked ops[N];
    memset(ops, 0, sizeof ops);
    int done = 0;
    for (int i = 0; i < N; i++) {
        checked *o = &ops[i];
        o->done = &done;
        if (i % 2 == 0) {
            o->kind = EXPECT_TEXT;
            snprintf(o->want, sizeof o->want, "behind-%d", i);
            CHECK_OK(submit_checked(c, o, NULL, 2, (const char *[]){"ECHO", o->want}));
        } else {
            o->kind = EXPECT_INTEGER;
            o->want_integer = i / 2 + 1;
            CHECK_OK(submit_checked(c, o, NULL, 2, (const char *[]){"INCR", "lanes:ctr"}));
        }
    }
    CHECK_EQ_INT(vk_async_pending(c), N + 1);
    target t = {&done, N};
    CHECK(vkt_loop_run_until(loop, target_reached, &t, 10000));
    /* All answered while the BLPOP waits (30 s, unless pushed to) on the
     * server. */
    CHECK_EQ_INT(pop.calls, 0);
    CHECK(wait_blocked(loop));
    CHECK_EQ_INT(pop.calls, 0);
    CHECK_EQ_INT(vk_async_pending(c), 1);
    int wrong = 0, out_of_order = 0;
    for (int i = 0; i < N; i++) {
        if (ops[i].calls != 1 || ops[i].status != VK_OK || !ops[i].matched)
            wrong++;
        if (i > 0 && ops[i].seq <= ops[i - 1].seq)
            out_of_order++;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(out_of_order, 0);
    vkt_blocking_do(checker, 3, (const char *[]){"RPUSH", "lanes:list", "pushed"});
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &pop, 10000));
    CHECK_EQ_INT(pop.status, VK_OK);
    CHECK(vk_reply_get_length(pop.reply) == 2 &&
          vkt_reply_is(vk_reply_get_element(pop.reply, 1), "pushed"));
    CHECK(pop.seq > ops[N - 1].seq);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    vkt_op_clear(&pop);
    vk_async_free(c);
}

/* Runs `count` BLPOPs on lanes:reuse at once, waits until the server has
 * them all waiting, then pushes one element for each: every one completes
 * with its element. *lane (when given) takes the server's id of a waiting
 * one. */
static void pops_at_once(vkt_loop *loop, vk_async *c, int count, long long *lane)
{
    vkt_op pops[10];
    memset(pops, 0, sizeof pops);
    for (int i = 0; i < count; i++)
        CHECK_OK(vkt_submit(c, &pops[i], NULL, 3, (const char *[]){"BLPOP", "lanes:reuse", "0"}));
    if (wait_held(loop, "blpop", count)) {
        CHECK_EQ_INT(clients_held_on("blpop", lane), count);
        for (int i = 0; i < count; i++)
            vkt_blocking_do(checker, 3, (const char *[]){"RPUSH", "lanes:reuse", "e"});
    }
    for (int i = 0; i < count; i++) {
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &pops[i], 10000));
        CHECK(pops[i].status == VK_OK && vk_reply_get_length(pops[i].reply) == 2);
        vkt_op_clear(&pops[i]);
    }
}

/* Lanes are kept for reuse: BLPOPs one after the other (one answered by a
 * push, one by its timeout, one more) use one lane, the same connection on
 * the server; ten at once open nine more; of those ten, eight are kept
 * idle, so ten at once again open only two. Counted on the server
 * (connections accepted). */
static void test_lanes_reused(vkt_loop *loop)
{
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "lanes:reuse"});
    long long opened = connections_received();
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    long long shared = shared_id(loop, c);
    CHECK_EQ_INT(connections_received() - opened, 1);
    long long first = -1, second = -1;
    pops_at_once(loop, c, 1, &first);
    vkt_op timed = {0};
    if (vkt_call(loop, c, &timed, 3, (const char *[]){"BLPOP", "lanes:reuse", "0.05"}))
        CHECK(timed.status == VK_OK && vk_reply_get_type(timed.reply) == VK_REPLY_NIL);
    vkt_op_clear(&timed);
    pops_at_once(loop, c, 1, &second);
    CHECK(first > 0 && first != shared);
    CHECK_EQ_INT(second, first);
    CHECK_EQ_INT(connections_received() - opened, 2);

    pops_at_once(loop, c, 10, NULL);
    CHECK_EQ_INT(connections_received() - opened, 2 + 9);
    pops_at_once(loop, c, 10, NULL);
    CHECK_EQ_INT(connections_received() - opened, 2 + 9 + 2);
    CHECK_EQ_INT(shared_id(loop, c), shared);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    vk_async_free(c);
}

/* A pipeline holding a BLPOP runs on a lane (its id says so): an ECHO
 * submitted after it completes while it waits, the connection it runs on
 * is the one the server has waiting on the BLPOP, and once a push answers
 * it, its replies are in order. */
static void test_pipeline_on_lane(vkt_loop *loop)
{
    vkt_blocking_do(checker, 4, (const char *[]){"DEL", "lanes:p", "lanes:p:k", "lanes:p:n"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    long long shared = shared_id(loop, c);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    if (p == NULL) {
        vk_async_free(c);
        return;
    }
    CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"CLIENT", "ID"}, (const size_t[]){6, 2}));
    CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"SET", "lanes:p:k", "v"},
                                (const size_t[]){3, 9, 1}));
    CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"BLPOP", "lanes:p", "0"},
                                (const size_t[]){5, 7, 1}));
    CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", "lanes:p:k"},
                                (const size_t[]){3, 9}));
    CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"INCR", "lanes:p:n"},
                                (const size_t[]){4, 9}));
    vkt_op piped = {0}, echo = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &piped, &id));
    vk_pipeline_free(p);
    CHECK(id & VK_LANE_ID_BIT);
    if (vkt_call(loop, c, &echo, 2, (const char *[]){"ECHO", "meanwhile"}))
        CHECK(echo.status == VK_OK && vkt_reply_is(echo.reply, "meanwhile"));
    long long lane = -1;
    if (wait_blocked(loop)) {
        CHECK_EQ_INT(clients_held_on("blpop", &lane), 1);
        CHECK_EQ_INT(piped.calls, 0);
        CHECK_EQ_INT(vk_async_pending(c), 1);
        vkt_blocking_do(checker, 3, (const char *[]){"RPUSH", "lanes:p", "x"});
    }
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &piped, 10000));
    CHECK_EQ_INT(piped.status, VK_OK);
    CHECK(echo.seq < piped.seq);
    const vk_reply *r = piped.reply;
    CHECK(vk_reply_get_type(r) == VK_REPLY_ARRAY && vk_reply_get_length(r) == 5);
    if (vk_reply_get_length(r) == 5) {
        long long ran_on = vk_reply_get_integer(vk_reply_get_element(r, 0));
        CHECK_EQ_INT(ran_on, lane);
        CHECK(ran_on != shared);
        CHECK(vkt_reply_is(vk_reply_get_element(r, 1), "OK"));
        const vk_reply *popped = vk_reply_get_element(r, 2);
        CHECK(vk_reply_get_length(popped) == 2 &&
              vkt_reply_is(vk_reply_get_element(popped, 0), "lanes:p") &&
              vkt_reply_is(vk_reply_get_element(popped, 1), "x"));
        CHECK(vkt_reply_is(vk_reply_get_element(r, 3), "v"));
        CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 4)), 1);
    }
    CHECK_EQ_INT(vk_async_pending(c), 0);
    vkt_op_clear(&piped);
    vkt_op_clear(&echo);
    vk_async_free(c);
}

/* vk_async_pending counts the operations on lanes with the others: each
 * from its submission to its completion, a cancelled one no more. */
static void test_pending_counts_lanes(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "lanes:q1", "lanes:q2"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op first = {0}, second = {0}, piped = {0}, echo = {0};
    uint64_t second_id = 0;
    CHECK_OK(vkt_submit(c, &first, NULL, 3, (const char *[]){"BLPOP", "lanes:q1", "0"}));
    CHECK_EQ_INT(vk_async_pending(c), 1);
    CHECK_OK(vkt_submit(c, &second, &second_id, 3, (const char *[]){"BLPOP", "lanes:q2", "0"}));
    CHECK_EQ_INT(vk_async_pending(c), 2);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_append(p, 3, (const char *[]){"BRPOP", "lanes:q1", "0"},
                                (const size_t[]){5, 8, 1}));
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &piped, NULL));
    vk_pipeline_free(p);
    CHECK_EQ_INT(vk_async_pending(c), 3);
    CHECK_OK(vkt_submit(c, &echo, NULL, 2, (const char *[]){"ECHO", "e"}));
    CHECK_EQ_INT(vk_async_pending(c), 4);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &echo, 10000));
    CHECK_EQ_INT(vk_async_pending(c), 3);
    if (wait_held(loop, "blpop", 2) && wait_held(loop, "brpop", 1)) {
        CHECK_OK(vk_async_cancel(c, second_id));
        CHECK(cancelled(&second));
        CHECK_EQ_INT(vk_async_pending(c), 2);
        /* The first waiting is served first: two elements answer both. */
        vkt_blocking_do(checker, 4, (const char *[]){"RPUSH", "lanes:q1", "a", "b"});
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &first, 10000));
        CHECK(vkt_loop_run_until(loop, vkt_op_done, &piped, 10000));
        CHECK_EQ_INT(first.status, VK_OK);
        CHECK_EQ_INT(piped.status, VK_OK);
    }
    CHECK_EQ_INT(vk_async_pending(c), 0);
    vkt_op_clear(&first);
    vkt_op_clear(&second);
    vkt_op_clear(&piped);
    vkt_op_clear(&echo);
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

    /* Written and waiting for replies: the server holds the shared
     * connection's requests (writers paused: the INCR first, the GETs
     * behind it), and a BLPOP waits on its lane. (Before lanes, the BLPOP
     * itself held the GETs back.) */
    long long clients = info_clients_field("connected_clients:");
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "life:n"});
    c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op incr = {0}, pop = {0};
    pause_writes("20000");
    CHECK_OK(vkt_submit(c, &incr, NULL, 2, (const char *[]){"INCR", "life:n"}));
    CHECK_OK(vkt_submit(c, &pop, NULL, 3, (const char *[]){"BLPOP", "life:none", "0"}));
    enum { N = 100 };
    vkt_op ops[N];
    memset(ops, 0, sizeof ops);
    for (int i = 0; i < N; i++)
        CHECK_OK(vkt_submit(c, &ops[i], NULL, 2, (const char *[]){"GET", "life:k"}));
    if (!wait_held(loop, "incr", 1) || !wait_held(loop, "blpop", 1)) {
        vk_async_free(c);
        unpause();
        return;
    }
    vkt_loop_run_for(loop, 20);   /* the GETs are written too */
    CHECK_EQ_INT(vk_async_pending(c), N + 2);
    vk_async_free(c);
    CHECK(closed_by_free(&incr));
    CHECK(closed_by_free(&pop));
    CHECK_EQ_STR(pop.error, "operation cancelled: client closed");
    int wrong = 0;
    for (int i = 0; i < N; i++)
        if (!closed_by_free(&ops[i]))
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    /* Both connections are closed: the server sees them go (while still
     * paused), and the held INCR never runs. */
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(5000);
    while (info_clients_field("connected_clients:") > clients && vkt_now_ms() < deadline)
        vkt_sleep_ms(10);
    CHECK(info_clients_field("connected_clients:") <= clients);
    CHECK_EQ_INT(clients_held_on("blpop", NULL), 0);
    unpause();
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "life:n"}),
                 "(nil)");
    /* Nothing more runs after free. */
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(incr.calls, 1);
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
    RUN_ON_LOOPS(test_lane_does_not_hold_back);
    RUN_ON_LOOPS(test_lanes_reused);
    RUN_ON_LOOPS(test_pipeline_on_lane);
    RUN_ON_LOOPS(test_pending_counts_lanes);
    RUN_ON_LOOPS(test_free_with_operations_pending);
    RUN_ON_LOOPS(test_free_inside_a_completion);
    RUN_ON_LOOPS(test_other_thread_refused);
    vk_client_free(checker);
    vkt_server_stop(server);
    return vkt_finish();
}
