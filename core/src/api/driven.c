/*
 * The part every driver of the engine shares (see driven.h).
 */
#include "api/driven.h"

#include <stdio.h>
#include <stdlib.h>

static const char wrong_thread[] = "an event-loop client is used only on its loop's thread";

/* ---- Sentinel: the master, found before each dial ---------------------------------- */

static vk_status seek_probe_open(void *userdata, const vk_endpoint *ep, const vk_config *cfg,
                                 vk_credentials *credentials, vk_engine **out)
{
    vk_driven *d = userdata;
    return d->probe_open(d, ep, cfg, credentials, out);
}

static void seek_probe_close(void *userdata, vk_engine *probe)
{
    vk_driven *d = userdata;
    d->probe_close(d, probe);
}

static int64_t seek_now_ms(void *userdata)
{
    (void)userdata;
    return vk__now_ms();
}

static void seek_found(void *userdata, vk_status st, const vk_endpoint *master)
{
    vk_driven *d = userdata;
    if (!d->seek_locates) {
        /* A check: a failure leaves things as they are (it was logged); a
         * new master is followed through a new dial. */
        if (st == VK_OK && d->has_endpoint && !vk__endpoint_equal(&d->endpoint, master))
            vk__engine_leave_node(d->engine, vk__now_ms());
        return;
    }
    d->seek_locates = false;
    if (st == VK_OK) {
        /* A master other than the one before is a failover followed. */
        if (d->has_endpoint && !vk__endpoint_equal(&d->endpoint, master))
            vk__client_announce_switch(d->core, &d->endpoint, master);
        d->endpoint = *master;
        d->has_endpoint = true;
        vk__format_endpoint(d->peer, sizeof d->peer, &d->endpoint);
        vk__engine_set_peer(d->engine, d->peer);
    }
    d->located(d, st);
}

static vk_status start_seeking(vk_driven *d)
{
    const vk_seek_driver seek = {
        .userdata = d,
        .probe_open = seek_probe_open,
        .probe_close = seek_probe_close,
        .found = seek_found,
        .now_ms = seek_now_ms,
    };
    vk_status st = vk__seek_new(&d->seek, d->core->sentinel, vk__client_config(d->core), &seek);
    if (st != VK_OK)
        return st;
    vk__engine_follow_master(d->engine);
    snprintf(d->peer, sizeof d->peer, "sentinel master %s",
             vk__client_config(d->core)->sentinel_master);
    vk__engine_set_peer(d->engine, d->peer);
    return VK_OK;
}

bool vk__driven_locate(vk_driven *d)
{
    if (d->seek == NULL)
        return false;
    /* A check that runs now serves the dial as well. */
    d->seek_locates = true;
    vk__seek_start(d->seek);
    return true;
}

void vk__driven_node_closed(vk_driven *d)
{
    d->seek_locates = false;
    vk__seek_stop(d->seek);
}

void vk__driven_check_master(vk_driven *d)
{
    if (d->seek != NULL && !vk__seek_running(d->seek))
        vk__seek_start(d->seek);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

vk_status vk__driven_init(vk_driven *d, const vk_config *cfg, const vk_engine_driver *driver)
{
    d->owner = pthread_self();
    vk_status st = vk__client_new_detached(
        &d->core, cfg, VK_TOPO_STANDALONE | VK_TOPO_SENTINEL,
        "the event-loop client serves the standalone and Sentinel topologies (Cluster is "
        "not supported by it yet)");
    if (st != VK_OK)
        return st;
    d->endpoint = d->core->endpoint;
    d->has_endpoint = d->core->sentinel == NULL;
    vk__format_endpoint(d->peer, sizeof d->peer, &d->endpoint);
    st = vk__engine_new(&d->engine, vk__client_config(d->core), &d->core->credentials, d->peer,
                        driver);
    if (st == VK_OK && d->core->sentinel != NULL)
        st = start_seeking(d);
    if (st != VK_OK) {
        char *cause = vk__error_dup();
        vk__engine_free(d->engine, "client closed");
        d->engine = NULL;
        vk_client_free(d->core);
        d->core = NULL;
        vk__fail_restore(st, cause);
        free(cause);
    }
    return st;
}

void vk__driven_watch(vk_driven *d, vk_driven_watch *w)
{
    w->next = d->watches;
    d->watches = w;
}

void vk__driven_unwatch(vk_driven *d, vk_driven_watch *w)
{
    for (vk_driven_watch **at = &d->watches; *at != NULL; at = &(*at)->next) {
        if (*at == w) {
            *at = w->next;
            return;
        }
    }
}

void vk__driven_destroy(vk_driven *d)
{
    d->closing = true;
    vk_driven_watch *w = d->watches;
    d->watches = NULL;
    while (w != NULL) {
        vk_driven_watch *next = w->next;
        w->gone(w);
        w = next;
    }
    d->depth++;   /* completions that call back in are refused, not re-entered */
    vk__seek_free(d->seek);
    d->seek = NULL;
    vk__engine_free(d->engine, "client closed");
    d->engine = NULL;
    vk_client_free(d->core);
    d->core = NULL;
    d->release(d);
}

bool vk__driven_on_thread(const vk_driven *d, const char *function)
{
    if (pthread_equal(pthread_self(), d->owner))
        return true;
    vk__misuse(function, wrong_thread);
    return false;
}

vk_status vk__driven_check_thread(const vk_driven *d, const char *function)
{
    if (!vk__driven_on_thread(d, function))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "%s", wrong_thread);
    return VK_OK;
}

