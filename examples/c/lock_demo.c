/*
 * lock_demo: the vkclient tour in one small program.
 *
 *   lock_demo [host:port] [rounds]
 *
 * Connects (address from the argument, else $VK_DEMO_ADDR, else
 * 127.0.0.1:6379), runs SET and GET, prints the client's status, then takes
 * the shared demo lock a few times. Each round increments a counter under
 * the lock, so several demo programs (C, Python, Lua, Ruby) contending on
 * the same key never lose an increment.
 */
#include <vkclient.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_KEY "vkclient:demo:lock"
#define COUNTER_KEY "vkclient:demo:counter"

static int fail(const char *what)
{
    fprintf(stderr, "lock_demo: %s: %s\n", what, vk_last_error());
    return 1;
}

/* Runs one command given as NUL-terminated strings; prints the reply. */
static vk_status run(vk_client *client, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    vk_reply *reply = NULL;
    vk_status st = vk_client_command(&reply, client, NULL, argc, argv, lens);
    if (st != VK_OK)
        return st;
    size_t len = 0;
    const char *text = vk_reply_get_string(reply, &len);
    printf("  %s %s -> ", argv[0], argc > 1 ? argv[1] : "");
    switch (vk_reply_get_type(reply)) {
    case VK_REPLY_INTEGER:
        printf("%lld\n", vk_reply_get_integer(reply));
        break;
    case VK_REPLY_NIL:
        printf("(nil)\n");
        break;
    case VK_REPLY_ERROR:
        printf("error: %.*s\n", (int)len, text);
        break;
    default:
        printf("%.*s\n", (int)len, text ? text : "");
        break;
    }
    vk_reply_free(reply);
    return VK_OK;
}

/* The critical section: a read-modify-write that would lose updates if two
 * holders ran it at once. */
static vk_status increment_counter(void *userdata, vk_lock *lock)
{
    vk_client *client = userdata;
    const char *get[] = {"GET", COUNTER_KEY};
    const size_t get_len[] = {3, strlen(COUNTER_KEY)};
    vk_reply *reply = NULL;
    vk_status st = vk_client_command(&reply, client, NULL, 2, get, get_len);
    if (st != VK_OK)
        return st;
    size_t len = 0;
    const char *text = vk_reply_get_string(reply, &len);
    long long value = text ? strtoll(text, NULL, 10) : 0;
    vk_reply_free(reply);

    char next[32];
    snprintf(next, sizeof next, "%lld", value + 1);
    const char *set[] = {"SET", COUNTER_KEY, next};
    const size_t set_len[] = {3, strlen(COUNTER_KEY), strlen(next)};
    st = vk_client_command(&reply, client, NULL, 3, set, set_len);
    vk_reply_free(reply);
    if (st == VK_OK)
        printf("  [C] holds %s (fencing token %lld, %lld ms left): counter %lld -> %s\n",
               LOCK_KEY, (long long)vk_lock_fencing_token(lock),
               (long long)vk_lock_validity_ms(lock), value, next);
    return st;
}

int main(int argc, char **argv)
{
    const char *address = argc > 1 ? argv[1] : getenv("VK_DEMO_ADDR");
    if (!address || !*address)
        address = "127.0.0.1:6379";
    int rounds = argc > 2 ? atoi(argv[2]) : 3;

    printf("vkclient %s (hiredis %s)\n", vk_version(), vk_hiredis_version());

    /* 1. Config: one topology, options left at their defaults. */
    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK || vk_config_set_standalone(cfg, address) != VK_OK)
        return fail("config");
    vk_config_set_read_timeout_ms(cfg, 2000);
    char *description = NULL;
    if (vk_config_describe(&description, cfg) == VK_OK)
        printf("config: %s\n", description);
    vk_free(description);

    /* 2. Client: validates, connects and pings; the config can go. */
    vk_client *client = NULL;
    vk_status st = vk_client_new(&client, cfg);
    vk_config_free(cfg);
    if (st != VK_OK)
        return fail("connect");

    /* 3. Commands: argv with lengths, replies as a tree. */
    const char *set[] = {"SET", "vkclient:demo:greeting", "hello from C"};
    const char *get[] = {"GET", "vkclient:demo:greeting"};
    if (run(client, 3, set) != VK_OK || run(client, 2, get) != VK_OK)
        return fail("command");

    /* 4. Status: a snapshot, not a probe. */
    vk_snapshot *snap = NULL;
    if (vk_client_snapshot(&snap, client) == VK_OK) {
        printf("status: connected=%d refresh_loop_running=%d\n",
               vk_snapshot_connected(snap), vk_snapshot_refresh_loop_running(snap));
        vk_snapshot_free(snap);
    }

    /* 5. The lock: with_lock acquires (retrying while another holder has
     * it), runs the function, and releases even when the function fails. */
    vk_lock_manager *locks = NULL;
    if (vk_lock_manager_new(&locks, client) != VK_OK)
        return fail("lock manager");
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 5000;
    opts.tries = 100;
    opts.retry_delay_ms = 50;
    int status = 0;
    for (int i = 0; i < rounds && status == 0; i++) {
        st = vk_lock_manager_with_lock_options(locks, NULL, LOCK_KEY, strlen(LOCK_KEY),
                                               &opts, increment_counter, client);
        if (st != VK_OK)
            status = fail("with_lock");
    }

    /* try_lock: one attempt; contention is not an error, just no lock. */
    vk_lock *lock = NULL;
    if (status == 0) {
        if (vk_lock_manager_try_lock(&lock, locks, NULL, LOCK_KEY, strlen(LOCK_KEY)) != VK_OK) {
            status = fail("try_lock");
        } else {
            printf("try_lock: %s\n", lock ? "acquired" : "held by someone else");
            if (lock && vk_lock_unlock(lock, NULL) != VK_OK)
                status = fail("unlock");
            vk_lock_free(lock);
        }
    }

    vk_lock_manager_free(locks);
    vk_client_free(client);
    return status;
}
