/*
 * Where TLS trust comes from (VKTEST_NEEDS_SERVER), against a real
 * TLS-only server with the harness CA: a CA file, the system store (made
 * to hold the harness CA through SSL_CERT_FILE, which OpenSSL reads when a
 * client is created), a rediss:// URL that falls back to the system store
 * until a CA is given, sources combined, and the errors for a missing or
 * unusable CA file.
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static vkt_server *tls_server;

/* ---- building blocks --------------------------------------------------------- */

static vk_config *config_for(const char *host)
{
    char address[96];
    snprintf(address, sizeof address, "%s:%d", host, vkt_server_port(tls_server));
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, address);
    return cfg;
}

static vk_config *config_from_url(void)
{
    char url[96];
    snprintf(url, sizeof url, "rediss://localhost:%d", vkt_server_port(tls_server));
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_from_url(&cfg, url));
    return cfg;
}

/* The system store as OpenSSL finds it: the harness CA alone, or (NULL)
 * the machine's own, which does not hold the harness CA. */
static void system_store_is(const char *ca_file)
{
    unsetenv("SSL_CERT_DIR");
    if (ca_file != NULL)
        setenv("SSL_CERT_FILE", ca_file, 1);
    else
        unsetenv("SSL_CERT_FILE");
}

static bool pings(vk_client *c)
{
    const char *ping[] = { "PING" };
    const size_t len[] = { 4 };
    vk_reply *r = NULL;
    bool ok = vk_client_command(&r, c, NULL, 1, ping, len) == VK_OK &&
              vk_reply_get_type(r) == VK_REPLY_STATUS;
    vk_reply_free(r);
    return ok;
}

static void check_connects(const vk_config *cfg)
{
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK(c != NULL && pings(c));
    vk_client_free(c);
}

/* The harness server's chain ends in its own CA: a client that does not
 * trust that CA sees it as an untrusted self-signed root. */
static void check_untrusted(const vk_config *cfg, const char *host)
{
    char text[256];
    snprintf(text, sizeof text,
             "TLS error: handshake with %s:%d failed: certificate verify failed: self-signed "
             "certificate in certificate chain",
             host, vkt_server_port(tls_server));
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS, text);
    CHECK(c == NULL);
}

static bool describes(const vk_config *cfg, const char *part)
{
    char *text = NULL;
    bool found = vk_config_describe(&text, cfg) == VK_OK && strstr(text, part) != NULL;
    vk_free(text);
    return found;
}

/* A temporary file with this content; the caller removes it. */
static char *temp_file(const char *content)
{
    char *path = strdup("/tmp/vktest-ca-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
        close(fd);
    }
    return path;
}

/* ---- a CA file --------------------------------------------------------------- */

static void test_ca_file(void)
{
    system_store_is(NULL);
    vk_config *cfg = config_for("localhost");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, vkt_ca_path()));
    CHECK(cfg->tls_enabled);
    check_connects(cfg);
    char shown[300];
    snprintf(shown, sizeof shown, "TLS:TLSConfig{CAFile:%s, MinVersion:default,", vkt_ca_path());
    CHECK(describes(cfg, shown));
    CHECK(!describes(cfg, "SystemCA"));
    vk_config_free(cfg);

    /* IP addresses are verified against the same CA. */
    cfg = config_for("127.0.0.1");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, vkt_ca_path()));
    check_connects(cfg);
    vk_config_free(cfg);
}

static void test_missing_ca_file(void)
{
    vk_config *cfg = config_for("localhost");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, "/nonexistent/ca.pem"));
    const char *text = "invalid redis config: TLS CA file \"/nonexistent/ca.pem\" cannot be read: "
                       "No such file or directory";
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG, text);
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_INVALID_CONFIG, text);
    CHECK(c == NULL);

    CHECK_OK(vk_config_set_tls_ca_file(cfg, "/tmp"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                "invalid redis config: TLS CA file \"/tmp\" cannot be read: Is a directory");
    vk_config_free(cfg);
}

static void test_ca_file_without_certificate(void)
{
    char *path = temp_file("hello, not a certificate\n");
    vk_config *cfg = config_for("localhost");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, path));
    CHECK_OK(vk_config_validate(cfg));   /* it opens: parsed at connect */
    char text[200];
    snprintf(text, sizeof text, "TLS error: CA file \"%s\": no PEM certificate found", path);
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_TLS, text);
    vk_config_free(cfg);
    remove(path);
    free(path);
}

/* ---- the system store --------------------------------------------------------- */

static void test_system_store(void)
{
    vk_config *cfg = config_for("localhost");
    CHECK_OK(vk_config_set_tls_use_system_ca(cfg, 1));
    CHECK(cfg->tls_enabled);
    CHECK(describes(cfg, "SystemCA:true"));
    /* The machine's store does not hold the harness CA... */
    system_store_is(NULL);
    check_untrusted(cfg, "localhost");
    /* ...SSL_CERT_FILE makes OpenSSL's default paths point at it. */
    system_store_is(vkt_ca_path());
    check_connects(cfg);
    /* Turned off again, no trust source is left. */
    CHECK_OK(vk_config_set_tls_use_system_ca(cfg, 0));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                "invalid redis config: TLS CA cert is required when TLS is configured");
    vk_config_free(cfg);
    system_store_is(NULL);
}

static void test_url_without_ca_uses_system_store(void)
{
    vk_config *cfg = config_from_url();
    CHECK(cfg->tls_enabled && cfg->tls_system_ca);
    CHECK(describes(cfg, "TLS:TLSConfig{SystemCA:true, MinVersion:default,"));
    system_store_is(NULL);
    check_untrusted(cfg, "localhost");
    system_store_is(vkt_ca_path());
    check_connects(cfg);
    vk_config_free(cfg);
    system_store_is(NULL);
}

