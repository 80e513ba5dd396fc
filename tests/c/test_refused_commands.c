/*
 * Commands that would change the state of a pooled connection for its next
 * caller are refused before anything is sent (VKTEST_NEEDS_SERVER): every
 * listed command, case-insensitive and binary safe, with the server's
 * command statistics as the witness; a transaction inside one pipeline and
 * the ways a pipeline transaction is refused; EXECABORT, an error inside
 * EXEC, a refused DISCARD and a timeout in the middle of a transaction
 * never leave a connection in MULTI in the pool; and cluster mode, where
 * MULTI is refused in pipelines.
 */
#include "vktest.h"
#include "servers.h"
#include "clusters.h"
#include "vkclient.h"

#include <stdio.h>
#include <string.h>

#define PREFIX "command not allowed on a shared connection: "

static vkt_server *server;
static vk_client *checker;   /* a client of its own, to look at the server */

static vk_client *new_client(const char *user, const char *password)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_pool_size(cfg, 1);
    vk_config_set_max_retries(cfg, -1);
    if (password != NULL)
        vk_config_set_static_password(cfg, user, password);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static void lengths(int argc, const char *const *argv, size_t *lens)
{
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
}

static vk_status run(vk_client *c, vk_reply **out, int argc, const char *const *argv)
{
    size_t lens[8];
    lengths(argc, argv, lens);
    return vk_client_command(out, c, NULL, argc, argv, lens);
}

static vk_status append(vk_pipeline *p, int argc, const char *const *argv)
{
    size_t lens[8];
    lengths(argc, argv, lens);
    return vk_pipeline_append(p, argc, argv, lens);
}

/* The reply to a command as text ("(nil)", the integer, the status, the
 * string, or "ERR ..."), in buf. */
static const char *text(vk_client *c, char *buf, size_t cap, int argc,
                        const char *const *argv)
{
    vk_reply *r = NULL;
    if (run(c, &r, argc, argv) != VK_OK) {
        snprintf(buf, cap, "failed: %s", vk_last_error());
        return buf;
    }
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    if (vk_reply_get_type(r) == VK_REPLY_INTEGER)
        snprintf(buf, cap, "%lld", vk_reply_get_integer(r));
    else if (s == NULL)
        snprintf(buf, cap, "(nil)");
    else
        snprintf(buf, cap, "%.*s", (int)len, s);
    vk_reply_free(r);
    return buf;
}

static long long client_id(vk_client *c)
{
    const char *id[] = {"CLIENT", "ID"};
    vk_reply *r = NULL;
    CHECK_OK(run(c, &r, 2, id));
    long long n = vk_reply_get_integer(r);
    vk_reply_free(r);
    return n;
}

/* True when INFO commandstats has a line for the command, i.e. the server
 * was sent it (executed, failed or rejected). name is lower case, e.g.
 * "select" or "client|reply". */
static bool server_saw(const char *name)
{
    const char *info[] = {"INFO", "commandstats"};
    vk_reply *r = NULL;
    CHECK_OK(run(checker, &r, 2, info));
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    char line[64];
    snprintf(line, sizeof line, "cmdstat_%s:", name);
    bool seen = s != NULL && memmem(s, len, line, strlen(line)) != NULL;
    vk_reply_free(r);
    return seen;
}

static void reset_stats(void)
{
    const char *reset[] = {"CONFIG", "RESETSTAT"};
    vk_reply *r = NULL;
    CHECK_OK(run(checker, &r, 2, reset));
    vk_reply_free(r);
}

typedef struct refused {
    int argc;
    const char *argv[4];
    const char *stat;       /* its INFO commandstats name */
    const char *message;    /* the full vk_last_error() */
} refused;

#define TRANSACTION \
    "send MULTI ... EXEC in one pipeline (or use a transaction pipeline or a session)"
#define PUBSUB "use a dedicated connection (a pub/sub API is to come)"

