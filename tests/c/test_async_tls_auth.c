/*
 * The event-loop client's handshake against real servers
 * (VKTEST_NEEDS_SERVER), each scenario on libuv and on libevent: a
 * password, a wrong or missing one (the blocking client's code and text),
 * an ACL user with a database; and TLS with the harness CA: many
 * operations and a large value over one TLS connection, a free with
 * operations in flight, a large reply cancelled after write, the
 * connection killed mid-stream, a wrong server name and a wrong CA refused
 * with the blocking client's texts.
 */
#include "vktest.h"
#include "servers.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <string.h>

#define PASSWORD "async-secret"
#define USER_PASSWORD "async-user-secret"

static vkt_server *secured;      /* requirepass, and an ACL user */
static vkt_server *tls_server;   /* TLS only, the harness CA */

/* The blocking client's result for cfg: its code, and its text in text. */
static vk_status blocking_new(const vk_config *cfg, char *text, size_t cap)
{
    vk_client *c = NULL;
    vk_status st = vk_client_new(&c, cfg);
    snprintf(text, cap, "%s", st == VK_OK ? "" : vk_last_error());
    vk_client_free(c);
    return st;
}

/* The first operation of an event-loop client with cfg fails as the
 * blocking client's vk_client_new does: same code, same text. */
static void check_fails_as_blocking(vkt_loop *loop, const vk_config *cfg, vk_status code)
{
    char text[512];
    CHECK_EQ_INT(blocking_new(cfg, text, sizeof text), code);
    vk_async *c = vkt_async_new(loop, cfg);
    if (c == NULL)
        return;
    vkt_op op = {0};
    if (vkt_call(loop, c, &op, 1, (const char *[]){"PING"})) {
        CHECK_EQ_INT(op.status, code);
        CHECK_EQ_STR(op.error, text);
    }
    CHECK_EQ_INT(vk_async_is_connected(c), 0);
    vkt_op_clear(&op);
    vk_async_free(c);
}

/* ---- auth ----------------------------------------------------------------------------- */

static void test_password(vkt_loop *loop)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(secured));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, PASSWORD));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vkt_op set = {0}, get = {0}, who = {0};
    CHECK_OK(vkt_submit(c, &set, NULL, 3, (const char *[]){"SET", "auth:k", "secured"}));
    CHECK_OK(vkt_submit(c, &get, NULL, 2, (const char *[]){"GET", "auth:k"}));
    CHECK_OK(vkt_submit(c, &who, NULL, 2, (const char *[]){"ACL", "WHOAMI"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &who, 10000));
    CHECK(set.status == VK_OK && vkt_reply_is(set.reply, "OK"));
    CHECK(get.status == VK_OK && vkt_reply_is(get.reply, "secured"));
    CHECK(who.status == VK_OK && vkt_reply_is(who.reply, "default"));
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    vkt_op_clear(&set);
    vkt_op_clear(&get);
    vkt_op_clear(&who);
    vk_async_free(c);
}

static void test_wrong_or_missing_password(vkt_loop *loop)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(secured));
    vk_config_set_max_retries(cfg, -1);
    CHECK_OK(vk_config_set_static_password(cfg, NULL, "wrong"));
    check_fails_as_blocking(loop, cfg, VK_ERR_AUTH);
    CHECK_OK(vk_config_set_static_password(cfg, "nobody", PASSWORD));
    check_fails_as_blocking(loop, cfg, VK_ERR_AUTH);
    vk_config_free(cfg);

    /* No password at all: whatever the blocking client says, the same. */
    cfg = vkt_async_config(vkt_server_address(secured));
    vk_config_set_max_retries(cfg, -1);
    char text[512];
    vk_status code = blocking_new(cfg, text, sizeof text);
    CHECK(code != VK_OK);
    check_fails_as_blocking(loop, cfg, code);
    vk_config_free(cfg);
}

