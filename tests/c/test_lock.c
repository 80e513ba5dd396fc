/*
 * The distributed lock on one node (VKTEST_NEEDS_SERVER): NULL handles,
 * validation texts, contention between threads, expiry, release rules,
 * WithLock, cancellation, fencing tokens, extend and automatic renewal.
 */
#include "vkclient.h"
#include "contention.h"
#include "vktest.h"
#include "servers.h"
#include "config.h"
#include "cluster.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

static vkt_server *server;
static vk_client *client;
static vk_lock_manager *manager;

static vk_client *connect_client(const vkt_server *s)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, vkt_server_address(s)));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* GET through the client; NULL when the key does not exist. */
static char *get_key(const char *key)
{
    const char *argv[2] = { "GET", key };
    size_t argvlen[2] = { 3, strlen(key) };
    vk_reply *reply = NULL;
    char *value = NULL;
    if (vk_client_command(&reply, client, NULL, 2, argv, argvlen) == VK_OK &&
        vk_reply_get_type(reply) == VK_REPLY_STRING) {
        size_t len = 0;
        const char *s = vk_reply_get_string(reply, &len);
        value = strndup(s, len);
    }
    vk_reply_free(reply);
    return value;
}

static bool key_exists(const char *key)
{
    char *value = get_key(key);
    bool exists = value != NULL;
    free(value);
    return exists;
}

#define KEY(s) (s), strlen(s)

/* ---- NULL handles and validation ------------------------------------------ */

static vk_status noop_fn(void *userdata, vk_lock *lock)
{
    (void)userdata;
    (void)lock;
    return VK_OK;
}

