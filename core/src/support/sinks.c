/*
 * The sinks a host gives: refcounted callbacks (logger, metrics), the
 * names of their levels and kinds, and the process-wide package logger
 * that reports misuse of the API.
 */
#include "support/support.h"

#include <pthread.h>
#include <stdlib.h>

/* ---- refcounted callbacks ----------------------------------------------- */

vk_callback *vk__callback_new(void (*fn)(void), void *userdata, vk_free_fn free_userdata)
{
    vk_callback *cb = malloc(sizeof *cb);
    if (cb == NULL)
        return NULL;
    cb->fn = fn;
    cb->fn2 = NULL;
    cb->userdata = userdata;
    cb->free_userdata = free_userdata;
    cb->refs = 1;
    return cb;
}

vk_callback *vk__callback_ref(vk_callback *cb)
{
    if (cb != NULL)
        __atomic_add_fetch(&cb->refs, 1, __ATOMIC_RELAXED);
    return cb;
}

void vk__callback_unref(vk_callback *cb)
{
    if (cb == NULL || __atomic_sub_fetch(&cb->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (cb->free_userdata != NULL)
        cb->free_userdata(cb->userdata);
    free(cb);
}

void vk__callback_log(const vk_callback *cb, vk_log_level level, const char *message,
                      const vk_field *fields, size_t nfields)
{
    vk_log_fn fn = (vk_log_fn)cb->fn;
    fn(cb->userdata, level, message, fields, nfields);
}

void vk__callback_metric(const vk_callback *cb, const char *name, vk_metric_kind kind,
                         double value, const vk_field *labels, size_t nlabels)
{
    vk_metric_fn fn = (vk_metric_fn)cb->fn;
    fn(cb->userdata, name, kind, value, labels, nlabels);
}

void vk__callback_span(const vk_callback *tracer, const char *name, int64_t start_ns,
                       const vk_field *start_attrs, size_t nstart, int64_t end_ns,
                       vk_status status, const char *error, const vk_field *end_attrs,
                       size_t nend)
{
    vk_span_start_fn start = (vk_span_start_fn)tracer->fn;
    vk_span_end_fn end = (vk_span_end_fn)tracer->fn2;
    void *span = start(tracer->userdata, name, NULL, start_ns, start_attrs, nstart);
    end(tracer->userdata, span, end_ns, status, error, end_attrs, nend);
}

/* ---- names ---------------------------------------------------------------- */

VK_API const char *vk_log_level_name(vk_log_level level)
{
    switch (level) {
    case VK_LOG_DEBUG: return "debug";
    case VK_LOG_INFO: return "info";
    case VK_LOG_WARN: return "warn";
    case VK_LOG_ERROR: return "error";
    }
    return "unknown";
}

VK_API const char *vk_metric_kind_name(vk_metric_kind kind)
{
    switch (kind) {
    case VK_METRIC_COUNTER: return "counter";
    case VK_METRIC_GAUGE: return "gauge";
    case VK_METRIC_HISTOGRAM: return "histogram";
    }
    return "unknown";
}

/* ---- the package logger --------------------------------------------------- */

static pthread_mutex_t package_logger_lock = PTHREAD_MUTEX_INITIALIZER;
static vk_callback *package_logger = NULL;

VK_API vk_status vk_set_package_logger(vk_log_fn fn, void *userdata, vk_free_fn free_userdata)
{
    vk_callback *replacement = NULL;
    if (fn != NULL) {
        replacement = vk__callback_new((void (*)(void))fn, userdata, free_userdata);
        if (replacement == NULL) {
            /* Keep the promise to release the caller's userdata. */
            if (free_userdata != NULL)
                free_userdata(userdata);
            return vk__fail_nomem();
        }
    }
    pthread_mutex_lock(&package_logger_lock);
    vk_callback *previous = package_logger;
    package_logger = replacement;
    pthread_mutex_unlock(&package_logger_lock);
    /* A call in progress on another thread holds its own reference. */
    vk__callback_unref(previous);
    return VK_OK;
}

void vk__package_log(vk_log_level level, const char *message, const vk_field *fields,
                     size_t nfields)
{
    pthread_mutex_lock(&package_logger_lock);
    vk_callback *cb = vk__callback_ref(package_logger);
    pthread_mutex_unlock(&package_logger_lock);
    if (cb == NULL)
        return;
    vk__callback_log(cb, level, message, fields, nfields);
    vk__callback_unref(cb);
}

void vk__misuse(const char *function, const char *what)
{
    const vk_field fields[] = {{"function", function != NULL ? function : "?"}};
    vk__package_log(VK_LOG_WARN, what, fields, 1);
}
