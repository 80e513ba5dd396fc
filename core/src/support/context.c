/*
 * Deadlines and cancellation for blocking calls. A context owns an eventfd
 * that becomes readable once cancelled, so a wait can poll the socket and
 * the cancellation together and wake at once; an optional interrupt check
 * (Python's Ctrl-C) is polled at least every 50 ms while waiting.
 *
 * A context with neither a deadline nor an interrupt check needs no poll()
 * for socket I/O: the call registers its socket (vk__ctx_watch_fd) and
 * blocks in read/write like a call without a context, and a cancel shuts
 * that socket down, which ends the blocked call at once. The connection is
 * lost either way once a call is cancelled mid-request.
 */
#include "support/support.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define VK_INTERRUPT_CHECK_US 50000

enum {
    WATCH_NONE = -1,       /* no call is blocked on a socket */
    WATCH_CANCELLING = -2  /* a cancel is shutting the watched socket down */
};

struct vk_context {
    atomic_bool cancelled;
    _Atomic int64_t deadline_us;   /* monotonic; VK_NO_DEADLINE: none */
    int cancel_fd;                 /* readable once cancelled */
    /* The socket a blocking call is using without poll(), or one of: */
    atomic_int watched_fd;
    vk_interrupt_fn interrupt;
    void *interrupt_userdata;
    void *trace_parent;            /* a tracer's span handle */
};

VK_API vk_status vk_context_new(vk_context **out)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    vk_context *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return vk__fail_nomem();
    ctx->cancel_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctx->cancel_fd < 0) {
        int err = errno;
        free(ctx);
        return vk__fail(VK_ERR_IO, "creating the cancellation eventfd failed (errno %d)", err);
    }
    atomic_init(&ctx->cancelled, false);
    atomic_init(&ctx->watched_fd, WATCH_NONE);
    atomic_init(&ctx->deadline_us, VK_NO_DEADLINE);
    *out = ctx;
    return VK_OK;
}

VK_API void vk_context_free(vk_context *ctx)
{
    if (ctx == NULL)
        return;
    close(ctx->cancel_fd);
    free(ctx);
}

VK_API vk_status vk_context_set_timeout_ms(vk_context *ctx, int64_t timeout_ms)
{
    if (ctx == NULL) {
        vk__misuse("vk_context_set_timeout_ms", "context is NULL");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "context is NULL");
    }
    int64_t deadline = VK_NO_DEADLINE;
    if (timeout_ms >= 0) {
        int64_t now = vk__now_us();
        deadline = timeout_ms > (VK_NO_DEADLINE - now) / 1000 - 1 ? VK_NO_DEADLINE - 1
                                                                  : now + timeout_ms * 1000;
    }
    atomic_store(&ctx->deadline_us, deadline);
    return VK_OK;
}

/* Async-signal-safe for a valid ctx: an atomic store and a write(2). (A
 * NULL ctx is a programming error and records the detail as usual.) */
VK_API vk_status vk_context_cancel(vk_context *ctx)
{
    if (ctx == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "context is NULL");
    atomic_store(&ctx->cancelled, true);
    uint64_t one = 1;
    ssize_t written = write(ctx->cancel_fd, &one, sizeof one);
    (void)written; /* EAGAIN: the counter is already non-zero, still readable */
    /* Claim the watched socket first, so that the call cannot close it
     * (and the number be reused) between our load and the shutdown. */
    int fd = atomic_load(&ctx->watched_fd);
    if (fd >= 0 && atomic_compare_exchange_strong(&ctx->watched_fd, &fd, WATCH_CANCELLING)) {
        (void)shutdown(fd, SHUT_RDWR);
        atomic_store(&ctx->watched_fd, WATCH_NONE);
    }
    return VK_OK;
}

VK_API int vk_context_is_cancelled(const vk_context *ctx)
{
    return ctx != NULL && atomic_load(&((vk_context *)ctx)->cancelled);
}

VK_API vk_status vk_context_set_interrupt_check(vk_context *ctx, vk_interrupt_fn fn,
                                                void *userdata)
{
    if (ctx == NULL) {
        vk__misuse("vk_context_set_interrupt_check", "context is NULL");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "context is NULL");
    }
    ctx->interrupt = fn;
    ctx->interrupt_userdata = userdata;
    return VK_OK;
}

int64_t vk__ctx_deadline_us(const vk_context *ctx)
{
    return ctx != NULL ? atomic_load(&((vk_context *)ctx)->deadline_us) : VK_NO_DEADLINE;
}

bool vk__ctx_needs_poll(const vk_context *ctx)
{
    /* Any context can be cancelled from another thread. */
    return ctx != NULL;
}