static void test_acl_user_with_db(vkt_loop *loop)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(secured));
    CHECK_OK(vk_config_set_static_password(cfg, "asyncuser", USER_PASSWORD));
    CHECK_OK(vk_config_set_db(cfg, 3));
    vk_async *c = vkt_async_new(loop, cfg);
    if (c == NULL) {
        vk_config_free(cfg);
        return;
    }
    vkt_op del = {0}, set = {0}, who = {0}, info = {0};
    CHECK_OK(vkt_submit(c, &del, NULL, 2, (const char *[]){"DEL", "auth:db"}));
    CHECK_OK(vkt_submit(c, &set, NULL, 3, (const char *[]){"SET", "auth:db", "in db 3"}));
    CHECK_OK(vkt_submit(c, &who, NULL, 2, (const char *[]){"ACL", "WHOAMI"}));
    CHECK_OK(vkt_submit(c, &info, NULL, 2, (const char *[]){"CLIENT", "INFO"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &info, 10000));
    CHECK(set.status == VK_OK && vkt_reply_is(set.reply, "OK"));
    CHECK(who.status == VK_OK && vkt_reply_is(who.reply, "asyncuser"));
    size_t len = 0;
    const char *s = vk_reply_get_string(info.reply, &len);
    CHECK(s != NULL && memmem(s, len, " db=3 ", 6) != NULL);
    CHECK(s != NULL && memmem(s, len, " user=asyncuser ", 16) != NULL);
    vkt_op_clear(&del);
    vkt_op_clear(&set);
    vkt_op_clear(&who);
    vkt_op_clear(&info);
    vk_async_free(c);

    /* Seen from blocking clients: in db 3, not in db 0. */
    vk_client *b3 = NULL, *b0 = NULL;
    CHECK_OK(vk_client_new(&b3, cfg));
    CHECK_OK(vk_config_set_db(cfg, 0));
    CHECK_OK(vk_client_new(&b0, cfg));
    vk_config_free(cfg);
    vk_reply *r = NULL;
    const char *get[] = {"GET", "auth:db"};
    if (b3 != NULL && vkt_blocking_run(b3, &r, 2, get) == VK_OK)
        CHECK(vkt_reply_is(r, "in db 3"));
    vk_reply_free(r);
    r = NULL;
    if (b0 != NULL && vkt_blocking_run(b0, &r, 2, get) == VK_OK)
        CHECK(vk_reply_get_type(r) == VK_REPLY_NIL);
    vk_reply_free(r);
    vk_client_free(b3);
    vk_client_free(b0);
}

/* ---- TLS ------------------------------------------------------------------------------ */

static vk_config *tls_config(void)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(tls_server));
    CHECK_OK(vk_config_set_tls(cfg, vkt_ca_base64()));
    return cfg;
}

typedef struct echo_op {
    char want[24];
    int calls;
    bool matched;
    int *done;
} echo_op;

