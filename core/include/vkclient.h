/*
 * vkclient: a Redis/Valkey client core with a stable C ABI.
 *
 * This is the only public header. Conventions (see README "C API"):
 *
 *  - Every fallible function returns a vk_status (0 = VK_OK). vk_strerror()
 *    gives the fixed text of a code; vk_last_error() gives the full message
 *    of the last failure on the calling thread, e.g.
 *    "invalid redis config: standalone address is required".
 *  - Handles are opaque. Constructors take the out pointer first:
 *    vk_x_new(&out, ...). Every _new has a _free; _free is NULL-safe.
 *    Every function is safe on NULL handles and then returns the matching
 *    error (VK_ERR_NIL_CLIENT for a client, VK_ERR_INVALID_ARGUMENT else).
 *  - Durations cross the ABI in milliseconds (int64_t).
 *  - Strings given to vkclient are copied; strings returned as `const char *`
 *    are borrowed from the handle they came from; strings returned through a
 *    `char **out` are owned by the caller and released with vk_free().
 *  - Callbacks take `void *userdata` as their first parameter, and come with
 *    an optional free hook run when vkclient drops the userdata.
 *  - Codes and symbols are append-only: a released number keeps its meaning.
 *  - Threads: what each handle allows is stated at its typedef below.
 */
#ifndef VKCLIENT_H
#define VKCLIENT_H

#include <stddef.h>
#include <stdint.h>

#define VK_VERSION_MAJOR 1
#define VK_VERSION_MINOR 1
#define VK_VERSION_PATCH 0
#define VK_VERSION_STRING "1.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH */
#define VK_VERSION_NUMBER 10100
/* The shared library's SONAME is libvkclient.so.<VK_ABI_VERSION>. */
#define VK_ABI_VERSION 1

#if defined(_WIN32) && defined(VK_SHARED)
#  ifdef VK_BUILDING
#    define VK_API __declspec(dllexport)
#  else
#    define VK_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && defined(VK_BUILDING)
#  define VK_API __attribute__((visibility("default")))
#else
#  define VK_API
#endif

#if defined(__GNUC__) && !defined(SWIG)
#  define VK_DEPRECATED __attribute__((deprecated))
#else
#  define VK_DEPRECATED
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

typedef enum vk_status {
    VK_OK = 0,
    VK_ERR_NIL_CLIENT = 1,                 /* redis client is nil */
    VK_ERR_INVALID_CONFIG = 2,             /* invalid redis config */
    VK_ERR_NIL_LOCK_HANDLE = 3,            /* lock handle is nil or not initialized */
    VK_ERR_LOCK_NOT_HELD = 4,              /* lock was not held or already expired */
    VK_ERR_NIL_LOCK_MANAGER = 5,           /* lock manager is nil */
    VK_ERR_LOCK_NOT_INITIALIZED = 6,       /* distributed lock is not initialized */
    VK_ERR_NIL_LOCK_FN = 7,                /* lock function is nil */
    VK_ERR_EMPTY_LOCK_KEY = 8,             /* lock key cannot be empty */
    VK_ERR_LOCK_EXPIRY_INVALID = 9,        /* lock expiry must be greater than 0 */
    VK_ERR_LOCK_TRIES_INVALID = 10,        /* lock tries must be at least 1 */
    VK_ERR_LOCK_TRIES_EXCEEDED = 11,       /* lock tries exceeds maximum */
    VK_ERR_LOCK_RETRY_DELAY_NEGATIVE = 12, /* lock retry delay cannot be negative */
    VK_ERR_LOCK_DRIFT_FACTOR_INVALID = 13, /* lock drift factor must be between ... */
    VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK = 14, /* lock handle is nil */
    VK_ERR_LOCK_ACQUIRE = 15,              /* failed to acquire lock */
    VK_ERR_LOCK_FN = 16,                   /* distributed lock: function execution */
    VK_ERR_IO = 17,                        /* connection error */
    VK_ERR_TIMEOUT = 18,                   /* i/o timeout */
    VK_ERR_POOL_TIMEOUT = 19,              /* connection pool timeout */
    VK_ERR_RECONNECT_RATE_LIMITED = 20,    /* redis reconnect: rate-limited */
    VK_ERR_AUTH = 21,                      /* authentication failed */
    VK_ERR_TLS = 22,                       /* TLS error */
    VK_ERR_IAM = 23,                       /* GCP IAM token request failed */
    VK_ERR_PROTOCOL = 24,                  /* protocol error */
    VK_ERR_NO_MEMORY = 25,                 /* out of memory */
    VK_ERR_INVALID_ARGUMENT = 26,          /* invalid argument */
    VK_ERR_CANCELLED = 27,                 /* operation cancelled */
    VK_ERR_SERVER = 28,                    /* server error reply */
    VK_ERR_LOCK_LOST = 29,                 /* lock was lost while held */
    VK_ERR_COMMAND_NOT_ALLOWED = 30,       /* command not allowed on a shared connection */
    VK_ERR_WATCH_CONFLICT = 31             /* transaction aborted: a watched key changed */
} vk_status;

/* The fixed text of a code (never NULL; unknown codes give "unknown error"). */
VK_API const char *vk_strerror(vk_status code);
/* The full message of the last failure on this thread ("" if none).
 * Valid until the next vkclient call on this thread. */
VK_API const char *vk_last_error(void);
/* The code of the last failure on this thread (VK_OK if none). */
VK_API vk_status vk_last_status(void);
/* Releases a string or buffer that vkclient returned through a char **out. */
VK_API void vk_free(void *ptr);

/* Run-time version: "1.1.0", and VK_VERSION_NUMBER of the loaded library. */
VK_API const char *vk_version(void);
VK_API int vk_version_number(void);
/* The version of the hiredis the library was built against, e.g. "0.14.1". */
VK_API const char *vk_hiredis_version(void);
/* 1 when this build can speak RESP3 (protocol 3), else 0. */
VK_API int vk_resp3_supported(void);

