/*
 * The configuration: setters (which copy their strings; secrets are wiped
 * when replaced or freed), cloning, and preparation: the defaults of
 * SEMANTICS §1 followed by validation with its exact reasons.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VK_DEFAULT_POOL_SIZE 10
#define VK_MAX_POOL_SIZE 1000
#define VK_DEFAULT_READ_TIMEOUT_MS 3000
#define VK_DEFAULT_WRITE_TIMEOUT_MS 3000
#define VK_DEFAULT_DIAL_TIMEOUT_MS 5000
#define VK_DEFAULT_POOL_TIMEOUT_MS 2000
#define VK_DEFAULT_MAX_RETRIES 3
#define VK_DEFAULT_MIN_RETRY_BACKOFF_MS 8
#define VK_DEFAULT_MAX_RETRY_BACKOFF_MS 1000
#define VK_DEFAULT_PROTOCOL 2
#define VK_DEFAULT_IAM_TOKEN_LIFETIME_MS (60 * 60 * 1000)
#define VK_DEFAULT_IAM_REFRESH_EVERY_MS (50 * 60 * 1000)
#define VK_DEFAULT_IAM_CHECK_INTERVAL_MS (10 * 1000)
#define VK_DEFAULT_IAM_OPERATION_TIMEOUT_MS (15 * 1000)
#define VK_DEFAULT_IAM_ENDPOINT "https://iamcredentials.googleapis.com"

/* ---- small helpers ----------------------------------------------------------- */

static vk_status nil_config(const char *function)
{
    vk__misuse(function, "config is NULL");
    return vk__fail(VK_ERR_INVALID_ARGUMENT, "config is NULL");
}

#define REQUIRE_CONFIG(cfg)                          \
    do {                                             \
        if ((cfg) == NULL)                           \
            return nil_config(__func__);             \
    } while (0)

/* Replaces *slot with a copy of value (NULL stays NULL). */
static vk_status set_string(char **slot, const char *value)
{
    char *copy = NULL;
    if (value != NULL && (copy = strdup(value)) == NULL)
        return vk__fail_nomem();
    free(*slot);
    *slot = copy;
    return VK_OK;
}

/* Same for a secret: the old value is wiped first. */
static vk_status set_secret(char **slot, const char *value)
{
    char *copy = NULL;
    if (value != NULL && (copy = strdup(value)) == NULL)
        return vk__fail_nomem();
    vk__free_secret(*slot);
    *slot = copy;
    return VK_OK;
}

static bool is_blank(const char *s)
{
    if (s == NULL)
        return true;
    for (; *s != '\0'; s++)
        if (!isspace((unsigned char)*s))
            return false;
    return true;
}

static vk_status strlist_add(vk_strlist *list, const char *value)
{
    char *copy = strdup(value != NULL ? value : "");
    char **grown = copy != NULL ? realloc(list->items, (list->count + 1) * sizeof *grown) : NULL;
    if (grown == NULL) {
        free(copy);
        return vk__fail_nomem();
    }
    grown[list->count++] = copy;
    list->items = grown;
    return VK_OK;
}

static void strlist_free(vk_strlist *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static bool strlist_copy(vk_strlist *dst, const vk_strlist *src)
{
    dst->items = NULL;
    dst->count = 0;
    for (size_t i = 0; i < src->count; i++)
        if (strlist_add(dst, src->items[i]) != VK_OK)
            return false;
    return true;
}

/* ---- lifetime ------------------------------------------------------------------ */

VK_API vk_status vk_config_new(vk_config **out)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = calloc(1, sizeof **out);
    return *out != NULL ? VK_OK : vk__fail_nomem();
}

VK_API void vk_config_free(vk_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->standalone_address);
    free(cfg->sentinel_master);
    strlist_free(&cfg->sentinel_addresses);
    free(cfg->sentinel_username);
    vk__free_secret(cfg->sentinel_password);
    strlist_free(&cfg->cluster_addresses);
    free(cfg->tls_ca_base64);
    free(cfg->tls_ca_file);
    free(cfg->tls_cert_base64);
    vk__free_secret(cfg->tls_key_base64);
    free(cfg->tls_server_name);
    free(cfg->username);
    vk__free_secret(cfg->password);
    vk__free_secret(cfg->iam_credentials_base64);
    free(cfg->iam_service_account);
    free(cfg->iam_endpoint);
    vk__callback_unref(cfg->logger);
    vk__callback_unref(cfg->metrics);
    vk__callback_unref(cfg->tracer);
    vk__wipe(cfg, sizeof *cfg);
    free(cfg);
}

