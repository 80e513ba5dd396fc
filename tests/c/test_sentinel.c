/*
 * Sentinel mode against real groups (VKTEST_NEEDS_SERVER): one master, two
 * replicas, three sentinels. Discovery, the sentinel list, clear errors for
 * an unknown master name and for unreachable sentinels, locks, the two
 * failovers (SENTINEL FAILOVER, and SIGKILL of the master) while two
 * threads write non-stop through one client that is never re-created (and
 * where each of their writes landed), and a master demoted behind the
 * client's back (READONLY, MASTERDOWN).
 */
#include "contention.h"
#include "vktest.h"
#include "sentinels.h"
#include "readback.h"
#include "vkclient.h"
#include "client.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GROUP "vkmaster"

static vkt_sentinel_group *group;

/* ---- clients --------------------------------------------------------------------- */

/* A sentinel config naming `count` of the group's sentinels, its log and
 * metrics recorded. */
static vk_config *sentinel_config(vkt_sentinel_group *g, const char *name, int count)
{
    vk_config *cfg = vkt_sentinel_config(g, name, count);
    vkt_sentinel_log_attach(cfg);
    return cfg;
}

static vk_status set_key(vk_client *c, const char *key, const char *value)
{
    const char *argv[] = {"SET", key, value};
    size_t len[] = {3, strlen(key), strlen(value)};
    vk_reply *r = NULL;
    vk_status st = vk_client_command(&r, c, NULL, 3, argv, len);
    if (st == VK_OK && vk_reply_get_type(r) == VK_REPLY_ERROR) {
        size_t n = 0;
        const char *text = vk_reply_get_string(r, &n);
        fprintf(stderr, "SET %s: %.*s\n", key, (int)n, text);
        st = VK_ERR_SERVER;
    }
    vk_reply_free(r);
    return st;
}

/* ---- discovery ------------------------------------------------------------------- */

static void test_writes_go_to_the_master(void)
{
    vkt_sentinel_log_reset();
    vk_config *cfg = sentinel_config(group, GROUP, VKT_SENTINELS);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    CHECK_EQ_INT(vkt_sentinel_log_read().connected, 1);
    CHECK_OK(set_key(c, "sentinel:hello", "world"));
    char *value = vkt_node_get(vkt_sentinel_group_node(group, 0), "sentinel:hello");
    CHECK_EQ_STR(value, "world");
    free(value);
    CHECK(vk_client_is_connected(c));
    vk_client_free(c);
}

/* Configured with one sentinel, the client learns the other two. */
static void test_sentinel_list_is_refreshed(void)
{
    vkt_sentinel_log_reset();
    vk_config *cfg = sentinel_config(group, GROUP, 1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    CHECK_EQ_INT(vkt_sentinel_log_read().discovered, VKT_SENTINELS - 1);
    CHECK_OK(set_key(c, "sentinel:list", "1"));
    vk_client_free(c);
}

static void test_unknown_master_name(void)
{
    vk_config *cfg = sentinel_config(group, "no-such-master", VKT_SENTINELS);
    vk_client *c = NULL;
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_SERVER,
                "redis sentinel: master \"no-such-master\" is unknown to every reachable "
                "sentinel");
    CHECK(c == NULL);
    vk_config_free(cfg);
}

/* The first reachable sentinel answers, however many are dead before it. */
static void test_dead_sentinel_is_skipped(void)
{
    /* A port nothing listens on: a sentinel that was just stopped. */
    vkt_server *gone = vkt_server_start(NULL);
    CHECK(gone != NULL);
    if (gone == NULL)
        return;
    char dead[32];
    snprintf(dead, sizeof dead, "%s", vkt_server_address(gone));
    vkt_server_stop(gone);

    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_sentinel(cfg, GROUP);
    vk_config_add_sentinel_address(cfg, dead);
    vk_config_add_sentinel_address(cfg, vkt_server_address(vkt_sentinel_group_sentinel(group, 2)));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK_OK(set_key(c, "sentinel:skip", "1"));
    vk_client_free(c);
    vk_config_free(cfg);
}

/* A sentinel that names a replica as the master (a stale or misconfigured
 * one): the node's own ROLE is checked, and the client refuses it. */
static void test_replica_named_as_master_is_refused(void)
{
    vkt_server *replica = vkt_sentinel_group_node(group, 1);
    vkt_server *misled = vkt_sentinel_start_single("vkreplica", vkt_server_port(replica), NULL);
    CHECK(misled != NULL);
    if (misled == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_sentinel(cfg, "vkreplica");
    vk_config_add_sentinel_address(cfg, vkt_server_address(misled));
    vk_client *c = NULL;
    char want[160];
    snprintf(want, sizeof want, "redis sentinel: %s is not a master (role: slave)",
             vkt_server_address(replica));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_SERVER, want);
    CHECK(c == NULL);
    vk_config_free(cfg);
    vkt_server_stop(misled);
}

