/*
 * The distributed lock on event-loop clients (VKTEST_NEEDS_SERVER), each
 * scenario on libuv and on libevent: try and acquire against holders of the
 * blocking API and the other way round (the same keys, values, fencing
 * counters and texts), an acquire that waits between tries on the loop
 * while other commands go on, mutual exclusion of 50 acquisitions at once
 * on one client beside a thread of the blocking API, release and extend
 * rules, a Redlock quorum of three event-loop clients with nodes going
 * down, automatic renewal on the loop's timer (and its end on unlock, on
 * loss and on free), argument errors returned at once without a
 * completion, handles refused by the other API, the manager or the
 * client freed while an acquire waits between tries, and acquisitions
 * cancelled (waiting, or with an attempt in flight: nothing left held).
 */
#include "vktest.h"
#include "servers.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define NODES 3
#define NOT_HELD_TEXT "lock was not held or already expired"

static vkt_server *server;           /* the node of the one-node scenarios */
static vkt_server *nodes[NODES];     /* the quorum's */
static vk_client *checker;           /* a blocking client on server, to look */
static vk_client *bclient;           /* the blocking API's side ... */
static vk_lock_manager *bmanager;    /* ... holding locks on server */

/* ---- completions of lock operations -------------------------------------------- */

/* Depth of vk_async_lock_* calls in progress: a completion that runs while
 * it is not 0 ran inside the call that started its operation. */
static int in_call;

typedef struct lock_op {
    int calls;
    vk_status status;
    vk_lock *lock;       /* owned here once complete: free with vk_lock_free */
    char error[512];
    long seq;
    int64_t at_ms;       /* when the completion ran */
} lock_op;

typedef struct done_op {
    int calls;
    vk_status status;
    char error[512];
    long seq;
} done_op;

static void lock_fn(void *userdata, vk_status status, vk_lock *lock)
{
    lock_op *op = userdata;
    long seq = vkt_note_completion();
    VKT_CHECK_(in_call == 0, "a lock completion (status %d) ran inside the call that started it",
               (int)status);
    op->calls++;
    VKT_CHECK_(op->calls == 1, "a lock completion ran %d times for one operation", op->calls);
    if (op->calls > 1) {
        vk_lock_free(lock);
        return;
    }
    op->seq = seq;
    op->status = status;
    op->lock = lock;
    op->at_ms = vkt_now_ms();
    if (status != VK_OK) {
        snprintf(op->error, sizeof op->error, "%s", vk_last_error());
        VKT_CHECK_(lock == NULL, "a failed acquisition (status %d) came with a handle",
                   (int)status);
    }
}

static void done_fn(void *userdata, vk_status status)
{
    done_op *op = userdata;
    long seq = vkt_note_completion();
    VKT_CHECK_(in_call == 0, "an unlock/extend completion (status %d) ran inside its call",
               (int)status);
    op->calls++;
    VKT_CHECK_(op->calls == 1, "an unlock/extend completion ran %d times", op->calls);
    if (op->calls > 1)
        return;
    op->seq = seq;
    op->status = status;
    if (status != VK_OK)
        snprintf(op->error, sizeof op->error, "%s", vk_last_error());
}

static bool lock_op_done(void *op)
{
    return ((lock_op *)op)->calls > 0;
}

static bool done_op_done(void *op)
{
    return ((done_op *)op)->calls > 0;
}

static vk_status start_try(vk_async_lock_manager *m, const char *key, vk_async_lock_fn fn,
                           void *userdata)
{
    in_call++;
    vk_status st = vk_async_lock_try(m, key, key ? strlen(key) : 0, fn, userdata, NULL);
    in_call--;
    return st;
}

static vk_status start_acquire(vk_async_lock_manager *m, const char *key,
                               const vk_lock_options *opts, vk_async_lock_fn fn, void *userdata)
{
    in_call++;
    vk_status st = vk_async_lock_acquire(m, key, key ? strlen(key) : 0, opts, fn, userdata, NULL);
    in_call--;
    return st;
}

static vk_status start_unlock(vk_lock *lock, vk_async_done_fn fn, void *userdata)
{
    in_call++;
    vk_status st = vk_async_lock_unlock(lock, fn, userdata);
    in_call--;
    return st;
}

static vk_status start_extend(vk_lock *lock, int64_t expiry_ms, vk_async_done_fn fn,
                              void *userdata)
{
    in_call++;
    vk_status st = vk_async_lock_extend(lock, expiry_ms, fn, userdata);
    in_call--;
    return st;
}

/* Starts a try or an acquire (opts NULL with try_only: a try) and turns the
 * loop until it completed; false (with a failed check) when either did not
 * happen. */
static bool run_lock(vkt_loop *loop, vk_async_lock_manager *m, const char *key, bool try_only,
                     const vk_lock_options *opts, lock_op *op)
{
    memset(op, 0, sizeof *op);
    vk_status st = try_only ? start_try(m, key, lock_fn, op)
                            : start_acquire(m, key, opts, lock_fn, op);
    VKT_CHECK_(st == VK_OK, "starting the %s of %s -> %d (%s)", try_only ? "try" : "acquire",
               key, (int)st, vk_last_error());
    if (st != VK_OK)
        return false;
    VKT_CHECK_(op->calls == 0, "the completion ran inside the call");
    bool done = vkt_loop_run_until(loop, lock_op_done, op, 20000);
    VKT_CHECK_(done, "the %s of %s did not complete", try_only ? "try" : "acquire", key);
    return done;
}

/* A try that must take the lock: the handle, or NULL with a failed check. */
static vk_lock *must_try(vkt_loop *loop, vk_async_lock_manager *m, const char *key)
{
    lock_op op;
    if (!run_lock(loop, m, key, true, NULL, &op))
        return NULL;
    VKT_CHECK_(op.status == VK_OK && op.lock != NULL, "try of %s: status %d, %s (%s)", key,
               (int)op.status, op.lock ? "a handle" : "no handle", op.error);
    return op.lock;
}

/* Unlocks through the event-loop API and turns the loop until it completed;
 * the completion's status (VK_ERR_TIMEOUT with a failed check if it never
 * ran). *text gets its failure text when text is not NULL. */
static vk_status run_unlock(vkt_loop *loop, vk_lock *lock, char *text, size_t cap)
{
    done_op op = {0};
    vk_status st = start_unlock(lock, done_fn, &op);
    VKT_CHECK_(st == VK_OK, "starting an unlock -> %d (%s)", (int)st, vk_last_error());
    if (st != VK_OK)
        return st;
    CHECK_EQ_INT(op.calls, 0);
    bool done = vkt_loop_run_until(loop, done_op_done, &op, 20000);
    VKT_CHECK_(done, "the unlock did not complete");
    if (text != NULL)
        snprintf(text, cap, "%s", op.error);
    return done ? op.status : VK_ERR_TIMEOUT;
}

static vk_status run_extend(vkt_loop *loop, vk_lock *lock, int64_t expiry_ms, char *text,
                            size_t cap)
{
    done_op op = {0};
    vk_status st = start_extend(lock, expiry_ms, done_fn, &op);
    VKT_CHECK_(st == VK_OK, "starting an extend -> %d (%s)", (int)st, vk_last_error());
    if (st != VK_OK)
        return st;
    CHECK_EQ_INT(op.calls, 0);
    bool done = vkt_loop_run_until(loop, done_op_done, &op, 20000);
    VKT_CHECK_(done, "the extend did not complete");
    if (text != NULL)
        snprintf(text, cap, "%s", op.error);
    return done ? op.status : VK_ERR_TIMEOUT;
}

/* ---- the server, seen through the blocking checker ------------------------------- */

/* A key of this scenario on this loop: every run has its own keys. */
static void key_name(char *out, size_t cap, const char *what, const vkt_loop *loop)
{
    snprintf(out, cap, "alock:%s:%s", what, vkt_loop_name(loop));
}

static void fencing_key(char *out, size_t cap, const char *key)
{
    snprintf(out, cap, "{%s}:fencing", key);
}

/* The value of key in buf; false when the key does not exist. */
static bool get_value(vk_client *c, const char *key, char *buf, size_t cap)
{
    vkt_blocking_text(c, buf, cap, 2, (const char *[]){"GET", key});
    return strcmp(buf, "(nil)") != 0 && strncmp(buf, "failed: ", 8) != 0;
}

static bool key_exists(vk_client *c, const char *key)
{
    char buf[256];
    return get_value(c, key, buf, sizeof buf);
}

static long long pttl(vk_client *c, const char *key)
{
    return vkt_blocking_integer(c, 2, (const char *[]){"PTTL", key});
}

static long long counter_value(vk_client *c, const char *key)
{
    return vkt_blocking_integer(c, 2, (const char *[]){"GET", key});
}

/* A lock value: 128 random bits in hex. */
static bool is_lock_value(const char *s)
{
    if (s == NULL || strlen(s) != 32)
        return false;
    for (const char *p = s; *p; p++)
        if (!isxdigit((unsigned char)*p))
            return false;
    return true;
}

/* For vkt_loop_run_until: the fencing counter of a key reached a value
 * (an acquire made that many tries). */
typedef struct counter_wait {
    vk_client *c;
    const char *key;
    long long want;
} counter_wait;

static bool counter_reached(void *arg)
{
    counter_wait *w = arg;
    return counter_value(w->c, w->key) >= w->want;
}

static bool key_gone(void *key)
{
    return !key_exists(checker, key);
}

