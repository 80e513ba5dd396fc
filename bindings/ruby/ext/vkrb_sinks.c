/*
 * Logger and metrics trampolines, and the delivery rules that the tracer's
 * (vkrb_trace.c) share with them. The core calls them on:
 *  - the thread of the Ruby call that raised the event, which is inside
 *    vkrb_blocking() with the GVL released: the GVL is taken back for the
 *    call (vkrb_call_with_gvl);
 *  - the thread that runs vk_client_poll_events(), which holds the GVL:
 *    the callable is called directly.
 * Objects freed by Ruby's GC free their core handles with the sinks muted.
 * Background threads never get here: clients are built with
 * VK_EVENTS_QUEUED, so their events wait in the core's queue for a Ruby
 * thread. An event from any other foreign thread is dropped rather than
 * entering Ruby unsafely.
 *
 * A sink (or tracer) that raises a StandardError does not break the
 * client: a warning is printed and the event is lost. Anything else
 * (Thread#kill, Interrupt, Timeout) is kept and raised again once the core
 * has returned, because it is aimed at the thread, not at the sink.
 */
#include "vkrb.h"

#include <stdlib.h>

typedef struct sink {
    VALUE callable; /* kept alive by the Ruby object that owns the client */
} sink;

typedef struct sink_event {
    const sink *target;
    int is_log;
    int level_or_kind;
    const char *text;
    double value;
    const vk_field *fields;
    size_t nfields;
} sink_event;

static ID id_call;
static VALUE level_names[4];
static VALUE kind_names[3];
/* The interrupt a sink received, raised after the core returns. */
static _Thread_local int pending_state;
static VALUE package_logger = Qnil;
/* Events raised while this thread frees core objects from the GC. */
static _Thread_local int muted;

static VALUE fields_hash(const vk_field *fields, size_t n)
{
    VALUE hash = rb_hash_new();
    for (size_t i = 0; i < n; i++)
        rb_hash_aset(hash, rb_utf8_str_new_cstr(fields[i].key ? fields[i].key : ""),
                     rb_utf8_str_new_cstr(fields[i].value ? fields[i].value : ""));
    return hash;
}

static VALUE call_sink(VALUE arg)
{
    const sink_event *e = (const sink_event *)arg;
    VALUE fields = fields_hash(e->fields, e->nfields);
    VALUE text = rb_utf8_str_new_cstr(e->text ? e->text : "");
    if (e->is_log)
        return rb_funcall(e->target->callable, id_call, 3, level_names[e->level_or_kind & 3],
                          text, fields);
    int kind = e->level_or_kind >= 0 && e->level_or_kind <= 2 ? e->level_or_kind : 0;
    return rb_funcall(e->target->callable, id_call, 4, text, kind_names[kind],
                      DBL2NUM(e->value), fields);
}

static int is_interrupt(VALUE exc)
{
    if (!rb_obj_is_kind_of(exc, rb_eStandardError))
        return 1;
    /* Timeout::Error is a StandardError, but it is aimed at the thread. */
    if (rb_const_defined(rb_cObject, rb_intern("Timeout"))) {
        VALUE timeout = rb_const_get(rb_cObject, rb_intern("Timeout"));
        VALUE error = rb_const_get(timeout, rb_intern("Error"));
        return rb_obj_is_kind_of(exc, error) != Qfalse;
    }
    return 0;
}

int vkrb_sinks_protect(VALUE (*call)(VALUE), VALUE arg, const char *what)
{
    if (pending_state)
        return 0; /* the thread is being interrupted: deliver no more */
    int state = 0;
    rb_protect(call, arg, &state);
    if (!state)
        return 1;
    VALUE exc = rb_errinfo();
    if (NIL_P(exc) || is_interrupt(exc)) {
        pending_state = state;
        return 1;
    }
    rb_set_errinfo(Qnil);
    VALUE text = rb_funcall(exc, rb_intern("full_message"), 0);
    rb_warn("vkclient: %s raised: %s", what, StringValueCStr(text));
    return 1;
}

int vkrb_sinks_enter(void *(*fn)(void *), void *arg)
{
    if (muted || !ruby_native_thread_p())
        return 0; /* inside the GC, or a foreign thread: never enter Ruby */
    if (vkrb_in_blocking())
        vkrb_call_with_gvl(fn, arg);
    else
        fn(arg);
    return 1;
}

