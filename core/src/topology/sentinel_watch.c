/*
 * Following failovers: one background thread per client stays subscribed
 * to +switch-master on one sentinel and hands every announced master to
 * the client at once. It also listens for +promoted-slave: the sentinel
 * that leads a failover names the promoted replica as master as soon as
 * the promotion is confirmed, while +switch-master waits until the other
 * replicas are reconfigured, and meanwhile the old master may still accept
 * writes that the failover will discard. A silent subscription cannot be told from a dead
 * one, so the thread PINGs when nothing arrived for a while and moves to
 * the next sentinel when no answer comes. Each time it (re)subscribes, and
 * periodically, it also asks for the master's address outright: a switch
 * announced while it was not listening is not missed.
 */
#include "topology/sentinel.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define VK_WATCH_PING_EVERY_MS 1000     /* idle time before a PING */
#define VK_WATCH_CHECK_EVERY_MS 30000   /* periodic master check */
#define VK_WATCH_RECHECK_AFTER_MS 1000  /* after a failed switch */
#define VK_WATCH_RETRY_BASE_MS 250      /* back-off after a round of failures */
#define VK_WATCH_RETRY_CAP_MS 5000
#define VK_DRIVEN_CHECK_EVERY_MS 1000   /* driven mode: at most one check per */

struct vk_sentinel_watch {
    vk_sentinel *sentinel;
    vk_follow_master_fn follow;
    void *client;

    /* Guards the thread state below (not the link, which only the thread
     * touches). */
    pthread_mutex_t lock;
    pthread_t thread;
    bool thread_started;
    vk_context *ctx;            /* the thread's; cancelled by stop */

    vk_sentinel_link link;      /* the subscription, kept here for fork */
    bool link_open;
    int64_t last_check_ms;      /* the last outright master check */
};

vk_status vk__sentinel_watch_new(vk_sentinel_watch **out, vk_sentinel *s,
                                 vk_follow_master_fn follow, void *client)
{
    *out = NULL;
    vk_sentinel_watch *w = calloc(1, sizeof *w);
    if (w == NULL)
        return vk__fail_nomem();
    w->sentinel = s;
    w->follow = follow;
    w->client = client;
    w->link.t.fd = -1;
    pthread_mutex_init(&w->lock, NULL);
    *out = w;
    return VK_OK;
}

