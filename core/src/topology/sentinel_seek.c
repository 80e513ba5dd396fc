/*
 * The walk over the sentinels on probes (sentinel_seek.h). One probe at a
 * time, one request at a time on it: GET-MASTER-ADDR-BY-NAME, then, from
 * the sentinel that named the master, SENTINELS. That sentinel's probe is
 * kept open: it is asked first next time (checks come every second), and
 * a kept probe that has died meanwhile is replaced by a new one to the
 * same sentinel before the walk moves on.
 */
#include "topology/sentinel_seek.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vk_seek {
    vk_sentinel *sentinels;       /* borrowed */
    vk_seek_driver drv;
    /* The probes' settings: the client's, with the sentinels' credentials,
     * no database, RESP2, and no retry (the walk moves on instead). */
    vk_config probe_cfg;
    vk_credentials probe_credentials;

    bool running;
    size_t next;                  /* the list index to ask next */
    vk_endpoint asking;           /* the sentinel asked now */
    char asking_peer[300];
    vk_engine *probe;             /* NULL between sentinels */
    bool reused;                  /* probe is the kept one */
    uint64_t request;             /* its request in flight, 0: none */
    vk_engine *kept;              /* the last walk's answering probe, idle */
    vk_endpoint kept_at;
    vk_endpoint master;           /* named by the sentinel asked now */
    bool answered;                /* some sentinel answered without knowing the name */
    char *last_cause;             /* the last sentinel's failure */

    /* The subscription (vk__seek_watch) and its requests in flight. */
    vk_engine *watch;
    vk_endpoint watch_at;
    uint64_t watch_requests[4];
    size_t watch_pending;
    bool watch_failed;            /* closed once its requests are all answered */
};

static void ask_next(vk_seek *k);

vk_status vk__seek_new(vk_seek **out, vk_sentinel *s, const vk_config *cfg,
                       const vk_seek_driver *driver)
{
    *out = NULL;
    vk_seek *k = calloc(1, sizeof *k);
    if (k == NULL)
        return vk__fail_nomem();
    k->sentinels = s;
    k->drv = *driver;
    k->probe_cfg = *cfg;
    k->probe_cfg.username = cfg->sentinel_username;
    k->probe_cfg.password = cfg->sentinel_password;
    k->probe_cfg.db = 0;
    k->probe_cfg.protocol = 2;
    k->probe_cfg.max_retries = -1;
    vk__credentials_init(&k->probe_credentials);
    vk_status st = vk__credentials_set(&k->probe_credentials, cfg->sentinel_username,
                                       cfg->sentinel_password);
    if (st != VK_OK) {
        vk__seek_free(k);
        return st;
    }
    *out = k;
    return VK_OK;
}

/* Lets go of the probe; its request, if any, is cancelled first so that
 * nothing of the walk is left in it. */
static void drop_probe(vk_seek *k)
{
    vk_engine *probe = k->probe;
    k->reused = false;
    if (probe == NULL)
        return;
    k->probe = NULL;
    if (k->request != 0) {
        uint64_t id = k->request;
        k->request = 0;
        vk__engine_cancel(probe, id, k->drv.now_ms(k->drv.userdata));
    }
    k->drv.probe_close(k->drv.userdata, probe);
}

void vk__seek_stop(vk_seek *k)
{
    if (k == NULL || !k->running)
        return;
    k->running = false;
    drop_probe(k);
}

static void drop_kept(vk_seek *k)
{
    vk_engine *kept = k->kept;
    k->kept = NULL;
    if (kept != NULL)
        k->drv.probe_close(k->drv.userdata, kept);
}

static void drop_watch(vk_seek *k);

void vk__seek_free(vk_seek *k)
{
    if (k == NULL)
        return;
    vk__seek_stop(k);
    drop_kept(k);
    drop_watch(k);
    vk__credentials_destroy(&k->probe_credentials);
    free(k->last_cause);
    free(k);
}

bool vk__seek_running(const vk_seek *k)
{
    return k != NULL && k->running;
}

void vk__seek_start(vk_seek *k)
{
    if (k->running)
        return;
    k->running = true;
    k->next = 0;
    k->answered = false;
    free(k->last_cause);
    k->last_cause = NULL;
    ask_next(k);
}

