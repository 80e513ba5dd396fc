/*
 * TLS against real TLS-only servers (VKTEST_NEEDS_SERVER), with the CA the
 * harness generates: names and IP addresses verified, a wrong CA and a
 * wrong server name refused, the TLS 1.2 floor against a server offering
 * only TLS 1.1 (also with the legacy opt-in), mutual TLS, bad certificate material, large values,
 * timeouts and cancellation over TLS (also while a record is incomplete),
 * idle checks, and fork safety: a child that abandons a connection leaves
 * the parent's TLS state intact.
 */
#include "vktest.h"
#include "servers.h"
#include "conns.h"
#include "vkclient.h"
#include "conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static vkt_server *tls_server;     /* client certificates optional, DEBUG on */
static vkt_server *mtls_server;    /* client certificates required */
static vkt_server *legacy_server;  /* TLS 1.1 only */

/* ---- building blocks --------------------------------------------------------- */

/* A TLS config for host:port, trusting ca_base64. */
static vk_config *tls_config_at(const char *host, int port, const char *ca_base64)
{
    char address[96];
    snprintf(address, sizeof address, "%s:%d", host, port);
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, address);
    vk_config_set_tls(cfg, ca_base64);
    return cfg;
}

/* A TLS config for host:port of s, trusting ca_base64. */
static vk_config *tls_config(const char *host, const vkt_server *s, const char *ca_base64)
{
    return tls_config_at(host, vkt_server_port(s), ca_base64);
}

/* The handshake failure text for host:port of s. */
static const char *handshake_failure(const char *host, const vkt_server *s, const char *why)
{
    static char text[256];
    snprintf(text, sizeof text, "TLS error: handshake with %s:%d failed: %s", host,
             vkt_server_port(s), why);
    return text;
}

static vk_status run(vk_reply **out, vk_client *c, vk_context *ctx, int argc,
                     const char *const *argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vk_client_command(out, c, ctx, argc, argv, lens);
}

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

/* A PING under a context of timeout_ms that must end at the context's
 * deadline; returns how long it took. */
static int64_t ping_past_deadline(vk_client *c, int64_t timeout_ms)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, timeout_ms));
    const char *ping[] = { "PING" };
    vk_reply *r = NULL;
    int64_t start = vkt_now_ms();
    CHECK_FAILS(run(&r, c, ctx, 1, ping), VK_ERR_TIMEOUT, "i/o timeout: context deadline exceeded");
    int64_t took = vkt_now_ms() - start;
    vk_context_free(ctx);
    return took;
}

/* Connects, round-trips a value, disconnects: the config works end to end. */
static void check_works(const vk_config *cfg, const char *key)
{
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    if (c == NULL)
        return;
    const char *set[] = { "SET", key, "over tls" };
    const char *get[] = { "GET", key };
    CHECK(run_gives(c, 3, set, "OK"));
    CHECK(run_gives(c, 2, get, "over tls"));
    vk_client_free(c);
}

/* Opens one connection of a client config (prepared as a client would). */
static vk_status open_conn(vk_conn **out, vk_config *cfg, vk_tls **tls)
{
    vk_endpoint ep;
    *out = NULL;
    *tls = NULL;
    vk_status st = vk__config_prepare(cfg, NULL);
    if (st == VK_OK)
        st = vk__parse_address(&ep, cfg->standalone_address);
    if (st == VK_OK)
        st = vk__tls_new(tls, cfg);
    if (st != VK_OK)
        return st;
    vk_conn_params params = { .cfg = cfg, .tls = *tls, .server_name = cfg->tls_server_name };
    return vk__conn_open(out, &ep, &params, NULL);
}

static bool conn_pings(vk_conn *c)
{
    const char *ping[] = { "PING" };
    redisReply *r = vkt_conn_run(c, 1, ping);
    bool ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    vk__reply_free(r);
    return ok;
}

static void kill_conn_on_server(vk_conn *c, vkt_server *s)
{
    const char *id[] = { "CLIENT", "ID" };
    redisReply *r = vkt_conn_run(c, 2, id);
    char text[32];
    snprintf(text, sizeof text, "%lld", r != NULL ? r->integer : -1LL);
    vk__reply_free(r);
    const char *kill_cmd[] = { "CLIENT", "KILL", "ID", text };
    char *line = vkt_server_cmd(s, kill_cmd, 4);
    CHECK_EQ_STR(line, ":1");
    free(line);
}

