/*
 * The tracer: span trampolines between the core (vk_config_set_tracer) and
 * a Ruby object responding to
 *   start_span(name, parent, attributes, start_ns) -> span (any object)
 *   end_span(span, error, attributes, end_ns)
 *
 * Delivery follows the sinks' rules (vkrb_sinks.c): a span of the caller's
 * thread reaches the tracer at once, with the GVL taken back when the core
 * runs without it; a span of a background thread (the IAM refresh) waits in
 * the core's queue (VK_EVENTS_QUEUED) and reaches it, start then end, on
 * the Ruby thread that polls; a tracer that raises a StandardError gets a
 * warning and the client goes on; nothing is called inside the GC.
 *
 * Handles. The core's void * handle of a span is the VALUE start_span
 * returned (false passes as nil, so that NULL means "start_span was not
 * called" and end_span is then not called either). Until its end_span the
 * object is kept in live_spans, a GC root, since the core holds it where
 * the GC cannot see it. A parent the caller gives (VKClient.with_trace_parent)
 * travels the same way: it is referenced by the fiber's storage for as long
 * as the calls that carry it run.
 */
#include "vkrb.h"

#include <stdlib.h>

typedef struct tracer {
    VALUE obj; /* kept alive by the VKClient::Client that owns the client */
} tracer;

int vkrb_tracing_in_use;

static ID id_start_span;
static ID id_end_span;
static ID id_parent_key;
/* Span objects between their start and end: span => number of open uses. */
static VALUE live_spans = Qnil;

static VALUE attributes_hash(const vk_field *fields, size_t n)
{
    VALUE hash = rb_hash_new();
    for (size_t i = 0; i < n; i++)
        rb_hash_aset(hash, rb_utf8_str_new_cstr(fields[i].key ? fields[i].key : ""),
                     rb_utf8_str_new_cstr(fields[i].value ? fields[i].value : ""));
    return hash;
}

static void keep_span(VALUE span)
{
    if (SPECIAL_CONST_P(span))
        return; /* nil, true, small Integers, Symbols: nothing to keep */
    VALUE uses = rb_hash_lookup2(live_spans, span, INT2FIX(0));
    rb_hash_aset(live_spans, span, LONG2FIX(FIX2LONG(uses) + 1));
}

static void release_span(VALUE span)
{
    if (SPECIAL_CONST_P(span))
        return;
    VALUE uses = rb_hash_lookup2(live_spans, span, INT2FIX(0));
    if (FIX2LONG(uses) > 1)
        rb_hash_aset(live_spans, span, LONG2FIX(FIX2LONG(uses) - 1));
    else
        rb_hash_delete(live_spans, span);
}

/* ---- start ------------------------------------------------------------------ */

typedef struct span_start {
    const tracer *target;
    const char *name;
    void *parent;
    int64_t start_ns;
    const vk_field *attrs;
    size_t nattrs;
    VALUE span; /* Qundef until start_span returned */
} span_start;

static VALUE call_start_span(VALUE arg)
{
    span_start *s = (span_start *)arg;
    VALUE parent = s->parent != NULL ? (VALUE)s->parent : Qnil;
    s->span = rb_funcall(s->target->obj, id_start_span, 4, rb_utf8_str_new_cstr(s->name),
                         parent, attributes_hash(s->attrs, s->nattrs), LL2NUM(s->start_ns));
    return Qnil;
}

static void *start_with_gvl(void *arg)
{
    span_start *s = arg;
    vkrb_sinks_protect(call_start_span, (VALUE)s, "a tracer");
    if (s->span == Qundef)
        return NULL; /* not called, or raised: no end_span either */
    if (s->span == Qfalse)
        s->span = Qnil;
    keep_span(s->span);
    return NULL;
}

static void *span_start_trampoline(void *userdata, const char *name, void *parent,
                                   int64_t start_unix_ns, const vk_field *attributes,
                                   size_t nattributes)
{
    span_start s = {userdata, name, parent, start_unix_ns, attributes, nattributes, Qundef};
    if (!vkrb_sinks_enter(start_with_gvl, &s) || s.span == Qundef)
        return NULL;
    return (void *)s.span;
}