static void finish(vk_seek *k, vk_status st)
{
    k->running = false;
    if (st == VK_OK && k->probe != NULL && k->request == 0) {
        drop_kept(k);
        k->kept = k->probe;
        k->kept_at = k->asking;
        k->probe = NULL;
    }
    drop_probe(k);
    k->drv.found(k->drv.userdata, st, st == VK_OK ? &k->master : NULL);
}

/* The sentinel asked now failed (the detail set): logged, then the next. */
static void sentinel_failed(vk_seek *k)
{
    if (k->reused) {
        /* The kept connection died while idle: a new one to the same
         * sentinel before it counts as failed. */
        drop_probe(k);
        k->next--;
        ask_next(k);
        return;
    }
    vk_status st = vk_last_status();
    const char *detail = vk_last_error();
    /* A refusal of the sentinels' credentials names the sentinel, as the
     * blocking client's does. */
    const char *prefix = vk_strerror(VK_ERR_AUTH);
    size_t n = strlen(prefix);
    if (st == VK_ERR_AUTH && strncmp(detail, prefix, n) == 0 && strncmp(detail + n, ": ", 2) == 0) {
        char *text = strdup(detail + n + 2);
        vk__fail(VK_ERR_AUTH, "sentinel %s: %s", k->asking_peer, text != NULL ? text : "");
        free(text);
    }
    free(k->last_cause);
    k->last_cause = vk__error_dup();
    vk__sentinel_warn_failure(k->sentinels, &k->asking, k->last_cause);
    drop_probe(k);
    ask_next(k);
}

static void on_list(void *userdata, vk_status st, vk_reply *reply)
{
    vk_seek *k = userdata;
    k->request = 0;
    /* A failure keeps the list as it was; the next discovery tries again. */
    if (st == VK_OK)
        vk__sentinel_merge_list(k->sentinels, (redisReply *)reply);
    vk__reply_free((redisReply *)reply);
    vk__sentinel_promote(k->sentinels, &k->asking);
    finish(k, VK_OK);
}

static vk_status send_query(vk_seek *k, const char *what, vk_async_fn fn)
{
    const char *argv[3];
    vk__sentinel_query(k->sentinels, what, argv);
    vk_command cmd;
    const size_t lens[3] = {strlen(argv[0]), strlen(argv[1]), strlen(argv[2])};
    vk__command_classify(&cmd, 3, argv, lens);
    return vk__engine_command(k->probe, &cmd, fn, k, k->drv.now_ms(k->drv.userdata),
                              &k->request);
}

static void on_master(void *userdata, vk_status st, vk_reply *reply)
{
    vk_seek *k = userdata;
    k->request = 0;
    if (st == VK_ERR_CANCELLED && !k->running)
        return;   /* stopped: nothing more to do */
    bool known = false;
    if (st == VK_OK)
        st = vk__sentinel_read_master(k->asking_peer, (redisReply *)reply, &k->master, &known);
    vk__reply_free((redisReply *)reply);
    if (st != VK_OK) {
        sentinel_failed(k);
        return;
    }
    if (!known) {
        k->answered = true;
        drop_probe(k);
        ask_next(k);
        return;
    }
    if (send_query(k, VK_SENTINEL_LIST, on_list) != VK_OK) {
        vk__sentinel_promote(k->sentinels, &k->asking);
        finish(k, VK_OK);
    }
}

/* Asks the next sentinel of the list, or ends the walk when none is left. */
static void ask_next(vk_seek *k)
{
    while (k->running) {
        if (!vk__sentinel_address(k->sentinels, k->next, &k->asking)) {
            finish(k, vk__sentinel_gave_up(k->sentinels, k->answered, k->last_cause));
            return;
        }
        k->next++;
        vk__format_endpoint(k->asking_peer, sizeof k->asking_peer, &k->asking);
        vk_status st = VK_OK;
        k->reused = k->kept != NULL && vk__endpoint_equal(&k->kept_at, &k->asking);
        if (k->reused) {
            k->probe = k->kept;
            k->kept = NULL;
        } else {
            drop_kept(k);
            st = k->drv.probe_open(k->drv.userdata, &k->asking, &k->probe_cfg,
                                   &k->probe_credentials, &k->probe);
        }
        if (st == VK_OK)
            st = send_query(k, VK_SENTINEL_ASK_MASTER, on_master);
        if (st == VK_OK)
            return;   /* on_master goes on */
        free(k->last_cause);
        k->last_cause = vk__error_dup();
        vk__sentinel_warn_failure(k->sentinels, &k->asking, k->last_cause);
        drop_probe(k);
    }
}

