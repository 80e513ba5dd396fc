/*
 * Scans on the event-loop client and the bytes mode: the vk_scan of scan.c
 * made for a vk_async or a vk_hosted, one page at a time through its
 * engine (standalone, Sentinel) or its cluster router, which runs a walk's
 * page on the master the walk is at (vk__router_command_at).
 *
 * One page is in flight at a time. A walk captures the router's slot map
 * with its first page; when the router has none yet, a PING (routed to any
 * master, which makes the router load the map) goes first. Freeing a scan
 * whose page is in flight cancels the page: its completion runs with
 * VK_ERR_CANCELLED before vk_scan_free returns. A scan outlives its client:
 * the client's free completes the page in flight (VK_ERR_CANCELLED, "client
 * closed") and later pages fail with VK_ERR_NIL_CLIENT.
 */
#include "api/scan.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const char *next_name(const vk_scan *s)
{
    return s->kind == VK_DRIVEN_ASYNC ? "vk_async_scan_next" : "vk_hosted_scan_next";
}

static void client_gone(vk_driven_watch *w)
{
    vk_scan *s = (vk_scan *)(void *)((char *)w - offsetof(vk_scan, watch));
    s->d = NULL;
}

/* The page's outcome to the caller (a failure's detail set). */
static void finish(vk_scan *s, vk_status st, redisReply *items)
{
    s->in_flight = false;
    s->op_id = 0;
    vk_async_fn fn = s->fn;
    void *userdata = s->userdata;
    if (s->free_asked) {
        /* Freed while the page was out: the caller hears it was cancelled. */
        vk__reply_free(items);
        vk__fail(VK_ERR_CANCELLED, "scan freed");
        fn(userdata, VK_ERR_CANCELLED, NULL);
        vk__scan_release(s);
        return;
    }
    fn(userdata, st, (vk_reply *)items);
}

static void page_done(void *userdata, vk_status st, vk_reply *reply)
{
    vk_scan *s = userdata;
    if (st != VK_OK || s->free_asked) {
        vk_reply_free(reply);
        finish(s, st, NULL);
        return;
    }
    uint64_t version = 0;
    const vk_slot_map *m =
        s->walk && s->d != NULL ? vk__router_map(s->d->router, &version) : NULL;
    redisReply *items;
    st = vk__scan_take(s, (redisReply *)reply, m, version, &items);
    vk_reply_free(reply);
    finish(s, st, st == VK_OK ? items : NULL);
}

static vk_status send_page(vk_scan *s)
{
    const char *argv[VK_SCAN_ARGS];
    size_t argvlen[VK_SCAN_ARGS];
    int argc = vk__scan_argv(s, argv, argvlen);
    return vk__driven_command_at(s->d, next_name(s), argc, argv, argvlen, vk__scan_node(s),
                                 page_done, s, &s->op_id);
}

/* The page of a scan that is done: an empty array, on the loop's next turn. */
static void empty_done(void *userdata, vk_status st, vk_reply *reply)
{
    vk_scan *s = userdata;
    (void)reply;
    redisReply *empty = NULL;
    if (st == VK_OK && (empty = vk__array_reply_new(0)) == NULL)
        st = vk__fail_nomem();
    finish(s, st, empty);
}

/* Captures the walk's plan from the router's map; false when it has none. */
static bool capture_now(vk_scan *s, vk_status *st)
{
    uint64_t version;
    const vk_slot_map *m = vk__router_map(s->d->router, &version);
    if (m == NULL)
        return false;
    *st = vk__scan_capture(s, m, version);
    return true;
}

/* The PING that made the router load its map came back: the walk begins. */
static void map_ready(void *userdata, vk_status st, vk_reply *reply)
{
    vk_scan *s = userdata;
    vk_reply_free(reply);
    if (st == VK_OK && s->d == NULL)
        st = vk__fail(VK_ERR_NIL_CLIENT, NULL);
    if (st == VK_OK && !s->free_asked && !capture_now(s, &st))
        st = vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
    if (st != VK_OK || s->free_asked) {
        finish(s, st, NULL);
        return;
    }
    if (s->done) {
        redisReply *empty = vk__array_reply_new(0);
        finish(s, empty != NULL ? VK_OK : vk__fail_nomem(), empty);
        return;
    }
    if ((st = send_page(s)) != VK_OK)
        finish(s, st, NULL);
}