vk_status vk__driven_usable(vk_driven *d, const char *function)
{
    if (d == NULL || d->closing || d->free_requested) {
        vk__misuse(function, "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    return vk__driven_check_thread(d, function);
}

bool vk__driven_leave(vk_driven *d)
{
    if (--d->depth > 0 || !d->free_requested)
        return false;
    vk__driven_destroy(d);
    return true;
}

void vk__driven_free(vk_driven *d, const char *function)
{
    if (d == NULL || d->closing || !vk__driven_on_thread(d, function))
        return;
    if (d->depth > 0) {
        d->free_requested = true;
        return;
    }
    vk__driven_destroy(d);
}

vk_status vk__driven_command(vk_driven *d, const char *function, int argc,
                             const char *const *argv, const size_t *argvlen, vk_async_fn fn,
                             void *userdata, uint64_t *id)
{
    if (id != NULL)
        *id = 0;
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    uint64_t op_id = 0;
    vk__driven_enter(d);
    st = vk__engine_submit(d->engine, argc, argv, argvlen, fn, userdata, vk__now_ms(), &op_id);
    if (!vk__driven_leave(d) && st == VK_OK && id != NULL)
        *id = op_id;
    return st;
}

vk_status vk__driven_pipeline_new(vk_driven *d, const char *function, vk_pipeline **out)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    return vk__pipeline_new_detached(out, d->core, d);
}

/* A pipeline's commands as one operation, after its refusals (those of
 * vk_pipeline_exec); the pipeline empties. An empty one completes (empty
 * array) before this returns. */
static vk_status submit_pipeline(vk_engine *e, vk_pipeline *pipeline, vk_async_fn fn,
                                 void *op_userdata, int64_t now_ms, uint64_t *id)
{
    vk_pipeline_batch batch;
    vk_status st = vk__pipeline_take(pipeline, &batch);
    if (st != VK_OK)
        return st;
    if (batch.count > 0) {
        st = vk__engine_pipeline(e, &batch, fn, op_userdata, now_ms, id);
        vk__pipeline_batch_free(&batch);
        return st;
    }
    /* Nothing to send: the empty array completes at once. */
    redisReply *array = vk__array_reply_new(0);
    if (array == NULL)
        return vk__fail_nomem();
    vk__driven_complete(NULL, fn, op_userdata, VK_OK, array);
    return VK_OK;
}

vk_status vk__driven_pipeline_exec(vk_driven_kind kind, const char *function,
                                   vk_pipeline *pipeline, vk_async_fn fn, void *userdata,
                                   uint64_t *id)
{
    if (id != NULL)
        *id = 0;
    if (pipeline == NULL) {
        vk__misuse(function, "pipeline is nil");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "pipeline is nil");
    }
    vk_driven *d = vk__pipeline_owner(pipeline);
    if (d != NULL && d->kind != kind)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "the pipeline belongs to another kind of "
                                                 "client");
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    uint64_t op_id = 0;
    vk__driven_enter(d);
    st = submit_pipeline(d->engine, pipeline, fn, userdata, vk__now_ms(), &op_id);
    if (!vk__driven_leave(d) && st == VK_OK && id != NULL)
        *id = op_id;
    return st;
}

vk_status vk__driven_after(vk_driven *d, const char *function, int64_t delay_ms,
                           vk_async_fn fn, void *userdata, uint64_t *id)
{
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    uint64_t op_id = 0;
    int64_t now_ms = vk__now_ms();
    vk__driven_enter(d);
    st = vk__engine_after(d->engine, now_ms + (delay_ms > 0 ? delay_ms : 0), fn, userdata,
                          now_ms, &op_id);
    if (!vk__driven_leave(d) && st == VK_OK && id != NULL)
        *id = op_id;
    return st;
}

vk_status vk__driven_cancel(vk_driven *d, const char *function, uint64_t id)
{
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    vk__driven_enter(d);
    st = vk__engine_cancel(d->engine, id, vk__now_ms());
    vk__driven_leave(d);
    return st;
}

void vk__driven_complete(void *userdata, vk_async_fn fn, void *op_userdata, vk_status st,
                         redisReply *reply)
{
    (void)userdata;
    if (fn != NULL)
        fn(op_userdata, st, (vk_reply *)reply);
    else
        vk__reply_free(reply);
}
