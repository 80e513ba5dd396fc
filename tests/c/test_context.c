/*
 * Contexts: deadlines, cancellation from another thread, the interrupt
 * check, and NULL handles. The waits are the core's own (the same ones a
 * command or a lock acquire uses), so no server is needed here; the
 * connection tests cover contexts on real sockets.
 */
#include "config.h"
#include "support/vktest.h"

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

/* Generous bounds: these check that a wait ended early, not how fast. */
#define LONG_WAIT_MS 20000
#define ENDED_EARLY_MS 5000

static void test_null_handles(void)
{
    CHECK_FAILS(vk_context_new(NULL), VK_ERR_INVALID_ARGUMENT, "invalid argument: out is NULL");
    vk_context_free(NULL);
    CHECK_FAILS(vk_context_set_timeout_ms(NULL, 10), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: context is NULL");
    CHECK_FAILS(vk_context_cancel(NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: context is NULL");
    CHECK_EQ_INT(vk_context_is_cancelled(NULL), 0);
    CHECK_FAILS(vk_context_set_interrupt_check(NULL, NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: context is NULL");
    /* A NULL context means: no deadline, not cancellable. */
    CHECK_OK(vk__ctx_check(NULL));
    CHECK_OK(vk__ctx_sleep_ms(NULL, 1));
}

static void test_deadline(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk__ctx_check(ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 50));
    int64_t started = vk__now_ms();
    CHECK_FAILS(vk__ctx_sleep_ms(ctx, LONG_WAIT_MS), VK_ERR_TIMEOUT,
                "i/o timeout: context deadline exceeded");
    int64_t took = vk__now_ms() - started;
    CHECK(took >= 45 && took < ENDED_EARLY_MS);
    CHECK_FAILS(vk__ctx_check(ctx), VK_ERR_TIMEOUT, "i/o timeout: context deadline exceeded");
    /* A negative timeout removes the deadline again. */
    CHECK_OK(vk_context_set_timeout_ms(ctx, -1));
    CHECK_OK(vk__ctx_sleep_ms(ctx, 20));
    CHECK_EQ_INT(vk_context_is_cancelled(ctx), 0);
    vk_context_free(ctx);
}

static void *cancel_later(void *arg)
{
    usleep(100 * 1000);
    vk_context_cancel(arg);
    return NULL;
}

static void test_cancel_from_another_thread(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, cancel_later, ctx) == 0);
    int64_t started = vk__now_ms();
    CHECK_FAILS(vk__ctx_sleep_ms(ctx, LONG_WAIT_MS), VK_ERR_CANCELLED, "operation cancelled");
    CHECK(vk__now_ms() - started < ENDED_EARLY_MS);
    pthread_join(thread, NULL);
    CHECK_EQ_INT(vk_context_is_cancelled(ctx), 1);
    /* Once cancelled, it stays cancelled, and cancelling again is fine. */
    CHECK_OK(vk_context_cancel(ctx));
    CHECK_FAILS(vk__ctx_check(ctx), VK_ERR_CANCELLED, "operation cancelled");
    CHECK_FAILS(vk__ctx_sleep_ms(ctx, 0), VK_ERR_CANCELLED, "operation cancelled");
    vk_context_free(ctx);
}

static int interrupt_after_three(void *userdata)
{
    int *calls = userdata;
    return ++*calls >= 3;
}

static void test_interrupt_check(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    int calls = 0;
    CHECK_OK(vk_context_set_interrupt_check(ctx, interrupt_after_three, &calls));
    int64_t started = vk__now_ms();
    CHECK_FAILS(vk__ctx_sleep_ms(ctx, LONG_WAIT_MS), VK_ERR_CANCELLED,
                "operation cancelled: interrupted");
    CHECK(vk__now_ms() - started < ENDED_EARLY_MS);
    CHECK_EQ_INT(calls, 3);
    /* An interrupt is not a cancellation of the context itself. */
    CHECK_EQ_INT(vk_context_is_cancelled(ctx), 0);
    CHECK_OK(vk_context_set_interrupt_check(ctx, NULL, NULL));
    CHECK_OK(vk__ctx_sleep_ms(ctx, 10));
    vk_context_free(ctx);
}

static void test_wait_on_a_descriptor(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    /* Nothing to read: the wait's own deadline ends it. */
    CHECK_FAILS(vk__ctx_wait_fd(ctx, fds[0], POLLIN, vk__now_us() + 30 * 1000), VK_ERR_TIMEOUT,
                "i/o timeout");
    /* Readable: ready at once. */
    CHECK(write(fds[1], "x", 1) == 1);
    CHECK_OK(vk__ctx_wait_fd(ctx, fds[0], POLLIN, vk__now_us() + LONG_WAIT_MS * 1000LL));
    /* The context's deadline, when earlier, wins and says so. */
    char byte;
    CHECK(read(fds[0], &byte, 1) == 1);
    CHECK_OK(vk_context_set_timeout_ms(ctx, 20));
    CHECK_FAILS(vk__ctx_wait_fd(ctx, fds[0], POLLIN, vk__now_us() + LONG_WAIT_MS * 1000LL),
                VK_ERR_TIMEOUT, "i/o timeout: context deadline exceeded");
    vk_context_free(ctx);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    RUN(test_null_handles);
    RUN(test_deadline);
    RUN(test_cancel_from_another_thread);
    RUN(test_interrupt_check);
    RUN(test_wait_on_a_descriptor);
    return vkt_finish();
}