static void echo_fn(void *userdata, vk_status status, vk_reply *reply)
{
    echo_op *o = userdata;
    vkt_note_completion();
    o->calls++;
    o->matched = status == VK_OK && vkt_reply_is(reply, o->want);
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

static void test_tls_commands(vkt_loop *loop)
{
    vk_config *cfg = tls_config();
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    /* A large value, then a thousand small operations, over one TLS
     * connection. */
    const size_t size = 1u << 20;
    char *value = malloc(size);
    CHECK(value != NULL);
    if (value == NULL) {
        vk_async_free(c);
        return;
    }
    for (size_t i = 0; i < size; i++)
        value[i] = (char)(i * 31 + (i >> 10));
    vkt_op set = {0}, get = {0};
    const char *set_argv[] = {"SET", "tls:big", value};
    const size_t set_lens[] = {3, 7, size};
    CHECK_OK(vkt_submitv(c, vkt_op_fn, &set, NULL, 3, set_argv, set_lens));
    CHECK_OK(vkt_submit(c, &get, NULL, 2, (const char *[]){"GET", "tls:big"}));
    enum { N = 1000 };
    static echo_op ops[N];
    memset(ops, 0, sizeof ops);
    int done = 0;
    for (int i = 0; i < N; i++) {
        ops[i].done = &done;
        snprintf(ops[i].want, sizeof ops[i].want, "tls-%d", i);
        const char *argv[] = {"ECHO", ops[i].want};
        const size_t lens[] = {4, strlen(ops[i].want)};
        CHECK_OK(vkt_submitv(c, echo_fn, &ops[i], NULL, 2, argv, lens));
    }
    target t = {&done, N};
    CHECK(vkt_loop_run_until(loop, target_reached, &t, 20000));
    CHECK(set.status == VK_OK && vkt_reply_is(set.reply, "OK"));
    size_t len = 0;
    const char *got = vk_reply_get_string(get.reply, &len);
    CHECK(get.status == VK_OK && got != NULL && len == size && memcmp(got, value, size) == 0);
    int wrong = 0;
    for (int i = 0; i < N; i++)
        if (ops[i].calls != 1 || !ops[i].matched)
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    vkt_op_clear(&set);
    vkt_op_clear(&get);
    free(value);

    /* Freed with operations in flight over TLS: each is cancelled once. */
    enum { PENDING = 100 };
    vkt_op pending[PENDING];
    memset(pending, 0, sizeof pending);
    for (int i = 0; i < PENDING; i++)
        CHECK_OK(vkt_submit(c, &pending[i], NULL, 3, (const char *[]){"BLPOP", "tls:none", "1"}));
    vkt_loop_run_for(loop, 20);
    vk_async_free(c);
    wrong = 0;
    for (int i = 0; i < PENDING; i++)
        if (pending[i].calls != 1 || pending[i].status != VK_ERR_CANCELLED) {
            if (wrong++ == 0)
                fprintf(stderr, "first wrong: calls %d status %d (%s)\n", pending[i].calls,
                        (int)pending[i].status, pending[i].error);
        }
    CHECK_EQ_INT(wrong, 0);
}

/* Over TLS: a large reply cancelled after its request was written is read
 * and dropped; then the connection is killed with operations in flight,
 * and each completes once, with its own reply or a connection error. */
static void test_tls_cancel_and_kill(vkt_loop *loop)
{
    vk_config *cfg = tls_config();
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    const size_t size = 4u << 20;
    char *value = malloc(size);
    CHECK(value != NULL);
    if (value == NULL) {
        vk_async_free(c);
        return;
    }
    memset(value, 'x', size);
    vkt_op set = {0}, big = {0}, small = {0};
    const char *set_argv[] = {"SET", "tls:big4", value};
    const size_t set_lens[] = {3, 8, size};
    CHECK_OK(vkt_submitv(c, vkt_op_fn, &set, NULL, 3, set_argv, set_lens));
    free(value);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &set, 20000));
    CHECK(set.status == VK_OK && vkt_reply_is(set.reply, "OK"));
    /* The server holds the GET while paused: written, not yet answered. */
    char pause_ms[32];
    snprintf(pause_ms, sizeof pause_ms, "%lld", vkt_scaled_ms(300));
    const char *pause[] = {"CLIENT", "PAUSE", pause_ms, "ALL"};
    char *line = vkt_server_cmd(tls_server, pause, 4);
    CHECK_EQ_STR(line, "+OK");
    free(line);
    uint64_t id = 0;
    CHECK_OK(vkt_submit(c, &big, &id, 2, (const char *[]){"GET", "tls:big4"}));
    CHECK_OK(vkt_submit(c, &small, NULL, 2, (const char *[]){"ECHO", "after the big one"}));
    vkt_loop_run_for(loop, 100);
    CHECK_EQ_INT(big.calls, 0);
    CHECK_OK(vk_async_cancel(c, id));
    CHECK(big.calls == 1 && big.status == VK_ERR_CANCELLED);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &small, 20000));
    CHECK(small.status == VK_OK && vkt_reply_is(small.reply, "after the big one"));
    vkt_op_clear(&set);
    vkt_op_clear(&big);
    vkt_op_clear(&small);

    enum { N = 300 };
    static echo_op ops[N];
    memset(ops, 0, sizeof ops);
    int done = 0;
    for (int i = 0; i < N; i++) {
        ops[i].done = &done;
        snprintf(ops[i].want, sizeof ops[i].want, "kill-%d", i);
        if (i == N / 2)
            CHECK_OK(vkt_submit(c, &big, NULL, 3, (const char *[]){"BLPOP", "tls:none", "5"}));
        const char *argv[] = {"ECHO", ops[i].want};
        const size_t lens[] = {4, strlen(ops[i].want)};
        CHECK_OK(vkt_submitv(c, echo_fn, &ops[i], NULL, 2, argv, lens));
    }
    target half = {&done, N / 2};
    CHECK(vkt_loop_run_until(loop, target_reached, &half, 10000));
    vkt_loop_run_for(loop, 50);
    const char *kill[] = {"CLIENT", "KILL", "TYPE", "normal"};
    line = vkt_server_cmd(tls_server, kill, 4);
    CHECK(line != NULL && line[0] == ':' && atoi(line + 1) >= 1);
    free(line);
    target all = {&done, N};
    CHECK(vkt_loop_run_until(loop, target_reached, &all, 20000));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &big, 10000));
    CHECK_EQ_INT(big.status, VK_ERR_IO);
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        if (ops[i].calls != 1)
            wrong++;
        else if (i < N / 2 && !ops[i].matched)
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    vkt_op_clear(&big);
    /* And the client goes on over a new TLS connection. */
    vkt_op again = {0};
    if (vkt_call(loop, c, &again, 2, (const char *[]){"ECHO", "again"}))
        CHECK(again.status == VK_OK && vkt_reply_is(again.reply, "again"));
    vkt_op_clear(&again);
    vk_async_free(c);
}

