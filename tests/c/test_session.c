/*
 * Sessions and transactions (VKTEST_NEEDS_SERVER): transaction pipelines,
 * atomicity seen from a second client, WATCH conflicts, DISCARD, the state
 * a session leaves on its connection (SELECT, WATCH, MULTI, CLIENT
 * SETNAME), broken and cancelled sessions, then a session over Sentinel
 * and the slot rules of a cluster session.
 */
#include "vktest.h"
#include "clusters.h"
#include "sentinels.h"
#include "servers.h"
#include "vkclient.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static vkt_server *server;

static size_t lens_of(int argc, const char *const *argv, size_t *lens)
{
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return (size_t)argc;
}

static vk_status run(vk_reply **r, vk_client *c, int argc, const char *const *argv)
{
    size_t lens[8];
    lens_of(argc, argv, lens);
    return vk_client_command(r, c, NULL, argc, argv, lens);
}

static vk_status srun(vk_reply **r, vk_session *s, vk_context *ctx, int argc,
                      const char *const *argv)
{
    size_t lens[8];
    lens_of(argc, argv, lens);
    return vk_session_command(r, s, ctx, argc, argv, lens);
}

static vk_status add(vk_pipeline *p, int argc, const char *const *argv)
{
    size_t lens[8];
    lens_of(argc, argv, lens);
    return vk_pipeline_append(p, argc, argv, lens);
}

/* The reply's text (string or status) equals want. */
static bool reply_is(const vk_reply *r, const char *want)
{
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    return s != NULL && len == strlen(want) && memcmp(s, want, len) == 0;
}

/* One command through the client, its reply's text compared. */
static bool client_gets(vk_client *c, const char *key, const char *want)
{
    const char *get[] = {"GET", key};
    vk_reply *r = NULL;
    if (run(&r, c, 2, get) != VK_OK)
        return false;
    bool ok = want == NULL ? vk_reply_get_type(r) == VK_REPLY_NIL : reply_is(r, want);
    vk_reply_free(r);
    return ok;
}

static long long client_id_of_client(vk_client *c)
{
    const char *id[] = {"CLIENT", "ID"};
    vk_reply *r = NULL;
    long long v = -1;
    if (run(&r, c, 2, id) == VK_OK)
        v = vk_reply_get_integer(r);
    vk_reply_free(r);
    return v;
}

static long long client_id_of_session(vk_session *s)
{
    const char *id[] = {"CLIENT", "ID"};
    vk_reply *r = NULL;
    long long v = -1;
    if (srun(&r, s, NULL, 2, id) == VK_OK)
        v = vk_reply_get_integer(r);
    vk_reply_free(r);
    return v;
}

static vk_client *new_client(int pool_size, int db)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, vkt_server_address(server)));
    CHECK_OK(vk_config_set_pool_size(cfg, pool_size));
    CHECK_OK(vk_config_set_db(cfg, db));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static void del(vk_client *c, const char *key)
{
    const char *d[] = {"DEL", key};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 2, d));
    vk_reply_free(r);
}

/* ---- transaction pipelines ---------------------------------------------------- */