static const refused every_refused[] = {
    {2, {"SELECT", "1"}, "select",
     PREFIX "SELECT changes the database of the connection; choose the database with the db "
            "connection option"},
    {1, {"MULTI"}, "multi", PREFIX "MULTI leaves the connection in a transaction; " TRANSACTION},
    {1, {"EXEC"}, "exec", PREFIX "EXEC without MULTI; " TRANSACTION},
    {1, {"DISCARD"}, "discard", PREFIX "DISCARD without MULTI; " TRANSACTION},
    {2, {"WATCH", "k"}, "watch",
     PREFIX "WATCH leaves keys watched on the connection; use a session"},
    {1, {"UNWATCH"}, "unwatch",
     PREFIX "UNWATCH acts on keys watched by the connection; use a session"},
    {2, {"SUBSCRIBE", "ch"}, "subscribe",
     PREFIX "SUBSCRIBE turns the connection into a subscriber; " PUBSUB},
    {2, {"PSUBSCRIBE", "ch*"}, "psubscribe",
     PREFIX "PSUBSCRIBE turns the connection into a subscriber; " PUBSUB},
    {2, {"SSUBSCRIBE", "ch"}, "ssubscribe",
     PREFIX "SSUBSCRIBE turns the connection into a subscriber; " PUBSUB},
    {1, {"UNSUBSCRIBE"}, "unsubscribe",
     PREFIX "UNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB},
    {1, {"PUNSUBSCRIBE"}, "punsubscribe",
     PREFIX "PUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB},
    {1, {"SUNSUBSCRIBE"}, "sunsubscribe",
     PREFIX "SUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB},
    {1, {"MONITOR"}, "monitor",
     PREFIX "MONITOR turns the connection into a stream of every command; " PUBSUB},
    {1, {"RESET"}, "reset",
     PREFIX "RESET drops the database, user and protocol of the connection; set them with the "
            "db, auth and protocol config options"},
    {1, {"QUIT"}, "quit", PREFIX "QUIT closes the connection; close the client with its close call"},
    {2, {"HELLO", "3"}, "hello",
     PREFIX "HELLO changes the protocol and user of the connection; set them with the protocol "
            "and auth config options"},
    {2, {"AUTH", "secret"}, "auth",
     PREFIX "AUTH changes the user of the connection; set the credentials with the auth config "
            "options"},
    {1, {"READONLY"}, "readonly",
     PREFIX "READONLY changes how the connection reads in a cluster; the client chooses the "
            "nodes it reads from"},
    {1, {"READWRITE"}, "readwrite",
     PREFIX "READWRITE changes how the connection reads in a cluster; the client chooses the "
            "nodes it reads from"},
    {1, {"ASKING"}, "asking",
     PREFIX "ASKING applies to the next command on the connection; the client follows ASK "
            "redirects itself"},
    {1, {"SYNC"}, "sync",
     PREFIX "SYNC turns the connection into a replication stream; use a dedicated connection"},
    {3, {"PSYNC", "?", "-1"}, "psync",
     PREFIX "PSYNC turns the connection into a replication stream; use a dedicated connection"},
    {3, {"REPLCONF", "listening-port", "1"}, "replconf",
     PREFIX "REPLCONF configures the connection as a replica; use a dedicated connection"},
    {3, {"CLIENT", "REPLY", "OFF"}, "client|reply",
     PREFIX "CLIENT REPLY stops the replies of the connection; every command needs its reply"},
    {3, {"CLIENT", "TRACKING", "ON"}, "client|tracking",
     PREFIX "CLIENT TRACKING sends invalidations on the connection; use a dedicated connection"},
    {3, {"CLIENT", "CACHING", "YES"}, "client|caching",
     PREFIX "CLIENT CACHING changes tracking for the next command on the connection; use a "
            "dedicated connection"},
    {3, {"CLIENT", "SETNAME", "mine"}, "client|setname",
     PREFIX "CLIENT SETNAME names the connection for every later caller; use a dedicated "
            "connection"},
    {4, {"CLIENT", "SETINFO", "LIB-NAME", "mine"}, "client|setinfo",
     PREFIX "CLIENT SETINFO labels the connection for every later caller; use a dedicated "
            "connection"},
    {3, {"CLIENT", "NO-EVICT", "on"}, "client|no-evict",
     PREFIX "CLIENT NO-EVICT changes the eviction of the connection for every later caller; "
            "use a dedicated connection"},
    {3, {"CLIENT", "NO-TOUCH", "on"}, "client|no-touch",
     PREFIX "CLIENT NO-TOUCH changes what every later command on the connection does to key "
            "access times; use a dedicated connection"},
    {3, {"CLIENT", "CAPA", "redirect"}, "client|capa",
     PREFIX "CLIENT CAPA changes the replies of the connection for every later caller; use a "
            "dedicated connection"},
    {3, {"CLIENT", "IMPORT-SOURCE", "on"}, "client|import-source",
     PREFIX "CLIENT IMPORT-SOURCE marks the connection for every later caller; use a dedicated "
            "connection"},
};
#define REFUSED_COUNT (sizeof every_refused / sizeof every_refused[0])

static void test_every_listed_command_is_refused_unsent(void)
{
    vk_client *c = new_client(NULL, NULL);
    long long id = client_id(c);
    reset_stats();
    for (size_t i = 0; i < REFUSED_COUNT; i++) {
        const refused *t = &every_refused[i];
        vk_reply *r = (vk_reply *)&id;
        CHECK_FAILS(run(c, &r, t->argc, t->argv), VK_ERR_COMMAND_NOT_ALLOWED, t->message);
        CHECK(r == NULL);
        CHECK_EQ_STR(vk_strerror(vk_last_status()), "command not allowed on a shared connection");
    }
    /* The witness works: a command that was sent shows up. */
    const char *echo[] = {"ECHO", "seen"};
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 2, echo), "seen");
    CHECK(server_saw("echo"));
    for (size_t i = 0; i < REFUSED_COUNT; i++)
        VKT_CHECK_(!server_saw(every_refused[i].stat), "%s reached the server",
                   every_refused[i].stat);
    /* Same connection all along: nothing was dropped or replaced. */
    CHECK_EQ_INT(client_id(c), id);
    vk_client_free(c);
}

static void test_refused_select_leaves_the_database(void)
{
    vk_client *c = new_client(NULL, NULL);   /* pool of one connection */
    const char *set[] = {"SET", "refused:db", "zero"};
    const char *get[] = {"GET", "refused:db"};
    const char *select[] = {"SELECT", "1"};
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 3, set), "OK");
    vk_reply *r = NULL;
    CHECK_EQ_INT(run(c, &r, 2, select), VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK_EQ_STR(text(c, buf, sizeof buf, 2, get), "zero");

    /* The right way: the db option. */
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_db(cfg, 1);
    vk_client *db1 = NULL;
    CHECK_OK(vk_client_new(&db1, cfg));
    vk_config_free(cfg);
    CHECK_EQ_STR(text(db1, buf, sizeof buf, 2, get), "(nil)");
    vk_client_free(db1);
    vk_client_free(c);
}