/* ------------------------------------------------------------------------ */
/* Callbacks: logger, metrics                                               */
/* ------------------------------------------------------------------------ */

typedef enum vk_log_level {
    VK_LOG_DEBUG = 0,
    VK_LOG_INFO = 1,
    VK_LOG_WARN = 2,
    VK_LOG_ERROR = 3
} vk_log_level;

typedef enum vk_metric_kind {
    VK_METRIC_COUNTER = 0,
    VK_METRIC_GAUGE = 1,
    VK_METRIC_HISTOGRAM = 2
} vk_metric_kind;

/* A key/value pair lent to a callback for the duration of the call. */
typedef struct vk_field {
    const char *key;
    const char *value;
} vk_field;

/* A logger. It must not call back into the client that called it, and must
 * be thread-safe unless the client delivers events on the caller's thread
 * (vk_config_set_event_delivery). */
typedef void (*vk_log_fn)(void *userdata, vk_log_level level, const char *message,
                          const vk_field *fields, size_t nfields);
/* A metrics sink: counters carry increments, gauges the current value,
 * histograms one observation (seconds for durations). */
typedef void (*vk_metric_fn)(void *userdata, const char *name, vk_metric_kind kind,
                             double value, const vk_field *labels, size_t nlabels);
/* Releases a callback's userdata once vkclient no longer needs it. */
typedef void (*vk_free_fn)(void *userdata);

/*
 * Tracing. A tracer sees the client's work as spans, each started and
 * ended on the thread that does the work:
 *   "redis.connect"        the first connection (vk_client_new) and
 *                          vk_client_connect;
 *   "redis.reconnect"      a connection made again after one was lost;
 *   "redis.close"          vk_client_close (and so vk_client_free);
 *   "redis.iam_refresh"    one GCP IAM token fetch;
 *   "redis.lock.try_lock"  one attempt at a lock (vk_lock_manager_try_lock,
 *                          vk_async_lock_try);
 *   "redis.lock.with_lock" acquire, run fn, release
 *                          (vk_lock_manager_with_lock[_options]);
 *   "redis.command"        with vk_config_set_trace_commands only: one
 *                          command or pipeline, from its call to its reply.
 *
 * start returns the host's handle for the span (NULL is allowed: it is
 * handed back to end as it is). parent is the handle of the span this one
 * runs in: the client's own enclosing span on this thread (a connect
 * inside a with_lock), else the handle the caller put on the call's
 * context (vk_context_set_trace_parent), else NULL. The attributes are
 * lent for the call; they never hold a secret (no password, token or
 * argument of a command): "db.system" ("redis"), "redis.mode",
 * "server.address", "redis.lock.key", "db.operation" (a command's name) at
 * the start; "redis.lock.attempts" and "redis.lock.outcome" at the end.
 * end gets VK_OK, or the failure's code and its text (as vk_last_error()
 * gives it). Times are the wall clock in nanoseconds since the Unix epoch.
 *
 * Event delivery (vk_config_set_event_delivery) applies: in
 * VK_EVENTS_QUEUED mode a span of a background thread (the IAM refresh)
 * is delivered, start then end, by the poll, with the times it ran and no
 * parent. A tracer must not call back into the client that called it.
 */
typedef void *(*vk_span_start_fn)(void *userdata, const char *name, void *parent,
                                  int64_t start_unix_ns, const vk_field *attributes,
                                  size_t nattributes);
typedef void (*vk_span_end_fn)(void *userdata, void *span, int64_t end_unix_ns,
                               vk_status status, const char *error,
                               const vk_field *attributes, size_t nattributes);

/* The process-wide logger used for diagnostics of misuse (NULL handles).
 * fn == NULL restores the no-op logger. The previous userdata is freed.
 * VK_ERR_NO_MEMORY when the logger cannot be stored: the previous one stays
 * in place and free_userdata(userdata) has been called. (Returned void
 * before 1.1; callers that ignore the result are unaffected.) */
VK_API vk_status vk_set_package_logger(vk_log_fn fn, void *userdata, vk_free_fn free_userdata);

/* Printable name of a level ("debug", "info", "warn", "error"). */
VK_API const char *vk_log_level_name(vk_log_level level);
/* Printable name of a metric kind ("counter", "gauge", "histogram"). */
VK_API const char *vk_metric_kind_name(vk_metric_kind kind);

/* ------------------------------------------------------------------------ */
/* Context: deadlines and cancellation for blocking calls                   */
/* ------------------------------------------------------------------------ */

/* A context bounds a blocking call (command, connect, lock acquire) by a
 * deadline and lets another thread cancel it. NULL means "no deadline
 * beyond the configured timeouts, not cancellable". A context may be shared
 * by several calls; once cancelled it stays cancelled.
 * Threads: vk_context_cancel() and vk_context_is_cancelled() may be called
 * from any thread at any time. Set the timeout and the interrupt check
 * before the context is handed to a call; free it once no call uses it. */
typedef struct vk_context vk_context;

/* Polled at least every 50 ms while a call waits; returning non-zero
 * cancels the call with VK_ERR_CANCELLED (used for Python's Ctrl-C). */
typedef int (*vk_interrupt_fn)(void *userdata);

VK_API vk_status vk_context_new(vk_context **out);
VK_API void vk_context_free(vk_context *ctx);
/* Sets the deadline to now + timeout_ms; a negative value removes it. */
VK_API vk_status vk_context_set_timeout_ms(vk_context *ctx, int64_t timeout_ms);
/* Cancels every call waiting on ctx, now and later. Thread-safe and
 * async-signal-safe. A call cancelled in the middle of a request loses its
 * connection (the reply can no longer be read): it is closed, not reused. */
VK_API vk_status vk_context_cancel(vk_context *ctx);
VK_API int vk_context_is_cancelled(const vk_context *ctx);
/* The span (a tracer's handle, see vk_span_start_fn) that the spans of
 * calls made with this context are children of; NULL: none. */
