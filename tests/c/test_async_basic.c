/*
 * The event-loop client against a real server (VKTEST_NEEDS_SERVER), each
 * scenario on libuv and on libevent: commands and replies (binary safe,
 * error replies, ownership, ids, pending counts, no I/O before the first
 * operation), the config validation and argument checks of the blocking
 * client with the same texts, Sentinel and Cluster configs accepted
 * without I/O (a Cluster whose seeds are all unreachable failing the first
 * command with the blocking client's code and text), NULL handles,
 * refused stateful commands, pipelines (per-command replies, a
 * transaction kept whole among other traffic, refusals, reuse, one far
 * beyond the in-flight bound, cancelled before being written, and one
 * holding a blocking command cancelled on its lane),
 * a host name and a unix socket as the address, and protocol 3.
 */
#include "vktest.h"
#include "servers.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <string.h>

static vkt_server *server;
static vk_client *checker;   /* a blocking client, to look at the server */

/* ---- the blocking side, for comparisons ---------------------------------- */

/* True when INFO commandstats has a line for the command (lower case,
 * e.g. "select" or "client|reply"): the server was sent it. */
static bool server_saw(const char *name)
{
    const char *info[] = {"INFO", "commandstats"};
    vk_reply *r = NULL;
    CHECK_OK(vkt_blocking_run(checker, &r, 2, info));
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    char line[64];
    snprintf(line, sizeof line, "cmdstat_%s:", name);
    bool seen = s != NULL && memmem(s, len, line, strlen(line)) != NULL;
    vk_reply_free(r);
    return seen;
}

/* Turns the loop until the server has a client blocked (a BLPOP was
 * written and waits). */
static bool server_has_blocked_client(void *loop)
{
    vkt_loop_run_for(loop, 5);
    const char *info[] = {"INFO", "clients"};
    vk_reply *r = NULL;
    long long n = 0;
    if (vkt_blocking_run(checker, &r, 2, info) == VK_OK) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        const char *at = s != NULL ? memmem(s, len, "blocked_clients:", 16) : NULL;
        if (at != NULL)
            n = atoll(at + 16);
    }
    vk_reply_free(r);
    return n >= 1;
}

static bool server_has_no_blocked_client(void *loop)
{
    return !server_has_blocked_client(loop);
}

static bool wait_blocked(vkt_loop *loop)
{
    return vkt_loop_run_until(loop, server_has_blocked_client, loop, 5000);
}

static vk_async *new_client(vkt_loop *loop)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    return c;
}

/* A completion that must never run. */
static int unexpected_completions;
static void unexpected_fn(void *userdata, vk_status status, vk_reply *reply)
{
    (void)userdata;
    (void)status;
    unexpected_completions++;
    vk_reply_free(reply);
}

/* ---- commands and replies ------------------------------------------------------ */

/* An adapter around the loop's that records what the client asks of it:
 * descriptors watched and released, the timer created and released. */
typedef struct counting {
    vk_loop_adapter real;
    int watch_calls;
    int opened;        /* a slot filled */
    int released;      /* a slot given back (events 0) */
    int timers_made;
    int timers_released;
    int bad_release;   /* release != 0 with ms >= 0 */
} counting;

static int counting_watch(void *data, vk_async_io *io, int fd, int events, void **slot)
{
    counting *k = data;
    bool had = *slot != NULL;
    k->watch_calls++;
    int rc = k->real.watch(k->real.data, io, fd, events, slot);
    if (!had && *slot != NULL)
        k->opened++;
    if (events == 0 && had && *slot == NULL)
        k->released++;
    return rc;
}

static int counting_timer(void *data, vk_async *client, int64_t ms, int release, void **slot)
{
    counting *k = data;
    bool had = *slot != NULL;
    if (release && ms >= 0)
        k->bad_release++;
    int rc = k->real.timer(k->real.data, client, ms, release, slot);
    if (!had && *slot != NULL)
        k->timers_made++;
    if (release && had && *slot == NULL)
        k->timers_released++;
    return rc;
}

static vk_loop_adapter counting_adapter(counting *k, vkt_loop *loop)
{
    memset(k, 0, sizeof *k);
    k->real = *vkt_loop_adapter(loop);
    vk_loop_adapter a = {VK_LOOP_ADAPTER_VERSION, k, counting_watch, counting_timer};
    return a;
}