/* A forked child uses the client on its own connections (and its own
 * watcher); the parent's client keeps working. */
static void test_fork_child_uses_the_client(void)
{
    vk_config *cfg = sentinel_config(group, GROUP, VKT_SENTINELS);
    vk_config_set_logger(cfg, NULL, NULL, NULL);
    vk_config_set_metrics(cfg, NULL, NULL, NULL);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    CHECK_OK(set_key(c, "fork:parent", "before"));
    /* Fork once the watcher has settled on its subscription, as pre-forking
     * servers do after start-up: whatever a thread is doing at the moment
     * of fork() stays behind in the child (for the watcher, at most one
     * connection attempt's memory). */
    usleep(300 * 1000);
    pid_t pid = fork();
    if (pid == 0) {
        vk_status st = set_key(c, "fork:child", "1");
        vk_client_free(c);
        _exit(st == VK_OK ? 0 : 1);
    }
    CHECK(pid > 0);
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *value = vkt_node_get(vkt_sentinel_group_node(group, 0), "fork:child");
    CHECK_EQ_STR(value, "1");
    free(value);
    CHECK_OK(set_key(c, "fork:parent", "after"));
    vk_client_free(c);
}

/* ---- locks ------------------------------------------------------------------------- */

#define LOCK_THREADS 4
#define LOCK_ROUNDS 50

static void test_lock_mutual_exclusion(void)
{
    vk_config *cfg = sentinel_config(group, GROUP, VKT_SENTINELS);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    vk_lock_manager *m = NULL;
    CHECK_OK(vk_lock_manager_new(&m, c));
    if (m == NULL) {
        vk_client_free(c);
        return;
    }
    vkt_contention r;
    vkt_run_contention(m, "sentinel:lock", LOCK_THREADS, LOCK_ROUNDS, &r);
    CHECK_EQ_INT(r.counter, LOCK_THREADS * LOCK_ROUNDS);
    CHECK_EQ_INT(r.overlaps, 0);
    CHECK_EQ_INT(r.token_regressions, 0);
    CHECK_EQ_INT(r.failures, 0);
    vk_lock_manager_free(m);
    vk_client_free(c);
}

/* ---- failovers under load -------------------------------------------------------- */

#define WRITERS 2
#define MS 1000   /* microseconds in a millisecond */

typedef enum { BY_COMMAND, BY_KILL } failover_kind;

/* One write: key "load:<writer>:<i>" with value i, i being its place in
 * the writer's record. */
typedef struct write_record {
    int64_t sent_us;   /* when the call began: nothing of it was sent before */
    int64_t done_us;   /* when it returned */
    bool ok;
} write_record;

typedef struct writer {
    vk_client *client;
    int id;
    atomic_bool *stop;
    /* Every write, in order; only the writer touches it until joined. */
    write_record *writes;
    long count, cap;
    int64_t first_error_us, last_error_us;
    /* Read by the test while the writer runs. */
    atomic_long ok, failed;
    _Atomic int64_t last_ok_sent_us;
} writer;

static void *write_loop(void *arg)
{
    writer *w = arg;
    while (!atomic_load(w->stop)) {
        if (w->count == w->cap) {
            long cap = w->cap > 0 ? 2 * w->cap : 4096;
            write_record *more = realloc(w->writes, (size_t)cap * sizeof *more);
            if (more == NULL)
                break;   /* the test then finds too few writes */
            w->writes = more;
            w->cap = cap;
        }
        long i = w->count;
        write_record *r = &w->writes[i];
        char key[64], value[32];
        snprintf(key, sizeof key, "load:%d:%ld", w->id, i);
        snprintf(value, sizeof value, "%ld", i);
        r->sent_us = vkt_now_us();
        r->ok = set_key(w->client, key, value) == VK_OK;
        r->done_us = vkt_now_us();
        w->count++;
        if (r->ok) {
            atomic_fetch_add(&w->ok, 1);
            atomic_store(&w->last_ok_sent_us, r->sent_us);
            continue;
        }
        /* Each failure is reported to the caller with its reason. */
        fprintf(stderr, "writer %d at %lld: %s (%d)\n", w->id, (long long)(r->done_us / MS),
                vk_last_error(), (int)vk_last_status());
        w->last_error_us = r->done_us;
        if (atomic_fetch_add(&w->failed, 1) == 0)
            w->first_error_us = w->last_error_us;
        usleep(20 * 1000);   /* as an application would before trying again */
    }
    return NULL;
}

/* Waits until every writer had a write acknowledged that it sent after
 * since_us; false after timeout_ms. */
static bool wait_writes_after(writer *w, int64_t since_us, int timeout_ms)
{
    int64_t deadline = vkt_now_us() + vkt_scaled_ms(timeout_ms) * MS;
    while (vkt_now_us() < deadline) {
        bool all = true;
        for (int i = 0; i < WRITERS; i++)
            all = all && atomic_load(&w[i].last_ok_sent_us) > since_us;
        if (all)
            return true;
        usleep(10 * 1000);
    }
    return false;
}