static void test_null_handles(void)
{
    vk_lock *lock = (vk_lock *)1;
    vk_lock_manager *m = (vk_lock_manager *)1;
    CHECK_FAILS(vk_lock_manager_new(&m, NULL), VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK(m == NULL);
    vk_client *none[1] = { NULL };
    CHECK_FAILS(vk_lock_manager_new_quorum(&m, none, 1), VK_ERR_NIL_CLIENT,
                "redis client is nil");
    CHECK_FAILS(vk_lock_manager_new_quorum(&m, NULL, 0), VK_ERR_LOCK_NOT_INITIALIZED,
                "distributed lock is not initialized");
    CHECK_FAILS(vk_lock_manager_try_lock(&lock, NULL, NULL, KEY("k")), VK_ERR_NIL_LOCK_MANAGER,
                "lock manager is nil");
    CHECK(lock == NULL);
    CHECK_FAILS(vk_lock_manager_acquire(&lock, NULL, NULL, KEY("k"), NULL),
                VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    CHECK_FAILS(vk_lock_manager_with_lock(NULL, NULL, KEY("k"), noop_fn, NULL),
                VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    CHECK_FAILS(vk_lock_manager_with_lock_options(NULL, NULL, KEY("k"), NULL, noop_fn, NULL),
                VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil");
    CHECK_FAILS(vk_lock_manager_with_lock(manager, NULL, KEY("k"), NULL, NULL),
                VK_ERR_NIL_LOCK_FN, "lock function is nil");
    CHECK_FAILS(vk_lock_manager_with_lock_options(manager, NULL, KEY("k"), NULL, NULL, NULL),
                VK_ERR_NIL_LOCK_FN, "lock function is nil");
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    CHECK_FAILS(vk_lock_manager_unlock(manager, NULL, NULL), VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK,
                "lock handle is nil");
    CHECK_FAILS(vk_lock_manager_unlock(NULL, NULL, NULL), VK_ERR_NIL_LOCK_MANAGER,
                "lock manager is nil");
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    CHECK_FAILS(vk_lock_unlock(NULL, NULL), VK_ERR_NIL_LOCK_HANDLE,
                "lock handle is nil or not initialized");
    CHECK_FAILS(vk_lock_extend(NULL, NULL, 1000), VK_ERR_NIL_LOCK_HANDLE,
                "lock handle is nil or not initialized");
    CHECK_EQ_INT(vk_lock_validity_ms(NULL), 0);
    CHECK_EQ_INT(vk_lock_fencing_token(NULL), 0);
    size_t len = 7;
    CHECK(vk_lock_key(NULL, &len) == NULL);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(vk_lock_is_lost(NULL), 0);
    vk_lock_free(NULL);
    vk_lock_manager_free(NULL);
}

static void test_empty_keys(void)
{
    vk_lock *lock = NULL;
    const char *blanks[] = { "", " ", "\t\n ", "   " };
    for (size_t i = 0; i < sizeof blanks / sizeof blanks[0]; i++) {
        CHECK_FAILS(vk_lock_manager_try_lock(&lock, manager, NULL, KEY(blanks[i])),
                    VK_ERR_EMPTY_LOCK_KEY, "lock key cannot be empty");
        CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, KEY(blanks[i]), NULL),
                    VK_ERR_EMPTY_LOCK_KEY, "lock key cannot be empty");
        CHECK_FAILS(vk_lock_manager_with_lock(manager, NULL, KEY(blanks[i]), noop_fn, NULL),
                    VK_ERR_EMPTY_LOCK_KEY, "lock key cannot be empty");
    }
    CHECK_FAILS(vk_lock_manager_try_lock(&lock, manager, NULL, NULL, 3), VK_ERR_EMPTY_LOCK_KEY,
                "lock key cannot be empty");
}

static void test_options_checked_by_every_call(void)
{
    vk_lock *lock = NULL;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 0;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, KEY("opts"), &opts),
                VK_ERR_LOCK_EXPIRY_INVALID, "lock expiry must be greater than 0");
    CHECK_FAILS(vk_lock_manager_with_lock_options(manager, NULL, KEY("opts"), &opts, noop_fn,
                                                  NULL),
                VK_ERR_LOCK_EXPIRY_INVALID, "lock expiry must be greater than 0");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.tries = 0;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, KEY("opts"), &opts),
                VK_ERR_LOCK_TRIES_INVALID, "lock tries must be at least 1");
    opts.tries = 5000;
    CHECK_FAILS(vk_lock_manager_with_lock_options(manager, NULL, KEY("opts"), &opts, noop_fn,
                                                  NULL),
                VK_ERR_LOCK_TRIES_EXCEEDED, "lock tries exceeds maximum");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.retry_delay_ms = -10;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, KEY("opts"), &opts),
                VK_ERR_LOCK_RETRY_DELAY_NEGATIVE, "lock retry delay cannot be negative");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.drift_factor = 1.5;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, KEY("opts"), &opts),
                VK_ERR_LOCK_DRIFT_FACTOR_INVALID,
                "lock drift factor must be between 0 (inclusive) and 1 (exclusive)");
    opts = (vk_lock_options)VK_LOCK_OPTIONS_INIT;
    opts.version = 7;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, KEY("opts"), &opts),
                VK_ERR_INVALID_ARGUMENT,
                "invalid argument: lock options version 7 is newer than this library "
                "(which reads up to version 1)");
    CHECK(lock == NULL);
    CHECK(!key_exists("opts"));
}

static void test_extend_rejects_bad_expiry(void)
{
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("extend:bad")));
    CHECK(lock != NULL);
    CHECK_FAILS(vk_lock_extend(lock, NULL, 0), VK_ERR_LOCK_EXPIRY_INVALID,
                "lock expiry must be greater than 0");
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
}

static void test_freed_client(void)
{
    vk_client *own = connect_client(server);
    vk_lock_manager *m = NULL;
    CHECK_OK(vk_lock_manager_new(&m, own));
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, m, NULL, KEY("freed:held")));
    CHECK(lock != NULL);
    vk_client_free(own);
    vk_lock *other = NULL;
    CHECK_FAILS(vk_lock_manager_try_lock(&other, m, NULL, KEY("freed")), VK_ERR_NIL_CLIENT,
                "redis client is nil");
    CHECK_FAILS(vk_lock_unlock(lock, NULL), VK_ERR_NIL_CLIENT, "redis client is nil");
    vk_lock_free(lock);
    vk_lock_manager_free(m);
}

/* ---- basic behaviour ------------------------------------------------------- */

