/*
 * What the blocking router (cluster.c, cluster_pipeline.c) and the one
 * without I/O (cluster_router.c) decide alike: redirects and the map they
 * patch, refusals and how long they are retried, connection failures,
 * the slot map's request and its failures, and the counters.
 */
#include "topology/cluster.h"
#include "engine/retry.h"

#include <stdlib.h>
#include <string.h>

/* MOVED / ASK hops one command may follow: a resharding settles within a
 * few; more means the nodes disagree and the caller should see the reply. */
#define VK_CLUSTER_MAX_REDIRECTS 16
/* How long a command refused with TRYAGAIN, CLUSTERDOWN, LOADING or
 * MASTERDOWN is retried (unless its context ends first), and the longest
 * pause between two tries. A refused command did not run, so retrying is
 * always safe, and what bounds it is time rather than a count: a multi-key
 * command on a migrating slot is refused until every key it names is on
 * one side (one that creates keys, until the migration ends), which lasts
 * as long as MIGRATE takes to move the slot's keys: tens of milliseconds
 * to seconds. go-redis retries these replies within MaxRedirects (3 tries,
 * 8-512 ms back-off) and redis-py within its 16-hop TTL (50 ms pauses in
 * its second half; 250 ms after CLUSTERDOWN, 3 times): both give up within
 * about a second, which a migration under load can outlast. The pauses
 * grow from min_retry_backoff to the cap, so a waiting caller tries about
 * 10 times a second and goes on within ~100 ms of the slot settling. */
#define VK_CLUSTER_REFUSED_WAIT_MS 5000
#define VK_CLUSTER_REFUSED_PAUSE_MS 100
/* After a node failed, the next reload is due within this. */
#define VK_CLUSTER_FAILED_RELOAD_MS 250

/* ---- redirects ---------------------------------------------------------------------- */

static bool has_prefix(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->type == REDIS_REPLY_ERROR && r->len >= n && memcmp(r->str, prefix, n) == 0;
}

bool vk__cluster_parse_redirect(const redisReply *r, const vk_endpoint *from,
                                vk_cluster_redirect *out)
{
    size_t skip;
    if (has_prefix(r, "MOVED "))
        out->ask = false, skip = 6;
    else if (has_prefix(r, "ASK "))
        out->ask = true, skip = 4;
    else
        return false;
    char text[320];
    size_t n = r->len - skip < sizeof text - 1 ? r->len - skip : sizeof text - 1;
    memcpy(text, r->str + skip, n);
    text[n] = '\0';
    char *space = strchr(text, ' ');
    char *colon = strrchr(text, ':');
    if (space == NULL || colon == NULL || colon < space)
        return false;
    *space = *colon = '\0';
    char *end;
    long slot = strtol(text, &end, 10);
    long port = strtol(colon + 1, NULL, 10);
    if (*end != '\0' || slot < 0 || slot >= VK_CLUSTER_SLOTS || port <= 0 || port > 65535)
        return false;
    const char *host = space + 1;
    if (*host == '\0')
        host = from->host;
    memset(&out->target, 0, sizeof out->target);
    if (strlen(host) >= sizeof out->target.host)
        return false;
    strcpy(out->target.host, host);
    out->target.port = (int)port;
    out->slot = (int)slot;
    return true;
}

vk_slot_map *vk__slot_map_moved(const vk_slot_map *m, const vk_cluster_redirect *rd)
{
    int owner = m->owner[rd->slot] - 1;
    if (owner >= 0 && vk__endpoint_equal(&m->nodes[owner].endpoint, &rd->target))
        return NULL;
    vk_slot_map *patched = vk__slot_map_copy(m);
    if (patched == NULL)
        return NULL;
    int node = vk__slot_map_node(patched, &rd->target);
    if (node < 0) {
        vk__slot_map_unref(patched);
        return NULL;
    }
    patched->owner[rd->slot] = (uint16_t)(node + 1);
    return patched;
}

