/*
 * Fork safety (VKTEST_NEEDS_SERVER): a client made in the parent works in a
 * fork()ed child, also when several threads of the child use it at once,
 * and the parent's connection and event queue are never touched by the
 * child.
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Global, so the child (which exits without stopping the parent's server)
 * still reaches it: no leak is reported for the child. */
static vkt_server *server;

static long long client_id(vk_client *c)
{
    const char *argv[] = {"CLIENT", "ID"};
    size_t len[] = {6, 2};
    vk_reply *r = NULL;
    long long id = -1;
    if (vk_client_command(&r, c, NULL, 2, argv, len) == VK_OK)
        id = vk_reply_get_integer(r);
    vk_reply_free(r);
    return id;
}

static vk_client *new_client(vk_config **cfg_out, int pool_size, vk_event_delivery delivery,
                             vk_log_fn logger, void *userdata)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_pool_size(cfg, pool_size);
    vk_config_set_event_delivery(cfg, delivery);
    if (logger != NULL)
        vk_config_set_logger(cfg, logger, userdata, NULL);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    *cfg_out = cfg;
    return c;
}

/* Waits for the child; true when it exited with status 0. */
static bool child_succeeded(pid_t pid)
{
    int status = 0;
    if (pid <= 0 || waitpid(pid, &status, 0) != pid)
        return false;
    if (WIFSIGNALED(status))
        fprintf(stderr, "child %d killed by signal %d\n", (int)pid, WTERMSIG(status));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_child_and_parent_both_work(void)
{
    vk_config *cfg = NULL;
    vk_client *c = new_client(&cfg, 1, VK_EVENTS_ANY_THREAD, NULL, NULL);
    long long parent_id = client_id(c);
    CHECK(parent_id > 0);

    pid_t pid = fork();
    if (pid == 0) {
        /* The child gets a connection of its own, never the parent's. */
        long long child_id = client_id(c);
        int ok = child_id > 0 && child_id != parent_id;
        vk_client_free(c);
        vk_config_free(cfg);
        _exit(ok ? 0 : 1);
    }
    CHECK(child_succeeded(pid));

    /* Same connection as before the fork: the child did not close it. */
    CHECK_EQ_INT(client_id(c), parent_id);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* ---- many threads of a child at once ------------------------------------ */

#define CHILD_THREADS 4
#define COMMANDS_PER_THREAD 10

typedef struct child_worker {
    vk_client *client;
    pthread_barrier_t *start;
    int index;
    bool ok;
} child_worker;

static bool incr_returns(vk_client *c, const char *key, long long expected)
{
    const char *argv[] = {"INCR", key};
    size_t len[] = {4, strlen(key)};
    vk_reply *r = NULL;
    bool ok = vk_client_command(&r, c, NULL, 2, argv, len) == VK_OK &&
              vk_reply_get_type(r) == VK_REPLY_INTEGER && vk_reply_get_integer(r) == expected;
    if (!ok)
        fprintf(stderr, "child %d: INCR %s: %s\n", (int)getpid(), key, vk_last_error());
    vk_reply_free(r);
    return ok;
}

static void *child_worker_main(void *arg)
{
    child_worker *w = arg;
    char key[64];
    snprintf(key, sizeof key, "fork:%d:%d", (int)getpid(), w->index);
    /* All threads reach the client together: each of them finds the
     * client's state from before the fork. */
    pthread_barrier_wait(w->start);
    w->ok = true;
    for (long long i = 1; i <= COMMANDS_PER_THREAD && w->ok; i++)
        w->ok = incr_returns(w->client, key, i);
    return NULL;
}

/* The child: CHILD_THREADS threads on the client at once, right after the
 * fork. Exits 0 when every command of every thread succeeded. */
static void run_threads_in_child(vk_client *c, vk_config *cfg)
{
    /* A deadlock in the child ends it (SIGALRM), which the parent sees. */
    alarm((unsigned)(vkt_scaled_ms(30000) / 1000));
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CHILD_THREADS);
    child_worker workers[CHILD_THREADS];
    pthread_t threads[CHILD_THREADS];
    int started = 0;
    for (int i = 0; i < CHILD_THREADS; i++) {
        workers[i] = (child_worker){.client = c, .start = &start, .index = i};
        if (pthread_create(&threads[i], NULL, child_worker_main, &workers[i]) != 0)
            _exit(2);
        started++;
    }
    bool ok = true;
    for (int i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
        ok = ok && workers[i].ok;
    }
    pthread_barrier_destroy(&start);
    vk_client_free(c);
    vk_config_free(cfg);
    _exit(ok ? 0 : 1);
}

/* Forks to run; fewer under Valgrind (the suite sets VK_TEST_TIME_SCALE
 * there), where each fork copies the whole instrumented process and 200
 * would take minutes. */
static int forks_to_run(void)
{
    long long scale = vkt_scaled_ms(1);
    return scale > 1 ? 20 : 200;
}

/* After a fork, every thread of the child may find the client's state
 * stale at the same moment; the reset must run once (a second run would
 * free the parent's pool again and re-initialise locks in use). */
static void test_child_threads_reset_the_client_once(void)
{
    vk_config *cfg = NULL;
    vk_client *c = new_client(&cfg, CHILD_THREADS, VK_EVENTS_ANY_THREAD, NULL, NULL);
    long long parent_id = client_id(c);
    CHECK(parent_id > 0);

    int forks = forks_to_run(), failed = 0;
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0)
            run_threads_in_child(c, cfg);
        if (!child_succeeded(pid))
            failed++;
        /* The parent's idle connection survived the child. */
        if (client_id(c) != parent_id)
            failed++;
    }
    CHECK_EQ_INT(failed, 0);
    vk_client_free(c);
    vk_config_free(cfg);
}

