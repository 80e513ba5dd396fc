/*
 * GCP IAM token retrieval (VKTEST_NEEDS_SERVER): the key -> JWT -> OAuth
 * token -> generateAccessToken flow against the fake Google endpoints
 * (tests/harness/fake_google.py), every credential error with its exact
 * text, non-2xx answers, the operation timeout and cancellation, the URL
 * policy and certificate verification, credentials from
 * GOOGLE_APPLICATION_CREDENTIALS and from the metadata server, a client
 * whose first connect authenticates with a minted token, and a scan of
 * every captured error and log line for secrets.
 */
#include "vktest.h"
#include "servers.h"
#include "fake_google.h"
#include "vkclient.h"
#include "gcp_iam.h"

#include <cjson/cJSON.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Bound of a fetch that must succeed: generous, as the machine may be busy
 * (and far slower under Valgrind). */
#define FETCH_TIMEOUT_MS vkt_scaled_ms(10000)

static vkt_server *server;            /* TLS, default user needs a token */
static char server_password[40];      /* bootstrap password the fake uses */
static vkt_google *google;            /* mints tokens into server's ACL */

/* ---- everything captured, scanned for secrets at the end ------------------ */

static char *captured;
static size_t captured_len;
static pthread_mutex_t captured_lock = PTHREAD_MUTEX_INITIALIZER;
static char *secrets[64];
static int nsecrets;

static void capture(const char *text)
{
    pthread_mutex_lock(&captured_lock);
    size_t n = strlen(text);
    char *grown = realloc(captured, captured_len + n + 2);
    if (grown != NULL) {
        captured = grown;
        memcpy(captured + captured_len, text, n);
        captured_len += n;
        captured[captured_len++] = '\n';
        captured[captured_len] = '\0';
    }
    pthread_mutex_unlock(&captured_lock);
}

static void remember_secret(const char *secret)
{
    if (secret != NULL && nsecrets < 64)
        secrets[nsecrets++] = strdup(secret);
}

static void log_sink(void *userdata, vk_log_level level, const char *message,
                     const vk_field *fields, size_t nfields)
{
    capture(message);
    for (size_t i = 0; i < nfields; i++) {
        capture(fields[i].key);
        capture(fields[i].value);
    }
}

/* ---- utilities ------------------------------------------------------------------ */

static char *token_uri(const vkt_google *g)
{
    char *uri = malloc(128);
    snprintf(uri, 128, "%s/token", vkt_google_url(g));
    return uri;
}

static char *key_b64_for(const vkt_google *g)
{
    char *uri = token_uri(g);
    char *b64 = vkt_google_key_base64(uri);
    free(uri);
    return b64;
}

/* One token fetch through the internal interface; the error text (if
 * any) is captured. */
static vk_status fetch(const char *credentials_b64, const char *endpoint, const char *account,
                       vk_context *ctx, int64_t timeout_ms, char **token, int64_t *expires)
{
    const vk_gcp_request req = {
        .credentials_base64 = credentials_b64,
        .service_account = account,
        .iam_endpoint = endpoint,
        .token_lifetime_ms = 600000,
    };
    char *t = NULL;
    int64_t e = 0;
    vk_status st = vk__gcp_fetch_token(&req, ctx, timeout_ms, &t, &e);
    if (st != VK_OK)
        capture(vk_last_error());
    remember_secret(t);
    if (token != NULL)
        *token = t;
    else
        vk__free_secret(t);
    if (expires != NULL)
        *expires = e;
    return st;
}

static vk_status fetch_simple(const char *credentials_b64)
{
    return fetch(credentials_b64, vkt_google_url(google), VKT_GOOGLE_SERVICE_ACCOUNT, NULL,
                 FETCH_TIMEOUT_MS, NULL, NULL);
}

static char *b64_of(const char *text)
{
    return vkt_base64(text, strlen(text));
}

static size_t count_requests(const vkt_google *g, const char *endpoint)
{
    size_t n = 0;
    free(vkt_google_requests(g, endpoint, &n));
    return n;
}

/* A client config for the TLS server, authenticating with GCP IAM through
 * the fake (credentials NULL: from the environment). */
static vk_config *iam_config(const char *credentials_b64)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_tls(cfg, vkt_ca_base64());
    vk_config_set_gcp_iam(cfg, credentials_b64, VKT_GOOGLE_SERVICE_ACCOUNT);
    vk_config_set_gcp_iam_endpoint(cfg, vkt_google_url(google));
    vk_config_set_logger(cfg, log_sink, NULL, NULL);
    return cfg;
}

