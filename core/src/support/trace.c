/*
 * Spans: the client's work as seen by a host's tracer. A scoped span sits
 * on a per-thread stack while its function runs, so that the spans it
 * causes (a connect inside a with_lock) name it as their parent. On a
 * background thread whose events are queued (VK_EVENTS_QUEUED), nothing is
 * called: the span is recorded and the host's poll delivers it whole.
 */
#include "support/support.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The innermost scoped span running on this thread. */
static _Thread_local vk_span *current_span = NULL;

int64_t vk__wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- deferred starts: a copy of the attributes until the end ------------- */

typedef struct deferred_start {
    size_t nattrs;
    vk_field attrs[];   /* then the strings */
} deferred_start;

static deferred_start *copy_start(const vk_field *attrs, size_t nattrs)
{
    size_t size = sizeof(deferred_start) + nattrs * sizeof(vk_field);
    for (size_t i = 0; i < nattrs; i++)
        size += strlen(attrs[i].key) + 1 + strlen(attrs[i].value) + 1;
    deferred_start *d = malloc(size);
    if (d == NULL)
        return NULL;
    d->nattrs = nattrs;
    char *cursor = (char *)(d->attrs + nattrs);
    for (size_t i = 0; i < nattrs; i++) {
        size_t k = strlen(attrs[i].key) + 1, v = strlen(attrs[i].value) + 1;
        d->attrs[i].key = memcpy(cursor, attrs[i].key, k);
        cursor += k;
        d->attrs[i].value = memcpy(cursor, attrs[i].value, v);
        cursor += v;
    }
    return d;
}

/* ---- start and end ----------------------------------------------------------- */

static bool begin(vk_span *s, vk_events *ev, const char *name)
{
    const vk_callback *tracer = vk__events_tracer(ev);
    if (VK_LIKELY(tracer == NULL)) {
        s->tracer = NULL;
        return false;
    }
    memset(s, 0, sizeof *s);
    s->tracer = tracer;
    s->ev = ev;
    s->name = name;
    s->start_ns = vk__wall_ns();
    return true;
}

static void call_start(vk_span *s, void *parent, const vk_field *attrs, size_t nattrs)
{
    if (vk__events_defers(s->ev)) {
        s->deferred = copy_start(attrs, nattrs);
        if (s->deferred == NULL)
            s->tracer = NULL;   /* out of memory: this span is not traced */
        return;
    }
    vk_span_start_fn start = (vk_span_start_fn)s->tracer->fn;
    s->handle = start(s->tracer->userdata, s->name, parent, s->start_ns, attrs, nattrs);
}

void vk__span_start(vk_span *s, vk_events *ev, const char *name, vk_context *ctx,
                    const vk_field *attrs, size_t nattrs)
{
    if (!begin(s, ev, name))
        return;
    /* A span of another tracer (another client) is not this tracer's to
     * name as a parent: the context's parent is. */
    void *parent = current_span != NULL && current_span->tracer == s->tracer
                       ? current_span->handle
                       : vk__ctx_trace_parent(ctx);
    call_start(s, parent, attrs, nattrs);
    if (s->tracer == NULL)
        return;
    s->scoped = true;
    s->outer = current_span;
    current_span = s;
}

void vk__span_start_detached(vk_span *s, vk_events *ev, const char *name,
                             const vk_field *attrs, size_t nattrs)
{
    if (!begin(s, ev, name))
        return;
    void *parent = current_span != NULL && current_span->tracer == s->tracer
                       ? current_span->handle
                       : NULL;
    call_start(s, parent, attrs, nattrs);
}

void vk__span_end(vk_span *s, vk_status status, const char *error, const vk_field *attrs,
                  size_t nattrs)
{
    if (VK_LIKELY(s->tracer == NULL))
        return;
    if (s->scoped) {
        /* Ends come innermost first; the stack is restored either way. */
        current_span = s->outer;
    }
    int64_t end_ns = vk__wall_ns();
    char *saved = NULL;
    if (status != VK_OK) {
        saved = vk__error_dup();
        if (error == NULL)
            error = saved != NULL ? saved : vk_strerror(status);
    } else {
        error = NULL;
    }
    if (s->deferred != NULL) {
        deferred_start *d = s->deferred;
        vk_span_record record = {
            .name = s->name, .start_ns = s->start_ns, .end_ns = end_ns,
            .start_attrs = d->attrs, .nstart_attrs = d->nattrs,
            .end_attrs = attrs, .nend_attrs = nattrs,
            .status = status, .error = error,
        };
        vk__events_queue_span(s->ev, &record);
        free(d);
    } else {
        vk_span_end_fn end = (vk_span_end_fn)s->tracer->fn2;
        end(s->tracer->userdata, s->handle, end_ns, status, error, attrs, nattrs);
    }
    /* The caller reports this failure after the tracer has run. */
    if (status != VK_OK)
        vk__fail_restore(status, saved);
    free(saved);
    s->tracer = NULL;
}
