/*
 * The event-loop client against a peer that breaks the protocol: a
 * malformed reply, a reply over the reply budget (an array header beyond
 * VK_MAX_REPLY_ELEMENTS, refused before any element is allocated), and a
 * reply that no request asked for. Each fails the connection with
 * VK_ERR_PROTOCOL and the reason; no operation gets another's reply; the
 * next operation opens a new connection and gets its own reply.
 *
 * The peer is a loopback listener of this test that answers the handshake's
 * PING and then each request with the next scripted bytes: no server sends
 * such bytes on purpose, which is why it cannot be a real one.
 *
 * A read-only command in flight on the failed connection is sent again on
 * the next one (the retry policy), so it gets its own reply there; a
 * command that changes data (INCR) is never sent twice: it gets the
 * failure.
 */
#include "vktest.h"
#include "async_loops.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define GOOD_REPLY "$2\r\nok\r\n"

/* ---- the peer ---------------------------------------------------------------- */

typedef struct peer {
    int listener;
    int port;
    pthread_t thread;
    atomic_bool stop;
    const char *const *script;   /* replies to the requests after the handshake, in order */
    size_t script_len;
    atomic_int connections;      /* accepted so far */
    atomic_int incrs;            /* INCRs read so far */
    atomic_int requests;         /* non-handshake requests read so far */
} peer;

/* Length of the first whole RESP request (an array of bulk strings) in
 * buf, 0 when it is not all there; *is_ping tells a PING. */
static size_t request_length(const char *buf, size_t len, bool *is_ping)
{
    const char *p = buf, *end = buf + len;
    if (p >= end || *p != '*')
        return 0;
    char *next = NULL;
    long n = strtol(p + 1, &next, 10);
    if (next + 2 > end)
        return 0;
    p = next + 2;
    *is_ping = false;
    for (long i = 0; i < n; i++) {
        if (p >= end || *p != '$')
            return 0;
        long blen = strtol(p + 1, &next, 10);
        if (next + 2 > end || next + 2 + blen + 2 > end)
            return 0;
        if (i == 0)
            *is_ping = blen == 4 && memcmp(next + 2, "PING", 4) == 0;
        p = next + 2 + blen + 2;
    }
    return (size_t)(p - buf);
}

static void send_all(int fd, const char *bytes)
{
    size_t len = strlen(bytes), off = 0;
    while (off < len) {
        ssize_t n = send(fd, bytes + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        off += (size_t)n;
    }
}

static void serve_connection(peer *p, int fd)
{
    char buf[65536];
    size_t have = 0;
    while (!atomic_load(&p->stop)) {
        ssize_t n = recv(fd, buf + have, sizeof buf - have, 0);
        if (n <= 0)
            return;
        have += (size_t)n;
        for (;;) {
            bool is_ping = false;
            static const char incr_head[] = "*2\r\n$4\r\nINCR\r\n";
            bool is_incr = have >= sizeof incr_head - 1 &&
                           memcmp(buf, incr_head, sizeof incr_head - 1) == 0;
            size_t used = request_length(buf, have, &is_ping);
            if (used == 0)
                break;
            memmove(buf, buf + used, have - used);
            have -= used;
            if (is_incr)
                atomic_fetch_add(&p->incrs, 1);
            if (is_ping) {
                send_all(fd, "+PONG\r\n");
                continue;
            }
            size_t k = (size_t)atomic_fetch_add(&p->requests, 1);
            send_all(fd, k < p->script_len ? p->script[k] : GOOD_REPLY);
        }
    }
}

static void *peer_main(void *arg)
{
    peer *p = arg;
    while (!atomic_load(&p->stop)) {
        int fd = accept(p->listener, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&p->connections, 1);
        serve_connection(p, fd);
        close(fd);
    }
    return NULL;
}

static bool peer_start(peer *p, const char *const *script, size_t script_len)
{
    memset(p, 0, sizeof *p);
    p->script = script;
    p->script_len = script_len;
    p->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (p->listener < 0 || bind(p->listener, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->listener, 8) != 0 ||
        getsockname(p->listener, (struct sockaddr *)&sa, &len) != 0) {
        CHECK(false);
        return false;
    }
    /* accept() wakes up now and then to see stop. */
    struct timeval tv = { .tv_sec = 0, .tv_usec = 50000 };
    setsockopt(p->listener, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    p->port = ntohs(sa.sin_port);
    return pthread_create(&p->thread, NULL, peer_main, p) == 0;
}

static void peer_stop(peer *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    close(p->listener);
}

/* ---- the client ---------------------------------------------------------------- */

static vk_async *client_of(vkt_loop *loop, const peer *p)
{
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", p->port);
    vk_config *cfg = vkt_async_config(address);
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return c;
}

static const char *const INCR_K[] = {"INCR", "k"};
static const char *const GET_K[] = {"GET", "k"};

/* An INCR meets the scripted bytes with a GET behind it: the INCR fails
 * with expected_error and is not sent again, the GET is sent again on a
 * new connection and gets its own reply, and so does a later GET. */
static void check_failure_then_recovery(vkt_loop *loop, const char *scripted,
                                        const char *expected_error)
{
    const char *script[] = {scripted};
    peer p;
    if (!peer_start(&p, script, 1))
        return;
    vk_async *c = client_of(loop, &p);
    if (c == NULL) {
        peer_stop(&p);
        return;
    }
    vkt_op incr = {0}, get = {0}, later = {0};
    CHECK_OK(vkt_submit(c, &incr, NULL, 2, INCR_K));
    CHECK_OK(vkt_submit(c, &get, NULL, 2, GET_K));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &get, 10000));
    CHECK(vkt_op_done(&incr));
    CHECK_EQ_INT(incr.status, VK_ERR_PROTOCOL);
    CHECK_EQ_STR(incr.error, expected_error);
    CHECK(incr.reply == NULL);
    CHECK_EQ_INT(get.status, VK_OK);
    CHECK(vkt_reply_is(get.reply, "ok"));
    if (vkt_call(loop, c, &later, 2, GET_K)) {
        CHECK_EQ_INT(later.status, VK_OK);
        CHECK(vkt_reply_is(later.reply, "ok"));
    }
    CHECK_EQ_INT(atomic_load(&p.connections), 2);
    CHECK_EQ_INT(atomic_load(&p.incrs), 1);
    vkt_op_clear(&incr);
    vkt_op_clear(&get);
    vkt_op_clear(&later);
    vk_async_free(c);
    peer_stop(&p);
}