static void test_transaction_pipeline(void)
{
    vk_client *c = new_client(2, 0);
    del(c, "tx:a");
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK(!vk_pipeline_is_transaction(p));
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    CHECK(vk_pipeline_is_transaction(p));
    const char *set[] = {"SET", "tx:a", "1"};
    const char *incr[] = {"INCR", "tx:a"};
    const char *get[] = {"GET", "tx:a"};
    CHECK_OK(add(p, 3, set));
    CHECK_OK(add(p, 2, incr));
    CHECK_OK(add(p, 2, get));
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 3);
    CHECK(reply_is(vk_reply_get_element(r, 0), "OK"));
    CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 1)), 2);
    CHECK(reply_is(vk_reply_get_element(r, 2), "2"));
    vk_reply_free(r);

    /* The mode stays; an empty transaction sends nothing. */
    CHECK(vk_pipeline_is_transaction(p));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 0);
    vk_reply_free(r);

    /* MULTI, EXEC and DISCARD are the pipeline's to send. */
    const char *multi[] = {"MULTI"};
    CHECK_FAILS(add(p, 1, multi), VK_ERR_COMMAND_NOT_ALLOWED,
                "command not allowed on a shared connection: MULTI, EXEC and DISCARD in a "
                "transaction pipeline: exec sends MULTI and EXEC itself");
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_COMMAND_NOT_ALLOWED,
                "command not allowed on a shared connection: MULTI, EXEC and DISCARD in a "
                "transaction pipeline: exec sends MULTI and EXEC itself");
    CHECK(r == NULL);

    /* A command refused when queued discards the whole transaction. */
    const char *bad[] = {"SET", "tx:a"};
    const char *set9[] = {"SET", "tx:a", "9"};
    CHECK_OK(add(p, 3, set9));
    CHECK_OK(add(p, 2, bad));
    vk_status st = vk_pipeline_exec(&r, p, NULL);
    CHECK_EQ_INT(st, VK_ERR_SERVER);
    CHECK(strncmp(vk_last_error(), "server error reply: transaction discarded: command 2 "
                                   "was refused: ERR wrong number of arguments",
                  95) == 0);
    CHECK(r == NULL);
    CHECK(client_gets(c, "tx:a", "2"));

    /* The mode is set before the first command. */
    CHECK_OK(vk_pipeline_set_transaction(p, 0));
    CHECK_OK(add(p, 2, get));
    CHECK_FAILS(vk_pipeline_set_transaction(p, 1), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: the transaction mode of a pipeline is set before its first "
                "command");
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    vk_reply_free(r);
    CHECK_FAILS(vk_pipeline_set_transaction(NULL, 1), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: pipeline is nil");
    CHECK(!vk_pipeline_is_transaction(NULL));
    vk_pipeline_free(p);
    vk_client_free(c);
}

/* A reader on a second client checks that it never sees one key of a
 * transaction written without the other. */
typedef struct reader_state {
    vk_client *client;
    atomic_bool stop;
    int reads, torn;
} reader_state;

static void *read_pairs(void *arg)
{
    reader_state *rs = arg;
    const char *mget[] = {"MGET", "tx:left", "tx:right"};
    while (!atomic_load(&rs->stop)) {
        vk_reply *r = NULL;
        if (run(&r, rs->client, 3, mget) != VK_OK)
            continue;
        size_t l1 = 0, l2 = 0;
        const char *a = vk_reply_get_string(vk_reply_get_element(r, 0), &l1);
        const char *b = vk_reply_get_string(vk_reply_get_element(r, 1), &l2);
        if ((a == NULL) != (b == NULL) || (a != NULL && (l1 != l2 || memcmp(a, b, l1) != 0)))
            rs->torn++;
        rs->reads++;
        vk_reply_free(r);
    }
    return NULL;
}

static void test_atomic_for_a_second_client(void)
{
    vk_client *c = new_client(2, 0);
    vk_client *other = new_client(2, 0);
    del(c, "tx:left");
    del(c, "tx:right");

    /* Queued commands have not run: the other client sees none of them
     * until EXEC, then all. */
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    const char *multi[] = {"MULTI"};
    const char *set_l[] = {"SET", "tx:left", "1"};
    const char *set_r[] = {"SET", "tx:right", "1"};
    const char *exec[] = {"EXEC"};
    vk_reply *r = NULL;
    CHECK_OK(srun(&r, s, NULL, 1, multi));
    CHECK(reply_is(r, "OK"));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, set_l));
    CHECK(reply_is(r, "QUEUED"));
    vk_reply_free(r);
    CHECK(client_gets(other, "tx:left", NULL));
    CHECK_OK(srun(&r, s, NULL, 3, set_r));
    vk_reply_free(r);
    CHECK(client_gets(other, "tx:left", NULL));
    CHECK(client_gets(other, "tx:right", NULL));
    CHECK_OK(srun(&r, s, NULL, 1, exec));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(r), 2);
    vk_reply_free(r);
    CHECK(client_gets(other, "tx:left", "1"));
    CHECK(client_gets(other, "tx:right", "1"));
    vk_session_close(s);

    /* Transaction pipelines under a reader that never sees them torn. */
    reader_state rs = {.client = other};
    pthread_t reader;
    pthread_create(&reader, NULL, read_pairs, &rs);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    int failures = 0;
    for (int i = 0; i < 300; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *l[] = {"SET", "tx:left", v};
        const char *rr[] = {"SET", "tx:right", v};
        add(p, 3, l);
        add(p, 3, rr);
        if (vk_pipeline_exec(&r, p, NULL) != VK_OK)
            failures++;
        vk_reply_free(r);
    }
    atomic_store(&rs.stop, true);
    pthread_join(reader, NULL);
    CHECK_EQ_INT(failures, 0);
    CHECK(rs.reads > 0);
    CHECK_EQ_INT(rs.torn, 0);
    vk_pipeline_free(p);
    vk_client_free(other);
    vk_client_free(c);
}