/* Which of w's writes node holds (its key with its value). */
static bool *keys_held(vkt_server *node, const writer *w)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "load:%d:", w->id);
    return vkt_keys_held(node, prefix, w->count);
}

/* Where every write landed, read back from the old and the new master once
 * the writers stopped. The old master is still a master at that point (the
 * sentinels demote it only some 10 s after the switch; when it was killed,
 * it came back empty after the switch), so it holds exactly the writes it
 * ran itself:
 * - none sent after the client logged its switch reached the old master,
 *   and every one of those that was acknowledged is on the new master;
 * - each writer had a write land on the new master within 5 s of the
 *   moment the sentinels first named it (promoted_us). */
static void check_where_writes_landed(writer *w, vkt_sentinel_group *g, int old, int promoted,
                                      failover_kind kind, int64_t switch_us, int64_t promoted_us)
{
    vkt_server *old_node = vkt_sentinel_group_node(g, old);
    vkt_server *new_node = vkt_sentinel_group_node(g, promoted);
    bool *on_old[WRITERS], *on_new[WRITERS];
    bool read = true;
    for (int i = 0; i < WRITERS; i++) {
        on_old[i] = keys_held(old_node, &w[i]);
        on_new[i] = keys_held(new_node, &w[i]);
        read = read && on_old[i] != NULL && on_new[i] != NULL;
    }
    /* Checked after reading: demoted meanwhile, it would hold the new
     * master's writes too, and the reading would prove nothing. */
    CHECK(vkt_sentinel_group_node_is_master(g, old));
    CHECK(read);
    long sent_after_switch = 0, to_old_after_switch = 0, lost = 0, on_old_total = 0;
    long to_old_after_promotion = 0;
    int64_t slowest_resume_us = 0;
    for (int i = 0; i < WRITERS && read; i++) {
        long resumed = -1;   /* the first write after the promotion on the new master */
        for (long k = 0; k < w[i].count; k++) {
            const write_record *r = &w[i].writes[k];
            on_old_total += on_old[i][k];
            if (r->sent_us > switch_us) {
                sent_after_switch++;
                to_old_after_switch += on_old[i][k];
                lost += r->ok && !on_new[i][k];
            } else if (r->sent_us >= promoted_us && on_old[i][k]) {
                /* Acknowledged by the old master before the client was
                 * told of the failover: lost when it resyncs. Reported,
                 * not checked: a client cannot know sooner than told. */
                to_old_after_promotion++;
            }
            if (resumed < 0 && r->sent_us >= promoted_us && r->ok && on_new[i][k])
                resumed = k;
        }
        CHECK(resumed >= 0);
        if (resumed < 0)
            continue;
        int64_t took = w[i].writes[resumed].done_us - promoted_us;
        CHECK(took <= vkt_scaled_ms(5000) * MS);
        if (took > slowest_resume_us)
            slowest_resume_us = took;
    }
    fprintf(stderr,
            "failover: writes landed on the new master %lld ms after the sentinels named it; "
            "%ld writes sent after the client's switch, %ld of them on the old master; "
            "%ld acknowledged by the old master between the promotion and the switch\n",
            (long long)(slowest_resume_us / MS), sent_after_switch, to_old_after_switch,
            to_old_after_promotion);
    CHECK(sent_after_switch > 0);
    CHECK_EQ_INT(to_old_after_switch, 0);
    CHECK_EQ_INT(lost, 0);
    /* The restarted node came back after the switch: nothing at all. */
    if (kind == BY_KILL)
        CHECK_EQ_INT(on_old_total, 0);
    for (int i = 0; i < WRITERS; i++) {
        free(on_old[i]);
        free(on_new[i]);
    }
}

/* When the client logged its switch to a new master; -1 after timeout_ms. */
static int64_t wait_switch(int timeout_ms)
{
    int64_t deadline = vkt_now_us() + vkt_scaled_ms(timeout_ms) * MS;
    while (vkt_now_us() < deadline) {
        vkt_sentinel_log log = vkt_sentinel_log_read();
        int64_t at = log.switches > 0 ? log.last_switch_us : 0;
        if (at > 0)
            return at;
        usleep(10 * 1000);
    }
    return -1;
}

/* Asks sentinel 0 for a failover of name and waits for the client's switch
 * (the time it was logged, or -1). A commanded failover is followed within
 * 5 s; on a busy machine a sentinel may abort it (no replica it heard from
 * recently enough), so it is asked again, as an operator would. */
static int64_t command_failover(vkt_sentinel_group *g, const char *name)
{
    int64_t switch_us = -1;
    for (int attempt = 0; attempt < 3 && switch_us < 0; attempt++) {
        const char *argv[] = {"SENTINEL", "FAILOVER", name};
        char *reply = vkt_server_cmd(vkt_sentinel_group_sentinel(g, 0), argv, 3);
        CHECK(reply != NULL && (strcmp(reply, "+OK") == 0 ||
                                (attempt > 0 && strncmp(reply, "-INPROG", 7) == 0)));
        free(reply);
        switch_us = wait_switch(5000);
    }
    return switch_us;
}

