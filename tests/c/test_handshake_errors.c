/*
 * How handshake errors are reported (VKTEST_NEEDS_SERVER): only a refusal
 * of the credentials is an authentication failure.
 *
 * HELLO is sent by the handshake only for protocol 3, which needs hiredis
 * >= 1.0; in builds on hiredis 0.14 the classifier is checked on the error
 * texts real servers give to HELLO, sent here on an open connection: a
 * protocol version the server does not have (NOPROTO), a server without
 * HELLO (renamed away, as on servers older than 6), wrong credentials, a
 * missing AUTH on a server that requires it, and a syntax error. Servers
 * do not check ACL permissions for HELLO or AUTH, so NOPERM is checked on
 * the text a real server gives for a forbidden command. The AUTH and
 * SELECT steps are checked end to end through the public client.
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"
#include "conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define PASSWORD "handshake-secret"

static vkt_server *plain;
static vkt_server *no_hello;
static vkt_server *secured;

/* The error text a server gives to a command sent on a fresh connection,
 * malloc'd, or NULL when the reply is not an error. */
static char *error_text(vkt_server *s, int argc, const char *const *argv)
{
    vk_endpoint ep;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(s));
    char *text = NULL;
    if (vk__config_prepare(cfg, NULL) == VK_OK &&
        vk__parse_address(&ep, vkt_server_address(s)) == VK_OK) {
        vk_conn_params params = { .cfg = cfg };
        vk_conn *conn = NULL;
        if (vk__conn_open(&conn, &ep, &params, NULL) == VK_OK) {
            size_t lens[8];
            for (int i = 0; i < argc; i++)
                lens[i] = strlen(argv[i]);
            redisReply *r = NULL;
            bool sent = false;
            if (vk__conn_command(conn, &r, argc, argv, lens, NULL, &sent) == VK_OK &&
                r->type == REDIS_REPLY_ERROR)
                text = strndup(r->str, r->len);
            vk__reply_free(r);
            vk__conn_close(conn);
        }
    }
    vk_config_free(cfg);
    return text;
}

/* The first reply line to a command sent on a raw socket, for a server
 * whose handshake would fail: the error text, malloc'd, or NULL. */
static char *raw_error_text(vkt_server *s, const char *request)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)vkt_server_port(s)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char buf[512];
    ssize_t got = -1;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        write(fd, request, strlen(request)) == (ssize_t)strlen(request))
        got = read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    if (got <= 0 || buf[0] != '-')
        return NULL;
    buf[got] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf + 1);
}

static void check_classified(const char *step, const char *text, vk_status code,
                             const char *expected)
{
    CHECK(text != NULL);
    if (text == NULL)
        return;
    CHECK_FAILS(vk__handshake_error(step, text, strlen(text)), code, expected);
}

static void test_hello_unsupported_protocol(void)
{
    const char *hello[] = { "HELLO", "4" };
    char *text = error_text(plain, 2, hello);
    CHECK_EQ_STR(text, "NOPROTO unsupported protocol version");
    check_classified("HELLO", text, VK_ERR_PROTOCOL,
                     "protocol error: HELLO: NOPROTO unsupported protocol version");
    free(text);
}

static void test_hello_unknown_to_server(void)
{
    const char *hello[] = { "HELLO", "3", "AUTH", "default", PASSWORD };
    char *text = error_text(no_hello, 5, hello);
    /* The server quotes the arguments back, password included ... */
    CHECK(text != NULL && strstr(text, PASSWORD) != NULL);
    /* ... which the message leaves out. */
    check_classified("HELLO", text, VK_ERR_PROTOCOL,
                     "protocol error: HELLO: ERR unknown command 'HELLO'");
    free(text);
}

static void test_hello_wrong_credentials(void)
{
    const char *hello[] = { "HELLO", "3", "AUTH", "nobody", PASSWORD };
    char *text = error_text(plain, 5, hello);
    check_classified("HELLO", text, VK_ERR_AUTH,
                     "authentication failed: WRONGPASS invalid username-password pair or user is disabled.");
    free(text);
}

