/*
 * Configuration: every validation reason of SEMANTICS §1 with its exact
 * message, every default of the normalisation, URLs, addresses, redaction
 * and the NULL-handle behaviour of every setter.
 */
#include "config.h"
#include "vktest.h"

#include <hiredis/hiredis.h>

#define INVALID(reason) "invalid redis config: " reason

static vk_config *standalone(const char *address)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, address));
    return cfg;
}

/* A config that passes validation with GCP IAM auth. */
static vk_config *iam_config(void)
{
    vk_config *cfg = standalone("127.0.0.1:6379");
    CHECK_OK(vk_config_set_tls(cfg, "Y2E="));
    CHECK_OK(vk_config_set_gcp_iam(cfg, "eyJ9", "sa@project.iam.gserviceaccount.com"));
    return cfg;
}

/* ---- topology ------------------------------------------------------------- */

static void test_topology_rules(void)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("exactly one topology must be configured"));
    CHECK_OK(vk_config_set_standalone(cfg, "127.0.0.1:6379"));
    CHECK_OK(vk_config_validate(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:7000"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("exactly one topology must be configured"));
    vk_config_free(cfg);

    cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_sentinel(cfg, "mymaster"));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("exactly one topology must be configured"));
    vk_config_free(cfg);
}

static void test_standalone_rules(void)
{
    const char *blank[] = {"", "   ", "\t\n", NULL};
    for (size_t i = 0; i < 4; i++) {
        vk_config *cfg = standalone(blank[i]);
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                    INVALID("standalone address is required"));
        vk_config_free(cfg);
    }
    const char *good[] = {"127.0.0.1:6379", "localhost:1", "[::1]:6380", "redis.example:65535",
                          "unix:/tmp/redis.sock"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        vk_config *cfg = standalone(good[i]);
        CHECK_OK(vk_config_validate(cfg));
        vk_config_free(cfg);
    }
    static const struct {
        const char *address, *message;
    } bad[] = {
        {"localhost", INVALID("invalid address \"localhost\": missing port")},
        {"localhost:", INVALID("invalid address \"localhost:\": port must be a number from 1 to 65535")},
        {"localhost:0", INVALID("invalid address \"localhost:0\": port must be a number from 1 to 65535")},
        {"localhost:65536", INVALID("invalid address \"localhost:65536\": port must be a number from 1 to 65535")},
        {"localhost:6x", INVALID("invalid address \"localhost:6x\": port must be a number from 1 to 65535")},
        {":6379", INVALID("invalid address \":6379\": missing host")},
        {"::1:6379", INVALID("invalid address \"::1:6379\": an IPv6 address must be in brackets, e.g. [::1]:6379")},
        {"[::1:6379", INVALID("invalid address \"[::1:6379\": missing ']' after the IPv6 address")},
        {"[::1]", INVALID("invalid address \"[::1]\": missing port")},
        {"[nothost]:1", INVALID("invalid address \"[nothost]:1\": not a valid IPv6 address in brackets")},
        {"a b:1", INVALID("invalid address \"a b:1\": contains spaces or control characters")},
        {"unix:relative.sock", INVALID("invalid address \"unix:relative.sock\": a unix socket path must be absolute")},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vk_config *cfg = standalone(bad[i].address);
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG, bad[i].message);
        vk_config_free(cfg);
    }
}

static void test_sentinel_rules(void)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_sentinel(cfg, "mymaster"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("sentinel addresses are required"));
    CHECK_OK(vk_config_add_sentinel_address(cfg, "127.0.0.1:26379"));
    CHECK_OK(vk_config_validate(cfg));
    CHECK_OK(vk_config_add_sentinel_address(cfg, " "));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("sentinel addresses cannot be empty"));
    vk_config_free(cfg);

    const char *no_master[] = {NULL, "", "  "};
    for (size_t i = 0; i < 3; i++) {
        cfg = NULL;
        CHECK_OK(vk_config_new(&cfg));
        CHECK_OK(vk_config_set_sentinel(cfg, no_master[i]));
        CHECK_OK(vk_config_add_sentinel_address(cfg, "127.0.0.1:26379"));
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                    INVALID("sentinel master name is required"));
        vk_config_free(cfg);
    }

    cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_sentinel(cfg, "m"));
    CHECK_OK(vk_config_add_sentinel_address(cfg, "nope"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("invalid address \"nope\": missing port"));
    vk_config_free(cfg);
}

static void test_cluster_rules(void)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_cluster(cfg));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("cluster addresses are required"));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:7000"));
    CHECK_OK(vk_config_add_cluster_address(cfg, "[::1]:7001"));
    CHECK_OK(vk_config_validate(cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, ""));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("cluster addresses cannot be empty"));
    vk_config_free(cfg);

    /* Adding an address selects the topology by itself. */
    cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_add_cluster_address(cfg, "127.0.0.1:7000"));
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);
}

/* ---- auth, TLS, IAM ---------------------------------------------------------- */