static void test_try_lock_and_unlock(void)
{
    vk_lock *first = NULL, *second = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&first, manager, NULL, KEY("job:1")));
    CHECK(first != NULL);
    size_t len = 0;
    CHECK_EQ_STR(vk_lock_key(first, &len), "job:1");
    CHECK_EQ_INT(len, 5);
    CHECK(vk_lock_validity_ms(first) > 9000);
    /* Redlock's allowance for clock drift comes off the expiry: 1% of
     * 10 s plus 2 ms. */
    CHECK(vk_lock_validity_ms(first) <= 10000 - 100 - 2);
    CHECK(vk_lock_fencing_token(first) > 0);
    CHECK_EQ_INT(vk_lock_is_lost(first), 0);

    char *value = get_key("job:1");
    CHECK(value != NULL && strlen(value) >= 32);
    free(value);
    /* The fencing counter shares the key's cluster slot. */
    char *counter = get_key("{job:1}:fencing");
    CHECK(counter != NULL && atoll(counter) == vk_lock_fencing_token(first));
    free(counter);

    /* Contention is not an error for TryLock. */
    CHECK_OK(vk_lock_manager_try_lock(&second, manager, NULL, KEY("job:1")));
    CHECK(second == NULL);

    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 2;
    opts.retry_delay_ms = 20;
    CHECK_FAILS(vk_lock_manager_acquire(&second, manager, NULL, KEY("job:1"), &opts),
                VK_ERR_LOCK_ACQUIRE, "failed to acquire lock \"job:1\": lock already taken");
    CHECK(second == NULL);

    CHECK_OK(vk_lock_unlock(first, NULL));
    CHECK_EQ_INT(vk_lock_validity_ms(first), 0);
    CHECK(!key_exists("job:1"));
    CHECK_FAILS(vk_lock_unlock(first, NULL), VK_ERR_LOCK_NOT_HELD,
                "lock was not held or already expired");
    vk_lock_free(first);

    CHECK_OK(vk_lock_manager_try_lock(&second, manager, NULL, KEY("job:1")));
    CHECK(second != NULL);
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    CHECK_OK(vk_lock_manager_unlock(manager, NULL, second));
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    vk_lock_free(second);
}

static void test_hash_tagged_key(void)
{
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("{user:7}:profile")));
    CHECK(lock != NULL);
    char *counter = get_key("{user:7}:profile:fencing");
    CHECK(counter != NULL && atoll(counter) == vk_lock_fencing_token(lock));
    free(counter);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
}

/* A key with a '}' but no hash tag cannot be wrapped in one: its counter
 * is "{n}:fencing:<key>", n chosen so that both share a cluster slot. */
static void test_key_with_a_closing_brace(void)
{
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("job}7")));
    CHECK(lock != NULL);
    const char *keys[] = {"KEYS", "*:fencing:job}7"};
    char *name = vkt_server_cmd_line(server, keys, 2, 2);
    CHECK(name != NULL && name[0] == '{');
    const char *close = name ? strchr(name, '}') : NULL;
    CHECK(close != NULL && strcmp(close, "}:fencing:job}7") == 0);
    if (close != NULL)
        CHECK_EQ_INT(vk__cluster_key_slot(name + 1, (size_t)(close - name - 1)),
                     vk__cluster_key_slot(KEY("job}7")));
    char *counter = name ? get_key(name) : NULL;
    CHECK(counter != NULL && atoll(counter) == vk_lock_fencing_token(lock));
    free(counter);
    free(name);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
}

static void test_binary_key(void)
{
    static const char key[] = { 'b', 'i', 'n', '\0', 'k' };
    vk_lock *lock = NULL, *other = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, key, sizeof key));
    CHECK(lock != NULL);
    CHECK_OK(vk_lock_manager_try_lock(&other, manager, NULL, key, sizeof key));
    CHECK(other == NULL);
    /* A different key that shares the prefix is independent. */
    CHECK_OK(vk_lock_manager_try_lock(&other, manager, NULL, key, 3));
    CHECK(other != NULL);
    CHECK_OK(vk_lock_unlock(other, NULL));
    vk_lock_free(other);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
}

