/*
 * Connections against real servers (VKTEST_NEEDS_SERVER): TCP over IPv4
 * and IPv6, unix sockets, AUTH for the default user and ACL users, SELECT,
 * binary and large values, pipelined requests, read/write/dial timeouts,
 * cancellation from another thread, a refused dial, a server that dies
 * mid-read, idle checks after a server-side CLIENT KILL, and no SIGPIPE.
 *
 * The public client API is used where it shows the behaviour; the
 * connection functions of conn.h where only they can (idle checks,
 * pipelining on one connection, re-authentication).
 */
#include "vktest.h"
#include "servers.h"
#include "conns.h"
#include "vkclient.h"
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PASSWORD "conn-test-default-secret"
#define ACL_USER "app"
#define ACL_PASSWORD "conn-test-app-secret"

static vkt_server *plain;     /* no auth, unix socket, DEBUG enabled */
static vkt_server *secured;   /* requirepass, plus the ACL user */
static vkt_server *victim;    /* gets stopped, killed and restarted */

/* ---- building blocks --------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static vk_config *config_for(const char *address)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, address);
    return cfg;
}

/* A config prepared the way a client prepares it, for vk__conn_open(). */
static vk_config *prepared_config(const char *address, vk_endpoint *ep)
{
    vk_config *cfg = config_for(address);
    if (vk__config_prepare(cfg, NULL) != VK_OK || vk__parse_address(ep, address) != VK_OK) {
        vk_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Runs a command given as NUL-terminated words. */
static vk_status run(vk_reply **out, vk_client *c, vk_context *ctx, int argc,
                     const char *const *argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vk_client_command(out, c, ctx, argc, argv, lens);
}

/* True when the command succeeds with a string or status reply of text. */
static bool run_gives(vk_client *c, int argc, const char *const *argv, const char *text)
{
    vk_reply *r = NULL;
    bool ok = false;
    if (run(&r, c, NULL, argc, argv) == VK_OK) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        ok = s != NULL && len == strlen(text) && memcmp(s, text, len) == 0;
    }
    vk_reply_free(r);
    return ok;
}

/* The CLIENT INFO line of the connection the client uses, malloc'd. */
static char *client_info(vk_client *c)
{
    const char *argv[] = { "CLIENT", "INFO" };
    vk_reply *r = NULL;
    char *info = NULL;
    if (run(&r, c, NULL, 2, argv) == VK_OK) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        if (s != NULL)
            info = strndup(s, len);
    }
    vk_reply_free(r);
    return info;
}

/* Opens a client; NULL (with a failed check) when it cannot. */
static vk_client *open_client(vk_config *cfg)
{
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    return c;
}

static long long conn_client_id(vk_conn *c)
{
    const char *argv[] = { "CLIENT", "ID" };
    redisReply *r = vkt_conn_run(c, 2, argv);
    long long id = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    vk__reply_free(r);
    return id;
}

static void kill_client_id(vkt_server *s, long long id)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", id);
    const char *argv[] = { "CLIENT", "KILL", "ID", text };
    char *line = vkt_server_cmd(s, argv, 4);
    CHECK_EQ_STR(line, ":1");
    free(line);
}

/* A loopback port nobody listens on: bound once, then released. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* ---- addresses ------------------------------------------------------------------ */

static void check_set_get(vk_client *c, const char *key)
{
    const char *set[] = { "SET", key, "value" };
    const char *get[] = { "GET", key };
    CHECK(run_gives(c, 3, set, "OK"));
    CHECK(run_gives(c, 2, get, "value"));
}