static void test_auth_and_tls_rules(void)
{
    vk_config *cfg = iam_config();
    CHECK_OK(vk_config_validate(cfg));
    CHECK_OK(vk_config_set_static_password(cfg, NULL, "pw"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("only one auth strategy can be configured"));
    vk_config_free(cfg);

    const char *blank_ca[] = {NULL, "", " \n"};
    for (size_t i = 0; i < 3; i++) {
        cfg = standalone("127.0.0.1:6379");
        CHECK_OK(vk_config_set_tls(cfg, blank_ca[i]));
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                    INVALID("TLS CA cert is required when TLS is configured"));
        vk_config_free(cfg);
    }

    cfg = standalone("127.0.0.1:6379");
    CHECK_OK(vk_config_set_tls(cfg, "Y2E="));
    CHECK_OK(vk_config_set_tls_client_cert(cfg, "Y2VydA==", NULL));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("TLS client certificate and key must be set together"));
    CHECK_OK(vk_config_set_tls_client_cert(cfg, "Y2VydA==", "a2V5"));
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);
}

static void test_iam_rules(void)
{
    vk_config *cfg = standalone("127.0.0.1:6379");
    CHECK_OK(vk_config_set_gcp_iam(cfg, "eyJ9", "sa@p.iam.gserviceaccount.com"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("TLS must be configured when GCP IAM auth is enabled"));
    vk_config_free(cfg);

    const char *no_account[] = {NULL, "", "   "};
    for (size_t i = 0; i < 3; i++) {
        cfg = iam_config();
        CHECK_OK(vk_config_set_gcp_iam(cfg, "eyJ9", no_account[i]));
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                    INVALID("service account is required for GCP IAM auth"));
        vk_config_free(cfg);
    }

    cfg = iam_config();
    CHECK_OK(vk_config_set_gcp_iam(cfg, "eyJ9", "projects/-/serviceAccounts/sa"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("service account cannot contain '/' characters"));
    vk_config_free(cfg);

    const char *blank_credentials[] = {"", "  "};
    for (size_t i = 0; i < 2; i++) {
        cfg = iam_config();
        CHECK_OK(vk_config_set_gcp_iam(cfg, blank_credentials[i], "sa@p"));
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                    INVALID("credentials are required for GCP IAM auth"));
        vk_config_free(cfg);
    }
    /* NULL credentials: taken from the environment when connecting. */
    cfg = iam_config();
    CHECK_OK(vk_config_set_gcp_iam(cfg, NULL, "sa@p"));
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);

    const char *refresh_message =
        INVALID("RefreshEvery must be less than TokenLifetime to prevent token expiry before refresh");
    cfg = iam_config();
    CHECK_OK(vk_config_set_gcp_iam_token_lifetime_ms(cfg, 60000));
    CHECK_OK(vk_config_set_gcp_iam_refresh_every_ms(cfg, 60000)); /* equal: rejected */
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG, refresh_message);
    CHECK_OK(vk_config_set_gcp_iam_refresh_every_ms(cfg, 90000));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG, refresh_message);
    CHECK_OK(vk_config_set_gcp_iam_refresh_every_ms(cfg, 59999));
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);
    /* A lifetime below the default refresh interval is caught too. */
    cfg = iam_config();
    CHECK_OK(vk_config_set_gcp_iam_token_lifetime_ms(cfg, 30 * 60 * 1000));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG, refresh_message);
    vk_config_free(cfg);

    cfg = iam_config();
    CHECK_OK(vk_config_set_gcp_iam_refresh_check_interval_ms(cfg, -1));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("GCP IAM durations cannot be negative"));
    vk_config_free(cfg);

    const char *good_endpoints[] = {"https://iam.example", "http://127.0.0.1:8080",
                                    "http://localhost", "http://[::1]:9/x"};
    for (size_t i = 0; i < 4; i++) {
        cfg = iam_config();
        CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, good_endpoints[i]));
        CHECK_OK(vk_config_validate(cfg));
        vk_config_free(cfg);
    }
    cfg = iam_config();
    CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, "http://iam.example"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("GCP IAM endpoint must be an https:// URL (http:// only for loopback "
                        "hosts): \"http://iam.example\""));
    CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, "http://localhost.evil.example"));
    CHECK(vk_config_validate(cfg) == VK_ERR_INVALID_CONFIG);
    CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, "https:///no-host"));
    CHECK(vk_config_validate(cfg) == VK_ERR_INVALID_CONFIG);
    /* Credentials in the URL never reach the message. */
    CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, "http://admin:hunter2@iam.example/x"));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("GCP IAM endpoint must be an https:// URL (http:// only for loopback "
                        "hosts): \"http://REDACTED@iam.example/x\""));
    /* The whole loopback range, as the HTTP calls themselves accept it. */
    CHECK_OK(vk_config_set_gcp_iam_endpoint(cfg, "http://127.0.0.2:8080/"));
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);
}

/* ---- options --------------------------------------------------------------------- */