/* ---- WATCH and DISCARD ------------------------------------------------------------ */

static void test_watch_conflict(void)
{
    vk_client *c = new_client(2, 0);
    vk_client *other = new_client(2, 0);
    const char *set0[] = {"SET", "tx:w", "0"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 3, set0));
    vk_reply_free(r);

    /* By hand: WATCH, a write by another client, MULTI ... EXEC. */
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    const char *watch[] = {"WATCH", "tx:w"};
    const char *multi[] = {"MULTI"};
    const char *mine[] = {"SET", "tx:w", "mine"};
    const char *theirs[] = {"SET", "tx:w", "theirs"};
    const char *exec[] = {"EXEC"};
    CHECK_OK(srun(&r, s, NULL, 2, watch));
    vk_reply_free(r);
    CHECK_OK(run(&r, other, 3, theirs));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 1, multi));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, mine));
    vk_reply_free(r);
    r = (vk_reply *)1;
    CHECK_FAILS(srun(&r, s, NULL, 1, exec), VK_ERR_WATCH_CONFLICT,
                "transaction aborted: a watched key changed");
    CHECK(r == NULL);
    CHECK(client_gets(other, "tx:w", "theirs"));

    /* The session goes on: the same with a transaction pipeline, then a
     * try without a conflict. */
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    CHECK_OK(srun(&r, s, NULL, 2, watch));
    vk_reply_free(r);
    CHECK_OK(run(&r, other, 3, theirs));
    vk_reply_free(r);
    CHECK_OK(add(p, 3, mine));
    CHECK_FAILS(vk_session_pipeline_exec(&r, s, p, NULL), VK_ERR_WATCH_CONFLICT,
                "transaction aborted: a watched key changed");
    CHECK(client_gets(other, "tx:w", "theirs"));
    CHECK_OK(srun(&r, s, NULL, 2, watch));
    vk_reply_free(r);
    CHECK_OK(add(p, 3, mine));
    CHECK_OK(vk_session_pipeline_exec(&r, s, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 1);
    CHECK(reply_is(vk_reply_get_element(r, 0), "OK"));
    vk_reply_free(r);
    CHECK(client_gets(other, "tx:w", "mine"));

    /* A transaction pipeline inside MULTI would nest it. */
    CHECK_OK(srun(&r, s, NULL, 1, multi));
    vk_reply_free(r);
    CHECK_OK(add(p, 3, mine));
    CHECK_FAILS(vk_session_pipeline_exec(&r, s, p, NULL), VK_ERR_COMMAND_NOT_ALLOWED,
                "command not allowed on a shared connection: the session is inside MULTI: a "
                "transaction pipeline would nest it; send EXEC or DISCARD first");
    vk_session_close(s);
    vk_pipeline_free(p);
    vk_client_free(other);
    vk_client_free(c);
}

static void test_discard(void)
{
    vk_client *c = new_client(1, 0);
    del(c, "tx:d");
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    const char *multi[] = {"MULTI"};
    const char *set[] = {"SET", "tx:d", "x"};
    const char *discard[] = {"DISCARD"};
    vk_reply *r = NULL;
    CHECK_OK(srun(&r, s, NULL, 1, multi));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, set));
    CHECK(reply_is(r, "QUEUED"));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 1, discard));
    CHECK(reply_is(r, "OK"));
    vk_reply_free(r);
    const char *get[] = {"GET", "tx:d"};
    CHECK_OK(srun(&r, s, NULL, 2, get));
    CHECK(vk_reply_get_type(r) == VK_REPLY_NIL);
    vk_reply_free(r);
    vk_session_close(s);
    CHECK(client_gets(c, "tx:d", NULL));
    vk_client_free(c);
}

/* ---- what a session leaves on its connection --------------------------------------- */

