/*
 * Fuzzes the lock on hosted clients (vk_hosted_lock_manager_new): one to
 * three bytes-mode clients whose hosts open every connection at once,
 * write what is asked, and answer with what the input holds (any bytes a
 * server could send, in pieces whose sizes the input chooses), and whose
 * connections the input may break. The lock's phases (grant, raise, give
 * back, waits between tries, release, extend, renewal) see every kind of
 * reply, garbage included. Whatever comes, every lock operation completes
 * exactly once, never with a handle and a failure together, every release
 * started completes (at the latest as the clients are freed), and nothing
 * crashes or leaks.
 */
#include "vkclient_async.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_CLIENTS = 3, MAX_OPS = 6 };

typedef struct op {
    int completions;
    vk_lock *lock;            /* a handle given out, until its unlock ends */
    bool releasing;
} op;

static op ops[MAX_OPS];

static void on_released(void *userdata, vk_status status)
{
    (void)status;
    op *o = userdata;
    o->releasing = false;
    vk_lock_free(o->lock);
    o->lock = NULL;
}

static void on_extended(void *userdata, vk_status status)
{
    (void)status;
    op *o = userdata;
    /* Extended or not, it is released next (if that can still start). */
    o->releasing = vk_async_lock_unlock(o->lock, on_released, o) == VK_OK;
}

static void on_lock(void *userdata, vk_status status, vk_lock *lock)
{
    op *o = userdata;
    if (o->completions++ != 0)
        abort();   /* completed twice */
    if (status != VK_OK && lock != NULL)
        abort();   /* a handle with a failure */
    o->lock = lock;
    if (lock == NULL)
        return;
    vk_status st = (o - ops) % 2 == 0 ? vk_async_lock_extend(lock, 5000, on_extended, o)
                                      : vk_async_lock_unlock(lock, on_released, o);
    if (st == VK_OK)
        o->releasing = true;
}

/* Opens what each client wants opened and writes what it wants written. */
static void serve(vk_hosted *const *cs, int n)
{
    for (int i = 0; i < n; i++) {
        vk_hosted_wants w;
        for (int rounds = 0; rounds < 8; rounds++) {
            if (vk_hosted_get_wants(cs[i], 0, &w) != VK_OK)
                break;
            if (w.connect)
                vk_hosted_connected(cs[i], w.conn);
            else if (w.output_len > 0)
                vk_hosted_wrote(cs[i], w.conn, w.output_len);
            else
                break;
        }
        if (vk_hosted_tick_in_ms(cs[i]) == 0)
            vk_hosted_tick(cs[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    int clients = 1 + data[0] % MAX_CLIENTS;
    int count = 1 + data[1] % MAX_OPS;
    size_t lose_at = data[2];   /* the piece after which a connection is lost */
    int max_piece = 1 + data[3] % 64;
    data += 4;
    size -= 4;

    vk_hosted *cs[MAX_CLIENTS] = {NULL};
    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK)
        return 0;
    vk_config_set_standalone(cfg, "127.0.0.1:6379");
    vk_config_set_max_retries(cfg, 1);
    for (int i = 0; i < clients; i++) {
        if (vk_hosted_new(&cs[i], cfg) != VK_OK)
            abort();
    }
    vk_config_free(cfg);
    vk_async_lock_manager *m = NULL;
    if (vk_hosted_lock_manager_new(&m, cs, (size_t)clients) != VK_OK)
        abort();

    memset(ops, 0, sizeof ops);
    for (int i = 0; i < count; i++) {
        vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
        opts.tries = 2;
        opts.retry_delay_ms = 0;      /* the next try on the next tick */
        opts.auto_renew = i % 3 == 2; /* a renewal timer to cancel */
        vk_status st = i % 2 == 0 ? vk_async_lock_try(m, "k", 1, on_lock, &ops[i], NULL)
                                  : vk_async_lock_acquire(m, "k", 1, &opts, on_lock, &ops[i], NULL);
        if (st != VK_OK)
            abort();   /* valid arguments are never refused */
    }

    size_t pieces = 0;
    while (size > 0) {
        serve(cs, clients);
        int target = data[0] % clients;
        vk_hosted_wants w = {0};
        vk_hosted_get_wants(cs[target], 0, &w);
        size_t n = (size_t)(1 + (data[0] % max_piece));
        if (n > size)
            n = size;
        if (w.read)
            vk_hosted_received(cs[target], w.conn, (const char *)data, n);
        data += n;
        size -= n;
        if (++pieces == lose_at && w.read)
            vk_hosted_lost(cs[target], w.conn, VK_ERR_IO, "EOF");
    }
    serve(cs, clients);

    /* The manager goes first, then the clients: every operation still
     * running completes as they go, and the handles they gave out are
     * released by their completions. */
    vk_async_lock_manager_free(m);
    for (int i = 0; i < clients; i++)
        vk_hosted_free(cs[i]);
    for (int i = 0; i < count; i++) {
        if (ops[i].completions != 1 || ops[i].releasing)
            abort();   /* an acquisition or a release never completed */
        vk_lock_free(ops[i].lock);   /* one whose release could not start */
    }
    return 0;
}