bool vk__ctx_watch_fd(vk_context *ctx, int fd)
{
    if (ctx == NULL || fd < 0 || ctx->interrupt != NULL ||
        atomic_load(&ctx->deadline_us) != VK_NO_DEADLINE)
        return false;
    /* One call at a time: another thread using the same context polls. */
    int none = WATCH_NONE;
    if (!atomic_compare_exchange_strong(&ctx->watched_fd, &none, fd))
        return false;
    if (atomic_load(&ctx->cancelled)) {
        /* Cancelled before the watch: let the poll path report it. */
        vk__ctx_unwatch_fd(ctx, fd);
        return false;
    }
    return true;
}

void vk__ctx_unwatch_fd(vk_context *ctx, int fd)
{
    int expected = fd;
    while (!atomic_compare_exchange_weak(&ctx->watched_fd, &expected, WATCH_NONE)) {
        if (expected != WATCH_CANCELLING)
            return; /* already released by a finished cancel */
        /* A cancel on another thread is between its claim and its
         * shutdown(): a few instructions, unless that thread was preempted.
         * Yield rather than spin, or a spinning caller can starve it
         * (under Valgrind, which runs one thread at a time, for seconds). */
        sched_yield();
        expected = fd;
    }
}

/* Cancellation and the interrupt check, without the deadline. */
static vk_status check_cancelled(vk_context *ctx)
{
    if (atomic_load(&ctx->cancelled))
        return vk__fail(VK_ERR_CANCELLED, NULL);
    if (ctx->interrupt != NULL && ctx->interrupt(ctx->interrupt_userdata) != 0)
        return vk__fail(VK_ERR_CANCELLED, "interrupted");
    return VK_OK;
}

vk_status vk__ctx_check(vk_context *ctx)
{
    if (ctx == NULL)
        return VK_OK;
    vk_status st = check_cancelled(ctx);
    if (st != VK_OK)
        return st;
    if (vk__now_us() >= atomic_load(&ctx->deadline_us))
        return vk__fail(VK_ERR_TIMEOUT, "context deadline exceeded");
    return VK_OK;
}

vk_status vk__ctx_wait_fd(vk_context *ctx, int fd, short events, int64_t deadline_us)
{
    int64_t ctx_deadline = vk__ctx_deadline_us(ctx);
    bool ctx_deadline_first = ctx_deadline < deadline_us;
    int64_t deadline = ctx_deadline_first ? ctx_deadline : deadline_us;
    for (;;) {
        if (ctx != NULL) {
            vk_status st = check_cancelled(ctx);
            if (st != VK_OK)
                return st;
        }
        int64_t now = vk__now_us();
        if (now >= deadline) {
            if (ctx_deadline_first)
                return vk__fail(VK_ERR_TIMEOUT, "context deadline exceeded");
            return fd < 0 ? VK_OK : vk__fail(VK_ERR_TIMEOUT, NULL);
        }
        int64_t slice_us = deadline - now;
        if (ctx != NULL && ctx->interrupt != NULL && slice_us > VK_INTERRUPT_CHECK_US)
            slice_us = VK_INTERRUPT_CHECK_US;
        /* Round up so a wait never spins on a sub-millisecond remainder. */
        int64_t slice_ms = (slice_us + 999) / 1000;
        int timeout_ms = slice_ms > 60000 ? 60000 : (int)slice_ms;

        struct pollfd fds[2];
        nfds_t nfds = 0;
        if (fd >= 0)
            fds[nfds++] = (struct pollfd){.fd = fd, .events = events};
        if (ctx != NULL)
            fds[nfds++] = (struct pollfd){.fd = ctx->cancel_fd, .events = POLLIN};
        int ready = poll(fds, nfds, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            return vk__fail(VK_ERR_IO, "poll failed (errno %d)", errno);
        }
        /* Errors and hang-ups count as ready: the next read or write
         * reports them with their own message. */
        if (ready > 0 && fd >= 0 && fds[0].revents != 0)
            return VK_OK;
    }
}

vk_status vk__ctx_sleep_ms(vk_context *ctx, int64_t ms)
{
    if (ms <= 0)
        return ctx != NULL ? vk__ctx_check(ctx) : VK_OK;
    int64_t now = vk__now_us();
    int64_t deadline = ms > (VK_NO_DEADLINE - now) / 1000 - 1 ? VK_NO_DEADLINE - 1
                                                              : now + ms * 1000;
    return vk__ctx_wait_fd(ctx, -1, 0, deadline);
}

VK_API vk_status vk_context_set_trace_parent(vk_context *ctx, void *parent)
{
    if (ctx == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "ctx is NULL");
    ctx->trace_parent = parent;
    return VK_OK;
}

void *vk__ctx_trace_parent(const vk_context *ctx)
{
    return ctx != NULL ? ctx->trace_parent : NULL;
}