static void test_commands_and_replies(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "basic:k", "basic:missing"});
    counting k;
    vk_loop_adapter adapter = counting_adapter(&k, loop);
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    vk_async *c = NULL;
    CHECK_OK(vk_async_new(&c, cfg, &adapter));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    /* No I/O before the first operation. */
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(k.watch_calls, 0);
    CHECK_EQ_INT(vk_async_is_connected(c), 0);
    CHECK_EQ_INT(vk_async_pending(c), 0);

    vkt_op set = {0}, get = {0}, incr = {0}, missing = {0}, echo = {0};
    uint64_t ids[5] = {0};
    const char *set_argv[] = {"SET", "basic:k", "hello"};
    const char *get_argv[] = {"GET", "basic:k"};
    const char *incr_argv[] = {"INCR", "basic:k"};
    const char *missing_argv[] = {"GET", "basic:missing"};
    const char *echo_argv[] = {"ECHO", ""};
    CHECK_OK(vkt_submit(c, &set, &ids[0], 3, set_argv));
    CHECK_EQ_INT(vk_async_pending(c), 1);
    CHECK_OK(vkt_submit(c, &get, &ids[1], 2, get_argv));
    CHECK_OK(vkt_submit(c, &incr, &ids[2], 2, incr_argv));
    CHECK_OK(vkt_submit(c, &missing, &ids[3], 2, missing_argv));
    CHECK_OK(vkt_submit(c, &echo, &ids[4], 2, echo_argv));   /* an empty argument */
    CHECK_EQ_INT(vk_async_pending(c), 5);
    CHECK_EQ_INT(vk_async_is_connected(c), 0);
    for (int i = 0; i < 5; i++) {
        CHECK(ids[i] != 0);
        for (int j = 0; j < i; j++)
            VKT_CHECK_(ids[i] != ids[j], "ids %d and %d are both %llu", i, j,
                       (unsigned long long)ids[i]);
    }
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &echo, 10000));
    CHECK_EQ_INT(vk_async_pending(c), 0);
    CHECK_EQ_INT(vk_async_is_connected(c), 1);
    CHECK(k.opened >= 1);

    CHECK_EQ_INT(set.status, VK_OK);
    CHECK(vk_reply_get_type(set.reply) == VK_REPLY_STATUS && vkt_reply_is(set.reply, "OK"));
    CHECK(vk_reply_get_type(get.reply) == VK_REPLY_STRING && vkt_reply_is(get.reply, "hello"));
    /* An error reply is a reply. */
    CHECK_EQ_INT(incr.status, VK_OK);
    CHECK(vkt_reply_error_starts(incr.reply, "ERR "));
    CHECK(vk_reply_get_type(missing.reply) == VK_REPLY_NIL);
    CHECK(vk_reply_get_type(echo.reply) == VK_REPLY_STRING && vkt_reply_is(echo.reply, ""));
    /* In order of submission. */
    CHECK(set.seq < get.seq && get.seq < incr.seq && incr.seq < missing.seq &&
          missing.seq < echo.seq);

    /* Binary safe: NUL, CR LF and every byte value in key and value. */
    char key[] = "basic:bin\0key";
    char value[300];
    for (int i = 0; i < 256; i++)
        value[i] = (char)i;
    memcpy(value + 256, "\r\n\0\r\n$3\r\n", 10);
    size_t value_len = 266;
    const char *bset[] = {"SET", key, value};
    const size_t bset_len[] = {3, sizeof key - 1, value_len};
    const char *bget[] = {"GET", key};
    const size_t bget_len[] = {3, sizeof key - 1};
    const char *bget_prefix[] = {"GET", "basic:bin"};   /* the key up to its NUL */
    const size_t bget_prefix_len[] = {3, 9};
    vkt_op bs = {0}, bg = {0}, bp = {0};
    uint64_t more[3] = {0};
    CHECK_OK(vkt_submitv(c, vkt_op_fn, &bs, &more[0], 3, bset, bset_len));
    CHECK_OK(vkt_submitv(c, vkt_op_fn, &bg, &more[1], 2, bget, bget_len));
    CHECK_OK(vkt_submitv(c, vkt_op_fn, &bp, &more[2], 2, bget_prefix, bget_prefix_len));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &bp, 10000));
    CHECK(vkt_reply_is(bs.reply, "OK"));
    size_t len = 0;
    const char *got = vk_reply_get_string(bg.reply, &len);
    CHECK(got != NULL && len == value_len && memcmp(got, value, value_len) == 0);
    CHECK(vk_reply_get_type(bp.reply) == VK_REPLY_NIL);
    /* The blocking client reads the same bytes. */
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, checker, NULL, 2, bget, bget_len));
    got = vk_reply_get_string(r, &len);
    CHECK(got != NULL && len == value_len && memcmp(got, value, value_len) == 0);
    vk_reply_free(r);
    /* Ids are never reused. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++)
            CHECK(more[i] != 0 && more[i] != ids[j]);
    CHECK(more[0] != more[1] && more[1] != more[2] && more[0] != more[2]);

    /* The replies belong to the completions: they outlive the client. And
     * the client gave back whatever it had the loop watch. */
    vk_async_free(c);
    CHECK_EQ_INT(k.released, k.opened);
    CHECK_EQ_INT(k.timers_released, k.timers_made);
    CHECK_EQ_INT(k.bad_release, 0);
    CHECK(vkt_reply_is(get.reply, "hello"));
    vkt_op *all[] = {&set, &get, &incr, &missing, &echo, &bs, &bg, &bp};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK_EQ_INT(all[i]->calls, 1);
        vkt_op_clear(all[i]);
    }
}

/* A completion that releases its reply at once, as most callers do. */
typedef struct freeing {
    int calls;
    int strings;
} freeing;

static void free_at_once(void *userdata, vk_status status, vk_reply *reply)
{
    freeing *f = userdata;
    vkt_note_completion();
    f->calls++;
    if (status == VK_OK && vk_reply_get_type(reply) == VK_REPLY_STRING)
        f->strings++;
    vk_reply_free(reply);
}

static bool all_freed(void *arg)
{
    return ((freeing *)arg)->calls == 100;
}

static void test_completion_frees_the_reply(vkt_loop *loop)
{
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    freeing f = {0};
    const char *echo[] = {"ECHO", "owned by the completion"};
    const size_t lens[] = {4, 23};
    for (int i = 0; i < 100; i++)
        CHECK_OK(vkt_submitv(c, free_at_once, &f, NULL, 2, echo, lens));   /* id optional */
    CHECK_EQ_INT(vk_async_pending(c), 100);
    CHECK(vkt_loop_run_until(loop, all_freed, &f, 10000));
    CHECK_EQ_INT(f.strings, 100);
    CHECK_EQ_INT(vk_async_pending(c), 0);
    vk_async_free(c);
    CHECK_EQ_INT(f.calls, 100);
}

/* ---- config validation, arguments and NULL handles ------------------------------ */

typedef void (*config_maker)(vk_config *cfg);

static void no_topology(vk_config *cfg)
{
    (void)cfg;
}
static void blank_address(vk_config *cfg)
{
    vk_config_set_standalone(cfg, "   ");
}
static void two_topologies(vk_config *cfg)
{
    vk_config_set_standalone(cfg, "127.0.0.1:1");
    vk_config_set_cluster(cfg);
    vk_config_add_cluster_address(cfg, "127.0.0.1:2");
}
static void blank_ca(vk_config *cfg)
{
    vk_config_set_standalone(cfg, "127.0.0.1:1");
    vk_config_set_tls(cfg, "  ");
}
static void iam_without_tls(vk_config *cfg)
{
    vk_config_set_standalone(cfg, "127.0.0.1:1");
    vk_config_set_gcp_iam(cfg, "e30=", "sa@example.iam.gserviceaccount.com");
}
static void iam_bad_refresh(vk_config *cfg)
{
    vk_config_set_standalone(cfg, "127.0.0.1:1");
    vk_config_set_tls(cfg, vkt_ca_base64());
    vk_config_set_gcp_iam(cfg, "e30=", "sa@example.iam.gserviceaccount.com");
    vk_config_set_gcp_iam_token_lifetime_ms(cfg, 60000);
    vk_config_set_gcp_iam_refresh_every_ms(cfg, 60000);
}
static void sentinel_without_addresses(vk_config *cfg)
{
    vk_config_set_sentinel(cfg, "mymaster");
}
static void cluster_without_addresses(vk_config *cfg)
{
    vk_config_set_cluster(cfg);
}