static void test_tls_refusals(vkt_loop *loop)
{
    vk_config *cfg = tls_config();
    vk_config_set_max_retries(cfg, -1);
    CHECK_OK(vk_config_set_tls_server_name(cfg, "wrong.example"));
    check_fails_as_blocking(loop, cfg, VK_ERR_TLS);
    vk_config_free(cfg);

    cfg = vkt_async_config(vkt_server_address(tls_server));
    vk_config_set_max_retries(cfg, -1);
    CHECK_OK(vk_config_set_tls(cfg, vkt_other_ca_base64()));
    check_fails_as_blocking(loop, cfg, VK_ERR_TLS);
    vk_config_free(cfg);

    /* The right name given explicitly works. */
    cfg = tls_config();
    CHECK_OK(vk_config_set_tls_server_name(cfg, "localhost"));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vkt_op op = {0};
    if (vkt_call(loop, c, &op, 2, (const char *[]){"ECHO", "named"}))
        CHECK(op.status == VK_OK && vkt_reply_is(op.reply, "named"));
    vkt_op_clear(&op);
    vk_async_free(c);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    if (vkt_ca_base64() == NULL) {
        fprintf(stderr, "cannot generate the test certificates\n");
        return 1;
    }
    secured = vkt_server_start(&(vkt_server_opts){.requirepass = PASSWORD});
    tls_server = vkt_server_start(&(vkt_server_opts){.tls = true});
    if (secured == NULL || tls_server == NULL) {
        vkt_server_stop(secured);
        vkt_server_stop(tls_server);
        return 1;
    }
    const char *acl[] = {"ACL", "SETUSER", "asyncuser", "on", (">" USER_PASSWORD), "~*", "&*",
                         "+@all"};
    char *line = vkt_server_cmd(secured, acl, 8);
    CHECK_EQ_STR(line, "+OK");
    free(line);

    RUN_ON_LOOPS(test_password);
    RUN_ON_LOOPS(test_wrong_or_missing_password);
    RUN_ON_LOOPS(test_acl_user_with_db);
    RUN_ON_LOOPS(test_tls_commands);
    RUN_ON_LOOPS(test_tls_cancel_and_kill);
    RUN_ON_LOOPS(test_tls_refusals);
    vkt_server_stop(secured);
    vkt_server_stop(tls_server);
    return vkt_finish();
}