static bool lock_lost(void *lock)
{
    return vk_lock_is_lost(lock) == 1;
}

static vk_client *blocking_client(const vkt_server *s, bool fail_fast)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(s));
    if (fail_fast) {
        /* A dead node must fail fast, not hold up the quorum. */
        CHECK_OK(vk_config_set_dial_timeout_ms(cfg, 300));
        CHECK_OK(vk_config_set_max_retries(cfg, -1));
    }
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static vk_async *async_client(vkt_loop *loop, const vkt_server *s, bool fail_fast)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(s));
    if (fail_fast) {
        CHECK_OK(vk_config_set_dial_timeout_ms(cfg, 300));
        CHECK_OK(vk_config_set_max_retries(cfg, -1));
    }
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return c;
}

/* One event-loop client on server and a manager over it. */
typedef struct setup {
    vk_async *c;
    vk_async_lock_manager *m;
} setup;

static bool setup_new(setup *s, vkt_loop *loop)
{
    s->m = NULL;
    s->c = async_client(loop, server, false);
    if (s->c != NULL)
        CHECK_OK(vk_async_lock_manager_new(&s->m, &s->c, 1));
    if (s->m == NULL) {
        vk_async_free(s->c);
        s->c = NULL;
        return false;
    }
    return true;
}

static void setup_free(setup *s)
{
    vk_async_lock_manager_free(s->m);
    vk_async_free(s->c);
}

static bool nothing_pending(void *arg)
{
    return vk_async_pending(arg) == 0;
}

/* ---- cancel ----------------------------------------------------------------------- */

/* id is not in flight: the cancel is refused, and nothing completes. */
static void cancel_refused(vk_async_lock_manager *m, uint64_t id)
{
    char want[96];
    snprintf(want, sizeof want, "invalid argument: no lock acquisition %llu in flight",
             (unsigned long long)id);
    long completions = vkt_completions();
    CHECK_FAILS(vk_async_lock_cancel(m, id), VK_ERR_INVALID_ARGUMENT, want);
    CHECK_EQ_INT(vkt_completions(), completions);
}

/* vk_async_lock_cancel: an acquisition waiting between tries completes
 * with VK_ERR_CANCELLED at once and tries no more; one cancelled with its
 * attempt's requests queued or out gives back whatever that attempt took;
 * ids not in flight are refused. */