/* ---- verification ------------------------------------------------------------ */

static void test_host_name_verified(void)
{
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    check_works(cfg, "tls:name");
    vk_config_free(cfg);
}

static void test_ip_addresses_verified(void)
{
    vk_config *cfg = tls_config("127.0.0.1", tls_server, vkt_ca_base64());
    check_works(cfg, "tls:v4");
    vk_config_free(cfg);
    cfg = tls_config("[::1]", tls_server, vkt_ca_base64());
    check_works(cfg, "tls:v6");
    vk_config_free(cfg);
}

static void test_wrong_ca_refused(void)
{
    /* The server sends its CA along with its certificate: to a client that
     * trusts another CA, that root is an untrusted self-signed link. */
    vk_config *cfg = tls_config("127.0.0.1", tls_server, vkt_other_ca_base64());
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS,
                handshake_failure("127.0.0.1", tls_server,
                                  "certificate verify failed: self-signed certificate in certificate chain"));
    CHECK(c == NULL);
    vk_config_free(cfg);
}

static void test_server_name_override(void)
{
    vk_config *cfg = tls_config("127.0.0.1", tls_server, vkt_ca_base64());
    vk_client *c = NULL;
    CHECK_OK(vk_config_set_tls_server_name(cfg, "wrong.example"));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS,
                handshake_failure("127.0.0.1", tls_server, "certificate verify failed: hostname mismatch"));
    CHECK_OK(vk_config_set_tls_server_name(cfg, "127.0.0.2"));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS,
                handshake_failure("127.0.0.1", tls_server, "certificate verify failed: IP address mismatch"));
    /* The override is what gets verified, not the address dialled. */
    CHECK_OK(vk_config_set_tls_server_name(cfg, "localhost"));
    check_works(cfg, "tls:override");
    vk_config_free(cfg);
}

static int connect_loopback(int port);

/* The control for the floor tests: a plain OpenSSL client limited to
 * TLS 1.1 (at the security level 1.1 needs) completes a handshake with s. */
static bool speaks_tls11(const vkt_server *s)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    bool ok = ctx != NULL && SSL_CTX_set_min_proto_version(ctx, TLS1_1_VERSION) == 1 &&
              SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION) == 1;
    if (ok)
        SSL_CTX_set_security_level(ctx, 0);
    int fd = ok ? connect_loopback(vkt_server_port(s)) : -1;
    SSL *ssl = fd >= 0 ? SSL_new(ctx) : NULL;
    ok = ssl != NULL && SSL_set_fd(ssl, fd) == 1 && SSL_connect(ssl) == 1 &&
         SSL_version(ssl) == TLS1_1_VERSION;
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

/* The warnings a client logs, one per line with its fields. */
typedef struct warnings {
    char text[2048];
} warnings;

static void collect_warnings(void *userdata, vk_log_level level, const char *message,
                             const vk_field *fields, size_t nfields)
{
    warnings *w = userdata;
    if (level != VK_LOG_WARN)
        return;
    size_t used = strlen(w->text);
    used += (size_t)snprintf(w->text + used, sizeof w->text - used, "%s", message);
    for (size_t i = 0; i < nfields && used < sizeof w->text; i++)
        used += (size_t)snprintf(w->text + used, sizeof w->text - used, " %s=%s", fields[i].key,
                                 fields[i].value);
    if (used < sizeof w->text)
        snprintf(w->text + used, sizeof w->text - used, "\n");
}