static vk_status scan_next(vk_scan *s, vk_driven_kind kind, const char *function,
                           vk_async_fn fn, void *userdata)
{
    if (s == NULL) {
        vk__misuse(function, "scan is nil");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan is nil");
    }
    if (fn == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "fn is NULL");
    if (s->client != NULL || s->kind != kind)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "the scan belongs to another kind of client");
    if (s->d == NULL) {
        vk__misuse(function, "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    vk_status st = vk__driven_usable(s->d, function);
    if (st != VK_OK)
        return st;
    if (s->in_flight)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a page of this scan is already in flight");
    s->fn = fn;
    s->userdata = userdata;
    if (!s->done && s->walk && s->plan == NULL && !capture_now(s, &st)) {
        static const char *const ping[] = {"PING"};
        static const size_t ping_len[] = {4};
        st = vk__driven_command(s->d, function, 1, ping, ping_len, map_ready, s, &s->op_id);
    } else if (st == VK_OK && s->done) {
        st = vk__driven_after(s->d, function, 0, empty_done, s, &s->op_id);
    } else if (st == VK_OK) {
        st = send_page(s);
    }
    if (st == VK_OK)
        s->in_flight = true;
    return st;
}

void vk__scan_driven_free(vk_scan *s)
{
    if (s->d == NULL) {
        vk__scan_release(s);
        return;
    }
    vk__driven_unwatch(s->d, &s->watch);
    if (!s->in_flight) {
        vk__scan_release(s);
        return;
    }
    /* The page's completion runs now, with VK_ERR_CANCELLED, and frees. A
     * cancel refused (off the loop's thread) leaves it to the completion. */
    s->free_asked = true;
    (void)vk__driven_cancel(s->d, "vk_scan_free", s->op_id);
}

static vk_status scan_new(vk_scan **out, vk_driven *d, const char *function,
                          const char *command, const char *key, size_t keylen,
                          const char *match, size_t matchlen, int64_t count, const char *type)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    vk_status st = vk__driven_usable(d, function);
    vk_scan *s;
    if (st == VK_OK)
        st = vk__scan_alloc(&s, command, key, keylen, match, matchlen, count, type);
    if (st != VK_OK)
        return st;
    s->d = d;
    s->kind = d->kind;
    s->walk = d->router != NULL && key == NULL;
    s->watch.gone = client_gone;
    vk__driven_watch(d, &s->watch);
    *out = s;
    return VK_OK;
}

static vk_status scan_new_key(vk_scan **out, vk_driven *d, const char *function,
                              const char *command, const char *key, size_t keylen,
                              const char *match, size_t matchlen, int64_t count)
{
    if (out != NULL)
        *out = NULL;
    char upper[6];
    vk_status st = vk__scan_key_command(command, key, keylen, upper);
    if (st != VK_OK)
        return st;
    return scan_new(out, d, function, upper, key != NULL ? key : "", keylen, match, matchlen,
                    count, NULL);
}

/* A vk_async and a vk_hosted start with their vk_driven (driven.h). */

VK_API vk_status vk_async_scan_new(vk_scan **out, vk_async *client, const char *match,
                                   size_t matchlen, int64_t count, const char *type)
{
    return scan_new(out, (vk_driven *)(void *)client, "vk_async_scan_new", "SCAN", NULL, 0,
                    match, matchlen, count, type);
}

VK_API vk_status vk_async_scan_new_key(vk_scan **out, vk_async *client, const char *command,
                                       const char *key, size_t keylen, const char *match,
                                       size_t matchlen, int64_t count)
{
    return scan_new_key(out, (vk_driven *)(void *)client, "vk_async_scan_new_key", command,
                        key, keylen, match, matchlen, count);
}

VK_API vk_status vk_async_scan_next(vk_scan *scan, vk_async_fn fn, void *userdata)
{
    return scan_next(scan, VK_DRIVEN_ASYNC, "vk_async_scan_next", fn, userdata);
}

VK_API vk_status vk_hosted_scan_new(vk_scan **out, vk_hosted *client, const char *match,
                                    size_t matchlen, int64_t count, const char *type)
{
    return scan_new(out, (vk_driven *)(void *)client, "vk_hosted_scan_new", "SCAN", NULL, 0,
                    match, matchlen, count, type);
}

VK_API vk_status vk_hosted_scan_new_key(vk_scan **out, vk_hosted *client, const char *command,
                                        const char *key, size_t keylen, const char *match,
                                        size_t matchlen, int64_t count)
{
    return scan_new_key(out, (vk_driven *)(void *)client, "vk_hosted_scan_new_key", command,
                        key, keylen, match, matchlen, count);
}

VK_API vk_status vk_hosted_scan_next(vk_scan *scan, vk_async_fn fn, void *userdata)
{
    return scan_next(scan, VK_DRIVEN_HOSTED, "vk_hosted_scan_next", fn, userdata);
}