/* Polls every sentinel from before a failover starts and notes when one
 * first names a master other than node `old`: the moment the promotion
 * became visible to anyone who asks. */
typedef struct promotion_watch {
    vkt_sentinel_group *g;
    int old;
    atomic_bool stop;
    _Atomic int64_t seen_us;   /* 0 until then */
    pthread_t thread;
} promotion_watch;

static void *poll_promotion(void *arg)
{
    promotion_watch *p = arg;
    while (!atomic_load(&p->stop)) {
        for (int i = 0; i < VKT_SENTINELS; i++) {
            /* Noted as of the question: the earliest the answer can
             * date from, so the poll's own delay never widens a bound
             * measured from it. */
            int64_t asked = vkt_now_us();
            int m = vkt_sentinel_group_master_named_by(p->g, i);
            if (m >= 0 && m != p->old) {
                atomic_store(&p->seen_us, asked);
                return NULL;
            }
        }
        usleep(5 * 1000);
    }
    return NULL;
}

static void promotion_watch_start(promotion_watch *p, vkt_sentinel_group *g, int old)
{
    p->g = g;
    p->old = old;
    atomic_init(&p->stop, false);
    atomic_init(&p->seen_us, 0);
    pthread_create(&p->thread, NULL, poll_promotion, p);
}

/* When the promotion became visible; -1 when it did not within timeout_ms. */
static int64_t promotion_watch_stop(promotion_watch *p, int timeout_ms)
{
    int64_t deadline = vkt_now_us() + vkt_scaled_ms(timeout_ms) * MS;
    while (atomic_load(&p->seen_us) == 0 && vkt_now_us() < deadline)
        usleep(10 * 1000);
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    int64_t seen = atomic_load(&p->seen_us);
    return seen > 0 ? seen : -1;
}

/* The snapshot names the master the client follows and its switches. */
static void check_snapshot(vk_client *c, vkt_server *master, int switches)
{
    vk_snapshot *s = NULL;
    CHECK_OK(vk_client_snapshot(&s, c));
    CHECK_EQ_STR(vk_snapshot_mode(s), "sentinel");
    CHECK_EQ_STR(vk_snapshot_master_address(s), vkt_server_address(master));
    CHECK_EQ_INT(vk_snapshot_master_switches(s), switches);
    CHECK_EQ_INT(vk_snapshot_node_count(s), 0);
    vk_snapshot_free(s);
}