static void test_option_rules(void)
{
    static const struct {
        vk_status (*set_int)(vk_config *, int);
        vk_status (*set_ms)(vk_config *, int64_t);
        int64_t value;
        const char *message;
    } cases[] = {
        {vk_config_set_db, NULL, -1, INVALID("db cannot be negative")},
        {vk_config_set_pool_size, NULL, -1, INVALID("pool size cannot be negative")},
        {vk_config_set_min_idle_conns, NULL, -1, INVALID("min idle conns cannot be negative")},
        {vk_config_set_max_retries, NULL, -2,
         INVALID("max retries must be -1 (no retries) or at least 0")},
        {vk_config_set_protocol, NULL, 1, INVALID("protocol must be 2 (RESP2) or 3 (RESP3), got 1")},
        {vk_config_set_protocol, NULL, 4, INVALID("protocol must be 2 (RESP2) or 3 (RESP3), got 4")},
        {NULL, vk_config_set_read_timeout_ms, -1, INVALID("read timeout cannot be negative")},
        {NULL, vk_config_set_write_timeout_ms, -5, INVALID("write timeout cannot be negative")},
        {NULL, vk_config_set_dial_timeout_ms, -1, INVALID("dial timeout cannot be negative")},
        {NULL, vk_config_set_pool_timeout_ms, -1, INVALID("pool timeout cannot be negative")},
        {NULL, vk_config_set_min_retry_backoff_ms, -1, INVALID("retry backoff cannot be negative")},
        {NULL, vk_config_set_max_retry_backoff_ms, -1, INVALID("retry backoff cannot be negative")},
        {NULL, vk_config_set_min_retry_backoff_ms, 2000,
         INVALID("min retry backoff cannot exceed max retry backoff")},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vk_config *cfg = standalone("127.0.0.1:6379");
        if (cases[i].set_int != NULL)
            CHECK_OK(cases[i].set_int(cfg, (int)cases[i].value));
        else
            CHECK_OK(cases[i].set_ms(cfg, cases[i].value));
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG, cases[i].message);
        vk_config_free(cfg);
    }

    vk_config *cfg = standalone("127.0.0.1:6379");
    CHECK_OK(vk_config_set_max_retries(cfg, -1)); /* -1: no retries */
    CHECK_OK(vk_config_validate(cfg));
    CHECK_OK(vk_config_set_protocol(cfg, 3));
    if (vk_resp3_supported()) {
        CHECK_OK(vk_config_validate(cfg));
    } else {
        char expected[200];
        snprintf(expected, sizeof expected,
                 INVALID("protocol 3 (RESP3) requires hiredis >= 1.0; this build uses hiredis %s"),
                 vk_hiredis_version());
        CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG, expected);
        CHECK(strstr(expected, "0.14") != NULL || HIREDIS_MAJOR != 0);
    }
    vk_config_free(cfg);

    cfg = standalone("127.0.0.1:6379");
    CHECK_FAILS(vk_config_set_tls_min_version(cfg, (vk_tls_version)14), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: unknown TLS version 14");
    CHECK_FAILS(vk_config_set_event_delivery(cfg, (vk_event_delivery)7), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: unknown event delivery 7");
    CHECK_FAILS(vk_config_set_refresh_mode(cfg, (vk_refresh_mode)7), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: unknown refresh mode 7");
    vk_config_free(cfg);
}

/* ---- normalisation ------------------------------------------------------------------ */

typedef struct captured_logs {
    int count;
    vk_log_level levels[8];
    char messages[8][200];
} captured_logs;

static void capture_log(void *userdata, vk_log_level level, const char *message,
                        const vk_field *fields, size_t nfields)
{
    captured_logs *logs = userdata;
    if (logs->count < 8) {
        logs->levels[logs->count] = level;
        snprintf(logs->messages[logs->count], sizeof logs->messages[0], "%s", message);
    }
    logs->count++;
}

/* Prepares a clone of cfg with a capturing logger; returns the clone. */
static vk_config *prepared(const vk_config *cfg, captured_logs *logs)
{
    vk_config *copy = NULL;
    CHECK_OK(vk_config_clone(&copy, cfg));
    vk_callback *cb = vk__callback_new((void (*)(void))capture_log, logs, NULL);
    vk_events *ev = vk__events_new(cb, NULL, NULL, VK_EVENTS_ANY_THREAD);
    CHECK_OK(vk__config_prepare(copy, ev));
    vk__events_free(ev);
    vk__callback_unref(cb);
    return copy;
}

static void test_defaults(void)
{
    vk_config *cfg = iam_config();
    captured_logs logs = {0};
    vk_config *p = prepared(cfg, &logs);
    CHECK_EQ_INT(p->pool_size, 10);
    CHECK_EQ_INT(p->read_timeout_ms, 3000);
    CHECK_EQ_INT(p->write_timeout_ms, 3000);
    CHECK_EQ_INT(p->dial_timeout_ms, 5000);
    CHECK_EQ_INT(p->pool_timeout_ms, 2000);
    CHECK_EQ_INT(p->max_retries, 3);
    CHECK_EQ_INT(p->min_retry_backoff_ms, 8);
    CHECK_EQ_INT(p->max_retry_backoff_ms, 1000);
    CHECK_EQ_INT(p->db, 0);
    CHECK_EQ_INT(p->min_idle_conns, 0);
    CHECK_EQ_INT(p->protocol, 2);
    CHECK_EQ_INT(p->tls_min_version, VK_TLS1_2);
    CHECK_EQ_INT(p->iam_token_lifetime_ms, 3600000);
    CHECK_EQ_INT(p->iam_refresh_every_ms, 3000000);
    CHECK_EQ_INT(p->iam_refresh_check_interval_ms, 10000);
    CHECK_EQ_INT(p->iam_refresh_operation_timeout_ms, 15000);
    CHECK_EQ_STR(p->iam_endpoint, "https://iamcredentials.googleapis.com");
    CHECK(p->logger == NULL); /* no logger: the no-op one */
    CHECK_EQ_INT(logs.count, 1);
    CHECK_EQ_INT(logs.levels[0], VK_LOG_INFO);
    CHECK_EQ_STR(logs.messages[0], "TLS min version not set; using TLS 1.2");
    vk_config_free(p);

    /* The caller's config keeps its unset values. */
    CHECK_EQ_INT(cfg->pool_size, 0);
    CHECK_EQ_INT(cfg->read_timeout_ms, 0);
    CHECK(cfg->iam_endpoint == NULL);
    CHECK_OK(vk_config_validate(cfg));
    CHECK_EQ_INT(cfg->pool_size, 0);
    vk_config_free(cfg);
}

static void test_explicit_values_kept(void)
{
    vk_config *cfg = standalone("127.0.0.1:6379");
    CHECK_OK(vk_config_set_pool_size(cfg, 5000));
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 100));
    CHECK_OK(vk_config_set_write_timeout_ms(cfg, 200));
    CHECK_OK(vk_config_set_dial_timeout_ms(cfg, 300));
    CHECK_OK(vk_config_set_pool_timeout_ms(cfg, 400));
    CHECK_OK(vk_config_set_max_retries(cfg, -1));
    CHECK_OK(vk_config_set_min_retry_backoff_ms(cfg, 1));
    CHECK_OK(vk_config_set_max_retry_backoff_ms(cfg, 2));
    CHECK_OK(vk_config_set_db(cfg, 7));
    CHECK_OK(vk_config_set_min_idle_conns(cfg, 2));
    captured_logs logs = {0};
    vk_config *p = prepared(cfg, &logs);
    CHECK_EQ_INT(p->pool_size, 1000); /* capped */
    CHECK_EQ_INT(p->read_timeout_ms, 100);
    CHECK_EQ_INT(p->write_timeout_ms, 200);
    CHECK_EQ_INT(p->dial_timeout_ms, 300);
    CHECK_EQ_INT(p->pool_timeout_ms, 400);
    CHECK_EQ_INT(p->max_retries, -1);
    CHECK_EQ_INT(p->min_retry_backoff_ms, 1);
    CHECK_EQ_INT(p->max_retry_backoff_ms, 2);
    CHECK_EQ_INT(p->db, 7);
    CHECK_EQ_INT(p->min_idle_conns, 2);
    CHECK_EQ_INT(logs.count, 0); /* no TLS: no TLS log */
    vk_config_free(p);
    CHECK_OK(vk_config_set_pool_size(cfg, 1000));
    p = prepared(cfg, &logs);
    CHECK_EQ_INT(p->pool_size, 1000);
    vk_config_free(p);
    vk_config_free(cfg);
}