static void test_tls11_server_refused_by_floor(void)
{
    CHECK(speaks_tls11(legacy_server));
    const char *refused =
        handshake_failure("localhost", legacy_server, "tlsv1 alert protocol version");
    vk_config *cfg = tls_config("localhost", legacy_server, vkt_ca_base64());
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS, refused);
    /* Asking for TLS 1.0 is not enough: the floor raises it to 1.2. */
    CHECK_OK(vk_config_set_tls_min_version(cfg, VK_TLS1_0));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS, refused);

    /* Nor is the legacy opt-in: the config keeps TLS 1.0 and the warning
     * says so, as the original does, but the handshake needs TLS 1.2. */
    CHECK_OK(vk_config_set_tls_allow_legacy_min_version(cfg, 1));
    warnings logged = { "" };
    CHECK_OK(vk_config_set_logger(cfg, collect_warnings, &logged, NULL));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS, refused);
    CHECK(c == NULL);
    CHECK(strstr(logged.text, "TLS min version below 1.2 kept because legacy versions are "
                              "allowed; this is insecure requested=TLS 1.0\n") != NULL);
    vk_config *prepared = NULL;
    CHECK_OK(vk_config_clone(&prepared, cfg));
    CHECK_OK(vk__config_prepare(prepared, NULL));
    CHECK_EQ_INT(prepared->tls_min_version, VK_TLS1_0);
    vk_config_free(prepared);
    vk_config_free(cfg);

    /* The same settings against a server that speaks TLS 1.2 and 1.3. */
    cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    CHECK_OK(vk_config_set_tls_min_version(cfg, VK_TLS1_0));
    CHECK_OK(vk_config_set_tls_allow_legacy_min_version(cfg, 1));
    check_works(cfg, "tls:legacy-setting");
    vk_config_free(cfg);
}

static void test_tls13_minimum(void)
{
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    CHECK_OK(vk_config_set_tls_min_version(cfg, VK_TLS1_3));
    check_works(cfg, "tls:13");
    vk_config_free(cfg);
}

static void test_mutual_tls(void)
{
    vk_config *cfg = tls_config("localhost", mtls_server, vkt_ca_base64());
    vk_client *c = NULL;
    /* Without a certificate the server ends the connection after the
     * handshake (TLS 1.3 client authentication comes last). */
    vk_status st = vk_client_new(&c, cfg);
    /* Whether the client's first read meets the server's alert or its
     * first write meets the reset is a race; either way the error names
     * the alert. */
    char on_read[128], on_write[128];
    snprintf(on_read, sizeof on_read,
             "TLS error: read localhost:%d: tlsv13 alert certificate required",
             vkt_server_port(mtls_server));
    snprintf(on_write, sizeof on_write,
             "TLS error: write localhost:%d: tlsv13 alert certificate required",
             vkt_server_port(mtls_server));
    CHECK(st == VK_ERR_TLS);
    CHECK(strcmp(vk_last_error(), on_read) == 0 || strcmp(vk_last_error(), on_write) == 0);
    CHECK(c == NULL);
    CHECK_OK(vk_config_set_tls_client_cert(cfg, vkt_client_cert_base64(), vkt_client_key_base64()));
    check_works(cfg, "tls:mutual");
    vk_config_free(cfg);
}

static void test_bad_certificate_material(void)
{
    vk_client *c = NULL;
    vk_config *cfg = tls_config("localhost", tls_server, "%%% not base64 %%%");
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS, "TLS error: CA certificate is not valid base64");
    vk_config_free(cfg);

    /* base64 of "hello, not a certificate" */
    cfg = tls_config("localhost", tls_server, "aGVsbG8sIG5vdCBhIGNlcnRpZmljYXRl");
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS,
                "TLS error: CA certificate: no PEM certificate found");
    vk_config_free(cfg);

    cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    CHECK_OK(vk_config_set_tls_client_cert(cfg, vkt_ca_base64(), vkt_client_key_base64()));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS,
                "TLS error: client key does not match the client certificate");
    CHECK_OK(vk_config_set_tls_client_cert(cfg, vkt_client_cert_base64(), vkt_client_cert_base64()));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS,
                "TLS error: client key: no usable PEM private key found");
    /* Key material never shows up in a message. */
    CHECK(strstr(vk_last_error(), "PRIVATE") == NULL);
    vk_config_free(cfg);
}

/* ---- I/O over TLS ------------------------------------------------------------- */

static void test_large_value(void)
{
    const size_t size = 10 * 1024 * 1024;
    char *value = malloc(size);
    for (size_t i = 0; i < size; i++)
        value[i] = (char)(i * 7 + i / 4096);
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    const char *set[] = { "SET", "tls:big", value };
    size_t setlen[] = { 3, 7, size };
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, c, NULL, 3, set, setlen));
    vk_reply_free(r);
    const char *get[] = { "GET", "tls:big" };
    CHECK_OK(run(&r, c, NULL, 2, get));
    size_t len = 0;
    const char *got = vk_reply_get_string(r, &len);
    CHECK(got != NULL && len == size && memcmp(got, value, size) == 0);
    vk_reply_free(r);
    const char *del[] = { "DEL", "tls:big" };
    CHECK_OK(run(&r, c, NULL, 2, del));
    vk_reply_free(r);
    vk_client_free(c);
    vk_config_free(cfg);
    free(value);
}