static void test_refused_multi_leaves_no_transaction(void)
{
    vk_client *c = new_client(NULL, NULL);
    const char *multi[] = {"MULTI"};
    const char *set[] = {"SET", "refused:multi", "v"};
    vk_reply *r = NULL;
    CHECK_EQ_INT(run(c, &r, 1, multi), VK_ERR_COMMAND_NOT_ALLOWED);
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 3, set), "OK");   /* not QUEUED */
    const char *subscribe[] = {"SUBSCRIBE", "ch"};
    CHECK_EQ_INT(run(c, &r, 2, subscribe), VK_ERR_COMMAND_NOT_ALLOWED);
    const char *ping[] = {"PING"};
    CHECK_EQ_STR(text(c, buf, sizeof buf, 1, ping), "PONG");
    vk_client_free(c);
}

static void test_matching_is_case_insensitive_and_binary_safe(void)
{
    vk_client *c = new_client(NULL, NULL);
    vk_reply *r = NULL;
    const char *lower[] = {"select", "1"};
    const char *mixed[] = {"MuLtI"};
    const char *reply_off[] = {"client", "Reply", "off"};
    CHECK_EQ_INT(run(c, &r, 2, lower), VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK(strstr(vk_last_error(), "SELECT changes the database") != NULL);
    CHECK_EQ_INT(run(c, &r, 1, mixed), VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK_EQ_INT(run(c, &r, 3, reply_off), VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK(strstr(vk_last_error(), "CLIENT REPLY") != NULL);

    /* Lengths count, not NUL bytes: "SELECT\0" is another (unknown)
     * command, which the server answers itself. */
    const char *nul[] = {"SELECT\0", "1"};
    const size_t nul_len[] = {7, 1};
    CHECK_OK(vk_client_command(&r, c, NULL, 2, nul, nul_len));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR);
    vk_reply_free(r);
    /* A prefix of a refused name is not refused either. */
    const char *sel[] = {"SELEC", "1"};
    CHECK_OK(run(c, &r, 2, sel));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR);
    vk_reply_free(r);

    /* CLIENT subcommands that leave the connection alone go through. */
    const char *getname[] = {"CLIENT", "GETNAME"};
    CHECK_OK(run(c, &r, 2, getname));
    CHECK(vk_reply_get_type(r) == VK_REPLY_NIL);
    vk_reply_free(r);
    const char *client_alone[] = {"CLIENT"};
    CHECK_OK(run(c, &r, 1, client_alone));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR);
    vk_reply_free(r);
    vk_client_free(c);
}