/* Copies one string field; false when out of memory. */
static bool copy_field(char **dst, const char *src)
{
    *dst = NULL;
    return src == NULL || (*dst = strdup(src)) != NULL;
}

VK_API vk_status vk_config_clone(vk_config **out, const vk_config *cfg)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    REQUIRE_CONFIG(cfg);
    vk_config *copy = malloc(sizeof *copy);
    if (copy == NULL)
        return vk__fail_nomem();
    *copy = *cfg;
    /* Every pointer gets its own copy; on failure the half-made copy is
     * freed, which is safe because each failed field is NULL. */
    bool ok = copy_field(&copy->standalone_address, cfg->standalone_address);
    ok = copy_field(&copy->sentinel_master, cfg->sentinel_master) && ok;
    ok = strlist_copy(&copy->sentinel_addresses, &cfg->sentinel_addresses) && ok;
    ok = copy_field(&copy->sentinel_username, cfg->sentinel_username) && ok;
    ok = copy_field(&copy->sentinel_password, cfg->sentinel_password) && ok;
    ok = strlist_copy(&copy->cluster_addresses, &cfg->cluster_addresses) && ok;
    ok = copy_field(&copy->tls_ca_base64, cfg->tls_ca_base64) && ok;
    ok = copy_field(&copy->tls_ca_file, cfg->tls_ca_file) && ok;
    ok = copy_field(&copy->tls_cert_base64, cfg->tls_cert_base64) && ok;
    ok = copy_field(&copy->tls_key_base64, cfg->tls_key_base64) && ok;
    ok = copy_field(&copy->tls_server_name, cfg->tls_server_name) && ok;
    ok = copy_field(&copy->username, cfg->username) && ok;
    ok = copy_field(&copy->password, cfg->password) && ok;
    ok = copy_field(&copy->iam_credentials_base64, cfg->iam_credentials_base64) && ok;
    ok = copy_field(&copy->iam_service_account, cfg->iam_service_account) && ok;
    ok = copy_field(&copy->iam_endpoint, cfg->iam_endpoint) && ok;
    copy->logger = vk__callback_ref(cfg->logger);
    copy->metrics = vk__callback_ref(cfg->metrics);
    copy->tracer = vk__callback_ref(cfg->tracer);
    if (!ok) {
        vk_config_free(copy);
        return vk__fail_nomem();
    }
    *out = copy;
    return VK_OK;
}

/* ---- topology ----------------------------------------------------------------------- */

VK_API vk_status vk_config_set_standalone(vk_config *cfg, const char *address)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = set_string(&cfg->standalone_address, address != NULL ? address : "");
    if (st == VK_OK)
        cfg->topology_mask |= VK_TOPO_STANDALONE;
    return st;
}

VK_API vk_status vk_config_set_sentinel(vk_config *cfg, const char *master_name)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = set_string(&cfg->sentinel_master, master_name);
    if (st == VK_OK)
        cfg->topology_mask |= VK_TOPO_SENTINEL;
    return st;
}

VK_API vk_status vk_config_add_sentinel_address(vk_config *cfg, const char *address)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = strlist_add(&cfg->sentinel_addresses, address);
    if (st == VK_OK)
        cfg->topology_mask |= VK_TOPO_SENTINEL;
    return st;
}

VK_API vk_status vk_config_set_sentinel_auth(vk_config *cfg, const char *username,
                                             const char *password)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = set_string(&cfg->sentinel_username,
                              username != NULL && username[0] != '\0' ? username : NULL);
    if (st == VK_OK)
        st = set_secret(&cfg->sentinel_password, password);
    return st;
}

VK_API vk_status vk_config_set_cluster(vk_config *cfg)
{
    REQUIRE_CONFIG(cfg);
    cfg->topology_mask |= VK_TOPO_CLUSTER;
    return VK_OK;
}

VK_API vk_status vk_config_add_cluster_address(vk_config *cfg, const char *address)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = strlist_add(&cfg->cluster_addresses, address);
    if (st == VK_OK)
        cfg->topology_mask |= VK_TOPO_CLUSTER;
    return st;
}