static void test_read_timeout(void)
{
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 200));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    char expected[96];
    snprintf(expected, sizeof expected, "i/o timeout: read localhost:%d", vkt_server_port(tls_server));
    /* The server answers after 500 ms (a blocking command such as BLPOP
     * would have its read timeout stretched instead). */
    const char *slow[] = { "DEBUG", "SLEEP", "0.5" };
    vk_reply *r = NULL;
    int64_t start = vkt_now_ms();
    CHECK_FAILS(run(&r, c, NULL, 3, slow), VK_ERR_TIMEOUT, expected);
    int64_t took = vkt_now_ms() - start;
    CHECK(took >= 150 && took < 3000);
    usleep(500 * 1000);   /* the server is back */
    const char *ping[] = { "PING" };
    CHECK(run_gives(c, 1, ping, "PONG"));
    vk_client_free(c);
    vk_config_free(cfg);
}

typedef struct canceller {
    vk_context *ctx;
    int64_t cancelled_at_ms;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *k = arg;
    vkt_sleep_ms(200);
    k->cancelled_at_ms = vkt_now_ms();
    vk_context_cancel(k->ctx);
    return NULL;
}

static void test_cancel_blocked_read(void)
{
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    canceller k = { .ctx = ctx };
    pthread_t thread;
    pthread_create(&thread, NULL, cancel_later, &k);
    const char *blpop[] = { "BLPOP", "tls:empty", "10" };
    vk_reply *r = NULL;
    CHECK_FAILS(run(&r, c, ctx, 3, blpop), VK_ERR_CANCELLED, "operation cancelled");
    int64_t returned_at = vkt_now_ms();
    pthread_join(thread, NULL);
    fprintf(stderr, "   returned %lld ms after the cancel\n",
            (long long)(returned_at - k.cancelled_at_ms));
    CHECK(returned_at - k.cancelled_at_ms < vkt_scaled_ms(500));
    const char *ping[] = { "PING" };
    CHECK(run_gives(c, 1, ping, "PONG"));
    vk_context_free(ctx);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* ---- a proxy that can stop in the middle of a TLS record ---------------- */

/* Forwards one client connection to a server. Once `cut` is set, the next
 * record from the server is passed on only in part (its header and half its
 * body) and nothing after it: the client's socket is readable, but no
 * complete record ever arrives. */
typedef struct record_cutter {
    int listen_fd;
    int port;
    int server_port;
    atomic_bool cut;
    atomic_bool stop;
    pthread_t thread;
} record_cutter;

static int connect_loopback(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static bool send_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static void *cut_records(void *arg)
{
    record_cutter *p = arg;
    int client = accept(p->listen_fd, NULL, NULL);
    int server = client >= 0 ? connect_loopback(p->server_port) : -1;
    unsigned char backlog[1 << 16];   /* server bytes not yet forwarded */
    size_t held = 0;
    bool stalled = false;
    while (server >= 0 && !atomic_load(&p->stop)) {
        struct pollfd fds[2] = { { client, POLLIN, 0 }, { server, POLLIN, 0 } };
        if (poll(fds, 2, 50) <= 0)
            continue;
        unsigned char buf[1 << 14];
        if (fds[0].revents != 0) {
            ssize_t n = recv(client, buf, sizeof buf, 0);
            if (n <= 0 || !send_all(server, buf, (size_t)n))
                break;
        }
        if (fds[1].revents != 0) {
            ssize_t n = recv(server, backlog + held, sizeof backlog - held, 0);
            if (n <= 0)
                break;
            held += (size_t)n;
            /* Forward whole records: 5 header bytes, the body's length in 3-4. */
            while (!stalled && held >= 5) {
                size_t record = 5 + ((size_t)backlog[3] << 8 | backlog[4]);
                if (held < record)
                    break;
                if (atomic_load(&p->cut)) {
                    send_all(client, backlog, 5 + (record - 5) / 2);
                    stalled = true;
                    break;
                }
                if (!send_all(client, backlog, record))
                    break;
                memmove(backlog, backlog + record, held - record);
                held -= record;
            }
            if (stalled)
                held = 0;
        }
    }
    if (server >= 0)
        close(server);
    if (client >= 0)
        close(client);
    return NULL;
}

static record_cutter *record_cutter_start(int server_port)
{
    record_cutter *p = calloc(1, sizeof *p);
    p->server_port = server_port;
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->listen_fd, 1) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&sa, &len) != 0) {
        if (p->listen_fd >= 0)
            close(p->listen_fd);
        free(p);
        return NULL;
    }
    p->port = ntohs(sa.sin_port);
    pthread_create(&p->thread, NULL, cut_records, p);
    return p;
}