static void test_expiry_lets_the_next_holder_in(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 300;
    vk_lock *holder = NULL, *next = NULL;
    CHECK_OK(vk_lock_manager_acquire(&holder, manager, NULL, KEY("expiry"), &opts));
    CHECK(holder != NULL);
    int64_t start = now_ms();
    opts.tries = 100;
    opts.retry_delay_ms = 20;
    CHECK_OK(vk_lock_manager_acquire(&next, manager, NULL, KEY("expiry"), &opts));
    int64_t waited = now_ms() - start;
    CHECK(next != NULL);
    CHECK(waited >= 250);
    CHECK(vk_lock_fencing_token(next) > vk_lock_fencing_token(holder));
    /* The first holder's lock expired and was taken over: its release must
     * not remove the new holder's lock. */
    CHECK_FAILS(vk_lock_unlock(holder, NULL), VK_ERR_LOCK_NOT_HELD,
                "lock was not held or already expired");
    CHECK(key_exists("expiry"));
    vk_lock *third = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&third, manager, NULL, KEY("expiry")));
    CHECK(third == NULL);
    CHECK_OK(vk_lock_unlock(next, NULL));
    vk_lock_free(next);
    vk_lock_free(holder);
}

static void test_unlock_after_expiry(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 100;
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_acquire(&lock, manager, NULL, KEY("expired"), &opts));
    sleep_ms(200);
    CHECK_EQ_INT(vk_lock_validity_ms(lock), 0);
    CHECK_FAILS(vk_lock_unlock(lock, NULL), VK_ERR_LOCK_NOT_HELD,
                "lock was not held or already expired");
    CHECK_FAILS(vk_lock_extend(lock, NULL, 1000), VK_ERR_LOCK_NOT_HELD,
                "lock was not held or already expired");
    vk_lock_free(lock);
}

static void test_extend_keeps_the_lock(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 300;
    vk_lock *lock = NULL, *other = NULL;
    CHECK_OK(vk_lock_manager_acquire(&lock, manager, NULL, KEY("extend"), &opts));
    sleep_ms(200);
    CHECK_OK(vk_lock_extend(lock, NULL, 1000));
    CHECK(vk_lock_validity_ms(lock) > 900);
    sleep_ms(300); /* past the original expiry */
    CHECK_OK(vk_lock_manager_try_lock(&other, manager, NULL, KEY("extend")));
    CHECK(other == NULL);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
}

static void test_extend_after_takeover(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 100;
    vk_lock *lock = NULL, *next = NULL;
    CHECK_OK(vk_lock_manager_acquire(&lock, manager, NULL, KEY("extend:taken"), &opts));
    sleep_ms(200);
    CHECK_OK(vk_lock_manager_try_lock(&next, manager, NULL, KEY("extend:taken")));
    CHECK(next != NULL);
    CHECK_FAILS(vk_lock_extend(lock, NULL, 5000), VK_ERR_LOCK_NOT_HELD,
                "lock was not held or already expired");
    /* The new holder's lock keeps its own expiry. */
    CHECK(vk_lock_validity_ms(next) > 9000);
    CHECK_OK(vk_lock_unlock(next, NULL));
    vk_lock_free(next);
    vk_lock_free(lock);
}

/* The manager resolves connections per operation: a handle outlives the
 * loss of every connection of its client. */
static void test_handle_survives_a_reconnect(void)
{
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("reconnect")));
    CHECK(lock != NULL);
    const char *kill_all[4] = { "CLIENT", "KILL", "TYPE", "normal" };
    free(vkt_server_cmd(server, kill_all, 4));
    /* Idle longer than the pool's idle check, which then finds the dropped
     * connections before a script is written to them (a script whose
     * reply is lost is not re-sent). */
    sleep_ms(1100);
    CHECK_OK(vk_lock_extend(lock, NULL, 5000));
    CHECK_OK(vk_lock_unlock(lock, NULL));
    CHECK(!key_exists("reconnect"));
    vk_lock_free(lock);
}

/* True when text is prefix followed by a cause that is an I/O failure's
 * own text (not empty, not wrapped twice). */
static bool has_cause(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(text, prefix, n) != 0 || text[n] == '\0' || strstr(text + n, prefix) != NULL) {
        fprintf(stderr, "unexpected error text: %s\n", text);
        return false;
    }
    return true;
}

/* try_lock: contention is no error, but a node that cannot be reached is,
 * worded as the original words it, with the cause's code. */