/* ---- TLS ------------------------------------------------------------------------------ */

/* Every trust source that is set is trusted. The one exception: the system
 * store that a rediss:// URL chose for want of a CA gives way to the first
 * CA set explicitly, so that such a URL plus a private CA trusts only it. */
static void explicit_ca_set(vk_config *cfg)
{
    if (cfg->tls_system_ca_by_default) {
        cfg->tls_system_ca = false;
        cfg->tls_system_ca_by_default = false;
    }
}

VK_API vk_status vk_config_set_tls(vk_config *cfg, const char *ca_cert_base64)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = set_string(&cfg->tls_ca_base64, ca_cert_base64);
    if (st != VK_OK)
        return st;
    cfg->tls_enabled = true;
    if (!is_blank(ca_cert_base64))
        explicit_ca_set(cfg);
    return VK_OK;
}

VK_API vk_status vk_config_set_tls_ca_file(vk_config *cfg, const char *path)
{
    REQUIRE_CONFIG(cfg);
    bool given = path != NULL && path[0] != '\0';
    vk_status st = set_string(&cfg->tls_ca_file, given ? path : NULL);
    if (st != VK_OK)
        return st;
    cfg->tls_enabled = true;
    if (given)
        explicit_ca_set(cfg);
    return VK_OK;
}

VK_API vk_status vk_config_set_tls_use_system_ca(vk_config *cfg, int use)
{
    REQUIRE_CONFIG(cfg);
    cfg->tls_enabled = true;
    cfg->tls_system_ca = use != 0;
    cfg->tls_system_ca_by_default = false;
    return VK_OK;
}

VK_API vk_status vk_config_set_tls_min_version(vk_config *cfg, vk_tls_version version)
{
    REQUIRE_CONFIG(cfg);
    switch (version) {
    case VK_TLS_DEFAULT:
    case VK_TLS1_0:
    case VK_TLS1_1:
    case VK_TLS1_2:
    case VK_TLS1_3:
        cfg->tls_min_version = version;
        return VK_OK;
    }
    return vk__fail(VK_ERR_INVALID_ARGUMENT, "unknown TLS version %d", (int)version);
}

VK_API vk_status vk_config_set_tls_allow_legacy_min_version(vk_config *cfg, int allow)
{
    REQUIRE_CONFIG(cfg);
    cfg->tls_allow_legacy = allow != 0;
    return VK_OK;
}

VK_API vk_status vk_config_set_tls_client_cert(vk_config *cfg, const char *cert_base64,
                                               const char *key_base64)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = set_string(&cfg->tls_cert_base64, cert_base64);
    if (st == VK_OK)
        st = set_secret(&cfg->tls_key_base64, key_base64);
    return st;
}

VK_API vk_status vk_config_set_tls_server_name(vk_config *cfg, const char *server_name)
{
    REQUIRE_CONFIG(cfg);
    return set_string(&cfg->tls_server_name,
                      server_name != NULL && server_name[0] != '\0' ? server_name : NULL);
}

/* ---- auth ------------------------------------------------------------------------------ */

VK_API vk_status vk_config_set_static_password(vk_config *cfg, const char *username,
                                               const char *password)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = set_string(&cfg->username,
                              username != NULL && username[0] != '\0' ? username : NULL);
    if (st == VK_OK)
        st = set_secret(&cfg->password, password != NULL ? password : "");
    if (st == VK_OK)
        cfg->auth_static = true;
    return st;
}

VK_API vk_status vk_config_set_gcp_iam(vk_config *cfg, const char *credentials_base64,
                                       const char *service_account)
{
    REQUIRE_CONFIG(cfg);
    vk_status st = set_secret(&cfg->iam_credentials_base64, credentials_base64);
    if (st == VK_OK)
        st = set_string(&cfg->iam_service_account, service_account != NULL ? service_account : "");
    if (st == VK_OK)
        cfg->auth_gcp_iam = true;
    return st;
}

VK_API vk_status vk_config_set_gcp_iam_token_lifetime_ms(vk_config *cfg, int64_t ms)
{
    REQUIRE_CONFIG(cfg);
    cfg->iam_token_lifetime_ms = ms;
    return VK_OK;
}