static void test_cancel(vkt_loop *loop)
{
    char key[64], fkey[80];
    key_name(key, sizeof key, "cancel", loop);
    fencing_key(fkey, sizeof fkey, key);
    setup s;
    if (!setup_new(&s, loop))
        return;
    CHECK_FAILS(vk_async_lock_cancel(NULL, 1), VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    cancel_refused(s.m, 12345);

    /* Held by the blocking API: the acquisition waits between tries. */
    vk_lock_options hold = VK_LOCK_OPTIONS_INIT;
    hold.expiry_ms = 10000;
    vk_lock *holder = NULL;
    CHECK_OK(vk_lock_manager_acquire(&holder, bmanager, NULL, key, strlen(key), &hold));
    long long before = counter_value(checker, fkey);
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = 20;
    lock_op op = {0};
    uint64_t id = 0;
    in_call++;
    CHECK_OK(vk_async_lock_acquire(s.m, key, strlen(key), &opts, lock_fn, &op, &id));
    in_call--;
    CHECK(id != 0);
    counter_wait tries = {checker, fkey, before + 3};
    CHECK(vkt_loop_run_until(loop, counter_reached, &tries, 5000));
    CHECK_EQ_INT(op.calls, 0);
    CHECK_OK(vk_async_lock_cancel(s.m, id));
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(op.status, VK_ERR_CANCELLED);
    CHECK(op.lock == NULL);
    cancel_refused(s.m, id);
    /* An attempt that was out when cancelled ends; then no more tries. */
    CHECK(vkt_loop_run_until(loop, nothing_pending, s.c, 5000));
    long long after = counter_value(checker, fkey);
    vkt_loop_run_for(loop, 200);
    CHECK_EQ_INT(counter_value(checker, fkey), after);
    CHECK_EQ_INT(op.calls, 1);
    CHECK_OK(vk_lock_unlock(holder, NULL));
    vk_lock_free(holder);

    /* A free lock: cancelled with the attempt's requests still queued, or
     * after some loop turns (written, or answered): never left held. */
    for (int turns = 0; turns < 6; turns++) {
        lock_op in_flight = {0};
        uint64_t fid = 0;
        in_call++;
        CHECK_OK(vk_async_lock_try(s.m, key, strlen(key), lock_fn, &in_flight, &fid));
        in_call--;
        for (int t = 0; t < turns; t++)
            vkt_loop_run_for(loop, 0);
        if (in_flight.calls == 0) {
            CHECK_OK(vk_async_lock_cancel(s.m, fid));
            CHECK_EQ_INT(in_flight.calls, 1);
            CHECK_EQ_INT(in_flight.status, VK_ERR_CANCELLED);
        } else {
            /* Already decided: not in flight any more. */
            cancel_refused(s.m, fid);
            if (in_flight.lock != NULL)
                start_unlock(in_flight.lock, NULL, NULL);
        }
        CHECK(vkt_loop_run_until(loop, nothing_pending, s.c, 5000));
        CHECK(!key_exists(checker, key));
        vk_lock_free(in_flight.lock);
    }

    /* After its completion an acquisition is not in flight. */
    lock_op done = {0};
    uint64_t did = 0;
    in_call++;
    CHECK_OK(vk_async_lock_try(s.m, key, strlen(key), lock_fn, &done, &did));
    in_call--;
    CHECK(vkt_loop_run_until(loop, lock_op_done, &done, 5000));
    CHECK(done.lock != NULL);
    cancel_refused(s.m, did);
    done_op released = {0};
    CHECK_OK(start_unlock(done.lock, done_fn, &released));
    CHECK(vkt_loop_run_until(loop, done_op_done, &released, 5000));
    vk_lock_free(done.lock);
    setup_free(&s);
}

/* ---- 1. try, contention both ways, fencing tokens ------------------------------ */

static void test_try_and_contention(vkt_loop *loop)
{
    char key[64], fkey[80], value[256], text[512];
    key_name(key, sizeof key, "try", loop);
    fencing_key(fkey, sizeof fkey, key);
    setup s;
    if (!setup_new(&s, loop))
        return;

    /* A free key: a handle. */
    vk_lock *mine = must_try(loop, s.m, key);
    if (mine == NULL) {
        setup_free(&s);
        return;
    }
    int64_t token1 = vk_lock_fencing_token(mine);
    CHECK(token1 > 0);
    int64_t validity = vk_lock_validity_ms(mine);
    /* The default expiry less Redlock's drift allowance (1% + 2 ms). */
    VKT_CHECK_(validity > 0 && validity <= 10000 - 100 - 2, "validity %lld", (long long)validity);
    size_t len = 0;
    CHECK_EQ_STR(vk_lock_key(mine, &len), key);
    CHECK_EQ_INT(len, strlen(key));
    CHECK_EQ_INT(vk_lock_is_lost(mine), 0);
    /* The server holds a lock value under the key itself and the token in
     * the fencing counter; the expiry is the default's. */
    CHECK(get_value(checker, key, value, sizeof value));
    VKT_CHECK_(is_lock_value(value), "lock value \"%s\"", value);
    char held_value[256];
    snprintf(held_value, sizeof held_value, "%s", value);
    CHECK_EQ_INT(counter_value(checker, fkey), token1);
    long long ttl = pttl(checker, key);
    VKT_CHECK_(ttl > 9000 && ttl <= 10000, "PTTL %lld", ttl);

    /* The blocking API meets it as contention ... */
    vk_lock *blocking = (vk_lock *)1;
    CHECK_OK(vk_lock_manager_try_lock(&blocking, bmanager, NULL, key, strlen(key)));
    CHECK(blocking == NULL);
    /* ... and so does another try on the loop: VK_OK without a handle. */
    lock_op op;
    if (run_lock(loop, s.m, key, true, NULL, &op)) {
        CHECK_EQ_INT(op.status, VK_OK);
        CHECK(op.lock == NULL);
    }
    vk_lock_free(op.lock);
    /* Neither touched our value. */
    CHECK(get_value(checker, key, value, sizeof value));
    CHECK_EQ_STR(value, held_value);

    /* Released on the loop: the key is gone, the blocking API gets it. */
    CHECK_OK(run_unlock(loop, mine, text, sizeof text));
    CHECK_EQ_INT(vk_lock_validity_ms(mine), 0);
    CHECK(!key_exists(checker, key));
    vk_lock_free(mine);
    CHECK_OK(vk_lock_manager_try_lock(&blocking, bmanager, NULL, key, strlen(key)));
    CHECK(blocking != NULL);
    int64_t token2 = vk_lock_fencing_token(blocking);
    VKT_CHECK_(token2 > token1, "tokens %lld then %lld", (long long)token1, (long long)token2);

    /* The reverse: the blocking API holds it. A try completes with VK_OK
     * and no handle; an acquire gives up after its tries with the text. */
    if (run_lock(loop, s.m, key, true, NULL, &op)) {
        CHECK_EQ_INT(op.status, VK_OK);
        CHECK(op.lock == NULL);
    }
    vk_lock_free(op.lock);
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 3;
    opts.retry_delay_ms = 20;
    int64_t started = vkt_now_ms();
    if (run_lock(loop, s.m, key, false, &opts, &op)) {
        char want[160];
        snprintf(want, sizeof want, "failed to acquire lock \"%s\": lock already taken", key);
        CHECK_EQ_INT(op.status, VK_ERR_LOCK_ACQUIRE);
        CHECK_EQ_STR(op.error, want);
        CHECK(op.lock == NULL);
        /* Two waits of at least half the delay each. */
        VKT_CHECK_(op.at_ms - started >= 20, "gave up after %lld ms",
                   (long long)(op.at_ms - started));
    }
    vk_lock_free(op.lock);
    CHECK_OK(vk_lock_unlock(blocking, NULL));
    vk_lock_free(blocking);

    /* Tokens keep increasing, whichever API takes the key next. */
    int64_t token3 = 0;
    if (run_lock(loop, s.m, key, false, NULL, &op)) {
        CHECK_EQ_INT(op.status, VK_OK);
        CHECK(op.lock != NULL);
        token3 = vk_lock_fencing_token(op.lock);
        VKT_CHECK_(token3 > token2, "tokens %lld then %lld", (long long)token2,
                   (long long)token3);
        CHECK_OK(vk_lock_manager_try_lock(&blocking, bmanager, NULL, key, strlen(key)));
        CHECK(blocking == NULL);
        CHECK_OK(run_unlock(loop, op.lock, NULL, 0));
        vk_lock_free(op.lock);
    }
    CHECK_OK(vk_lock_manager_try_lock(&blocking, bmanager, NULL, key, strlen(key)));
    CHECK(blocking != NULL);
    VKT_CHECK_(vk_lock_fencing_token(blocking) > token3, "tokens %lld then %lld",
               (long long)token3, (long long)vk_lock_fencing_token(blocking));
    CHECK_OK(vk_lock_unlock(blocking, NULL));
    vk_lock_free(blocking);
    setup_free(&s);
}

/* ---- 2. an acquire waits on the loop -------------------------------------------- */

static void test_acquire_waits_on_the_loop(vkt_loop *loop)
{
    char key[64], fkey[80];
    key_name(key, sizeof key, "wait", loop);
    fencing_key(fkey, sizeof fkey, key);
    setup s;
    if (!setup_new(&s, loop))
        return;
    /* Connected beforehand, so the wait is only the holder's. */
    vkt_op warm = {0};
    vkt_call(loop, s.c, &warm, 1, (const char *[]){"PING"});
    vkt_op_clear(&warm);

    vk_lock_options hold = VK_LOCK_OPTIONS_INIT;
    hold.expiry_ms = 300;
    vk_lock *holder = NULL;
    int64_t t0 = vkt_now_ms();
    CHECK_OK(vk_lock_manager_acquire(&holder, bmanager, NULL, key, strlen(key), &hold));
    CHECK(holder != NULL);
    if (holder == NULL) {
        setup_free(&s);
        return;
    }
    long long counter_before = counter_value(checker, fkey);

    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 40;
    opts.retry_delay_ms = 25;
    lock_op op = {0};
    vkt_op ping = {0}, echo = {0};
    CHECK_OK(start_acquire(s.m, key, &opts, lock_fn, &op));
    CHECK_OK(vkt_submit(s.c, &ping, NULL, 1, (const char *[]){"PING"}));
    CHECK_EQ_INT(op.calls, 0);

    /* The acquire is between tries once the counter moved twice (every
     * try counts): a command sent now is served meanwhile. */
    counter_wait tries = {checker, fkey, counter_before + 2};
    CHECK(vkt_loop_run_until(loop, counter_reached, &tries, 5000));
    bool waiting = op.calls == 0;
    long long holder_left = pttl(checker, key);
    CHECK_OK(vkt_submit(s.c, &echo, NULL, 2, (const char *[]){"ECHO", "while-waiting"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &echo, 5000));
    CHECK(vkt_loop_run_until(loop, lock_op_done, &op, 10000));

    CHECK_EQ_INT(ping.calls, 1);
    CHECK(ping.status == VK_OK && vkt_reply_is(ping.reply, "PONG"));
    CHECK(echo.status == VK_OK && vkt_reply_is(echo.reply, "while-waiting"));
    CHECK_EQ_INT(op.status, VK_OK);
    CHECK(op.lock != NULL);
    VKT_CHECK_(ping.seq < op.seq, "the PING (completion %ld) waited for the lock (%ld)",
               ping.seq, op.seq);
    /* While the holder still had the key for a while, the command sent
     * during the wait came back first: nothing blocked the loop. */
    VKT_CHECK_(waiting, "the acquire completed before its second try was seen");
    if (waiting && holder_left > 50)
        VKT_CHECK_(echo.seq < op.seq,
                   "the ECHO sent during the wait (completion %ld) came after the lock (%ld)",
                   echo.seq, op.seq);
    /* Only once the holder's 300 ms were over. */
    VKT_CHECK_(op.at_ms - t0 >= 290, "acquired %lld ms after the holder",
               (long long)(op.at_ms - t0));
    if (op.lock != NULL) {
        VKT_CHECK_(vk_lock_fencing_token(op.lock) > vk_lock_fencing_token(holder),
                   "tokens %lld then %lld", (long long)vk_lock_fencing_token(holder),
                   (long long)vk_lock_fencing_token(op.lock));
        /* The first holder's release leaves the new holder alone. */
        CHECK_FAILS(vk_lock_unlock(holder, NULL), VK_ERR_LOCK_NOT_HELD, NOT_HELD_TEXT);
        CHECK(key_exists(checker, key));
        CHECK_OK(run_unlock(loop, op.lock, NULL, 0));
        CHECK(!key_exists(checker, key));
    }
    vk_lock_free(op.lock);
    vk_lock_free(holder);
    vkt_op_clear(&ping);
    vkt_op_clear(&echo);
    setup_free(&s);
}

/* ---- 3. mutual exclusion ------------------------------------------------------- */

/* What the critical sections of one run see. */
typedef struct exclusion {
    const char *key;          /* the lock */
    const char *counter;      /* bumped under it: GET, then SET value + 1 */
    vk_async *c;              /* the event-loop side's commands */
    atomic_int inside;
    atomic_int overlaps;
    atomic_llong last_token;
    atomic_int regressions;
    atomic_int failures;
    int finished;             /* event-loop sections over (loop thread) */
    atomic_int thread_done;
    char failure[512];
    /* the blocking thread's */
    vk_lock_manager *bm;
    vk_client *bc;
    int rounds;
} exclusion;

typedef struct section {
    exclusion *x;
    vk_lock *lock;
} section;

static void note_failure(exclusion *x, const char *what, vk_status st, const char *text)
{
    if (atomic_fetch_add(&x->failures, 1) == 0)
        snprintf(x->failure, sizeof x->failure, "%s: %d (%s)", what, (int)st, text);
}

static void enter(exclusion *x, int64_t token)
{
    if (atomic_fetch_add(&x->inside, 1) != 0)
        atomic_fetch_add(&x->overlaps, 1);
    if (token <= atomic_load(&x->last_token))
        atomic_fetch_add(&x->regressions, 1);
    atomic_store(&x->last_token, token);
}

static void leave(exclusion *x)
{
    atomic_fetch_sub(&x->inside, 1);
}

static void section_unlocked(void *userdata, vk_status status)
{
    section *sec = userdata;
    vkt_note_completion();
    if (status != VK_OK)
        note_failure(sec->x, "unlock", status, vk_last_error());
    vk_lock_free(sec->lock);
    sec->lock = NULL;
    sec->x->finished++;
}

static void section_set(void *userdata, vk_status status, vk_reply *reply)
{
    section *sec = userdata;
    vkt_note_completion();
    if (status != VK_OK || !vkt_reply_is(reply, "OK"))
        note_failure(sec->x, "SET", status, status == VK_OK ? "not OK" : vk_last_error());
    vk_reply_free(reply);
    leave(sec->x);
    vk_status st = start_unlock(sec->lock, section_unlocked, sec);
    if (st != VK_OK) {
        note_failure(sec->x, "starting the unlock", st, vk_last_error());
        vk_lock_free(sec->lock);
        sec->lock = NULL;
        sec->x->finished++;
    }
}

static void section_get(void *userdata, vk_status status, vk_reply *reply)
{
    section *sec = userdata;
    vkt_note_completion();
    long long value = 0;
    if (status != VK_OK)
        note_failure(sec->x, "GET", status, vk_last_error());
    else if (vk_reply_get_type(reply) == VK_REPLY_STRING)
        value = atoll(vk_reply_get_string(reply, &(size_t){0}));
    vk_reply_free(reply);
    char next[32];
    snprintf(next, sizeof next, "%lld", value + 1);
    const char *argv[] = {"SET", sec->x->counter, next};
    const size_t lens[] = {3, strlen(sec->x->counter), strlen(next)};
    vk_status st = vkt_submitv(sec->x->c, section_set, sec, NULL, 3, argv, lens);
    if (st != VK_OK) {
        note_failure(sec->x, "queueing SET", st, vk_last_error());
        leave(sec->x);
        vk_lock_free(sec->lock);
        sec->lock = NULL;
        sec->x->finished++;
    }
}

static void section_acquired(void *userdata, vk_status status, vk_lock *lock)
{
    section *sec = userdata;
    vkt_note_completion();
    VKT_CHECK_(in_call == 0, "an acquisition completed inside the call that started it");
    if (status != VK_OK || lock == NULL) {
        note_failure(sec->x, "acquire", status, status == VK_OK ? "no handle" : vk_last_error());
        vk_lock_free(lock);
        sec->x->finished++;
        return;
    }
    sec->lock = lock;
    enter(sec->x, vk_lock_fencing_token(lock));
    const char *argv[] = {"GET", sec->x->counter};
    const size_t lens[] = {3, strlen(sec->x->counter)};
    vk_status st = vkt_submitv(sec->x->c, section_get, sec, NULL, 2, argv, lens);
    if (st != VK_OK) {
        note_failure(sec->x, "queueing GET", st, vk_last_error());
        leave(sec->x);
        vk_lock_free(lock);
        sec->lock = NULL;
        sec->x->finished++;
    }
}

/* The blocking API's critical sections, on a thread of their own. */
static void *blocking_sections(void *arg)
{
    exclusion *x = arg;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    /* The contenders on the loop retry far more often: stay patient even
     * when everything runs slower (Valgrind). */
    opts.retry_delay_ms = vkt_scaled_ms(10);
    for (int i = 0; i < x->rounds; i++) {
        vk_lock *lock = NULL;
        vk_status st = vk_lock_manager_acquire(&lock, x->bm, NULL, x->key, strlen(x->key), &opts);
        if (st != VK_OK || lock == NULL) {
            note_failure(x, "blocking acquire", st, vk_last_error());
            continue;
        }
        enter(x, vk_lock_fencing_token(lock));
        long long value = vkt_blocking_integer(x->bc, 2, (const char *[]){"GET", x->counter});
        char next[32];
        snprintf(next, sizeof next, "%lld", value + 1);
        vk_reply *r = NULL;
        st = vkt_blocking_run(x->bc, &r, 3, (const char *[]){"SET", x->counter, next});
        if (st != VK_OK)
            note_failure(x, "blocking SET", st, vk_last_error());
        vk_reply_free(r);
        leave(x);
        st = vk_lock_unlock(lock, NULL);
        if (st != VK_OK)
            note_failure(x, "blocking unlock", st, vk_last_error());
        vk_lock_free(lock);
    }
    atomic_store(&x->thread_done, 1);
    return NULL;
}

typedef struct all_done {
    exclusion *x;
    int sections;
    bool with_thread;
} all_done;

static bool sections_over(void *arg)
{
    all_done *a = arg;
    return a->x->finished >= a->sections && (!a->with_thread || atomic_load(&a->x->thread_done));
}

/* n sections on the loop at once through m (and rounds on a thread through
 * bm, when bm is not NULL); returns the counter's final value, read from
 * counter_reader. */
static long long run_exclusion(vkt_loop *loop, vk_async_lock_manager *m, vk_async *c,
                               vk_lock_manager *bm, vk_client *bc, int rounds,
                               vk_client *counter_reader, const char *key, const char *counter,
                               int n, exclusion *x)
{
    memset(x, 0, sizeof *x);
    x->key = key;
    x->counter = counter;
    x->c = c;
    x->bm = bm;
    x->bc = bc;
    x->rounds = rounds;
    atomic_init(&x->last_token, 0);
    vk_reply *r = NULL;
    CHECK_OK(vkt_blocking_run(counter_reader, &r, 2, (const char *[]){"DEL", counter}));
    vk_reply_free(r);

    section *sections = calloc((size_t)n, sizeof *sections);
    CHECK(sections != NULL);
    if (sections == NULL)
        return -1;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = vkt_scaled_ms(5);
    pthread_t thread;
    memset(&thread, 0, sizeof thread);
    bool threaded = bm != NULL && pthread_create(&thread, NULL, blocking_sections, x) == 0;
    CHECK(bm == NULL || threaded);
    int started = 0;
    for (int i = 0; i < n; i++) {
        sections[i].x = x;
        vk_status st = start_acquire(m, key, &opts, section_acquired, &sections[i]);
        VKT_CHECK_(st == VK_OK, "starting acquisition %d -> %d (%s)", i, (int)st,
                   vk_last_error());
        started += st == VK_OK;
    }
    all_done want = {x, started, threaded};
    bool done = vkt_loop_run_until(loop, sections_over, &want, 60000);
    VKT_CHECK_(done, "%d of %d sections on the loop finished%s", x->finished, started,
               threaded && !atomic_load(&x->thread_done) ? ", the thread did not" : "");
    if (threaded)
        pthread_join(thread, NULL);   /* bounded by its tries */
    /* Whatever is still running must end before the sections go; if it
     * never does (a failure already reported), they are left allocated. */
    if (done || vkt_loop_run_until(loop, sections_over, &want, 60000))
        free(sections);
    VKT_CHECK_(atomic_load(&x->failures) == 0, "%d failures, the first: %s",
               atomic_load(&x->failures), x->failure);
    return counter_value(counter_reader, counter);
}

static void test_mutual_exclusion(vkt_loop *loop)
{
    char key[64], counter[64];
    key_name(key, sizeof key, "excl", loop);
    key_name(counter, sizeof counter, "excl-counter", loop);
    setup s;
    if (!setup_new(&s, loop))
        return;
    exclusion x;
    /* 50 on the loop at once. */
    long long total = run_exclusion(loop, s.m, s.c, NULL, NULL, 0, checker, key, counter, 50, &x);
    CHECK_EQ_INT(total, 50);
    CHECK_EQ_INT(atomic_load(&x.overlaps), 0);
    CHECK_EQ_INT(atomic_load(&x.regressions), 0);
    CHECK(!key_exists(checker, key));

    /* The same beside a thread of the blocking API on the same key. */
    vk_client *bc = blocking_client(server, false);
    vk_lock_manager *bm = NULL;
    CHECK_OK(vk_lock_manager_new(&bm, bc));
    if (bm != NULL) {
        total = run_exclusion(loop, s.m, s.c, bm, bc, 10, checker, key, counter, 50, &x);
        CHECK_EQ_INT(total, 60);
        CHECK_EQ_INT(atomic_load(&x.overlaps), 0);
        CHECK_EQ_INT(atomic_load(&x.regressions), 0);
        CHECK(!key_exists(checker, key));
    }
    vk_lock_manager_free(bm);
    vk_client_free(bc);
    setup_free(&s);
}

/* ---- 4. release and extend ------------------------------------------------------- */

static void test_unlock_and_extend(vkt_loop *loop)
{
    char key[64], text[512], value[256];
    setup s;
    if (!setup_new(&s, loop))
        return;
    lock_op op;

    /* Expired: the release says so, and so does an extend. */
    key_name(key, sizeof key, "expired", loop);
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 100;
    if (run_lock(loop, s.m, key, false, &opts, &op) && op.lock != NULL) {
        vkt_loop_run_for(loop, 200);
        CHECK_EQ_INT(vk_lock_validity_ms(op.lock), 0);
        CHECK(!key_exists(checker, key));
        CHECK_EQ_INT(run_extend(loop, op.lock, 1000, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        CHECK_EQ_INT(run_unlock(loop, op.lock, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        CHECK(!key_exists(checker, key));
    }
    CHECK_EQ_INT(op.status, VK_OK);
    vk_lock_free(op.lock);

    /* Extend while held resets the expiry (longer and shorter). */
    key_name(key, sizeof key, "extend", loop);
    opts.expiry_ms = 2000;
    if (run_lock(loop, s.m, key, false, &opts, &op) && op.lock != NULL) {
        long long ttl = pttl(checker, key);
        VKT_CHECK_(ttl > 0 && ttl <= 2000, "PTTL %lld", ttl);
        CHECK_OK(run_extend(loop, op.lock, 30000, text, sizeof text));
        ttl = pttl(checker, key);
        VKT_CHECK_(ttl > 25000 && ttl <= 30000, "PTTL after extending to 30 s: %lld", ttl);
        int64_t validity = vk_lock_validity_ms(op.lock);
        VKT_CHECK_(validity > 25000 && validity <= 30000, "validity %lld", (long long)validity);
        CHECK_OK(run_extend(loop, op.lock, 500, text, sizeof text));
        ttl = pttl(checker, key);
        VKT_CHECK_(ttl > 0 && ttl <= 500, "PTTL after extending to 500 ms: %lld", ttl);
        validity = vk_lock_validity_ms(op.lock);
        VKT_CHECK_(validity > 0 && validity <= 500, "validity %lld", (long long)validity);
        /* Still ours: another try meets contention. */
        vk_lock *other = (vk_lock *)1;
        CHECK_OK(vk_lock_manager_try_lock(&other, bmanager, NULL, key, strlen(key)));
        CHECK(other == NULL);
        CHECK_OK(run_unlock(loop, op.lock, text, sizeof text));
        CHECK(!key_exists(checker, key));
        /* A second release: not held, through the completion. */
        CHECK_EQ_INT(run_unlock(loop, op.lock, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        CHECK_EQ_INT(run_extend(loop, op.lock, 1000, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        CHECK(!key_exists(checker, key));
    }
    vk_lock_free(op.lock);

    /* Extend and unlock after another holder took over: refused, and the
     * new holder keeps its lock and its expiry. */
    key_name(key, sizeof key, "taken", loop);
    opts.expiry_ms = 100;
    if (run_lock(loop, s.m, key, false, &opts, &op) && op.lock != NULL) {
        vkt_loop_run_for(loop, 200);
        vk_lock *next = NULL;
        CHECK_OK(vk_lock_manager_try_lock(&next, bmanager, NULL, key, strlen(key)));
        CHECK(next != NULL);
        char next_value[256] = "";
        get_value(checker, key, next_value, sizeof next_value);
        CHECK_EQ_INT(run_extend(loop, op.lock, 5000, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        long long ttl = pttl(checker, key);
        VKT_CHECK_(ttl > 9000, "the new holder's PTTL %lld", ttl);
        CHECK_EQ_INT(run_unlock(loop, op.lock, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        CHECK(get_value(checker, key, value, sizeof value));
        CHECK_EQ_STR(value, next_value);
        if (next != NULL) {
            CHECK(vk_lock_fencing_token(next) > vk_lock_fencing_token(op.lock));
            CHECK_OK(vk_lock_unlock(next, NULL));
        }
        vk_lock_free(next);
    }
    vk_lock_free(op.lock);

    /* Overwritten under our feet (no expiry involved): not held, and the
     * stranger's value stays. */
    key_name(key, sizeof key, "stranger", loop);
    vk_lock *mine = must_try(loop, s.m, key);
    if (mine != NULL) {
        vkt_blocking_do(checker, 3, (const char *[]){"SET", key, "stranger"});
        CHECK_EQ_INT(run_extend(loop, mine, 5000, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        CHECK_EQ_INT(pttl(checker, key), -1);   /* not given our expiry */
        CHECK_EQ_INT(run_unlock(loop, mine, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
        CHECK(get_value(checker, key, value, sizeof value));
        CHECK_EQ_STR(value, "stranger");
        vkt_blocking_do(checker, 2, (const char *[]){"DEL", key});
    }
    vk_lock_free(mine);
    setup_free(&s);
}

/* ---- 4/7. argument errors: at once, no completion ---------------------------- */

static void test_argument_errors(vkt_loop *loop)
{
    char key[64];
    key_name(key, sizeof key, "args", loop);
    setup s;
    if (!setup_new(&s, loop))
        return;
    lock_op op = {0};
    done_op dop = {0};
    long before = vkt_completions();

    CHECK_FAILS(start_try(NULL, key, lock_fn, &op), VK_ERR_NIL_LOCK_MANAGER,
                "lock manager is nil");
    CHECK_FAILS(start_acquire(NULL, key, NULL, lock_fn, &op), VK_ERR_NIL_LOCK_MANAGER,
                "lock manager is nil");
    CHECK_FAILS(start_try(s.m, key, NULL, &op), VK_ERR_NIL_LOCK_FN, "lock function is nil");
    CHECK_FAILS(start_acquire(s.m, key, NULL, NULL, &op), VK_ERR_NIL_LOCK_FN,
                "lock function is nil");
    const char *blanks[] = {"", " ", "\t\n ", "   "};
    for (size_t i = 0; i < sizeof blanks / sizeof blanks[0]; i++) {
        CHECK_FAILS(start_try(s.m, blanks[i], lock_fn, &op), VK_ERR_EMPTY_LOCK_KEY,
                    "lock key cannot be empty");
        CHECK_FAILS(start_acquire(s.m, blanks[i], NULL, lock_fn, &op), VK_ERR_EMPTY_LOCK_KEY,
                    "lock key cannot be empty");
    }
    in_call++;
    CHECK_FAILS(vk_async_lock_try(s.m, NULL, 3, lock_fn, &op, NULL), VK_ERR_EMPTY_LOCK_KEY,
                "lock key cannot be empty");
    CHECK_FAILS(vk_async_lock_acquire(s.m, NULL, 3, NULL, lock_fn, &op, NULL), VK_ERR_EMPTY_LOCK_KEY,
                "lock key cannot be empty");
    in_call--;

    /* Invalid options: the lock options' codes and texts. */
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 0;
    CHECK_FAILS(start_acquire(s.m, key, &opts, lock_fn, &op), VK_ERR_LOCK_EXPIRY_INVALID,
                "lock expiry must be greater than 0");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.tries = 0;
    CHECK_FAILS(start_acquire(s.m, key, &opts, lock_fn, &op), VK_ERR_LOCK_TRIES_INVALID,
                "lock tries must be at least 1");
    opts.tries = 5000;
    CHECK_FAILS(start_acquire(s.m, key, &opts, lock_fn, &op), VK_ERR_LOCK_TRIES_EXCEEDED,
                "lock tries exceeds maximum");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.retry_delay_ms = -10;
    CHECK_FAILS(start_acquire(s.m, key, &opts, lock_fn, &op), VK_ERR_LOCK_RETRY_DELAY_NEGATIVE,
                "lock retry delay cannot be negative");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.drift_factor = 1.5;
    CHECK_FAILS(start_acquire(s.m, key, &opts, lock_fn, &op), VK_ERR_LOCK_DRIFT_FACTOR_INVALID,
                "lock drift factor must be between 0 (inclusive) and 1 (exclusive)");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.version = 7;
    CHECK_FAILS(start_acquire(s.m, key, &opts, lock_fn, &op), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: lock options version 7 is newer than this library "
                "(which reads up to version 1)");

    /* No handle. */
    CHECK_FAILS(start_unlock(NULL, done_fn, &dop), VK_ERR_NIL_LOCK_HANDLE,
                "lock handle is nil or not initialized");
    CHECK_FAILS(start_extend(NULL, 1000, done_fn, &dop), VK_ERR_NIL_LOCK_HANDLE,
                "lock handle is nil or not initialized");
    CHECK_FAILS(start_extend(NULL, 0, done_fn, &dop), VK_ERR_NIL_LOCK_HANDLE,
                "lock handle is nil or not initialized");

    /* None of those ran a completion or touched the server. */
    vkt_loop_run_for(loop, 100);
    CHECK_EQ_INT(op.calls, 0);
    CHECK_EQ_INT(dop.calls, 0);
    CHECK_EQ_INT(vkt_completions(), before);
    CHECK_EQ_INT(vk_async_pending(s.c), 0);
    CHECK(!key_exists(checker, key));

    /* A held lock: extend with no expiry is refused at once and changes
     * nothing. */
    vk_lock *mine = must_try(loop, s.m, key);
    if (mine != NULL) {
        before = vkt_completions();
        long long ttl = pttl(checker, key);
        CHECK_FAILS(start_extend(mine, 0, done_fn, &dop), VK_ERR_LOCK_EXPIRY_INVALID,
                    "lock expiry must be greater than 0");
        CHECK_FAILS(start_extend(mine, -5, done_fn, &dop), VK_ERR_LOCK_EXPIRY_INVALID,
                    "lock expiry must be greater than 0");
        /* No completion function. */
        CHECK_FAILS(start_unlock(mine, NULL, &dop), VK_ERR_NIL_LOCK_FN, "lock function is nil");
        CHECK_FAILS(start_extend(mine, 1000, NULL, &dop), VK_ERR_NIL_LOCK_FN,
                    "lock function is nil");
        vkt_loop_run_for(loop, 50);
        CHECK_EQ_INT(dop.calls, 0);
        CHECK_EQ_INT(vkt_completions(), before);
        long long after = pttl(checker, key);
        VKT_CHECK_(after > 0 && after <= ttl, "PTTL %lld then %lld", ttl, after);
        CHECK_OK(run_unlock(loop, mine, NULL, 0));
    }
    vk_lock_free(mine);

    /* The constructor's refusals (the blocking manager's texts) leave
     * *out NULL. */
    vk_async_lock_manager *m = (vk_async_lock_manager *)1;
    CHECK_FAILS(vk_async_lock_manager_new(&m, NULL, 0), VK_ERR_LOCK_NOT_INITIALIZED,
                "distributed lock is not initialized");
    CHECK(m == NULL);
    m = (vk_async_lock_manager *)1;
    CHECK_FAILS(vk_async_lock_manager_new(&m, &s.c, 0), VK_ERR_LOCK_NOT_INITIALIZED,
                "distributed lock is not initialized");
    CHECK(m == NULL);
    vk_async *none[2] = {s.c, NULL};
    m = (vk_async_lock_manager *)1;
    CHECK_FAILS(vk_async_lock_manager_new(&m, none, 2), VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK(m == NULL);
    vk_async_lock_manager_free(NULL);
    setup_free(&s);
}

/* ---- 7. handles refused by the other API ---------------------------------------- */

static void test_crossed_handles(vkt_loop *loop)
{
    char akey[64], bkey[64], avalue[256], bvalue[256], value[256];
    key_name(akey, sizeof akey, "cross-async", loop);
    key_name(bkey, sizeof bkey, "cross-blocking", loop);
    setup s;
    if (!setup_new(&s, loop))
        return;
    vk_lock *a = must_try(loop, s.m, akey);
    vk_lock *b = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&b, bmanager, NULL, bkey, strlen(bkey)));
    CHECK(b != NULL);
    if (a == NULL || b == NULL) {
        vk_lock_free(a);
        vk_lock_free(b);
        setup_free(&s);
        return;
    }
    get_value(checker, akey, avalue, sizeof avalue);
    get_value(checker, bkey, bvalue, sizeof bvalue);

    /* An event-loop handle given to the blocking API. */
    CHECK_EQ_INT(vk_lock_unlock(a, NULL), VK_ERR_INVALID_ARGUMENT);
    CHECK(strncmp(vk_last_error(), "invalid argument: ", 18) == 0);
    CHECK_EQ_INT(vk_lock_extend(a, NULL, 60000), VK_ERR_INVALID_ARGUMENT);
    CHECK(strncmp(vk_last_error(), "invalid argument: ", 18) == 0);
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    CHECK_EQ_INT(vk_lock_manager_unlock(bmanager, NULL, a), VK_ERR_INVALID_ARGUMENT);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    /* A blocking handle given to the event-loop API: refused at once. */
    long before = vkt_completions();
    done_op dop = {0};
    CHECK_EQ_INT(start_unlock(b, done_fn, &dop), VK_ERR_INVALID_ARGUMENT);
    CHECK(strncmp(vk_last_error(), "invalid argument: ", 18) == 0);
    CHECK_EQ_INT(start_extend(b, 60000, done_fn, &dop), VK_ERR_INVALID_ARGUMENT);
    CHECK(strncmp(vk_last_error(), "invalid argument: ", 18) == 0);
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(dop.calls, 0);
    CHECK_EQ_INT(vkt_completions(), before);

    /* Both locks are untouched: same values, expiries not extended. */
    CHECK(get_value(checker, akey, value, sizeof value));
    CHECK_EQ_STR(value, avalue);
    CHECK(get_value(checker, bkey, value, sizeof value));
    CHECK_EQ_STR(value, bvalue);
    VKT_CHECK_(pttl(checker, akey) <= 10000, "PTTL %lld", pttl(checker, akey));
    VKT_CHECK_(pttl(checker, bkey) <= 10000, "PTTL %lld", pttl(checker, bkey));
    CHECK(vk_lock_validity_ms(a) <= 10000);
    CHECK(vk_lock_validity_ms(b) <= 10000);

    /* Each API still releases its own. */
    CHECK_OK(run_unlock(loop, a, NULL, 0));
    CHECK_OK(vk_lock_unlock(b, NULL));
    CHECK(!key_exists(checker, akey));
    CHECK(!key_exists(checker, bkey));
    vk_lock_free(a);
    vk_lock_free(b);
    setup_free(&s);
}

/* ---- 7. the manager or the client freed while an acquire waits --------------- */

static void test_freed_while_waiting(vkt_loop *loop)
{
    char key[64], fkey[80];
    key_name(key, sizeof key, "freed", loop);
    fencing_key(fkey, sizeof fkey, key);
    setup s;
    if (!setup_new(&s, loop))
        return;
    vk_lock *holder = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&holder, bmanager, NULL, key, strlen(key)));
    CHECK(holder != NULL);
    if (holder == NULL) {
        setup_free(&s);
        return;
    }

    /* The manager goes while its acquire waits between tries: the
     * acquire keeps what it needs, takes the lock once it is free, and
     * its handle releases it. */
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 100;
    opts.retry_delay_ms = 40;
    lock_op op = {0};
    long long counter_before = counter_value(checker, fkey);
    CHECK_OK(start_acquire(s.m, key, &opts, lock_fn, &op));
    counter_wait tried = {checker, fkey, counter_before + 1};
    CHECK(vkt_loop_run_until(loop, counter_reached, &tried, 5000));
    vkt_loop_run_for(loop, 5);
    CHECK_EQ_INT(op.calls, 0);
    vk_async_lock_manager_free(s.m);
    s.m = NULL;
    vkt_loop_run_for(loop, 100);
    CHECK_EQ_INT(op.calls, 0);   /* still waiting: the key is held */
    CHECK_OK(vk_lock_unlock(holder, NULL));
    CHECK(vkt_loop_run_until(loop, lock_op_done, &op, 10000));
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(op.status, VK_OK);
    CHECK(op.lock != NULL);
    if (op.lock != NULL) {
        CHECK(vk_lock_fencing_token(op.lock) > vk_lock_fencing_token(holder));
        CHECK(key_exists(checker, key));
        CHECK_OK(run_unlock(loop, op.lock, NULL, 0));
        CHECK(!key_exists(checker, key));
        vk_lock_free(op.lock);
    }
    vk_lock_free(holder);
    holder = NULL;
    /* It completed once, and only once. */
    vkt_loop_run_for(loop, 100);
    CHECK_EQ_INT(op.calls, 1);

    /* A handle freed while its release runs: the release still happens
     * and completes once (the operation keeps what it needs). */
    CHECK_OK(vk_async_lock_manager_new(&s.m, &s.c, 1));
    vk_lock *early = s.m != NULL ? must_try(loop, s.m, key) : NULL;
    vk_async_lock_manager_free(s.m);   /* the handle keeps what it needs */
    s.m = NULL;
    if (early != NULL) {
        done_op released = {0};
        CHECK_OK(start_unlock(early, done_fn, &released));
        vk_lock_free(early);
        CHECK(vkt_loop_run_until(loop, done_op_done, &released, 10000));
        CHECK_EQ_INT(released.calls, 1);
        CHECK_EQ_INT(released.status, VK_OK);
        CHECK(!key_exists(checker, key));
        vkt_loop_run_for(loop, 50);
        CHECK_EQ_INT(released.calls, 1);
    }

    /* The manager and then the client go while an acquire waits: it
     * completes once, with the client's failure, and leaves nothing. */
    CHECK_OK(vk_lock_manager_try_lock(&holder, bmanager, NULL, key, strlen(key)));
    CHECK(holder != NULL);
    vk_async *c2 = async_client(loop, server, false);
    vk_async_lock_manager *m2 = NULL;
    if (c2 != NULL)
        CHECK_OK(vk_async_lock_manager_new(&m2, &c2, 1));
    if (m2 != NULL) {
        lock_op op2 = {0};
        counter_before = counter_value(checker, fkey);
        CHECK_OK(start_acquire(m2, key, &opts, lock_fn, &op2));
        counter_wait tried2 = {checker, fkey, counter_before + 1};
        CHECK(vkt_loop_run_until(loop, counter_reached, &tried2, 5000));
        vkt_loop_run_for(loop, 5);
        CHECK_EQ_INT(op2.calls, 0);
        vk_async_lock_manager_free(m2);
        vk_async_free(c2);
        c2 = NULL;
        CHECK(vkt_loop_run_until(loop, lock_op_done, &op2, 5000));
        vkt_loop_run_for(loop, 100);
        CHECK_EQ_INT(op2.calls, 1);
        CHECK(op2.status != VK_OK);
        CHECK_EQ_INT(op2.status, VK_ERR_CANCELLED);
        CHECK(op2.lock == NULL);
        vk_lock_free(op2.lock);
    }
    vk_async_free(c2);
    /* The holder was never disturbed. */
    if (holder != NULL) {
        CHECK_OK(vk_lock_unlock(holder, NULL));
        vk_lock_free(holder);
    }
    setup_free(&s);
}

/* ---- 5. a quorum of three event-loop clients ------------------------------------ */

/* The first line of GET key on a node: "$32" for a lock value, "$-1" for
 * none. */
static char *node_get_head(int i, const char *key)
{
    return vkt_server_cmd(nodes[i], (const char *[]){"GET", key}, 2);
}

static char *node_get_value(int i, const char *key)
{
    return vkt_server_cmd_line(nodes[i], (const char *[]){"GET", key}, 2, 1);
}

static bool node_has_no_key(int i, const char *key)
{
    char *head = node_get_head(i, key);
    bool none = head != NULL && strcmp(head, "$-1") == 0;
    free(head);
    return none;
}

/* Tries until a try takes the lock (a restarted node's client may be
 * inside its reconnect window for a while); NULL after the bound. */
static vk_lock *try_until_taken(vkt_loop *loop, vk_async_lock_manager *m, const char *key)
{
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(20000);
    while (vkt_now_ms() < deadline) {
        lock_op op;
        if (!run_lock(loop, m, key, true, NULL, &op))
            return NULL;
        if (op.status == VK_OK && op.lock != NULL)
            return op.lock;
        vk_lock_free(op.lock);
        vkt_loop_run_for(loop, 100);
    }
    VKT_CHECK_(false, "no try took %s in time", key);
    return NULL;
}

static void test_quorum(vkt_loop *loop)
{
    char key[64], counter[64];
    key_name(key, sizeof key, "quorum", loop);
    key_name(counter, sizeof counter, "quorum-counter", loop);
    vk_async *cs[NODES] = {NULL};
    vk_client *bcs[NODES] = {NULL};
    vk_async_lock_manager *m = NULL;
    vk_lock_manager *bm = NULL;
    bool ready = true;
    for (int i = 0; i < NODES; i++) {
        cs[i] = async_client(loop, nodes[i], true);
        bcs[i] = blocking_client(nodes[i], true);
        ready = ready && cs[i] != NULL && bcs[i] != NULL;
    }
    if (ready) {
        CHECK_OK(vk_async_lock_manager_new(&m, cs, NODES));
        CHECK_OK(vk_lock_manager_new_quorum(&bm, bcs, NODES));
    }
    if (m == NULL || bm == NULL)
        goto out;

    /* All up: one value on every node; the blocking quorum is excluded. */
    vk_lock *lock = must_try(loop, m, key);
    int64_t last = 0;
    if (lock != NULL) {
        last = vk_lock_fencing_token(lock);
        CHECK(last > 0);
        char *first = node_get_value(0, key);
        VKT_CHECK_(is_lock_value(first), "value on node 0: %s", first ? first : "(none)");
        for (int i = 1; i < NODES; i++) {
            char *v = node_get_value(i, key);
            VKT_CHECK_(v != NULL && first != NULL && strcmp(v, first) == 0,
                       "node %d holds %s, node 0 %s", i, v ? v : "(none)",
                       first ? first : "(none)");
            free(v);
        }
        free(first);
        vk_lock *b = (vk_lock *)1;
        CHECK_OK(vk_lock_manager_try_lock(&b, bm, NULL, key, strlen(key)));
        CHECK(b == NULL);
        CHECK_OK(run_unlock(loop, lock, NULL, 0));
        for (int i = 0; i < NODES; i++)
            VKT_CHECK_(node_has_no_key(i, key), "node %d still holds the key", i);
        vk_lock_free(lock);
    }

    /* The blocking quorum holds it: a try meets contention, an acquire
     * gives up with the text. */
    vk_lock *b = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&b, bm, NULL, key, strlen(key)));
    CHECK(b != NULL);
    if (b != NULL) {
        VKT_CHECK_(vk_lock_fencing_token(b) > last, "tokens %lld then %lld", (long long)last,
                   (long long)vk_lock_fencing_token(b));
        last = vk_lock_fencing_token(b);
        lock_op op;
        if (run_lock(loop, m, key, true, NULL, &op)) {
            CHECK_EQ_INT(op.status, VK_OK);
            CHECK(op.lock == NULL);
        }
        vk_lock_free(op.lock);
        vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
        opts.tries = 2;
        opts.retry_delay_ms = 10;
        if (run_lock(loop, m, key, false, &opts, &op)) {
            char want[160];
            snprintf(want, sizeof want, "failed to acquire lock \"%s\": lock already taken", key);
            CHECK_EQ_INT(op.status, VK_ERR_LOCK_ACQUIRE);
            CHECK_EQ_STR(op.error, want);
        }
        vk_lock_free(op.lock);
        CHECK_OK(vk_lock_unlock(b, NULL));
        vk_lock_free(b);
    }

    /* Someone else on one node does not block a majority; on two it does
     * (contention, not a fault). */
    const char *set_other[] = {"SET", key, "someone-else", "PX", "10000"};
    free(vkt_server_cmd(nodes[0], set_other, 5));
    lock = must_try(loop, m, key);
    if (lock != NULL) {
        CHECK(vk_lock_fencing_token(lock) > last);
        last = vk_lock_fencing_token(lock);
        CHECK_OK(run_unlock(loop, lock, NULL, 0));
        vk_lock_free(lock);
    }
    char *kept = node_get_value(0, key);
    CHECK(kept != NULL && strcmp(kept, "someone-else") == 0);
    free(kept);
    free(vkt_server_cmd(nodes[1], set_other, 5));
    lock_op op;
    if (run_lock(loop, m, key, true, NULL, &op)) {
        CHECK_EQ_INT(op.status, VK_OK);
        CHECK(op.lock == NULL);
    }
    vk_lock_free(op.lock);
    CHECK(node_has_no_key(2, key));   /* what was taken was given back */
    for (int i = 0; i < 2; i++)
        free(vkt_server_cmd(nodes[i], (const char *[]){"DEL", key}, 2));

    /* Exclusion over the quorum: 20 on the loop beside 5 on a thread of
     * the blocking quorum API; the counter lives on node 0. */
    {
        exclusion x;
        long long total =
            run_exclusion(loop, m, cs[0], bm, bcs[0], 5, bcs[0], key, counter, 20, &x);
        CHECK_EQ_INT(total, 25);
        CHECK_EQ_INT(atomic_load(&x.overlaps), 0);
        CHECK_EQ_INT(atomic_load(&x.regressions), 0);
        CHECK(atomic_load(&x.last_token) > last);
        last = atomic_load(&x.last_token);
        for (int i = 0; i < NODES; i++)
            VKT_CHECK_(node_has_no_key(i, key), "node %d still holds the key", i);
    }

    /* One node down: still a majority. */
    vkt_server_kill(nodes[0]);
    lock = must_try(loop, m, key);
    if (lock != NULL) {
        VKT_CHECK_(vk_lock_fencing_token(lock) > last, "tokens %lld then %lld",
                   (long long)last, (long long)vk_lock_fencing_token(lock));
        last = vk_lock_fencing_token(lock);
        CHECK_OK(run_unlock(loop, lock, NULL, 0));
        vk_lock_free(lock);
    }
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 3;
    opts.retry_delay_ms = 10;
    if (run_lock(loop, m, key, false, &opts, &op)) {
        CHECK_EQ_INT(op.status, VK_OK);
        CHECK(op.lock != NULL);
        if (op.lock != NULL) {
            CHECK(vk_lock_fencing_token(op.lock) > last);
            last = vk_lock_fencing_token(op.lock);
            CHECK_OK(run_unlock(loop, op.lock, NULL, 0));
        }
    }
    vk_lock_free(op.lock);

    /* Node 0 back empty (its counter restarts at 0) with node 1 down: the
     * next token still follows the last. */
    CHECK(vkt_server_restart(nodes[0]));
    vkt_server_kill(nodes[1]);
    lock = try_until_taken(loop, m, key);
    if (lock != NULL) {
        VKT_CHECK_(vk_lock_fencing_token(lock) > last, "tokens %lld then %lld after a restart",
                   (long long)last, (long long)vk_lock_fencing_token(lock));
        last = vk_lock_fencing_token(lock);
        CHECK_OK(run_unlock(loop, lock, NULL, 0));
        vk_lock_free(lock);
    }

    /* Two of three down: a fault, not contention, and the live node is
     * not left holding anything. */
    vkt_server_kill(nodes[0]);
    if (run_lock(loop, m, key, true, NULL, &op)) {
        char prefix[160];
        snprintf(prefix, sizeof prefix, "failed to attempt lock acquisition for \"%s\": ", key);
        VKT_CHECK_(op.status != VK_OK && op.status != VK_ERR_LOCK_ACQUIRE,
                   "try with two nodes down: status %d (%s)", (int)op.status, op.error);
        CHECK(op.lock == NULL);
        VKT_CHECK_(strncmp(op.error, prefix, strlen(prefix)) == 0 &&
                       strlen(op.error) > strlen(prefix),
                   "try with two nodes down: \"%s\"", op.error);
    }
    vk_lock_free(op.lock);
    if (run_lock(loop, m, key, false, &opts, &op)) {
        VKT_CHECK_(op.status != VK_OK && op.status != VK_ERR_LOCK_ACQUIRE,
                   "acquire with two nodes down: status %d (%s)", (int)op.status, op.error);
        CHECK(op.lock == NULL);
        CHECK(op.error[0] != '\0');
    }
    vk_lock_free(op.lock);
    CHECK(node_has_no_key(2, key));

    /* Both back, both empty: tokens still increase, and every node that
     * granted the lock had its counter raised to the token ... */
    CHECK(vkt_server_restart(nodes[0]));
    CHECK(vkt_server_restart(nodes[1]));
    lock = try_until_taken(loop, m, key);
    if (lock != NULL) {
        VKT_CHECK_(vk_lock_fencing_token(lock) > last, "tokens %lld then %lld",
                   (long long)last, (long long)vk_lock_fencing_token(lock));
        last = vk_lock_fencing_token(lock);
        char fkey[80];
        fencing_key(fkey, sizeof fkey, key);
        int holding = 0;
        for (int i = 0; i < NODES; i++) {
            if (node_has_no_key(i, key))
                continue;
            holding++;
            char *count = node_get_value(i, fkey);
            VKT_CHECK_(count != NULL && atoll(count) >= last,
                       "node %d holds the lock with its counter at %s, the token is %lld", i,
                       count ? count : "(none)", (long long)last);
            free(count);
        }
        CHECK(holding >= 2);
        CHECK_OK(run_unlock(loop, lock, NULL, 0));
        vk_lock_free(lock);
    }
    /* ... so a majority without the node that had the highest counter
     * still goes on from there. */
    vkt_server_kill(nodes[2]);
    lock = try_until_taken(loop, m, key);
    if (lock != NULL) {
        VKT_CHECK_(vk_lock_fencing_token(lock) > last,
                   "tokens %lld then %lld without the node that gave the first",
                   (long long)last, (long long)vk_lock_fencing_token(lock));
        CHECK_OK(run_unlock(loop, lock, NULL, 0));
        vk_lock_free(lock);
    }
    CHECK(vkt_server_restart(nodes[2]));

out:
    vk_async_lock_manager_free(m);
    vk_lock_manager_free(bm);
    for (int i = 0; i < NODES; i++) {
        vk_async_free(cs[i]);
        vk_client_free(bcs[i]);
    }
}

/* Clients of a quorum freed while the manager lives: each freed node fails
 * as a freed client does, a wait on a freed client's timer ends its
 * operation, and the manager goes on with the clients that are left. */
static void test_quorum_clients_freed(vkt_loop *loop)
{
    char key[64], fkey[80];
    key_name(key, sizeof key, "quorum-freed", loop);
    fencing_key(fkey, sizeof fkey, key);
    vk_async *cs[NODES] = {NULL};
    vk_client *bcs[NODES] = {NULL};
    vk_async_lock_manager *m = NULL;
    vk_lock_manager *bm = NULL;
    bool ready = true;
    for (int i = 0; i < NODES; i++) {
        cs[i] = async_client(loop, nodes[i], true);
        bcs[i] = blocking_client(nodes[i], true);
        ready = ready && cs[i] != NULL && bcs[i] != NULL;
    }
    if (ready) {
        CHECK_OK(vk_async_lock_manager_new(&m, cs, NODES));
        CHECK_OK(vk_lock_manager_new_quorum(&bm, bcs, NODES));
    }
    vk_lock *holder = NULL;
    if (m != NULL && bm != NULL)
        CHECK_OK(vk_lock_manager_try_lock(&holder, bm, NULL, key, strlen(key)));
    if (holder == NULL)
        goto out;

    /* Client 0's timer serves the waits between tries: freeing it ends
     * the acquire that waits there, once, with the cancellation. */
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 100;
    opts.retry_delay_ms = 300;   /* a wait of 150 ms at least: the window below */
    lock_op waiting = {0};
    long long before[NODES];
    for (int i = 0; i < NODES; i++)
        before[i] = counter_value(bcs[i], fkey);
    CHECK_OK(start_acquire(m, key, &opts, lock_fn, &waiting));
    /* Every node answered the first try (its counter moved): the replies
     * are read within a few turns, and then the acquire waits. */
    for (int i = 0; i < NODES; i++) {
        counter_wait tried = {bcs[i], fkey, before[i] + 1};
        CHECK(vkt_loop_run_until(loop, counter_reached, &tried, 5000));
    }
    vkt_loop_run_for(loop, 30);
    CHECK_EQ_INT(waiting.calls, 0);
    vk_async_free(cs[0]);
    cs[0] = NULL;
    CHECK(vkt_loop_run_until(loop, lock_op_done, &waiting, 5000));
    CHECK_EQ_INT(waiting.status, VK_ERR_CANCELLED);
    CHECK(waiting.lock == NULL);

    /* Two of three are left, a majority: acquisitions wait on client 1's
     * timer now and still take the lock once the holder lets go. */
    lock_op second = {0};
    opts.retry_delay_ms = 40;
    CHECK_OK(start_acquire(m, key, &opts, lock_fn, &second));
    vkt_loop_run_for(loop, 100);
    CHECK_EQ_INT(second.calls, 0);
    CHECK_OK(vk_lock_unlock(holder, NULL));
    CHECK(vkt_loop_run_until(loop, lock_op_done, &second, 10000));
    CHECK_EQ_INT(second.status, VK_OK);
    if (second.lock != NULL) {
        CHECK(vk_lock_fencing_token(second.lock) > vk_lock_fencing_token(holder));
        CHECK(!node_has_no_key(1, key));
        CHECK(!node_has_no_key(2, key));
        CHECK_OK(run_unlock(loop, second.lock, NULL, 0));
        CHECK(node_has_no_key(1, key));
        CHECK(node_has_no_key(2, key));
        vk_lock_free(second.lock);
    }

    /* One of three: no majority; the freed clients' own failure. */
    vk_async_free(cs[1]);
    cs[1] = NULL;
    lock_op lone = {0};
    CHECK(run_lock(loop, m, key, true, NULL, &lone));
    CHECK_EQ_INT(lone.status, VK_ERR_NIL_CLIENT);
    CHECK(lone.lock == NULL);
    CHECK(node_has_no_key(2, key));   /* what node 2 granted was given back */

out:
    vk_lock_free(holder);
    vk_async_lock_manager_free(m);
    vk_lock_manager_free(bm);
    for (int i = 0; i < NODES; i++) {
        vk_async_free(cs[i]);
        vk_client_free(bcs[i]);
    }
}

/* ---- 6. automatic renewal on the loop ------------------------------------------ */

typedef struct pttl_wait {
    const char *key;
    long long above;
} pttl_wait;

static bool pttl_above(void *arg)
{
    pttl_wait *w = arg;
    return pttl(checker, w->key) > w->above;
}

static void test_auto_renew(vkt_loop *loop)
{
    char key[64], value[256], text[512];
    key_name(key, sizeof key, "renew", loop);
    setup s;
    if (!setup_new(&s, loop))
        return;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 300;
    opts.auto_renew = 1;
    lock_op op;

    /* Renewed on the loop for more than three times its expiry. */
    if (run_lock(loop, s.m, key, false, &opts, &op) && op.lock != NULL) {
        char held[256] = "";
        get_value(checker, key, held, sizeof held);
        vkt_loop_run_for(loop, 1000);
        CHECK(get_value(checker, key, value, sizeof value));
        CHECK_EQ_STR(value, held);
        long long ttl = pttl(checker, key);
        VKT_CHECK_(ttl > 0 && ttl <= 300, "PTTL %lld", ttl);
        CHECK(vk_lock_validity_ms(op.lock) > 0);
        CHECK_EQ_INT(vk_lock_is_lost(op.lock), 0);
        vk_lock *other = (vk_lock *)1;
        CHECK_OK(vk_lock_manager_try_lock(&other, bmanager, NULL, key, strlen(key)));
        CHECK(other == NULL);
        /* Asking again while it renews changes nothing. */
        CHECK_OK(vk_lock_auto_renew(op.lock));

        /* Someone removes it: the next renewal marks the lock lost, and
         * renewal does not bring the key back. */
        vkt_blocking_do(checker, 2, (const char *[]){"DEL", key});
        CHECK(vkt_loop_run_until(loop, lock_lost, op.lock, 400));
        CHECK_EQ_INT(vk_lock_is_lost(op.lock), 1);
        vkt_loop_run_for(loop, 200);
        CHECK(!key_exists(checker, key));
        CHECK_EQ_INT(run_unlock(loop, op.lock, text, sizeof text), VK_ERR_LOCK_NOT_HELD);
        CHECK_EQ_STR(text, NOT_HELD_TEXT);
    }
    CHECK_EQ_INT(op.status, VK_OK);
    vk_lock_free(op.lock);

    /* Unlock stops the renewal at once: nothing finds the key gone
     * afterwards (the lock is never marked lost). */
    if (run_lock(loop, s.m, key, false, &opts, &op) && op.lock != NULL) {
        vkt_loop_run_for(loop, 150);
        CHECK_OK(run_unlock(loop, op.lock, NULL, 0));
        CHECK(!key_exists(checker, key));
        vkt_loop_run_for(loop, 400);
        CHECK_EQ_INT(vk_lock_is_lost(op.lock), 0);
        CHECK(!key_exists(checker, key));
        CHECK_FAILS(vk_lock_auto_renew(op.lock), VK_ERR_LOCK_NOT_HELD, NOT_HELD_TEXT);
    }
    vk_lock_free(op.lock);

    /* Free stops it: the key then expires, and the loop goes on. */
    if (run_lock(loop, s.m, key, false, &opts, &op) && op.lock != NULL) {
        vkt_loop_run_for(loop, 450);
        CHECK(key_exists(checker, key));   /* renewed past its first 300 ms */
        vk_lock_free(op.lock);
        op.lock = NULL;
        CHECK(vkt_loop_run_until(loop, key_gone, key, 1000));
        vkt_loop_run_for(loop, 300);
        CHECK(!key_exists(checker, key));
        vkt_op ping = {0};
        if (vkt_call(loop, s.c, &ping, 1, (const char *[]){"PING"}))
            CHECK(ping.status == VK_OK && vkt_reply_is(ping.reply, "PONG"));
        vkt_op_clear(&ping);
    }

    /* Renewal asked for afterwards on a handle taken without it (600 ms
     * expiry, renewed every third): the loop keeps resetting the expiry
     * well past the first one. */
    vk_lock_options plain = VK_LOCK_OPTIONS_INIT;
    plain.expiry_ms = 600;
    lock_op taken;
    vk_lock *mine = NULL;
    if (run_lock(loop, s.m, key, false, &plain, &taken)) {
        CHECK_EQ_INT(taken.status, VK_OK);
        mine = taken.lock;
    }
    if (mine != NULL) {
        CHECK_OK(vk_lock_auto_renew(mine));
        vkt_loop_run_for(loop, 1500);   /* over twice the expiry */
        CHECK(key_exists(checker, key));
        pttl_wait renewed = {key, 300};
        CHECK(vkt_loop_run_until(loop, pttl_above, &renewed, 1000));
        CHECK(vk_lock_validity_ms(mine) > 0);
        CHECK_EQ_INT(vk_lock_is_lost(mine), 0);
        CHECK_OK(run_unlock(loop, mine, NULL, 0));
        CHECK(!key_exists(checker, key));
    }
    vk_lock_free(mine);
    setup_free(&s);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(NULL);
    for (int i = 0; i < NODES; i++)
        nodes[i] = vkt_server_start(NULL);
    bool up = server != NULL;
    for (int i = 0; i < NODES; i++)
        up = up && nodes[i] != NULL;
    if (!up) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        vkt_server_stop(server);
        for (int i = 0; i < NODES; i++)
            vkt_server_stop(nodes[i]);
        return 1;
    }
    checker = blocking_client(server, false);
    bclient = blocking_client(server, false);
    if (bclient != NULL)
        CHECK_OK(vk_lock_manager_new(&bmanager, bclient));
    if (checker != NULL && bmanager != NULL) {
        RUN_ON_LOOPS(test_try_and_contention);
        RUN_ON_LOOPS(test_acquire_waits_on_the_loop);
        RUN_ON_LOOPS(test_mutual_exclusion);
        RUN_ON_LOOPS(test_unlock_and_extend);
        RUN_ON_LOOPS(test_argument_errors);
        RUN_ON_LOOPS(test_crossed_handles);
        RUN_ON_LOOPS(test_freed_while_waiting);
        RUN_ON_LOOPS(test_quorum);
        RUN_ON_LOOPS(test_quorum_clients_freed);
        RUN_ON_LOOPS(test_auto_renew);
        RUN_ON_LOOPS(test_cancel);
    }
    vk_lock_manager_free(bmanager);
    vk_client_free(bclient);
    vk_client_free(checker);
    vkt_server_stop(server);
    for (int i = 0; i < NODES; i++)
        vkt_server_stop(nodes[i]);
    return vkt_finish();
}
