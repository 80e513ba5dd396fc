/*
 * vkclient/libuv.h: runs a vk_async on a libuv loop.
 *
 *     vk_loop_adapter adapter;
 *     vk_libuv_adapter(&adapter, uv_default_loop());
 *     vk_async_new(&client, cfg, &adapter);
 *     ...
 *     uv_run(uv_default_loop(), UV_RUN_DEFAULT);
 *
 * Header only: include it in the program that owns the loop and link with
 * libuv there; the vkclient library itself does not depend on libuv.
 * (<uv.h> needs POSIX declarations: under a strict -std=c99 or -std=c11,
 * define _POSIX_C_SOURCE 200809L before the first include.)
 *
 * Each descriptor the client watches gets one uv_poll_t and the client's
 * timer one uv_timer_t, both allocated here and kept in the slot the client
 * hands over. Handles are released with uv_close(), so their memory is freed
 * by libuv's close callback on a later turn of the loop: run the loop once
 * more after vk_async_free() (uv_run returns by itself once nothing is
 * left) before closing it. An active poll or timer keeps uv_run() going,
 * as any libuv handle does; a client with nothing to wait for holds none.
 */
#ifndef VKCLIENT_LIBUV_H
#define VKCLIENT_LIBUV_H

#include <stdlib.h>
#include <uv.h>

#include "../vkclient_async.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a watched descriptor keeps: its poll handle, the client's io, and
 * the UV_* events being watched (0 while stopped). */
typedef struct vk_libuv_io_ {
    uv_poll_t poll;
    vk_async_io *io;
    int events;
} vk_libuv_io_;

/* Close callback: each handle is the start of the block malloc'd for it. */
static inline void vk_libuv_free_handle_(uv_handle_t *handle)
{
    free(handle);
}

static inline void vk_libuv_on_poll_(uv_poll_t *handle, int status, int events)
{
    vk_libuv_io_ *w = (vk_libuv_io_ *)handle->data;
    int ready = 0;
    if (status < 0) {
        /* An error on the socket: the client finds it itself when it reads
         * or writes. libuv has stopped the handle, but the client counts on
         * its watch: a read that returns data still queued before the error
         * leaves the error pending, so watch again and it is reported on
         * the next turn. */
        ready = VK_EV_READ | VK_EV_WRITE;
        if (w->events != 0 && uv_poll_start(&w->poll, w->events, vk_libuv_on_poll_) != 0)
            w->events = 0;
    } else {
        if (events & UV_READABLE)
            ready |= VK_EV_READ;
        if (events & UV_WRITABLE)
            ready |= VK_EV_WRITE;
    }
    if (ready != 0 && w->io != NULL)
        vk_async_handle_io(w->io, ready);
}

/* Closes a poll handle; its memory goes in the close callback. */
static inline void vk_libuv_close_io_(vk_libuv_io_ *w)
{
    w->io = NULL;
    uv_poll_stop(&w->poll);
    uv_close((uv_handle_t *)&w->poll, vk_libuv_free_handle_);
}

static inline int vk_libuv_watch_(void *data, vk_async_io *io, int fd, int events, void **slot)
{
    uv_loop_t *loop = (uv_loop_t *)data;
    vk_libuv_io_ *w = (vk_libuv_io_ *)*slot;
    int want = 0;

    if (events == 0) {
        if (w != NULL)
            vk_libuv_close_io_(w);
        *slot = NULL;
        return 0;
    }
    if (events & VK_EV_READ)
        want |= UV_READABLE;
    if (events & VK_EV_WRITE)
        want |= UV_WRITABLE;

    if (w == NULL) {
        w = (vk_libuv_io_ *)malloc(sizeof(*w));
        if (w == NULL)
            return -1;
        if (uv_poll_init_socket(loop, &w->poll, fd) != 0) {
            /* Not initialised: nothing for libuv to close. */
            free(w);
            return -1;
        }
        w->poll.data = w;
        w->io = io;
        w->events = 0;
        *slot = w;
    }
    w->io = io;
    /* Restarting a poll handle removes and re-adds the descriptor in the
     * kernel: skip it when nothing changes. */
    if (w->events == want)
        return 0;
    if (uv_poll_start(&w->poll, want, vk_libuv_on_poll_) != 0) {
        w->events = 0;
        return -1;
    }
    w->events = want;
    return 0;
}

static inline void vk_libuv_on_timer_(uv_timer_t *timer)
{
    vk_async_handle_timer((vk_async *)timer->data);
}

static inline int vk_libuv_timer_(void *data, vk_async *client, int64_t ms, int release,
                                  void **slot)
{
    uv_loop_t *loop = (uv_loop_t *)data;
    uv_timer_t *timer = (uv_timer_t *)*slot;

    if (ms < 0) {
        if (timer != NULL) {
            uv_timer_stop(timer);
            if (release) {
                uv_close((uv_handle_t *)timer, vk_libuv_free_handle_);
                *slot = NULL;
            }
        }
        return 0;
    }
    if (timer == NULL) {
        timer = (uv_timer_t *)malloc(sizeof(*timer));
        if (timer == NULL)
            return -1;
        if (uv_timer_init(loop, timer) != 0) {
            free(timer);
            return -1;
        }
        *slot = timer;
    }
    timer->data = client;
    /* The loop's clock was read when this turn began; count from now. */
    uv_update_time(loop);
    return uv_timer_start(timer, vk_libuv_on_timer_, (uint64_t)ms, 0) == 0 ? 0 : -1;
}

/* Fills *out so that a vk_async runs on `loop`. */
static inline void vk_libuv_adapter(vk_loop_adapter *out, uv_loop_t *loop)
{
    out->version = VK_LOOP_ADAPTER_VERSION;
    out->data = loop;
    out->watch = vk_libuv_watch_;
    out->timer = vk_libuv_timer_;
}

#ifdef __cplusplus
}
#endif

#endif /* VKCLIENT_LIBUV_H */