VK_API vk_status vk_config_set_gcp_iam_refresh_every_ms(vk_config *cfg, int64_t ms)
{
    REQUIRE_CONFIG(cfg);
    cfg->iam_refresh_every_ms = ms;
    return VK_OK;
}

VK_API vk_status vk_config_set_gcp_iam_refresh_check_interval_ms(vk_config *cfg, int64_t ms)
{
    REQUIRE_CONFIG(cfg);
    cfg->iam_refresh_check_interval_ms = ms;
    return VK_OK;
}

VK_API vk_status vk_config_set_gcp_iam_refresh_operation_timeout_ms(vk_config *cfg, int64_t ms)
{
    REQUIRE_CONFIG(cfg);
    cfg->iam_refresh_operation_timeout_ms = ms;
    return VK_OK;
}

VK_API vk_status vk_config_set_gcp_iam_endpoint(vk_config *cfg, const char *base_url)
{
    REQUIRE_CONFIG(cfg);
    return set_string(&cfg->iam_endpoint,
                      base_url != NULL && base_url[0] != '\0' ? base_url : NULL);
}

/* ---- connection options ----------------------------------------------------------------- */

#define INT_OPTION_SETTER(name, field, type)                 \
    VK_API vk_status vk_config_set_##name(vk_config *cfg, type value) \
    {                                                        \
        REQUIRE_CONFIG(cfg);                                 \
        cfg->field = value;                                  \
        return VK_OK;                                        \
    }

INT_OPTION_SETTER(db, db, int)
INT_OPTION_SETTER(protocol, protocol, int)
INT_OPTION_SETTER(pool_size, pool_size, int)
INT_OPTION_SETTER(min_idle_conns, min_idle_conns, int)
INT_OPTION_SETTER(read_timeout_ms, read_timeout_ms, int64_t)
INT_OPTION_SETTER(write_timeout_ms, write_timeout_ms, int64_t)
INT_OPTION_SETTER(dial_timeout_ms, dial_timeout_ms, int64_t)
INT_OPTION_SETTER(pool_timeout_ms, pool_timeout_ms, int64_t)
INT_OPTION_SETTER(max_retries, max_retries, int)
INT_OPTION_SETTER(min_retry_backoff_ms, min_retry_backoff_ms, int64_t)
INT_OPTION_SETTER(max_retry_backoff_ms, max_retry_backoff_ms, int64_t)

/* ---- sinks -------------------------------------------------------------------------------- */

static vk_status set_callback(vk_callback **slot, void (*fn)(void), void *userdata,
                              vk_free_fn free_userdata)
{
    vk_callback *cb = NULL;
    if (fn != NULL && (cb = vk__callback_new(fn, userdata, free_userdata)) == NULL) {
        if (free_userdata != NULL)
            free_userdata(userdata);
        return vk__fail_nomem();
    }
    vk__callback_unref(*slot);
    *slot = cb;
    return VK_OK;
}

VK_API vk_status vk_config_set_logger(vk_config *cfg, vk_log_fn fn, void *userdata,
                                      vk_free_fn free_userdata)
{
    if (cfg == NULL) {
        /* The caller handed over userdata: keep the promise to release it. */
        if (free_userdata != NULL)
            free_userdata(userdata);
        return nil_config(__func__);
    }
    return set_callback(&cfg->logger, (void (*)(void))fn, userdata, free_userdata);
}

VK_API vk_status vk_config_set_metrics(vk_config *cfg, vk_metric_fn fn, void *userdata,
                                       vk_free_fn free_userdata)
{
    if (cfg == NULL) {
        if (free_userdata != NULL)
            free_userdata(userdata);
        return nil_config(__func__);
    }
    return set_callback(&cfg->metrics, (void (*)(void))fn, userdata, free_userdata);
}

VK_API vk_status vk_config_set_tracer(vk_config *cfg, vk_span_start_fn start,
                                      vk_span_end_fn end, void *userdata,
                                      vk_free_fn free_userdata)
{
    if (cfg == NULL || (start != NULL && end == NULL)) {
        if (free_userdata != NULL)
            free_userdata(userdata);
        if (cfg == NULL)
            return nil_config(__func__);
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a tracer needs an end function");
    }
    vk_status st = set_callback(&cfg->tracer, (void (*)(void))start, userdata, free_userdata);
    if (st == VK_OK && cfg->tracer != NULL)
        cfg->tracer->fn2 = (void (*)(void))end;
    return st;
}