static void test_try_lock_fault_text(void)
{
    vkt_server *own = vkt_server_start(NULL);
    CHECK(own != NULL);
    if (!own)
        return;
    vk_client *c = connect_client(own);
    vk_lock_manager *m = NULL;
    CHECK_OK(vk_lock_manager_new(&m, c));
    vkt_server_kill(own);
    vk_lock *lock = NULL;
    vk_status st = vk_lock_manager_try_lock(&lock, m, NULL, KEY("job:\t1"));
    CHECK(st == VK_ERR_IO);
    CHECK(lock == NULL);
    CHECK(has_cause(vk_last_error(), "failed to attempt lock acquisition for \"job:\\t1\": "));
    vk_lock_manager_free(m);
    vk_client_free(c);
    vkt_server_stop(own);
}

/* An unlock that cannot reach the node is a fault, not "not held", and
 * the handle stays releasable for a later try. */
static void test_unlock_fault_keeps_the_handle(void)
{
    vkt_server *own = vkt_server_start(NULL);
    CHECK(own != NULL);
    if (!own)
        return;
    vk_client *c = connect_client(own);
    vk_lock_manager *m = NULL;
    CHECK_OK(vk_lock_manager_new(&m, c));
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, m, NULL, KEY("fault")));
    CHECK(lock != NULL);
    const char *get[2] = { "GET", "fault" };
    char *value = vkt_server_cmd_line(own, get, 2, 1);
    CHECK(value != NULL);

    vkt_server_kill(own);
    vk_status st = vk_lock_unlock(lock, NULL);
    CHECK(st != VK_OK && st != VK_ERR_LOCK_NOT_HELD);
    /* The original's wording, the cause's code. */
    CHECK(st == vk_last_status());
    CHECK(has_cause(vk_last_error(), "distributed lock: unlock: "));

    /* Back up with the lock restored: the same handle releases it. */
    CHECK(vkt_server_restart(own));
    const char *set[3] = { "SET", "fault", value ? value : "" };
    free(vkt_server_cmd(own, set, 3));
    st = VK_ERR_IO;
    for (int i = 0; i < 20 && st != VK_OK; i++) {
        st = vk_lock_unlock(lock, NULL);
        if (st != VK_OK)
            sleep_ms(50);
    }
    CHECK_OK(st);
    char *left = vkt_server_cmd(own, get, 2);
    CHECK(left != NULL && strcmp(left, "$-1") == 0);
    free(left);
    free(value);
    vk_lock_free(lock);
    vk_lock_manager_free(m);
    vk_client_free(c);
    vkt_server_stop(own);
}

/* ---- logs and metrics ----------------------------------------------------------- */

typedef struct events {
    pthread_mutex_t mutex;
    char keys[4][200];   /* the key field of the first log lines */
    int logged;
    int acquired, contended, released, not_held, holds;
} events;

static void record_log(void *userdata, vk_log_level level, const char *message,
                       const vk_field *fields, size_t nfields)
{
    (void)level;
    (void)message;
    events *e = userdata;
    pthread_mutex_lock(&e->mutex);
    for (size_t i = 0; i < nfields; i++) {
        if (strcmp(fields[i].key, "key") == 0 && e->logged < 4)
            snprintf(e->keys[e->logged++], sizeof e->keys[0], "%s", fields[i].value);
    }
    pthread_mutex_unlock(&e->mutex);
}

static const char *label(const vk_field *labels, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(labels[i].key, key) == 0)
            return labels[i].value;
    return "";
}

static void record_metric(void *userdata, const char *name, vk_metric_kind kind, double value,
                          const vk_field *labels, size_t nlabels)
{
    (void)value;
    events *e = userdata;
    const char *result = label(labels, nlabels, "result");
    pthread_mutex_lock(&e->mutex);
    if (strcmp(name, "redis_lock_acquisitions_total") == 0 && kind == VK_METRIC_COUNTER) {
        e->acquired += strcmp(result, "acquired") == 0;
        e->contended += strcmp(result, "contended") == 0;
    } else if (strcmp(name, "redis_lock_release_total") == 0) {
        e->released += strcmp(result, "released") == 0;
        e->not_held += strcmp(result, "not_held") == 0;
    } else if (strcmp(name, "redis_lock_hold_seconds") == 0 && kind == VK_METRIC_HISTOGRAM) {
        e->holds++;
    }
    pthread_mutex_unlock(&e->mutex);
}

