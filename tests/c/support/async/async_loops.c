/*
 * Event loops for the event-loop client's tests (see async_loops.h).
 */
#include "async_loops.h"
#include "vktest.h"
#include "servers.h"

#include "vkclient/libevent.h"
#include "vkclient/libuv.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

enum { TICK_MS = 5, CALL_TIMEOUT_MS = 10000 };

struct vkt_loop {
    vkt_loop_kind kind;
    vk_loop_adapter adapter;
    uv_loop_t uv;
    uv_timer_t uv_tick;
    struct event_base *base;
    struct event *ev_tick;
};

static pthread_t loop_thread;
static int submitting;      /* depth of vkt_submit*() calls in progress */
static long completions;

static void on_uv_tick(uv_timer_t *timer)
{
    (void)timer;
}

static void on_ev_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

vkt_loop *vkt_loop_new(vkt_loop_kind kind)
{
    vkt_loop *l = calloc(1, sizeof *l);
    CHECK(l != NULL);
    if (l == NULL)
        return NULL;
    l->kind = kind;
    loop_thread = pthread_self();
    if (kind == VKT_LOOP_LIBUV) {
        bool ok = uv_loop_init(&l->uv) == 0 && uv_timer_init(&l->uv, &l->uv_tick) == 0 &&
                  uv_timer_start(&l->uv_tick, on_uv_tick, TICK_MS, TICK_MS) == 0;
        CHECK(ok);
        vk_libuv_adapter(&l->adapter, &l->uv);
    } else {
        struct timeval tick = { 0, TICK_MS * 1000 };
        l->base = event_base_new();
        if (l->base != NULL)
            l->ev_tick = event_new(l->base, -1, EV_PERSIST, on_ev_tick, NULL);
        bool ok = l->ev_tick != NULL && event_add(l->ev_tick, &tick) == 0;
        CHECK(ok);
        vk_libevent_adapter(&l->adapter, l->base);
    }
    return l;
}

const char *vkt_loop_name(const vkt_loop *loop)
{
    return loop->kind == VKT_LOOP_LIBUV ? "libuv" : "libevent";
}

const vk_loop_adapter *vkt_loop_adapter(const vkt_loop *loop)
{
    return &loop->adapter;
}

/* One turn: waits for at most the tick, runs what is ready. */
static void turn(vkt_loop *l)
{
    if (l->kind == VKT_LOOP_LIBUV)
        uv_run(&l->uv, UV_RUN_ONCE);
    else
        event_base_loop(l->base, EVLOOP_ONCE);
}

bool vkt_loop_run_until(vkt_loop *loop, bool (*done)(void *arg), void *arg,
                        long long timeout_ms)
{
    int64_t deadline = vkt_now_ms() + vkt_scaled_ms(timeout_ms);
    while (!done(arg)) {
        if (vkt_now_ms() >= deadline)
            return done(arg);
        turn(loop);
    }
    return true;
}

void vkt_loop_run_for(vkt_loop *loop, long long ms)
{
    int64_t until = vkt_now_ms() + ms;
    while (vkt_now_ms() < until)
        turn(loop);
}

static void print_uv_handle(uv_handle_t *handle, void *arg)
{
    (void)arg;
    fprintf(stderr, "  left on the libuv loop: %s handle%s\n", uv_handle_type_name(handle->type),
            uv_is_closing(handle) ? " (closing)" : "");
}

void vkt_loop_free(vkt_loop *loop)
{
    if (loop == NULL)
        return;
    if (loop->kind == VKT_LOOP_LIBUV) {
        uv_close((uv_handle_t *)&loop->uv_tick, NULL);
        /* Handles closed by the adapter are freed by their close callbacks
         * on the next turns; anything still active is a leftover. */
        for (int i = 0; i < 100 && uv_loop_alive(&loop->uv); i++)
            uv_run(&loop->uv, UV_RUN_NOWAIT);
        int rc = uv_loop_close(&loop->uv);
        VKT_CHECK_(rc == 0, "the libuv loop still has handles once the clients were freed");
        if (rc != 0) {
            uv_walk(&loop->uv, print_uv_handle, NULL);
            return;   /* cannot be released while handles point into it */
        }
    } else {
        event_free(loop->ev_tick);
        int left = event_base_get_num_events(loop->base, EVENT_BASE_COUNT_ADDED |
                                                             EVENT_BASE_COUNT_ACTIVE);
        VKT_CHECK_(left == 0, "%d events left on the libevent base once the clients were freed",
                   left);
        event_base_free(loop->base);
    }
    free(loop);
}

void vkt_run_on_loops(const char *name, void (*fn)(vkt_loop *loop))
{
    static char current[VKT_LOOP_KINDS][160];
    for (int kind = 0; kind < VKT_LOOP_KINDS; kind++) {
        vkt_loop *loop = vkt_loop_new((vkt_loop_kind)kind);
        if (loop == NULL)
            continue;
        snprintf(current[kind], sizeof current[kind], "%s[%s]", name, vkt_loop_name(loop));
        vkt_current = current[kind];
        fprintf(stderr, "-- %s\n", vkt_current);
        fn(loop);
        vkt_loop_free(loop);
    }
}

/* ---- completions ------------------------------------------------------ */

/* The checks every completion must pass; status is the completion's. */
static long note(vk_status status)
{
    VKT_CHECK_(submitting == 0,
               "a completion (status %d, \"%s\") ran inside the call that queued an operation",
               (int)status, status == VK_OK ? "" : vk_last_error());
    VKT_CHECK_(pthread_equal(pthread_self(), loop_thread),
               "a completion ran off the loop's thread");
    return ++completions;
}