static void failover_under_load(vkt_sentinel_group *g, const char *name, failover_kind kind)
{
    vkt_sentinel_log_reset();
    vk_config *cfg = sentinel_config(g, name, VKT_SENTINELS);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    int old = vkt_sentinel_group_master(g);
    CHECK_EQ_INT(old, 0);
    vkt_server *old_node = vkt_sentinel_group_node(g, 0);
    check_snapshot(c, old_node, 0);

    atomic_bool stop = false;
    writer w[WRITERS];
    pthread_t threads[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        atomic_init(&w[i].ok, 0);
        atomic_init(&w[i].failed, 0);
        atomic_init(&w[i].last_ok_sent_us, 0);
        w[i].client = c;
        w[i].id = i;
        w[i].stop = &stop;
        pthread_create(&threads[i], NULL, write_loop, &w[i]);
    }
    /* A client without background threads follows on vk_client_tick(). */
    vk_config *driven_cfg = sentinel_config(g, name, VKT_SENTINELS);
    vk_config_set_logger(driven_cfg, NULL, NULL, NULL);
    vk_config_set_metrics(driven_cfg, NULL, NULL, NULL);
    vk_config_set_refresh_mode(driven_cfg, VK_REFRESH_DRIVEN);
    vk_client *driven = NULL;
    CHECK_OK(vk_client_new(&driven, driven_cfg));
    vk_config_free(driven_cfg);

    usleep(500 * 1000);
    CHECK(atomic_load(&w[0].ok) + atomic_load(&w[1].ok) > 0);
    CHECK_EQ_INT(atomic_load(&w[0].failed) + atomic_load(&w[1].failed), 0);

    promotion_watch watch;
    promotion_watch_start(&watch, g, 0);
    int64_t started = vkt_now_us();
    int64_t switch_us = -1;
    if (kind == BY_COMMAND) {
        switch_us = command_failover(g, name);
    } else {
        vkt_server_kill(old_node);
        /* The sentinels first need down-after (1 s) and an election. */
        switch_us = wait_switch(20000);
    }
    CHECK(switch_us > 0);
    int64_t promoted_us = promotion_watch_stop(&watch, 10000);
    CHECK(promoted_us > 0);
    if (kind == BY_KILL && switch_us > 0) {
        /* The killed master comes back, as under a process supervisor, and
         * is a master (an empty one) until the sentinels demote it some
         * 10 s later: no client may write to it (the writers' keys and the
         * driven client's are looked for on the new master). */
        CHECK(vkt_server_restart(old_node));
        /* The driven client was not ticked: its idle connection to the
         * old address is dead, and that sends it to the sentinels, not
         * back to the same address; discovery finds the new master, which
         * counts as a switch too. (After SENTINEL FAILOVER the old master
         * accepts writes until the sentinels demote it, so there only a
         * tick moves the client.) */
        vk_status driven_st = VK_ERR_IO;
        for (int i = 0; i < 100 && driven_st != VK_OK; i++) {
            driven_st = set_key(driven, "driven:rediscovered", name);
            if (driven_st != VK_OK)
                usleep(100 * 1000);
        }
        CHECK_OK(driven_st);
    }
    /* Writing resumes; check_where_writes_landed() says where, and when. */
    CHECK(switch_us > 0 && wait_writes_after(w, switch_us > promoted_us ? switch_us : promoted_us,
                                             5000));
    int promoted = vkt_sentinel_group_wait_new_master(g, old, (int)vkt_scaled_ms(10000));
    CHECK(promoted > 0);
    usleep(500 * 1000);   /* keep writing on the new master for a while */
    atomic_store(&stop, true);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(threads[i], NULL);
    if (promoted > 0 && switch_us > 0 && promoted_us > 0)
        check_where_writes_landed(w, g, old, promoted, kind, switch_us, promoted_us);

    char switch_to[64];
    int switches = vkt_sentinel_log_switches(switch_to, sizeof switch_to);
    int failovers = vkt_sentinel_log_read().failovers;

    long failed = atomic_load(&w[0].failed) + atomic_load(&w[1].failed);
    fprintf(stderr,
            "failover: the sentinels named the new master after %lld ms, the client switched "
            "after %lld ms; %ld writes, %ld failed\n",
            (long long)((promoted_us - started) / MS), (long long)((switch_us - started) / MS),
            (long)(atomic_load(&w[0].ok) + atomic_load(&w[1].ok)), failed);
    CHECK_EQ_INT(switches, 1);
    CHECK_EQ_INT(failovers, 1);
    if (promoted > 0) {
        vkt_server *master = vkt_sentinel_group_node(g, promoted);
        CHECK_EQ_STR(switch_to, vkt_server_address(master));
        check_snapshot(c, master, 1);
        if (kind == BY_KILL) {
            check_snapshot(driven, master, 1);
            char *value = vkt_node_get(master, "driven:rediscovered");
            CHECK_EQ_STR(value, name);
            free(value);
        }
        CHECK_OK(vk_client_tick(driven, NULL));
        CHECK_OK(set_key(driven, "driven:after", name));
        check_snapshot(driven, master, 1);
        char *value = vkt_node_get(master, "driven:after");
        CHECK_EQ_STR(value, name);
        free(value);
    }
    vk_client_free(driven);
    /* Failures are bounded: only inside the failover window, and few. */
    for (int i = 0; i < WRITERS; i++) {
        if (atomic_load(&w[i].failed) == 0)
            continue;
        CHECK(w[i].first_error_us >= started);
        CHECK(w[i].last_error_us <= switch_us + vkt_scaled_ms(1000) * MS);
    }
    /* ... at most one per writer per pause between its attempts (20 ms). */
    CHECK(failed <= WRITERS * ((switch_us - started) / (20 * MS) + 5));
    for (int i = 0; i < WRITERS; i++)
        free(w[i].writes);
    /* The same client, still connected, still writing. */
    CHECK(vk_client_is_connected(c));
    CHECK_OK(set_key(c, "after:failover", "1"));
    vk_client_free(c);
}

/* Runs one command on every data node of the group; true when all say OK. */
static bool on_every_node(vkt_sentinel_group *g, const char *const *argv, int argc)
{
    bool ok = true;
    for (int i = 0; i < VKT_SENTINEL_NODES; i++) {
        char *line = vkt_server_cmd(vkt_sentinel_group_node(g, i), argv, argc);
        ok &= line != NULL && strcmp(line, "+OK") == 0;
        free(line);
    }
    return ok;
}

/* The data nodes' auth in sentinel mode: an ACL user and password, then
 * the old password revoked and the connections that logged in with it
 * dropped, and a new password applied the way a GCP IAM token refresh
 * applies it. (Dropped after it was applied, an idle connection would be
 * logged in again at once and then found dead by the next write, which is
 * not retried: that is the pool's case, not this one.) */