static void test_tcp_ipv4(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    vk_client *c = open_client(cfg);
    check_set_get(c, "conn:v4");
    char *info = client_info(c);
    CHECK(info != NULL && strstr(info, "addr=127.0.0.1:") != NULL);
    free(info);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_tcp_ipv6(void)
{
    char address[64];
    snprintf(address, sizeof address, "[::1]:%d", vkt_server_port(plain));
    vk_config *cfg = config_for(address);
    vk_client *c = open_client(cfg);
    check_set_get(c, "conn:v6");
    char *info = client_info(c);
    CHECK(info != NULL && strstr(info, "addr=[::1]:") != NULL);
    free(info);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_host_name(void)
{
    char address[64];
    snprintf(address, sizeof address, "localhost:%d", vkt_server_port(plain));
    vk_config *cfg = config_for(address);
    vk_client *c = open_client(cfg);
    check_set_get(c, "conn:localhost");
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_unix_socket(void)
{
    const char *address = vkt_server_unix_address(plain);
    CHECK(address != NULL && strncmp(address, "unix:/", 6) == 0);
    vk_config *cfg = config_for(address);
    vk_client *c = open_client(cfg);
    check_set_get(c, "conn:unix");
    char *info = client_info(c);
    /* The server flags unix socket clients with U. */
    CHECK(info != NULL && strstr(info, " flags=U ") != NULL);
    free(info);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_refused_dial(void)
{
    int port = closed_port();
    CHECK(port > 0);
    char address[64], expected[160];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    snprintf(expected, sizeof expected, "connection error: dial 127.0.0.1:%d: Connection refused",
             port);
    vk_config *cfg = config_for(address);
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_IO, expected);
    CHECK(c == NULL);
    vk_config_free(cfg);
}

/* ---- auth --------------------------------------------------------------------------- */

static void test_default_user_password(void)
{
    vk_config *cfg = config_for(vkt_server_address(secured));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    vk_client *c = open_client(cfg);
    const char *whoami[] = { "ACL", "WHOAMI" };
    CHECK(run_gives(c, 2, whoami, "default"));
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_wrong_password(void)
{
    vk_config *cfg = config_for(vkt_server_address(secured));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, "not-the-password"));
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_AUTH,
                "authentication failed: WRONGPASS invalid username-password pair or user is disabled.");
    CHECK(strstr(vk_last_error(), "not-the-password") == NULL);
    CHECK(c == NULL);
    vk_config_free(cfg);
}

static void test_missing_password(void)
{
    /* The handshake's PING meets NOAUTH. */
    vk_config *cfg = config_for(vkt_server_address(secured));
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_AUTH,
                "authentication failed: NOAUTH Authentication required.");
    vk_config_free(cfg);
}

static void test_acl_user(void)
{
    vk_config *cfg = config_for(vkt_server_address(secured));
    CHECK_OK(vk_config_set_static_password(cfg, ACL_USER, ACL_PASSWORD));
    vk_client *c = open_client(cfg);
    const char *whoami[] = { "ACL", "WHOAMI" };
    CHECK(run_gives(c, 2, whoami, ACL_USER));
    /* A command the user may not run is an error reply, not a failure. */
    const char *flush[] = { "FLUSHALL" };
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, NULL, 1, flush));
    CHECK_EQ_INT(vk_reply_get_type(r), VK_REPLY_ERROR);
    size_t len = 0;
    const char *text = vk_reply_get_string(r, &len);
    CHECK(text != NULL && len > 6 && memcmp(text, "NOPERM", 6) == 0);
    vk_reply_free(r);
    vk_client_free(c);

    CHECK_OK(vk_config_set_static_password(cfg, ACL_USER, "wrong-app-secret"));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_AUTH,
                "authentication failed: WRONGPASS invalid username-password pair or user is disabled.");
    CHECK(strstr(vk_last_error(), "wrong-app-secret") == NULL);
    CHECK_OK(vk_config_set_static_password(cfg, "nobody", ACL_PASSWORD));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_AUTH,
                "authentication failed: WRONGPASS invalid username-password pair or user is disabled.");
    vk_config_free(cfg);
}