static void test_tls_min_version_rules(void)
{
    static const struct {
        vk_tls_version requested;
        int allow_legacy;
        vk_tls_version result;
        vk_log_level level;
        const char *log;
    } cases[] = {
        {VK_TLS_DEFAULT, 0, VK_TLS1_2, VK_LOG_INFO, "TLS min version not set; using TLS 1.2"},
        {VK_TLS1_0, 0, VK_TLS1_2, VK_LOG_WARN, "TLS min version below 1.2 raised to TLS 1.2"},
        {VK_TLS1_1, 0, VK_TLS1_2, VK_LOG_WARN, "TLS min version below 1.2 raised to TLS 1.2"},
        {VK_TLS1_0, 1, VK_TLS1_0, VK_LOG_WARN,
         "TLS min version below 1.2 kept because legacy versions are allowed; this is insecure"},
        {VK_TLS1_1, 1, VK_TLS1_1, VK_LOG_WARN,
         "TLS min version below 1.2 kept because legacy versions are allowed; this is insecure"},
        {VK_TLS1_2, 0, VK_TLS1_2, VK_LOG_DEBUG, NULL},
        {VK_TLS1_3, 1, VK_TLS1_3, VK_LOG_DEBUG, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vk_config *cfg = standalone("127.0.0.1:6379");
        CHECK_OK(vk_config_set_tls(cfg, "Y2E="));
        CHECK_OK(vk_config_set_tls_min_version(cfg, cases[i].requested));
        CHECK_OK(vk_config_set_tls_allow_legacy_min_version(cfg, cases[i].allow_legacy));
        captured_logs logs = {0};
        vk_config *p = prepared(cfg, &logs);
        CHECK_EQ_INT(p->tls_min_version, cases[i].result);
        if (cases[i].log == NULL) {
            CHECK_EQ_INT(logs.count, 0);
        } else {
            CHECK_EQ_INT(logs.count, 1);
            CHECK_EQ_INT(logs.levels[0], cases[i].level);
            CHECK_EQ_STR(logs.messages[0], cases[i].log);
        }
        vk_config_free(p);
        vk_config_free(cfg);
    }
}

/* ---- URLs ------------------------------------------------------------------------------ */

static void test_url_good(void)
{
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_from_url(&cfg, "redis://127.0.0.1"));
    CHECK_EQ_STR(cfg->standalone_address, "127.0.0.1:6379");
    CHECK_EQ_INT(cfg->topology_mask, VK_TOPO_STANDALONE);
    CHECK(!cfg->tls_enabled && !cfg->auth_static);
    CHECK_EQ_INT(cfg->db, 0);
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);

    CHECK_OK(vk_config_from_url(&cfg, "redis://user:secret@cache.example:6380/3"));
    CHECK_EQ_STR(cfg->standalone_address, "cache.example:6380");
    CHECK_EQ_STR(cfg->username, "user");
    CHECK_EQ_STR(cfg->password, "secret");
    CHECK(cfg->auth_static);
    CHECK_EQ_INT(cfg->db, 3);
    vk_config_free(cfg);

    CHECK_OK(vk_config_from_url(&cfg, "redis://:p%40ss%3Aw%2Fd@[::1]:7000/"));
    CHECK_EQ_STR(cfg->standalone_address, "[::1]:7000");
    CHECK(cfg->username == NULL);
    CHECK_EQ_STR(cfg->password, "p@ss:w/d");
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);

    CHECK_OK(vk_config_from_url(&cfg, "redis://us%20er:a@b@[::1]"));
    CHECK_EQ_STR(cfg->standalone_address, "[::1]:6379");
    CHECK_EQ_STR(cfg->username, "us er");
    CHECK_EQ_STR(cfg->password, "a@b"); /* the last '@' ends the user info */
    vk_config_free(cfg);

    CHECK_OK(vk_config_from_url(&cfg, "redis://user@host:1"));
    CHECK(!cfg->auth_static); /* a user without a password: no AUTH */
    vk_config_free(cfg);

    CHECK_OK(vk_config_from_url(&cfg, "REDISS://h.example:6390/1?protocol=2"));
    CHECK(cfg->tls_enabled);
    CHECK_EQ_INT(cfg->db, 1);
    CHECK_EQ_INT(cfg->protocol, 2);
    /* Without a CA, the system store (test_tls_trust.c connects with it). */
    CHECK(cfg->tls_system_ca);
    CHECK_OK(vk_config_validate(cfg));
    CHECK_OK(vk_config_set_tls_use_system_ca(cfg, 0));
    CHECK_FAILS(vk_config_validate(cfg), VK_ERR_INVALID_CONFIG,
                INVALID("TLS CA cert is required when TLS is configured"));
    CHECK_OK(vk_config_set_tls(cfg, "Y2E="));
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);

    CHECK_OK(vk_config_from_url(&cfg, "unix:///run/valkey/valkey.sock"));
    CHECK_EQ_STR(cfg->standalone_address, "unix:/run/valkey/valkey.sock");
    CHECK_OK(vk_config_validate(cfg));
    vk_config_free(cfg);

    CHECK_OK(vk_config_from_url(&cfg, "unix://alice:s%25cret@/tmp/r.sock?db=5"));
    CHECK_EQ_STR(cfg->standalone_address, "unix:/tmp/r.sock");
    CHECK_EQ_STR(cfg->username, "alice");
    CHECK_EQ_STR(cfg->password, "s%cret");
    CHECK_EQ_INT(cfg->db, 5);
    vk_config_free(cfg);
}