static void test_acl_user_and_new_credentials(void)
{
    const char *create[] = {"ACL", "SETUSER", "vkapp", "on", ">first-secret", "~*", "&*", "+@all"};
    CHECK(on_every_node(group, create, 8));
    vk_config *cfg = sentinel_config(group, GROUP, VKT_SENTINELS);
    CHECK_OK(vk_config_set_static_password(cfg, "vkapp", "first-secret"));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    CHECK_OK(set_key(c, "auth:first", "1"));

    const char *rotate[] = {"ACL", "SETUSER", "vkapp", ">second-secret", "<first-secret"};
    CHECK(on_every_node(group, rotate, 5));
    const char *kill[] = {"CLIENT", "KILL", "USER", "vkapp"};
    for (int i = 0; i < VKT_SENTINEL_NODES; i++)
        free(vkt_server_cmd(vkt_sentinel_group_node(group, i), kill, 4));
    CHECK_OK(vk__client_apply_credentials(c, "vkapp", "second-secret"));
    /* The next connections authenticate with the new password. */
    CHECK_OK(set_key(c, "auth:second", "2"));
    char *value = vkt_node_get(vkt_sentinel_group_node(group, vkt_sentinel_group_master(group)),
                           "auth:second");
    CHECK_EQ_STR(value, "2");
    free(value);
    vk_client_free(c);

    /* A wrong password is refused with the server's reason. */
    cfg = sentinel_config(group, GROUP, VKT_SENTINELS);
    CHECK_OK(vk_config_set_static_password(cfg, "vkapp", "first-secret"));
    c = NULL;
    CHECK(vk_client_new(&c, cfg) != VK_OK);
    CHECK(c == NULL);
    CHECK(strstr(vk_last_error(), "WRONGPASS") != NULL);
    vk_config_free(cfg);
}

static void test_failover_command_under_load(void)
{
    failover_under_load(group, GROUP, BY_COMMAND);
}

/* The sentinels' own password (vk_config_set_sentinel_auth), on one more
 * sentinel that requires it. */
static void test_sentinel_auth(void)
{
    int master = vkt_sentinel_group_master(group);
    CHECK(master >= 0);
    if (master < 0)
        return;
    vkt_server *guarded = vkt_sentinel_start_single(
        GROUP, vkt_server_port(vkt_sentinel_group_node(group, master)), "sentinel-secret");
    CHECK(guarded != NULL);
    if (guarded == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_sentinel(cfg, GROUP);
    vk_config_add_sentinel_address(cfg, vkt_server_address(guarded));
    vk_config_set_sentinel_auth(cfg, NULL, "sentinel-secret");
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK_OK(set_key(c, "sentinel:auth", "1"));
    vk_client_free(c);

    vk_config_set_sentinel_auth(cfg, NULL, "wrong");
    c = NULL;
    char want[200];
    snprintf(want, sizeof want,
             "redis sentinel: all sentinels are unreachable: authentication failed: sentinel "
             "%s: WRONGPASS invalid username-password pair or user is disabled.",
             vkt_server_address(guarded));
    CHECK_FAILS(vk_client_new(&c, cfg), VK_ERR_IO, want);
    CHECK(c == NULL);
    vk_config_free(cfg);
    vkt_server_stop(guarded);
}

/* A fresh group: the master is killed, the sentinels promote a replica;
 * then every sentinel dies too. */
static void test_master_killed_under_load_then_sentinels_down(void)
{
    vkt_sentinel_group *g = vkt_sentinel_group_start("vkkilled");
    CHECK(g != NULL);
    if (g == NULL)
        return;
    failover_under_load(g, "vkkilled", BY_KILL);

    vk_config *cfg = sentinel_config(g, "vkkilled", VKT_SENTINELS);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    for (int i = 0; i < VKT_SENTINELS; i++)
        vkt_server_kill(vkt_sentinel_group_sentinel(g, i));
    /* A running client keeps its master without the sentinels ... */
    CHECK_OK(set_key(c, "sentinels:down", "1"));
    vk_client_free(c);
    /* ... but a new one cannot find it, and says why. */
    c = NULL;
    vk_status st = vk_client_new(&c, cfg);
    CHECK_EQ_INT(st, VK_ERR_IO);
    const char *prefix = "redis sentinel: all sentinels are unreachable: ";
    CHECK(strncmp(vk_last_error(), prefix, strlen(prefix)) == 0);
    const char *suffix = ": Connection refused";
    size_t len = strlen(vk_last_error());
    CHECK(len > strlen(suffix) && strcmp(vk_last_error() + len - strlen(suffix), suffix) == 0);
    fprintf(stderr, "all sentinels down: %s\n", vk_last_error());
    CHECK(c == NULL);
    vk_config_free(cfg);
    vkt_sentinel_group_stop(g);
}

/* ---- a master demoted behind the client's back ----------------------------------- */

/* A number from INFO <section>: `field` (e.g. "count=") of the line that
 * starts with `prefix` (e.g. "errorstat_READONLY:"); 0 without that line. */
static long info_number(vkt_server *node, const char *section, const char *prefix,
                        const char *field)
{
    const char *argv[] = {"INFO", section};
    long number = 0;
    /* Line 0 is the bulk header, line 1 the section title. */
    for (int line = 2; line < 100; line++) {
        char *text = vkt_server_cmd_line(node, argv, 2, line);
        bool end = text == NULL || text[0] == '\0';
        const char *at = end || strncmp(text, prefix, strlen(prefix)) != 0
                             ? NULL
                             : strstr(text, field);
        if (at != NULL)
            number = atol(at + strlen(field));
        free(text);
        if (end || at != NULL)
            break;
    }
    return number;
}

/* How many times node refused `command` without running it (READONLY,
 * MASTERDOWN, ...). The sentinels talk to the node too, but never with SET
 * or GET: refused SETs and GETs are the clients'. */
static long refused_calls(vkt_server *node, const char *command)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "cmdstat_%s:", command);
    return info_number(node, "commandstats", prefix, "rejected_calls=");
}