VK_API vk_status vk_config_set_trace_commands(vk_config *cfg, int enabled)
{
    REQUIRE_CONFIG(cfg);
    cfg->trace_commands = enabled != 0;
    return VK_OK;
}

VK_API vk_status vk_config_set_pool_gauges(vk_config *cfg, int report)
{
    REQUIRE_CONFIG(cfg);
    cfg->no_pool_gauges = report == 0;
    return VK_OK;
}

VK_API vk_status vk_config_set_event_delivery(vk_config *cfg, vk_event_delivery delivery)
{
    REQUIRE_CONFIG(cfg);
    if (delivery != VK_EVENTS_ANY_THREAD && delivery != VK_EVENTS_QUEUED)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "unknown event delivery %d", (int)delivery);
    cfg->event_delivery = delivery;
    return VK_OK;
}

VK_API vk_status vk_config_set_refresh_mode(vk_config *cfg, vk_refresh_mode mode)
{
    REQUIRE_CONFIG(cfg);
    if (mode != VK_REFRESH_THREAD && mode != VK_REFRESH_DRIVEN)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "unknown refresh mode %d", (int)mode);
    cfg->refresh_mode = mode;
    return VK_OK;
}

/* ---- normalisation ------------------------------------------------------------------------ */

static void default_int(int *value, int fallback)
{
    if (*value == 0)
        *value = fallback;
}

static void default_ms(int64_t *value, int64_t fallback)
{
    if (*value == 0)
        *value = fallback;
}

static void normalise_tls(vk_config *cfg, vk_events *ev)
{
    if (!cfg->tls_enabled)
        return;
    if (cfg->tls_min_version == VK_TLS_DEFAULT) {
        cfg->tls_min_version = VK_TLS1_2;
        vk__log(ev, VK_LOG_INFO, "TLS min version not set; using TLS 1.2", NULL, 0);
    } else if (cfg->tls_min_version < VK_TLS1_2) {
        const vk_field fields[] = {
            {"requested", cfg->tls_min_version == VK_TLS1_0 ? "TLS 1.0" : "TLS 1.1"}};
        if (cfg->tls_allow_legacy) {
            vk__log(ev, VK_LOG_WARN,
                    "TLS min version below 1.2 kept because legacy versions are allowed; "
                    "this is insecure",
                    fields, 1);
        } else {
            cfg->tls_min_version = VK_TLS1_2;
            vk__log(ev, VK_LOG_WARN, "TLS min version below 1.2 raised to TLS 1.2", fields, 1);
        }
    }
}

static void normalise(vk_config *cfg, vk_events *ev)
{
    default_int(&cfg->pool_size, VK_DEFAULT_POOL_SIZE);
    if (cfg->pool_size > VK_MAX_POOL_SIZE)
        cfg->pool_size = VK_MAX_POOL_SIZE;
    default_ms(&cfg->read_timeout_ms, VK_DEFAULT_READ_TIMEOUT_MS);
    default_ms(&cfg->write_timeout_ms, VK_DEFAULT_WRITE_TIMEOUT_MS);
    default_ms(&cfg->dial_timeout_ms, VK_DEFAULT_DIAL_TIMEOUT_MS);
    default_ms(&cfg->pool_timeout_ms, VK_DEFAULT_POOL_TIMEOUT_MS);
    default_int(&cfg->max_retries, VK_DEFAULT_MAX_RETRIES);
    default_ms(&cfg->min_retry_backoff_ms, VK_DEFAULT_MIN_RETRY_BACKOFF_MS);
    default_ms(&cfg->max_retry_backoff_ms, VK_DEFAULT_MAX_RETRY_BACKOFF_MS);
    default_int(&cfg->protocol, VK_DEFAULT_PROTOCOL);
    normalise_tls(cfg, ev);
    default_ms(&cfg->iam_token_lifetime_ms, VK_DEFAULT_IAM_TOKEN_LIFETIME_MS);
    default_ms(&cfg->iam_refresh_every_ms, VK_DEFAULT_IAM_REFRESH_EVERY_MS);
    default_ms(&cfg->iam_refresh_check_interval_ms, VK_DEFAULT_IAM_CHECK_INTERVAL_MS);
    default_ms(&cfg->iam_refresh_operation_timeout_ms, VK_DEFAULT_IAM_OPERATION_TIMEOUT_MS);
    if (cfg->iam_endpoint == NULL)
        cfg->iam_endpoint = strdup(VK_DEFAULT_IAM_ENDPOINT); /* NULL: checked below */
}