void vk__sentinel_watch_free(vk_sentinel_watch *w)
{
    if (w == NULL)
        return;
    vk__sentinel_watch_stop(w);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void log_with_sentinel(vk_sentinel_watch *w, vk_log_level level, const char *message,
                              const vk_endpoint *ep, const char *error)
{
    char address[300];
    vk__format_endpoint(address, sizeof address, ep);
    const vk_field fields[] = {{"master", vk__sentinel_master_name(w->sentinel)},
                               {"sentinel", address},
                               {"error", error != NULL ? error : ""}};
    vk__log(vk__sentinel_events(w->sentinel), level, message, fields, error != NULL ? 3 : 2);
}

/* Hands a master address to the client; a failure is logged and the next
 * check comes soon. */
static void follow(vk_sentinel_watch *w, const vk_endpoint *master, const vk_endpoint *via,
                   vk_context *ctx)
{
    if (w->follow(w->client, master, ctx) == VK_OK)
        return;
    if (vk_context_is_cancelled(ctx))
        return;
    char *cause = vk__error_dup();
    log_with_sentinel(w, VK_LOG_WARN, "redis sentinel: connecting to the master failed", via,
                      cause);
    free(cause);
    /* Ask the sentinel again soon, not at once: the master may need a
     * moment, and a tight loop would only flood the log. */
    w->last_check_ms = vk__now_ms() - VK_WATCH_CHECK_EVERY_MS + VK_WATCH_RECHECK_AFTER_MS;
}

/* Asks the sentinel at ep for the master outright (on a second connection:
 * a subscribed one takes no commands) and refreshes the sentinel list. */
static void check_master(vk_sentinel_watch *w, const vk_endpoint *ep, vk_context *ctx)
{
    w->last_check_ms = vk__now_ms();
    vk_sentinel *s = w->sentinel;
    vk_sentinel_link link;
    vk_endpoint master;
    bool known = false;
    vk_status st = vk__sentinel_link_open(&link, ep, vk__sentinel_config(s),
                                          vk__sentinel_tls(s), ctx);
    if (st == VK_OK)
        st = vk__sentinel_ask_master(s, &link, &master, &known, ctx);
    if (st == VK_OK)
        vk__sentinel_refresh_list(s, &link, ctx);
    vk__sentinel_link_close(&link, true);
    if (st == VK_OK && known)
        follow(w, &master, ep, ctx);
    else if (st == VK_OK)
        log_with_sentinel(w, VK_LOG_WARN, "redis sentinel does not know the master", ep, NULL);
}

/* "<name> <old-ip> <old-port> <new-ip> <new-port>" for our name: the new
 * master's endpoint. */
static bool parse_switch(const char *payload, size_t len, const char *name, vk_endpoint *out)
{
    char text[600];
    if (len >= sizeof text)
        return false;
    memcpy(text, payload, len);
    text[len] = '\0';
    char *words[5];
    char *save = NULL;
    int n = 0;
    for (char *word = strtok_r(text, " ", &save); word != NULL && n < 5;
         word = strtok_r(NULL, " ", &save))
        words[n++] = word;
    if (n != 5 || strcmp(words[0], name) != 0)
        return false;
    memset(out, 0, sizeof *out);
    size_t host_len = strlen(words[3]);
    char *end = NULL;
    long port = strtol(words[4], &end, 10);
    if (host_len == 0 || host_len >= sizeof out->host || *end != '\0' || port <= 0 ||
        port > 65535)
        return false;
    memcpy(out->host, words[3], host_len + 1);
    out->port = (int)port;
    return true;
}

static bool is_text(const redisReply *r, const char *text)
{
    return (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           r->len == strlen(text) && strncasecmp(r->str, text, r->len) == 0;
}

/* "slave <ip>:<port> <ip> <port> @ <name> <ip> <port>": true when the
 * promoted replica belongs to our master. */
static bool is_our_promotion(const char *payload, size_t len, const char *name)
{
    const char *at = memchr(payload, '@', len);
    if (at == NULL)
        return false;
    size_t rest = len - (size_t)(at - payload);
    size_t name_len = strlen(name);
    return rest > name_len + 2 && at[1] == ' ' && memcmp(at + 2, name, name_len) == 0 &&
           at[2 + name_len] == ' ';
}

vk_sentinel_news vk__sentinel_read_news(const redisReply *r, const char *name,
                                        vk_endpoint *master)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        return VK_SENTINEL_NEWS_NONE;
    if (is_text(r->element[0], "pong"))
        return VK_SENTINEL_NEWS_PONG;
    if (r->elements != 3 || !is_text(r->element[0], "message") ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return VK_SENTINEL_NEWS_NONE;
    const redisReply *payload = r->element[2];
    if (is_text(r->element[1], VK_SENTINEL_PROMOTED_CHANNEL))
        return is_our_promotion(payload->str, payload->len, name) ? VK_SENTINEL_NEWS_PROMOTED
                                                                  : VK_SENTINEL_NEWS_NONE;
    if (is_text(r->element[1], VK_SENTINEL_SWITCH_CHANNEL) &&
        parse_switch(payload->str, payload->len, name, master))
        return VK_SENTINEL_NEWS_SWITCHED;
    return VK_SENTINEL_NEWS_NONE;
}

void vk__sentinel_log_announced(vk_sentinel *s, const vk_endpoint *master,
                                const vk_endpoint *via)
{
    char to[300], from[300];
    vk__format_endpoint(to, sizeof to, master);
    vk__format_endpoint(from, sizeof from, via);
    const vk_field fields[] = {
        {"master", vk__sentinel_master_name(s)}, {"address", to}, {"sentinel", from}};
    vk__log(vk__sentinel_events(s), VK_LOG_INFO, "redis sentinel announced a new master",
            fields, 3);
}

/* One pub/sub message: a +switch-master to follow, a promotion to check,
 * a pong, or anything else (ignored). *pong is set for a pong. */
static void handle_message(vk_sentinel_watch *w, const redisReply *r, const vk_endpoint *via,
                           bool *pong, vk_context *ctx)
{
    vk_endpoint master;
    switch (vk__sentinel_read_news(r, vk__sentinel_master_name(w->sentinel), &master)) {
    case VK_SENTINEL_NEWS_PONG:
        *pong = true;
        break;
    case VK_SENTINEL_NEWS_PROMOTED:
        check_master(w, via, ctx);   /* the sentinel names the promoted node now */
        break;
    case VK_SENTINEL_NEWS_SWITCHED:
        vk__sentinel_log_announced(w->sentinel, &master, via);
        follow(w, &master, via, ctx);
        break;
    case VK_SENTINEL_NEWS_NONE:
        break;
    }
}

static vk_status subscribe(vk_sentinel_watch *w, const vk_endpoint *ep, vk_context *ctx)
{
    vk_sentinel *s = w->sentinel;
    vk_status st = vk__sentinel_link_open(&w->link, ep, vk__sentinel_config(s),
                                          vk__sentinel_tls(s), ctx);
    if (st != VK_OK)
        return st;
    w->link_open = true;
    const char *argv[] = {"SUBSCRIBE", VK_SENTINEL_SWITCH_CHANNEL, VK_SENTINEL_PROMOTED_CHANNEL};
    st = vk__sentinel_link_send(&w->link, 3, argv, ctx);
    /* One confirmation per channel. */
    for (int i = 0; i < 2 && st == VK_OK; i++) {
        redisReply *r = NULL;
        if ((st = vk__sentinel_link_read(&w->link, &r, ctx)) != VK_OK)
            break;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
            !is_text(r->element[0], "subscribe"))
            st = r->type == REDIS_REPLY_ERROR
                     ? vk__fail(VK_ERR_SERVER, "sentinel %s: %.*s", w->link.t.peer,
                                (int)r->len, r->str)
                     : vk__fail(VK_ERR_PROTOCOL, "sentinel %s: unexpected reply to SUBSCRIBE",
                                w->link.t.peer);
        vk__reply_free(r);
    }
    return st;
}

/* Listens on the sentinel at ep until the subscription fails or ctx is
 * cancelled; returns why. */
static vk_status listen_on(vk_sentinel_watch *w, const vk_endpoint *ep, vk_context *ctx)
{
    vk_status st = subscribe(w, ep, ctx);
    if (st != VK_OK)
        return st;
    check_master(w, ep, ctx);
    const vk_config *cfg = vk__sentinel_config(w->sentinel);
    int64_t ping_sent_ms = 0;   /* 0: no PING outstanding */
    for (;;) {
        int64_t now = vk__now_ms();
        if (now - w->last_check_ms >= VK_WATCH_CHECK_EVERY_MS)
            check_master(w, ep, ctx);
        int64_t wait_ms = ping_sent_ms ? ping_sent_ms + cfg->read_timeout_ms - now
                                       : VK_WATCH_PING_EVERY_MS;
        /* At least one look at the socket: a pong may have arrived while a
         * master check took the time. */
        if (wait_ms < 1)
            wait_ms = 1;
        vk__error_clear();
        st = vk__sentinel_link_wait(&w->link, vk__now_us() + wait_ms * 1000, ctx);
        if (st == VK_ERR_TIMEOUT && ping_sent_ms)
            return vk__fail(VK_ERR_TIMEOUT, "sentinel %s did not answer PING", w->link.t.peer);
        if (st == VK_ERR_TIMEOUT) {
            const char *argv[] = {"PING"};
            if ((st = vk__sentinel_link_send(&w->link, 1, argv, ctx)) != VK_OK)
                return st;
            ping_sent_ms = vk__now_ms();
            continue;
        }
        if (st != VK_OK)
            return st;
        redisReply *r = NULL;
        if ((st = vk__sentinel_link_read(&w->link, &r, ctx)) != VK_OK)
            return st;
        bool pong = false;
        handle_message(w, r, ep, &pong, ctx);
        vk__reply_free(r);
        if (pong)
            ping_sent_ms = 0;
    }
}

static void close_link(vk_sentinel_watch *w)
{
    if (w->link_open)
        vk__sentinel_link_close(&w->link, true);
    w->link_open = false;
}

static void *watch_loop(void *arg)
{
    vk_sentinel_watch *w = arg;
    vk_context *ctx = w->ctx;
    vk__events_enter_background();
    size_t index = 0;
    int failed_rounds = 0;
    while (!vk_context_is_cancelled(ctx)) {
        vk_endpoint ep;
        if (!vk__sentinel_address(w->sentinel, index, &ep)) {
            /* Every sentinel failed once: wait, with jitter, then again. */
            index = 0;
            int shift = failed_rounds < 5 ? failed_rounds : 5;
            failed_rounds++;
            int64_t d = VK_WATCH_RETRY_BASE_MS +
                        vk__jitter((int64_t)VK_WATCH_RETRY_BASE_MS << shift);
            vk__ctx_sleep_ms(ctx, d < VK_WATCH_RETRY_CAP_MS ? d : VK_WATCH_RETRY_CAP_MS);
            continue;
        }
        int64_t started = vk__now_ms();
        vk_status st = listen_on(w, &ep, ctx);
        char *cause = st != VK_OK ? vk__error_dup() : NULL;
        close_link(w);
        if (vk_context_is_cancelled(ctx)) {
            free(cause);
            break;
        }
        log_with_sentinel(w, VK_LOG_WARN, "redis sentinel subscription failed", &ep, cause);
        free(cause);
        /* A subscription that lasted a while was a success: start over. */
        if (vk__now_ms() - started > VK_WATCH_CHECK_EVERY_MS)
            failed_rounds = 0;
        index++;
    }
    return NULL;
}

vk_status vk__sentinel_watch_start(vk_sentinel_watch *w)
{
    pthread_mutex_lock(&w->lock);
    vk_status st = VK_OK;
    if (!w->thread_started) {
        st = vk_context_new(&w->ctx);
        if (st == VK_OK) {
            w->last_check_ms = 0;
            int rc = pthread_create(&w->thread, NULL, watch_loop, w);
            if (rc == 0) {
                w->thread_started = true;
            } else {
                vk_context_free(w->ctx);
                w->ctx = NULL;
                st = vk__fail(VK_ERR_IO, "starting the sentinel watcher failed (error %d)", rc);
            }
        }
    }
    pthread_mutex_unlock(&w->lock);
    return st;
}

void vk__sentinel_watch_stop(vk_sentinel_watch *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    if (!w->thread_started) {
        pthread_mutex_unlock(&w->lock);
        return;
    }
    vk_context_cancel(w->ctx);
    pthread_t thread = w->thread;
    pthread_mutex_unlock(&w->lock);
    pthread_join(thread, NULL);
    pthread_mutex_lock(&w->lock);
    w->thread_started = false;
    vk_context_free(w->ctx);
    w->ctx = NULL;
    pthread_mutex_unlock(&w->lock);
}

bool vk__sentinel_watch_running(vk_sentinel_watch *w)
{
    pthread_mutex_lock(&w->lock);
    bool running = w->thread_started;
    pthread_mutex_unlock(&w->lock);
    return running;
}

void vk__sentinel_watch_after_fork(vk_sentinel_watch *w)
{
    if (w == NULL)
        return;
    /* The parent's thread does not exist here and may have held the lock
     * at fork time: re-initialise rather than take it. The subscription's
     * socket (and TLS session) belongs to the parent: close our copy of
     * the fd without a byte on the wire. */
    pthread_mutex_init(&w->lock, NULL);
    if (w->link_open)
        vk__sentinel_link_close(&w->link, false);
    w->link_open = false;
    if (w->ctx != NULL)
        vk_context_free(w->ctx);
    w->ctx = NULL;
    w->thread_started = false;
}

vk_status vk__sentinel_watch_tick(vk_sentinel_watch *w, vk_context *ctx)
{
    int64_t now = vk__now_ms();
    if (w->last_check_ms != 0 && now - w->last_check_ms < VK_DRIVEN_CHECK_EVERY_MS)
        return VK_OK;
    w->last_check_ms = now;
    vk_endpoint master;
    vk_status st = vk__sentinel_discover(w->sentinel, &master, ctx);
    if (st == VK_OK)
        st = w->follow(w->client, &master, ctx);
    return st;
}