static void test_logs_and_metrics(void)
{
    events e = { .mutex = PTHREAD_MUTEX_INITIALIZER };
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, vkt_server_address(server)));
    CHECK_OK(vk_config_set_logger(cfg, record_log, &e, NULL));
    CHECK_OK(vk_config_set_metrics(cfg, record_metric, &e, NULL));
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    vk_lock_manager *m = NULL;
    CHECK_OK(vk_lock_manager_new(&m, c));

    char key[201];
    memset(key, 'k', 200);
    key[200] = '\0';
    vk_lock *lock = NULL, *other = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, m, NULL, KEY(key)));
    CHECK_OK(vk_lock_manager_try_lock(&other, m, NULL, KEY(key)));
    CHECK(lock != NULL && other == NULL);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    CHECK_FAILS(vk_lock_unlock(lock, NULL), VK_ERR_LOCK_NOT_HELD,
                "lock was not held or already expired");
    vk_lock_free(lock);
    vk_lock_manager_free(m);
    vk_client_free(c);

    CHECK_EQ_INT(e.acquired, 1);
    CHECK_EQ_INT(e.contended, 1);
    CHECK_EQ_INT(e.released, 1);
    CHECK_EQ_INT(e.holds, 1);
    /* Quoted, cut to 128 characters, marked. */
    char want[160];
    snprintf(want, sizeof want, "\"%.127s...(truncated)", key);
    CHECK(e.logged >= 3);
    for (int i = 0; i < e.logged; i++)
        CHECK_EQ_STR(e.keys[i], want);
}

/* ---- WithLock ----------------------------------------------------------------- */

typedef struct probe {
    int calls;
    int64_t token;
    vk_lock_manager *manager;
    int other_got_in;
    int lost;
} probe;

static vk_status failing_fn(void *userdata, vk_lock *lock)
{
    probe *p = userdata;
    p->calls++;
    p->token = vk_lock_fencing_token(lock);
    return vk__fail_msg(VK_ERR_INVALID_ARGUMENT, "report generation broke");
}

static vk_status counting_fn(void *userdata, vk_lock *lock)
{
    probe *p = userdata;
    p->calls++;
    p->token = vk_lock_fencing_token(lock);
    return VK_OK;
}

static void test_with_lock_runs_and_releases(void)
{
    probe p = { 0 };
    CHECK_OK(vk_lock_manager_with_lock(manager, NULL, KEY("with"), counting_fn, &p));
    CHECK_EQ_INT(p.calls, 1);
    CHECK(p.token > 0);
    CHECK(!key_exists("with"));
}

static void test_with_lock_failing_fn_still_releases(void)
{
    probe p = { 0 };
    CHECK_FAILS(vk_lock_manager_with_lock(manager, NULL, KEY("with:fail"), failing_fn, &p),
                VK_ERR_LOCK_FN,
                "distributed lock: function execution: report generation broke");
    CHECK_EQ_INT(p.calls, 1);
    CHECK(!key_exists("with:fail"));
}

static void test_with_lock_contention_text(void)
{
    vk_lock *holder = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&holder, manager, NULL, KEY("job:\t2")));
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 2;
    opts.retry_delay_ms = 10;
    probe p = { 0 };
    CHECK_FAILS(vk_lock_manager_with_lock_options(manager, NULL, KEY("job:\t2"), &opts,
                                                  counting_fn, &p),
                VK_ERR_LOCK_ACQUIRE, "failed to acquire lock \"job:\\t2\": lock already taken");
    CHECK_EQ_INT(p.calls, 0);
    CHECK_OK(vk_lock_unlock(holder, NULL));
    vk_lock_free(holder);
}

static vk_status cancel_inside_fn(void *userdata, vk_lock *lock)
{
    (void)lock;
    vk_context_cancel(userdata);
    return VK_OK;
}

/* The release has its own budget: a context cancelled while fn ran does
 * not leave the lock behind. */
static void test_with_lock_releases_after_cancel(void)
{
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_lock_manager_with_lock(manager, ctx, KEY("with:cancel"), cancel_inside_fn, ctx));
    CHECK(!key_exists("with:cancel"));
    vk_context_free(ctx);
}