VK_API vk_status vk_context_set_trace_parent(vk_context *ctx, void *parent);

VK_API vk_status vk_context_set_interrupt_check(vk_context *ctx, vk_interrupt_fn fn,
                                                void *userdata);

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

/* Threads: a config is not safe to use while a thread modifies it (the
 * setters). Once no thread modifies it, any number of threads may read it
 * at once: vk_client_new, vk_config_clone, vk_config_validate,
 * vk_config_describe. A client keeps its own copy. */
typedef struct vk_config vk_config;

typedef enum vk_tls_version {
    VK_TLS_DEFAULT = 0, /* TLS 1.2 */
    VK_TLS1_0 = 10,
    VK_TLS1_1 = 11,
    VK_TLS1_2 = 12,
    VK_TLS1_3 = 13
} vk_tls_version;

typedef enum vk_event_delivery {
    /* Sinks are called on whichever thread produced the event (default). */
    VK_EVENTS_ANY_THREAD = 0,
    /* Events from background threads are queued and delivered by
     * vk_client_poll_events() on the caller's thread. */
    VK_EVENTS_QUEUED = 1
} vk_event_delivery;

typedef enum vk_refresh_mode {
    /* The IAM refresh loop runs on a background thread (default). */
    VK_REFRESH_THREAD = 0,
    /* No background thread: the host calls vk_client_tick() regularly. */
    VK_REFRESH_DRIVEN = 1
} vk_refresh_mode;

VK_API vk_status vk_config_new(vk_config **out);
VK_API void vk_config_free(vk_config *cfg);
VK_API vk_status vk_config_clone(vk_config **out, const vk_config *cfg);
/* redis://[[user]:password@]host[:port][/db], rediss://... (TLS),
 * unix://[[user]:password@]/path.sock[?db=N]. IPv6 hosts in brackets.
 * A rediss:// URL enables TLS and trusts the system store (as redis-py
 * does); a CA set afterwards with vk_config_set_tls() or
 * vk_config_set_tls_ca_file() replaces that default (call
 * vk_config_set_tls_use_system_ca(cfg, 1) to trust both). */
VK_API vk_status vk_config_from_url(vk_config **out, const char *url);

/* Topology: exactly one. "host:port", "[::1]:port" or "unix:/path.sock". */
VK_API vk_status vk_config_set_standalone(vk_config *cfg, const char *address);
/* Selects the sentinel topology; addresses are added one by one. */
VK_API vk_status vk_config_set_sentinel(vk_config *cfg, const char *master_name);
VK_API vk_status vk_config_add_sentinel_address(vk_config *cfg, const char *address);
/* Auth for the sentinels themselves (NULL password: none). */
VK_API vk_status vk_config_set_sentinel_auth(vk_config *cfg, const char *username,
                                             const char *password);
/* Selects the cluster topology; seed addresses are added one by one. */
VK_API vk_status vk_config_set_cluster(vk_config *cfg);
VK_API vk_status vk_config_add_cluster_address(vk_config *cfg, const char *address);

/* TLS trust: at least one source is required, and every source set is
 * trusted (a CA given both ways, plus the system store when asked for).
 * Each of the three setters enables TLS. The handshake never negotiates
 * below TLS 1.2, whatever the min version (see vk_config_set_tls_min_version).
 *
 * The CA bundle as base64 of PEM ("" or NULL: none). */
VK_API vk_status vk_config_set_tls(vk_config *cfg, const char *ca_cert_base64);
/* New in 1.1: the CA bundle from a PEM file ("" or NULL: none). A path that
 * cannot be opened fails validation with the path in the message; the file
 * is parsed when the client connects. */
VK_API vk_status vk_config_set_tls_ca_file(vk_config *cfg, const char *path);
/* New in 1.1: trust the system store (use != 0), i.e. OpenSSL's default
 * verify paths, which honour SSL_CERT_FILE / SSL_CERT_DIR as read when the
 * client is created. use == 0 turns off a store chosen by rediss://. */
VK_API vk_status vk_config_set_tls_use_system_ca(vk_config *cfg, int use);
/* Below TLS 1.2 is raised to 1.2 (logged) unless legacy versions are
 * allowed: then the lower version is kept in the config and logged as
 * insecure, but the handshake still requires TLS 1.2 or later. */
VK_API vk_status vk_config_set_tls_min_version(vk_config *cfg, vk_tls_version version);
VK_API vk_status vk_config_set_tls_allow_legacy_min_version(vk_config *cfg, int allow);
/* Mutual TLS: client certificate chain and private key, base64 of PEM. */
VK_API vk_status vk_config_set_tls_client_cert(vk_config *cfg, const char *cert_base64,
                                               const char *key_base64);
/* The name to verify the server certificate against (default: the host). */
VK_API vk_status vk_config_set_tls_server_name(vk_config *cfg, const char *server_name);

/* Auth: at most one strategy. username NULL or "" means the default user. */
VK_API vk_status vk_config_set_static_password(vk_config *cfg, const char *username,
                                               const char *password);
/* GCP IAM: base64 of a service-account key JSON (NULL: take credentials
 * from the environment, see README) and the service account to act as. */
VK_API vk_status vk_config_set_gcp_iam(vk_config *cfg, const char *credentials_base64,
                                       const char *service_account);
VK_API vk_status vk_config_set_gcp_iam_token_lifetime_ms(vk_config *cfg, int64_t ms);
VK_API vk_status vk_config_set_gcp_iam_refresh_every_ms(vk_config *cfg, int64_t ms);
VK_API vk_status vk_config_set_gcp_iam_refresh_check_interval_ms(vk_config *cfg, int64_t ms);
VK_API vk_status vk_config_set_gcp_iam_refresh_operation_timeout_ms(vk_config *cfg, int64_t ms);
/* Base URL of the IAM Credentials API
 * (default https://iamcredentials.googleapis.com). */
VK_API vk_status vk_config_set_gcp_iam_endpoint(vk_config *cfg, const char *base_url);

