/*
 * Sentinel mode against real groups (VKTEST_NEEDS_SERVER): one master, two
 * replicas, three sentinels. Discovery, the sentinel list, clear errors for
 * an unknown master name and for unreachable sentinels, locks, and the two
 * failovers (SENTINEL FAILOVER, and SIGKILL of the master) while two
 * threads write non-stop through one client that is never re-created.
 */
#include "contention.h"
#include "vktest.h"
#include "sentinels.h"
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

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- what the client logs and counts ----------------------------------------- */

static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static int connected_in_sentinel_mode;
static int sentinels_discovered;
static int switches_logged;
static int64_t last_switch_ms;
static char last_switch_to[64];
static int failovers_counted;

static void log_sink(void *userdata, vk_log_level level, const char *message,
                     const vk_field *fields, size_t nfields)
{
    (void)userdata;
    if (level >= VK_LOG_WARN || strstr(message, "sentinel") != NULL) {
        fprintf(stderr, "log at %lld: %s", (long long)now_ms(), message);
        for (size_t i = 0; i < nfields; i++)
            fprintf(stderr, " %s=%s", fields[i].key, fields[i].value);
        fputc('\n', stderr);
    }
    pthread_mutex_lock(&events_lock);
    if (strcmp(message, "connected to Redis/Valkey in sentinel mode") == 0)
        connected_in_sentinel_mode++;
    if (strcmp(message, "redis sentinel discovered") == 0)
        sentinels_discovered++;
    if (strcmp(message, "redis sentinel: switched to the new master") == 0) {
        switches_logged++;
        last_switch_ms = now_ms();
        for (size_t i = 0; i < nfields; i++) {
            if (strcmp(fields[i].key, "to") == 0)
                snprintf(last_switch_to, sizeof last_switch_to, "%s", fields[i].value);
        }
    }
    pthread_mutex_unlock(&events_lock);
}

static void metric_sink(void *userdata, const char *name, vk_metric_kind kind, double value,
                        const vk_field *labels, size_t nlabels)
{
    (void)userdata;
    (void)kind;
    (void)labels;
    (void)nlabels;
    if (strcmp(name, "redis_sentinel_failovers_total") == 0) {
        pthread_mutex_lock(&events_lock);
        failovers_counted += (int)value;
        pthread_mutex_unlock(&events_lock);
    }
}

static void reset_events(void)
{
    pthread_mutex_lock(&events_lock);
    connected_in_sentinel_mode = sentinels_discovered = switches_logged = 0;
    failovers_counted = 0;
    last_switch_ms = 0;
    last_switch_to[0] = '\0';
    pthread_mutex_unlock(&events_lock);
}

/* ---- clients --------------------------------------------------------------------- */

/* A sentinel config naming `count` of the group's sentinels. */
static vk_config *sentinel_config(vkt_sentinel_group *g, const char *name, int count)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_sentinel(cfg, name);
    for (int i = 0; i < count; i++)
        vk_config_add_sentinel_address(cfg, vkt_server_address(vkt_sentinel_group_sentinel(g, i)));
    vk_config_set_dial_timeout_ms(cfg, 500);
    vk_config_set_read_timeout_ms(cfg, 1000);
    vk_config_set_logger(cfg, log_sink, NULL, NULL);
    vk_config_set_metrics(cfg, metric_sink, NULL, NULL);
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

/* The value of key read straight from a node (NULL: none). */
static char *node_get(vkt_server *node, const char *key)
{
    const char *argv[] = {"GET", key};
    char *header = vkt_server_cmd_line(node, argv, 2, 0);
    bool missing = header == NULL || strcmp(header, "$-1") == 0;
    free(header);
    return missing ? NULL : vkt_server_cmd_line(node, argv, 2, 1);
}

/* ---- discovery ------------------------------------------------------------------- */

static void test_writes_go_to_the_master(void)
{
    reset_events();
    vk_config *cfg = sentinel_config(group, GROUP, VKT_SENTINELS);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    CHECK_EQ_INT(connected_in_sentinel_mode, 1);
    CHECK_OK(set_key(c, "sentinel:hello", "world"));
    char *value = node_get(vkt_sentinel_group_node(group, 0), "sentinel:hello");
    CHECK_EQ_STR(value, "world");
    free(value);
    CHECK(vk_client_is_connected(c));
    vk_client_free(c);
}