/* How many error replies starting with `code` node has sent, to anyone. */
static long errors_replied(vkt_server *node, const char *code)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "errorstat_%s:", code);
    return info_number(node, "errorstats", prefix, "count=");
}

/* Runs a command on a node; true when it says +OK. */
static bool node_ok(vkt_server *node, const char *const *argv, int argc)
{
    char *line = vkt_server_cmd(node, argv, argc);
    bool ok = line != NULL && strncmp(line, "+OK", 3) == 0;
    if (!ok)
        fprintf(stderr, "%s on %s: %s\n", argv[0], vkt_server_address(node),
                line != NULL ? line : "(no reply)");
    free(line);
    return ok;
}

/* Makes node a replica of the node at port, as the sentinels would but
 * keeping its client connections. */
static bool make_replica(vkt_server *node, int port)
{
    char text[16];
    snprintf(text, sizeof text, "%d", port);
    const char *argv[] = {"REPLICAOF", "127.0.0.1", text};
    return node_ok(node, argv, 3);
}

/* A driven client (no background thread) that is never ticked: it learns
 * of a failover only from what its own commands meet. */
static vk_client *untended_client(vkt_sentinel_group *g, const char *name)
{
    vk_config *cfg = sentinel_config(g, name, VKT_SENTINELS);
    vk_config_set_refresh_mode(cfg, VK_REFRESH_DRIVEN);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

/* The master that clients use is demoted behind their back. The sentinels
 * fail over while two clients miss it (driven clients that are not ticked:
 * they keep writing to the old master, which still takes writes). Then the
 * old master becomes a replica without its connections being dropped: the
 * sentinels demote it themselves some 10 s after the switch, but with a
 * CLIENT KILL that a client sees as a lost connection; a REPLICAOF by an
 * operator or an orchestrator keeps them. One client's next write meets
 * READONLY; once the replica has lost its master link and serves no stale
 * data, the other's next read meets MASTERDOWN. Each finds the master again
 * through the sentinels and succeeds within the same call, on the same
 * client. */
static void test_demoted_master_is_left_on_readonly_and_masterdown(void)
{
    const char *name = "vkdemoted";
    vkt_sentinel_group *g = vkt_sentinel_group_start(name);
    CHECK(g != NULL);
    if (g == NULL)
        return;
    vkt_sentinel_log_reset();
    vk_client *writer_client = untended_client(g, name);
    vk_client *reader_client = untended_client(g, name);
    int promoted = writer_client != NULL && reader_client != NULL
                       ? vkt_sentinel_group_failover(g, name, 0)
                       : -1;
    CHECK(promoted > 0);
    if (promoted <= 0) {
        vk_client_free(writer_client);
        vk_client_free(reader_client);
        vkt_sentinel_group_stop(g);
        return;
    }
    vkt_server *old = vkt_sentinel_group_node(g, 0);
    vkt_server *master = vkt_sentinel_group_node(g, promoted);

    /* Both missed the failover: their writes still go to the old master. */
    CHECK_OK(set_key(writer_client, "demoted:missed:writer", "1"));
    CHECK_OK(set_key(reader_client, "demoted:missed:reader", "1"));
    const char *missed[] = {"demoted:missed:writer", "demoted:missed:reader"};
    for (int i = 0; i < 2; i++) {
        char *value = vkt_node_get(old, missed[i]);
        CHECK_EQ_STR(value, "1");
        free(value);
        value = vkt_node_get(master, missed[i]);
        CHECK(value == NULL);
        free(value);
    }
    CHECK_EQ_INT(vkt_sentinel_log_switches(NULL, 0), 0);

    /* READONLY: the old master replicates the new one. */
    long refused = refused_calls(old, "set");
    long readonly = errors_replied(old, "READONLY");
    CHECK(make_replica(old, vkt_server_port(master)));
    CHECK_OK(set_key(writer_client, "demoted:readonly", "2"));
    /* One refusal, READONLY: once told, the client did not come back. */
    CHECK_EQ_INT(refused_calls(old, "set"), refused + 1);
    CHECK(errors_replied(old, "READONLY") > readonly);
    char *value = vkt_node_get(master, "demoted:readonly");
    CHECK_EQ_STR(value, "2");
    free(value);
    check_snapshot(writer_client, master, 1);
    char switch_to[64];
    CHECK_EQ_INT(vkt_sentinel_log_switches(switch_to, sizeof switch_to), 1);
    CHECK_EQ_STR(switch_to, vkt_server_address(master));

    /* MASTERDOWN: the replica's master cannot be reached (a port nothing
     * listens on) and it serves no stale data. A read, as a write meets
     * READONLY first. */
    refused = refused_calls(old, "get");
    long masterdown = errors_replied(old, "MASTERDOWN");
    const char *no_stale[] = {"CONFIG", "SET", "replica-serve-stale-data", "no"};
    CHECK(node_ok(old, no_stale, 4));
    CHECK(make_replica(old, vkt_free_port()));
    const char *get[] = {"GET", "demoted:readonly"};
    size_t get_len[] = {3, strlen(get[1])};
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, reader_client, NULL, 2, get, get_len));
    size_t n = 0;
    const char *got = vk_reply_get_string(r, &n);
    CHECK(got != NULL && n == 1 && got[0] == '2');
    vk_reply_free(r);
    CHECK_EQ_INT(refused_calls(old, "get"), refused + 1);
    /* The sentinels' PINGs meet MASTERDOWN too: more than one is fine. */
    CHECK(errors_replied(old, "MASTERDOWN") > masterdown);
    check_snapshot(reader_client, master, 1);
    CHECK_EQ_INT(vkt_sentinel_log_switches(switch_to, sizeof switch_to), 2);
    CHECK_EQ_STR(switch_to, vkt_server_address(master));
    CHECK_EQ_INT(vkt_sentinel_log_read().failovers, 2);

    /* Back in the group, as the sentinels would have it. */
    const char *stale[] = {"CONFIG", "SET", "replica-serve-stale-data", "yes"};
    CHECK(node_ok(old, stale, 4));
    CHECK(make_replica(old, vkt_server_port(master)));
    CHECK(vk_client_is_connected(writer_client));
    CHECK(vk_client_is_connected(reader_client));
    vk_client_free(writer_client);
    vk_client_free(reader_client);
    vkt_sentinel_group_stop(g);
}

