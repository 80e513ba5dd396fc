/*
 * The retry policy of one command (retry.c), shared by the
 * standalone/Sentinel command path and the cluster router. Whether a
 * command only reads comes with its descriptor (command.c).
 */
#ifndef VK_RETRY_H
#define VK_RETRY_H

#include "engine/conn.h"

/* -LOADING, -TRYAGAIN, -CLUSTERDOWN, -MASTERDOWN: refused without running. */
bool vk__reply_is_refusal(const redisReply *r);
/* Sentinel mode: -READONLY or -MASTERDOWN, an error reply that says the
 * node is not (or no longer) a usable master and did not run the command. */
bool vk__reply_demands_rediscovery(const redisReply *r);
/* Failures that another attempt cannot fix. */
bool vk__status_is_final(vk_status st);
/* Could another attempt of a command that failed with st help, and can
 * it not have run (not fully sent), or is it read-only? */
bool vk__retry_may_resend(vk_status st, bool sent, const vk_command *cmd);
/* Does the retry budget allow one more after `retries` retries? */
bool vk__retry_budget_left(const vk_config *cfg, int retries);
/* Both: may a command that failed with st (after `retries` retries) run again?
 * Only when the retry budget allows, another attempt can help, and the
 * command cannot have run (not fully sent) or is read-only. */
bool vk__retry_after_failure(const vk_config *cfg, int retries, vk_status st, bool sent,
                             const vk_command *cmd);
/* The back-off before retry number attempt (full jitter in
 * [min, min << attempt), capped at max, as go-redis). */
int64_t vk__retry_backoff_ms(const vk_config *cfg, int attempt);

/* The reconnect rate limit (SEMANTICS §2): after k consecutive failed
 * reconnects the next may start only once min(d, 30 s) has passed since
 * the last, d drawn from [0, 500 ms << k). Times are monotonic ms given by
 * the caller. */
typedef struct vk_reconnect_gate {
    int failures;                 /* k: consecutive failed reconnects */
    int64_t last_attempt_ms;      /* time of the last failed attempt */
    int64_t wait_ms;              /* min(d, 30 s) drawn after that failure */
} vk_reconnect_gate;

/* VK_OK when a reconnect may start at now_ms, else
 * VK_ERR_RECONNECT_RATE_LIMITED with "(next attempt in <duration>)". */
vk_status vk__reconnect_gate_check(const vk_reconnect_gate *g, int64_t now_ms);
/* When the next reconnect may start (now_ms or earlier when it may now). */
int64_t vk__reconnect_gate_opens_at(const vk_reconnect_gate *g);
void vk__reconnect_gate_failed(vk_reconnect_gate *g, int64_t now_ms);
static inline void vk__reconnect_gate_passed(vk_reconnect_gate *g)
{
    g->failures = 0;
}

#endif /* VK_RETRY_H */
