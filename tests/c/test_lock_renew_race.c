/*
 * Automatic renewal started from two threads at once (VKTEST_NEEDS_SERVER):
 * exactly one renewer thread runs per lock, and none is left behind once
 * the lock is released. The observable is the process's own thread count
 * (/proc/self/task): this program has no other thread that stays.
 */
#include "vkclient.h"
#include "vktest.h"
#include "servers.h"

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

static vkt_server *server;
static vk_client *client;
static vk_lock_manager *manager;

static int count_threads(void)
{
    DIR *dir = opendir("/proc/self/task");
    if (dir == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

/* True once the thread count is at most n. A joined thread can still be
 * listed for a moment (the kernel wakes the joiner before it removes the
 * task); a renewer sleeps for a third of its 60 s expiry, far longer than
 * the wait here. */
static bool threads_settle_at_most(int n)
{
    int64_t give_up = vkt_now_ms() + vkt_scaled_ms(2000);
    for (;;) {
        int count = count_threads();
        if (count >= 0 && count <= n)
            return true;
        if (vkt_now_ms() >= give_up)
            return false;
        vkt_sleep_ms(1);
    }
}

typedef struct renew_call {
    vk_lock *lock;
    pthread_barrier_t *start;
    vk_status status;
} renew_call;

static void *call_auto_renew(void *arg)
{
    renew_call *call = arg;
    pthread_barrier_wait(call->start);
    call->status = vk_lock_auto_renew(call->lock);
    return NULL;
}

/* Fewer rounds under Valgrind (the suite sets VK_TEST_TIME_SCALE there),
 * where each thread start costs milliseconds. */
static int rounds_to_run(void)
{
    return vkt_scaled_ms(1) > 1 ? 30 : 300;
}

static void test_concurrent_auto_renew_starts_one_renewer(void)
{
    int base = count_threads();
    CHECK(base > 0);
    /* A long expiry: the renewer sleeps through the round (a third of it)
     * and sends nothing, so every round is only about starting it. */
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 60000;
    int rounds = rounds_to_run(), extra = 0, left_behind = 0, failed = 0;
    for (int i = 0; i < rounds; i++) {
        vk_lock *lock = NULL;
        if (vk_lock_manager_acquire(&lock, manager, NULL, "renew:race", 10, &opts) != VK_OK) {
            failed++;
            continue;
        }
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        renew_call calls[2] = {{lock, &start, VK_OK}, {lock, &start, VK_OK}};
        pthread_t threads[2];
        pthread_create(&threads[0], NULL, call_auto_renew, &calls[0]);
        pthread_create(&threads[1], NULL, call_auto_renew, &calls[1]);
        pthread_join(threads[0], NULL);
        pthread_join(threads[1], NULL);
        pthread_barrier_destroy(&start);
        if (calls[0].status != VK_OK || calls[1].status != VK_OK)
            failed++;
        if (!threads_settle_at_most(base + 1))
            extra++;
        if (vk_lock_unlock(lock, NULL) != VK_OK)
            failed++;
        vk_lock_free(lock);
        if (!threads_settle_at_most(base))
            left_behind++;
    }
    CHECK_EQ_INT(failed, 0);
    CHECK_EQ_INT(extra, 0);
    CHECK_EQ_INT(left_behind, 0);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    CHECK(server != NULL);
    if (server == NULL)
        return vkt_finish();
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, vkt_server_address(server)));
    CHECK_OK(vk_client_new(&client, cfg));
    vk_config_free(cfg);
    CHECK_OK(vk_lock_manager_new(&manager, client));

    RUN(test_concurrent_auto_renew_starts_one_renewer);

    vk_lock_manager_free(manager);
    vk_client_free(client);
    vkt_server_stop(server);
    return vkt_finish();
}
