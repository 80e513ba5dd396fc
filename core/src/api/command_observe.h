/*
 * What a command tells the host it ran: its latency (the
 * redis_command_duration_seconds histogram) and, with
 * vk_config_set_trace_commands, a "redis.command" span, for the blocking
 * calls and the event-loop operations alike.
 */
#ifndef VK_COMMAND_OBSERVE_H
#define VK_COMMAND_OBSERVE_H

#include "api/client.h"
#include "vkclient_async.h"

/* Reports a command's latency, started_us on the monotonic clock. */
void vk__command_observe_latency(vk_client *c, const char *label, int64_t started_us);

typedef struct vk_command_span {
    vk_span span;
    char operation[VK_COMMAND_LABEL_MAX];
} vk_command_span;

/* Starts the span of a command (name: its first argument) or, with name
 * NULL, of a pipeline of pipeline_len commands; false (no span) unless the
 * client traces commands. */
bool vk__command_span_start(vk_command_span *cs, vk_client *c, const char *name, size_t len,
                            size_t pipeline_len, vk_context *ctx);
void vk__command_span_end(vk_command_span *cs, vk_status st);

/* An event-loop operation: when the client has a metrics sink (a command's
 * latency) or traces commands (its span), replaces *fn and *userdata with
 * a completion that reports them, then calls the caller's; false when
 * there is nothing to observe. name NULL: a pipeline of pipeline_len
 * commands, which has a span but no latency, as in the blocking calls. */
bool vk__command_observe_wrap(vk_client *c, const char *name, size_t len, size_t pipeline_len,
                              vk_async_fn *fn, void **userdata);
/* The operation was refused when submitted (its completion never runs):
 * ends its span with st and frees the wrapper. No-op for a plain fn. */
void vk__command_observe_unwrap(vk_async_fn fn, void *userdata, vk_status st);

#endif /* VK_COMMAND_OBSERVE_H */
