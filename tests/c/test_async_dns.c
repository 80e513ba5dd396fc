/*
 * The event-loop client looks host names up without stopping its loop
 * (VKTEST_NEEDS_SERVER).
 *
 * Run in a child process whose resolver never answers (resolvers.h): a
 * client given a name that only that resolver is asked about keeps its
 * loop turning while the lookup waits. Another client on the same loop
 * completes many round trips meanwhile, and the stalled dial ends at its
 * dial timeout with the blocking client's text. Names from /etc/hosts
 * (localhost) still connect, and a client freed during its lookup leaves
 * nothing behind.
 */
#include "vktest.h"
#include "servers.h"
#include "resolvers.h"
#include "async_loops.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define STALLED_ADDRESS VKT_STALLED_HOST ":6379"
#define ROUND_TRIPS 10

static vkt_server *server;

/* PINGs one after the other on a client, counting the round trips. */
typedef struct pinger {
    vk_async *client;
    int done;
    int wanted;
    long last_seq;
    bool failed;
} pinger;

static void ping_next(pinger *p);

static void on_pong(void *userdata, vk_status status, vk_reply *reply)
{
    pinger *p = userdata;
    p->last_seq = vkt_note_completion();
    bool ok = status == VK_OK && vkt_reply_is(reply, "PONG");
    vk_reply_free(reply);
    if (!ok) {
        p->failed = true;
        return;
    }
    if (++p->done < p->wanted)
        ping_next(p);
}

static void ping_next(pinger *p)
{
    static const char *const ping[] = {"PING"};
    static const size_t len[] = {4};
    if (vk_async_command(p->client, 1, ping, len, on_pong, p, NULL) != VK_OK)
        p->failed = true;
}

static bool pings_over(void *arg)
{
    pinger *p = arg;
    return p->failed || p->done == p->wanted;
}

static vk_async *client_for(vkt_loop *loop, const char *address, int64_t dial_timeout_ms)
{
    vk_config *cfg = vkt_async_config(address);
    CHECK_OK(vk_config_set_dial_timeout_ms(cfg, dial_timeout_ms));
    CHECK_OK(vk_config_set_max_retries(cfg, -1));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return c;
}

static void test_lookup_does_not_stop_the_loop(vkt_loop *loop)
{
    char numeric[64];
    snprintf(numeric, sizeof numeric, "127.0.0.1:%d", vkt_server_port(server));
    /* Stretched with the other bounds under Valgrind, where the round
     * trips below are slower. */
    int64_t dial_ms = vkt_scaled_ms(300);
    vk_async *stalled = client_for(loop, STALLED_ADDRESS, dial_ms);
    vk_async *other = client_for(loop, numeric, 2000);
    if (stalled == NULL || other == NULL)
        goto out;

    vkt_op op = {0};
    static const char *const ping[] = {"PING"};
    int64_t start = vkt_now_ms();
    CHECK_OK(vkt_submit(stalled, &op, NULL, 1, ping));
    /* While the name is looked up, the loop is free: the other client's
     * round trips, one after the other, all complete first. */
    pinger p = {.client = other, .wanted = ROUND_TRIPS};
    ping_next(&p);
    CHECK(vkt_loop_run_until(loop, pings_over, &p, 5000));
    CHECK(!p.failed);
    CHECK_EQ_INT(p.done, ROUND_TRIPS);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 5000));
    int64_t elapsed = vkt_now_ms() - start;
    CHECK(op.seq > p.last_seq);
    CHECK_EQ_INT(op.status, VK_ERR_TIMEOUT);
    CHECK_EQ_STR(op.error, "i/o timeout: dial " STALLED_ADDRESS ": lookup " VKT_STALLED_HOST
                           ": name resolution timed out");
    CHECK(elapsed >= dial_ms - 10);
    CHECK(elapsed < dial_ms + vkt_scaled_ms(3000));
    CHECK(!vk_async_is_connected(stalled));
    vkt_op_clear(&op);
out:
    vk_async_free(stalled);
    vk_async_free(other);
}

static void test_freed_during_lookup(vkt_loop *loop)
{
    vk_async *stalled = client_for(loop, STALLED_ADDRESS, 20000);
    if (stalled == NULL)
        return;
    vkt_op op = {0};
    static const char *const ping[] = {"PING"};
    CHECK_OK(vkt_submit(stalled, &op, NULL, 1, ping));
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(op.calls, 0);
    vk_async_free(stalled);
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(op.status, VK_ERR_CANCELLED);
    vkt_op_clear(&op);
}

static void test_hosts_file_names_connect(vkt_loop *loop)
{
    char address[64];
    snprintf(address, sizeof address, "localhost:%d", vkt_server_port(server));
    vk_async *c = client_for(loop, address, 2000);
    if (c == NULL)
        return;
    vkt_op op = {0};
    static const char *const ping[] = {"PING"};
    if (vkt_call(loop, c, &op, 1, ping)) {
        CHECK_EQ_INT(op.status, VK_OK);
        CHECK(vkt_reply_is(op.reply, "PONG"));
        CHECK(vk_async_is_connected(c));
    }
    vkt_op_clear(&op);
    vk_async_free(c);
}

/* The namespace and the lookups left waiting end with the child. */
static void test_in_stalled_namespace(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!vkt_stall_resolver())
            _exit(2);
        RUN_ON_LOOPS(test_lookup_does_not_stop_the_loop);
        RUN_ON_LOOPS(test_freed_during_lookup);
        RUN_ON_LOOPS(test_hosts_file_names_connect);
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
    server = vkt_server_start(NULL);
    if (server == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    RUN(test_in_stalled_namespace);
    vkt_server_stop(server);
    return vkt_finish();
}