static void test_reauthenticate_connection(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(secured), &ep);
    CHECK(cfg != NULL);
    vk_conn_params params = { .cfg = cfg, .password = PASSWORD };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    const char *whoami[] = { "ACL", "WHOAMI" };
    redisReply *r = vkt_conn_run(conn, 2, whoami);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "default") == 0);
    vk__reply_free(r);

    CHECK_OK(vk__conn_auth(conn, ACL_USER, ACL_PASSWORD, NULL));
    r = vkt_conn_run(conn, 2, whoami);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, ACL_USER) == 0);
    vk__reply_free(r);

    /* A refused AUTH leaves the connection usable, as the user it was. */
    CHECK_FAILS(vk__conn_auth(conn, ACL_USER, "stale-token", NULL), VK_ERR_AUTH,
                "authentication failed: WRONGPASS invalid username-password pair or user is disabled.");
    CHECK(!vk__conn_is_broken(conn));
    r = vkt_conn_run(conn, 2, whoami);
    CHECK(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, ACL_USER) == 0);
    vk__reply_free(r);
    vk__conn_close(conn);
    vk_config_free(cfg);
}

/* ---- SELECT ----------------------------------------------------------------------------- */

static void test_select_db(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    CHECK_OK(vk_config_set_db(cfg, 3));
    vk_client *c = open_client(cfg);
    const char *set[] = { "SET", "conn:db", "three" };
    CHECK(run_gives(c, 3, set, "OK"));
    char *info = client_info(c);
    CHECK(info != NULL && strstr(info, " db=3 ") != NULL);
    free(info);
    vk_client_free(c);

    /* The key is in db 3, not in db 0 (where the harness runs commands). */
    const char *get[] = { "GET", "conn:db" };
    char *line = vkt_server_cmd(plain, get, 2);
    CHECK_EQ_STR(line, "$-1");
    free(line);

    CHECK_OK(vk_config_set_db(cfg, 99));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_SERVER,
                "server error reply: SELECT: ERR DB index is out of range");
    vk_config_free(cfg);
}

static void test_protocol_3(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    CHECK_OK(vk_config_set_protocol(cfg, 3));
    vk_client *c = NULL;
    if (vk_resp3_supported()) {
        /* HELLO 3 in the handshake: the server speaks RESP3 to us. */
        CHECK_OK(vk_client_new(&c, cfg));
        char *info = c != NULL ? client_info(c) : NULL;
        CHECK(info != NULL && strstr(info, " resp=3") != NULL);
        free(info);
        vk_client_free(c);
    } else {
        char expected[160];
        snprintf(expected, sizeof expected,
                 "invalid redis config: protocol 3 (RESP3) requires hiredis >= 1.0; "
                 "this build uses hiredis %s", vk_hiredis_version());
        CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_INVALID_CONFIG, expected);
        CHECK(c == NULL);
    }
    vk_config_free(cfg);
}

/* ---- values --------------------------------------------------------------------------- */

static void test_binary_values(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    vk_client *c = open_client(cfg);
    char key[] = "bin\0key\r\n";
    size_t keylen = sizeof key - 1;
    char value[256];
    for (int i = 0; i < 256; i++)
        value[i] = (char)i;
    const char *set[] = { "SET", key, value };
    size_t setlen[] = { 3, keylen, sizeof value };
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, c, NULL, 3, set, setlen));
    CHECK_EQ_INT(vk_reply_get_type(r), VK_REPLY_STATUS);
    vk_reply_free(r);
    const char *get[] = { "GET", key };
    size_t getlen[] = { 3, keylen };
    CHECK_OK(vk_client_command(&r, c, NULL, 2, get, getlen));
    size_t len = 0;
    const char *got = vk_reply_get_string(r, &len);
    CHECK(got != NULL && len == sizeof value && memcmp(got, value, len) == 0);
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_large_value(void)
{
    const size_t size = 10 * 1024 * 1024;
    char *value = malloc(size);
    for (size_t i = 0; i < size; i++)
        value[i] = (char)('a' + i % 23);
    vk_config *cfg = config_for(vkt_server_address(plain));
    vk_client *c = open_client(cfg);
    const char *set[] = { "SET", "conn:big", value };
    size_t setlen[] = { 3, 8, size };
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, c, NULL, 3, set, setlen));
    vk_reply_free(r);
    const char *strlen_cmd[] = { "STRLEN", "conn:big" };
    CHECK_OK(run(&r, c, NULL, 2, strlen_cmd));
    CHECK_EQ_INT(vk_reply_get_integer(r), (long long)size);
    vk_reply_free(r);
    const char *get[] = { "GET", "conn:big" };
    CHECK_OK(run(&r, c, NULL, 2, get));
    size_t len = 0;
    const char *got = vk_reply_get_string(r, &len);
    CHECK(got != NULL && len == size && memcmp(got, value, size) == 0);
    vk_reply_free(r);
    const char *del[] = { "DEL", "conn:big" };
    CHECK_OK(run(&r, c, NULL, 2, del));
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
    free(value);
}