/* ---- end -------------------------------------------------------------------- */

typedef struct span_end {
    const tracer *target;
    VALUE span;
    int64_t end_ns;
    vk_status status;
    const char *error;
    const vk_field *attrs;
    size_t nattrs;
} span_end;

static VALUE call_end_span(VALUE arg)
{
    const span_end *e = (const span_end *)arg;
    VALUE error = Qnil;
    if (e->status != VK_OK)
        error = rb_utf8_str_new_cstr(e->error != NULL ? e->error : vk_strerror(e->status));
    rb_funcall(e->target->obj, id_end_span, 4, e->span, error,
               attributes_hash(e->attrs, e->nattrs), LL2NUM(e->end_ns));
    return Qnil;
}

static void *end_with_gvl(void *arg)
{
    span_end *e = arg;
    /* Skipped while an interrupt is pending; the span is let go either way. */
    vkrb_sinks_protect(call_end_span, (VALUE)e, "a tracer");
    release_span(e->span);
    return NULL;
}

static void span_end_trampoline(void *userdata, void *span, int64_t end_unix_ns,
                                vk_status status, const char *error,
                                const vk_field *attributes, size_t nattributes)
{
    if (span == NULL)
        return; /* its start_span was not called (or raised) */
    span_end e = {userdata, (VALUE)span, end_unix_ns, status, error, attributes, nattributes};
    /* A span always ends where it started, so Ruby can be entered here
     * whenever it could be at the start. */
    vkrb_sinks_enter(end_with_gvl, &e);
}

/* ---- the caller's parent ---------------------------------------------------- */

void vkrb_trace_set_parent(vk_context *ctx)
{
    VALUE parent = rb_thread_local_aref(rb_thread_current(), id_parent_key);
    /* nil and false are "no parent", as NULL is for the core. */
    vk_context_set_trace_parent(ctx, RTEST(parent) ? (void *)parent : NULL);
}

/* ---- configuration ---------------------------------------------------------- */

/* VKClient::Native.config_set_tracer(config, tracer, trace_commands): the
 * tracer (nil: none) and whether each command gets a span. The tracer is
 * kept referenced by the client object (VKClient::Client). */
static VALUE config_set_tracer(VALUE self, VALUE config, VALUE obj, VALUE trace_commands)
{
    (void)self;
    vk_config *cfg = vkrb_unwrap_config(config);
    vk_status st;
    if (NIL_P(obj)) {
        st = vk_config_set_tracer(cfg, NULL, NULL, NULL, NULL);
    } else {
        if (!rb_respond_to(obj, id_start_span) || !rb_respond_to(obj, id_end_span))
            rb_raise(rb_eTypeError, "a tracer must respond to #start_span and #end_span");
        tracer *t = malloc(sizeof *t);
        if (!t)
            rb_raise(rb_eNoMemError, "out of memory");
        t->obj = obj;
        /* The core frees t when it no longer needs it (also on failure). */
        st = vk_config_set_tracer(cfg, span_start_trampoline, span_end_trampoline, t, free);
        if (st == VK_OK)
            st = vk_config_set_event_delivery(cfg, VK_EVENTS_QUEUED);
        vkrb_tracing_in_use = 1;
    }
    if (st == VK_OK)
        st = vk_config_set_trace_commands(cfg, RTEST(trace_commands));
    if (st != VK_OK)
        vkrb_raise(st);
    return Qnil;
}

void vkrb_init_trace(void)
{
    id_start_span = rb_intern("start_span");
    id_end_span = rb_intern("end_span");
    id_parent_key = rb_intern("vkclient_trace_parent");
    live_spans = rb_hash_new();
    rb_funcall(live_spans, rb_intern("compare_by_identity"), 0);
    rb_gc_register_address(&live_spans);
    VALUE native = rb_define_module_under(vkrb_mVKClient, "Native");
    rb_define_module_function(native, "config_set_tracer", config_set_tracer, 3);
}
