/*
 * async_lock_demo: the shared demo lock, taken without blocking, on a libuv
 * loop (vkclient_async.h).
 *
 *   async_lock_demo [host:port] [rounds]
 *
 * Each round acquires "vkclient:demo:lock" (waiting between tries on the
 * loop), increments the demo counter with a GET and a SET under it, and
 * releases it. It contends with the blocking demos in C, Python, Lua and
 * Ruby on the same key: the lock is the same, so no increment is lost.
 * While a round waits for the lock, the loop stays free for other work.
 */
#include <vkclient_async.h>
#include <vkclient/libuv.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_KEY "vkclient:demo:lock"
#define COUNTER_KEY "vkclient:demo:counter"

typedef struct demo {
    uv_loop_t *loop;
    vk_async *client;
    vk_async_lock_manager *locks;
    vk_lock *held;               /* the lock of the running round */
    int rounds_left;
    int status;                  /* the exit status */
} demo;

static void next_round(demo *d);

/* Ends the demo: what is held goes with the manager and the client. */
static void finish(demo *d, const char *what)
{
    if (what != NULL) {
        fprintf(stderr, "async_lock_demo: %s: %s\n", what, vk_last_error());
        d->status = 1;
    }
    vk_lock_free(d->held);
    d->held = NULL;
    vk_async_lock_manager_free(d->locks);
    d->locks = NULL;
    vk_async *client = d->client;
    d->client = NULL;
    vk_async_free(client);
}

static void on_unlocked(void *userdata, vk_status status)
{
    demo *d = userdata;
    vk_lock_free(d->held);
    d->held = NULL;
    if (status != VK_OK) {
        finish(d, "unlock");
        return;
    }
    next_round(d);
}

static void on_counter_set(void *userdata, vk_status status, vk_reply *reply)
{
    demo *d = userdata;
    bool ok = status == VK_OK && vk_reply_get_type(reply) != VK_REPLY_ERROR;
    vk_reply_free(reply);
    if (!ok || vk_async_lock_unlock(d->held, on_unlocked, d) != VK_OK)
        finish(d, "SET or unlock");
}

/* The critical section: a read-modify-write that would lose updates if two
 * holders ran it at once. Its two commands run on the loop too. */
static void on_counter(void *userdata, vk_status status, vk_reply *reply)
{
    demo *d = userdata;
    if (status != VK_OK || vk_reply_get_type(reply) == VK_REPLY_ERROR) {
        vk_reply_free(reply);
        finish(d, "GET");
        return;
    }
    size_t len = 0;
    const char *text = vk_reply_get_string(reply, &len);
    long long value = text != NULL ? strtoll(text, NULL, 10) : 0;
    vk_reply_free(reply);
    char next[32];
    snprintf(next, sizeof next, "%lld", value + 1);
    printf("  [C, event loop] holds %s (fencing token %lld, %lld ms left): counter %lld -> %s\n",
           LOCK_KEY, (long long)vk_lock_fencing_token(d->held),
           (long long)vk_lock_validity_ms(d->held), value, next);
    const char *set[] = {"SET", COUNTER_KEY, next};
    const size_t set_len[] = {3, strlen(COUNTER_KEY), strlen(next)};
    if (vk_async_command(d->client, 3, set, set_len, on_counter_set, d, NULL) != VK_OK)
        finish(d, "SET");
}

static void on_locked(void *userdata, vk_status status, vk_lock *lock)
{
    demo *d = userdata;
    if (status != VK_OK) {
        finish(d, "acquire");
        return;
    }
    d->held = lock;
    const char *get[] = {"GET", COUNTER_KEY};
    const size_t get_len[] = {3, strlen(COUNTER_KEY)};
    if (vk_async_command(d->client, 2, get, get_len, on_counter, d, NULL) != VK_OK)
        finish(d, "GET");
}

static void next_round(demo *d)
{
    if (d->rounds_left-- == 0) {
        finish(d, NULL);
        return;
    }
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 200;             /* other demos hold it meanwhile */
    opts.retry_delay_ms = 50;
    if (vk_async_lock_acquire(d->locks, LOCK_KEY, strlen(LOCK_KEY), &opts, on_locked, d, NULL) !=
        VK_OK)
        finish(d, "acquire");
}

int main(int argc, char **argv)
{
    const char *address = argc > 1 ? argv[1] : getenv("VK_DEMO_ADDR");
    if (address == NULL || *address == '\0')
        address = "127.0.0.1:6379";
    demo d = {.loop = uv_default_loop(), .rounds_left = argc > 2 ? atoi(argv[2]) : 3};

    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK || vk_config_set_standalone(cfg, address) != VK_OK) {
        fprintf(stderr, "async_lock_demo: config: %s\n", vk_last_error());
        return 1;
    }
    vk_loop_adapter adapter;
    vk_libuv_adapter(&adapter, d.loop);
    vk_status st = vk_async_new(&d.client, cfg, &adapter);
    vk_config_free(cfg);
    if (st == VK_OK)
        st = vk_async_lock_manager_new(&d.locks, &d.client, 1);
    if (st != VK_OK) {
        fprintf(stderr, "async_lock_demo: client: %s\n", vk_last_error());
        vk_async_free(d.client);
        return 1;
    }
    next_round(&d);
    uv_run(d.loop, UV_RUN_DEFAULT);   /* until finish() leaves nothing to wait for */
    uv_loop_close(d.loop);
    return d.status;
}