/* Connection options; 0 means "the default" (SEMANTICS §1). */
VK_API vk_status vk_config_set_db(vk_config *cfg, int db);
VK_API vk_status vk_config_set_protocol(vk_config *cfg, int protocol);
VK_API vk_status vk_config_set_pool_size(vk_config *cfg, int pool_size);
VK_API vk_status vk_config_set_min_idle_conns(vk_config *cfg, int min_idle_conns);
VK_API vk_status vk_config_set_read_timeout_ms(vk_config *cfg, int64_t ms);
VK_API vk_status vk_config_set_write_timeout_ms(vk_config *cfg, int64_t ms);
VK_API vk_status vk_config_set_dial_timeout_ms(vk_config *cfg, int64_t ms);
VK_API vk_status vk_config_set_pool_timeout_ms(vk_config *cfg, int64_t ms);
/* -1 disables retries. */
VK_API vk_status vk_config_set_max_retries(vk_config *cfg, int max_retries);
VK_API vk_status vk_config_set_min_retry_backoff_ms(vk_config *cfg, int64_t ms);
VK_API vk_status vk_config_set_max_retry_backoff_ms(vk_config *cfg, int64_t ms);

/* Sinks. fn == NULL removes the sink (no-op). */
VK_API vk_status vk_config_set_logger(vk_config *cfg, vk_log_fn fn, void *userdata,
                                      vk_free_fn free_userdata);
VK_API vk_status vk_config_set_metrics(vk_config *cfg, vk_metric_fn fn, void *userdata,
                                       vk_free_fn free_userdata);
VK_API vk_status vk_config_set_event_delivery(vk_config *cfg, vk_event_delivery delivery);
/* The tracer (see vk_span_start_fn); start == NULL removes it, and end
 * may not be NULL otherwise. */
VK_API vk_status vk_config_set_tracer(vk_config *cfg, vk_span_start_fn start,
                                      vk_span_end_fn end, void *userdata,
                                      vk_free_fn free_userdata);
/* 1: a "redis.command" span per command and pipeline (default 0: each
 * costs two calls into the tracer). */
VK_API vk_status vk_config_set_trace_commands(vk_config *cfg, int enabled);
/* 0: the pools do not report redis_pool_connections and
 * redis_pool_waiters to the metrics sink at each change, as they do by
 * default (1): a change costs three calls into the sink, on every command.
 * A host that scrapes (Prometheus) calls vk_client_report_pool_gauges when
 * it scrapes instead. */
VK_API vk_status vk_config_set_pool_gauges(vk_config *cfg, int report);

VK_API vk_status vk_config_set_refresh_mode(vk_config *cfg, vk_refresh_mode mode);

/* Applies the defaults of SEMANTICS §1 and validates. On failure the code
 * is VK_ERR_INVALID_CONFIG and vk_last_error() is
 * "invalid redis config: <reason>". vk_client_new() does the same. */
VK_API vk_status vk_config_validate(const vk_config *cfg);
/* A one-line description with every secret redacted, e.g.
 * Config{Topology:Standalone{Address:127.0.0.1:6379}, TLS:<nil>,
 *        Auth:StaticPasswordAuth{Password:REDACTED}, Options:{...}}.
 * Release with vk_free(). */
VK_API vk_status vk_config_describe(char **out, const vk_config *cfg);

/* ------------------------------------------------------------------------ */
/* Replies                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum vk_reply_type {
    VK_REPLY_STRING = 1,  /* bulk string (binary) */
    VK_REPLY_ARRAY = 2,
    VK_REPLY_INTEGER = 3,
    VK_REPLY_NIL = 4,
    VK_REPLY_STATUS = 5,  /* simple string, e.g. OK */
    VK_REPLY_ERROR = 6,   /* an error reply: a reply, not a vk_status */
    VK_REPLY_DOUBLE = 7,  /* RESP3 */
    VK_REPLY_BOOL = 8,    /* RESP3 */
    VK_REPLY_MAP = 9,     /* RESP3: elements are key, value, key, value... */
    VK_REPLY_SET = 10,    /* RESP3 */
    VK_REPLY_ATTR = 11,   /* RESP3 */
    VK_REPLY_PUSH = 12,   /* RESP3 */
    VK_REPLY_BIGNUM = 13, /* RESP3: decimal digits as a string */
    VK_REPLY_VERB = 14,   /* RESP3: verbatim string */
    /* No reply at all: the type of NULL (e.g. an element out of range).
     * 0 since 1.0; named in 1.1. */
    VK_REPLY_NONE = 0
} vk_reply_type;

/* Threads: a reply tree is immutable. Any number of threads may read it
 * at once; one of them frees it once the others are done. */
typedef struct vk_reply vk_reply;

/* Frees a reply tree. Only top-level replies are freed; elements are
 * borrowed from their parent. NULL-safe. */
VK_API void vk_reply_free(vk_reply *reply);
/* VK_REPLY_NONE for NULL. */
VK_API vk_reply_type vk_reply_get_type(const vk_reply *reply);
/* Bytes of a string, status, error, bignum, verbatim or double reply;
 * NULL (and *len = 0) for other types. Not NUL-safe: use len. */
VK_API const char *vk_reply_get_string(const vk_reply *reply, size_t *len);
/* Integer value (bool: 0/1); 0 for other types. */
VK_API long long vk_reply_get_integer(const vk_reply *reply);
/* Double value (integers converted); 0 for other types. */
VK_API double vk_reply_get_double(const vk_reply *reply);
/* Number of elements of an aggregate (a map counts keys and values). */
VK_API size_t vk_reply_get_length(const vk_reply *reply);
/* Element i of an aggregate, borrowed; NULL when out of range. */
VK_API const vk_reply *vk_reply_get_element(const vk_reply *reply, size_t index);

/* ------------------------------------------------------------------------ */
/* Client                                                                   */
/* ------------------------------------------------------------------------ */