static void test_config_validation(vkt_loop *loop)
{
    const config_maker makers[] = {no_topology, blank_address, two_topologies, blank_ca,
                                   iam_without_tls, iam_bad_refresh,
                                   sentinel_without_addresses, cluster_without_addresses};
    for (size_t i = 0; i < sizeof makers / sizeof makers[0]; i++) {
        vk_config *cfg = NULL;
        CHECK_OK(vk_config_new(&cfg));
        makers[i](cfg);
        vk_client *b = NULL;
        vk_status blocking = vk_client_new(&b, cfg);
        char text[512];
        snprintf(text, sizeof text, "%s", vk_last_error());
        vk_async *a = (vk_async *)&b;
        vk_status st = vk_async_new(&a, cfg, vkt_loop_adapter(loop));
        CHECK_EQ_INT(blocking, VK_ERR_INVALID_CONFIG);
        CHECK_EQ_INT(st, VK_ERR_INVALID_CONFIG);
        CHECK_EQ_STR(vk_last_error(), text);
        CHECK(strncmp(text, "invalid redis config: ", 22) == 0);
        CHECK(a == NULL);
        vk_client_free(b);
        vk_config_free(cfg);
    }
    CHECK_FAILS(vk_async_new(NULL, NULL, vkt_loop_adapter(loop)), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");

    /* Valid Sentinel and Cluster configs are served (test_async_sentinel,
     * test_async_cluster); nothing is dialled before the first command.
     * Nothing listens at these addresses. */
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_sentinel(cfg, "mymaster"));
    CHECK_OK(vk_config_add_sentinel_address(cfg, "127.0.0.1:1"));
    CHECK_OK(vk_config_validate(cfg));
    vk_async *a = NULL;
    CHECK_OK(vk_async_new(&a, cfg, vkt_loop_adapter(loop)));
    CHECK(a != NULL);
    CHECK(!vk_async_is_connected(a));
    vk_async_free(a);
    vk_config_free(cfg);
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:1"));
    CHECK_OK(vk_config_validate(cfg));
    vk_client *refused = NULL;
    CHECK_FAILS(vk_client_new(&refused, cfg), VK_ERR_IO,
                "redis cluster: all nodes are unreachable: connection error: dial "
                "127.0.0.1:1: Connection refused");
    vk_client_free(refused);
    a = NULL;
    CHECK_OK(vk_async_new(&a, cfg, vkt_loop_adapter(loop)));
    CHECK(a != NULL);
    if (a != NULL) {
        CHECK(!vk_async_is_connected(a));
        CHECK_EQ_INT(vk_async_pending(a), 0);
        vkt_op op = {0};
        CHECK(vkt_call(loop, a, &op, 1, (const char *[]){"PING"}));
        CHECK_EQ_INT(op.status, VK_ERR_IO);
        CHECK_EQ_STR(op.error, "redis cluster: all nodes are unreachable: connection error: "
                               "dial 127.0.0.1:1: Connection refused");
        CHECK(!vk_async_is_connected(a));
        vkt_op_clear(&op);
    }
    vk_async_free(a);
    vk_config_free(cfg);

    /* A NULL config: the blocking client's code and text. */
    vk_client *b = NULL;
    vk_status blocking = vk_client_new(&b, NULL);
    char text[512];
    snprintf(text, sizeof text, "%s", vk_last_error());
    a = (vk_async *)&b;
    CHECK_EQ_INT(vk_async_new(&a, NULL, vkt_loop_adapter(loop)), blocking);
    CHECK_EQ_STR(vk_last_error(), text);
    CHECK(a == NULL);

    /* The adapter: required, of a known version, with both functions. */
    cfg = vkt_async_config(vkt_server_address(server));
    vk_loop_adapter bad[5];
    for (int i = 0; i < 5; i++)
        bad[i] = *vkt_loop_adapter(loop);
    bad[1].version = 0;
    bad[2].version = VK_LOOP_ADAPTER_VERSION + 1;
    bad[3].watch = NULL;
    bad[4].timer = NULL;
    for (int i = 0; i < 5; i++) {
        a = (vk_async *)&cfg;
        VKT_CHECK_(vk_async_new(&a, cfg, i == 0 ? NULL : &bad[i]) == VK_ERR_INVALID_ARGUMENT &&
                       a == NULL,
                   "adapter case %d accepted", i);
    }

    /* The config is copied: changing or freeing it later changes nothing. */
    vk_async *c = vkt_async_new(loop, cfg);
    CHECK_OK(vk_config_set_standalone(cfg, "127.0.0.1:1"));
    vk_config_free(cfg);
    vkt_op op = {0};
    const char *ping[] = {"PING"};
    if (c != NULL && vkt_call(loop, c, &op, 1, ping))
        CHECK(op.status == VK_OK && vkt_reply_is(op.reply, "PONG"));
    vkt_op_clear(&op);
    vk_async_free(c);
}

