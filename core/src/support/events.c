/*
 * Logger, metrics and tracer sinks. A client's events normally reach its sinks on
 * whichever thread raised them. In VK_EVENTS_QUEUED mode, events raised on
 * a background thread (the IAM refresh loop) are deep-copied into a bounded
 * queue instead, and the host delivers them on its own thread with
 * vk__events_poll(): Lua states and Ruby must not be entered from foreign
 * threads.
 */
#include "support/support.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Beyond this many queued events the oldest are dropped (and counted). */
#define VK_EVENT_QUEUE_LIMIT 10000

/* ---- the per-client emitter ----------------------------------------------- */

/* One queued event, deep-copied into a single allocation: the struct, the
 * field array, then every string. */
typedef enum queued_kind { QUEUED_LOG, QUEUED_METRIC, QUEUED_SPAN } queued_kind;

typedef struct queued_event {
    struct queued_event *next;
    queued_kind kind;
    vk_log_level level;
    vk_metric_kind metric_kind;
    double value;
    const char *text;          /* log message, metric name or span name */
    const vk_field *fields;    /* a span's: the start's, then the end's */
    size_t nfields;
    /* A span that ran on a background thread, delivered whole. */
    size_t nstart_fields;
    const char *error;
    vk_status status;
    int64_t start_ns, end_ns;
} queued_event;

struct vk_events {
    vk_callback *logger;
    vk_callback *metrics;
    vk_callback *tracer;
    vk_event_delivery mode;

    pthread_mutex_t lock;      /* guards the queue */
    queued_event *head, *tail;
    size_t queued;
    uint64_t dropped;          /* since the last poll reported them */
    int wake_fd;               /* eventfd, readable when events were queued */
};

static _Thread_local bool on_background_thread = false;

vk_events *vk__events_new(vk_callback *logger, vk_callback *metrics, vk_callback *tracer,
                          vk_event_delivery mode)
{
    vk_events *ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        return NULL;
    ev->wake_fd = -1;
    if (mode == VK_EVENTS_QUEUED) {
        ev->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (ev->wake_fd < 0) {
            free(ev);
            return NULL;
        }
    }
    pthread_mutex_init(&ev->lock, NULL);
    ev->logger = vk__callback_ref(logger);
    ev->metrics = vk__callback_ref(metrics);
    ev->tracer = vk__callback_ref(tracer);
    ev->mode = mode;
    return ev;
}

void vk__events_free(vk_events *ev)
{
    if (ev == NULL)
        return;
    for (queued_event *e = ev->head, *next; e != NULL; e = next) {
        next = e->next;
        free(e);
    }
    pthread_mutex_destroy(&ev->lock);
    if (ev->wake_fd >= 0)
        close(ev->wake_fd);
    vk__callback_unref(ev->logger);
    vk__callback_unref(ev->metrics);
    vk__callback_unref(ev->tracer);
    free(ev);
}