/* ---- the subscription --------------------------------------------------------------- */

/* Lets go of the subscription; its requests are cancelled first, so that
 * nothing of the seek is left in it. */
static void drop_watch(vk_seek *k)
{
    vk_engine *watch = k->watch;
    if (watch == NULL)
        return;
    k->watch = NULL;
    int64_t now_ms = k->drv.now_ms(k->drv.userdata);
    while (k->watch_pending > 0)
        vk__engine_cancel(watch, k->watch_requests[--k->watch_pending], now_ms);
    k->drv.probe_close(k->drv.userdata, watch);
}

static void forget_request(vk_seek *k, uint64_t id)
{
    for (size_t i = 0; i < k->watch_pending; i++) {
        if (k->watch_requests[i] == id) {
            k->watch_requests[i] = k->watch_requests[--k->watch_pending];
            return;
        }
    }
}

/* The reply to a SUBSCRIBE or PING: anything but an answer ends the
 * subscription (it is opened again at the next check). */
typedef struct watch_request {
    vk_seek *k;
    uint64_t id;
} watch_request;

static void on_watch_reply(void *userdata, vk_status st, vk_reply *reply)
{
    watch_request *w = userdata;
    vk_seek *k = w->k;
    uint64_t id = w->id;
    free(w);
    bool refused = st != VK_OK || ((redisReply *)reply)->type == REDIS_REPLY_ERROR;
    vk__reply_free((redisReply *)reply);
    if (st == VK_ERR_CANCELLED && k->watch == NULL)
        return;   /* dropped: cancelled by drop_watch */
    forget_request(k, id);
    /* A failed connection answers the other requests next, in this same
     * turn of its engine: the subscription goes once they are in. */
    k->watch_failed = k->watch_failed || refused;
    if (k->watch_failed && k->watch_pending == 0)
        drop_watch(k);
}

static void on_news(void *userdata, redisReply *message)
{
    vk_seek *k = userdata;
    vk_endpoint master;
    vk_sentinel_news news =
        vk__sentinel_read_news(message, vk__sentinel_master_name(k->sentinels), &master);
    vk__reply_free(message);
    if (news == VK_SENTINEL_NEWS_SWITCHED) {
        vk__sentinel_log_announced(k->sentinels, &master, &k->watch_at);
        k->drv.announced(k->drv.userdata, &master, &k->watch_at);
    } else if (news == VK_SENTINEL_NEWS_PROMOTED && !k->running) {
        vk__seek_start(k);   /* the sentinels name the promoted node now */
    }
}

/* One request on the subscription; false when it could not be sent. */
static bool watch_request_send(vk_seek *k, int argc, const char *const *argv)
{
    if (k->watch_pending == sizeof k->watch_requests / sizeof k->watch_requests[0])
        return true;   /* enough already in flight: their answers tell */
    watch_request *w = malloc(sizeof *w);
    if (w == NULL)
        return false;
    w->k = k;
    size_t lens[2];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    vk_command cmd;
    vk__command_classify(&cmd, argc, argv, lens);
    if (vk__engine_command(k->watch, &cmd, on_watch_reply, w, k->drv.now_ms(k->drv.userdata),
                           &w->id) != VK_OK) {
        free(w);
        return false;
    }
    k->watch_requests[k->watch_pending++] = w->id;
    return true;
}

void vk__seek_watch(vk_seek *k)
{
    if (k->watch != NULL && k->watch_failed)
        return;   /* going: its last answers are awaited */
    if (k->watch != NULL) {
        static const char *const ping[] = {"PING"};
        if (!watch_request_send(k, 1, ping))
            drop_watch(k);
        return;
    }
    if (!vk__sentinel_address(k->sentinels, 0, &k->watch_at))
        return;
    k->watch_failed = false;
    if (k->drv.watch_open(k->drv.userdata, &k->watch_at, &k->probe_cfg, &k->probe_credentials,
                          on_news, k, &k->watch) != VK_OK) {
        k->watch = NULL;
        return;
    }
    static const char *const channels[] = {VK_SENTINEL_SWITCH_CHANNEL,
                                           VK_SENTINEL_PROMOTED_CHANNEL};
    for (size_t i = 0; i < 2; i++) {
        const char *const subscribe[] = {"SUBSCRIBE", channels[i]};
        if (!watch_request_send(k, 2, subscribe)) {
            drop_watch(k);
            return;
        }
    }
}
