/*
 * The retry policy of one command, shared by the standalone/Sentinel path
 * (client_command.c) and the cluster router (cluster.c): which failures
 * another attempt may fix, which replies are refusals, and the back-off
 * between attempts. See the comment above vk_client_command() in
 * vkclient.h for the rules as users see them.
 */
#include "engine/retry.h"

#include <string.h>

/* Error replies with which the server refuses a command without running
 * it: retrying is always safe. */
bool vk__reply_demands_rediscovery(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR &&
           ((r->len >= 8 && memcmp(r->str, "READONLY", 8) == 0) ||
            (r->len >= 10 && memcmp(r->str, "MASTERDOWN", 10) == 0));
}

bool vk__reply_is_refusal(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ERROR)
        return false;
    static const struct { const char *prefix; size_t len; } refusals[] = {
        {"LOADING", 7}, {"TRYAGAIN", 8}, {"CLUSTERDOWN", 11}, {"MASTERDOWN", 10},
    };
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        if (r->len >= refusals[i].len &&
            memcmp(r->str, refusals[i].prefix, refusals[i].len) == 0)
            return true;
    }
    return false;
}

bool vk__status_is_final(vk_status st)
{
    return st == VK_ERR_CANCELLED || st == VK_ERR_RECONNECT_RATE_LIMITED ||
           st == VK_ERR_NO_MEMORY || st == VK_ERR_INVALID_ARGUMENT ||
           st == VK_ERR_INVALID_CONFIG || st == VK_ERR_NIL_CLIENT ||
           st == VK_ERR_COMMAND_NOT_ALLOWED;
}

bool vk__retry_may_resend(vk_status st, bool sent, const vk_command *cmd)
{
    return !vk__status_is_final(st) && (!sent || (cmd->flags & VK_COMMAND_READONLY) != 0);
}

bool vk__retry_budget_left(const vk_config *cfg, int retries)
{
    return retries < (cfg->max_retries > 0 ? cfg->max_retries : 0);
}

bool vk__retry_after_failure(const vk_config *cfg, int retries, vk_status st, bool sent,
                             const vk_command *cmd)
{
    return vk__retry_budget_left(cfg, retries) && vk__retry_may_resend(st, sent, cmd);
}

int64_t vk__retry_backoff_ms(const vk_config *cfg, int attempt)
{
    int64_t lo = cfg->min_retry_backoff_ms;
    int64_t hi = cfg->max_retry_backoff_ms;
    int shift = attempt < 30 ? attempt : 30;
    int64_t span = lo << shift;
    if (span <= 0 || span < lo)
        return hi;
    int64_t d = lo + vk__jitter(span);
    return d > hi || d < lo ? hi : d;
}

#define VK_RECONNECT_BASE_MS 500
#define VK_RECONNECT_CAP_MS 30000

vk_status vk__reconnect_gate_check(const vk_reconnect_gate *g, int64_t now_ms)
{
    if (g->failures == 0)
        return VK_OK;
    int64_t elapsed = now_ms - g->last_attempt_ms;
    if (elapsed >= g->wait_ms)
        return VK_OK;
    char remaining[32];
    vk__format_duration_ms(remaining, sizeof remaining, g->wait_ms - elapsed);
    return vk__fail_msg(VK_ERR_RECONNECT_RATE_LIMITED,
                        "redis reconnect: rate-limited (next attempt in %s)", remaining);
}

int64_t vk__reconnect_gate_opens_at(const vk_reconnect_gate *g)
{
    return g->failures == 0 ? INT64_MIN : g->last_attempt_ms + g->wait_ms;
}

void vk__reconnect_gate_failed(vk_reconnect_gate *g, int64_t now_ms)
{
    int k = ++g->failures;
    int shift = k < 20 ? k : 20;
    int64_t d = vk__jitter((int64_t)VK_RECONNECT_BASE_MS << shift);
    g->wait_ms = d < VK_RECONNECT_CAP_MS ? d : VK_RECONNECT_CAP_MS;
    g->last_attempt_ms = now_ms;
}