/* Threads: a client is safe to share. Every function may be called on
 * one client from any number of threads at once (each command gets its own
 * pooled connection), except vk_client_free(), which must be the last call
 * on it. After fork() the child's first call rebuilds the client's state
 * once, whichever of its threads gets there first. */
typedef struct vk_client vk_client;

/* New: copies cfg, normalises, validates, connects and pings. On failure
 * nothing is left running and *out is NULL. */
VK_API vk_status vk_client_new(vk_client **out, const vk_config *cfg);
/* Closes and releases the client. Objects created from it (lock managers,
 * pipelines) stay valid and then fail with VK_ERR_NIL_CLIENT. NULL-safe. */
VK_API void vk_client_free(vk_client *client);

/* (Re)connects with create-ping-swap: the new connection set is built and
 * pinged before the old one is closed; a failed connect leaves the old one
 * in service. */
VK_API vk_status vk_client_connect(vk_client *client, vk_context *ctx);
/* Stops the refresh loop, closes every connection, marks the client not
 * connected. Idempotent. A later command reconnects on demand. */
VK_API vk_status vk_client_close(vk_client *client);
VK_API int vk_client_is_connected(const vk_client *client);
/* The last IAM refresh / reconnect error, or *out = NULL if none. */
VK_API vk_status vk_client_last_refresh_error(char **out, const vk_client *client);

/*
 * Runs one command given as argv with lengths (binary safe) and returns its
 * reply. An error reply from the server is a reply of type VK_REPLY_ERROR
 * and the call returns VK_OK.
 *
 * A command that would change the state of the pooled connection for its
 * next caller (SELECT, MULTI, SUBSCRIBE, CLIENT REPLY, ...; the list is in
 * the README) is refused with VK_ERR_COMMAND_NOT_ALLOWED before anything is
 * sent; vk_last_error() names the command and what to use instead.
 *
 * Reconnects on demand when the client is not connected, under the rate
 * limit of SEMANTICS §2 (VK_ERR_RECONNECT_RATE_LIMITED inside the window).
 *
 * Retry policy: a failed command is retried up to max_retries times, with
 * exponential back-off between min and max retry back-off (full jitter),
 * only when it cannot have run on the server:
 *   - the failure happened before the whole request was written
 *     (dial, handshake, pool wait, write error), or
 *   - the server answered -LOADING, -TRYAGAIN, -CLUSTERDOWN or -MASTERDOWN
 *     (it refused the command), or
 *   - the command is read-only (GET, PING, EXISTS, ...; see README), so
 *     running it twice is harmless.
 * A write whose reply was lost (read timeout, connection dropped after the
 * request was sent) is not retried: the error is returned.
 * In cluster mode the refusals (-TRYAGAIN, -CLUSTERDOWN, -LOADING,
 * -MASTERDOWN) are retried for up to 5 s or until the context's deadline,
 * whatever max_retries says, so that a slot migration or a failover is
 * ridden out; max_retries -1 still disables them.
 */
VK_API vk_status vk_client_command(vk_reply **out, vk_client *client, vk_context *ctx,
                                   int argc, const char *const *argv,
                                   const size_t *argvlen);

/* 1 when the command waits on the server for up to a timeout of its own
 * (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD/XREADGROUP with BLOCK, WAIT, ...),
 * else 0. vk_client_command() stretches the read timeout of such a command
 * by its timeout (no limit for 0); a binding can give it a cancellable
 * context so that the caller can interrupt the wait. */
VK_API int vk_command_is_blocking(int argc, const char *const *argv, const size_t *argvlen);

/* Snapshot of the client's state: not a probe. Threads: immutable, like a
 * reply: readable from any number of threads at once, freed by one. */
typedef struct vk_snapshot vk_snapshot;
VK_API vk_status vk_client_snapshot(vk_snapshot **out, const vk_client *client);
VK_API void vk_snapshot_free(vk_snapshot *snapshot);
VK_API int vk_snapshot_connected(const vk_snapshot *snapshot);
/* NULL when there is no refresh error. Borrowed from the snapshot. */
VK_API const char *vk_snapshot_last_refresh_error(const vk_snapshot *snapshot);
/* Unix time in ms of the last successful token refresh; 0 if never. */
VK_API int64_t vk_snapshot_last_refresh_at_ms(const vk_snapshot *snapshot);
VK_API int vk_snapshot_refresh_loop_running(const vk_snapshot *snapshot);
/* The topology: "standalone", "sentinel" or "cluster" (a static string). */
VK_API const char *vk_snapshot_mode(const vk_snapshot *snapshot);
/* Standalone and sentinel: the node the client's connections go to, as
 * "host:port", "[v6]:port" or "unix:/path"; in sentinel mode the master it
 * follows now. NULL in cluster mode and before the first connect. Borrowed
 * from the snapshot. */
VK_API const char *vk_snapshot_master_address(const vk_snapshot *snapshot);
/* Sentinel: how many times the client switched to a new master. */
VK_API uint64_t vk_snapshot_master_switches(const vk_snapshot *snapshot);
/* Cluster: slot maps loaded, and MOVED and ASK redirects followed. */
VK_API uint64_t vk_snapshot_slot_map_refreshes(const vk_snapshot *snapshot);
VK_API uint64_t vk_snapshot_moved_redirects(const vk_snapshot *snapshot);
VK_API uint64_t vk_snapshot_ask_redirects(const vk_snapshot *snapshot);
/* Cluster: the masters of the slot map in service (0 in the other modes),
 * each with its address (borrowed; NULL when i is out of range) and the
 * number of slots it serves. */
VK_API size_t vk_snapshot_node_count(const vk_snapshot *snapshot);
VK_API const char *vk_snapshot_node_address(const vk_snapshot *snapshot, size_t i);
VK_API int vk_snapshot_node_slots(const vk_snapshot *snapshot, size_t i);

/* Reports the pools' gauges (redis_pool_connections by state and
 * redis_pool_waiters, per node in Cluster mode) to the metrics sink now,
 * on this thread, as the pools do at each change unless
 * vk_config_set_pool_gauges turned that off; 0 while the client has no
 * pool (closed). */