/* Sentinels and nodes serving TLS only: discovery, the data connections
 * and a failover all go over verified TLS. */
static void test_tls_group(void)
{
    vkt_sentinel_group *g = vkt_sentinel_group_start_tls("vktls");
    CHECK(g != NULL);
    if (g == NULL)
        return;
    vkt_sentinel_log_reset();
    vk_config *cfg = sentinel_config(g, "vktls", VKT_SENTINELS);
    CHECK_OK(vk_config_set_tls(cfg, vkt_ca_base64()));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    CHECK_OK(set_key(c, "tls:before", "1"));

    CHECK(command_failover(g, "vktls") > 0);
    int promoted = vkt_sentinel_group_wait_new_master(g, 0, (int)vkt_scaled_ms(10000));
    CHECK(promoted > 0);
    CHECK_OK(set_key(c, "tls:after", "2"));
    if (promoted > 0) {
        char *value = vkt_node_get(vkt_sentinel_group_node(g, promoted), "tls:after");
        CHECK_EQ_STR(value, "2");
        free(value);
    }
    vk_client_free(c);

    /* A CA that did not sign the sentinels' certificates. */
    CHECK_OK(vk_config_set_tls(cfg, vkt_other_ca_base64()));
    c = NULL;
    CHECK_EQ_INT(vk_client_new(&c, cfg), VK_ERR_IO);
    const char *prefix = "redis sentinel: all sentinels are unreachable: TLS error: ";
    CHECK(strncmp(vk_last_error(), prefix, strlen(prefix)) == 0);
    fprintf(stderr, "wrong CA: %s\n", vk_last_error());
    CHECK(c == NULL);
    vk_config_free(cfg);
    vkt_sentinel_group_stop(g);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER VKTEST_FAILOVERS */
    group = vkt_sentinel_group_start(GROUP);
    CHECK(group != NULL);
    if (group == NULL)
        return vkt_finish();
    RUN(test_writes_go_to_the_master);
    RUN(test_sentinel_list_is_refreshed);
    RUN(test_unknown_master_name);
    RUN(test_dead_sentinel_is_skipped);
    RUN(test_replica_named_as_master_is_refused);
    RUN(test_fork_child_uses_the_client);
    RUN(test_lock_mutual_exclusion);
    RUN(test_acl_user_and_new_credentials);
    RUN(test_failover_command_under_load);
    RUN(test_sentinel_auth);
    vkt_sentinel_group_stop(group);
    RUN(test_master_killed_under_load_then_sentinels_down);
    RUN(test_demoted_master_is_left_on_readonly_and_masterdown);
    RUN(test_tls_group);
    return vkt_finish();
}