static void test_url_bad(void)
{
    static const struct {
        const char *url, *message;
    } bad[] = {
        {"http://h:1", INVALID("invalid URL: unsupported scheme \"http\" (use redis://, rediss:// or unix://)")},
        {"h:1", INVALID("invalid URL: unsupported scheme \"h\" (use redis://, rediss:// or unix://)")},
        {"", INVALID("invalid URL: unsupported scheme \"\" (use redis://, rediss:// or unix://)")},
        {"redis://", INVALID("invalid URL \"redis://\": missing host")},
        {"redis://:1", INVALID("invalid URL \"redis://:1\": missing host")},
        {"redis://[]:1", INVALID("invalid URL \"redis://[]:1\": missing host")},
        {"redis://h:0", INVALID("invalid URL \"redis://h:0\": port must be a number from 1 to 65535")},
        {"redis://h:99999", INVALID("invalid URL \"redis://h:99999\": port must be a number from 1 to 65535")},
        {"redis://h:x", INVALID("invalid URL \"redis://h:x\": port must be a number from 1 to 65535")},
        {"redis://h/x", INVALID("invalid URL \"redis://h/x\": the path must be a database number, e.g. /0")},
        {"redis://h/-1", INVALID("invalid URL \"redis://h/-1\": the path must be a database number, e.g. /0")},
        {"redis://::1:6379", INVALID("invalid URL \"redis://::1:6379\": an IPv6 host must be in brackets, e.g. [::1]")},
        {"redis://[::1", INVALID("invalid URL \"redis://[::1\": missing ']' after the IPv6 host")},
        {"redis://h?timeout=1", INVALID("invalid URL \"redis://h?timeout=1\": unsupported option \"timeout\" (supported: db, protocol)")},
        {"unix://relative.sock", INVALID("invalid URL \"unix://relative.sock\": the socket path must be absolute, e.g. unix:///run/redis.sock")},
        {"unix:///s.sock?db=x", INVALID("invalid URL \"unix:///s.sock?db=x\": db must be a non-negative number")},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vk_config *cfg = (vk_config *)&cfg; /* must be reset to NULL */
        CHECK_FAILS(vk_config_from_url(&cfg, bad[i].url), VK_ERR_INVALID_CONFIG, bad[i].message);
        CHECK(cfg == NULL);
    }
}

