/*
 * The support layer: what every other layer of the core uses (errors,
 * time and randomness, contexts, the log and metrics sinks, quoting,
 * wiping secrets, the fork generation). It includes nothing of the core
 * but the public header. Nothing here is exported; functions are
 * prefixed vk__.
 */
#ifndef VK_SUPPORT_H
#define VK_SUPPORT_H

#include "vkclient.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>

#define VK_NO_DEADLINE INT64_MAX

#if defined(__GNUC__)
#  define VK_PRINTF(fmt_idx, args_idx) __attribute__((format(printf, fmt_idx, args_idx)))
#  define VK_LIKELY(x) __builtin_expect(!!(x), 1)
#  define VK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#  define VK_PRINTF(fmt_idx, args_idx)
#  define VK_LIKELY(x) (x)
#  define VK_UNLIKELY(x) (x)
#endif

/* ---- error.c ----------------------------------------------------------- */

/* Records a failure on this thread and returns code. The detail becomes
 * "<vk_strerror(code)>: <formatted>", or just vk_strerror(code) when fmt
 * is NULL. */
vk_status vk__fail(vk_status code, const char *fmt, ...) VK_PRINTF(2, 3);
/* Same, but the detail is exactly the formatted text. */
vk_status vk__fail_msg(vk_status code, const char *fmt, ...) VK_PRINTF(2, 3);
vk_status vk__fail_nomem(void);
/* A malloc'd copy of this thread's current detail message (or NULL). */
char *vk__error_dup(void);
/* Restores a saved failure (code + detail) on this thread. */
vk_status vk__fail_restore(vk_status code, const char *detail);
/* Frees this thread's detail. A background thread calls it before it
 * idles: a fork() then leaves none of its memory behind in the child. */
void vk__error_clear(void);

/* ---- fork.c: the process generation --------------------------------------- */

/* Bumped in every forked child once vk__fork_watch() has installed the
 * atfork handler (it installs it once; cheap afterwards). */
unsigned vk__fork_generation(void);
void vk__fork_watch(void);
/* Serialises the after-fork resets of the process's clients against
 * fork() itself: held across fork() by the forking thread. */
void vk__fork_reset_lock(void);
void vk__fork_reset_unlock(void);

/* ---- clock.c: time, randomness ------------------------------------------ */

int64_t vk__now_us(void);   /* monotonic */
int64_t vk__now_ms(void);   /* monotonic */
int64_t vk__wall_ms(void);  /* Unix time */
/* Fills buf from OpenSSL's CSPRNG; 0 on success. */
int vk__random_bytes(void *buf, size_t n);
/* Uniform in [0, upper) from a fast thread-local generator (jitter only);
 * 0 when upper <= 0. */
int64_t vk__jitter(int64_t upper);
/* Formats a duration like Go's time.Duration.String() ("250ms", "1.5s"). */
void vk__format_duration_ms(char *buf, size_t cap, int64_t ms);

/* ---- context.c ---------------------------------------------------------- */

/* The absolute monotonic deadline in us, VK_NO_DEADLINE when none. */
int64_t vk__ctx_deadline_us(const vk_context *ctx);
/* True when waiting on behalf of ctx needs poll() (cancellable, deadline or
 * interrupt check); false for NULL: then blocking I/O with socket timeouts
 * is enough, which is the fast path. */
bool vk__ctx_needs_poll(const vk_context *ctx);
/* True when a blocking call may do its I/O on fd without poll(): ctx has
 * no deadline and no interrupt check, is not cancelled and no other call
 * watches it. A cancel then shuts fd down. Pair with vk__ctx_unwatch_fd()
 * before fd can be closed. */
bool vk__ctx_watch_fd(vk_context *ctx, int fd);
void vk__ctx_unwatch_fd(vk_context *ctx, int fd);
/* VK_ERR_CANCELLED when cancelled (or the interrupt check fired),
 * VK_ERR_TIMEOUT when the deadline passed, else VK_OK. Sets the detail. */
vk_status vk__ctx_check(vk_context *ctx);
/* The tracer's handle set with vk_context_set_trace_parent (NULL-safe). */
void *vk__ctx_trace_parent(const vk_context *ctx);
/* Waits for `events` (POLLIN/POLLOUT) on fd until min(deadline_us, ctx's
 * deadline), waking on cancel and running the interrupt check at least
 * every 50 ms. VK_OK when ready, else VK_ERR_TIMEOUT / VK_ERR_CANCELLED
 * (detail set). fd < 0: just sleeps until the deadline (still interruptible),
 * returning VK_OK when the deadline is reached. */
vk_status vk__ctx_wait_fd(vk_context *ctx, int fd, short events, int64_t deadline_us);
/* Interruptible sleep: VK_OK after ms, else the ctx's failure. */
vk_status vk__ctx_sleep_ms(vk_context *ctx, int64_t ms);

/* ---- sinks.c and events.c: logger and metrics sinks, optional queue ------- */

/* A refcounted callback (function + userdata + free hook). */
typedef struct vk_callback {
    void (*fn)(void);           /* vk_log_fn, vk_metric_fn or vk_span_start_fn */
    void (*fn2)(void);          /* a tracer's vk_span_end_fn; else NULL */
    void *userdata;
    vk_free_fn free_userdata;
    int refs;                   /* atomic */
} vk_callback;