static vk_status slow_fn(void *userdata, vk_lock *lock)
{
    probe *p = userdata;
    p->calls++;
    sleep_ms(1000); /* more than three times the expiry */
    vk_lock *other = NULL;
    if (vk_lock_manager_try_lock(&other, p->manager, NULL, KEY("renew")) == VK_OK && other) {
        p->other_got_in = 1;
        vk_lock_unlock(other, NULL);
        vk_lock_free(other);
    }
    p->lost = vk_lock_is_lost(lock);
    return VK_OK;
}

static void test_auto_renew_keeps_the_lock(void)
{
    vk_lock_manager *second = NULL;
    vk_client *other_client = connect_client(server);
    CHECK_OK(vk_lock_manager_new(&second, other_client));
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 300;
    opts.auto_renew = 1;
    probe p = { .manager = second };
    CHECK_OK(vk_lock_manager_with_lock_options(manager, NULL, KEY("renew"), &opts, slow_fn, &p));
    CHECK_EQ_INT(p.calls, 1);
    CHECK_EQ_INT(p.other_got_in, 0);
    CHECK_EQ_INT(p.lost, 0);
    CHECK(!key_exists("renew"));

    /* Without renewal the same function outlives its lock. */
    opts.auto_renew = 0;
    p = (probe){ .manager = second };
    CHECK_OK(vk_lock_manager_with_lock_options(manager, NULL, KEY("renew"), &opts, slow_fn, &p));
    CHECK_EQ_INT(p.other_got_in, 1);
    vk_lock_manager_free(second);
    vk_client_free(other_client);
}

/* A renewal that finds the lock taken over marks it lost: fn sees that,
 * and with_lock reports it even though fn returned VK_OK. */
static vk_status overtaken_fn(void *userdata, vk_lock *lock)
{
    probe *p = userdata;
    p->calls++;
    const char *set[3] = { "SET", "renew:lost", "stranger" };
    free(vkt_server_cmd(server, set, 3));
    int64_t give_up = now_ms() + vkt_scaled_ms(3000);
    while (!vk_lock_is_lost(lock) && now_ms() < give_up)
        sleep_ms(10);
    p->lost = vk_lock_is_lost(lock);
    return VK_OK;
}

static void test_failed_renewal_marks_the_lock_lost(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 300;
    opts.auto_renew = 1;
    probe p = { 0 };
    CHECK_FAILS(vk_lock_manager_with_lock_options(manager, NULL, KEY("renew:lost"), &opts,
                                                  overtaken_fn, &p),
                VK_ERR_LOCK_LOST, "lock was lost while held");
    CHECK_EQ_INT(p.calls, 1);
    CHECK_EQ_INT(p.lost, 1);
    /* The release that followed left the new owner's value alone. */
    char *value = get_key("renew:lost");
    CHECK(value != NULL && strcmp(value, "stranger") == 0);
    free(value);
}

/* A handle from acquire with auto_renew keeps renewing until unlock. */
static void test_acquired_handle_renews_until_unlock(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 300;
    opts.auto_renew = 1;
    vk_lock *lock = NULL, *other = NULL;
    CHECK_OK(vk_lock_manager_acquire(&lock, manager, NULL, KEY("renew:handle"), &opts));
    CHECK(lock != NULL);
    CHECK_OK(vk_lock_auto_renew(lock)); /* already renewing: nothing changes */
    sleep_ms(1000);                     /* more than three times the expiry */
    CHECK_OK(vk_lock_manager_try_lock(&other, manager, NULL, KEY("renew:handle")));
    CHECK(other == NULL);
    CHECK_EQ_INT(vk_lock_is_lost(lock), 0);
    CHECK(vk_lock_validity_ms(lock) > 0);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    CHECK(!key_exists("renew:handle"));
    CHECK_FAILS(vk_lock_auto_renew(lock), VK_ERR_LOCK_NOT_HELD,
                "lock was not held or already expired");
    vk_lock_free(lock);

    /* Renewal started by hand on a try_lock handle; free stops it. */
    CHECK_OK(vk_lock_manager_try_lock(&lock, manager, NULL, KEY("renew:handle")));
    CHECK_OK(vk_lock_auto_renew(lock));
    vk_lock_free(lock);
    CHECK_FAILS(vk_lock_auto_renew(NULL), VK_ERR_NIL_LOCK_HANDLE,
                "lock handle is nil or not initialized");
}

