/*
 * Redlock over three independent servers (VKTEST_NEEDS_SERVER): a majority
 * grants the lock, a minority cannot, and fencing tokens keep increasing
 * whichever majority the next holder reaches, even when a node comes back
 * empty after a crash.
 */
#include "vkclient.h"
#include "vktest.h"
#include "servers.h"

#include <pthread.h>
#include <stdatomic.h>

#define NODES 3

static vkt_server *servers[NODES];
static vk_client *clients[NODES];
static vk_lock_manager *manager;

static vk_client *connect_client(const vkt_server *s)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, vkt_server_address(s)));
    /* A dead node must fail fast, not hold up the quorum. */
    CHECK_OK(vk_config_set_dial_timeout_ms(cfg, 300));
    CHECK_OK(vk_config_set_max_retries(cfg, -1));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

#define KEY(s) (s), strlen(s)

/* The lock value stored on node i, or NULL. */
static char *value_on(int i, const char *key)
{
    const char *argv[2] = { "GET", key };
    char *raw = vkt_server_cmd(servers[i], argv, 2);
    return raw;
}

static void test_all_nodes_up(void)
{
    vk_lock *lock = NULL, *other = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("quorum")));
    CHECK(lock != NULL);
    for (int i = 0; i < NODES; i++) {
        char *raw = value_on(i, "quorum");
        CHECK(raw != NULL && raw[0] == '$' && raw[1] != '-');
        free(raw);
    }
    CHECK_OK(vk_lock_manager_try_lock(&other, manager, NULL, KEY("quorum")));
    CHECK(other == NULL);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
}

/* A lock taken by someone else on one node only does not block a
 * majority; on two nodes it does. */
static void test_minority_holder_does_not_block(void)
{
    const char *set[] = { "SET", "split", "someone-else", "PX", "10000" };
    free(vkt_server_cmd(servers[0], set, 5));
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("split")));
    CHECK(lock != NULL);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
    /* A status reply carries the value on the first line. */
    const char *get_as_status[] = {
        "EVAL", "return {ok = redis.call('GET', KEYS[1]) or 'nil'}", "1", "split" };
    char *raw = vkt_server_cmd(servers[0], get_as_status, 4);
    CHECK(raw != NULL && strcmp(raw, "+someone-else") == 0);
    free(raw);

    free(vkt_server_cmd(servers[1], set, 5));
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("split")));
    CHECK(lock == NULL);
}

static int64_t acquire_token(const char *key)
{
    vk_lock *lock = NULL;
    vk_status st = vk_lock_manager_try_lock(&lock, manager, NULL, key, strlen(key));
    CHECK_OK(st);
    CHECK(lock != NULL);
    if (!lock)
        return -1;
    int64_t token = vk_lock_fencing_token(lock);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
    return token;
}

static void test_one_node_down_then_two(void)
{
    int64_t before = acquire_token("failover");
    vkt_server_kill(servers[0]);
    int64_t with_two = acquire_token("failover");
    CHECK(with_two > before);

    /* Node 0 comes back empty (no persistence): its counter restarts at 0,
     * yet the next token still follows the last one. */
    CHECK(vkt_server_restart(servers[0]));
    vkt_server_kill(servers[1]);
    int64_t after_restart = 0;
    for (int i = 0; i < 150 && after_restart <= 0; i++) {
        vk_lock *lock = NULL;
        if (vk_lock_manager_try_lock(&lock, manager, NULL, KEY("failover")) == VK_OK && lock) {
            after_restart = vk_lock_fencing_token(lock);
            CHECK_OK(vk_lock_unlock(lock, NULL));
            vk_lock_free(lock);
        } else {
            vk_lock_free(lock);
            struct timespec ts = { 0, 100 * 1000000L };
            nanosleep(&ts, NULL); /* the client's reconnect back-off */
        }
    }
    CHECK(after_restart > with_two);

    /* Two of three down: refused, as an error (not a silent "busy"). */
    vkt_server_kill(servers[0]);
    vk_lock *lock = NULL;
    vk_status st = vk_lock_manager_try_lock(&lock, manager, NULL, KEY("failover"));
    CHECK(st != VK_OK);
    CHECK(lock == NULL);
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 2;
    opts.retry_delay_ms = 10;
    st = vk_lock_manager_acquire(&lock, manager, NULL, KEY("failover"), &opts);
    CHECK(st != VK_OK && st != VK_ERR_LOCK_ACQUIRE);
    CHECK(lock == NULL);
    /* The one live node was not left holding our value. */
    char *raw = value_on(2, "failover");
    CHECK(raw != NULL && strncmp(raw, "$-1", 3) == 0);
    free(raw);
    CHECK(vkt_server_restart(servers[0]));
    CHECK(vkt_server_restart(servers[1]));
}

/* ---- tokens under contention ------------------------------------------------ */

#define THREADS 3
#define ROUNDS 40

static int64_t last_token;
static atomic_int regressions;
static atomic_int acquired;

static vk_status record_token(void *userdata, vk_lock *lock)
{
    (void)userdata;
    int64_t token = vk_lock_fencing_token(lock);
    if (token <= last_token)
        atomic_fetch_add(&regressions, 1);
    last_token = token;
    atomic_fetch_add(&acquired, 1);
    return VK_OK;
}

static void *contend(void *arg)
{
    (void)arg;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = 5;
    for (int i = 0; i < ROUNDS; i++)
        vk_lock_manager_with_lock_options(manager, NULL, KEY("tokens"), &opts, record_token, NULL);
    return NULL;
}

static void test_tokens_increase_under_contention(void)
{
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, contend, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    CHECK_EQ_INT(atomic_load(&acquired), THREADS * ROUNDS);
    CHECK_EQ_INT(atomic_load(&regressions), 0);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    for (int i = 0; i < NODES; i++) {
        servers[i] = vkt_server_start(NULL);
        if (!servers[i]) {
            fprintf(stderr, "cannot start %s\n", vkt_server_binary());
            return 1;
        }
        clients[i] = connect_client(servers[i]);
    }
    CHECK_OK(vk_lock_manager_new_quorum(&manager, clients, NODES));
    if (manager) {
        RUN(test_all_nodes_up);
        RUN(test_minority_holder_does_not_block);
        RUN(test_tokens_increase_under_contention);
        RUN(test_one_node_down_then_two);
    }
    vk_lock_manager_free(manager);
    for (int i = 0; i < NODES; i++) {
        vk_client_free(clients[i]);
        vkt_server_stop(servers[i]);
    }
    return vkt_finish();
}
