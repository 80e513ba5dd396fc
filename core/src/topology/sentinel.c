/*
 * The sentinels of one master group: the list (the configured addresses
 * plus those the sentinels report about each other) and master discovery.
 * As in go-redis, the sentinel that answered last is asked first next
 * time, so a dead sentinel costs one dial timeout once, not on every
 * discovery.
 */
#include "topology/sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vk_sentinel {
    const vk_config *cfg;       /* the client's prepared config (borrowed) */
    vk_tls *tls;                /* borrowed, NULL: plain */
    vk_events *events;          /* borrowed */

    /* Guards the list: discovery runs on command threads and the watcher
     * at the same time. Never held across I/O. */
    pthread_mutex_t lock;
    vk_endpoint *list;
    size_t count, cap;
};

/* Appends ep unless it is known; the caller holds the lock. */
static bool add_locked(vk_sentinel *s, const vk_endpoint *ep)
{
    for (size_t i = 0; i < s->count; i++) {
        if (vk__endpoint_equal(&s->list[i], ep))
            return true;
    }
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        vk_endpoint *grown = realloc(s->list, cap * sizeof *grown);
        if (grown == NULL)
            return false;
        s->list = grown;
        s->cap = cap;
    }
    s->list[s->count++] = *ep;
    return true;
}

vk_status vk__sentinel_new(vk_sentinel **out, const vk_config *cfg, vk_tls *tls,
                           vk_events *ev)
{
    *out = NULL;
    vk_sentinel *s = calloc(1, sizeof *s);
    if (s == NULL)
        return vk__fail_nomem();
    s->cfg = cfg;
    s->tls = tls;
    s->events = ev;
    pthread_mutex_init(&s->lock, NULL);
    for (size_t i = 0; i < cfg->sentinel_addresses.count; i++) {
        vk_endpoint ep;
        vk_status st = vk__parse_address(&ep, cfg->sentinel_addresses.items[i]);
        if (st == VK_OK && !add_locked(s, &ep))
            st = vk__fail_nomem();
        if (st != VK_OK) {
            vk__sentinel_free(s);
            return st;
        }
    }
    *out = s;
    return VK_OK;
}

void vk__sentinel_free(vk_sentinel *s)
{
    if (s == NULL)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s->list);
    free(s);
}

bool vk__sentinel_address(vk_sentinel *s, size_t i, vk_endpoint *out)
{
    pthread_mutex_lock(&s->lock);
    bool found = i < s->count;
    if (found)
        *out = s->list[i];
    pthread_mutex_unlock(&s->lock);
    return found;
}

const char *vk__sentinel_master_name(const vk_sentinel *s)
{
    return s->cfg->sentinel_master;
}

const vk_config *vk__sentinel_config(const vk_sentinel *s)
{
    return s->cfg;
}

vk_tls *vk__sentinel_tls(const vk_sentinel *s)
{
    return s->tls;
}

vk_events *vk__sentinel_events(const vk_sentinel *s)
{
    return s->events;
}