void vk__events_after_fork(vk_events *ev)
{
    if (ev == NULL)
        return;
    /* A parent thread may have held the lock at fork time. */
    pthread_mutex_init(&ev->lock, NULL);
    /* The parent delivers these; a batch a parent thread had taken out of
     * the list is lost with that thread. */
    for (queued_event *e = ev->head, *next; e != NULL; e = next) {
        next = e->next;
        free(e);
    }
    ev->head = ev->tail = NULL;
    ev->queued = 0;
    ev->dropped = 0;
    /* The inherited descriptor is the parent's eventfd itself: a write in
     * one process would wake a waiter in the other, and a read would steal
     * the other's wake-up. Without a new one (out of descriptors), a wait
     * fails rather than sleep through events. */
    if (ev->wake_fd >= 0) {
        close(ev->wake_fd);
        ev->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
}

void vk__events_enter_background(void)
{
    on_background_thread = true;
}

bool vk__events_has_logger(const vk_events *ev)
{
    return ev != NULL && ev->logger != NULL;
}

bool vk__events_has_metrics(const vk_events *ev)
{
    return ev != NULL && ev->metrics != NULL;
}

const vk_callback *vk__events_tracer(const vk_events *ev)
{
    return ev != NULL ? ev->tracer : NULL;
}

static size_t text_size(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

/* Copies s into *cursor (advancing it); NULL stays NULL. */
static const char *place_text(char **cursor, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*cursor, s, n);
    const char *copy = *cursor;
    *cursor += n;
    return copy;
}

/* The event with text, error and the fields of both arrays (a span's
 * start and end attributes; more == NULL elsewhere) in one allocation. */
static queued_event *copy_event_with(const char *text, const char *error,
                                     const vk_field *fields, size_t nfields,
                                     const vk_field *more, size_t nmore)
{
    size_t total = nfields + nmore;
    size_t size = sizeof(queued_event) + total * sizeof(vk_field) + text_size(text) +
                  text_size(error);
    for (size_t i = 0; i < total; i++) {
        const vk_field *f = i < nfields ? &fields[i] : &more[i - nfields];
        size += text_size(f->key) + text_size(f->value);
    }
    queued_event *e = malloc(size);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof *e);
    vk_field *copied = (vk_field *)(e + 1);
    char *cursor = (char *)(copied + total);
    for (size_t i = 0; i < total; i++) {
        const vk_field *f = i < nfields ? &fields[i] : &more[i - nfields];
        copied[i].key = place_text(&cursor, f->key);
        copied[i].value = place_text(&cursor, f->value);
    }
    e->text = place_text(&cursor, text);
    e->error = place_text(&cursor, error);
    e->fields = total > 0 ? copied : NULL;
    e->nfields = total;
    e->nstart_fields = nfields;
    return e;
}

static queued_event *copy_event(const char *text, const vk_field *fields, size_t nfields)
{
    return copy_event_with(text, NULL, fields, nfields, NULL, 0);
}

static void enqueue(vk_events *ev, queued_event *e)
{
    pthread_mutex_lock(&ev->lock);
    if (ev->queued >= VK_EVENT_QUEUE_LIMIT) {
        queued_event *oldest = ev->head;
        ev->head = oldest->next;
        if (ev->head == NULL)
            ev->tail = NULL;
        ev->queued--;
        ev->dropped++;
        free(oldest);
    }
    if (ev->tail != NULL)
        ev->tail->next = e;
    else
        ev->head = e;
    ev->tail = e;
    ev->queued++;
    pthread_mutex_unlock(&ev->lock);
    uint64_t one = 1;
    ssize_t written = write(ev->wake_fd, &one, sizeof one);
    (void)written; /* EAGAIN: already readable */
}

static bool should_queue(const vk_events *ev)
{
    return ev->mode == VK_EVENTS_QUEUED && on_background_thread;
}

bool vk__events_defers(const vk_events *ev)
{
    return ev != NULL && should_queue(ev);
}

void vk__events_queue_span(vk_events *ev, const vk_span_record *span)
{
    queued_event *e = copy_event_with(span->name, span->error, span->start_attrs,
                                      span->nstart_attrs, span->end_attrs, span->nend_attrs);
    if (e == NULL)
        return; /* out of memory: the span is lost, not the work */
    e->kind = QUEUED_SPAN;
    e->status = span->status;
    e->start_ns = span->start_ns;
    e->end_ns = span->end_ns;
    enqueue(ev, e);
}

void vk__log(vk_events *ev, vk_log_level level, const char *message, const vk_field *fields,
             size_t nfields)
{
    if (ev == NULL || ev->logger == NULL)
        return;
    if (!should_queue(ev)) {
        vk__callback_log(ev->logger, level, message, fields, nfields);
        return;
    }
    queued_event *e = copy_event(message, fields, nfields);
    if (e == NULL)
        return; /* out of memory: a diagnostic is not worth failing for */
    e->kind = QUEUED_LOG;
    e->level = level;
    enqueue(ev, e);
}

void vk__metric(vk_events *ev, const char *name, vk_metric_kind kind, double value,
                const vk_field *labels, size_t nlabels)
{
    if (ev == NULL || ev->metrics == NULL)
        return;
    if (!should_queue(ev)) {
        vk__callback_metric(ev->metrics, name, kind, value, labels, nlabels);
        return;
    }
    queued_event *e = copy_event(name, labels, nlabels);
    if (e == NULL)
        return;
    e->kind = QUEUED_METRIC;
    e->metric_kind = kind;
    e->value = value;
    enqueue(ev, e);
}