static void test_hello_without_auth_on_secured_server(void)
{
    char *text = raw_error_text(secured, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
    CHECK(text != NULL && strncmp(text, "NOAUTH ", 7) == 0);
    char expected[512];
    snprintf(expected, sizeof expected, "authentication failed: %s", text != NULL ? text : "");
    check_classified("HELLO", text, VK_ERR_AUTH, expected);
    free(text);
}

static void test_hello_other_error(void)
{
    const char *hello[] = { "HELLO", "3", "NOSUCHOPTION" };
    char *text = error_text(plain, 3, hello);
    CHECK(text != NULL && strncmp(text, "ERR ", 4) == 0);
    char expected[512];
    snprintf(expected, sizeof expected, "server error reply: HELLO: %s", text != NULL ? text : "");
    check_classified("HELLO", text, VK_ERR_SERVER, expected);
    free(text);
}

/* NOPERM while authenticating is a refusal of these credentials. */
static void test_noperm_while_authenticating(void)
{
    const char *flushall[] = { "FLUSHALL" };
    char *text = NULL;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(plain));
    vk_config_set_static_password(cfg, "limited", PASSWORD);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_reply *r = NULL;
    size_t lens[] = { 8 };
    if (c != NULL && vk_client_command(&r, c, NULL, 1, flushall, lens) == VK_OK &&
        vk_reply_get_type(r) == VK_REPLY_ERROR) {
        size_t len = 0;
        const char *s = vk_reply_get_string(r, &len);
        text = strndup(s, len);
    }
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
    CHECK(text != NULL && strncmp(text, "NOPERM ", 7) == 0);
    char expected[512];
    snprintf(expected, sizeof expected, "authentication failed: %s", text != NULL ? text : "");
    check_classified("HELLO", text, VK_ERR_AUTH, expected);
    check_classified("AUTH", text, VK_ERR_AUTH, expected);
    snprintf(expected, sizeof expected, "server error reply: SELECT: %s", text != NULL ? text : "");
    check_classified("SELECT", text, VK_ERR_SERVER, expected);
    free(text);
}

/* End to end: AUTH refusals are auth failures, a SELECT the user may not
 * run is not. */
static void test_handshake_through_client(void)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(plain));
    vk_client *c = NULL;
    CHECK_OK(vk_config_set_static_password(cfg, "limited", "wrong"));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_AUTH,
                "authentication failed: WRONGPASS invalid username-password pair or user is disabled.");
    CHECK_OK(vk_config_set_static_password(cfg, "limited", PASSWORD));
    CHECK_OK(vk_config_set_db(cfg, 1));
    /* The text after NOPERM differs between servers. */
    CHECK_EQ_INT(vk_client_new(&c, cfg), VK_ERR_SERVER);
    CHECK(strncmp(vk_last_error(), "server error reply: SELECT: NOPERM ", 35) == 0);
    CHECK(c == NULL);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    const char *const renamed[] = { "rename-command HELLO \"\"", NULL };
    plain = vkt_server_start(&(vkt_server_opts){ 0 });
    no_hello = vkt_server_start(&(vkt_server_opts){ .extra = renamed });
    secured = vkt_server_start(&(vkt_server_opts){ .requirepass = PASSWORD });
    if (plain == NULL || no_hello == NULL || secured == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        vkt_server_stop(plain);
        vkt_server_stop(no_hello);
        vkt_server_stop(secured);
        return 1;
    }
    const char *acl[] = { "ACL", "SETUSER", "limited", "on", (">" PASSWORD), "~*", "&*",
                          "+@all", "-flushall", "-select" };
    char *line = vkt_server_cmd(plain, acl, 10);
    CHECK_EQ_STR(line, "+OK");
    free(line);

    RUN(test_hello_unsupported_protocol);
    RUN(test_hello_unknown_to_server);
    RUN(test_hello_wrong_credentials);
    RUN(test_hello_without_auth_on_secured_server);
    RUN(test_hello_other_error);
    RUN(test_noperm_while_authenticating);
    RUN(test_handshake_through_client);
    vkt_server_stop(plain);
    vkt_server_stop(no_hello);
    vkt_server_stop(secured);
    return vkt_finish();
}