static void test_null_handles(vkt_loop *loop)
{
    const char *nil = "redis client is nil";
    const char *ping[] = {"PING"};
    const size_t len[] = {4};
    uint64_t id = 7;
    unexpected_completions = 0;
    CHECK_FAILS(vk_async_command(NULL, 1, ping, len, unexpected_fn, NULL, &id),
                VK_ERR_NIL_CLIENT, nil);
    CHECK_FAILS(vk_async_cancel(NULL, 1), VK_ERR_NIL_CLIENT, nil);
    vk_pipeline *p = (vk_pipeline *)&id;
    CHECK_FAILS(vk_async_pipeline_new(&p, NULL), VK_ERR_NIL_CLIENT, nil);
    CHECK(p == NULL);
    CHECK_FAILS(vk_async_pipeline_exec(NULL, unexpected_fn, NULL, &id),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: pipeline is nil");
    CHECK_EQ_INT(vk_async_pending(NULL), 0);
    CHECK_EQ_INT(vk_async_is_connected(NULL), 0);
    CHECK_EQ_INT(vk_async_poll_events(NULL, 0), -1);
    CHECK_EQ_INT(vk_hosted_poll_events(NULL, 0), -1);
    vk_snapshot *snap = (vk_snapshot *)&id;
    CHECK_FAILS(vk_async_snapshot(&snap, NULL), VK_ERR_NIL_CLIENT, nil);
    CHECK(snap == NULL);
    vk_async_free(NULL);
    vk_async_handle_timer(NULL);
    vk_async_handle_io(NULL, VK_EV_READ | VK_EV_WRITE);

    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    CHECK_FAILS(vk_async_pipeline_new(NULL, c), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    CHECK_FAILS(vk_async_snapshot(NULL, c), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    vkt_loop_run_for(loop, 20);
    CHECK_EQ_INT(unexpected_completions, 0);
    vk_async_free(c);
}

/* Invalid argc/argv: refused at once, with the blocking client's code and
 * text, and no completion. */
static void test_invalid_arguments(vkt_loop *loop)
{
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    const char *argv[] = {"SET", "args:k", "v"};
    const size_t lens[] = {3, 6, 1};
    const char *holey[] = {"SET", NULL, "v"};
    const size_t holey_lens[] = {3, 6, 1};
    struct {
        int argc;
        const char *const *argv;
        const size_t *lens;
    } cases[] = {
        {0, argv, lens}, {-1, argv, lens}, {3, NULL, lens}, {3, argv, NULL}, {3, holey, holey_lens},
    };
    unexpected_completions = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vk_reply *r = NULL;
        vk_status blocking =
            vk_client_command(&r, checker, NULL, cases[i].argc, cases[i].argv, cases[i].lens);
        char text[512];
        snprintf(text, sizeof text, "%s", vk_last_error());
        CHECK_EQ_INT(blocking, VK_ERR_INVALID_ARGUMENT);
        uint64_t id = 0;
        vk_status st = vkt_submitv(c, unexpected_fn, NULL, &id, cases[i].argc, cases[i].argv,
                                   cases[i].lens);
        CHECK_EQ_INT(st, VK_ERR_INVALID_ARGUMENT);
        CHECK_EQ_STR(vk_last_error(), text);
        CHECK_EQ_INT(vk_async_pending(c), 0);
    }
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(unexpected_completions, 0);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"EXISTS", "args:k"}), "0");
    /* An empty argument is an argument (NULL with length 0). */
    const char *empty[] = {"ECHO", NULL};
    const size_t empty_lens[] = {4, 0};
    vkt_op op = {0};
    CHECK_OK(vkt_submitv(c, vkt_op_fn, &op, NULL, 2, empty, empty_lens));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK(op.status == VK_OK && vkt_reply_is(op.reply, ""));
    vkt_op_clear(&op);
    vk_async_free(c);
}

/* ---- refused stateful commands -------------------------------------------------- */

typedef struct refused {
    int argc;
    const char *argv[4];
    const char *stat;   /* its INFO commandstats name */
} refused;

static const refused every_refused[] = {
    {2, {"SELECT", "1"}, "select"},
    {1, {"MULTI"}, "multi"},
    {1, {"EXEC"}, "exec"},
    {1, {"DISCARD"}, "discard"},
    {2, {"WATCH", "k"}, "watch"},
    {1, {"UNWATCH"}, "unwatch"},
    {2, {"SUBSCRIBE", "ch"}, "subscribe"},
    {2, {"psubscribe", "ch*"}, "psubscribe"},
    {2, {"SSUBSCRIBE", "ch"}, "ssubscribe"},
    {1, {"UNSUBSCRIBE"}, "unsubscribe"},
    {1, {"PUNSUBSCRIBE"}, "punsubscribe"},
    {1, {"SUNSUBSCRIBE"}, "sunsubscribe"},
    {1, {"MONITOR"}, "monitor"},
    {1, {"RESET"}, "reset"},
    {1, {"QUIT"}, "quit"},
    {2, {"HELLO", "3"}, "hello"},
    {2, {"AUTH", "secret"}, "auth"},
    {1, {"READONLY"}, "readonly"},
    {1, {"READWRITE"}, "readwrite"},
    {1, {"ASKING"}, "asking"},
    {1, {"SYNC"}, "sync"},
    {3, {"PSYNC", "?", "-1"}, "psync"},
    {3, {"REPLCONF", "listening-port", "1"}, "replconf"},
    {3, {"CLIENT", "REPLY", "OFF"}, "client|reply"},
    {3, {"client", "tracking", "on"}, "client|tracking"},
    {3, {"CLIENT", "CACHING", "YES"}, "client|caching"},
    {3, {"CLIENT", "SETNAME", "mine"}, "client|setname"},
    {4, {"CLIENT", "SETINFO", "LIB-NAME", "mine"}, "client|setinfo"},
    {3, {"CLIENT", "NO-EVICT", "on"}, "client|no-evict"},
    {3, {"CLIENT", "NO-TOUCH", "on"}, "client|no-touch"},
};
#define REFUSED_COUNT (sizeof every_refused / sizeof every_refused[0])

static void test_refused_commands(vkt_loop *loop)
{
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vkt_op ping = {0};
    const char *ping_argv[] = {"PING"};
    vkt_call(loop, c, &ping, 1, ping_argv);   /* connected: a refusal drops nothing */
    vkt_op_clear(&ping);
    vkt_blocking_do(checker, 2, (const char *[]){"CONFIG", "RESETSTAT"});
    unexpected_completions = 0;
    for (size_t i = 0; i < REFUSED_COUNT; i++) {
        const refused *t = &every_refused[i];
        size_t lens[4];
        for (int j = 0; j < t->argc; j++)
            lens[j] = strlen(t->argv[j]);
        vk_reply *r = NULL;
        vk_status blocking = vk_client_command(&r, checker, NULL, t->argc, t->argv, lens);
        char text[512];
        snprintf(text, sizeof text, "%s", vk_last_error());
        CHECK_EQ_INT(blocking, VK_ERR_COMMAND_NOT_ALLOWED);
        uint64_t id = 0;
        vk_status st = vkt_submitv(c, unexpected_fn, NULL, &id, t->argc, t->argv, lens);
        VKT_CHECK_(st == VK_ERR_COMMAND_NOT_ALLOWED && strcmp(vk_last_error(), text) == 0,
                   "%s -> %d \"%s\", want \"%s\"", t->argv[0], (int)st, vk_last_error(), text);
        CHECK_EQ_INT(vk_async_pending(c), 0);
    }
    /* The client goes on, on the same connection. */
    const char *echo[] = {"ECHO", "after refusals"};
    vkt_op op = {0};
    if (vkt_call(loop, c, &op, 2, echo))
        CHECK(vkt_reply_is(op.reply, "after refusals"));
    vkt_op_clear(&op);
    CHECK_EQ_INT(unexpected_completions, 0);
    CHECK(server_saw("echo"));
    for (size_t i = 0; i < REFUSED_COUNT; i++)
        VKT_CHECK_(!server_saw(every_refused[i].stat), "%s reached the server",
                   every_refused[i].stat);
    vk_async_free(c);
}