static void test_pipelined_on_one_connection(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    const char *del[] = { "DEL", "conn:counter" };
    vk__reply_free(vkt_conn_run(conn, 2, del));
    const char *incr[] = { "INCR", "conn:counter" };
    const size_t incrlen[] = { 4, 12 };
    for (int i = 0; i < 100; i++)
        CHECK_OK(vk__conn_append(conn, 2, incr, incrlen));
    CHECK_OK(vk__conn_flush(conn, NULL));
    int in_order = 0;
    for (int i = 1; i <= 100; i++) {
        redisReply *r = NULL;
        CHECK_OK(vk__conn_read(conn, &r, NULL));
        in_order += r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == i;
        vk__reply_free(r);
    }
    CHECK_EQ_INT(in_order, 100);
    CHECK(vk__conn_still_usable(conn));
    vk__conn_set_tag(conn, 42);
    CHECK_EQ_INT(vk__conn_tag(conn), 42);
    CHECK(vk__conn_last_used_ms(conn) > 0);
    vk__conn_close(conn);
    vk_config_free(cfg);
}

/* ---- timeouts and cancellation ---------------------------------------------------------- */

static void test_read_timeout(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 200));
    vk_client *c = open_client(cfg);
    char expected[96];
    snprintf(expected, sizeof expected, "i/o timeout: read %s", vkt_server_address(plain));
    /* The server answers after 500 ms (a blocking command such as BLPOP
     * would have its read timeout stretched instead). */
    const char *slow[] = { "DEBUG", "SLEEP", "0.5" };
    vk_reply *r = NULL;
    int64_t start = now_ms();
    CHECK_FAILS(run(&r, c, NULL, 3, slow), VK_ERR_TIMEOUT, expected);
    int64_t took = now_ms() - start;
    CHECK(took >= 150 && took < 3000);
    CHECK(r == NULL);
    /* The timed-out connection is dropped; the next command gets a new one. */
    usleep(500 * 1000);   /* the server is back */
    const char *ping[] = { "PING" };
    CHECK(run_gives(c, 1, ping, "PONG"));
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_read_timeout_breaks_connection(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    cfg->read_timeout_ms = 100;
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    /* The server is busy longer than the read timeout. */
    const char *sleep_cmd[] = { "DEBUG", "SLEEP", "0.4" };
    const size_t lens[] = { 5, 5, 3 };
    redisReply *r = NULL;
    bool sent = false;
    char expected[96];
    snprintf(expected, sizeof expected, "i/o timeout: read %s", vkt_server_address(plain));
    CHECK_FAILS(vk__conn_command(conn, &r, 3, sleep_cmd, lens, NULL, &sent), VK_ERR_TIMEOUT,
                expected);
    CHECK(sent);
    CHECK(vk__conn_is_broken(conn));
    CHECK(!vk__conn_still_usable(conn));
    /* A broken connection refuses further use instead of reading a stale reply. */
    const char *ping[] = { "PING" };
    const size_t pinglen[] = { 4 };
    char broken[96];
    snprintf(broken, sizeof broken, "connection error: connection to %s is broken",
             vkt_server_address(plain));
    CHECK_FAILS(vk__conn_command(conn, &r, 1, ping, pinglen, NULL, &sent), VK_ERR_IO, broken);
    CHECK(!sent);
    vk__conn_close(conn);
    vk_config_free(cfg);
    sleep_ms(400);   /* let the server finish sleeping */
}