/* ---- cancellation and deadlines ------------------------------------------------- */

typedef struct waiter {
    vk_context *ctx;
    vk_status status;
    int64_t returned_at;
} waiter;

static void *wait_for_lock(void *arg)
{
    waiter *w = arg;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = 1000; /* a long wait, so cancel lands in it */
    vk_lock *lock = NULL;
    w->status = vk_lock_manager_acquire(&lock, manager, w->ctx, KEY("cancel"), &opts);
    w->returned_at = now_ms();
    vk_lock_free(lock);
    return NULL;
}

static void test_cancel_during_retry_wait(void)
{
    vk_lock *holder = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&holder, manager, NULL, KEY("cancel")));
    waiter w = { 0 };
    CHECK_OK(vk_context_new(&w.ctx));
    pthread_t thread;
    pthread_create(&thread, NULL, wait_for_lock, &w);
    sleep_ms(300);
    int64_t cancelled_at = now_ms();
    CHECK_OK(vk_context_cancel(w.ctx));
    pthread_join(thread, NULL);
    CHECK_EQ_INT(w.status, VK_ERR_CANCELLED);
    CHECK(w.returned_at - cancelled_at < 100);
    vk_context_free(w.ctx);

    /* A deadline stops the retries the same way. */
    vk_context *ctx = NULL;
    CHECK_OK(vk_context_new(&ctx));
    CHECK_OK(vk_context_set_timeout_ms(ctx, 200));
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = 50;
    vk_lock *lock = NULL;
    int64_t start = now_ms();
    CHECK_EQ_INT(vk_lock_manager_acquire(&lock, manager, ctx, KEY("cancel"), &opts),
                 VK_ERR_TIMEOUT);
    CHECK(now_ms() - start < 400);
    CHECK(lock == NULL);
    vk_context_free(ctx);

    CHECK_OK(vk_lock_unlock(holder, NULL));
    vk_lock_free(holder);
}

/* ---- contention between threads ------------------------------------------------- */

#define THREADS 4
#define ROUNDS 100

static void test_contention_between_threads(void)
{
    vkt_contention r;
    vkt_run_contention(manager, "threads", THREADS, ROUNDS, &r);
    CHECK_EQ_INT(r.counter, THREADS * ROUNDS);
    CHECK_EQ_INT(r.overlaps, 0);
    CHECK_EQ_INT(r.token_regressions, 0);
    CHECK_EQ_INT(r.failures, 0);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(NULL);
    if (!server) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    client = connect_client(server);
    CHECK_OK(vk_lock_manager_new(&manager, client));
    if (client && manager) {
        RUN(test_null_handles);
        RUN(test_empty_keys);
        RUN(test_options_checked_by_every_call);
        RUN(test_extend_rejects_bad_expiry);
        RUN(test_freed_client);
        RUN(test_try_lock_and_unlock);
        RUN(test_hash_tagged_key);
        RUN(test_key_with_a_closing_brace);
        RUN(test_binary_key);
        RUN(test_expiry_lets_the_next_holder_in);
        RUN(test_unlock_after_expiry);
        RUN(test_extend_keeps_the_lock);
        RUN(test_extend_after_takeover);
        RUN(test_handle_survives_a_reconnect);
        RUN(test_unlock_fault_keeps_the_handle);
        RUN(test_try_lock_fault_text);
        RUN(test_logs_and_metrics);
        RUN(test_with_lock_runs_and_releases);
        RUN(test_with_lock_failing_fn_still_releases);
        RUN(test_with_lock_contention_text);
        RUN(test_with_lock_releases_after_cancel);
        RUN(test_auto_renew_keeps_the_lock);
        RUN(test_failed_renewal_marks_the_lock_lost);
        RUN(test_acquired_handle_renews_until_unlock);
        RUN(test_cancel_during_retry_wait);
        RUN(test_contention_between_threads);
    }
    vk_lock_manager_free(manager);
    vk_client_free(client);
    vkt_server_stop(server);
    return vkt_finish();
}