static void deliver(vk_events *ev, const queued_event *e)
{
    switch (e->kind) {
    case QUEUED_LOG:
        vk__callback_log(ev->logger, e->level, e->text, e->fields, e->nfields);
        break;
    case QUEUED_METRIC:
        vk__callback_metric(ev->metrics, e->text, e->metric_kind, e->value, e->fields,
                            e->nfields);
        break;
    case QUEUED_SPAN: {
        const vk_field *end_fields = e->fields != NULL ? e->fields + e->nstart_fields : NULL;
        vk__callback_span(ev->tracer, e->text, e->start_ns, e->fields, e->nstart_fields,
                          e->end_ns, e->status, e->error, end_fields,
                          e->nfields - e->nstart_fields);
        break;
    }
    }
}

/* Tells the logger how many events the full queue dropped. */
static void report_dropped(vk_events *ev, uint64_t dropped)
{
    if (dropped == 0 || ev->logger == NULL)
        return;
    char count[32];
    snprintf(count, sizeof count, "%llu", (unsigned long long)dropped);
    const vk_field fields[] = {{"dropped", count}};
    vk__callback_log(ev->logger, VK_LOG_WARN, "event queue full: oldest events dropped", fields, 1);
}

int vk__events_poll(vk_events *ev, int max)
{
    if (ev == NULL)
        return -1;
    if (ev->mode != VK_EVENTS_QUEUED)
        return 0;
    /* Take the batch out under the lock; sinks run without it, so they may
     * take their time (and background threads keep queueing meanwhile). */
    pthread_mutex_lock(&ev->lock);
    queued_event *batch = ev->head, *last = NULL;
    int taken = 0;
    for (queued_event *e = ev->head; e != NULL && (max <= 0 || taken < max); e = e->next) {
        last = e;
        taken++;
    }
    if (last != NULL) {
        ev->head = last->next;
        if (ev->head == NULL)
            ev->tail = NULL;
        last->next = NULL;
        ev->queued -= (size_t)taken;
    } else {
        batch = NULL;
    }
    uint64_t dropped = ev->dropped;
    ev->dropped = 0;
    pthread_mutex_unlock(&ev->lock);

    report_dropped(ev, dropped);
    for (queued_event *e = batch, *next; e != NULL; e = next) {
        next = e->next;
        deliver(ev, e);
        free(e);
    }
    return taken;
}

static bool has_queued(vk_events *ev)
{
    pthread_mutex_lock(&ev->lock);
    bool pending = ev->queued > 0;
    pthread_mutex_unlock(&ev->lock);
    return pending;
}

vk_status vk__events_wait(vk_events *ev, vk_context *ctx, int64_t timeout_ms)
{
    if (ev == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "events is NULL");
    int64_t deadline = VK_NO_DEADLINE;
    if (timeout_ms >= 0) {
        int64_t now = vk__now_us();
        deadline = timeout_ms > (VK_NO_DEADLINE - now) / 1000 - 1 ? VK_NO_DEADLINE - 1
                                                                  : now + timeout_ms * 1000;
    }
    if (ev->mode == VK_EVENTS_QUEUED && ev->wake_fd < 0)
        return vk__fail(VK_ERR_IO, "the event queue has no wake-up descriptor "
                                   "(creating its eventfd after fork failed)");
    for (;;) {
        if (ev->mode == VK_EVENTS_QUEUED) {
            /* Reset the wake-up before looking, so an event queued after
             * the look makes the fd readable again: no lost wake-up. */
            uint64_t counter;
            ssize_t got = read(ev->wake_fd, &counter, sizeof counter);
            (void)got;
            if (has_queued(ev))
                return VK_OK;
        }
        if (vk__now_us() >= deadline)
            return vk__fail(VK_ERR_TIMEOUT, "no event within the timeout");
        vk_status st = vk__ctx_wait_fd(ctx, ev->wake_fd, POLLIN, deadline);
        if (st != VK_OK && st != VK_ERR_TIMEOUT)
            return st;
        if (st == VK_ERR_TIMEOUT && vk__now_us() < deadline)
            return st; /* the context's own deadline */
    }
}