static void test_context_deadline(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    vk_client *c = open_client(cfg);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 150));
    const char *blpop[] = { "BLPOP", "conn:empty-list", "5" };
    vk_reply *r = NULL;
    int64_t start = now_ms();
    CHECK_FAILS(run(&r, c, ctx, 3, blpop), VK_ERR_TIMEOUT, "i/o timeout: context deadline exceeded");
    int64_t took = now_ms() - start;
    CHECK(took >= 100 && took < 3000);
    const char *ping[] = { "PING" };
    CHECK(run_gives(c, 1, ping, "PONG"));
    vk_context_free(ctx);
    vk_client_free(c);
    vk_config_free(cfg);
}

typedef struct canceller {
    vk_context *ctx;
    int after_ms;
    int64_t cancelled_at_ms;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *k = arg;
    sleep_ms(k->after_ms);
    k->cancelled_at_ms = now_ms();
    vk_context_cancel(k->ctx);
    return NULL;
}

static void test_cancel_blocked_read(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    vk_client *c = open_client(cfg);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    canceller k = { .ctx = ctx, .after_ms = 200 };
    pthread_t thread;
    pthread_create(&thread, NULL, cancel_later, &k);
    const char *blpop[] = { "BLPOP", "conn:empty-list", "10" };
    vk_reply *r = NULL;
    CHECK_FAILS(run(&r, c, ctx, 3, blpop), VK_ERR_CANCELLED, "operation cancelled");
    int64_t returned_at = now_ms();
    pthread_join(thread, NULL);
    /* Loose bound: about 100 ms is the promise; the rest is room for a
     * loaded machine and valgrind. */
    CHECK(returned_at - k.cancelled_at_ms < vkt_scaled_ms(500));
    CHECK(vk_context_is_cancelled(ctx));
    /* A cancelled context stays cancelled: nothing is even sent. */
    const char *ping[] = { "PING" };
    CHECK_FAILS(run(&r, c, ctx, 1, ping), VK_ERR_CANCELLED, "operation cancelled");
    CHECK(run_gives(c, 1, ping, "PONG"));
    vk_context_free(ctx);
    vk_client_free(c);
    vk_config_free(cfg);
}

typedef struct blocked_call {
    vk_client *client;
    vk_context *ctx;
    vk_status status;
    int64_t returned_at_ms;
} blocked_call;

static void *blpop_until_cancelled(void *arg)
{
    blocked_call *b = arg;
    const char *blpop[] = { "BLPOP", "conn:empty-list", "10" };
    vk_reply *r = NULL;
    b->status = run(&r, b->client, b->ctx, 3, blpop);
    b->returned_at_ms = now_ms();
    vk_reply_free(r);
    return NULL;
}

/* One context shared by two blocked calls (one blocks on its socket, the
 * other polls): one cancel ends both. */
static void test_cancel_two_calls_sharing_a_context(void)
{
    vk_config *cfg = config_for(vkt_server_address(plain));
    vk_client *c = open_client(cfg);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    blocked_call calls[2] = { { .client = c, .ctx = ctx }, { .client = c, .ctx = ctx } };
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, blpop_until_cancelled, &calls[i]);
    sleep_ms(200);
    int64_t cancelled_at = now_ms();
    CHECK_OK(vk_context_cancel(ctx));
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ_INT(calls[i].status, VK_ERR_CANCELLED);
        CHECK(calls[i].returned_at_ms - cancelled_at < vkt_scaled_ms(500));
    }
    const char *ping[] = { "PING" };
    CHECK(run_gives(c, 1, ping, "PONG"));
    vk_context_free(ctx);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* Interrupt check: fires once its deadline has passed. */