vk_status vk__slot_map_masters(const vk_slot_map *m, vk_cluster_stats *out)
{
    out->masters = 0;
    out->master = NULL;
    if (m == NULL)
        return VK_OK;
    /* A node that serves no slot (one only seen in a redirect) is not a
     * master of this map. */
    int *slots = calloc(m->node_count, sizeof *slots);
    vk_cluster_master *masters = calloc(m->node_count, sizeof *masters);
    if (slots == NULL || masters == NULL) {
        free(slots);
        free(masters);
        return vk__fail_nomem();
    }
    for (int slot = 0; slot < VK_CLUSTER_SLOTS; slot++)
        if (m->owner[slot] != 0)
            slots[m->owner[slot] - 1]++;
    for (size_t i = 0; i < m->node_count; i++) {
        if (slots[i] == 0)
            continue;
        vk__format_endpoint(masters[out->masters].address,
                            sizeof masters[out->masters].address, &m->nodes[i].endpoint);
        masters[out->masters++].slots = slots[i];
    }
    free(slots);
    if (out->masters == 0)
        free(masters);
    else
        out->master = masters;
    return VK_OK;
}

/* ---- the slot map's request ------------------------------------------------------------- */

void vk__cluster_map_request(vk_command *cmd, bool shards)
{
    static const char *const shards_argv[] = {"CLUSTER", "SHARDS"};
    static const char *const slots_argv[] = {"CLUSTER", "SLOTS"};
    static const size_t shards_lens[] = {7, 6};
    static const size_t slots_lens[] = {7, 5};
    vk__command_internal(cmd, 2, shards ? shards_argv : slots_argv,
                         shards ? shards_lens : slots_lens);
}

vk_status vk__cluster_map_from_reply(vk_slot_map **out, const redisReply *r, bool shards,
                                     const vk_endpoint *from, bool tls,
                                     const vk_slot_map *previous)
{
    *out = NULL;
    char address[300];
    vk__format_endpoint(address, sizeof address, from);
    if (r->type == REDIS_REPLY_ERROR)
        return vk__fail_msg(VK_ERR_SERVER, "redis cluster: %s refused CLUSTER SLOTS: %.*s",
                            address, (int)r->len, r->str);
    vk_status st = vk__slot_map_parse(out, r, shards, from, tls, previous);
    if (st == VK_OK && vk__slot_map_covered(*out) == 0) {
        vk__slot_map_unref(*out);
        *out = NULL;
        st = vk__fail_msg(VK_ERR_SERVER, "redis cluster: %s reports no served slots", address);
    }
    return st;
}

vk_status vk__cluster_fail_unreachable(void)
{
    char *cause = vk__error_dup();
    vk_status st = vk__fail_msg(VK_ERR_IO, "redis cluster: all nodes are unreachable: %s",
                                cause != NULL ? cause : vk_strerror(VK_ERR_IO));
    free(cause);
    return st;
}

vk_status vk__cluster_fail_crossslot(void)
{
    return vk__fail(VK_ERR_INVALID_ARGUMENT,
                    "CROSSSLOT keys in request don't hash to the same slot");
}

vk_status vk__cluster_getkeys_command(const vk_command *cmd, vk_command *out, void **mem)
{
    int argc = cmd->argc + 2;
    /* One block: the argument pointers, then their lengths. */
    char *block = malloc((size_t)argc * (sizeof(const char *) + sizeof(size_t)));
    if (block == NULL)
        return vk__fail_nomem();
    const char **args = (const char **)(void *)block;
    size_t *lens = (size_t *)(void *)(block + (size_t)argc * sizeof(const char *));
    args[0] = "COMMAND", lens[0] = 7;
    args[1] = "GETKEYS", lens[1] = 7;
    memcpy(args + 2, cmd->argv, (size_t)cmd->argc * sizeof *args);
    memcpy(lens + 2, cmd->argvlen, (size_t)cmd->argc * sizeof *lens);
    vk__command_internal(out, argc, args, lens);
    *mem = block;
    return VK_OK;
}