VK_API vk_status vk_client_report_pool_gauges(vk_client *client);
/* Delivers queued events (VK_EVENTS_QUEUED) to the sinks on this thread,
 * at most max (0 = all); returns how many were delivered, or -1 for NULL. */
VK_API int vk_client_poll_events(vk_client *client, int max);
/* Waits until an event is queued, the timeout passes or ctx is cancelled.
 * Returns VK_OK when events are pending, VK_ERR_TIMEOUT otherwise. */
VK_API vk_status vk_client_wait_events(vk_client *client, vk_context *ctx,
                                       int64_t timeout_ms);
/* Driven mode (VK_REFRESH_DRIVEN): runs the due work of the refresh loop
 * (a token refresh when one is due). Cheap when nothing is due. */
VK_API vk_status vk_client_tick(vk_client *client, vk_context *ctx);

/* ------------------------------------------------------------------------ */
/* Pipelines: many commands, one round trip per node                        */
/* ------------------------------------------------------------------------ */

/* Threads: a pipeline is used by one thread at a time (append, exec,
 * length, free). Different pipelines of one client may run at once. */
typedef struct vk_pipeline vk_pipeline;

VK_API vk_status vk_pipeline_new(vk_pipeline **out, vk_client *client);
VK_API void vk_pipeline_free(vk_pipeline *pipeline);
/* Queues one command. A command vk_client_command() refuses is refused
 * here too (VK_ERR_COMMAND_NOT_ALLOWED), and so is the exec that follows:
 * nothing of such a pipeline is sent. The exception is a transaction kept
 * on one connection: in standalone and sentinel mode, MULTI ... EXEC (or
 * DISCARD) inside one pipeline is allowed, not nested and without WATCH;
 * the reply shows OK, QUEUED for each command, then EXEC's array. In
 * cluster mode, where a pipeline is split by node, MULTI is refused. */
VK_API vk_status vk_pipeline_append(vk_pipeline *pipeline, int argc,
                                    const char *const *argv, const size_t *argvlen);
/* Number of commands appended since the last exec. */
VK_API size_t vk_pipeline_length(const vk_pipeline *pipeline);
/* Sends every appended command and returns an array reply with one element
 * per command, in order; an error reply in the middle is an element of type
 * VK_REPLY_ERROR and loses none of the others. The pipeline is emptied for
 * reuse. A pipeline is never retried once any of it was written. A
 * pipeline whose MULTI has no EXEC or DISCARD yet is refused with
 * VK_ERR_COMMAND_NOT_ALLOWED, and emptied, before anything is sent. */
VK_API vk_status vk_pipeline_exec(vk_reply **out, vk_pipeline *pipeline, vk_context *ctx);

/* Transaction mode (on != 0), set while the pipeline is empty
 * (VK_ERR_INVALID_ARGUMENT otherwise); it stays for later execs. exec then
 * sends MULTI, the commands and EXEC in one write on one connection and
 * returns EXEC's array: one result per command. MULTI, EXEC and DISCARD
 * cannot be appended (VK_ERR_COMMAND_NOT_ALLOWED). In cluster mode every
 * key must hash to one slot (VK_ERR_INVALID_ARGUMENT "CROSSSLOT ...",
 * nothing sent) and the transaction goes to that slot's master. A
 * transaction whose EXEC the server answers with nil (a key WATCHed on a
 * session changed) fails with VK_ERR_WATCH_CONFLICT; one that EXEC
 * discarded (a command refused when queued) with VK_ERR_SERVER naming that
 * command. The event-loop clients run them in standalone and Sentinel mode
 * (the transaction goes out whole on their shared connection, which sends
 * nothing else until EXEC answered) and refuse them in Cluster mode
 * (VK_ERR_COMMAND_NOT_ALLOWED). */
VK_API vk_status vk_pipeline_set_transaction(vk_pipeline *pipeline, int on);
VK_API int vk_pipeline_is_transaction(const vk_pipeline *pipeline);

/* ------------------------------------------------------------------------ */
/* Sessions: one connection pinned for WATCH, MULTI, EXEC, SELECT, ...      */
/* ------------------------------------------------------------------------ */

/* Threads: a session is used by one thread at a time. */
typedef struct vk_session vk_session;

/* Takes one pooled connection for the caller alone until vk_session_close.
 * key (keylen bytes; NULL: none) picks the node in cluster mode: the
 * master of the key's hash slot; a cluster session without a key is
 * refused (VK_ERR_INVALID_ARGUMENT). Standalone: the node; sentinel: the
 * master. */
VK_API vk_status vk_session_open(vk_session **out, vk_client *client, vk_context *ctx,
                                 const char *key, size_t keylen);
/* Runs one command on the session's connection. Every command is allowed
 * (WATCH, MULTI, EXEC, DISCARD, SELECT, CLIENT ...) except those whose
 * replies do not pair with requests (SUBSCRIBE and kin, MONITOR, SYNC,
 * PSYNC, REPLCONF, CLIENT REPLY: VK_ERR_COMMAND_NOT_ALLOWED). In cluster
 * mode a command whose keys hash to another slot than the session's is
 * refused before sending (VK_ERR_INVALID_ARGUMENT); replies are not
 * redirected. Nothing is retried: a failure of the connection (I/O error,
 * timeout, ctx cancelled mid-command) fails the session, and later calls
 * fail with VK_ERR_IO. An EXEC answered with nil (a WATCHed key changed)
 * fails with VK_ERR_WATCH_CONFLICT; error replies are replies. */
VK_API vk_status vk_session_command(vk_reply **out, vk_session *session, vk_context *ctx,
                                    int argc, const char *const *argv,
                                    const size_t *argvlen);
/* Runs a pipeline of the same client on the session's connection, as
 * vk_pipeline_exec would (a transaction pipeline: MULTI ... EXEC, with the
 * session's WATCH in force, VK_ERR_WATCH_CONFLICT when it aborted). A
 * transaction pipeline is refused while the session is inside MULTI. */