static void test_url_errors_hide_password(void)
{
    static const struct {
        const char *url, *message;
    } bad[] = {
        {"redis://u:hunter2@h:0",
         INVALID("invalid URL \"redis://u:REDACTED@h:0\": port must be a number from 1 to 65535")},
        {"redis://:hunter2@h/db",
         INVALID("invalid URL \"redis://:REDACTED@h/db\": the path must be a database number, e.g. /0")},
        {"redis://u:hunter2%zz@h",
         INVALID("invalid URL \"redis://u:REDACTED@h\": malformed percent-encoding in the password")},
        {"redis://u:hunter2%00@h",
         INVALID("invalid URL \"redis://u:REDACTED@h\": malformed percent-encoding in the password")},
        {"redis://u%4:hunter2@h",
         INVALID("invalid URL \"redis://u%4:REDACTED@h\": malformed percent-encoding in the user name")},
        {"rediss://u:hun:ter2@[::1]:x",
         INVALID("invalid URL \"rediss://u:REDACTED@[::1]:x\": port must be a number from 1 to 65535")},
        {"unix://u:hunter2@rel",
         INVALID("invalid URL \"unix://u:REDACTED@rel\": the socket path must be absolute, e.g. unix:///run/redis.sock")},
        {"hunter2://x:hunter2@h",
         INVALID("invalid URL: unsupported scheme \"hunter2\" (use redis://, rediss:// or unix://)")},
        {"redis:hunter2@h",
         INVALID("invalid URL: unsupported scheme \"redis\" (use redis://, rediss:// or unix://)")},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vk_config *cfg = NULL;
        CHECK_FAILS(vk_config_from_url(&cfg, bad[i].url), VK_ERR_INVALID_CONFIG, bad[i].message);
        CHECK(strstr(vk_last_error(), "ter2") == NULL || strncmp(bad[i].url, "hunter2", 7) == 0);
    }
}

/* ---- describe ----------------------------------------------------------------------- */

static char *describe(const vk_config *cfg)
{
    char *text = NULL;
    CHECK_OK(vk_config_describe(&text, cfg));
    return text;
}

static void test_describe_redacts(void)
{
    vk_config *cfg = standalone("127.0.0.1:6379");
    CHECK_OK(vk_config_set_static_password(cfg, NULL, "hunter2"));
    char *text = describe(cfg);
    CHECK_EQ_STR(text,
                 "Config{Topology:Standalone{Address:127.0.0.1:6379}, TLS:<nil>, "
                 "Auth:StaticPasswordAuth{Password:REDACTED}, Options:{DB:0, Protocol:0, "
                 "PoolSize:0, MinIdleConns:0, ReadTimeout:0s, WriteTimeout:0s, DialTimeout:0s, "
                 "PoolTimeout:0s, MaxRetries:0, MinRetryBackoff:0s, MaxRetryBackoff:0s}}");
    vk_free(text);

    CHECK_OK(vk_config_set_static_password(cfg, "app", "hunter2"));
    CHECK_OK(vk_config_set_read_timeout_ms(cfg, 1500));
    text = describe(cfg);
    CHECK(strstr(text, "Auth:StaticPasswordAuth{Username:app, Password:REDACTED}") != NULL);
    CHECK(strstr(text, "ReadTimeout:1.5s") != NULL);
    CHECK(strstr(text, "hunter2") == NULL);
    vk_free(text);
    vk_config_free(cfg);

    cfg = iam_config();
    CHECK_OK(vk_config_set_gcp_iam(cfg, "c2VjcmV0LWtleQ==", "sa@p.iam.gserviceaccount.com"));
    CHECK_OK(vk_config_set_tls_client_cert(cfg, "Y2VydA==", "cHJpdmF0ZS1rZXk="));
    CHECK_OK(vk_config_set_tls_server_name(cfg, "redis.internal"));
    text = describe(cfg);
    CHECK(strstr(text, "Auth:GCPIAMAuth{ServiceAccount:sa@p.iam.gserviceaccount.com, "
                       "CredentialsBase64:REDACTED}") != NULL);
    CHECK(strstr(text, "TLS:TLSConfig{CACert:<4 bytes>, MinVersion:default, "
                       "AllowLegacyMinVersion:false, ClientCert:<8 bytes>, ClientKey:REDACTED, "
                       "ServerName:redis.internal}") != NULL);
    CHECK(strstr(text, "GCPIAM:{TokenLifetime:0s") != NULL);
    CHECK(strstr(text, "c2VjcmV0LWtleQ") == NULL);
    CHECK(strstr(text, "cHJpdmF0ZS1rZXk") == NULL);
    vk_free(text);
    vk_config_free(cfg);

    cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_sentinel(cfg, "mymaster"));
    CHECK_OK(vk_config_add_sentinel_address(cfg, "10.0.0.1:26379"));
    CHECK_OK(vk_config_add_sentinel_address(cfg, "10.0.0.2:26379"));
    CHECK_OK(vk_config_set_sentinel_auth(cfg, "sentinel-user", "sentinel-secret"));
    text = describe(cfg);
    CHECK(strstr(text, "Topology:Sentinel{MasterName:mymaster, Addresses:[10.0.0.1:26379 "
                       "10.0.0.2:26379], Username:sentinel-user, Password:REDACTED}") != NULL);
    CHECK(strstr(text, "sentinel-secret") == NULL);
    CHECK(strstr(text, "Auth:<nil>") != NULL);
    vk_free(text);
    vk_config_free(cfg);

    cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    text = describe(cfg);
    CHECK(strncmp(text, "Config{Topology:<nil>, TLS:<nil>, Auth:<nil>, ", 46) == 0);
    vk_free(text);
    CHECK_OK(vk_config_add_cluster_address(cfg, "[::1]:7000"));
    text = describe(cfg);
    CHECK(strstr(text, "Topology:Cluster{Addresses:[[::1]:7000]}") != NULL);
    vk_free(text);
    vk_config_free(cfg);
}

