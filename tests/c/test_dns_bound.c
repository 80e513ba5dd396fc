/*
 * Host name resolution is bounded by the dial timeout and the context
 * (VKTEST_NEEDS_SERVER).
 *
 * The resolver that never answers is real: a child process moves into a
 * private mount namespace (this needs root, as the test command runs in
 * CI) and bind-mounts over /etc/resolv.conf a file whose only name server
 * is a loopback UDP socket the child holds and never reads. glibc's
 * getaddrinfo() then waits out its 30 s timeout for any name that is not
 * in /etc/hosts. In there, a dial with a 300 ms dial timeout, one with a
 * context deadline, one cancelled from another thread and one stopped by
 * an interrupt check must all return within their bound, one cancelled
 * before it starts must not start a resolver thread; numeric
 * addresses and localhost (from /etc/hosts) must still connect to the real
 * server, numeric ones without starting a resolver thread.
 *
 * VKTEST_WRAP: pthread_create
 */
#include "vktest.h"
#include "servers.h"
#include "resolvers.h"
#include "vkclient.h"
#include "conn.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define STALLED_HOST VKT_STALLED_HOST

static vkt_server *server;

/* ---- counting the threads the library starts -------------------------------- */

static atomic_int threads_started;

int __real_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg);

int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                          void *(*fn)(void *), void *arg)
{
    atomic_fetch_add(&threads_started, 1);
    return __real_pthread_create(thread, attr, fn, arg);
}

/* ---- building blocks ------------------------------------------------------------- */

static vk_config *prepared_config(const char *address, int64_t dial_timeout_ms,
                                  vk_endpoint *ep)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, address);
    vk_config_set_dial_timeout_ms(cfg, dial_timeout_ms);
    if (vk__config_prepare(cfg, NULL) != VK_OK || vk__parse_address(ep, address) != VK_OK) {
        vk_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Opens one connection to address; the status, and how long it took. */
static vk_status open_conn(const char *address, int64_t dial_timeout_ms, vk_context *ctx,
                           int64_t *elapsed_ms)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(address, dial_timeout_ms, &ep);
    if (cfg == NULL)
        return VK_ERR_INVALID_CONFIG;
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    int64_t start = vkt_now_ms();
    vk_status st = vk__conn_open(&conn, &ep, &params, ctx);
    *elapsed_ms = vkt_now_ms() - start;
    vk__conn_close(conn);
    vk_config_free(cfg);
    return st;
}

static const char *stalled_address(void)
{
    return STALLED_HOST ":6379";
}

/* ---- inside the stalled namespace ------------------------------------------------- */

static void test_dial_timeout_bounds_lookup(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, stalled_address());
    vk_config_set_dial_timeout_ms(cfg, 300);
    vk_client *c = NULL;
    int64_t start = vkt_now_ms();
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TIMEOUT,
                "i/o timeout: dial " STALLED_HOST ":6379: lookup " STALLED_HOST
                ": name resolution timed out");
    int64_t elapsed = vkt_now_ms() - start;
    CHECK(elapsed >= 290);
    CHECK(elapsed < vkt_scaled_ms(3000));
    CHECK(c == NULL);
    vk_config_free(cfg);
}

static void test_context_deadline_bounds_lookup(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 300));
    int64_t elapsed = 0;
    CHECK_EQ_INT(open_conn(stalled_address(), 20000, ctx, &elapsed), VK_ERR_TIMEOUT);
    CHECK_EQ_STR(vk_last_error(), "i/o timeout: context deadline exceeded");
    CHECK(elapsed < vkt_scaled_ms(3000));
    vk_context_free(ctx);
}

static void *cancel_after_200ms(void *arg)
{
    vkt_sleep_ms(200);
    vk_context_cancel(arg);
    return NULL;
}

static void test_cancel_stops_lookup(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    pthread_t canceller;
    CHECK_EQ_INT(pthread_create(&canceller, NULL, cancel_after_200ms, ctx), 0);
    int64_t elapsed = 0;
    CHECK_EQ_INT(open_conn(stalled_address(), 20000, ctx, &elapsed), VK_ERR_CANCELLED);
    CHECK_EQ_STR(vk_last_error(), "operation cancelled");
    CHECK(elapsed < vkt_scaled_ms(3000));
    pthread_join(canceller, NULL);
    vk_context_free(ctx);
}

/* The check Python installs for Ctrl-C: here, "interrupted" after 200 ms. */
static int interrupted_after_200ms(void *userdata)
{
    return vkt_now_ms() >= *(const int64_t *)userdata + 200;
}

static void test_interrupt_check_stops_lookup(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    int64_t start = vkt_now_ms();
    CHECK_OK(vk_context_set_interrupt_check(ctx, interrupted_after_200ms, &start));
    int64_t elapsed = 0;
    CHECK_EQ_INT(open_conn(stalled_address(), 20000, ctx, &elapsed), VK_ERR_CANCELLED);
    CHECK_EQ_STR(vk_last_error(), "operation cancelled: interrupted");
    CHECK(elapsed < vkt_scaled_ms(3000));
    vk_context_free(ctx);
}

static void test_cancelled_before_lookup(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_cancel(ctx));
    int before = atomic_load(&threads_started);
    int64_t elapsed = 0;
    CHECK_EQ_INT(open_conn(stalled_address(), 20000, ctx, &elapsed), VK_ERR_CANCELLED);
    CHECK_EQ_STR(vk_last_error(), "operation cancelled");
    CHECK_EQ_INT(atomic_load(&threads_started) - before, 0);
    vk_context_free(ctx);
}

static void test_numeric_addresses_need_no_thread(void)
{
    char v4[64], v6[64];
    snprintf(v4, sizeof v4, "127.0.0.1:%d", vkt_server_port(server));
    snprintf(v6, sizeof v6, "[::1]:%d", vkt_server_port(server));
    int before = atomic_load(&threads_started);
    int64_t elapsed = 0;
    CHECK_OK(open_conn(v4, 300, NULL, &elapsed));
    CHECK_OK(open_conn(v6, 300, NULL, &elapsed));
    CHECK_EQ_INT(atomic_load(&threads_started) - before, 0);
}

static void test_localhost_still_connects(void)
{
    char address[64];
    snprintf(address, sizeof address, "localhost:%d", vkt_server_port(server));
    int before = atomic_load(&threads_started);
    int64_t elapsed = 0;
    CHECK_OK(open_conn(address, 2000, NULL, &elapsed));
    /* A name is looked up on a resolver thread, /etc/hosts included. */
    CHECK_EQ_INT(atomic_load(&threads_started) - before, 1);
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, address);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_client_free(c);
    vk_config_free(cfg);
}

/* Runs the checks that need the stalled resolver in a child process, so
 * that the namespace and the resolver threads left waiting end with it. */
static void test_in_stalled_namespace(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!vkt_stall_resolver())
            _exit(2);
        RUN(test_dial_timeout_bounds_lookup);
        RUN(test_context_deadline_bounds_lookup);
        RUN(test_cancel_stops_lookup);
        RUN(test_interrupt_check_stops_lookup);
        RUN(test_cancelled_before_lookup);
        RUN(test_numeric_addresses_need_no_thread);
        RUN(test_localhost_still_connects);
        fflush(NULL);
        exit(vkt_failed > 0 ? 1 : 0);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){ 0 });
    if (server == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    RUN(test_in_stalled_namespace);
    vkt_server_stop(server);
    return vkt_finish();
}