VK_API vk_status vk_session_pipeline_exec(vk_reply **out, vk_session *session,
                                          vk_pipeline *pipeline, vk_context *ctx);
/* Gives the connection back to the pool after undoing what the session
 * changed (DISCARD inside MULTI, UNWATCH, SELECT of the configured db),
 * or closes it when it failed or was left in a state that cannot be
 * undone for sure (CLIENT SETNAME, HELLO, AUTH, ...). Frees the session.
 * NULL-safe. */
VK_API void vk_session_close(vk_session *session);

/* ------------------------------------------------------------------------ */
/* Scripts: EVALSHA, and EVAL when the server does not have the script      */
/* ------------------------------------------------------------------------ */

/* A Lua script and its SHA-1, computed once. Threads: immutable: one
 * script may be run by any number of threads and clients at once (blocking,
 * event-loop and hosted alike), and freed by one of them; operations still
 * in flight keep what they need. */
typedef struct vk_script vk_script;

/* Copies source (len bytes, binary safe) and computes its SHA-1. No I/O.
 * VK_ERR_INVALID_ARGUMENT for NULL out, or NULL source with len > 0;
 * VK_ERR_PROTOCOL when this OpenSSL cannot compute SHA-1. */
VK_API vk_status vk_script_new(vk_script **out, const char *source, size_t len);
/* NULL-safe. */
VK_API void vk_script_free(vk_script *script);
/* The SHA-1 as the server names the script: 40 lower-case hex digits,
 * NUL-terminated, borrowed from the script. NULL for NULL. */
VK_API const char *vk_script_sha1(const vk_script *script);
/* The source and its length, borrowed from the script. NULL for NULL. */
VK_API const char *vk_script_source(const vk_script *script, size_t *len);

/*
 * Runs the script: EVALSHA <sha1> nkeys keys... args...; when the server
 * answers NOSCRIPT (first use on that node, a restart, SCRIPT FLUSH, a
 * failover to a node without it), the same call again as EVAL <source>,
 * which also caches the script, so the next run is one EVALSHA. *out is
 * the final reply: the script's result, or its error reply (a script's
 * error, redis.error_reply, is a reply of type VK_REPLY_ERROR and the
 * call returns VK_OK, as with vk_client_command). Keys and args are binary
 * safe (lengths given; keys/args may be NULL when their count is 0).
 *
 * Routing and retries are vk_client_command's for EVALSHA and EVAL: in
 * Cluster mode the keys pick the node (keys of more than one slot:
 * VK_ERR_INVALID_ARGUMENT "CROSSSLOT ...", nothing sent; no keys: any
 * master), and both are writes: a request whose reply was lost is never
 * sent again. Scripts that only read may still be run here; EVALSHA_RO is
 * available through vk_client_command.
 */
VK_API vk_status vk_script_run(vk_reply **out, vk_client *client, vk_context *ctx,
                               const vk_script *script, int nkeys,
                               const char *const *keys, const size_t *keylens, int nargs,
                               const char *const *args, const size_t *arglens);

/* ------------------------------------------------------------------------ */
/* Scans: SCAN, HSCAN, SSCAN and ZSCAN one page at a time                   */
/* ------------------------------------------------------------------------ */

/* Threads: a scan is used by one thread at a time. It keeps what it needs
 * of its client: it stays valid after vk_client_free() and then fails
 * with VK_ERR_NIL_CLIENT. */
typedef struct vk_scan vk_scan;

/* A SCAN of the key space. match (matchlen bytes; NULL: no MATCH), count
 * (0: the server's default; negative: VK_ERR_INVALID_ARGUMENT) and type
 * (NULL: no TYPE; "" is refused) are sent with every page. No I/O.
 * In cluster mode the scan walks every master of the slot map, one after
 * the other. The masters and their slots are captured with the first
 * page; a page that finds the map changed since (a slot moved, a master
 * left or failed over) fails with VK_ERR_IO "redis cluster: scan: the slot
 * map changed during the walk (slot <n> moved from <a> to <b>); start the
 * walk again", and a master that stays unreachable after the retries
 * fails the page with its connection error: no master is skipped
 * silently. As with SCAN itself, a key present for the whole walk is
 * returned at least once, and may be returned more than once. */
VK_API vk_status vk_scan_new(vk_scan **out, vk_client *client, const char *match,
                             size_t matchlen, int64_t count, const char *type);
/* An HSCAN, SSCAN or ZSCAN (command, any case) of one key, routed by the
 * key in cluster mode. */
VK_API vk_status vk_scan_new_key(vk_scan **out, vk_client *client, const char *command,
                                 const char *key, size_t keylen, const char *match,
                                 size_t matchlen, int64_t count);
/* The next page: an array reply (possibly empty) of keys, or for HSCAN
 * field, value, ... and for ZSCAN member, score, ... flat as the server
 * sends them. Once vk_scan_done() is 1 a call gives an empty array. A
 * server error reply (WRONGTYPE, an unknown TYPE, ...) is VK_ERR_SERVER
 * with its text; a failed page leaves the cursor where it was, so the
 * call may be repeated. Pages are read-only: retried per the policy of
 * vk_client_command(). */
VK_API vk_status vk_scan_next(vk_reply **out, vk_scan *scan, vk_context *ctx);
/* 1 once the last page was returned (and for NULL), else 0. */
VK_API int vk_scan_done(const vk_scan *scan);
/* NULL-safe. */
VK_API void vk_scan_free(vk_scan *scan);

/* ------------------------------------------------------------------------ */
/* Distributed lock (Redlock)                                               */
/* ------------------------------------------------------------------------ */

/* Threads: a lock manager is safe to share: acquire, try_lock and
 * with_lock may run on one manager from any number of threads at once.
 * vk_lock_manager_free() must be the last call on it (handles keep what
 * they need). */