/* ---- validation --------------------------------------------------------------------------- */

static vk_status invalid(const char *reason)
{
    return vk__fail(VK_ERR_INVALID_CONFIG, "%s", reason);
}

static vk_status check_address(const char *address)
{
    vk_endpoint ignored;
    return vk__parse_address(&ignored, address);
}

/* A list of node addresses: at least one, none blank, each parsing. */
static vk_status check_address_list(const vk_strlist *list, const char *required,
                                    const char *not_empty)
{
    if (list->count == 0)
        return invalid(required);
    for (size_t i = 0; i < list->count; i++)
        if (is_blank(list->items[i]))
            return invalid(not_empty);
    for (size_t i = 0; i < list->count; i++) {
        vk_status st = check_address(list->items[i]);
        if (st != VK_OK)
            return st;
    }
    return VK_OK;
}

static vk_status validate_topology(const vk_config *cfg)
{
    unsigned mask = cfg->topology_mask;
    if (mask != VK_TOPO_STANDALONE && mask != VK_TOPO_SENTINEL && mask != VK_TOPO_CLUSTER)
        return invalid("exactly one topology must be configured");
    if (mask == VK_TOPO_STANDALONE) {
        if (is_blank(cfg->standalone_address))
            return invalid("standalone address is required");
        return check_address(cfg->standalone_address);
    }
    if (mask == VK_TOPO_SENTINEL) {
        if (cfg->sentinel_addresses.count == 0)
            return invalid("sentinel addresses are required");
        if (is_blank(cfg->sentinel_master))
            return invalid("sentinel master name is required");
        return check_address_list(&cfg->sentinel_addresses, "sentinel addresses are required",
                                  "sentinel addresses cannot be empty");
    }
    return check_address_list(&cfg->cluster_addresses, "cluster addresses are required",
                              "cluster addresses cannot be empty");
}

static vk_status validate_protocol(const vk_config *cfg)
{
    if (cfg->protocol != 2 && cfg->protocol != 3)
        return vk__fail(VK_ERR_INVALID_CONFIG, "protocol must be 2 (RESP2) or 3 (RESP3), got %d",
                        cfg->protocol);
#if HIREDIS_MAJOR < 1
    if (cfg->protocol == 3)
        return vk__fail(VK_ERR_INVALID_CONFIG,
                        "protocol 3 (RESP3) requires hiredis >= 1.0; this build uses hiredis %s",
                        vk_hiredis_version());
#endif
    return VK_OK;
}

static vk_status validate_options(const vk_config *cfg)
{
    if (cfg->db < 0)
        return invalid("db cannot be negative");
    if (cfg->pool_size < 0)
        return invalid("pool size cannot be negative");
    if (cfg->min_idle_conns < 0)
        return invalid("min idle conns cannot be negative");
    if (cfg->read_timeout_ms < 0)
        return invalid("read timeout cannot be negative");
    if (cfg->write_timeout_ms < 0)
        return invalid("write timeout cannot be negative");
    if (cfg->dial_timeout_ms < 0)
        return invalid("dial timeout cannot be negative");
    if (cfg->pool_timeout_ms < 0)
        return invalid("pool timeout cannot be negative");
    if (cfg->max_retries < -1)
        return invalid("max retries must be -1 (no retries) or at least 0");
    if (cfg->min_retry_backoff_ms < 0 || cfg->max_retry_backoff_ms < 0)
        return invalid("retry backoff cannot be negative");
    if (cfg->min_retry_backoff_ms > cfg->max_retry_backoff_ms)
        return invalid("min retry backoff cannot exceed max retry backoff");
    return validate_protocol(cfg);
}

/* Only that the file can be opened: parsing it is the TLS setup's job at
 * connect time, but a wrong path is a config mistake worth naming early. */
