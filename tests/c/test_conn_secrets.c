/*
 * No copy of a password is left in freed memory (VKTEST_NEEDS_SERVER).
 *
 * The test interposes free() and realloc() for everything the static
 * library does (VKTEST_WRAP below links with -Wl,--wrap): every block
 * being freed is scanned for pieces of the password before it goes, and
 * every realloc() moves its block, so that a buffer grown while it holds
 * a password is caught whether or not the allocator could have grown it
 * in place. The passwords are real: an ACL user whose password is 2 KB
 * (the size of a GCP access token), used for the handshake through the
 * public client and for re-authentication of an open connection, and a
 * 1.5 MB one that makes the output buffer big enough to be dropped after
 * the write.
 *
 * VKTEST_WRAP: free realloc
 */
#include "vktest.h"
#include "servers.h"
#include "conns.h"
#include "vkclient.h"
#include "conn.h"
#include "mux.h"

#include <malloc.h>
#include <stdatomic.h>

#if defined(__has_include)
#  if __has_include(<valgrind/memcheck.h>)
#    include <valgrind/memcheck.h>
#  endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#  define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

#define TOKEN_LEN 2048
#define HUGE_LEN (1536 * 1024)
#define USER "token-user"

static vkt_server *server;
static char token[TOKEN_LEN + 1];      /* never freed: not scanned */
static char *huge_secret;

/* ---- scanning freed blocks --------------------------------------------------------- */

static const char *volatile scanned_secret;   /* NULL: not armed */
static volatile size_t scanned_len;
static atomic_int leaks;

void __real_free(void *p);
void *__real_realloc(void *p, size_t n);
void __wrap_free(void *p);
void *__wrap_realloc(void *p, size_t n);

/* True when block holds one of 64 16-byte pieces spread over the secret. */
static bool holds_secret(const char *block, size_t size)
{
    const char *secret = scanned_secret;
    size_t len = scanned_len;
    size_t step = len / 64 > 16 ? len / 64 : 16;
    for (size_t at = 0; at + 16 <= len; at += step)
        if (memmem(block, size, secret + at, 16) != NULL)
            return true;
    return false;
}

void __wrap_free(void *p)
{
    if (p != NULL && scanned_secret != NULL) {
        size_t size = malloc_usable_size(p);
        /* Bytes never written are scanned too: what matters is what the
         * block holds when it goes. */
        (void)VALGRIND_MAKE_MEM_DEFINED(p, size);
        if (holds_secret(p, size))
            atomic_fetch_add(&leaks, 1);
    }
    __real_free(p);
}

/* Always moves the block, through the scanning free(). */
void *__wrap_realloc(void *p, size_t n)
{
    if (p == NULL)
        return malloc(n);
    if (n == 0) {
        __wrap_free(p);
        return NULL;
    }
    void *moved = malloc(n);
    if (moved == NULL)
        return NULL;
    size_t old = malloc_usable_size(p);
    memcpy(moved, p, old < n ? old : n);
    __wrap_free(p);
    return moved;
}

static void arm(const char *secret, size_t len)
{
    atomic_store(&leaks, 0);
    scanned_len = len;
    scanned_secret = secret;
}

static int disarm(void)
{
    scanned_secret = NULL;
    return atomic_load(&leaks);
}

/* ---- building blocks ----------------------------------------------------------------- */

static void make_secret(char *out, size_t len, unsigned seed)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        out[i] = alphabet[(seed >> 16) % 64];
    }
    out[len] = '\0';
}

static bool whoami_is(vk_conn *c, const char *user)
{
    const char *whoami[] = { "ACL", "WHOAMI" };
    redisReply *r = vkt_conn_run(c, 2, whoami);
    bool ok = r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, user) == 0;
    vk__reply_free(r);
    return ok;
}

/* ---- tests --------------------------------------------------------------------------- */

/* AUTH with the token is followed by SELECT and PING in the same buffer,
 * which has to grow after the token is in it. */
static void test_handshake_with_long_token(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    CHECK_OK(vk_config_set_static_password(cfg, USER, token));
    CHECK_OK(vk_config_set_db(cfg, 1));
    arm(token, TOKEN_LEN);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    const char *set[] = { "SET", "secrets:k", "v" };
    size_t lens[] = { 3, 9, 1 };
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, c, NULL, 3, set, lens));
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
    CHECK_EQ_INT(disarm(), 0);
}