static bool set_get_roundtrip(vk_client *c, const char *key)
{
    const char *set[] = {"SET", key, "iam-value"};
    const size_t set_len[] = {3, strlen(key), 9};
    const char *get[] = {"GET", key};
    const size_t get_len[] = {3, strlen(key)};
    vk_reply *r = NULL;
    bool ok = vk_client_command(&r, c, NULL, 3, set, set_len) == VK_OK &&
              vk_reply_get_type(r) == VK_REPLY_STATUS;
    vk_reply_free(r);
    r = NULL;
    size_t len = 0;
    ok = ok && vk_client_command(&r, c, NULL, 2, get, get_len) == VK_OK &&
         vk_reply_get_type(r) == VK_REPLY_STRING &&
         strcmp(vk_reply_get_string(r, &len), "iam-value") == 0;
    vk_reply_free(r);
    return ok;
}

/* A key JSON (base64) with a fresh RSA key the fake has never seen. */
static char *other_key_b64(const vkt_google *g)
{
    EVP_PKEY *pkey = EVP_RSA_gen(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL;
    if (pkey != NULL && bio != NULL && PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL,
                                                                NULL) == 1) {
        char *data = NULL;
        long len = BIO_get_mem_data(bio, &data);
        /* Not strndup: the BIO's data has no terminating NUL to stop at. */
        pem = len >= 0 ? malloc((size_t)len + 1) : NULL;
        if (pem != NULL) {
            memcpy(pem, data, (size_t)len);
            pem[len] = '\0';
        }
    }
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    if (pem == NULL)
        return NULL;
    char *uri = token_uri(g);
    cJSON *key = cJSON_CreateObject();
    cJSON_AddStringToObject(key, "private_key", pem);
    cJSON_AddStringToObject(key, "client_email", VKT_GOOGLE_CLIENT_EMAIL);
    cJSON_AddStringToObject(key, "token_uri", uri);
    char *json = cJSON_PrintUnformatted(key);
    char *b64 = json != NULL ? b64_of(json) : NULL;
    cJSON_Delete(key);
    free(json);
    free(uri);
    free(pem);
    return b64;
}

/* ---- token retrieval ------------------------------------------------------------ */

static void test_fetch_token(void)
{
    char *key = key_b64_for(google);
    char *token = NULL;
    int64_t expires = 0;
    size_t iam_before = count_requests(google, "iam");
    CHECK_OK(fetch(key, vkt_google_url(google), VKT_GOOGLE_SERVICE_ACCOUNT, NULL,
                   FETCH_TIMEOUT_MS, &token, &expires));
    CHECK(token != NULL && strncmp(token, "vkiam-", 6) == 0);
    if (token == NULL) {
        free(key);
        return;
    }
    /* The lifetime asked for (600 s) comes back as expireTime. */
    int64_t left = expires - vk__wall_ms();
    CHECK(left > 600000 - FETCH_TIMEOUT_MS && left <= 601000);
    CHECK_EQ_INT(count_requests(google, "iam"), iam_before + 1);

    /* The minted token is now a password of the server's default user. */
    const char *auth[] = {"AUTH", "default", token};
    char *line = vkt_server_cmd(server, auth, 3);
    CHECK_EQ_STR(line, "+OK");
    free(line);
    vk__free_secret(token);

    /* A trailing slash on the endpoint is tolerated. */
    char endpoint[128];
    snprintf(endpoint, sizeof endpoint, "%s/", vkt_google_url(google));
    CHECK_OK(fetch(key, endpoint, VKT_GOOGLE_SERVICE_ACCOUNT, NULL, FETCH_TIMEOUT_MS, NULL, NULL));
    free(key);
}

