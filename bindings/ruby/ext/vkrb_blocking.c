/*
 * Blocking calls without the GVL. Each call runs with a vk_context; the
 * unblock function Ruby runs on Thread#raise, Thread#kill, Timeout.timeout
 * or a signal cancels it, and the core then returns VK_ERR_CANCELLED at
 * once (a call blocked on a socket has that socket shut down; the
 * connection is dropped).
 *
 * When a tracer is in use, the context carries the caller's trace parent
 * (VKClient.with_trace_parent), read before the GVL is released.
 *
 * A context costs an eventfd, so each thread keeps one between calls and
 * replaces it only once it was cancelled (a cancelled context stays
 * cancelled). A call made while another is running on the same thread
 * (a command inside a with_lock block) takes a context of its own.
 *
 * rb_nogvl() is called with
 *  - RB_NOGVL_INTR_FAIL: the pending interrupt is not raised on the way
 *    out, so the caller gets the status back and frees its replies and
 *    handles before vkrb_raise() lets Ruby raise the interrupt;
 *  - RB_NOGVL_UBF_ASYNC_SAFE: vk_context_cancel() is async-signal-safe (an
 *    atomic store and a write(2)), so Ruby may call it from its signal
 *    handler. Without the flag, a call on the main thread of a
 *    single-threaded program makes Ruby start and stop a thread of its own
 *    around every call, which costs more than the command itself.
 */
#include "vkrb.h"

#include <pthread.h>

static _Thread_local int in_blocking;

typedef struct blocking_call {
    vkrb_blocking_fn fn;
    void *data;
    vk_context *ctx;
    vk_status status;
    int ran;
} blocking_call;

static void *run_without_gvl(void *arg)
{
    blocking_call *call = arg;
    in_blocking = 1;
    call->status = call->fn(call->data, call->ctx);
    in_blocking = 0;
    call->ran = 1;
    return NULL;
}

/* in_blocking says "the GVL is released right now": it is cleared while
 * vkrb_call_with_gvl() holds the GVL (a with_lock block, a sink), so that
 * a call made from there (a command in the block) nests correctly, and set
 * again when the core resumes. */
void *vkrb_call_with_gvl(void *(*fn)(void *), void *arg)
{
    in_blocking = 0;
    void *result = rb_thread_call_with_gvl(fn, arg);
    in_blocking = 1;
    return result;
}

static void cancel_call(void *ctx)
{
    vk_context_cancel(ctx);
}

static pthread_key_t spare_context_key;
static pthread_once_t spare_context_once = PTHREAD_ONCE_INIT;

static void free_spare_context(void *ctx)
{
    vk_context_free(ctx);
}

static void create_spare_context_key(void)
{
    /* The destructor frees a thread's spare context when the thread ends. */
    if (pthread_key_create(&spare_context_key, free_spare_context) != 0)
        rb_bug("vkclient: pthread_key_create failed");
}

/* This thread's spare context, taken out of its slot while in use. */
static vk_status take_context(vk_context **out)
{
    pthread_once(&spare_context_once, create_spare_context_key);
    *out = pthread_getspecific(spare_context_key);
    if (*out) {
        pthread_setspecific(spare_context_key, NULL);
        return VK_OK;
    }
    return vk_context_new(out);
}

/* Keeps ctx as the spare unless it was cancelled or a spare exists. */
static void give_back_context(vk_context *ctx)
{
    if (!vk_context_is_cancelled(ctx) && !pthread_getspecific(spare_context_key) &&
        pthread_setspecific(spare_context_key, ctx) == 0)
        return;
    vk_context_free(ctx);
}

int vkrb_in_blocking(void)
{
    return in_blocking;
}

vk_status vkrb_blocking(vkrb_blocking_fn fn, void *data)
{
    blocking_call call = {fn, data, NULL, VK_OK, 0};
    while (!call.ran) {
        vk_status st = take_context(&call.ctx);
        if (st != VK_OK)
            return st;
        if (vkrb_tracing_in_use)
            vkrb_trace_set_parent(call.ctx); /* reads Ruby: before the GVL is released */
        rb_nogvl(run_without_gvl, &call, cancel_call, call.ctx,
                 RB_NOGVL_INTR_FAIL | RB_NOGVL_UBF_ASYNC_SAFE);
        give_back_context(call.ctx);
        if (!call.ran) {
            /* An interrupt was already pending, so fn never started: let
             * Ruby handle it now (it raises, or runs a trap and returns),
             * then start the call. Nothing is held here. */
            rb_thread_check_ints();
        }
    }
    return call.status;
}
