#include "contention.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

typedef struct shared {
    vk_lock_manager *manager;
    const char *key;
    int rounds;
    atomic_int inside;
    atomic_int overlaps;
    atomic_int token_regressions;
    atomic_int failures;
    long counter;           /* touched only under the lock */
    int64_t last_token;     /* likewise */
} shared;

static vk_status critical_section(void *userdata, vk_lock *lock)
{
    shared *s = userdata;
    if (atomic_exchange(&s->inside, 1) != 0)
        atomic_fetch_add(&s->overlaps, 1);
    int64_t token = vk_lock_fencing_token(lock);
    if (token <= s->last_token)
        atomic_fetch_add(&s->token_regressions, 1);
    s->last_token = token;
    long seen = s->counter;
    sched_yield();   /* invite another holder in, if the lock let one */
    s->counter = seen + 1;
    atomic_store(&s->inside, 0);
    return VK_OK;
}

static void *contend(void *arg)
{
    shared *s = arg;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = 2;
    for (int i = 0; i < s->rounds; i++) {
        vk_status st = vk_lock_manager_with_lock_options(s->manager, NULL, s->key,
                                                         strlen(s->key), &opts,
                                                         critical_section, s);
        if (st != VK_OK) {
            atomic_fetch_add(&s->failures, 1);
            fprintf(stderr, "with_lock: %s\n", vk_last_error());
        }
    }
    return NULL;
}

void vkt_run_contention(vk_lock_manager *manager, const char *key, int threads, int rounds,
                        vkt_contention *out)
{
    shared s = {.manager = manager, .key = key, .rounds = rounds};
    atomic_init(&s.inside, 0);
    atomic_init(&s.overlaps, 0);
    atomic_init(&s.token_regressions, 0);
    atomic_init(&s.failures, 0);
    pthread_t tids[64];
    int started = 0;
    for (int i = 0; i < threads && i < 64; i++)
        if (pthread_create(&tids[i], NULL, contend, &s) == 0)
            started++;
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    out->counter = s.counter;
    out->overlaps = atomic_load(&s.overlaps);
    out->token_regressions = atomic_load(&s.token_regressions);
    out->failures = atomic_load(&s.failures) + (threads - started) * rounds;
}
