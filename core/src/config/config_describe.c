/*
 * A one-line description of a config for logs and printing, Go-struct
 * style. Every secret (passwords, credentials, private keys) is shown as
 * REDACTED; certificates only by their size.
 */
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct text {
    char *buf;
    size_t len, cap;
    bool failed;   /* out of memory at some point */
} text;

static void add(text *t, const char *fmt, ...) VK_PRINTF(2, 3);

static void add(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    va_list measure;
    va_copy(measure, ap);
    int n = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    if (n < 0 || t->len + (size_t)n + 1 > t->cap) {
        size_t cap = t->cap * 2 + (n > 0 ? (size_t)n : 0) + 64;
        char *grown = n >= 0 ? realloc(t->buf, cap) : NULL;
        if (grown == NULL) {
            t->failed = true;
            va_end(ap);
            return;
        }
        t->buf = grown;
        t->cap = cap;
    }
    vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    t->len += (size_t)n;
    va_end(ap);
}

static void add_duration(text *t, const char *name, int64_t ms)
{
    char d[48];
    vk__format_duration_ms(d, sizeof d, ms);
    add(t, "%s:%s", name, d);
}

static void add_list(text *t, const vk_strlist *list)
{
    add(t, "[");
    for (size_t i = 0; i < list->count; i++)
        add(t, "%s%s", i > 0 ? " " : "", list->items[i]);
    add(t, "]");
}

static void add_topology(text *t, const vk_config *cfg)
{
    add(t, "Topology:");
    if (cfg->topology_mask == 0) {
        add(t, "<nil>");
        return;
    }
    const char *sep = "";
    if (cfg->topology_mask & VK_TOPO_STANDALONE) {
        add(t, "Standalone{Address:%s}",
            cfg->standalone_address != NULL ? cfg->standalone_address : "");
        sep = " ";
    }
    if (cfg->topology_mask & VK_TOPO_SENTINEL) {
        add(t, "%sSentinel{MasterName:%s, Addresses:", sep,
            cfg->sentinel_master != NULL ? cfg->sentinel_master : "");
        add_list(t, &cfg->sentinel_addresses);
        if (cfg->sentinel_username != NULL)
            add(t, ", Username:%s", cfg->sentinel_username);
        if (cfg->sentinel_password != NULL)
            add(t, ", Password:REDACTED");
        add(t, "}");
        sep = " ";
    }
    if (cfg->topology_mask & VK_TOPO_CLUSTER) {
        add(t, "%sCluster{Addresses:", sep);
        add_list(t, &cfg->cluster_addresses);
        add(t, "}");
    }
}

static const char *tls_version_name(vk_tls_version v)
{
    switch (v) {
    case VK_TLS_DEFAULT: return "default";
    case VK_TLS1_0: return "TLS1.0";
    case VK_TLS1_1: return "TLS1.1";
    case VK_TLS1_2: return "TLS1.2";
    case VK_TLS1_3: return "TLS1.3";
    }
    return "unknown";
}

static void add_tls(text *t, const vk_config *cfg)
{
    if (!cfg->tls_enabled) {
        add(t, "TLS:<nil>");
        return;
    }
    /* The trust sources that are set: the CA's size (never its content),
     * the file's path (no secret), whether the system store is used. */
    add(t, "TLS:TLSConfig{");
    const char *ca = cfg->tls_ca_base64;
    const char *sep = "";
    if (ca != NULL && ca[strspn(ca, " \t\r\n\v\f")] != '\0') {
        add(t, "CACert:<%zu bytes>", strlen(ca));
        sep = ", ";
    }
    if (cfg->tls_ca_file != NULL) {
        add(t, "%sCAFile:%s", sep, cfg->tls_ca_file);
        sep = ", ";
    }
    if (cfg->tls_system_ca) {
        add(t, "%sSystemCA:true", sep);
        sep = ", ";
    }
    add(t, "%sMinVersion:%s, AllowLegacyMinVersion:%s", sep,
        tls_version_name(cfg->tls_min_version), cfg->tls_allow_legacy ? "true" : "false");
    if (cfg->tls_cert_base64 != NULL)
        add(t, ", ClientCert:<%zu bytes>", strlen(cfg->tls_cert_base64));
    if (cfg->tls_key_base64 != NULL)
        add(t, ", ClientKey:REDACTED");
    if (cfg->tls_server_name != NULL)
        add(t, ", ServerName:%s", cfg->tls_server_name);
    add(t, "}");
}

static void add_auth(text *t, const vk_config *cfg)
{
    add(t, "Auth:");
    if (!cfg->auth_static && !cfg->auth_gcp_iam) {
        add(t, "<nil>");
        return;
    }
    if (cfg->auth_static) {
        add(t, "StaticPasswordAuth{");
        if (cfg->username != NULL)
            add(t, "Username:%s, ", cfg->username);
        add(t, "Password:REDACTED}");
    }
    if (cfg->auth_gcp_iam)
        add(t, "%sGCPIAMAuth{ServiceAccount:%s, CredentialsBase64:REDACTED}",
            cfg->auth_static ? " " : "",
            cfg->iam_service_account != NULL ? cfg->iam_service_account : "");
}

static void add_options(text *t, const vk_config *cfg)
{
    add(t, "Options:{DB:%d, Protocol:%d, PoolSize:%d, MinIdleConns:%d, ", cfg->db,
        cfg->protocol, cfg->pool_size, cfg->min_idle_conns);
    add_duration(t, "ReadTimeout", cfg->read_timeout_ms);
    add_duration(t, ", WriteTimeout", cfg->write_timeout_ms);
    add_duration(t, ", DialTimeout", cfg->dial_timeout_ms);
    add_duration(t, ", PoolTimeout", cfg->pool_timeout_ms);
    add(t, ", MaxRetries:%d, ", cfg->max_retries);
    add_duration(t, "MinRetryBackoff", cfg->min_retry_backoff_ms);
    add_duration(t, ", MaxRetryBackoff", cfg->max_retry_backoff_ms);
    add(t, "}");
}

static void add_iam_options(text *t, const vk_config *cfg)
{
    if (!cfg->auth_gcp_iam)
        return;
    add(t, ", GCPIAM:{");
    add_duration(t, "TokenLifetime", cfg->iam_token_lifetime_ms);
    add_duration(t, ", RefreshEvery", cfg->iam_refresh_every_ms);
    add_duration(t, ", RefreshCheckInterval", cfg->iam_refresh_check_interval_ms);
    add_duration(t, ", RefreshOperationTimeout", cfg->iam_refresh_operation_timeout_ms);
    add(t, ", Endpoint:%s}", cfg->iam_endpoint != NULL ? cfg->iam_endpoint : "<default>");
}

VK_API vk_status vk_config_describe(char **out, const vk_config *cfg)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (cfg == NULL) {
        vk__misuse("vk_config_describe", "config is NULL");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "config is NULL");
    }
    text t = {0};
    add(&t, "Config{");
    add_topology(&t, cfg);
    add(&t, ", ");
    add_tls(&t, cfg);
    add(&t, ", ");
    add_auth(&t, cfg);
    add(&t, ", ");
    add_options(&t, cfg);
    add_iam_options(&t, cfg);
    add(&t, "}");
    if (t.failed) {
        free(t.buf);
        return vk__fail_nomem();
    }
    *out = t.buf;
    return VK_OK;
}