static int interrupt_after(void *userdata)
{
    const int64_t *fire_at_ms = userdata;
    return now_ms() >= *fire_at_ms;
}

static void test_interrupt_check_stops_blocked_read(void)
{
    /* How a binding turns a signal (Python's Ctrl-C) into a cancellation. */
    vk_config *cfg = config_for(vkt_server_address(plain));
    vk_client *c = open_client(cfg);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    int64_t fire_at_ms = now_ms() + 200;
    CHECK_OK(vk_context_set_interrupt_check(ctx, interrupt_after, &fire_at_ms));
    const char *blpop[] = { "BLPOP", "conn:empty-list", "10" };
    vk_reply *r = NULL;
    CHECK_FAILS(run(&r, c, ctx, 3, blpop), VK_ERR_CANCELLED, "operation cancelled: interrupted");
    CHECK(now_ms() - fire_at_ms < 500);
    vk_context_free(ctx);
    const char *ping[] = { "PING" };
    CHECK(run_gives(c, 1, ping, "PONG"));
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_cancelled_before_dial(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_cancel(ctx));
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_FAILS(vk__conn_open(&conn, &ep, &params, ctx), VK_ERR_CANCELLED, "operation cancelled");
    CHECK(conn == NULL);
    vk_context_free(ctx);
    vk_config_free(cfg);
}

/* Connections the stopped victim's full accept queue holds. */
typedef struct fillers {
    int fds[16];
    int count;
} fillers;

static void fill_accept_queue(fillers *f, int port)
{
    f->count = 0;
    for (int i = 0; i < 16; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (fd < 0)
            continue;
        (void)connect(fd, (struct sockaddr *)&sa, sizeof sa);
        f->fds[f->count++] = fd;
    }
    sleep_ms(50);
}

static void close_fillers(fillers *f)
{
    for (int i = 0; i < f->count; i++)
        close(f->fds[i]);
    f->count = 0;
}

static void test_dial_timeout(void)
{
    /* A stopped server with a full accept queue: the kernel drops new SYNs,
     * so the dial itself has to give up. */
    pid_t pid = vkt_server_pid(victim);
    CHECK(kill(pid, SIGSTOP) == 0);
    fillers f;
    fill_accept_queue(&f, vkt_server_port(victim));
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(victim), &ep);
    cfg->dial_timeout_ms = 300;
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    char expected[96];
    snprintf(expected, sizeof expected, "i/o timeout: dial %s", vkt_server_address(victim));
    int64_t start = now_ms();
    CHECK_FAILS(vk__conn_open(&conn, &ep, &params, NULL), VK_ERR_TIMEOUT, expected);
    int64_t took = now_ms() - start;
    CHECK(took >= 250 && took < 3000);
    CHECK(conn == NULL);
    kill(pid, SIGCONT);
    close_fillers(&f);
    vk_config_free(cfg);
}

/* A huge SET to the stopped victim: nobody reads, so once both socket
 * buffers are full the write must give up. With a context the wait is a
 * poll(); without one, the socket's own send timeout. */
static void write_to_stopped_server(vk_context *ctx)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(victim), &ep);
    cfg->write_timeout_ms = 200;
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    pid_t pid = vkt_server_pid(victim);
    CHECK(kill(pid, SIGSTOP) == 0);
    const size_t size = 64 * 1024 * 1024;
    char *value = calloc(1, size);
    const char *set[] = { "SET", "conn:huge", value };
    const size_t lens[] = { 3, 9, size };
    redisReply *r = NULL;
    bool sent = true;
    char expected[96];
    snprintf(expected, sizeof expected, "i/o timeout: write %s", vkt_server_address(victim));
    CHECK_FAILS(vk__conn_command(conn, &r, 3, set, lens, ctx, &sent), VK_ERR_TIMEOUT, expected);
    CHECK(!sent);
    CHECK(vk__conn_is_broken(conn));
    vk__conn_close(conn);
    kill(pid, SIGCONT);
    free(value);
    vk_config_free(cfg);
}

