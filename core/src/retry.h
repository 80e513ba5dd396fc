/*
 * The retry policy of one command (retry.c), shared by the
 * standalone/Sentinel command path and the cluster router. Whether a
 * command only reads comes with its descriptor (command.c).
 */
#ifndef VK_RETRY_H
#define VK_RETRY_H

#include "conn.h"

/* -LOADING, -TRYAGAIN, -CLUSTERDOWN, -MASTERDOWN: refused without running. */
bool vk__reply_is_refusal(const redisReply *r);
/* Failures that another attempt cannot fix. */
bool vk__status_is_final(vk_status st);
/* May a command that failed with st (after `retries` retries) run again?
 * Only when the retry budget allows, another attempt can help, and the
 * command cannot have run (not fully sent) or is read-only. */
bool vk__retry_after_failure(const vk_config *cfg, int retries, vk_status st, bool sent,
                             const vk_command *cmd);
/* The back-off before retry number attempt (full jitter in
 * [min, min << attempt), capped at max, as go-redis). */
int64_t vk__retry_backoff_ms(const vk_config *cfg, int attempt);

#endif /* VK_RETRY_H */