static void *deliver_with_gvl(void *arg)
{
    vkrb_sinks_protect(call_sink, (VALUE)arg, "a logger or metrics sink");
    return NULL;
}

static void deliver(const sink_event *e)
{
    vkrb_sinks_enter(deliver_with_gvl, (void *)e);
}

static void log_trampoline(void *userdata, vk_log_level level, const char *message,
                           const vk_field *fields, size_t nfields)
{
    sink_event e = {userdata, 1, (int)level, message, 0.0, fields, nfields};
    deliver(&e);
}

static void metric_trampoline(void *userdata, const char *name, vk_metric_kind kind,
                              double value, const vk_field *labels, size_t nlabels)
{
    sink_event e = {userdata, 0, (int)kind, name, value, labels, nlabels};
    deliver(&e);
}

int vkrb_sinks_mute(int mute)
{
    int previous = muted;
    muted = mute;
    return previous;
}

void vkrb_sinks_reraise_pending(void)
{
    int state = pending_state;
    pending_state = 0;
    if (state)
        rb_jump_tag(state);
}

static sink *sink_for(VALUE callable)
{
    if (!rb_respond_to(callable, id_call))
        rb_raise(rb_eTypeError, "a logger or metrics sink must respond to #call");
    sink *s = malloc(sizeof *s);
    if (!s)
        rb_raise(rb_eNoMemError, "out of memory");
    s->callable = callable;
    return s;
}

void vkrb_config_set_logger(vk_config *cfg, VALUE callable)
{
    vk_status st = NIL_P(callable)
                       ? vk_config_set_logger(cfg, NULL, NULL, NULL)
                       : vk_config_set_logger(cfg, log_trampoline, sink_for(callable), free);
    if (st != VK_OK)
        vkrb_raise(st);
}

void vkrb_config_set_metrics(vk_config *cfg, VALUE callable)
{
    vk_status st = NIL_P(callable)
                       ? vk_config_set_metrics(cfg, NULL, NULL, NULL)
                       : vk_config_set_metrics(cfg, metric_trampoline, sink_for(callable), free);
    if (st != VK_OK)
        vkrb_raise(st);
}

/* VKClient::Native.set_package_logger(callable_or_nil). The callable is
 * kept in a GC-registered global until it is replaced. */
static VALUE set_package_logger(VALUE self, VALUE callable)
{
    (void)self;
    vk_status st;
    if (NIL_P(callable)) {
        st = vk_set_package_logger(NULL, NULL, NULL);
    } else {
        sink *s = sink_for(callable);
        st = vk_set_package_logger(log_trampoline, s, free); /* frees s on failure */
    }
    /* The previous logger stays in place, and referenced, on failure. */
    if (st != VK_OK)
        vkrb_raise(st);
    package_logger = callable;
    vkrb_sinks_reraise_pending();
    return callable;
}

/* VKClient::Native.config_set_sinks(config, logger, metrics). */
static VALUE config_set_sinks(VALUE self, VALUE config, VALUE logger, VALUE metrics)
{
    (void)self;
    vk_config *cfg = vkrb_unwrap_config(config);
    vkrb_config_set_logger(cfg, logger);
    vkrb_config_set_metrics(cfg, metrics);
    if (!NIL_P(logger) || !NIL_P(metrics)) {
        vk_status st = vk_config_set_event_delivery(cfg, VK_EVENTS_QUEUED);
        if (st != VK_OK)
            vkrb_raise(st);
    }
    return Qnil;
}

void vkrb_init_sinks(void)
{
    id_call = rb_intern("call");
    const char *levels[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        level_names[i] = ID2SYM(rb_intern(levels[i]));
    const char *kinds[] = {"counter", "gauge", "histogram"};
    for (int i = 0; i < 3; i++)
        kind_names[i] = ID2SYM(rb_intern(kinds[i]));
    rb_gc_register_address(&package_logger);
    VALUE native = rb_define_module_under(vkrb_mVKClient, "Native");
    rb_define_module_function(native, "set_package_logger", set_package_logger, 1);
    rb_define_module_function(native, "config_set_sinks", config_set_sinks, 3);
}