static void test_validation_errors_hide_secrets(void)
{
    vk_config *cfg = standalone("bad address");
    CHECK_OK(vk_config_set_static_password(cfg, "u", "hunter2"));
    CHECK(vk_config_validate(cfg) == VK_ERR_INVALID_CONFIG);
    CHECK(strstr(vk_last_error(), "hunter2") == NULL);
    vk_config_free(cfg);
}

/* ---- clone, setters replacing values, secrets ------------------------------------------- */

static int freed_userdata;
static void count_free(void *userdata)
{
    freed_userdata += *(int *)userdata;
}
static void ignore_log(void *userdata, vk_log_level level, const char *message,
                       const vk_field *fields, size_t nfields)
{
}
static void ignore_metric(void *userdata, const char *name, vk_metric_kind kind, double value,
                          const vk_field *labels, size_t nlabels)
{
}

static void test_clone_is_deep(void)
{
    int one = 1;
    freed_userdata = 0;
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_sentinel(cfg, "m"));
    CHECK_OK(vk_config_add_sentinel_address(cfg, "127.0.0.1:26379"));
    CHECK_OK(vk_config_set_sentinel_auth(cfg, "su", "sp"));
    CHECK_OK(vk_config_set_static_password(cfg, "u", "p"));
    CHECK_OK(vk_config_set_tls(cfg, "Y2E="));
    CHECK_OK(vk_config_set_logger(cfg, ignore_log, &one, count_free));
    CHECK_OK(vk_config_set_metrics(cfg, ignore_metric, &one, count_free));
    CHECK_OK(vk_config_set_event_delivery(cfg, VK_EVENTS_QUEUED));
    CHECK_OK(vk_config_set_refresh_mode(cfg, VK_REFRESH_DRIVEN));

    vk_config *copy = NULL;
    CHECK_OK(vk_config_clone(&copy, cfg));
    vk_config_free(cfg);
    CHECK_EQ_INT(freed_userdata, 0); /* the clone still holds the sinks */
    CHECK_EQ_STR(copy->sentinel_master, "m");
    CHECK_EQ_INT(copy->sentinel_addresses.count, 1);
    CHECK_EQ_STR(copy->sentinel_addresses.items[0], "127.0.0.1:26379");
    CHECK_EQ_STR(copy->sentinel_username, "su");
    CHECK_EQ_STR(copy->sentinel_password, "sp");
    CHECK_EQ_STR(copy->password, "p");
    CHECK_EQ_INT(copy->event_delivery, VK_EVENTS_QUEUED);
    CHECK_EQ_INT(copy->refresh_mode, VK_REFRESH_DRIVEN);
    CHECK(copy->logger != NULL && copy->metrics != NULL);
    CHECK_OK(vk_config_validate(copy));
    vk_config_free(copy);
    CHECK_EQ_INT(freed_userdata, 2);

    /* Replacing and removing sinks frees the old userdata at once. */
    freed_userdata = 0;
    cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_logger(cfg, ignore_log, &one, count_free));
    CHECK_OK(vk_config_set_logger(cfg, ignore_log, &one, count_free));
    CHECK_EQ_INT(freed_userdata, 1);
    CHECK_OK(vk_config_set_logger(cfg, NULL, NULL, NULL));
    CHECK_EQ_INT(freed_userdata, 2);
    CHECK(cfg->logger == NULL);
    /* Overwriting strings keeps the newest copy. */
    char address[32] = "127.0.0.1:1";
    CHECK_OK(vk_config_set_standalone(cfg, address));
    address[10] = '2';
    CHECK_EQ_STR(cfg->standalone_address, "127.0.0.1:1");
    CHECK_OK(vk_config_set_standalone(cfg, "127.0.0.1:3"));
    CHECK_EQ_STR(cfg->standalone_address, "127.0.0.1:3");
    CHECK_OK(vk_config_set_static_password(cfg, "", "a"));
    CHECK(cfg->username == NULL);
    CHECK_OK(vk_config_set_static_password(cfg, "x", "b"));
    CHECK_EQ_STR(cfg->password, "b");
    vk_config_free(cfg);
}

static void test_wipe(void)
{
    char secret[] = "top-secret";
    vk__wipe(secret, sizeof secret);
    for (size_t i = 0; i < sizeof secret; i++)
        CHECK_EQ_INT(secret[i], 0);
    vk__wipe(NULL, 10);
    vk__free_secret(NULL);
    vk__free_secret(strdup("x"));
}

