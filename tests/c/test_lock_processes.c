/*
 * Mutual exclusion between processes (VKTEST_NEEDS_SERVER): N forked
 * processes take one lock M times each and do a non-atomic
 * read-modify-write of a server key inside; a marker key proves nobody
 * else is inside, and each holder's fencing token is above the last one. A holder killed with SIGKILL blocks the others for at
 * most its expiry plus the drift allowance.
 */
#include "vkclient.h"
#include "vktest.h"
#include "servers.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROCESSES 4
#define ITERATIONS 200

static vkt_server *server;

#define KEY(s) (s), strlen(s)

static vk_client *connect_client(void)
{
    vk_config *cfg = NULL;
    vk_client *c = NULL;
    if (vk_config_new(&cfg) != VK_OK)
        return NULL;
    if (vk_config_set_standalone(cfg, vkt_server_address(server)) == VK_OK)
        vk_client_new(&c, cfg);
    vk_config_free(cfg);
    return c;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs a command and returns its reply (caller frees), NULL on failure. */
static vk_reply *run(vk_client *c, int argc, const char *const *argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    vk_reply *reply = NULL;
    if (vk_client_command(&reply, c, NULL, argc, argv, lens) != VK_OK)
        return NULL;
    return reply;
}

typedef struct child_state {
    vk_client *client;
    int violations;
    int failures;
} child_state;

/* The value of a string reply as a number (0 for nil). */
static long long reply_number(const vk_reply *reply)
{
    size_t len = 0;
    const char *text = reply ? vk_reply_get_string(reply, &len) : NULL;
    char buf[32] = { 0 };
    if (text)
        memcpy(buf, text, len < sizeof buf - 1 ? len : sizeof buf - 1);
    return atoll(buf);
}

static vk_status increment_under_lock(void *userdata, vk_lock *lock)
{
    child_state *s = userdata;
    const char *setnx[3] = { "SETNX", "procs:inside", "1" };
    vk_reply *reply = run(s->client, 3, setnx);
    if (!reply || vk_reply_get_integer(reply) != 1)
        s->violations++;
    vk_reply_free(reply);

    /* Holders come one after another, across processes, so each one's
     * fencing token is above the one before. */
    char token[32];
    snprintf(token, sizeof token, "%lld", (long long)vk_lock_fencing_token(lock));
    const char *getset[3] = { "GETSET", "procs:last-token", token };
    reply = run(s->client, 3, getset);
    if (!reply || reply_number(reply) >= vk_lock_fencing_token(lock))
        s->violations++;
    vk_reply_free(reply);

    /* GET then SET: loses updates unless the lock excludes the others. */
    const char *get[2] = { "GET", "procs:counter" };
    reply = run(s->client, 2, get);
    long long value = reply_number(reply);
    vk_reply_free(reply);
    char next[32];
    snprintf(next, sizeof next, "%lld", value + 1);
    const char *set[3] = { "SET", "procs:counter", next };
    vk_reply_free(run(s->client, 3, set));

    const char *del[2] = { "DEL", "procs:inside" };
    vk_reply_free(run(s->client, 2, del));
    return VK_OK;
}

/* The body of each forked process; the exit code carries the result. */
static int child_main(void)
{
    child_state s = { connect_client(), 0, 0 };
    vk_lock_manager *m = NULL;
    if (!s.client || vk_lock_manager_new(&m, s.client) != VK_OK)
        return 2;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = 2;
    for (int i = 0; i < ITERATIONS; i++) {
        if (vk_lock_manager_with_lock_options(m, NULL, KEY("procs:lock"), &opts,
                                              increment_under_lock, &s) != VK_OK)
            s.failures++;
    }
    vk_lock_manager_free(m);
    vk_client_free(s.client);
    if (s.failures)
        return 3;
    return s.violations ? 4 : 0;
}

static void test_processes_exclude_each_other(void)
{
    pid_t pids[PROCESSES];
    for (int i = 0; i < PROCESSES; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(child_main());
    }
    for (int i = 0; i < PROCESSES; i++) {
        int status = 0;
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status));
        CHECK_EQ_INT(WEXITSTATUS(status), 0);
    }
    vk_client *c = connect_client();
    const char *get[2] = { "GET", "procs:counter" };
    vk_reply *reply = run(c, 2, get);
    size_t len = 0;
    const char *text = reply ? vk_reply_get_string(reply, &len) : NULL;
    CHECK(text != NULL);
    if (text)
        CHECK_EQ_INT(strtoll(text, NULL, 10), PROCESSES * ITERATIONS);
    vk_reply_free(reply);
    vk_client_free(c);
}

/* The holder takes the lock, tells the parent, and then hangs until it is
 * killed without releasing. */
static void holder_main(int ready_fd, int64_t expiry_ms)
{
    vk_client *c = connect_client();
    vk_lock_manager *m = NULL;
    vk_lock *lock = NULL;
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = expiry_ms;
    char ok = 0;
    if (c && vk_lock_manager_new(&m, c) == VK_OK &&
        vk_lock_manager_acquire(&lock, m, NULL, KEY("procs:killed"), &opts) == VK_OK)
        ok = 1;
    if (write(ready_fd, &ok, 1) != 1)
        _exit(2);
    for (;;)
        pause();
}

static void test_killed_holder_blocks_at_most_expiry(void)
{
    const int64_t expiry_ms = 1000;
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        holder_main(pipefd[1], expiry_ms);
    }
    close(pipefd[1]);
    char ok = 0;
    CHECK(read(pipefd[0], &ok, 1) == 1 && ok == 1);
    close(pipefd[0]);
    int64_t acquired_by_holder_at = now_ms();
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);

    vk_client *c = connect_client();
    vk_lock_manager *m = NULL;
    CHECK_OK(vk_lock_manager_new(&m, c));
    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_try_lock(&lock, m, NULL, KEY("procs:killed")));
    CHECK(lock == NULL); /* still held by the dead process */

    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 1000;
    opts.retry_delay_ms = 10;
    CHECK_OK(vk_lock_manager_acquire(&lock, m, NULL, KEY("procs:killed"), &opts));
    int64_t blocked = now_ms() - acquired_by_holder_at;
    /* expiry + drift (1000 * 0.01 + 2 ms), plus one jittered retry delay
     * (< 15 ms) and scheduling slack. */
    CHECK(blocked <= expiry_ms + 12 + 15 + 100);
    CHECK(blocked >= expiry_ms - 50);
    CHECK(lock != NULL);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);
    vk_lock_manager_free(m);
    vk_client_free(c);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(NULL);
    if (!server) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    RUN(test_processes_exclude_each_other);
    RUN(test_killed_holder_blocks_at_most_expiry);
    vkt_server_stop(server);
    return vkt_finish();
}
