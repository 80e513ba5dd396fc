/*
 * A command's latency and its "redis.command" span (named by the command's
 * name only, never its arguments). The blocking calls keep theirs on the
 * stack; an event-loop operation's are carried by a wrapper of its
 * completion, made only when a sink wants them.
 */
#include "api/command_observe.h"

#include <stdio.h>
#include <stdlib.h>

void vk__command_observe_latency(vk_client *c, const char *label, int64_t started_us)
{
    const vk_field labels[] = {{"command", label}};
    double seconds = (double)(vk__now_us() - started_us) / 1e6;
    vk__metric(c->events, "redis_command_duration_seconds", VK_METRIC_HISTOGRAM, seconds,
               labels, 1);
}

static bool traces_commands(const vk_client *c)
{
    return c->cfg->trace_commands && vk__events_tracer(c->events) != NULL;
}

static void span_start(vk_command_span *cs, vk_client *c, size_t pipeline_len,
                       vk_context *ctx, bool detached)
{
    vk_field attrs[3] = {{"db.system", "redis"}, {"db.operation", cs->operation}, {0}};
    size_t n = 2;
    char length[24];
    if (pipeline_len > 0 || cs->operation[0] == '\0') {
        snprintf(cs->operation, sizeof cs->operation, "pipeline");
        snprintf(length, sizeof length, "%zu", pipeline_len);
        attrs[2] = (vk_field){"redis.pipeline.length", length};
        n = 3;
    }
    if (detached)
        vk__span_start_detached(&cs->span, c->events, "redis.command", attrs, n);
    else
        vk__span_start(&cs->span, c->events, "redis.command", ctx, attrs, n);
}

static void set_operation(vk_command_span *cs, const char *name, size_t len)
{
    if (name != NULL)
        vk__command_name_label(name, len, cs->operation);
    else
        cs->operation[0] = '\0';
}

bool vk__command_span_start(vk_command_span *cs, vk_client *c, const char *name, size_t len,
                            size_t pipeline_len, vk_context *ctx)
{
    cs->span.tracer = NULL;
    if (!traces_commands(c))
        return false;
    set_operation(cs, name, len);
    span_start(cs, c, name == NULL ? pipeline_len : 0, ctx, false);
    return cs->span.tracer != NULL;
}

void vk__command_span_end(vk_command_span *cs, vk_status st)
{
    vk__span_end(&cs->span, st, NULL, NULL, 0);
}

/* ---- event-loop operations ---------------------------------------------------- */

typedef struct observed_op {
    vk_command_span cs;       /* cs.operation: the latency's label too */
    int64_t started_us;       /* 0: no latency to report (a pipeline, no sink) */
    vk_client *client;        /* referenced until the completion */
    vk_async_fn fn;
    void *userdata;
} observed_op;

static void observed_complete(void *userdata, vk_status status, vk_reply *reply)
{
    observed_op *op = userdata;
    vk__command_span_end(&op->cs, status);
    if (op->started_us != 0)
        vk__command_observe_latency(op->client, op->cs.operation, op->started_us);
    vk__client_unref(op->client);
    vk_async_fn fn = op->fn;
    void *fn_userdata = op->userdata;
    free(op);
    fn(fn_userdata, status, reply);
}

bool vk__command_observe_wrap(vk_client *c, const char *name, size_t len, size_t pipeline_len,
                              vk_async_fn *fn, void **userdata)
{
    bool timed = name != NULL && vk__events_has_metrics(c->events);
    bool traced = traces_commands(c);
    if (VK_LIKELY(!timed && !traced))
        return false;
    observed_op *op = malloc(sizeof *op);
    if (op == NULL)
        return false;   /* out of memory: the operation runs unobserved */
    op->cs.span.tracer = NULL;
    set_operation(&op->cs, name, len);
    if (traced)
        span_start(&op->cs, c, name == NULL ? pipeline_len : 0, NULL, true);
    op->started_us = timed ? vk__now_us() : 0;
    op->client = vk__client_ref(c);
    op->fn = *fn;
    op->userdata = *userdata;
    *fn = observed_complete;
    *userdata = op;
    return true;
}

void vk__command_observe_unwrap(vk_async_fn fn, void *userdata, vk_status st)
{
    if (fn != observed_complete)
        return;
    observed_op *op = userdata;
    vk__command_span_end(&op->cs, st);
    vk__client_unref(op->client);
    free(op);
}