static void test_parse_address_and_format(void)
{
    vk_endpoint ep;
    char buf[300];
    CHECK_OK(vk__parse_address(&ep, "127.0.0.1:6379"));
    CHECK(!ep.is_unix);
    CHECK_EQ_STR(ep.host, "127.0.0.1");
    CHECK_EQ_INT(ep.port, 6379);
    vk__format_endpoint(buf, sizeof buf, &ep);
    CHECK_EQ_STR(buf, "127.0.0.1:6379");

    CHECK_OK(vk__parse_address(&ep, "[::1]:7000"));
    CHECK_EQ_STR(ep.host, "::1");
    CHECK_EQ_INT(ep.port, 7000);
    vk__format_endpoint(buf, sizeof buf, &ep);
    CHECK_EQ_STR(buf, "[::1]:7000");

    CHECK_OK(vk__parse_address(&ep, "unix:/tmp/x.sock"));
    CHECK(ep.is_unix);
    CHECK_EQ_STR(ep.path, "/tmp/x.sock");
    vk__format_endpoint(buf, sizeof buf, &ep);
    CHECK_EQ_STR(buf, "unix:/tmp/x.sock");

    char long_path[200] = "unix:/";
    memset(long_path + 6, 'a', 150);
    long_path[156] = '\0';
    CHECK(vk__parse_address(&ep, long_path) == VK_ERR_INVALID_CONFIG);
    CHECK(strstr(vk_last_error(), "unix socket path is too long") != NULL);
    CHECK_FAILS(vk__parse_address(&ep, NULL), VK_ERR_INVALID_CONFIG,
                INVALID("address is empty"));
    CHECK_FAILS(vk__parse_address(NULL, "h:1"), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: endpoint is NULL");
    vk__format_endpoint(buf, sizeof buf, NULL);
    CHECK_EQ_STR(buf, "<nil>");
}

/* ---- NULL handles ------------------------------------------------------------------------ */

static int misuse_logs;
static void count_misuse(void *userdata, vk_log_level level, const char *message,
                         const vk_field *fields, size_t nfields)
{
    misuse_logs++;
}

#define NULL_CONFIG "invalid argument: config is NULL"

static void test_null_handles(void)
{
    vk_set_package_logger(count_misuse, NULL, NULL);
    misuse_logs = 0;
    int one = 1;
    freed_userdata = 0;
    CHECK_FAILS(vk_config_new(NULL), VK_ERR_INVALID_ARGUMENT, "invalid argument: out is NULL");
    vk_config_free(NULL);
    vk_config *out = (vk_config *)&out;
    CHECK_FAILS(vk_config_clone(&out, NULL), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK(out == NULL);
    CHECK_FAILS(vk_config_clone(NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    CHECK_FAILS(vk_config_from_url(NULL, "redis://h"), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    CHECK_FAILS(vk_config_from_url(&out, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: url is NULL");
    CHECK_FAILS(vk_config_set_standalone(NULL, "h:1"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_sentinel(NULL, "m"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_add_sentinel_address(NULL, "h:1"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_sentinel_auth(NULL, "u", "p"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_cluster(NULL), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_add_cluster_address(NULL, "h:1"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_tls(NULL, "x"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_tls_min_version(NULL, VK_TLS1_2), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_tls_allow_legacy_min_version(NULL, 1), VK_ERR_INVALID_ARGUMENT,
                NULL_CONFIG);
    CHECK_FAILS(vk_config_set_tls_client_cert(NULL, "c", "k"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_tls_server_name(NULL, "n"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_static_password(NULL, "u", "p"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_gcp_iam(NULL, "c", "s"), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_gcp_iam_token_lifetime_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_gcp_iam_refresh_every_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_gcp_iam_refresh_check_interval_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT,
                NULL_CONFIG);
    CHECK_FAILS(vk_config_set_gcp_iam_refresh_operation_timeout_ms(NULL, 1),
                VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_gcp_iam_endpoint(NULL, "https://x"), VK_ERR_INVALID_ARGUMENT,
                NULL_CONFIG);
    CHECK_FAILS(vk_config_set_db(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_protocol(NULL, 2), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_pool_size(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_min_idle_conns(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_read_timeout_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_write_timeout_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_dial_timeout_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_pool_timeout_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_max_retries(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_min_retry_backoff_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_max_retry_backoff_ms(NULL, 1), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_FAILS(vk_config_set_logger(NULL, ignore_log, &one, count_free), VK_ERR_INVALID_ARGUMENT,
                NULL_CONFIG);
    CHECK_FAILS(vk_config_set_metrics(NULL, ignore_metric, &one, count_free),
                VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK_EQ_INT(freed_userdata, 2); /* handed-over userdata is released */
    CHECK_FAILS(vk_config_set_event_delivery(NULL, VK_EVENTS_QUEUED), VK_ERR_INVALID_ARGUMENT,
                NULL_CONFIG);
    CHECK_FAILS(vk_config_set_refresh_mode(NULL, VK_REFRESH_DRIVEN), VK_ERR_INVALID_ARGUMENT,
                NULL_CONFIG);
    CHECK_FAILS(vk_config_validate(NULL), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    char *text = (char *)&text;
    CHECK_FAILS(vk_config_describe(&text, NULL), VK_ERR_INVALID_ARGUMENT, NULL_CONFIG);
    CHECK(text == NULL);
    CHECK_FAILS(vk_config_describe(NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    CHECK_FAILS(vk__config_prepare(NULL, NULL), VK_ERR_INVALID_CONFIG,
                INVALID("config is NULL"));
    /* Each NULL config and the NULL url above (37 calls) were reported
     * through the package logger; a NULL out pointer is not a NULL handle. */
    CHECK_EQ_INT(misuse_logs, 37);
    vk_set_package_logger(NULL, NULL, NULL);
}

int main(void)
{
    RUN(test_topology_rules);
    RUN(test_standalone_rules);
    RUN(test_sentinel_rules);
    RUN(test_cluster_rules);
    RUN(test_auth_and_tls_rules);
    RUN(test_iam_rules);
    RUN(test_option_rules);
    RUN(test_defaults);
    RUN(test_explicit_values_kept);
    RUN(test_tls_min_version_rules);
    RUN(test_url_good);
    RUN(test_url_bad);
    RUN(test_url_errors_hide_password);
    RUN(test_describe_redacts);
    RUN(test_validation_errors_hide_secrets);
    RUN(test_clone_is_deep);
    RUN(test_wipe);
    RUN(test_parse_address_and_format);
    RUN(test_null_handles);
    return vkt_finish();
}