typedef struct vk_lock_manager vk_lock_manager;
/* Threads: a lock handle is used by one thread at a time, with these
 * exceptions. vk_lock_validity_ms, vk_lock_is_lost, vk_lock_fencing_token
 * and vk_lock_key read fixed or atomic state: any thread may call them at
 * any time before vk_lock_free, also while the renewal thread started by
 * vk_lock_auto_renew extends the lock. vk_lock_extend may run beside that
 * renewal thread. vk_lock_auto_renew may be called from several threads
 * at once: one renewal starts. */
typedef struct vk_lock vk_lock;

/* Versioned (libgit2's rule): start from VK_LOCK_OPTIONS_INIT or
 * vk_lock_options_init(&opts, VK_LOCK_OPTIONS_VERSION). A later version
 * only appends fields and bumps VK_LOCK_OPTIONS_VERSION; the library
 * accepts every version from 1 to its own, reads and writes only the
 * fields of the caller's version (the others take their defaults), and
 * rejects 0 and newer versions with VK_ERR_INVALID_ARGUMENT. */
#define VK_LOCK_OPTIONS_VERSION 1
typedef struct vk_lock_options {
    unsigned int version;   /* VK_LOCK_OPTIONS_VERSION */
    int64_t expiry_ms;      /* > 0; default 10000 */
    int tries;              /* 1..1000; default 3 */
    int64_t retry_delay_ms; /* >= 0; default 500 */
    double drift_factor;    /* [0, 1); default 0.01 */
    int auto_renew;         /* renew while held (see vk_lock_auto_renew); default 0 */
} vk_lock_options;
#define VK_LOCK_OPTIONS_INIT { VK_LOCK_OPTIONS_VERSION, 10000, 3, 500, 0.01, 0 }

/* Fills opts, a struct of the given version, with the defaults / the
 * rate-limiter preset. */
VK_API vk_status vk_lock_options_init(vk_lock_options *opts, unsigned int version);
VK_API vk_status vk_lock_options_rate_limiter(vk_lock_options *opts, unsigned int version);
/* Checks opts against the rules of SEMANTICS §4 (exact texts). */
VK_API vk_status vk_lock_options_validate(const vk_lock_options *opts);

/* A manager over one client (the client must be live) ... */
VK_API vk_status vk_lock_manager_new(vk_lock_manager **out, vk_client *client);
/* ... or over n independent clients for a Redlock quorum (majority of n). */
VK_API vk_status vk_lock_manager_new_quorum(vk_lock_manager **out,
                                            vk_client *const *clients, size_t n);
VK_API void vk_lock_manager_free(vk_lock_manager *manager);

/* One attempt with the default expiry. Contention is not an error: the
 * call returns VK_OK with *out == NULL. Faults are errors. */
VK_API vk_status vk_lock_manager_try_lock(vk_lock **out, vk_lock_manager *manager,
                                          vk_context *ctx, const char *key, size_t keylen);
/* Acquire with retries per opts (NULL: defaults). Contention after the last
 * try is VK_ERR_LOCK_ACQUIRE. With opts->auto_renew the handle comes back
 * renewing (vk_lock_auto_renew). */
VK_API vk_status vk_lock_manager_acquire(vk_lock **out, vk_lock_manager *manager,
                                         vk_context *ctx, const char *key, size_t keylen,
                                         const vk_lock_options *opts);

/* The function run under the lock; `lock` is borrowed for the call. A
 * non-OK return is passed on as VK_ERR_LOCK_FN ("distributed lock: function
 * execution: <cause>") after the lock is released. With auto_renew, a lock
 * whose renewal failed while fn ran turns fn's VK_OK into VK_ERR_LOCK_LOST;
 * fn can check vk_lock_is_lost() itself before it commits work. */
typedef vk_status (*vk_lock_fn)(void *userdata, vk_lock *lock);
VK_API vk_status vk_lock_manager_with_lock(vk_lock_manager *manager, vk_context *ctx,
                                           const char *key, size_t keylen,
                                           vk_lock_fn fn, void *userdata);
VK_API vk_status vk_lock_manager_with_lock_options(vk_lock_manager *manager,
                                                   vk_context *ctx, const char *key,
                                                   size_t keylen,
                                                   const vk_lock_options *opts,
                                                   vk_lock_fn fn, void *userdata);
/* Deprecated: use vk_lock_unlock(). A NULL lock is VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK. */
VK_API VK_DEPRECATED vk_status vk_lock_manager_unlock(vk_lock_manager *manager,
                                                      vk_context *ctx, vk_lock *lock);

/* Compare-and-delete release. VK_ERR_LOCK_NOT_HELD when it expired or was
 * taken over; I/O faults keep their own codes. The handle stays allocated. */
VK_API vk_status vk_lock_unlock(vk_lock *lock, vk_context *ctx);
/* Resets the expiry to expiry_ms, only while the lock is still ours. */
VK_API vk_status vk_lock_extend(vk_lock *lock, vk_context *ctx, int64_t expiry_ms);
/* Remaining validity in ms (0 once expired or released). */
VK_API int64_t vk_lock_validity_ms(const vk_lock *lock);
/* Strictly increasing per key across every holder; 0 for NULL. */
VK_API int64_t vk_lock_fencing_token(const vk_lock *lock);
/* The key (borrowed), its length in *len. */
VK_API const char *vk_lock_key(const vk_lock *lock, size_t *len);
/* Keeps the lock: a background thread extends it by its expiry every third
 * of the expiry until vk_lock_unlock() or vk_lock_free(). When an extension
 * fails the lock is marked lost and renewal ends. Calling it again while
 * renewal runs does nothing. Extend and validity stay safe to call. */
VK_API vk_status vk_lock_auto_renew(vk_lock *lock);
/* 1 when automatic renewal failed and the lock can no longer be trusted. */
VK_API int vk_lock_is_lost(const vk_lock *lock);
VK_API void vk_lock_free(vk_lock *lock);

#ifdef __cplusplus
}
#endif

#endif /* VKCLIENT_H */