static void test_write_timeout(void)
{
    write_to_stopped_server(NULL);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));   /* cancellable, no deadline */
    write_to_stopped_server(ctx);
    vk_context_free(ctx);
}

static void test_read_timeout_with_context(void)
{
    /* A context without a deadline: the read timeout still applies. */
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    cfg->read_timeout_ms = 150;
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk__conn_open(&conn, &ep, &params, ctx));
    if (conn == NULL) {
        vk_context_free(ctx);
        vk_config_free(cfg);
        return;
    }
    const char *blpop[] = { "BLPOP", "conn:empty-list", "5" };
    const size_t lens[] = { 5, 15, 1 };
    redisReply *r = NULL;
    bool sent = false;
    char expected[96];
    snprintf(expected, sizeof expected, "i/o timeout: read %s", vkt_server_address(plain));
    int64_t start = now_ms();
    CHECK_FAILS(vk__conn_command(conn, &r, 3, blpop, lens, ctx, &sent), VK_ERR_TIMEOUT, expected);
    int64_t took = now_ms() - start;
    CHECK(sent);
    CHECK(took >= 100 && took < 3000);
    vk__conn_close(conn);
    vk_context_free(ctx);
    vk_config_free(cfg);
}

/* ---- failures on an established connection ----------------------------------------------- */

static void test_still_usable_after_client_kill(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    CHECK(vk__conn_still_usable(conn));
    kill_client_id(plain, conn_client_id(conn));
    bool usable = true;
    for (int i = 0; i < 100 && usable; i++) {
        sleep_ms(10);
        usable = vk__conn_still_usable(conn);
    }
    CHECK(!usable);
    CHECK(vk__conn_is_broken(conn));
    vk__conn_close(conn);
    vk_config_free(cfg);
}

static void test_still_usable_with_unread_reply(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    /* A reply nobody read means the stream is out of step. */
    const char *ping[] = { "PING" };
    const size_t pinglen[] = { 4 };
    CHECK_OK(vk__conn_append(conn, 1, ping, pinglen));
    CHECK_OK(vk__conn_flush(conn, NULL));
    sleep_ms(100);
    CHECK(!vk__conn_still_usable(conn));
    vk__conn_close(conn);
    vk_config_free(cfg);
}

static void test_no_sigpipe_on_closed_connection(void)
{
    /* Default disposition: a SIGPIPE would end the test program. */
    signal(SIGPIPE, SIG_DFL);
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    kill_client_id(plain, conn_client_id(conn));
    sleep_ms(100);
    const char *ping[] = { "PING" };
    const size_t pinglen[] = { 4 };
    vk_status st = VK_OK;
    /* The first write may still be accepted (the peer answers it with a
     * reset); a later one hits EPIPE. */
    for (int i = 0; i < 5 && st == VK_OK; i++) {
        CHECK_OK(vk__conn_append(conn, 1, ping, pinglen));
        st = vk__conn_flush(conn, NULL);
        sleep_ms(20);
    }
    CHECK_EQ_INT(st, VK_ERR_IO);
    char prefix[96];
    snprintf(prefix, sizeof prefix, "connection error: write %s: ", vkt_server_address(plain));
    CHECK(strncmp(vk_last_error(), prefix, strlen(prefix)) == 0);
    CHECK(vk__conn_is_broken(conn));
    vk__conn_close(conn);
    vk_config_free(cfg);
}