vk_callback *vk__callback_new(void (*fn)(void), void *userdata, vk_free_fn free_userdata);
vk_callback *vk__callback_ref(vk_callback *cb);     /* NULL-safe */
void vk__callback_unref(vk_callback *cb);           /* NULL-safe; frees userdata at 0 */

/* Delivers a whole span to a tracer: start (no parent), then end. */
void vk__callback_span(const vk_callback *tracer, const char *name, int64_t start_ns,
                       const vk_field *start_attrs, size_t nstart, int64_t end_ns,
                       vk_status status, const char *error, const vk_field *end_attrs,
                       size_t nend);
/* A span that ran on a background thread, queued whole (trace.c). */
typedef struct vk_span_record {
    const char *name;
    int64_t start_ns, end_ns;
    const vk_field *start_attrs, *end_attrs;
    size_t nstart_attrs, nend_attrs;
    vk_status status;
    const char *error;
} vk_span_record;
/* Calls a logger / metrics callback. */
void vk__callback_log(const vk_callback *cb, vk_log_level level, const char *message,
                      const vk_field *fields, size_t nfields);
void vk__callback_metric(const vk_callback *cb, const char *name, vk_metric_kind kind,
                         double value, const vk_field *labels, size_t nlabels);

/* The per-client emitter: the sinks plus, in VK_EVENTS_QUEUED mode, a queue
 * for events raised on threads other than the caller's. */
typedef struct vk_events vk_events;

vk_events *vk__events_new(vk_callback *logger, vk_callback *metrics, vk_callback *tracer,
                          vk_event_delivery mode);
void vk__events_free(vk_events *ev);
/* After fork() in the child: a wake-up descriptor of its own, an empty
 * queue (the parent delivers its events), locks re-initialised. */
void vk__events_after_fork(vk_events *ev);
/* Marks the calling thread as a background thread of this client: in
 * queued mode its events go to the queue. */
void vk__events_enter_background(void);
bool vk__events_has_logger(const vk_events *ev);
bool vk__events_has_metrics(const vk_events *ev);
/* The tracer (NULL: none). */
const vk_callback *vk__events_tracer(const vk_events *ev);
/* True when what this thread raises for ev is queued for the host's poll
 * (a background thread in VK_EVENTS_QUEUED mode). */
bool vk__events_defers(const vk_events *ev);
/* Queues a span of a background thread for the host's poll. */
void vk__events_queue_span(vk_events *ev, const vk_span_record *span);
void vk__log(vk_events *ev, vk_log_level level, const char *message,
             const vk_field *fields, size_t nfields);
void vk__metric(vk_events *ev, const char *name, vk_metric_kind kind, double value,
                const vk_field *labels, size_t nlabels);
int vk__events_poll(vk_events *ev, int max);
vk_status vk__events_wait(vk_events *ev, vk_context *ctx, int64_t timeout_ms);

/* ---- trace.c: spans -------------------------------------------------------- */

/* A span in progress: on the stack of the function it covers (scoped), or
 * in an event-loop operation (detached). Zeroed, it is "not traced". */
typedef struct vk_span {
    const vk_callback *tracer;  /* NULL: not traced */
    vk_events *ev;
    const char *name;           /* a literal */
    void *handle;               /* the host's */
    int64_t start_ns;
    struct vk_span *outer;      /* scoped: the span it runs in, on this thread */
    bool scoped;
    void *deferred;             /* queued delivery: the start, copied */
} vk_span;

/* Starts a span that ends on this thread before the one it runs in: it is
 * the parent of the spans started meanwhile. The parent is the client's
 * enclosing span on this thread, else ctx's trace parent. attrs are
 * copied where they must outlive the call. No-op without a tracer. */
void vk__span_start(vk_span *s, vk_events *ev, const char *name, vk_context *ctx,
                    const vk_field *attrs, size_t nattrs);
/* Starts a span that ends later, on this thread, in any order (an
 * event-loop operation): it is nobody's parent. */
void vk__span_start_detached(vk_span *s, vk_events *ev, const char *name,
                             const vk_field *attrs, size_t nattrs);
/* Ends it: status, error (NULL: this thread's vk_last_error() when status
 * is not VK_OK) and the attributes known at the end. The thread's error is
 * kept across the tracer's call. */
void vk__span_end(vk_span *s, vk_status status, const char *error, const vk_field *attrs,
                  size_t nattrs);
/* Wall clock, nanoseconds since the Unix epoch. */
int64_t vk__wall_ns(void);
/* The process-wide package logger. */
void vk__package_log(vk_log_level level, const char *message,
                     const vk_field *fields, size_t nfields);
/* Logs misuse of a NULL handle through the package logger, e.g.
 * vk__misuse("vk_client_command", "redis client is nil"). */
void vk__misuse(const char *function, const char *what);

/* Quotes s (len bytes) as a double-quoted string with control and non-ASCII
 * bytes escaped; a quoted form over 128 characters is cut to its first 128
 * followed by "...(truncated)". Returns a malloc'd string. */
char *vk__quote_key(const char *s, size_t len);

/* ---- secret.c: secrets and their encodings -------------------------------- */

/* Zeroes n bytes in a way the compiler cannot elide. */
void vk__wipe(void *p, size_t n);
/* Wipes and frees a secret string (NULL-safe). */
void vk__free_secret(char *s);
/* Decodes standard base64 (padding optional, whitespace ignored) into a
 * malloc'd NUL-terminated buffer. -1 on malformed input. */
int vk__base64_decode(const char *in, unsigned char **out, size_t *outlen);

#endif /* VK_SUPPORT_H */