static const vk_reply *element(const vk_reply *r, size_t i)
{
    return vk_reply_get_element(r, i);
}

static bool is_text(const vk_reply *r, const char *want)
{
    size_t len = 0;
    const char *s = vk_reply_get_string(r, &len);
    return s != NULL && len == strlen(want) && memcmp(s, want, len) == 0;
}

static void test_pipeline_transaction(void)
{
    vk_client *c = new_client(NULL, NULL);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *del[] = {"DEL", "refused:tx", "refused:count"};
    const char *multi[] = {"MULTI"};
    const char *set[] = {"SET", "refused:tx", "v"};
    const char *incr[] = {"INCR", "refused:count"};
    const char *exec[] = {"exec"};   /* any case */
    const char *get[] = {"GET", "refused:tx"};
    CHECK_OK(append(p, 3, del));
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 3, set));
    CHECK_OK(append(p, 2, incr));
    CHECK_OK(append(p, 1, exec));
    CHECK_OK(append(p, 2, get));
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 6);
    CHECK(is_text(element(r, 1), "OK"));
    CHECK(is_text(element(r, 2), "QUEUED"));
    CHECK(is_text(element(r, 3), "QUEUED"));
    const vk_reply *ran = element(r, 4);
    CHECK(vk_reply_get_type(ran) == VK_REPLY_ARRAY && vk_reply_get_length(ran) == 2);
    CHECK(is_text(element(ran, 0), "OK"));
    CHECK_EQ_INT(vk_reply_get_integer(element(ran, 1)), 1);
    CHECK(is_text(element(r, 5), "v"));
    vk_reply_free(r);

    /* MULTI ... DISCARD, and two transactions in one pipeline. */
    const char *discard[] = {"DISCARD"};
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 2, incr));
    CHECK_OK(append(p, 1, discard));
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 2, incr));
    CHECK_OK(append(p, 1, exec));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 6);
    CHECK(is_text(element(r, 2), "OK"));
    CHECK_EQ_INT(vk_reply_get_integer(element(element(r, 5), 0)), 2);   /* discarded: 1 + 1 */
    vk_reply_free(r);

    /* The connection is out of MULTI. */
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 3, set), "OK");
    vk_pipeline_free(p);
    vk_client_free(c);
}

/* The pipeline refuses the command at append and then at exec, with the
 * same text, sends nothing of it, and is empty and usable afterwards. */
static void check_refused_pipeline(vk_client *c, int argc, const char *const *argv,
                                   const char *open_block, const char *message)
{
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *set[] = {"SET", "refused:pipe", "sent"};
    const char *multi[] = {"MULTI"};
    CHECK_OK(append(p, 3, set));
    if (open_block != NULL)
        CHECK_OK(append(p, 1, multi));
    CHECK_FAILS(append(p, argc, argv), VK_ERR_COMMAND_NOT_ALLOWED, message);
    vk_reply *r = (vk_reply *)&p;
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_COMMAND_NOT_ALLOWED, message);
    CHECK(r == NULL);
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    const char *get[] = {"GET", "refused:pipe"};
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 2, get), "(nil)");
    /* Emptied: the next exec runs what is appended then. */
    const char *ping[] = {"PING"};
    CHECK_OK(append(p, 1, ping));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK(is_text(element(r, 0), "PONG"));
    vk_reply_free(r);
    vk_pipeline_free(p);
}