/* ---- pipelines ------------------------------------------------------------------------ */

static vk_status append(vk_pipeline *p, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vk_pipeline_append(p, argc, argv, lens);
}

static const vk_reply *element(const vk_reply *r, size_t i)
{
    return vk_reply_get_element(r, i);
}

static void test_pipeline_replies_and_reuse(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "pipe:k", "pipe:none"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    if (p == NULL) {
        vk_async_free(c);
        return;
    }
    CHECK_OK(append(p, 3, (const char *[]){"SET", "pipe:k", "v1"}));
    CHECK_OK(append(p, 2, (const char *[]){"GET", "pipe:k"}));
    CHECK_OK(append(p, 2, (const char *[]){"INCR", "pipe:k"}));
    CHECK_OK(append(p, 2, (const char *[]){"GET", "pipe:none"}));
    CHECK_EQ_INT(vk_pipeline_length(p), 4);
    vkt_op first = {0}, second = {0}, empty = {0};
    uint64_t id1 = 0, id2 = 0, id3 = 0;
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &first, &id1));
    /* Emptied, and usable again at once. */
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    CHECK_OK(append(p, 2, (const char *[]){"GET", "pipe:k"}));
    CHECK_OK(append(p, 2, (const char *[]){"ECHO", "second"}));
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &second, &id2));
    /* An empty pipeline gives an empty array, as vk_pipeline_exec does,
     * before the exec returns. */
    CHECK_OK(vk_async_pipeline_exec(p, vkt_op_fn, &empty, &id3));
    CHECK_EQ_INT(empty.calls, 1);
    CHECK(id1 != 0 && id2 != 0 && id1 != id2 && id3 != id1 && id3 != id2);
    CHECK_EQ_INT(vk_async_pending(c), 2);
    /* The pipeline may go before its operations complete. */
    vk_pipeline_free(p);
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &second, 10000));

    CHECK_EQ_INT(first.status, VK_OK);
    CHECK(vk_reply_get_type(first.reply) == VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(first.reply), 4);
    CHECK(vkt_reply_is(element(first.reply, 0), "OK"));
    CHECK(vkt_reply_is(element(first.reply, 1), "v1"));
    CHECK(vkt_reply_error_starts(element(first.reply, 2), "ERR "));
    CHECK(vk_reply_get_type(element(first.reply, 3)) == VK_REPLY_NIL);
    CHECK_EQ_INT(second.status, VK_OK);
    CHECK_EQ_INT(vk_reply_get_length(second.reply), 2);
    CHECK(vkt_reply_is(element(second.reply, 0), "v1"));
    CHECK(vkt_reply_is(element(second.reply, 1), "second"));
    CHECK(first.seq < second.seq);
    CHECK(empty.seq < first.seq);
    CHECK_EQ_INT(empty.status, VK_OK);
    CHECK(vk_reply_get_type(empty.reply) == VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(empty.reply), 0);
    vkt_op_clear(&first);
    vkt_op_clear(&second);
    vkt_op_clear(&empty);
    vk_async_free(c);
}

/* A counted completion for many single operations. */
typedef struct counted {
    int done;
    int want;
} counted;

typedef struct single {
    counted *count;
    vk_status status;
    long long integer;
    char text[32];
    int type;
    long seq;
} single;

static void single_fn(void *userdata, vk_status status, vk_reply *reply)
{
    single *s = userdata;
    s->seq = vkt_note_completion();
    s->status = status;
    s->type = vk_reply_get_type(reply);
    s->integer = vk_reply_get_integer(reply);
    size_t len = 0;
    const char *str = vk_reply_get_string(reply, &len);
    if (str != NULL)
        snprintf(s->text, sizeof s->text, "%.*s", (int)(len < 31 ? len : 31), str);
    vk_reply_free(reply);
    s->count->done++;
}

static bool count_reached(void *arg)
{
    counted *c = arg;
    return c->done >= c->want;
}

static void test_pipeline_transaction_kept_whole(vkt_loop *loop)
{
    vkt_blocking_do(checker, 4, (const char *[]){"DEL", "tx:count", "tx:in", "tx:k"});
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "tx:k", "plain"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    enum { SIDE = 50 };
    counted count = {0, 2 * SIDE};
    single before[SIDE], after[SIDE];
    memset(before, 0, sizeof before);
    memset(after, 0, sizeof after);
    const char *incr[] = {"INCR", "tx:count"};
    const size_t incr_len[] = {4, 8};
    const char *get[] = {"GET", "tx:k"};
    const size_t get_len[] = {3, 4};
    for (int i = 0; i < SIDE; i++) {
        before[i].count = &count;
        CHECK_OK(vkt_submitv(c, single_fn, &before[i], NULL, 2, incr, incr_len));
    }
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    CHECK_OK(append(p, 1, (const char *[]){"MULTI"}));
    CHECK_OK(append(p, 2, (const char *[]){"INCR", "tx:in"}));
    CHECK_OK(append(p, 2, (const char *[]){"INCR", "tx:in"}));
    CHECK_OK(append(p, 1, (const char *[]){"exec"}));
    vkt_op tx = {0};
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &tx, NULL));
    for (int i = 0; i < SIDE; i++) {
        after[i].count = &count;
        CHECK_OK(vkt_submitv(c, single_fn, &after[i], NULL, 2, get, get_len));
    }
    CHECK(vkt_loop_run_until(loop, count_reached, &count, 10000));
    CHECK(vkt_op_done(&tx));
    CHECK_EQ_INT(tx.status, VK_OK);
    CHECK_EQ_INT(vk_reply_get_length(tx.reply), 4);
    CHECK(vkt_reply_is(element(tx.reply, 0), "OK"));
    CHECK(vkt_reply_is(element(tx.reply, 1), "QUEUED"));
    CHECK(vkt_reply_is(element(tx.reply, 2), "QUEUED"));
    const vk_reply *ran = element(tx.reply, 3);
    CHECK(vk_reply_get_type(ran) == VK_REPLY_ARRAY && vk_reply_get_length(ran) == 2);
    CHECK_EQ_INT(vk_reply_get_integer(element(ran, 0)), 1);
    CHECK_EQ_INT(vk_reply_get_integer(element(ran, 1)), 2);
    /* No single operation was caught inside the transaction. */
    for (int i = 0; i < SIDE; i++) {
        VKT_CHECK_(before[i].status == VK_OK && before[i].type == VK_REPLY_INTEGER &&
                       before[i].integer == i + 1,
                   "INCR %d got type %d value %lld", i, before[i].type, before[i].integer);
        VKT_CHECK_(after[i].status == VK_OK && strcmp(after[i].text, "plain") == 0,
                   "GET %d got \"%s\"", i, after[i].text);
        CHECK(before[i].seq < tx.seq && tx.seq < after[i].seq);
    }
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "tx:in"}), "2");
    vkt_op_clear(&tx);
    vk_pipeline_free(p);
    vk_async_free(c);
}