static void test_credential_errors(void)
{
    CHECK_FAILS(fetch_simple("not base64 at all!"), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials failed: invalid base64");
    CHECK_FAILS(fetch_simple("QUJD="), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials failed: invalid base64");

    char *not_json = b64_of("this is not json, it is a secret-ish string");
    CHECK_FAILS(fetch_simple(not_json), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials JSON failed (content redacted)");
    CHECK(strstr(vk_last_error(), "secret-ish") == NULL);
    free(not_json);

    char *array = b64_of("[1, 2, 3]");
    CHECK_FAILS(fetch_simple(array), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials JSON failed (content redacted)");
    free(array);

    char *not_key = b64_of("{\"type\":\"authorized_user\",\"refresh_token\":\"r-123\"}");
    CHECK_FAILS(fetch_simple(not_key), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials failed: missing client_email");
    free(not_key);

    char *no_pem = b64_of("{\"client_email\":\"a@b\",\"token_uri\":\"http://127.0.0.1:1/t\"}");
    CHECK_FAILS(fetch_simple(no_pem), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials failed: missing private_key");
    free(no_pem);

    char *no_uri = b64_of("{\"client_email\":\"a@b\",\"private_key\":\"x\"}");
    CHECK_FAILS(fetch_simple(no_uri), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials failed: missing token_uri");
    free(no_uri);

    char *bad_pem = b64_of("{\"client_email\":\"a@b\",\"token_uri\":\"http://127.0.0.1:1/t\","
                           "\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nTUlJQ2Vh"
                           "c2VjcmV0\\n-----END PRIVATE KEY-----\\n\"}");
    CHECK_FAILS(fetch_simple(bad_pem), VK_ERR_IAM,
                "GCP IAM token request failed: parsing credentials failed: private_key is not a "
                "valid PEM private key");
    CHECK(strstr(vk_last_error(), "TUlJQ2Vh") == NULL);
    free(bad_pem);
}

static void test_http_failures(void)
{
    char *key = key_b64_for(google);

    /* The token endpoint's OAuth error shape. */
    CHECK(vkt_google_control(google, "{\"status\":500,\"message\":\"backend unavailable\","
                                     "\"endpoints\":[\"token\"]}"));
    CHECK_FAILS(fetch_simple(key), VK_ERR_IAM,
                "GCP IAM token request failed: token endpoint returned HTTP 500: backend "
                "unavailable");

    /* The IAM Credentials API's Google error shape. */
    CHECK(vkt_google_control(google, "{\"status\":503,\"message\":\"try again later\","
                                     "\"endpoints\":[\"iam\"]}"));
    CHECK_FAILS(fetch_simple(key), VK_ERR_IAM,
                "GCP IAM token request failed: IAM Credentials API returned HTTP 503: try again "
                "later");
    CHECK(vkt_google_control(google, ""));

    /* Real refusals of the fake: another service account. */
    CHECK_FAILS(fetch(key, vkt_google_url(google), "someone-else@vk-test.iam.gserviceaccount.com",
                      NULL, FETCH_TIMEOUT_MS, NULL, NULL),
                VK_ERR_IAM,
                "GCP IAM token request failed: IAM Credentials API returned HTTP 403: Permission "
                "'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).");

    /* A key the fake does not know: the JWT signature does not verify. */
    char *other = other_key_b64(google);
    CHECK(other != NULL);
    CHECK_FAILS(fetch_simple(other), VK_ERR_IAM,
                "GCP IAM token request failed: token endpoint returned HTTP 400: invalid JWT "
                "signature");
    free(other);

    /* The right key, another audience: the fake checks aud against its URL. */
    char wrong_aud[160];
    snprintf(wrong_aud, sizeof wrong_aud, "%s/token?x=1", vkt_google_url(google));
    char *wrong = vkt_google_key_base64(wrong_aud);
    CHECK_FAILS(fetch_simple(wrong), VK_ERR_IAM,
                "GCP IAM token request failed: token endpoint returned HTTP 400: unexpected aud");
    free(wrong);

    /* Nothing listening. */
    char *gone = vkt_google_key_base64("http://127.0.0.1:1/token");
    vk_status st = fetch_simple(gone);
    CHECK_EQ_INT(st, VK_ERR_IAM);
    CHECK(strncmp(vk_last_error(), "GCP IAM token request failed: token endpoint request failed: ",
                  61) == 0);
    free(gone);
    free(key);
}

static void *cancel_later(void *ctx)
{
    usleep(150 * 1000);
    vk_context_cancel(ctx);
    return NULL;
}

static void test_timeout_and_cancel(void)
{
    char *key = key_b64_for(google);
    CHECK(vkt_google_control(google, "{\"stall_ms\":3000}"));
    int64_t start = vk__now_ms();
    CHECK_FAILS(fetch(key, vkt_google_url(google), VKT_GOOGLE_SERVICE_ACCOUNT, NULL, 300, NULL,
                      NULL),
                VK_ERR_IAM,
                "GCP IAM token request failed: token endpoint did not answer within the operation "
                "timeout");
    int64_t took = vk__now_ms() - start;
    CHECK(took >= 250 && took < vkt_scaled_ms(1500));

    /* The timeout covers the whole operation: a stall at the second call,
     * after a quick first one, ends it as well. */
    CHECK(vkt_google_control(google, "{\"stall_ms\":20000,\"endpoints\":[\"iam\"]}"));
    size_t tokens_before = count_requests(google, "token");
    int64_t budget = vkt_scaled_ms(800);
    start = vk__now_ms();
    CHECK_FAILS(fetch(key, vkt_google_url(google), VKT_GOOGLE_SERVICE_ACCOUNT, NULL, budget,
                      NULL, NULL),
                VK_ERR_IAM,
                "GCP IAM token request failed: IAM Credentials API did not answer within the "
                "operation timeout");
    took = vk__now_ms() - start;
    CHECK(took >= budget - 100 && took < budget + vkt_scaled_ms(1500));
    CHECK_EQ_INT(count_requests(google, "token"), tokens_before + 1);
    CHECK(vkt_google_control(google, "{\"stall_ms\":3000}"));

    /* A context deadline shorter than the operation timeout wins. */
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    vk_context_set_timeout_ms(ctx, 200);
    start = vk__now_ms();
    CHECK_FAILS(fetch(key, vkt_google_url(google), VKT_GOOGLE_SERVICE_ACCOUNT, ctx, 5000, NULL,
                      NULL),
                VK_ERR_TIMEOUT, "i/o timeout: context deadline exceeded");
    took = vk__now_ms() - start;
    CHECK(took >= 150 && took < vkt_scaled_ms(1500));
    vk_context_free(ctx);

    /* Cancellation from another thread stops the request at once. */
    CHECK_OK(vk_context_new(&ctx));
    pthread_t canceller;
    start = vk__now_ms();
    CHECK(pthread_create(&canceller, NULL, cancel_later, ctx) == 0);
    vk_status st = fetch(key, vkt_google_url(google), VKT_GOOGLE_SERVICE_ACCOUNT, ctx, 5000,
                         NULL, NULL);
    took = vk__now_ms() - start;
    pthread_join(canceller, NULL);
    CHECK_EQ_INT(st, VK_ERR_CANCELLED);
    CHECK(took >= 100 && took < vkt_scaled_ms(600));
    vk_context_free(ctx);

    CHECK(vkt_google_control(google, ""));
    free(key);
}

static void test_url_policy(void)
{
    /* Plain http to anything but loopback is refused before any request. */
    char *remote = vkt_google_key_base64("http://oauth2.example.com/token");
    CHECK_FAILS(fetch_simple(remote), VK_ERR_IAM,
                "GCP IAM token request failed: credentials token_uri must use https:// (plain "
                "http:// only for loopback hosts)");
    free(remote);
    char *key = key_b64_for(google);
    CHECK_FAILS(fetch(key, "http://iam.example.com", VKT_GOOGLE_SERVICE_ACCOUNT, NULL,
                      FETCH_TIMEOUT_MS, NULL, NULL),
                VK_ERR_IAM,
                "GCP IAM token request failed: IAM endpoint must use https:// (plain http:// "
                "only for loopback hosts)");
    free(key);
    CHECK(vk__http_url_allowed("https://oauth2.googleapis.com/token"));
    CHECK(vk__http_url_allowed("http://127.0.0.1:8080/token"));
    CHECK(vk__http_url_allowed("http://127.12.0.3/token"));
    CHECK(vk__http_url_allowed("http://localhost:9/x"));
    CHECK(vk__http_url_allowed("http://[::1]:9/x"));
    CHECK(!vk__http_url_allowed("http://127.0.0.1.example.com/x"));
    CHECK(!vk__http_url_allowed("http://127.0.0.1@example.com/x"));
    CHECK(!vk__http_url_allowed("http://10.0.0.1/x"));
    CHECK(!vk__http_url_allowed("ftp://127.0.0.1/x"));
    CHECK(!vk__http_url_allowed("https://"));

    /* HTTPS verifies the certificate: a self-signed one is refused. */
    const vkt_google_opts https = {.https = true};
    vkt_google *tls_google = vkt_google_start(&https);
    CHECK(tls_google != NULL);
    if (tls_google == NULL)
        return;
    char *tls_key = key_b64_for(tls_google);
    vk_status st = fetch(tls_key, vkt_google_url(tls_google), VKT_GOOGLE_SERVICE_ACCOUNT, NULL,
                         FETCH_TIMEOUT_MS, NULL, NULL);
    CHECK_EQ_INT(st, VK_ERR_IAM);
    CHECK(strstr(vk_last_error(), "token endpoint request failed: SSL certificate problem") !=
          NULL);
    CHECK_EQ_INT(count_requests(tls_google, "token"), 0);

    /* Trusted through OpenSSL's SSL_CERT_FILE, the same server works: the
     * whole exchange over verified HTTPS. */
    setenv("SSL_CERT_FILE", vkt_google_cert_path(tls_google), 1);
    char *token = NULL;
    st = fetch(tls_key, vkt_google_url(tls_google), VKT_GOOGLE_SERVICE_ACCOUNT, NULL,
               FETCH_TIMEOUT_MS, &token, NULL);
    unsetenv("SSL_CERT_FILE");
    CHECK_OK(st);
    CHECK(token != NULL && token[0] != '\0');
    vk__free_secret(token);
    CHECK_EQ_INT(count_requests(tls_google, "token"), 1);
    CHECK_EQ_INT(count_requests(tls_google, "iam"), 1);
    free(tls_key);
    vkt_google_stop(tls_google);

    /* A proxy from the environment never sees a plain loopback call. */
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    setenv("ALL_PROXY", "http://127.0.0.1:9", 1);
    char *plain_key = key_b64_for(google);
    st = fetch_simple(plain_key);
    unsetenv("http_proxy");
    unsetenv("ALL_PROXY");
    CHECK_OK(st);
    free(plain_key);
}

/* ---- credentials from the environment ------------------------------------------- */

static void test_key_file_from_environment(void)
{
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/vk-gcp-key-file-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    char *uri = token_uri(google);
    char *json = vkt_google_key_json(uri);
    free(uri);
    CHECK(write(fd, json, strlen(json)) == (ssize_t)strlen(json));
    close(fd);
    free(json);

    setenv("GOOGLE_APPLICATION_CREDENTIALS", path, 1);
    setenv("GCE_METADATA_HOST", "127.0.0.1:1", 1);   /* must not be used */
    size_t token_before = count_requests(google, "token");
    CHECK_OK(fetch_simple(NULL));
    CHECK_EQ_INT(count_requests(google, "token"), token_before + 1);

    /* The client takes the same route when no credentials are configured. */
    vk_config *cfg = iam_config(NULL);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK(c != NULL && set_get_roundtrip(c, "iam:env-key"));
    vk_client_free(c);
    vk_config_free(cfg);

    unlink(path);
    CHECK_FAILS(fetch_simple(NULL), VK_ERR_IAM,
                "GCP IAM token request failed: reading credentials failed: cannot open the file "
                "named by GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("GCE_METADATA_HOST");
}

static void test_metadata_server(void)
{
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    setenv("GCE_METADATA_HOST", vkt_google_host(google), 1);
    size_t metadata_before = count_requests(google, "metadata");
    size_t token_before = count_requests(google, "token");
    char *token = NULL;
    CHECK_OK(fetch(NULL, vkt_google_url(google), VKT_GOOGLE_SERVICE_ACCOUNT, NULL,
                   FETCH_TIMEOUT_MS, &token, NULL));
    CHECK(token != NULL && strncmp(token, "vkiam-", 6) == 0);
    vk__free_secret(token);
    CHECK_EQ_INT(count_requests(google, "metadata"), metadata_before + 1);
    CHECK_EQ_INT(count_requests(google, "token"), token_before);

    vk_config *cfg = iam_config(NULL);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK(c != NULL && set_get_roundtrip(c, "iam:metadata"));
    vk_client_free(c);
    vk_config_free(cfg);

    /* A metadata server that refuses: its status is reported. */
    CHECK(vkt_google_control(google, "{\"status\":404,\"message\":\"no service account\","
                                     "\"endpoints\":[\"metadata\"]}"));
    CHECK_FAILS(fetch_simple(NULL), VK_ERR_IAM,
                "GCP IAM token request failed: metadata server returned HTTP 404: no service "
                "account");
    CHECK(vkt_google_control(google, ""));
    unsetenv("GCE_METADATA_HOST");
}

/* ---- the client ------------------------------------------------------------------ */

static void test_client_first_connect(void)
{
    char *key = key_b64_for(google);
    size_t iam_before = count_requests(google, "iam");
    vk_config *cfg = iam_config(key);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK(c != NULL);
    if (c != NULL) {
        CHECK(set_get_roundtrip(c, "iam:first"));
        vk_snapshot *snap = NULL;
        CHECK_OK(vk_client_snapshot(&snap, c));
        CHECK(vk_snapshot_last_refresh_error(snap) == NULL);
        CHECK(vk_snapshot_last_refresh_at_ms(snap) > vk__wall_ms() - 10000);
        CHECK(vk_snapshot_refresh_loop_running(snap));
        vk_snapshot_free(snap);
    }
    CHECK_EQ_INT(count_requests(google, "iam"), iam_before + 1);
    vk_client_free(c);

    /* Without a token the server refuses the connection: the fake's token
     * is what lets the client in. */
    vk_config *plain = NULL;
    vk_config_new(&plain);
    vk_config_set_standalone(plain, vkt_server_address(server));
    vk_config_set_tls(plain, vkt_ca_base64());
    vk_config_set_max_retries(plain, 0);
    c = NULL;
    vk_status st = vk_client_new(&c, plain);
    CHECK(st != VK_OK);
    capture(vk_last_error());
    vk_client_free(c);
    vk_config_free(plain);

    /* A first fetch that fails fails vk_client_new, leaving nothing. */
    CHECK(vkt_google_control(google, "{\"status\":500,\"message\":\"down for maintenance\"}"));
    c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_IAM,
                "GCP IAM token request failed: token endpoint returned HTTP 500: down for "
                "maintenance");
    capture(vk_last_error());
    CHECK(c == NULL);
    CHECK(vkt_google_control(google, ""));
    vk_config_free(cfg);
    free(key);
}

/* ---- no secret anywhere ------------------------------------------------------------- */

static void check_absent(const char *what, const char *needle)
{
    bool leaked = captured != NULL && needle != NULL && needle[0] != '\0' &&
                  strstr(captured, needle) != NULL;
    VKT_CHECK_(!leaked, "%s appears in a captured error or log line", what);
}

static void test_no_secret_in_output(void)
{
    CHECK(captured_len > 0);
    /* Every line of the PEM body. */
    char *pem = strdup(vkt_google_private_key_pem());
    for (char *line = strtok(pem, "\n"); line != NULL; line = strtok(NULL, "\n"))
        if (strncmp(line, "-----", 5) != 0 && strlen(line) >= 16)
            check_absent("a line of the private key", line);
    free(pem);
    /* The credentials blob, every minted token, any JWT or OAuth token. */
    char *key = key_b64_for(google);
    char chunk[41];
    snprintf(chunk, sizeof chunk, "%s", key + strlen(key) / 2);
    check_absent("the credentials base64", chunk);
    free(key);
    for (int i = 0; i < nsecrets; i++)
        check_absent("a minted access token", secrets[i]);
    check_absent("a JWT", "eyJhbGciOiJSUzI1NiIs");
    check_absent("an OAuth token", "ya29.");
    check_absent("an access token", "vkiam-");
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("GCE_METADATA_HOST");
    unsigned char raw[16];
    vk__random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(server_password + 2 * i, 3, "%02x", raw[i]);

    const vkt_server_opts server_opts = {.tls = true, .unix_socket = true,
                                         .requirepass = server_password};
    server = vkt_server_start(&server_opts);
    if (server == NULL) {
        fprintf(stderr, "could not start %s\n", vkt_server_binary());
        return 1;
    }
    const char *unix_address = vkt_server_unix_address(server);
    const vkt_google_opts google_opts = {
        .redis_unix = unix_address + strlen("unix:"),
        .redis_password = server_password,
    };
    google = vkt_google_start(&google_opts);
    if (google == NULL) {
        vkt_server_stop(server);
        return 1;
    }

    RUN(test_fetch_token);
    RUN(test_credential_errors);
    RUN(test_http_failures);
    RUN(test_timeout_and_cancel);
    RUN(test_url_policy);
    RUN(test_key_file_from_environment);
    RUN(test_metadata_server);
    RUN(test_client_first_connect);
    RUN(test_no_secret_in_output);

    vkt_google_stop(google);
    vkt_server_stop(server);
    for (int i = 0; i < nsecrets; i++)
        free(secrets[i]);
    free(captured);
    return vkt_finish();
}