/* Configured with one sentinel, the client learns the other two. */
static void test_sentinel_list_is_refreshed(void)
{
    reset_events();
    vk_config *cfg = sentinel_config(group, GROUP, 1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    CHECK_EQ_INT(sentinels_discovered, VKT_SENTINELS - 1);
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
    char *value = node_get(vkt_sentinel_group_node(group, 0), "fork:child");
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
#define KEPT 256   /* the last successful writes each writer remembers */

typedef struct writer {
    vk_client *client;
    int id;
    atomic_bool *stop;
    long ok, failed;
    int64_t first_error_ms, last_error_ms;
    /* The last KEPT acknowledged writes: key index and when it was sent. */
    long kept_index[KEPT];
    int64_t kept_sent_ms[KEPT];
    int64_t last_ok_ms;
} writer;

static void *write_loop(void *arg)
{
    writer *w = arg;
    for (long i = 0; !atomic_load(w->stop); i++) {
        char key[64], value[32];
        snprintf(key, sizeof key, "load:%d:%ld", w->id, i);
        snprintf(value, sizeof value, "%ld", i);
        int64_t sent = now_ms();
        if (set_key(w->client, key, value) == VK_OK) {
            w->kept_index[w->ok % KEPT] = i;
            w->kept_sent_ms[w->ok % KEPT] = sent;
            w->ok++;
            w->last_ok_ms = now_ms();
            continue;
        }
        /* Each failure is reported to the caller with its reason. */
        fprintf(stderr, "writer %d at %lld: %s (%d)\n", w->id, (long long)now_ms(),
                vk_last_error(), (int)vk_last_status());
        w->last_error_ms = now_ms();
        if (w->failed++ == 0)
            w->first_error_ms = w->last_error_ms;
        usleep(20 * 1000);   /* as an application would before trying again */
    }
    return NULL;
}

/* Counts writes that succeeded since `since_ms`, sampled every 10 ms, until
 * every writer has one or timeout_ms passed; returns when that happened. */
static int64_t wait_writes_after(writer *w, int64_t since_ms, int timeout_ms)
{
    int64_t deadline = now_ms() + vkt_scaled_ms(timeout_ms);
    while (now_ms() < deadline) {
        bool all = true;
        for (int i = 0; i < WRITERS; i++)
            all = all && w[i].last_ok_ms > since_ms;
        if (all)
            return now_ms();
        usleep(10 * 1000);
    }
    return -1;
}

/* Acknowledged writes sent after the switch are on the new master (none
 * went to the demoted node, whose writes are discarded when it resyncs). */
static void check_writes_after_switch(writer *w, vkt_server *master, int64_t switch_ms)
{
    int checked = 0, missing = 0;
    for (int i = 0; i < WRITERS; i++) {
        long n = w[i].ok < KEPT ? w[i].ok : KEPT;
        for (long k = 0; k < n; k++) {
            if (w[i].kept_sent_ms[k] <= switch_ms)
                continue;
            char key[64], value[32];
            snprintf(key, sizeof key, "load:%d:%ld", w[i].id, w[i].kept_index[k]);
            snprintf(value, sizeof value, "%ld", w[i].kept_index[k]);
            char *got = node_get(master, key);
            checked++;
            if (got == NULL || strcmp(got, value) != 0)
                missing++;
            free(got);
        }
    }
    CHECK(checked > 0);
    CHECK_EQ_INT(missing, 0);
}

/* When the client logged its switch to a new master; -1 after timeout_ms. */
static int64_t wait_switch(int timeout_ms)
{
    int64_t deadline = now_ms() + vkt_scaled_ms(timeout_ms);
    while (now_ms() < deadline) {
        pthread_mutex_lock(&events_lock);
        int64_t at = switches_logged > 0 ? last_switch_ms : 0;
        pthread_mutex_unlock(&events_lock);
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
    int64_t switch_ms = -1;
    for (int attempt = 0; attempt < 3 && switch_ms < 0; attempt++) {
        const char *argv[] = {"SENTINEL", "FAILOVER", name};
        char *reply = vkt_server_cmd(vkt_sentinel_group_sentinel(g, 0), argv, 3);
        CHECK(reply != NULL && (strcmp(reply, "+OK") == 0 ||
                                (attempt > 0 && strncmp(reply, "-INPROG", 7) == 0)));
        free(reply);
        switch_ms = wait_switch(5000);
    }
    return switch_ms;
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

typedef enum { BY_COMMAND, BY_KILL } failover_kind;

static void failover_under_load(vkt_sentinel_group *g, const char *name, failover_kind kind)
{
    reset_events();
    vk_config *cfg = sentinel_config(g, name, VKT_SENTINELS);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    if (c == NULL)
        return;
    int old = vkt_sentinel_group_master(g);
    CHECK_EQ_INT(old, 0);
    check_snapshot(c, vkt_sentinel_group_node(g, 0), 0);

    atomic_bool stop = false;
    writer w[WRITERS];
    pthread_t threads[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
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
    long ok_before = w[0].ok + w[1].ok;
    CHECK(ok_before > 0);
    CHECK_EQ_INT(w[0].failed + w[1].failed, 0);

    int64_t started = now_ms();
    int64_t switch_ms = -1;
    if (kind == BY_COMMAND) {
        switch_ms = command_failover(g, name);
    } else {
        vkt_server_kill(vkt_sentinel_group_node(g, 0));
        /* The sentinels first need down-after (1 s) and an election. */
        switch_ms = wait_switch(20000);
    }
    CHECK(switch_ms > 0);
    /* Writing resumes on the new master within 5 s of the switch. */
    int64_t resumed = switch_ms > 0 ? wait_writes_after(w, switch_ms, 5000) : -1;
    CHECK(resumed > 0);
    int promoted = vkt_sentinel_group_wait_new_master(g, old, (int)vkt_scaled_ms(10000));
    CHECK(promoted > 0);
    usleep(500 * 1000);   /* keep writing on the new master for a while */
    atomic_store(&stop, true);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(threads[i], NULL);

    pthread_mutex_lock(&events_lock);
    int switches = switches_logged, failovers = failovers_counted;
    char switch_to[64];
    snprintf(switch_to, sizeof switch_to, "%s", last_switch_to);
    pthread_mutex_unlock(&events_lock);

    long failed = w[0].failed + w[1].failed;
    fprintf(stderr,
            "failover: the client switched after %lld ms, writes resumed %lld ms later; "
            "%ld writes, %ld failed\n",
            (long long)(switch_ms - started), (long long)(resumed - switch_ms),
            w[0].ok + w[1].ok, failed);
    CHECK_EQ_INT(switches, 1);
    CHECK_EQ_INT(failovers, 1);
    if (promoted > 0) {
        vkt_server *master = vkt_sentinel_group_node(g, promoted);
        CHECK_EQ_STR(switch_to, vkt_server_address(master));
        check_writes_after_switch(w, master, switch_ms);
        check_snapshot(c, master, 1);
        if (kind == BY_KILL) {
            /* The driven client was not ticked: its commands lose the dead
             * master's connection and discovery finds the new one, which
             * counts as a switch too. (After SENTINEL FAILOVER the old
             * master accepts writes until the sentinels demote it, so
             * there only a tick moves the client.) */
            vk_status driven_st = VK_ERR_IO;
            for (int i = 0; i < 100 && driven_st != VK_OK; i++) {
                driven_st = set_key(driven, "driven:after", name);
                if (driven_st != VK_OK)
                    usleep(100 * 1000);
            }
            CHECK_OK(driven_st);
            check_snapshot(driven, master, 1);
        }
        CHECK_OK(vk_client_tick(driven, NULL));
        CHECK_OK(set_key(driven, "driven:after", name));
        check_snapshot(driven, master, 1);
        char *value = node_get(master, "driven:after");
        CHECK_EQ_STR(value, name);
        free(value);
    }
    vk_client_free(driven);
    /* Failures are bounded: only inside the failover window, and few. */
    for (int i = 0; i < WRITERS; i++) {
        if (w[i].failed == 0)
            continue;
        CHECK(w[i].first_error_ms >= started);
        CHECK(w[i].last_error_ms <= switch_ms + vkt_scaled_ms(1000));
    }
    /* ... at most one per writer per pause between its attempts (20 ms). */
    CHECK(failed <= WRITERS * ((switch_ms - started) / 20 + 5));
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

/* The data nodes' auth in sentinel mode: an ACL user and password, then a
 * new password applied the way a GCP IAM token refresh applies it, while
 * the old one is revoked and the old connections are dropped. */
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
    CHECK_OK(vk__client_apply_credentials(c, "vkapp", "second-secret"));
    const char *kill[] = {"CLIENT", "KILL", "USER", "vkapp"};
    for (int i = 0; i < VKT_SENTINEL_NODES; i++)
        free(vkt_server_cmd(vkt_sentinel_group_node(group, i), kill, 4));
    /* The next connections authenticate with the new password. */
    CHECK_OK(set_key(c, "auth:second", "2"));
    char *value = node_get(vkt_sentinel_group_node(group, vkt_sentinel_group_master(group)),
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

/* Sentinels and nodes serving TLS only: discovery, the data connections
 * and a failover all go over verified TLS. */
static void test_tls_group(void)
{
    vkt_sentinel_group *g = vkt_sentinel_group_start_tls("vktls");
    CHECK(g != NULL);
    if (g == NULL)
        return;
    reset_events();
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
        char *value = node_get(vkt_sentinel_group_node(g, promoted), "tls:after");
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
    /* VKTEST_NEEDS_SERVER */
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
    RUN(test_tls_group);
    return vkt_finish();
}