static void test_pipeline_refusals(void)
{
    vk_client *c = new_client(NULL, NULL);
    const char *del[] = {"DEL", "refused:pipe"};
    vk_reply *r = NULL;
    CHECK_OK(run(c, &r, 2, del));
    vk_reply_free(r);
    reset_stats();

    const char *exec[] = {"EXEC"};
    const char *discard[] = {"DISCARD"};
    const char *multi[] = {"MULTI"};
    const char *multi_arg[] = {"MULTI", "x"};
    const char *exec_arg[] = {"EXEC", "x"};
    const char *watch[] = {"WATCH", "refused:pipe"};
    const char *unwatch[] = {"UNWATCH"};
    const char *select[] = {"SELECT", "1"};
    check_refused_pipeline(c, 1, exec, NULL, PREFIX "EXEC without MULTI; " TRANSACTION);
    check_refused_pipeline(c, 1, discard, NULL, PREFIX "DISCARD without MULTI; " TRANSACTION);
    check_refused_pipeline(c, 1, multi, "open",
                           PREFIX "MULTI inside MULTI; transactions cannot be nested");
    check_refused_pipeline(c, 2, multi_arg, NULL,
                           PREFIX "MULTI, EXEC and DISCARD take no arguments");
    check_refused_pipeline(c, 2, exec_arg, "open",
                           PREFIX "MULTI, EXEC and DISCARD take no arguments");
    check_refused_pipeline(c, 2, watch, NULL, every_refused[4].message);
    check_refused_pipeline(c, 2, watch, "open", every_refused[4].message);
    check_refused_pipeline(c, 1, unwatch, "open", every_refused[5].message);
    check_refused_pipeline(c, 2, select, "open", every_refused[0].message);

    /* A MULTI still open at exec: refused, nothing sent. */
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *set[] = {"SET", "refused:pipe", "sent"};
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 3, set));
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_COMMAND_NOT_ALLOWED,
                PREFIX "MULTI without EXEC or DISCARD; end the transaction in the same pipeline");
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    vk_pipeline_free(p);

    CHECK(!server_saw("multi"));
    CHECK(!server_saw("set"));
    vk_client_free(c);
}

static void test_execabort_and_an_error_inside_exec_keep_a_clean_connection(void)
{
    vk_client *c = new_client(NULL, NULL);
    long long id = client_id(c);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *multi[] = {"MULTI"};
    const char *bad[] = {"SET", "refused:abort"};   /* wrong arity: refused when queued */
    const char *exec[] = {"EXEC"};
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 2, bad));
    CHECK_OK(append(p, 1, exec));
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK(vk_reply_get_type(element(r, 1)) == VK_REPLY_ERROR);
    size_t len = 0;
    const char *s = vk_reply_get_string(element(r, 2), &len);
    CHECK(vk_reply_get_type(element(r, 2)) == VK_REPLY_ERROR && len > 9 &&
          memcmp(s, "EXECABORT", 9) == 0);
    vk_reply_free(r);
    vk_pipeline_free(p);
    /* The server discarded the transaction: the connection stays pooled
     * and is not in MULTI. */
    CHECK_EQ_INT(client_id(c), id);
    const char *set[] = {"SET", "refused:abort", "v"};
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 3, set), "OK");

    /* An error in the middle of a transaction that ran: EXEC's array holds
     * it, and the connection is out of MULTI, still pooled. */
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *incr[] = {"INCR", "refused:abort"};   /* "v" is not a number */
    const char *get[] = {"GET", "refused:abort"};
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 2, incr));
    CHECK_OK(append(p, 2, get));
    CHECK_OK(append(p, 1, exec));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    const vk_reply *ran = element(r, 3);
    CHECK(vk_reply_get_type(ran) == VK_REPLY_ARRAY && vk_reply_get_length(ran) == 2);
    CHECK(vk_reply_get_type(element(ran, 0)) == VK_REPLY_ERROR);
    CHECK(is_text(element(ran, 1), "v"));
    vk_reply_free(r);
    vk_pipeline_free(p);
    CHECK_EQ_INT(client_id(c), id);
    CHECK_EQ_STR(text(c, buf, sizeof buf, 3, set), "OK");
    vk_client_free(c);
}

static void test_a_refused_discard_closes_the_connection(void)
{
    /* A user who may not DISCARD: the server refuses the DISCARD and keeps
     * the connection in MULTI. That connection must not be pooled. */
    const char *setuser[] = {"ACL", "SETUSER", "nodiscard", "on", ">nodiscard-pw",
                             "~*", "+@all", "-discard"};
    char *ok = vkt_server_cmd(server, setuser, 8);
    CHECK(ok != NULL && strcmp(ok, "+OK") == 0);
    free(ok);
    vk_client *c = new_client("nodiscard", "nodiscard-pw");
    long long id = client_id(c);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *multi[] = {"MULTI"};
    const char *set[] = {"SET", "refused:nodiscard", "v"};
    const char *discard[] = {"DISCARD"};
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 3, set));
    CHECK_OK(append(p, 1, discard));
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK(is_text(element(r, 1), "QUEUED"));
    CHECK(vk_reply_get_type(element(r, 2)) == VK_REPLY_ERROR);
    vk_reply_free(r);
    vk_pipeline_free(p);
    /* A new connection, out of MULTI. */
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 3, set), "OK");
    CHECK(client_id(c) != id);
    vk_client_free(c);
}