long vkt_note_completion(void)
{
    return note(VK_OK);
}

long vkt_completions(void)
{
    return completions;
}

void vkt_op_fn(void *userdata, vk_status status, vk_reply *reply)
{
    vkt_op *op = userdata;
    long seq = note(status);
    op->calls++;
    VKT_CHECK_(op->calls == 1, "a completion ran %d times for one operation", op->calls);
    if (op->calls > 1) {
        vk_reply_free(reply);
        return;
    }
    op->seq = seq;
    op->status = status;
    op->reply = reply;
    VKT_CHECK_((status == VK_OK) == (reply != NULL),
               "completion with status %d and %s reply", (int)status,
               reply != NULL ? "a" : "no");
    if (status != VK_OK)
        snprintf(op->error, sizeof op->error, "%s", vk_last_error());
}

bool vkt_op_done(void *op)
{
    return ((vkt_op *)op)->calls > 0;
}

void vkt_op_clear(vkt_op *op)
{
    vk_reply_free(op->reply);
    memset(op, 0, sizeof *op);
}

vk_status vkt_submitv(vk_async *c, vk_async_fn fn, void *userdata, uint64_t *id, int argc,
                      const char *const *argv, const size_t *argvlen)
{
    submitting++;
    vk_status st = vk_async_command(c, argc, argv, argvlen, fn, userdata, id);
    submitting--;
    return st;
}

vk_status vkt_submit(vk_async *c, vkt_op *op, uint64_t *id, int argc, const char *const *argv)
{
    size_t lens[16];
    if (argc > 16)
        argc = 16;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vkt_submitv(c, vkt_op_fn, op, id, argc, argv, lens);
}

vk_status vkt_pipeline_submit(vk_pipeline *p, vk_async_fn fn, void *userdata, uint64_t *id)
{
    submitting++;
    vk_status st = vk_async_pipeline_exec(p, fn, userdata, id);
    submitting--;
    return st;
}

bool vkt_call(vkt_loop *loop, vk_async *c, vkt_op *op, int argc, const char *const *argv)
{
    vk_status st = vkt_submit(c, op, NULL, argc, argv);
    VKT_CHECK_(st == VK_OK, "queueing %s -> %d (%s)", argv[0], (int)st, vk_last_error());
    if (st != VK_OK)
        return false;
    bool done = vkt_loop_run_until(loop, vkt_op_done, op, CALL_TIMEOUT_MS);
    VKT_CHECK_(done, "%s did not complete", argv[0]);
    return done;
}

/* ---- replies and clients ---------------------------------------------- */

bool vkt_reply_is(const vk_reply *r, const char *text)
{
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    return s != NULL && len == strlen(text) && memcmp(s, text, len) == 0;
}

bool vkt_reply_error_starts(const vk_reply *r, const char *prefix)
{
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    return vk_reply_get_type(r) == VK_REPLY_ERROR && s != NULL && len >= strlen(prefix) &&
           memcmp(s, prefix, strlen(prefix)) == 0;
}

vk_config *vkt_async_config(const char *address)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, address));
    return cfg;
}

vk_async *vkt_async_new(vkt_loop *loop, const vk_config *cfg)
{
    vk_async *c = NULL;
    CHECK_OK(vk_async_new(&c, cfg, vkt_loop_adapter(loop)));
    return c;
}

static bool nothing_pending(void *c)
{
    return vk_async_pending(c) == 0;
}

bool vkt_async_drain(vkt_loop *loop, vk_async *c)
{
    bool done = vkt_loop_run_until(loop, nothing_pending, c, CALL_TIMEOUT_MS);
    VKT_CHECK_(done, "%zu operations still pending", vk_async_pending(c));
    return done;
}

/* ---- a blocking client beside the one under test ------------------------ */

vk_status vkt_blocking_run(vk_client *c, vk_reply **out, int argc, const char *const *argv)
{
    size_t lens[16];
    for (int i = 0; i < argc && i < 16; i++)
        lens[i] = strlen(argv[i]);
    return vk_client_command(out, c, NULL, argc, argv, lens);
}

void vkt_blocking_do(vk_client *c, int argc, const char *const *argv)
{
    vk_reply *r = NULL;
    CHECK_OK(vkt_blocking_run(c, &r, argc, argv));
    vk_reply_free(r);
}

const char *vkt_blocking_text(vk_client *c, char *buf, size_t cap, int argc,
                              const char *const *argv)
{
    vk_reply *r = NULL;
    if (vkt_blocking_run(c, &r, argc, argv) != VK_OK) {
        snprintf(buf, cap, "failed: %s", vk_last_error());
        return buf;
    }
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    if (vk_reply_get_type(r) == VK_REPLY_INTEGER)
        snprintf(buf, cap, "%lld", vk_reply_get_integer(r));
    else if (s == NULL)
        snprintf(buf, cap, "(nil)");
    else
        snprintf(buf, cap, "%.*s", (int)len, s);
    vk_reply_free(r);
    return buf;
}

long long vkt_blocking_integer(vk_client *c, int argc, const char *const *argv)
{
    vk_reply *r = NULL;
    long long v = -1;
    if (vkt_blocking_run(c, &r, argc, argv) == VK_OK) {
        if (vk_reply_get_type(r) == VK_REPLY_INTEGER)
            v = vk_reply_get_integer(r);
        else if (vk_reply_get_type(r) == VK_REPLY_STRING)
            v = atoll(vk_reply_get_string(r, &(size_t){0}));
        else if (vk_reply_get_type(r) == VK_REPLY_NIL)
            v = 0;
    }
    vk_reply_free(r);
    return v;
}