/* ---- the event queue ----------------------------------------------------- */

/* The one eventfd this process has open (the client's event queue), or -1
 * when there is not exactly one. */
static int only_eventfd(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return -1;
    int found = -1, count = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        char path[300], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, "anon_inode:[eventfd]") == 0) {
            found = atoi(e->d_name);
            count++;
        }
    }
    closedir(dir);
    return count == 1 ? found : -1;
}

typedef struct log_record {
    int renewal_failures;
} log_record;

static void record_log(void *userdata, vk_log_level level, const char *message,
                       const vk_field *fields, size_t nfields)
{
    (void)level, (void)fields, (void)nfields;
    log_record *rec = userdata;
    if (strcmp(message, "lock renewal failed; the lock is lost") == 0)
        rec->renewal_failures++;
}

static bool run_command(vk_client *c, const char *name, const char *arg)
{
    const char *argv[] = {name, arg};
    size_t len[] = {strlen(name), strlen(arg)};
    vk_reply *r = NULL;
    bool ok = vk_client_command(&r, c, NULL, 2, argv, len) == VK_OK;
    vk_reply_free(r);
    return ok;
}

/* The child: a background thread (the lock renewer) queues an event, which
 * the child delivers with vk_client_poll_events(). Exits 0 when it was. */
static void queue_an_event_in_child(vk_client *c, vk_config *cfg, log_record *rec)
{
    alarm((unsigned)(vkt_scaled_ms(30000) / 1000));
    vk_lock_manager *m = NULL;
    vk_lock *lock = NULL;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 300;
    bool ok = vk_lock_manager_new(&m, c) == VK_OK &&
              vk_lock_manager_acquire(&lock, m, NULL, "fork:events", 11, &opts) == VK_OK &&
              vk_lock_auto_renew(lock) == VK_OK &&
              run_command(c, "DEL", "fork:events");   /* the next renewal fails */
    int64_t give_up = vkt_now_ms() + vkt_scaled_ms(5000);
    while (ok && !vk_lock_is_lost(lock) && vkt_now_ms() < give_up)
        vkt_sleep_ms(10);
    /* Delivered from the queue on this thread: no read of the eventfd, so
     * a shared descriptor would still hold the child's wake-up. */
    ok = ok && vk_lock_is_lost(lock) && vk_client_poll_events(c, 0) >= 1 &&
         rec->renewal_failures == 1;
    vk_lock_free(lock);
    vk_lock_manager_free(m);
    vk_client_free(c);
    vk_config_free(cfg);
    _exit(ok ? 0 : 1);
}

static void test_child_has_its_own_event_queue(void)
{
    log_record rec = {0};
    vk_config *cfg = NULL;
    vk_client *c = new_client(&cfg, 1, VK_EVENTS_QUEUED, record_log, &rec);
    int parent_fd = only_eventfd();
    CHECK(parent_fd >= 0);

    pid_t pid = fork();
    if (pid == 0)
        queue_an_event_in_child(c, cfg, &rec);
    CHECK(child_succeeded(pid));

    /* The child's wake-up went to its own eventfd: the parent's is not
     * readable, and the parent has nothing queued. */
    uint64_t counter = 0;
    errno = 0;
    CHECK(read(parent_fd, &counter, sizeof counter) < 0 && errno == EAGAIN);
    CHECK_EQ_INT(vk_client_poll_events(c, 0), 0);
    CHECK_EQ_INT(rec.renewal_failures, 0);
    vk_client_free(c);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    CHECK(server != NULL);
    if (server == NULL)
        return vkt_finish();
    RUN(test_child_and_parent_both_work);
    RUN(test_child_threads_reset_the_client_once);
    RUN(test_child_has_its_own_event_queue);
    vkt_server_stop(server);
    return vkt_finish();
}