static void test_server_dies_mid_read(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(victim), &ep);
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    const char *blpop[] = { "BLPOP", "conn:never", "10" };
    const size_t lens[] = { 5, 10, 2 };
    CHECK_OK(vk__conn_append(conn, 3, blpop, lens));
    CHECK_OK(vk__conn_flush(conn, NULL));
    vkt_server_kill(victim);
    redisReply *r = NULL;
    vk_status st = vk__conn_read(conn, &r, NULL);
    CHECK_EQ_INT(st, VK_ERR_IO);
    char prefix[96];
    snprintf(prefix, sizeof prefix, "connection error: read %s: ", vkt_server_address(victim));
    CHECK(strncmp(vk_last_error(), prefix, strlen(prefix)) == 0);
    CHECK(vk__conn_is_broken(conn));
    vk__conn_close(conn);
    CHECK(vkt_server_restart(victim));

    /* And the restarted server takes connections again. */
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    const char *ping[] = { "PING" };
    r = conn != NULL ? vkt_conn_run(conn, 1, ping) : NULL;
    CHECK(r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0);
    vk__reply_free(r);
    vk__conn_close(conn);
    vk_config_free(cfg);
}

static void test_abandon_closes_without_traffic(void)
{
    vk_endpoint ep;
    vk_config *cfg = prepared_config(vkt_server_address(plain), &ep);
    vk_conn_params params = { .cfg = cfg };
    vk_conn *conn = NULL;
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    long long id = conn_client_id(conn);
    vk__conn_abandon(conn);
    /* The server sees the socket close: the client disappears, and killing
     * it by id finds nobody. */
    char text[32];
    snprintf(text, sizeof text, "%lld", id);
    const char *kill_cmd[] = { "CLIENT", "KILL", "ID", text };
    char *line = NULL;
    for (int i = 0; i < 100; i++) {
        free(line);
        sleep_ms(10);
        line = vkt_server_cmd(plain, kill_cmd, 4);
        if (line != NULL && strcmp(line, ":0") == 0)
            break;
    }
    CHECK_EQ_STR(line, ":0");
    free(line);
    vk__conn_close(NULL);
    vk__conn_abandon(NULL);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    const char *const debug[] = { "enable-debug-command yes", NULL };
    const char *const backlog[] = { "tcp-backlog 1", NULL };
    plain = vkt_server_start(&(vkt_server_opts){ .extra = debug, .unix_socket = true });
    secured = vkt_server_start(&(vkt_server_opts){ .requirepass = PASSWORD });
    victim = vkt_server_start(&(vkt_server_opts){ .extra = backlog });
    if (plain == NULL || secured == NULL || victim == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        vkt_server_stop(plain);
        vkt_server_stop(secured);
        vkt_server_stop(victim);
        return 1;
    }
    const char *acl[] = { "ACL", "SETUSER", ACL_USER, "on", (">" ACL_PASSWORD), "~*", "&*",
                          "+@all", "-flushall" };
    char *line = vkt_server_cmd(secured, acl, 9);
    CHECK_EQ_STR(line, "+OK");
    free(line);

    RUN(test_tcp_ipv4);
    RUN(test_tcp_ipv6);
    RUN(test_host_name);
    RUN(test_unix_socket);
    RUN(test_refused_dial);
    RUN(test_default_user_password);
    RUN(test_wrong_password);
    RUN(test_missing_password);
    RUN(test_acl_user);
    RUN(test_reauthenticate_connection);
    RUN(test_select_db);
    RUN(test_protocol_3);
    RUN(test_binary_values);
    RUN(test_large_value);
    RUN(test_pipelined_on_one_connection);
    RUN(test_read_timeout);
    RUN(test_read_timeout_breaks_connection);
    RUN(test_read_timeout_with_context);
    RUN(test_context_deadline);
    RUN(test_cancel_blocked_read);
    RUN(test_cancel_two_calls_sharing_a_context);
    RUN(test_interrupt_check_stops_blocked_read);
    RUN(test_cancelled_before_dial);
    RUN(test_dial_timeout);
    RUN(test_write_timeout);
    RUN(test_still_usable_after_client_kill);
    RUN(test_still_usable_with_unread_reply);
    RUN(test_no_sigpipe_on_closed_connection);
    RUN(test_server_dies_mid_read);
    RUN(test_abandon_closes_without_traffic);

    vkt_server_stop(plain);
    vkt_server_stop(secured);
    vkt_server_stop(victim);
    return vkt_finish();
}
