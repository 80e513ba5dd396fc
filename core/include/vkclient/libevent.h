/*
 * vkclient/libevent.h: runs a vk_async on a libevent event_base.
 *
 *     vk_loop_adapter adapter;
 *     vk_libevent_adapter(&adapter, base);
 *     vk_async_new(&client, cfg, &adapter);
 *     ...
 *     event_base_dispatch(base);
 *
 * Header only: include it in the program that owns the event_base and link
 * with libevent there; the vkclient library itself does not depend on
 * libevent.
 *
 * Each descriptor the client watches gets one persistent struct event and
 * the client's timer one timer event, both from event_new() and kept in the
 * slot the client hands over; they are freed at once (event_free) when the
 * client lets them go. A pending event keeps event_base_dispatch() going, as
 * any libevent event does; a client with nothing to wait for holds none.
 */
#ifndef VKCLIENT_LIBEVENT_H
#define VKCLIENT_LIBEVENT_H

#include <event2/event.h>

#include "../vkclient_async.h"

#ifdef __cplusplus
extern "C" {
#endif

static inline void vk_libevent_on_io_(evutil_socket_t fd, short what, void *arg)
{
    int ready = 0;
    (void)fd;
    /* An error or hang-up on the socket comes as both. */
    if (what & EV_READ)
        ready |= VK_EV_READ;
    if (what & EV_WRITE)
        ready |= VK_EV_WRITE;
    if (ready != 0)
        vk_async_handle_io((vk_async_io *)arg, ready);
}

static inline int vk_libevent_watch_(void *data, vk_async_io *io, int fd, int events,
                                     void **slot)
{
    struct event_base *base = (struct event_base *)data;
    struct event *ev = (struct event *)*slot;
    short want = 0;

    if (events == 0) {
        if (ev != NULL)
            event_free(ev); /* deletes it first */
        *slot = NULL;
        return 0;
    }
    if (events & VK_EV_READ)
        want |= EV_READ;
    if (events & VK_EV_WRITE)
        want |= EV_WRITE;

    if (ev == NULL) {
        ev = event_new(base, fd, (short)(want | EV_PERSIST), vk_libevent_on_io_,
                       io);
        if (ev == NULL)
            return -1;
        *slot = ev;
    } else {
        /* Already watching exactly these: nothing to change. */
        if ((event_get_events(ev) & (EV_READ | EV_WRITE)) == want &&
            event_pending(ev, EV_READ | EV_WRITE, NULL))
            return 0;
        /* An event's interest is fixed when it is assigned: take it out of
         * the loop, then assign it again (safe from its own callback). */
        event_del(ev);
        if (event_assign(ev, base, fd, (short)(want | EV_PERSIST),
                         vk_libevent_on_io_, io) != 0)
            return -1;
    }
    return event_add(ev, NULL) == 0 ? 0 : -1;
}

static inline void vk_libevent_on_timer_(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    vk_async_handle_timer((vk_async *)arg);
}

static inline int vk_libevent_timer_(void *data, vk_async *client, int64_t ms, int release,
                                     void **slot)
{
    struct event_base *base = (struct event_base *)data;
    struct event *ev = (struct event *)*slot;
    struct timeval tv;

    if (ms < 0) {
        if (ev != NULL) {
            if (release) {
                event_free(ev); /* deletes it first */
                *slot = NULL;
            } else {
                event_del(ev);
            }
        }
        return 0;
    }
    if (ev == NULL) {
        ev = event_new(base, -1, 0, vk_libevent_on_timer_, client);
        if (ev == NULL)
            return -1;
        *slot = ev;
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    /* The base's cached clock was read when this turn began; count from
     * now. Adding a pending timer moves it to the new time. */
    event_base_update_cache_time(base);
    return event_add(ev, &tv) == 0 ? 0 : -1;
}

/* Fills *out so that a vk_async runs on `base`. */
static inline void vk_libevent_adapter(vk_loop_adapter *out, struct event_base *base)
{
    out->version = VK_LOOP_ADAPTER_VERSION;
    out->data = base;
    out->watch = vk_libevent_watch_;
    out->timer = vk_libevent_timer_;
}

#ifdef __cplusplus
}
#endif

#endif /* VKCLIENT_LIBEVENT_H */