/* ---- counters ---------------------------------------------------------------------------- */

void vk__cluster_count(vk_events *events, const char *name, const char *type)
{
    if (!vk__events_has_metrics(events))
        return;
    const vk_field label[] = {{"type", type}};
    vk__metric(events, name, VK_METRIC_COUNTER, 1, label, type != NULL ? 1 : 0);
}

void vk__cluster_count_refusal(vk_events *events, const redisReply *r)
{
    char type[16];
    size_t n = 0;
    while (n < r->len && n < sizeof type - 1 && r->str[n] != ' ') {
        char ch = r->str[n];
        type[n++] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    type[n] = '\0';
    vk__cluster_count(events, "redis_cluster_refusals_total", type);
}

/* ---- what follows an attempt ------------------------------------------------------------- */

vk_cluster_step vk__cluster_after_reply(const vk_config *cfg, vk_events *events,
                                        vk_cluster_tries *t, const redisReply *r,
                                        const vk_endpoint *from, int64_t now_ms,
                                        vk_cluster_next *next)
{
    if (VK_UNLIKELY(r->type == REDIS_REPLY_ERROR) && t->redirects < VK_CLUSTER_MAX_REDIRECTS &&
        vk__cluster_parse_redirect(r, from, &next->redirect)) {
        t->redirects++;
        vk__cluster_count(events, "redis_cluster_redirects_total",
                          next->redirect.ask ? "ask" : "moved");
        return VK_CLUSTER_FOLLOW;   /* the command did not run: follow at once */
    }
    if (VK_LIKELY(!vk__reply_is_refusal(r)))
        return VK_CLUSTER_ANSWER;
    vk__cluster_count_refusal(events, r);
    if (*t->refused_until == 0)
        *t->refused_until = now_ms + VK_CLUSTER_REFUSED_WAIT_MS;
    /* max_retries -1 turns these retries off too; otherwise the time bound
     * applies, whatever max_retries says. */
    if (cfg->max_retries < 0 || now_ms >= *t->refused_until)
        return VK_CLUSTER_ANSWER;
    int64_t pause = vk__retry_backoff_ms(cfg, t->refusals++);
    if (pause > VK_CLUSTER_REFUSED_PAUSE_MS)
        pause = VK_CLUSTER_REFUSED_PAUSE_MS;
    int64_t left = *t->refused_until - now_ms;
    next->pause_ms = pause < left ? pause : left;
    /* During a migration a command may go ASK, TRYAGAIN, ASK, ... for as
     * long as the time bound allows: the hop limit is for redirects
     * without a refusal in between. */
    t->redirects = 0;
    next->reload = has_prefix(r, "CLUSTERDOWN");
    return VK_CLUSTER_AGAIN;
}

vk_cluster_step vk__cluster_after_failure(const vk_config *cfg, vk_cluster_tries *t,
                                          bool may_resend, vk_cluster_next *next)
{
    if (!may_resend || !vk__retry_budget_left(cfg, t->retries))
        return VK_CLUSTER_ANSWER;
    next->pause_ms = vk__retry_backoff_ms(cfg, t->retries++);
    /* A node failed: the map may be out of date. */
    next->reload = true;
    return VK_CLUSTER_AGAIN;
}

int64_t vk__cluster_reload_due_after(vk_status st, int64_t refreshed_ms, int64_t now_ms)
{
    if (st != VK_ERR_IO && st != VK_ERR_TIMEOUT && st != VK_ERR_RECONNECT_RATE_LIMITED)
        return refreshed_ms;
    int64_t due_soon = now_ms - VK_CLUSTER_REFRESH_EVERY_MS + VK_CLUSTER_FAILED_RELOAD_MS;
    return refreshed_ms < due_soon ? refreshed_ms : due_soon;
}