static vk_status check_ca_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int err = fd < 0 ? errno : fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (fd >= 0)
        close(fd);
    if (err == 0)
        return VK_OK;
    return vk__fail(VK_ERR_INVALID_CONFIG, "TLS CA file \"%s\" cannot be read: %s", path,
                    strerror(err));
}

static vk_status validate_tls(const vk_config *cfg)
{
    if (!cfg->tls_enabled)
        return VK_OK;
    if (is_blank(cfg->tls_ca_base64) && cfg->tls_ca_file == NULL && !cfg->tls_system_ca)
        return invalid("TLS CA cert is required when TLS is configured");
    if (cfg->tls_ca_file != NULL) {
        vk_status st = check_ca_file(cfg->tls_ca_file);
        if (st != VK_OK)
            return st;
    }
    if (is_blank(cfg->tls_cert_base64) != is_blank(cfg->tls_key_base64))
        return invalid("TLS client certificate and key must be set together");
    return VK_OK;
}

/* The endpoint as an error message may show it: a user:password@ part,
 * which has no business in an IAM endpoint, is replaced by REDACTED. */
static void endpoint_for_message(char *out, size_t size, const char *url)
{
    const char *scheme_end = strstr(url, "://");
    const char *host = scheme_end != NULL ? scheme_end + 3 : url;
    const char *at = strchr(host, '@');
    if (at == NULL || at >= host + strcspn(host, "/?#")) {
        snprintf(out, size, "%s", url);
        return;
    }
    snprintf(out, size, "%.*sREDACTED%s", (int)(host - url), url, at);
}

static vk_status validate_iam(const vk_config *cfg)
{
    if (!cfg->tls_enabled)
        return invalid("TLS must be configured when GCP IAM auth is enabled");
    if (is_blank(cfg->iam_service_account))
        return invalid("service account is required for GCP IAM auth");
    if (strchr(cfg->iam_service_account, '/') != NULL)
        return invalid("service account cannot contain '/' characters");
    /* NULL means "from the environment"; an explicit blank value is missing. */
    if (cfg->iam_credentials_base64 != NULL && is_blank(cfg->iam_credentials_base64))
        return invalid("credentials are required for GCP IAM auth");
    if (cfg->iam_token_lifetime_ms < 0 || cfg->iam_refresh_every_ms < 0 ||
        cfg->iam_refresh_check_interval_ms < 0 || cfg->iam_refresh_operation_timeout_ms < 0)
        return invalid("GCP IAM durations cannot be negative");
    if (cfg->iam_refresh_every_ms >= cfg->iam_token_lifetime_ms)
        return invalid("RefreshEvery must be less than TokenLifetime to prevent token expiry "
                       "before refresh");
    if (cfg->iam_endpoint == NULL)
        return vk__fail_nomem();
    /* The same rule as every HTTP call applies (gcp_iam.h). */
    if (!vk__http_url_allowed(cfg->iam_endpoint)) {
        char shown[512];
        endpoint_for_message(shown, sizeof shown, cfg->iam_endpoint);
        return vk__fail(VK_ERR_INVALID_CONFIG,
                        "GCP IAM endpoint must be an https:// URL (http:// only for loopback "
                        "hosts): \"%s\"",
                        shown);
    }
    return VK_OK;
}

static vk_status validate(const vk_config *cfg)
{
    vk_status st = validate_topology(cfg);
    if (st == VK_OK)
        st = validate_options(cfg);
    if (st == VK_OK && cfg->auth_static && cfg->auth_gcp_iam)
        st = invalid("only one auth strategy can be configured");
    if (st == VK_OK)
        st = validate_tls(cfg);
    if (st == VK_OK && cfg->auth_gcp_iam)
        st = validate_iam(cfg);
    return st;
}

vk_status vk__config_prepare(vk_config *cfg, vk_events *ev)
{
    if (cfg == NULL)
        return vk__fail(VK_ERR_INVALID_CONFIG, "config is NULL");
    normalise(cfg, ev);
    return validate(cfg);
}

VK_API vk_status vk_config_validate(const vk_config *cfg)
{
    REQUIRE_CONFIG(cfg);
    vk_config *copy = NULL;
    vk_status st = vk_config_clone(&copy, cfg);
    if (st != VK_OK)
        return st;
    /* Logs of the normalisation go nowhere: validating is not connecting. */
    st = vk__config_prepare(copy, NULL);
    vk_config_free(copy);
    return st;
}