/* A transaction pipeline on the shared connection: MULTI ... EXEC sent
 * together, with no single operation caught inside; the completion gets
 * EXEC's results, or the discarded transaction's failure, and the
 * connection goes on. */
static void test_transaction_pipeline(vkt_loop *loop)
{
    vkt_blocking_do(checker, 4, (const char *[]){"DEL", "txp:count", "txp:in", "txp:k"});
    vkt_blocking_do(checker, 3, (const char *[]){"SET", "txp:k", "plain"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    enum { SIDE = 50 };
    counted count = {0, 2 * SIDE};
    single before[SIDE], after[SIDE];
    memset(before, 0, sizeof before);
    memset(after, 0, sizeof after);
    const char *incr[] = {"INCR", "txp:count"};
    const size_t incr_len[] = {4, 9};
    const char *get[] = {"GET", "txp:k"};
    const size_t get_len[] = {3, 5};
    for (int i = 0; i < SIDE; i++) {
        before[i].count = &count;
        CHECK_OK(vkt_submitv(c, single_fn, &before[i], NULL, 2, incr, incr_len));
    }
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    CHECK_OK(append(p, 2, (const char *[]){"INCR", "txp:in"}));
    CHECK_OK(append(p, 2, (const char *[]){"INCR", "txp:in"}));
    vkt_op tx = {0};
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &tx, NULL));
    for (int i = 0; i < SIDE; i++) {
        after[i].count = &count;
        CHECK_OK(vkt_submitv(c, single_fn, &after[i], NULL, 2, get, get_len));
    }
    CHECK(vkt_loop_run_until(loop, count_reached, &count, 10000));
    CHECK(vkt_op_done(&tx));
    CHECK_EQ_INT(tx.status, VK_OK);
    CHECK(vk_reply_get_type(tx.reply) == VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(tx.reply), 2);
    CHECK_EQ_INT(vk_reply_get_integer(element(tx.reply, 0)), 1);
    CHECK_EQ_INT(vk_reply_get_integer(element(tx.reply, 1)), 2);
    for (int i = 0; i < SIDE; i++) {
        VKT_CHECK_(before[i].status == VK_OK && before[i].integer == i + 1,
                   "INCR %d got value %lld", i, before[i].integer);
        VKT_CHECK_(after[i].status == VK_OK && strcmp(after[i].text, "plain") == 0,
                   "GET %d got \"%s\"", i, after[i].text);
        CHECK(before[i].seq < tx.seq && tx.seq < after[i].seq);
    }
    vkt_op_clear(&tx);

    /* A command refused when queued: the transaction is discarded, the
     * completion says which command, and the connection goes on. */
    CHECK_OK(append(p, 3, (const char *[]){"SET", "txp:in", "lost"}));
    CHECK_OK(append(p, 2, (const char *[]){"SET", "txp:in"}));
    vkt_op bad = {0};
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &bad, NULL));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &bad, 10000));
    CHECK_EQ_INT(bad.status, VK_ERR_SERVER);
    CHECK(bad.reply == NULL);
    VKT_CHECK_(strncmp(bad.error, "server error reply: transaction discarded: command 2 was "
                                  "refused: ERR wrong number of arguments", 95) == 0,
               "got \"%s\"", bad.error);
    vkt_op_clear(&bad);
    vkt_op ping = {0};
    CHECK_OK(vkt_submitv(c, vkt_op_fn, &ping, NULL, 1, (const char *[]){"PING"},
                         (const size_t[]){4}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &ping, 10000));
    CHECK(ping.status == VK_OK && vkt_reply_is(ping.reply, "PONG"));
    vkt_op_clear(&ping);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "txp:in"}),
                 "2");
    vk_pipeline_free(p);
    vk_async_free(c);
}