static void test_a_timeout_inside_a_transaction_closes_the_connection(void)
{
    vk_client *c = new_client(NULL, NULL);
    long long id = client_id(c);
    /* Every client waits while the server is paused: the replies of the
     * transaction come after the caller gave up. */
    const char *pause[] = {"CLIENT", "PAUSE", "400", "ALL"};
    char *ok = vkt_server_cmd(server, pause, 4);
    CHECK(ok != NULL && strcmp(ok, "+OK") == 0);
    free(ok);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *multi[] = {"MULTI"};
    const char *set[] = {"SET", "refused:paused", "v"};
    const char *exec[] = {"EXEC"};
    CHECK_OK(append(p, 1, multi));
    CHECK_OK(append(p, 3, set));
    CHECK_OK(append(p, 1, exec));
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 100));
    vk_reply *r = NULL;
    CHECK_EQ_INT(vk_pipeline_exec(&r, p, ctx), VK_ERR_TIMEOUT);
    vk_context_free(ctx);
    vk_pipeline_free(p);
    vkt_sleep_ms(500);
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 3, set), "OK");
    CHECK(client_id(c) != id);
    vk_client_free(c);
}

/* ---- cluster mode ---------------------------------------------------------- */

static void test_cluster(void)
{
    vkt_cluster *cluster = vkt_cluster_start(3, 0, NULL, false);
    CHECK(cluster != NULL);
    if (cluster == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_cluster(cfg);
    vk_config_add_cluster_address(cfg, vkt_server_address(vkt_cluster_node(cluster, 0)));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);

    vk_reply *r = NULL;
    CHECK_FAILS(run(c, &r, every_refused[0].argc, every_refused[0].argv),
                VK_ERR_COMMAND_NOT_ALLOWED, every_refused[0].message);
    CHECK_FAILS(run(c, &r, every_refused[1].argc, every_refused[1].argv),
                VK_ERR_COMMAND_NOT_ALLOWED, every_refused[1].message);
    const char *readonly[] = {"readonly"};
    CHECK_EQ_INT(run(c, &r, 1, readonly), VK_ERR_COMMAND_NOT_ALLOWED);

    /* A pipeline is split by node: no transaction in it. */
    const char *cluster_text =
        PREFIX "MULTI, EXEC and DISCARD in a cluster pipeline, which is split by node: a "
               "transaction cannot be kept on one connection (use a transaction pipeline, its "
               "keys in one slot)";
    const char *multi[] = {"MULTI"};
    const char *exec[] = {"EXEC"};
    const char *set[] = {"SET", "{refused}:k", "v"};
    const char *get[] = {"GET", "{refused}:k"};
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK_FAILS(append(p, 1, multi), VK_ERR_COMMAND_NOT_ALLOWED, cluster_text);
    CHECK_OK(append(p, 3, set));
    CHECK_FAILS(append(p, 1, exec), VK_ERR_COMMAND_NOT_ALLOWED, cluster_text);
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_COMMAND_NOT_ALLOWED, cluster_text);
    char buf[64];
    CHECK_EQ_STR(text(c, buf, sizeof buf, 2, get), "(nil)");   /* nothing was sent */
    const char *subscribe[] = {"SUBSCRIBE", "ch"};
    CHECK_FAILS(append(p, 2, subscribe), VK_ERR_COMMAND_NOT_ALLOWED, every_refused[6].message);
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_COMMAND_NOT_ALLOWED,
                every_refused[6].message);

    /* The client and the pipeline stay usable. */
    CHECK_OK(append(p, 3, set));
    CHECK_OK(append(p, 2, get));
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK(is_text(element(r, 1), "v"));
    vk_reply_free(r);
    vk_pipeline_free(p);
    vk_client_free(c);
    vkt_cluster_stop(cluster);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL)
        return 1;
    checker = new_client(NULL, NULL);
    RUN(test_every_listed_command_is_refused_unsent);
    RUN(test_refused_select_leaves_the_database);
    RUN(test_refused_multi_leaves_no_transaction);
    RUN(test_matching_is_case_insensitive_and_binary_safe);
    RUN(test_pipeline_transaction);
    RUN(test_pipeline_refusals);
    RUN(test_execabort_and_an_error_inside_exec_keep_a_clean_connection);
    RUN(test_a_refused_discard_closes_the_connection);
    RUN(test_a_timeout_inside_a_transaction_closes_the_connection);
    vk_client_free(checker);
    vkt_server_stop(server);
    RUN(test_cluster);
    return vkt_finish();
}