static void test_select_does_not_leak(void)
{
    /* One connection in the pool: the session's is the next caller's. */
    vk_client *c = new_client(1, 2);
    const char *set[] = {"SET", "tx:db", "two"};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, c, 3, set));
    vk_reply_free(r);
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    long long id = client_id_of_session(s);
    const char *select5[] = {"SELECT", "5"};
    const char *set5[] = {"SET", "tx:db", "five"};
    CHECK_OK(srun(&r, s, NULL, 2, select5));
    CHECK(reply_is(r, "OK"));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, set5));
    vk_reply_free(r);
    vk_session_close(s);
    /* Same connection, back on the configured db. */
    CHECK_EQ_INT(client_id_of_client(c), id);
    CHECK(client_gets(c, "tx:db", "two"));

    /* SELECT refused on the shared path still. */
    CHECK_EQ_INT(run(&r, c, 2, select5), VK_ERR_COMMAND_NOT_ALLOWED);
    vk_client_free(c);
}

static void test_watch_and_multi_are_undone(void)
{
    vk_client *c = new_client(1, 0);
    vk_client *other = new_client(1, 0);
    vk_reply *r = NULL;
    const char *watch[] = {"WATCH", "tx:u"};
    const char *theirs[] = {"SET", "tx:u", "theirs"};
    const char *multi[] = {"MULTI"};
    const char *mine[] = {"SET", "tx:u", "mine"};
    const char *exec[] = {"EXEC"};

    /* A WATCH left at close is forgotten: a later transaction on the same
     * connection is not aborted by it. */
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    long long id = client_id_of_session(s);
    CHECK_OK(srun(&r, s, NULL, 2, watch));
    vk_reply_free(r);
    vk_session_close(s);
    CHECK_OK(run(&r, other, 3, theirs));
    vk_reply_free(r);
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    CHECK_EQ_INT(client_id_of_session(s), id);
    CHECK_OK(srun(&r, s, NULL, 1, multi));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, mine));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 1, exec));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ARRAY);
    vk_reply_free(r);

    /* A MULTI left open at close is discarded. */
    CHECK_OK(srun(&r, s, NULL, 1, multi));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, theirs));
    vk_reply_free(r);
    vk_session_close(s);
    CHECK_EQ_INT(client_id_of_client(c), id);
    CHECK(client_gets(c, "tx:u", "mine"));

    /* A state the session cannot undo (a name) closes the connection. */
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    const char *setname[] = {"CLIENT", "SETNAME", "pinned"};
    CHECK_OK(srun(&r, s, NULL, 3, setname));
    CHECK(reply_is(r, "OK"));
    vk_reply_free(r);
    vk_session_close(s);
    CHECK(client_id_of_client(c) != id);
    const char *getname[] = {"CLIENT", "GETNAME"};
    CHECK_OK(run(&r, c, 2, getname));
    CHECK(vk_reply_get_type(r) == VK_REPLY_NIL);
    vk_reply_free(r);
    vk_client_free(other);
    vk_client_free(c);
}