static void test_pipeline_refusals(vkt_loop *loop)
{
    vkt_blocking_do(checker, 2, (const char *[]){"DEL", "refused:pipe"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vk_pipeline *p = NULL, *bp = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_new(&bp, checker));
    if (p == NULL || bp == NULL) {
        vk_pipeline_free(p);
        vk_pipeline_free(bp);
        vk_async_free(c);
        return;
    }
    const char *set[] = {"SET", "refused:pipe", "sent"};
    const char *multi[] = {"MULTI"};
    unexpected_completions = 0;

    /* A MULTI left open: refused at exec, with vk_pipeline_exec's text,
     * nothing sent, the pipeline emptied. */
    for (int i = 0; i < 2; i++) {
        vk_pipeline *q = i == 0 ? bp : p;
        CHECK_OK(append(q, 3, set));
        CHECK_OK(append(q, 1, multi));
        CHECK_OK(append(q, 3, set));
    }
    vk_reply *r = NULL;
    CHECK_EQ_INT(vk_pipeline_exec(&r, bp, NULL), VK_ERR_COMMAND_NOT_ALLOWED);
    char text[512];
    snprintf(text, sizeof text, "%s", vk_last_error());
    uint64_t id = 0;
    CHECK_FAILS(vkt_pipeline_submit(p, unexpected_fn, NULL, &id), VK_ERR_COMMAND_NOT_ALLOWED,
                text);
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    CHECK_EQ_INT(vk_async_pending(c), 0);

    /* A refused command at append, then at exec: the same texts. */
    const char *select[] = {"SELECT", "2"};
    CHECK_OK(append(bp, 3, set));
    CHECK_EQ_INT(append(bp, 2, select), VK_ERR_COMMAND_NOT_ALLOWED);
    char append_text[512];
    snprintf(append_text, sizeof append_text, "%s", vk_last_error());
    CHECK_EQ_INT(vk_pipeline_exec(&r, bp, NULL), VK_ERR_COMMAND_NOT_ALLOWED);
    snprintf(text, sizeof text, "%s", vk_last_error());
    CHECK_OK(append(p, 3, set));
    CHECK_FAILS(append(p, 2, select), VK_ERR_COMMAND_NOT_ALLOWED, append_text);
    CHECK_FAILS(vkt_pipeline_submit(p, unexpected_fn, NULL, &id), VK_ERR_COMMAND_NOT_ALLOWED,
                text);
    CHECK_EQ_INT(vk_pipeline_length(p), 0);

    /* A transaction pipeline refuses MULTI: it sends MULTI itself. */
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    CHECK_OK(append(p, 3, set));
    CHECK_EQ_INT(append(p, 1, multi), VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK_FAILS(vkt_pipeline_submit(p, unexpected_fn, NULL, &id), VK_ERR_COMMAND_NOT_ALLOWED,
                "command not allowed on a shared connection: MULTI, EXEC and DISCARD in a "
                "transaction pipeline: exec sends MULTI and EXEC itself");
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    CHECK_OK(vk_pipeline_set_transaction(p, 0));

    /* Still usable after the refusals. */
    CHECK_OK(append(p, 1, (const char *[]){"PING"}));
    vkt_op op = {0};
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &op, NULL));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &op, 10000));
    CHECK(op.status == VK_OK && vk_reply_get_length(op.reply) == 1 &&
          vkt_reply_is(element(op.reply, 0), "PONG"));
    vkt_op_clear(&op);

    /* The blocking exec refuses a pipeline of the event-loop client, and
     * sends none of it. */
    vk_pipeline *other = NULL;
    CHECK_OK(vk_async_pipeline_new(&other, c));
    CHECK_OK(append(other, 3, set));
    r = (vk_reply *)&r;
    vk_status st = vk_pipeline_exec(&r, other, NULL);
    VKT_CHECK_(st != VK_OK, "vk_pipeline_exec ran an event-loop pipeline");
    CHECK(r == NULL);
    vk_pipeline_free(other);
    vkt_loop_run_for(loop, 50);
    CHECK_EQ_INT(unexpected_completions, 0);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "refused:pipe"}),
                 "(nil)");

    /* A pipeline outlives its client and then fails as the blocking one. */
    CHECK_OK(append(p, 1, (const char *[]){"PING"}));
    vk_async_free(c);
    CHECK_FAILS(vkt_pipeline_submit(p, unexpected_fn, NULL, &id), VK_ERR_NIL_CLIENT,
                "redis client is nil");
    CHECK_EQ_INT(unexpected_completions, 0);
    vk_pipeline_free(p);
    vk_pipeline_free(bp);
}

/* A pipeline far beyond the in-flight bound: one array, every reply in
 * place, with single operations before and after it. */
static void test_large_pipeline(vkt_loop *loop)
{
    vkt_blocking_do(checker, 3, (const char *[]){"DEL", "pipe:many", "pipe:side"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    if (p == NULL) {
        vk_async_free(c);
        return;
    }
    enum { N = 20000 };
    for (int i = 0; i < N; i++)
        if (append(p, 2, (const char *[]){"INCR", "pipe:many"}) != VK_OK) {
            CHECK(false);
            break;
        }
    vkt_op before = {0}, whole = {0}, after = {0};
    CHECK_OK(vkt_submit(c, &before, NULL, 2, (const char *[]){"INCR", "pipe:side"}));
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &whole, NULL));
    CHECK_OK(vkt_submit(c, &after, NULL, 2, (const char *[]){"INCR", "pipe:side"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &after, 60000));
    CHECK_EQ_INT(whole.status, VK_OK);
    CHECK_EQ_INT(vk_reply_get_length(whole.reply), N);
    int wrong = 0;
    for (int i = 0; i < N; i++)
        if (vk_reply_get_integer(element(whole.reply, (size_t)i)) != i + 1)
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    CHECK(before.status == VK_OK && vk_reply_get_integer(before.reply) == 1);
    CHECK(after.status == VK_OK && vk_reply_get_integer(after.reply) == 2);
    CHECK(before.seq < whole.seq && whole.seq < after.seq);
    vkt_op_clear(&before);
    vkt_op_clear(&whole);
    vkt_op_clear(&after);
    vk_pipeline_free(p);
    vk_async_free(c);
}

/* A completion that tries to cancel its own operation: it is no longer in
 * flight. */
typedef struct self_cancel {
    vk_async *client;
    uint64_t id;
    vk_status cancel;
    int calls;
} self_cancel;

static void self_cancel_fn(void *userdata, vk_status status, vk_reply *reply)
{
    self_cancel *k = userdata;
    (void)status;
    vkt_note_completion();
    k->calls++;
    vk_reply_free(reply);
    k->cancel = vk_async_cancel(k->client, k->id);
}

static bool self_cancel_done(void *arg)
{
    return ((self_cancel *)arg)->calls > 0;
}

static void test_cancel_pipelines(vkt_loop *loop)
{
    vkt_blocking_do(checker, 4, (const char *[]){"DEL", "pipe:cancelled", "pipe:list", "pipe:after"});
    vk_async *c = new_client(loop);
    if (c == NULL)
        return;
    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    if (p == NULL) {
        vk_async_free(c);
        return;
    }
    /* Before the connection is ready: never sent. */
    CHECK_OK(append(p, 3, (const char *[]){"SET", "pipe:cancelled", "ran"}));
    CHECK_OK(append(p, 2, (const char *[]){"INCR", "pipe:cancelled:n"}));
    vkt_op first = {0};
    uint64_t id = 0;
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &first, &id));
    CHECK_OK(vk_async_cancel(c, id));
    CHECK(first.calls == 1 && first.status == VK_ERR_CANCELLED && first.reply == NULL);
    CHECK_EQ_INT(vk_async_cancel(c, id), VK_ERR_INVALID_ARGUMENT);

    /* After it was written: a pipeline holding a blocking command runs on
     * a connection of its own (a lane), and cancelling it closes that
     * connection: the server's wait ends and what follows the BLPOP in the
     * pipeline never runs. The shared connection is untouched. */
    CHECK_OK(append(p, 3, (const char *[]){"BLPOP", "pipe:list", "5"}));
    CHECK_OK(append(p, 3, (const char *[]){"SET", "pipe:after", "set"}));
    vkt_op second = {0}, get = {0};
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &second, &id));
    CHECK(wait_blocked(loop));   /* written, waiting on the server */
    CHECK_EQ_INT(second.calls, 0);
    CHECK_OK(vk_async_cancel(c, id));
    CHECK(second.calls == 1 && second.status == VK_ERR_CANCELLED);
    CHECK(vkt_loop_run_until(loop, server_has_no_blocked_client, loop, 5000));
    CHECK_OK(vkt_submit(c, &get, NULL, 2, (const char *[]){"GET", "pipe:after"}));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &get, 10000));
    CHECK_EQ_INT(get.status, VK_OK);
    CHECK(vk_reply_get_type(get.reply) == VK_REPLY_NIL);
    char buf[64];
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "pipe:cancelled"}),
                 "(nil)");
    CHECK_EQ_STR(vkt_blocking_text(checker, buf, sizeof buf, 2, (const char *[]){"GET", "pipe:cancelled:n"}),
                 "(nil)");

    /* A completion cannot cancel its own operation. */
    self_cancel k = {c, 0, VK_OK, 0};
    const char *ping[] = {"PING"};
    const size_t ping_len[] = {4};
    CHECK_OK(vkt_submitv(c, self_cancel_fn, &k, &k.id, 1, ping, ping_len));
    CHECK(vkt_loop_run_until(loop, self_cancel_done, &k, 10000));
    CHECK_EQ_INT(k.cancel, VK_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(k.calls, 1);
    vkt_op_clear(&first);
    vkt_op_clear(&second);
    vkt_op_clear(&get);
    vk_pipeline_free(p);
    vk_async_free(c);
}