static void test_reauth_with_long_token(void)
{
    vk_config *cfg = NULL;
    vk_conn *conn = vkt_conn_open(vkt_server_address(server), &cfg);
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    arm(token, TOKEN_LEN);
    CHECK_OK(vk__conn_auth(conn, USER, token, NULL));
    CHECK(whoami_is(conn, USER));
    /* Requests after the re-auth grow the same buffer again. */
    char big[8192];
    memset(big, 'x', sizeof big);
    const char *set[] = { "SET", "secrets:big", big };
    size_t lens[] = { 3, 11, sizeof big };
    redisReply *r = NULL;
    bool sent = false;
    CHECK_OK(vk__conn_command(conn, &r, 3, set, lens, NULL, &sent));
    vk__reply_free(r);
    vk__conn_close(conn);
    CHECK_EQ_INT(disarm(), 0);
    vk_config_free(cfg);
}

/* A password over 1 MB makes the output buffer one that is freed after
 * the write rather than kept. The server refuses it; no copy may stay. */
static void test_reauth_with_huge_password(void)
{
    vk_config *cfg = NULL;
    vk_conn *conn = vkt_conn_open(vkt_server_address(server), &cfg);
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    arm(huge_secret, HUGE_LEN);
    CHECK_FAILS(vk__conn_auth(conn, USER, huge_secret, NULL), VK_ERR_AUTH,
                "authentication failed: WRONGPASS invalid username-password pair or user is disabled.");
    CHECK(whoami_is(conn, "default"));
    vk__conn_close(conn);
    CHECK_EQ_INT(disarm(), 0);
    vk_config_free(cfg);
}

static void count_completion(void *userdata, void *op, vk_status status, redisReply *reply,
                             bool sent)
{
    (void)op, (void)status, (void)sent;
    (*(int *)userdata)++;
    vk__reply_free(reply);
}

/* The multiplexed connection's output: a password queued among other
 * requests, then the buffer grown, compacted after a partial write, a
 * request cancelled out of it, written, and the mux freed with requests
 * still in line. No freed block may hold the password. */
static void test_mux_output_keeps_no_copy(void)
{
    int completions = 0;
    vk_mux *m = NULL;
    CHECK_OK(vk__mux_new(&m, 64, count_completion, &completions));
    arm(token, TOKEN_LEN);
    const char *ping[] = { "PING" };
    size_t ping_len[] = { 4 };
    int ops[8];
    CHECK_OK(vk__mux_submit(m, &ops[0], 1, ping, ping_len));
    const char *auth[] = { "AUTH", USER, token };
    size_t auth_lens[] = { 4, strlen(USER), TOKEN_LEN };
    CHECK_OK(vk__mux_submit_secret(m, &ops[1], 3, auth, auth_lens, true));
    static char big[16384];
    memset(big, 'x', sizeof big);
    const char *set[] = { "SET", "secrets:big", big };
    size_t set_lens[] = { 3, 11, sizeof big };
    CHECK_OK(vk__mux_submit(m, &ops[2], 3, set, set_lens));   /* grows the buffer */
    size_t len;
    vk__mux_output(m, &len);
    vk__mux_wrote(m, len / 2);
    CHECK_OK(vk__mux_submit(m, &ops[3], 1, ping, ping_len));
    CHECK_OK(vk__mux_submit(m, &ops[4], 3, set, set_lens));   /* compacts, then grows */
    CHECK(vk__mux_cancel(m, &ops[3]));                        /* removed from the middle */
    vk__mux_output(m, &len);
    vk__mux_wrote(m, len);
    /* Queued and written again, then the mux is freed unwritten. */
    CHECK_OK(vk__mux_submit_secret(m, &ops[5], 3, auth, auth_lens, true));
    CHECK_OK(vk__mux_submit(m, &ops[6], 3, set, set_lens));
    vk__mux_free(m);
    CHECK_EQ_INT(completions, 7);
    CHECK_EQ_INT(disarm(), 0);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    make_secret(token, TOKEN_LEN, 14);
    huge_secret = malloc(HUGE_LEN + 1);
    server = vkt_server_start(&(vkt_server_opts){ 0 });
    if (server == NULL || huge_secret == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    make_secret(huge_secret, HUGE_LEN, 15);
    char *rule = malloc(TOKEN_LEN + 2);
    snprintf(rule, TOKEN_LEN + 2, ">%s", token);
    const char *acl[] = { "ACL", "SETUSER", USER, "on", rule, "~*", "&*", "+@all" };
    char *line = vkt_server_cmd(server, acl, 8);
    CHECK_EQ_STR(line, "+OK");
    free(line);
    free(rule);

    RUN(test_handshake_with_long_token);
    RUN(test_reauth_with_long_token);
    RUN(test_reauth_with_huge_password);
    RUN(test_mux_output_keeps_no_copy);
    vkt_server_stop(server);
    free(huge_secret);
    return vkt_finish();
}