static void test_malformed_reply(vkt_loop *loop)
{
    check_failure_then_recovery(loop, "!garbage\r\n",
                                "protocol error: Protocol error, got \"!\" as reply type byte");
}

static void test_reply_over_budget(vkt_loop *loop)
{
    /* One element more than the budget: refused at the header, before
     * anything is allocated for the elements. */
    char header[32];
    snprintf(header, sizeof header, "*%zu\r\n", (size_t)(1u << 25) + 1);
    check_failure_then_recovery(loop, header,
                                "protocol error: reply with more than 33554432 array elements "
                                "refused");
}

/* A reply that comes when nothing is in flight: the INCR completes with its
 * own reply, the extra one breaks the connection, and the next command runs
 * on a new one. */
static void test_unsolicited_reply(vkt_loop *loop)
{
    const char *script[] = {":1\r\n+OK\r\n"};
    peer p;
    if (!peer_start(&p, script, 1))
        return;
    vk_async *c = client_of(loop, &p);
    if (c == NULL) {
        peer_stop(&p);
        return;
    }
    vkt_op incr = {0}, later = {0};
    if (vkt_call(loop, c, &incr, 2, INCR_K)) {
        CHECK_EQ_INT(incr.status, VK_OK);
        CHECK(incr.reply != NULL && vk_reply_get_type(incr.reply) == VK_REPLY_INTEGER &&
              vk_reply_get_integer(incr.reply) == 1);
    }
    /* The extra reply arrived with the INCR's or just after it. */
    vkt_loop_run_for(loop, 50);
    CHECK(!vk_async_is_connected(c));
    if (vkt_call(loop, c, &later, 2, GET_K)) {
        CHECK_EQ_INT(later.status, VK_OK);
        CHECK(vkt_reply_is(later.reply, "ok"));
    }
    CHECK_EQ_INT(atomic_load(&p.connections), 2);
    vkt_op_clear(&incr);
    vkt_op_clear(&later);
    vk_async_free(c);
    peer_stop(&p);
}

int main(void)
{
    RUN_ON_LOOPS(test_malformed_reply);
    RUN_ON_LOOPS(test_reply_over_budget);
    RUN_ON_LOOPS(test_unsolicited_reply);
    return vkt_finish();
}