static void test_refusals_and_nil_handles(void)
{
    vk_client *c = new_client(1, 0);
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    vk_reply *r = NULL;
    const char *subscribe[] = {"SUBSCRIBE", "ch"};
    CHECK_EQ_INT(srun(&r, s, NULL, 2, subscribe), VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK(strstr(vk_last_error(), "SUBSCRIBE turns the connection into a subscriber") != NULL);
    const char *reply_off[] = {"CLIENT", "REPLY", "OFF"};
    CHECK_EQ_INT(srun(&r, s, NULL, 3, reply_off), VK_ERR_COMMAND_NOT_ALLOWED);
    const char *monitor[] = {"MONITOR"};
    CHECK_EQ_INT(srun(&r, s, NULL, 1, monitor), VK_ERR_COMMAND_NOT_ALLOWED);
    /* Still usable after a refusal. */
    const char *ping[] = {"PING"};
    CHECK_OK(srun(&r, s, NULL, 1, ping));
    CHECK(reply_is(r, "PONG"));
    vk_reply_free(r);
    CHECK_FAILS(vk_session_command(&r, s, NULL, 0, ping, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: a command needs argc >= 1, argv and argvlen");
    vk_session_close(s);

    size_t one = 4;
    CHECK_FAILS(vk_session_command(&r, NULL, NULL, 1, ping, &one), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: session is nil");
    CHECK_FAILS(vk_session_command(NULL, NULL, NULL, 1, ping, &one), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    CHECK_FAILS(vk_session_pipeline_exec(&r, NULL, NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: session is nil");
    CHECK_FAILS(vk_session_open(&s, NULL, NULL, NULL, 0), VK_ERR_NIL_CLIENT,
                "redis client is nil");
    CHECK(s == NULL);
    CHECK_FAILS(vk_session_open(NULL, c, NULL, NULL, 0), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    CHECK_FAILS(vk_session_open(&s, c, NULL, NULL, 3), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: key is NULL");
    vk_session_close(NULL);

    /* A session outlives its client, then fails as a pipeline does. */
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    vk_client_free(c);
    CHECK_FAILS(srun(&r, s, NULL, 1, ping), VK_ERR_NIL_CLIENT, "redis client is nil");
    vk_session_close(s);
}

/* ---- broken sessions ------------------------------------------------------------------ */

static void test_killed_connection_fails_the_session(void)
{
    vk_client *c = new_client(1, 0);
    vk_client *other = new_client(1, 0);
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    long long id = client_id_of_session(s);
    char idtext[32];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *kill[] = {"CLIENT", "KILL", "ID", idtext};
    vk_reply *r = NULL;
    CHECK_OK(run(&r, other, 4, kill));
    vk_reply_free(r);
    const char *ping[] = {"PING"};
    vk_status st = srun(&r, s, NULL, 1, ping);
    CHECK(st == VK_ERR_IO);
    CHECK_FAILS(srun(&r, s, NULL, 1, ping), VK_ERR_IO,
                "connection error: the session's connection failed (an error, a timeout or a "
                "cancel mid-command) and was closed; close the session and open a new one");
    vk_session_close(s);
    /* Never reused: the pool's next connection is a new one. */
    long long next = client_id_of_client(c);
    CHECK(next > 0 && next != id);
    vk_client_free(other);
    vk_client_free(c);
}

static void *cancel_later(void *ctx)
{
    vkt_sleep_ms(150);
    vk_context_cancel(ctx);
    return NULL;
}

static void test_cancel_and_deadline_mid_command(void)
{
    vk_client *c = new_client(1, 0);
    del(c, "tx:empty");
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    long long id = client_id_of_session(s);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    pthread_t t;
    pthread_create(&t, NULL, cancel_later, ctx);
    const char *blpop[] = {"BLPOP", "tx:empty", "5"};
    vk_reply *r = NULL;
    int64_t started = vkt_now_ms();
    CHECK_EQ_INT(srun(&r, s, ctx, 3, blpop), VK_ERR_CANCELLED);
    CHECK(vkt_now_ms() - started < 3000);
    pthread_join(t, NULL);
    const char *ping[] = {"PING"};
    CHECK_EQ_INT(srun(&r, s, NULL, 1, ping), VK_ERR_IO);
    vk_session_close(s);
    long long next = client_id_of_client(c);
    CHECK(next > 0 && next != id);
    vk_context_free(ctx);

    /* A deadline: the same. */
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    id = client_id_of_session(s);
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 100));
    CHECK_EQ_INT(srun(&r, s, ctx, 3, blpop), VK_ERR_TIMEOUT);
    CHECK_EQ_INT(srun(&r, s, NULL, 1, ping), VK_ERR_IO);
    vk_session_close(s);
    next = client_id_of_client(c);
    CHECK(next > 0 && next != id);
    vk_context_free(ctx);
    vk_client_free(c);
}

/* A session open across fork(): the child cannot use the parent's
 * connection (a clear error) and closing it there sends nothing; the
 * child's client works on connections of its own, and the parent's
 * session goes on. */
static void test_session_across_fork(void)
{
    vk_client *c = new_client(2, 0);
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    long long id = client_id_of_session(s);
    const char *ping[] = {"PING"};
    vk_reply *r = NULL;
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        size_t len = 4;
        vk_status st = vk_session_command(&r, s, NULL, 1, ping, &len);
        bool refused = st == VK_ERR_IO &&
                       strcmp(vk_last_error(), "connection error: the session's connection "
                                               "belongs to the parent process; open a new "
                                               "session in the child") == 0;
        vk_session_close(s);
        long long child_id = client_id_of_client(c);
        vk_client_free(c);   /* the child's own connections; the parent's stay */
        _exit(refused && child_id > 0 && child_id != id ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0);
    CHECK_OK(srun(&r, s, NULL, 1, ping));
    CHECK(reply_is(r, "PONG"));
    vk_reply_free(r);
    CHECK_EQ_INT(client_id_of_session(s), id);
    vk_session_close(s);
    vk_client_free(c);
}

/* ---- Sentinel ------------------------------------------------------------------------- */

static void test_sentinel_session_goes_to_the_master(void)
{
    vkt_sentinel_group *g = vkt_sentinel_group_start("vktx");
    CHECK(g != NULL);
    if (g == NULL)
        return;
    vk_config *cfg = vkt_sentinel_config(g, "vktx", 3);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    vk_session *s = NULL;
    CHECK_OK(vk_session_open(&s, c, NULL, NULL, 0));
    const char *role[] = {"ROLE"};
    vk_reply *r = NULL;
    CHECK_OK(srun(&r, s, NULL, 1, role));
    CHECK(reply_is(vk_reply_get_element(r, 0), "master"));
    vk_reply_free(r);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    const char *set[] = {"SET", "tx:s", "1"};
    const char *incr[] = {"INCR", "tx:s"};
    CHECK_OK(add(p, 3, set));
    CHECK_OK(add(p, 2, incr));
    CHECK_OK(vk_session_pipeline_exec(&r, s, p, NULL));
    CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 1)), 2);
    vk_reply_free(r);
    vk_session_close(s);
    CHECK_OK(add(p, 2, incr));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 0)), 3);
    vk_reply_free(r);
    vk_pipeline_free(p);
    vk_client_free(c);
    vkt_sentinel_group_stop(g);
}

/* ---- Cluster -------------------------------------------------------------------------- */

static void test_cluster_slots(void)
{
    vkt_cluster *cl = vkt_cluster_start(3, 0, NULL, false);
    CHECK(cl != NULL);
    if (cl == NULL)
        return;
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cl, 0))));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);

    vk_session *s = NULL;
    CHECK_FAILS(vk_session_open(&s, c, NULL, NULL, 0), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: a session in cluster mode needs a key: it runs on the "
                "master of that key's hash slot");

    /* The session goes to the master of its key's slot. */
    CHECK_OK(vk_session_open(&s, c, NULL, "{u1}a", 5));
    const char *myid[] = {"CLUSTER", "MYID"};
    vk_reply *r = NULL;
    CHECK_OK(srun(&r, s, NULL, 2, myid));
    int owner = vkt_cluster_key_owner(cl, "{u1}a");
    CHECK(owner >= 0 && reply_is(r, vkt_cluster_node_id(cl, owner)));
    vk_reply_free(r);
    const char *watch[] = {"WATCH", "{u1}a", "{u1}b"};
    const char *multi[] = {"MULTI"};
    const char *set_a[] = {"SET", "{u1}a", "1"};
    const char *set_b[] = {"SET", "{u1}b", "2"};
    const char *exec[] = {"EXEC"};
    CHECK_OK(srun(&r, s, NULL, 3, watch));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 1, multi));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, set_a));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 3, set_b));
    vk_reply_free(r);
    CHECK_OK(srun(&r, s, NULL, 1, exec));
    CHECK_EQ_INT(vk_reply_get_length(r), 2);
    vk_reply_free(r);

    /* A key of another slot is refused before sending. */
    int slot = vkt_cluster_keyslot(cl, "{u1}a");
    int other_slot = vkt_cluster_keyslot(cl, "elsewhere");
    char want[400];
    snprintf(want, sizeof want,
             "invalid argument: the session is pinned to the master of hash slot %d, and the "
             "command's keys hash to slot %d; give keys that go together one hash tag, e.g. "
             "{user:1}:a and {user:1}:b",
             slot, other_slot);
    const char *get_other[] = {"GET", "elsewhere"};
    CHECK_FAILS(srun(&r, s, NULL, 2, get_other), VK_ERR_INVALID_ARGUMENT, want);
    const char *mget_cross[] = {"MGET", "{u1}a", "elsewhere"};
    CHECK_FAILS(srun(&r, s, NULL, 3, mget_cross), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: CROSSSLOT keys in request don't hash to the same slot");

    /* A pipeline on the session: its keys too. */
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_set_transaction(p, 1));
    const char *incr_a[] = {"INCR", "{u1}a"};
    CHECK_OK(add(p, 2, incr_a));
    CHECK_OK(add(p, 2, get_other));
    snprintf(want, sizeof want,
             "invalid argument: the session is pinned to the master of hash slot %d, and the "
             "keys of command 2 hash to slot %d; give keys that go together one hash tag, e.g. "
             "{user:1}:a and {user:1}:b",
             slot, other_slot);
    CHECK_FAILS(vk_session_pipeline_exec(&r, s, p, NULL), VK_ERR_INVALID_ARGUMENT, want);
    CHECK_OK(add(p, 2, incr_a));
    CHECK_OK(vk_session_pipeline_exec(&r, s, p, NULL));
    CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 0)), 2);
    vk_reply_free(r);
    vk_session_close(s);

    /* Transaction pipelines on the client: one slot, or refused. */
    CHECK_OK(add(p, 2, incr_a));
    CHECK_OK(add(p, 3, set_b));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 0)), 3);
    vk_reply_free(r);
    CHECK_OK(add(p, 2, incr_a));
    CHECK_OK(add(p, 2, get_other));
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: CROSSSLOT keys in request don't hash to the same slot: a "
                "transaction runs on the master of one slot; give keys that go together one "
                "hash tag, e.g. {user:1}:a and {user:1}:b");
    CHECK(r == NULL);
    const char *get_a[] = {"GET", "{u1}a"};
    CHECK_OK(run(&r, c, 2, get_a));
    CHECK(reply_is(r, "3"));
    vk_reply_free(r);

    /* The slot moves to another master: the first try of a transaction
     * is discarded with MOVED (nothing ran), the map is patched, and the
     * transaction runs once on the new master. */
    int to = (owner + 1) % 3;
    const char *const slot_keys[] = {"{u1}a", "{u1}b"};
    CHECK(vkt_cluster_move_slot(cl, slot, owner, to, slot_keys, 2, 0));
    vk_snapshot *snap = NULL;
    CHECK_OK(vk_client_snapshot(&snap, c));
    uint64_t moved_before = vk_snapshot_moved_redirects(snap);
    vk_snapshot_free(snap);
    CHECK_OK(add(p, 2, incr_a));
    CHECK_OK(add(p, 2, incr_a));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 1)), 5);
    vk_reply_free(r);
    CHECK_OK(vk_client_snapshot(&snap, c));
    CHECK_EQ_INT(vk_snapshot_moved_redirects(snap), moved_before + 1);
    vk_snapshot_free(snap);
    /* A session opened now goes to the new master. */
    CHECK_OK(vk_session_open(&s, c, NULL, "{u1}a", 5));
    CHECK_OK(srun(&r, s, NULL, 2, myid));
    CHECK(reply_is(r, vkt_cluster_node_id(cl, to)));
    vk_reply_free(r);

    /* The slot moves back under that session: its command is not
     * redirected (the reply is the MOVED), but the map is patched, and the
     * next session goes to the right master. */
    CHECK(vkt_cluster_move_slot(cl, slot, to, owner, slot_keys, 2, 0));
    CHECK_OK(srun(&r, s, NULL, 2, get_a));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR);
    size_t elen = 0;
    const char *etext = vk_reply_get_string(r, &elen);
    CHECK(etext != NULL && elen > 6 && memcmp(etext, "MOVED ", 6) == 0);
    vk_reply_free(r);
    vk_session_close(s);
    CHECK_OK(vk_client_snapshot(&snap, c));
    CHECK_EQ_INT(vk_snapshot_moved_redirects(snap), moved_before + 2);
    vk_snapshot_free(snap);
    CHECK_OK(vk_session_open(&s, c, NULL, "{u1}a", 5));
    CHECK_OK(srun(&r, s, NULL, 2, myid));
    CHECK(reply_is(r, vkt_cluster_node_id(cl, owner)));
    vk_reply_free(r);
    vk_session_close(s);
    vk_pipeline_free(p);
    vk_client_free(c);
    vkt_cluster_stop(cl);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    CHECK(server != NULL);
    if (server == NULL)
        return vkt_finish();
    RUN(test_transaction_pipeline);
    RUN(test_atomic_for_a_second_client);
    RUN(test_watch_conflict);
    RUN(test_discard);
    RUN(test_select_does_not_leak);
    RUN(test_watch_and_multi_are_undone);
    RUN(test_refusals_and_nil_handles);
    RUN(test_killed_connection_fails_the_session);
    RUN(test_cancel_and_deadline_mid_command);
    RUN(test_session_across_fork);
    vkt_server_stop(server);
    RUN(test_sentinel_session_goes_to_the_master);
    RUN(test_cluster_slots);
    return vkt_finish();
}