void vk__sentinel_promote(vk_sentinel *s, const vk_endpoint *ep)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 1; i < s->count; i++) {
        if (vk__endpoint_equal(&s->list[i], ep)) {
            vk_endpoint found = s->list[i];
            memmove(&s->list[1], &s->list[0], i * sizeof *s->list);
            s->list[0] = found;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* A TCP endpoint from an "ip" and "port" as sentinels report them. */
static bool endpoint_from(vk_endpoint *out, const char *ip, size_t ip_len, const char *port)
{
    memset(out, 0, sizeof *out);
    char *end = NULL;
    long p = strtol(port, &end, 10);
    if (ip_len == 0 || ip_len >= sizeof out->host || end == port || *end != '\0' || p <= 0 ||
        p > 65535)
        return false;
    memcpy(out->host, ip, ip_len);
    out->host[ip_len] = '\0';
    out->port = (int)p;
    return true;
}

static bool is_string(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

void vk__sentinel_query(const vk_sentinel *s, const char *what, const char *argv[3])
{
    argv[0] = "SENTINEL";
    argv[1] = what;
    argv[2] = s->cfg->sentinel_master;
}

vk_status vk__sentinel_read_master(const char *peer, const redisReply *r, vk_endpoint *out,
                                   bool *known)
{
    *known = false;
    if (r->type == REDIS_REPLY_NIL)
        return VK_OK;   /* this sentinel does not monitor that name */
    if (r->type == REDIS_REPLY_ERROR)
        return vk__fail(VK_ERR_SERVER, "sentinel %s: %.*s", peer, (int)r->len, r->str);
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && is_string(r->element[0]) &&
        is_string(r->element[1]) &&
        endpoint_from(out, r->element[0]->str, r->element[0]->len, r->element[1]->str)) {
        *known = true;
        return VK_OK;
    }
    return vk__fail(VK_ERR_PROTOCOL, "sentinel %s: unexpected reply to " VK_SENTINEL_ASK_MASTER,
                    peer);
}

vk_status vk__sentinel_ask_master(vk_sentinel *s, vk_sentinel_link *link, vk_endpoint *out,
                                  bool *known, vk_context *ctx)
{
    *known = false;
    const char *argv[3];
    vk__sentinel_query(s, VK_SENTINEL_ASK_MASTER, argv);
    redisReply *r = NULL;
    vk_status st = vk__sentinel_link_command(link, &r, 3, argv, ctx);
    if (st != VK_OK)
        return st;
    st = vk__sentinel_read_master(link->t.peer, r, out, known);
    vk__reply_free(r);
    return st;
}

/* One entry of SENTINEL SENTINELS: a flat array of field names and values. */
static bool entry_endpoint(const redisReply *entry, vk_endpoint *out)
{
    const redisReply *ip = NULL, *port = NULL;
    if (entry->type != REDIS_REPLY_ARRAY)
        return false;
    for (size_t i = 0; i + 1 < entry->elements; i += 2) {
        const redisReply *k = entry->element[i], *v = entry->element[i + 1];
        if (!is_string(k) || !is_string(v))
            continue;
        if (strcmp(k->str, "ip") == 0)
            ip = v;
        else if (strcmp(k->str, "port") == 0)
            port = v;
    }
    return ip != NULL && port != NULL && endpoint_from(out, ip->str, ip->len, port->str);
}

void vk__sentinel_refresh_list(vk_sentinel *s, vk_sentinel_link *link, vk_context *ctx)
{
    const char *argv[3];
    vk__sentinel_query(s, VK_SENTINEL_LIST, argv);
    redisReply *r = NULL;
    if (vk__sentinel_link_command(link, &r, 3, argv, ctx) != VK_OK)
        return;   /* the list stays as it was; the next discovery tries again */
    vk__sentinel_merge_list(s, r);
    vk__reply_free(r);
}

void vk__sentinel_merge_list(vk_sentinel *s, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            vk_endpoint ep;
            if (!entry_endpoint(r->element[i], &ep))
                continue;
            pthread_mutex_lock(&s->lock);
            size_t before = s->count;
            bool ok = add_locked(s, &ep);
            bool added = ok && s->count > before;
            pthread_mutex_unlock(&s->lock);
            if (added) {
                char address[300];
                vk__format_endpoint(address, sizeof address, &ep);
                const vk_field fields[] = {{"sentinel", address}};
                vk__log(s->events, VK_LOG_INFO, "redis sentinel discovered", fields, 1);
            }
        }
    }
}

void vk__sentinel_warn_failure(vk_sentinel *s, const vk_endpoint *ep, const char *cause)
{
    char address[300];
    vk__format_endpoint(address, sizeof address, ep);
    const vk_field fields[] = {{"sentinel", address}, {"error", cause != NULL ? cause : ""}};
    vk__log(s->events, VK_LOG_WARN, "redis sentinel query failed", fields, 2);
}

vk_status vk__sentinel_discover(vk_sentinel *s, vk_endpoint *out, vk_context *ctx)
{
    bool answered = false;
    char *last_cause = NULL;
    vk_endpoint ep;
    for (size_t i = 0; vk__sentinel_address(s, i, &ep); i++) {
        vk_sentinel_link link;
        bool known = false;
        vk_status st = vk__sentinel_link_open(&link, &ep, s->cfg, s->tls, ctx);
        if (st == VK_OK)
            st = vk__sentinel_ask_master(s, &link, out, &known, ctx);
        if (st == VK_OK && known) {
            vk__sentinel_refresh_list(s, &link, ctx);
            vk__sentinel_link_close(&link, true);
            vk__sentinel_promote(s, &ep);
            free(last_cause);
            return VK_OK;
        }
        vk__sentinel_link_close(&link, true);
        if (st == VK_ERR_CANCELLED || vk__ctx_check(ctx) != VK_OK) {
            free(last_cause);
            return st != VK_OK ? st : vk__ctx_check(ctx);
        }
        if (st == VK_OK) {
            answered = true;
            continue;
        }
        free(last_cause);
        last_cause = vk__error_dup();
        vk__sentinel_warn_failure(s, &ep, last_cause);
    }
    vk_status st = vk__sentinel_gave_up(s, answered, last_cause);
    free(last_cause);
    return st;
}

vk_status vk__sentinel_gave_up(const vk_sentinel *s, bool answered, const char *last_cause)
{
    if (answered)
        return vk__fail_msg(VK_ERR_SERVER,
                            "redis sentinel: master \"%s\" is unknown to every reachable sentinel",
                            s->cfg->sentinel_master);
    return vk__fail_msg(VK_ERR_IO, "redis sentinel: all sentinels are unreachable: %s",
                        last_cause != NULL ? last_cause : "no sentinel address");
}
