/*
 * The config layer: the private form of vk_config, its preparation
 * (defaults and validation), node addresses and the URL rule of the IAM
 * endpoints. Above the support layer only.
 */
#ifndef VK_CONFIG_H
#define VK_CONFIG_H

#include "support/support.h"

/* ---- config.c: the prepared config ----------------------------------------------------------- */

enum {
    VK_TOPO_STANDALONE = 1,
    VK_TOPO_SENTINEL = 2,
    VK_TOPO_CLUSTER = 4
};

typedef struct vk_strlist {
    char **items;
    size_t count;
} vk_strlist;

struct vk_config {
    unsigned topology_mask;          /* which topologies were configured */
    char *standalone_address;
    char *sentinel_master;
    vk_strlist sentinel_addresses;
    char *sentinel_username;
    char *sentinel_password;
    vk_strlist cluster_addresses;

    bool tls_enabled;
    /* Trust: every source set here is trusted (at least one is required). */
    char *tls_ca_base64;
    char *tls_ca_file;               /* a PEM file path, or NULL */
    bool tls_system_ca;              /* OpenSSL's default verify paths */
    bool tls_system_ca_by_default;   /* chosen by rediss://: a CA set later replaces it */
    vk_tls_version tls_min_version;
    bool tls_allow_legacy;
    char *tls_cert_base64;
    char *tls_key_base64;
    char *tls_server_name;

    bool auth_static;
    char *username;
    char *password;

    bool auth_gcp_iam;
    char *iam_credentials_base64;    /* NULL: from the environment */
    char *iam_service_account;
    int64_t iam_token_lifetime_ms;
    int64_t iam_refresh_every_ms;
    int64_t iam_refresh_check_interval_ms;
    int64_t iam_refresh_operation_timeout_ms;
    char *iam_endpoint;

    int db;
    int protocol;
    int pool_size;
    int min_idle_conns;
    int64_t read_timeout_ms;
    int64_t write_timeout_ms;
    int64_t dial_timeout_ms;
    int64_t pool_timeout_ms;
    int max_retries;                 /* -1: none */
    int64_t min_retry_backoff_ms;
    int64_t max_retry_backoff_ms;

    vk_callback *logger;
    vk_callback *metrics;
    vk_callback *tracer;             /* fn: vk_span_start_fn, fn2: vk_span_end_fn */
    bool trace_commands;
    bool no_pool_gauges;             /* vk_config_set_pool_gauges(cfg, 0) */
    vk_event_delivery event_delivery;
    vk_refresh_mode refresh_mode;
};

/* Applies the defaults of SEMANTICS §1 in place (logging the TLS min
 * version decisions through ev, which may be NULL), then validates.
 * VK_ERR_INVALID_CONFIG with the exact reason on failure. */
vk_status vk__config_prepare(vk_config *cfg, vk_events *ev);

/* A parsed address. */
typedef struct vk_endpoint {
    bool is_unix;
    char host[256];   /* without brackets for IPv6 */
    int port;
    char path[108];   /* unix socket path */
} vk_endpoint;

/* "host:port", "[v6]:port" or "unix:/path". VK_ERR_INVALID_CONFIG with a
 * reason naming the address on failure. */
vk_status vk__parse_address(vk_endpoint *out, const char *address);
/* "host:port" / "[v6]:port" / "unix:/path" back into buf. */
void vk__format_endpoint(char *buf, size_t cap, const vk_endpoint *ep);
/* The same node: the same socket path, or the same host (as written) and
 * port. */
bool vk__endpoint_equal(const vk_endpoint *a, const vk_endpoint *b);

/* ---- url_rule.c ------------------------------------------------------------ */

/* https:// to any host, or plain http:// only to a loopback host (all of
 * 127.0.0.0/8, ::1, localhost) without user info: the endpoints the IAM
 * calls may use, and the rule the config validates them with. */
bool vk__http_url_allowed(const char *url);

#endif /* VK_CONFIG_H */