static void record_cutter_stop(record_cutter *p)
{
    atomic_store(&p->stop, true);
    shutdown(p->listen_fd, SHUT_RDWR);   /* ends an accept() still waiting */
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    free(p);
}

/* A call that polls (here: a context with a deadline) must not then block
 * in SSL_read on a record that never completes: the context's deadline
 * ends it, not the much longer read timeout. */
static void test_deadline_with_partial_record(void)
{
    record_cutter *proxy = record_cutter_start(vkt_server_port(tls_server));
    CHECK(proxy != NULL);
    if (proxy == NULL)
        return;
    vk_config *cfg = tls_config_at("localhost", proxy->port, vkt_ca_base64());
    CHECK_OK(vk_config_set_pool_size(cfg, 1));
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 60000));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));   /* connects through the proxy */
    atomic_store(&proxy->cut, true);
    /* Far below the read timeout, which would end a blocked SSL_read. */
    CHECK(ping_past_deadline(c, 300) < vkt_scaled_ms(5000));
    vk_client_free(c);
    vk_config_free(cfg);
    record_cutter_stop(proxy);
}

static void test_context_deadline_during_handshake(void)
{
    /* A stopped server accepts the TCP connection but never answers the
     * TLS ClientHello: the context bounds the handshake. */
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK_OK(vk_client_close(c));
    pid_t pid = vkt_server_pid(tls_server);
    CHECK(kill(pid, SIGSTOP) == 0);
    int64_t took = ping_past_deadline(c, 200);
    CHECK(took >= 150 && took < 3000);
    kill(pid, SIGCONT);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* A huge SET to the stopped server: once the socket buffers are full,
 * SSL_write waits on the socket's send timeout (or poll() with a context). */
static void write_to_stopped_server(vk_context *ctx)
{
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    CHECK_OK(vk_config_set_write_timeout_ms(cfg, 200));
    vk_tls *tls = NULL;
    vk_conn *conn = NULL;
    CHECK_OK(open_conn(&conn, cfg, &tls));
    if (conn != NULL) {
        pid_t pid = vkt_server_pid(tls_server);
        CHECK(kill(pid, SIGSTOP) == 0);
        const size_t size = 64 * 1024 * 1024;
        char *value = calloc(1, size);
        const char *set[] = { "SET", "tls:huge", value };
        const size_t lens[] = { 3, 8, size };
        redisReply *r = NULL;
        bool sent = true;
        char expected[96];
        snprintf(expected, sizeof expected, "i/o timeout: write localhost:%d",
                 vkt_server_port(tls_server));
        CHECK_FAILS(vk__conn_command(conn, &r, 3, set, lens, ctx, &sent), VK_ERR_TIMEOUT, expected);
        CHECK(!sent);
        CHECK(vk__conn_is_broken(conn));
        kill(pid, SIGCONT);
        free(value);
    }
    vk__conn_close(conn);
    vk__tls_free(tls);
    vk_config_free(cfg);
}

static void test_write_timeout(void)
{
    write_to_stopped_server(NULL);
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    write_to_stopped_server(ctx);
    vk_context_free(ctx);
}

/* ---- connection state ---------------------------------------------------------- */

static void test_still_usable(void)
{
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    vk_tls *tls = NULL;
    vk_conn *conn = NULL;
    CHECK_OK(open_conn(&conn, cfg, &tls));
    if (conn == NULL) {
        vk__tls_free(tls);
        vk_config_free(cfg);
        return;
    }
    /* Idle with whatever the server sent after the handshake (TLS 1.3
     * tickets for resumption): still usable, and still answering. */
    vkt_sleep_ms(100);
    CHECK(vk__conn_still_usable(conn));
    CHECK(conn_pings(conn));
    CHECK(vk__conn_still_usable(conn));

    kill_conn_on_server(conn, tls_server);
    bool usable = true;
    for (int i = 0; i < 100 && usable; i++) {
        vkt_sleep_ms(10);
        usable = vk__conn_still_usable(conn);
    }
    CHECK(!usable);
    vk__conn_close(conn);
    vk__tls_free(tls);
    vk_config_free(cfg);
}

static void test_no_sigpipe_on_closed_connection(void)
{
    signal(SIGPIPE, SIG_DFL);
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    vk_tls *tls = NULL;
    vk_conn *conn = NULL;
    CHECK_OK(open_conn(&conn, cfg, &tls));
    if (conn == NULL) {
        vk__tls_free(tls);
        vk_config_free(cfg);
        return;
    }
    kill_conn_on_server(conn, tls_server);
    vkt_sleep_ms(100);
    const char *ping[] = { "PING" };
    const size_t pinglen[] = { 4 };
    vk_status st = VK_OK;
    for (int i = 0; i < 5 && st == VK_OK; i++) {
        CHECK_OK(vk__conn_append(conn, 1, ping, pinglen));
        st = vk__conn_flush(conn, NULL);
        vkt_sleep_ms(20);
    }
    CHECK(st == VK_ERR_IO || st == VK_ERR_TLS);
    CHECK(vk__conn_is_broken(conn));
    vk__conn_close(conn);
    vk__tls_free(tls);
    vk_config_free(cfg);
}

/* Forks; the child runs close_fn on conn and exits. */
static void in_child(vk_conn *conn, void (*close_fn)(vk_conn *))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close_fn(conn);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_abandon_after_fork(void)
{
    vk_config *cfg = tls_config("localhost", tls_server, vkt_ca_base64());
    vk_tls *tls_kept = NULL, *tls_closed = NULL;
    vk_conn *kept = NULL, *closed = NULL;
    CHECK_OK(open_conn(&kept, cfg, &tls_kept));
    CHECK_OK(open_conn(&closed, cfg, &tls_closed));
    if (kept != NULL && closed != NULL) {
        /* A child that abandons its copy sends nothing: the parent's
         * connection goes on. */
        in_child(kept, vk__conn_abandon);
        CHECK(conn_pings(kept));
        /* The control: a graceful close in the child (close_notify on the
         * shared TLS state) ends the parent's connection too. */
        in_child(closed, vk__conn_close);
        vkt_sleep_ms(100);
        CHECK(!conn_pings(closed));
    }
    vk__conn_close(kept);
    vk__conn_close(closed);
    vk__tls_free(tls_kept);
    vk__tls_free(tls_closed);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    if (vkt_ca_base64() == NULL) {
        fprintf(stderr, "cannot generate the test certificates\n");
        return 1;
    }
    const char *const debug[] = { "enable-debug-command yes", NULL };
    const char *const require_certs[] = { "tls-auth-clients yes", NULL };
    tls_server = vkt_server_start(&(vkt_server_opts){ .tls = true, .extra = debug });
    mtls_server = vkt_server_start(&(vkt_server_opts){ .tls = true, .extra = require_certs });
    legacy_server = vkt_server_start(&(vkt_server_opts){ .tls11_only = true });
    if (tls_server == NULL || mtls_server == NULL || legacy_server == NULL) {
        fprintf(stderr, "cannot start %s with TLS\n", vkt_server_binary());
        vkt_server_stop(tls_server);
        vkt_server_stop(mtls_server);
        vkt_server_stop(legacy_server);
        return 1;
    }

    RUN(test_host_name_verified);
    RUN(test_ip_addresses_verified);
    RUN(test_wrong_ca_refused);
    RUN(test_server_name_override);
    RUN(test_tls11_server_refused_by_floor);
    RUN(test_tls13_minimum);
    RUN(test_mutual_tls);
    RUN(test_bad_certificate_material);
    RUN(test_large_value);
    RUN(test_read_timeout);
    RUN(test_cancel_blocked_read);
    RUN(test_context_deadline_during_handshake);
    RUN(test_deadline_with_partial_record);
    RUN(test_write_timeout);
    RUN(test_still_usable);
    RUN(test_no_sigpipe_on_closed_connection);
    RUN(test_abandon_after_fork);

    vkt_server_stop(tls_server);
    vkt_server_stop(mtls_server);
    vkt_server_stop(legacy_server);
    return vkt_finish();
}