static void test_explicit_ca_replaces_url_default(void)
{
    /* The system store would trust the server, but a CA given after the
     * URL replaces it: the unrelated CA alone is trusted. */
    system_store_is(vkt_ca_path());
    vk_config *cfg = config_from_url();
    CHECK_OK(vk_config_set_tls(cfg, vkt_other_ca_base64()));
    CHECK(!cfg->tls_system_ca);
    CHECK(describes(cfg, "TLS:TLSConfig{CACert:<"));
    CHECK(!describes(cfg, "SystemCA"));
    check_untrusted(cfg, "localhost");
    /* Asked for explicitly, the system store is trusted as well. */
    CHECK_OK(vk_config_set_tls_use_system_ca(cfg, 1));
    check_connects(cfg);
    vk_config_free(cfg);

    cfg = config_from_url();
    CHECK_OK(vk_config_set_tls_ca_file(cfg, vkt_ca_path()));
    CHECK(!cfg->tls_system_ca);
    system_store_is(NULL);
    check_connects(cfg);
    vk_config_free(cfg);

    /* A blank CA (what a binding passes when none was given) is no CA:
     * the URL's default stays. */
    system_store_is(vkt_ca_path());
    cfg = config_from_url();
    CHECK_OK(vk_config_set_tls(cfg, ""));
    CHECK(cfg->tls_system_ca);
    check_connects(cfg);
    vk_config_free(cfg);
    system_store_is(NULL);
}

static void test_sources_combined(void)
{
    /* The base64 CA and the CA file are both trusted. */
    system_store_is(NULL);
    vk_config *cfg = config_for("localhost");
    CHECK_OK(vk_config_set_tls(cfg, vkt_other_ca_base64()));
    check_untrusted(cfg, "localhost");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, vkt_ca_path()));
    check_connects(cfg);
    char shown[400];
    snprintf(shown, sizeof shown, "TLS:TLSConfig{CACert:<%zu bytes>, CAFile:%s, MinVersion:",
             strlen(vkt_other_ca_base64()), vkt_ca_path());
    CHECK(describes(cfg, shown));
    CHECK(!describes(cfg, vkt_other_ca_base64()));
    vk_config_free(cfg);

    /* Every certificate of a file is trusted: a bundle with another CA
     * first. */
    unsigned char *other = NULL, *ours = NULL;
    size_t other_len = 0, ours_len = 0;
    CHECK(vk__base64_decode(vkt_other_ca_base64(), &other, &other_len) == 0);
    CHECK(vk__base64_decode(vkt_ca_base64(), &ours, &ours_len) == 0);
    char *bundle = malloc(other_len + ours_len + 1);
    snprintf(bundle, other_len + ours_len + 1, "%s%s", (char *)other, (char *)ours);
    char *path = temp_file(bundle);
    cfg = config_for("localhost");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, path));
    check_connects(cfg);
    vk_config_free(cfg);
    remove(path);
    free(path);
    free(bundle);
    free(other);
    free(ours);
}

static void test_no_trust_source(void)
{
    vk_config *cfg = config_for("localhost");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, ""));
    CHECK(cfg->tls_enabled && cfg->tls_ca_file == NULL);
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                "invalid redis config: TLS CA cert is required when TLS is configured");
    CHECK_OK(vk_config_set_tls_ca_file(cfg, vkt_ca_path()));
    CHECK_OK(vk_config_validate(cfg));
    CHECK_OK(vk_config_set_tls_ca_file(cfg, NULL));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                "invalid redis config: TLS CA cert is required when TLS is configured");
    vk_config_free(cfg);

    const char *null_config = "invalid argument: config is NULL";
    CHECK_FAILS(vk_config_set_tls_ca_file(NULL, "x"), VK_ERR_INVALID_ARGUMENT, null_config);
    CHECK_FAILS(vk_config_set_tls_use_system_ca(NULL, 1), VK_ERR_INVALID_ARGUMENT, null_config);
}

static void test_clone_keeps_trust(void)
{
    vk_config *cfg = config_from_url(), *copy = NULL;
    CHECK_OK(vk_config_set_tls_ca_file(cfg, vkt_ca_path()));
    CHECK_OK(vk_config_set_tls_use_system_ca(cfg, 1));
    CHECK_OK(vk_config_clone(&copy, cfg));
    vk_config_free(cfg);
    CHECK(copy != NULL && copy->tls_system_ca);
    CHECK_EQ_STR(copy->tls_ca_file, vkt_ca_path());
    system_store_is(NULL);
    check_connects(copy);
    vk_config_free(copy);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    if (vkt_ca_path() == NULL) {
        fprintf(stderr, "cannot generate the test certificates\n");
        return 1;
    }
    tls_server = vkt_server_start(&(vkt_server_opts){ .tls = true });
    if (tls_server == NULL) {
        fprintf(stderr, "cannot start %s with TLS\n", vkt_server_binary());
        return 1;
    }

    RUN(test_ca_file);
    RUN(test_missing_ca_file);
    RUN(test_ca_file_without_certificate);
    RUN(test_system_store);
    RUN(test_url_without_ca_uses_system_store);
    RUN(test_explicit_ca_replaces_url_default);
    RUN(test_sources_combined);
    RUN(test_no_trust_source);
    RUN(test_clone_keeps_trust);

    vkt_server_stop(tls_server);
    return vkt_finish();
}