/* Other address forms: a host name and a unix socket. */
static void test_addresses(vkt_loop *loop)
{
    char address[64];
    snprintf(address, sizeof address, "localhost:%d", vkt_server_port(server));
    const char *addresses[] = {address, vkt_server_unix_address(server)};
    for (int i = 0; i < 2; i++) {
        CHECK(addresses[i] != NULL);
        if (addresses[i] == NULL)
            continue;
        vk_config *cfg = vkt_async_config(addresses[i]);
        vk_async *c = vkt_async_new(loop, cfg);
        vk_config_free(cfg);
        if (c == NULL)
            continue;
        vkt_op op = {0};
        if (vkt_call(loop, c, &op, 2, (const char *[]){"ECHO", addresses[i]}))
            VKT_CHECK_(op.status == VK_OK && vkt_reply_is(op.reply, addresses[i]),
                       "%s: status %d (%s)", addresses[i], (int)op.status, op.error);
        CHECK_EQ_INT(vk_async_is_connected(c), 1);
        vkt_op_clear(&op);
        /* The snapshot names the node as the blocking client's does. */
        vk_client *b = NULL;
        vk_snapshot *blocking = NULL, *snap = NULL;
        cfg = vkt_async_config(addresses[i]);
        CHECK_OK(vk_client_new(&b, cfg));
        vk_config_free(cfg);
        CHECK_OK(vk_client_snapshot(&blocking, b));
        CHECK_OK(vk_async_snapshot(&snap, c));
        CHECK_EQ_STR(vk_snapshot_mode(snap), "standalone");
        CHECK_EQ_STR(vk_snapshot_master_address(snap), vk_snapshot_master_address(blocking));
        CHECK_EQ_INT(vk_snapshot_connected(snap), 1);
        CHECK_EQ_INT(vk_snapshot_master_switches(snap), 0);
        CHECK(vk_snapshot_last_refresh_error(snap) == NULL);
        CHECK_EQ_INT(vk_snapshot_refresh_loop_running(snap), 0);
        vk_snapshot_free(snap);
        vk_snapshot_free(blocking);
        vk_client_free(b);
        vk_async_free(c);
    }
}

/* Protocol 3: what the blocking client does with this build, the same. */
static void test_protocol_3(vkt_loop *loop)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_config_set_protocol(cfg, 3));
    CHECK_OK(vk_config_set_max_retries(cfg, -1));
    vk_client *b = NULL;
    vk_status blocking = vk_client_new(&b, cfg);
    char text[512];
    snprintf(text, sizeof text, "%s", blocking == VK_OK ? "" : vk_last_error());
    vk_client_free(b);
    CHECK_EQ_INT(blocking == VK_OK, vk_resp3_supported());
    vk_async *c = NULL;
    vk_status st = vk_async_new(&c, cfg, vkt_loop_adapter(loop));
    vk_config_free(cfg);
    if (st != VK_OK) {
        /* Refused where the blocking client refuses it. */
        CHECK(blocking != VK_OK);
        CHECK_EQ_INT(st, blocking);
        CHECK_EQ_STR(vk_last_error(), text);
        return;
    }
    vkt_blocking_do(checker, 4, (const char *[]){"HSET", "resp3:h", "f", "v"});
    vkt_op op = {0};
    if (vkt_call(loop, c, &op, 2, (const char *[]){"HGETALL", "resp3:h"})) {
        if (blocking == VK_OK) {
            CHECK_EQ_INT(op.status, VK_OK);
            CHECK(vk_reply_get_type(op.reply) == VK_REPLY_MAP);
        } else {
            CHECK_EQ_INT(op.status, blocking);
            CHECK_EQ_STR(op.error, text);
        }
    }
    vkt_op_clear(&op);
    vk_async_free(c);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){.unix_socket = true});
    if (server == NULL)
        return 1;
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_client_new(&checker, cfg));
    vk_config_free(cfg);
    if (checker == NULL)
        return vkt_finish();
    RUN_ON_LOOPS(test_commands_and_replies);
    RUN_ON_LOOPS(test_completion_frees_the_reply);
    RUN_ON_LOOPS(test_config_validation);
    RUN_ON_LOOPS(test_null_handles);
    RUN_ON_LOOPS(test_invalid_arguments);
    RUN_ON_LOOPS(test_refused_commands);
    RUN_ON_LOOPS(test_pipeline_replies_and_reuse);
    RUN_ON_LOOPS(test_pipeline_transaction_kept_whole);
    RUN_ON_LOOPS(test_transaction_pipeline);
    RUN_ON_LOOPS(test_pipeline_refusals);
    RUN_ON_LOOPS(test_large_pipeline);
    RUN_ON_LOOPS(test_cancel_pipelines);
    RUN_ON_LOOPS(test_addresses);
    RUN_ON_LOOPS(test_protocol_3);
    vk_client_free(checker);
    vkt_server_stop(server);
    return vkt_finish();
}
