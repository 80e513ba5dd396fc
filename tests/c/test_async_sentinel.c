/*
 * Sentinel mode on the event-loop client against real groups
 * (VKTEST_NEEDS_SERVER), each scenario on libuv and on libevent: discovery
 * and the sentinel list, the blocking client's errors (unknown master name,
 * every sentinel unreachable, the sentinels' password, a replica named as
 * master, a CA that signed nothing of theirs), a group serving TLS only, a
 * SENTINEL FAILOVER while writes stream through one client (where each
 * write landed), and a master demoted behind the client's back (READONLY).
 */
#include "vktest.h"
#include "sentinels.h"
#include "readback.h"
#include "async_loops.h"
#include "vkclient.h"
#include "vkclient_async.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GROUP "vkasyncmaster"
#define MS 1000   /* microseconds in a millisecond */

static vkt_sentinel_group *group;

/* ---- clients and nodes ----------------------------------------------------------- */

/* A sentinel config naming `count` of g's sentinels, its log and metrics
 * recorded. */
static vk_config *sentinel_config(vkt_sentinel_group *g, const char *name, int count)
{
    vk_config *cfg = vkt_sentinel_config(g, name, count);
    vkt_sentinel_log_attach(cfg);
    return cfg;
}

/* SET key value through the event-loop client; true on +OK. */
static bool async_set(vkt_loop *loop, vk_async *c, const char *key, const char *value)
{
    vkt_op op = {0};
    const char *argv[] = {"SET", key, value};
    bool ok = vkt_call(loop, c, &op, 3, argv) && op.status == VK_OK && vkt_reply_is(op.reply, "OK");
    if (!ok)
        fprintf(stderr, "SET %s: %s\n", key, op.status != VK_OK ? op.error : "an error reply");
    vkt_op_clear(&op);
    return ok;
}

/* The snapshot names the master the client follows (NULL: none found yet)
 * and its switches. */
static void check_snapshot(vk_async *a, const char *master, int switches)
{
    vk_snapshot *s = NULL;
    CHECK_OK(vk_async_snapshot(&s, a));
    CHECK_EQ_STR(vk_snapshot_mode(s), "sentinel");
    if (master != NULL)
        CHECK_EQ_STR(vk_snapshot_master_address(s), master);
    else
        CHECK(vk_snapshot_master_address(s) == NULL);
    CHECK_EQ_INT(vk_snapshot_master_switches(s), switches);
    CHECK_EQ_INT(vk_snapshot_connected(s), vk_async_is_connected(a));
    CHECK(vk_snapshot_last_refresh_error(s) == NULL);
    vk_snapshot_free(s);
}

/* The failure of a blocking client made from cfg (its text in text). */
static vk_status blocking_failure(const vk_config *cfg, char *text, size_t cap)
{
    vk_client *b = NULL;
    vk_status st = vk_client_new(&b, cfg);
    snprintf(text, cap, "%s", vk_last_error());
    CHECK(st != VK_OK);
    vk_client_free(b);
    return st;
}

/* A command through the event-loop client fails with the blocking
 * client's code and text for the same config. */
static void fails_like_blocking(vkt_loop *loop, const vk_config *cfg)
{
    char want[512];
    vk_status blocking = blocking_failure(cfg, want, sizeof want);
    vk_async *a = vkt_async_new(loop, cfg);
    if (a == NULL)
        return;
    vkt_op op = {0};
    const char *argv[] = {"SET", "sentinel:refused", "1"};
    CHECK(vkt_call(loop, a, &op, 3, argv));
    CHECK_EQ_INT(op.status, blocking);
    CHECK_EQ_STR(op.error, want);
    CHECK(!vk_async_is_connected(a));
    vkt_op_clear(&op);
    vk_async_free(a);
}

/* ---- discovery ------------------------------------------------------------------- */

/* Configured with one sentinel: the master is found, the other two
 * sentinels are learnt, and writes land on the master. */
static void test_writes_go_to_the_master(vkt_loop *loop)
{
    vkt_sentinel_log_reset();
    vk_config *cfg = sentinel_config(group, GROUP, 1);
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (a == NULL)
        return;
    CHECK(!vk_async_is_connected(a));   /* nothing is dialled before the first command */
    check_snapshot(a, NULL, 0);
    CHECK(async_set(loop, a, "sentinel:hello", vkt_loop_name(loop)));
    int master = vkt_sentinel_group_master(group);
    CHECK(master >= 0);
    if (master >= 0)
        check_snapshot(a, vkt_server_address(vkt_sentinel_group_node(group, master)), 0);
    char *value = master >= 0 ? vkt_node_get(vkt_sentinel_group_node(group, master), "sentinel:hello")
                              : NULL;
    CHECK_EQ_STR(value, vkt_loop_name(loop));
    free(value);
    CHECK(vk_async_is_connected(a));
    CHECK_EQ_INT(vkt_sentinel_log_read().discovered, VKT_SENTINELS - 1);
    CHECK_EQ_INT(vkt_sentinel_log_read().switches, 0);
    /* The client keeps checking the master (once a second) on the loop:
     * nothing changes while the master stays. */
    vkt_loop_run_for(loop, 2500);
    CHECK(vk_async_is_connected(a));
    CHECK_EQ_INT(vkt_sentinel_log_switches(NULL, 0), 0);
    CHECK(async_set(loop, a, "sentinel:still", "1"));
    vk_async_free(a);
}

static void test_unknown_master_name(vkt_loop *loop)
{
    vk_config *cfg = sentinel_config(group, "no-such-master", VKT_SENTINELS);
    fails_like_blocking(loop, cfg);
    vk_async *a = vkt_async_new(loop, cfg);
    if (a != NULL) {
        vkt_op op = {0};
        const char *argv[] = {"GET", "k"};
        CHECK(vkt_call(loop, a, &op, 2, argv));
        CHECK_EQ_INT(op.status, VK_ERR_SERVER);
        CHECK_EQ_STR(op.error, "redis sentinel: master \"no-such-master\" is unknown to every "
                               "reachable sentinel");
        vkt_op_clear(&op);
        vk_async_free(a);
    }
    vk_config_free(cfg);
}

/* A port nothing listens on: a sentinel that was just stopped. */
static bool dead_address(char *out, size_t cap)
{
    vkt_server *gone = vkt_server_start(NULL);
    CHECK(gone != NULL);
    if (gone == NULL)
        return false;
    snprintf(out, cap, "%s", vkt_server_address(gone));
    vkt_server_stop(gone);
    return true;
}

/* Every sentinel unreachable: the blocking client's error; a dead
 * sentinel before a live one is skipped (and logged). */
static void test_dead_sentinels(vkt_loop *loop)
{
    char dead[32];
    if (!dead_address(dead, sizeof dead))
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_sentinel(cfg, GROUP);
    vk_config_add_sentinel_address(cfg, dead);
    fails_like_blocking(loop, cfg);

    vkt_sentinel_log_reset();
    vkt_sentinel_log_attach(cfg);
    vk_config_add_sentinel_address(cfg, vkt_server_address(vkt_sentinel_group_sentinel(group, 2)));
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (a == NULL)
        return;
    CHECK(async_set(loop, a, "sentinel:skip", "1"));
    CHECK_EQ_INT(vkt_sentinel_log_read().query_failures, 1);
    vk_async_free(a);
}

/* A sentinel that names a replica as the master: the node's own ROLE is
 * checked in the handshake and the client refuses it. */
static void test_replica_named_as_master_is_refused(vkt_loop *loop)
{
    int master = vkt_sentinel_group_master(group);
    vkt_server *replica = vkt_sentinel_group_node(group, master == 1 ? 2 : 1);
    vkt_server *misled = vkt_sentinel_start_single("vkreplica", vkt_server_port(replica), NULL);
    CHECK(misled != NULL);
    if (misled == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_sentinel(cfg, "vkreplica");
    vk_config_add_sentinel_address(cfg, vkt_server_address(misled));
    fails_like_blocking(loop, cfg);
    char want[160];
    snprintf(want, sizeof want, "redis sentinel: %s is not a master (role: slave)",
             vkt_server_address(replica));
    vk_async *a = vkt_async_new(loop, cfg);
    if (a != NULL) {
        vkt_op op = {0};
        const char *argv[] = {"SET", "k", "v"};
        CHECK(vkt_call(loop, a, &op, 3, argv));
        CHECK_EQ_INT(op.status, VK_ERR_SERVER);
        CHECK_EQ_STR(op.error, want);
        vkt_op_clear(&op);
        vk_async_free(a);
    }
    vk_config_free(cfg);
    vkt_server_stop(misled);
}

/* The sentinels' own password: right, the client works; wrong, the
 * blocking client's error. */
static void test_sentinel_auth(vkt_loop *loop)
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
    vk_async *a = vkt_async_new(loop, cfg);
    if (a != NULL) {
        CHECK(async_set(loop, a, "sentinel:auth", "1"));
        vk_async_free(a);
    }
    vk_config_set_sentinel_auth(cfg, NULL, "wrong");
    fails_like_blocking(loop, cfg);
    vk_config_free(cfg);
    vkt_server_stop(guarded);
}

/* ---- TLS ---------------------------------------------------------------------------- */

static vkt_sentinel_group *tls_group;

/* Sentinels and nodes serving TLS only: the probes and the node's
 * connection are verified TLS, the checks run over it, and a CA that did
 * not sign the sentinels' certificates gives the blocking client's error. */
static void test_tls_group(vkt_loop *loop)
{
    if (tls_group == NULL)
        return;
    vk_config *cfg = sentinel_config(tls_group, "vktls", VKT_SENTINELS);
    CHECK_OK(vk_config_set_tls(cfg, vkt_ca_base64()));
    vk_async *a = vkt_async_new(loop, cfg);
    if (a != NULL) {
        CHECK(async_set(loop, a, "tls:sentinel", vkt_loop_name(loop)));
        int master = vkt_sentinel_group_master(tls_group);
        CHECK(master >= 0);
        if (master >= 0) {
            vkt_server *node = vkt_sentinel_group_node(tls_group, master);
            check_snapshot(a, vkt_server_address(node), 0);
        }
        vkt_loop_run_for(loop, 1500);   /* a check of the master, over TLS */
        CHECK(vk_async_is_connected(a));
        CHECK(async_set(loop, a, "tls:sentinel:after", "1"));
        vk_async_free(a);
    }
    CHECK_OK(vk_config_set_tls(cfg, vkt_other_ca_base64()));
    fails_like_blocking(loop, cfg);
    vk_config_free(cfg);
}

/* ---- a failover under load ------------------------------------------------------- */

#define WRITERS 8

/* One write: key "load:<writer>:<i>" with value i. */
typedef struct write_record {
    int64_t sent_us;
    int64_t done_us;
    bool ok;
} write_record;

typedef struct writer {
    vk_async *client;
    int id;
    bool stop;
    bool in_flight;
    int64_t resume_us;   /* after a failure: the next write waits (20 ms) */
    write_record *writes;
    long count, cap;
    long ok, failed;
    int64_t first_error_us, last_error_us;
} writer;

static void send_write(writer *w);

static void write_done(void *userdata, vk_status st, vk_reply *reply)
{
    writer *w = userdata;
    vkt_note_completion();
    write_record *r = &w->writes[w->count - 1];
    r->done_us = vkt_now_us();
    r->ok = st == VK_OK && vkt_reply_is(reply, "OK");
    vk_reply_free(reply);
    w->in_flight = false;
    if (r->ok) {
        w->ok++;
    } else {
        w->failed++;
        if (w->first_error_us == 0)
            w->first_error_us = r->done_us;
        w->last_error_us = r->done_us;
        w->resume_us = r->done_us + 20 * MS;
        return;
    }
    if (!w->stop)
        send_write(w);
}

static void send_write(writer *w)
{
    if (w->count == w->cap) {
        long cap = w->cap ? w->cap * 2 : 1024;
        write_record *grown = realloc(w->writes, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return;
        w->writes = grown;
        w->cap = cap;
    }
    char key[32], value[24];
    snprintf(key, sizeof key, "load:%d:%ld", w->id, w->count);
    snprintf(value, sizeof value, "%ld", w->count);
    w->writes[w->count++] = (write_record){.sent_us = vkt_now_us()};
    w->in_flight = true;
    const char *argv[] = {"SET", key, value};
    const size_t len[] = {3, strlen(key), strlen(value)};
    if (vkt_submitv(w->client, write_done, w, NULL, 3, argv, len) != VK_OK) {
        w->in_flight = false;
        w->writes[w->count - 1].ok = false;
        w->failed++;
    }
}

typedef struct load {
    writer w[WRITERS];
    int64_t until_us;     /* run_load: turn until then ... */
    bool (*also)(void *); /* ... or until also(arg) */
    void *arg;
} load;

/* Called on every turn of the loop: writers that paused after a failure
 * write again. */
static bool load_turn(void *arg)
{
    load *l = arg;
    int64_t now = vkt_now_us();
    for (int i = 0; i < WRITERS; i++) {
        writer *w = &l->w[i];
        if (!w->stop && !w->in_flight && now >= w->resume_us)
            send_write(w);
    }
    if (l->also != NULL && l->also(l->arg))
        return true;
    return l->until_us != 0 && now >= l->until_us;
}

static void run_load(vkt_loop *loop, load *l, long long ms)
{
    l->until_us = vkt_now_us() + ms * MS;
    l->also = NULL;
    vkt_loop_run_until(loop, load_turn, l, ms + 1000);
    l->until_us = 0;
}

static bool announcement_heard(void *arg)
{
    (void)arg;
    return vkt_sentinel_log_read().announced > 0;
}

static bool switch_logged(void *arg)
{
    (void)arg;
    return vkt_sentinel_log_switches(NULL, 0) > 0;
}

static bool writers_idle(void *arg)
{
    load *l = arg;
    for (int i = 0; i < WRITERS; i++) {
        if (l->w[i].in_flight)
            return false;
    }
    return true;
}

/* Which of w's writes node holds. */
static bool *keys_held(vkt_server *node, const writer *w)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "load:%d:", w->id);
    return vkt_keys_held(node, prefix, w->count);
}

/* Where every write landed. The old master is still a master when read
 * (the sentinels demote it some 10 s after the switch), so it holds
 * exactly the writes it ran: none sent after the client's switch is
 * there, and every one of those that was acknowledged is on the new
 * master. */
static void check_where_writes_landed(load *l, vkt_sentinel_group *g, int old, int promoted,
                                      int64_t switch_us)
{
    long sent_after_switch = 0, to_old_after_switch = 0, lost = 0, total = 0;
    bool read = true;
    for (int i = 0; i < WRITERS; i++) {
        writer *w = &l->w[i];
        bool *on_old = keys_held(vkt_sentinel_group_node(g, old), w);
        bool *on_new = keys_held(vkt_sentinel_group_node(g, promoted), w);
        read = read && on_old != NULL && on_new != NULL;
        for (long k = 0; k < w->count && on_old != NULL && on_new != NULL; k++) {
            const write_record *r = &w->writes[k];
            total++;
            if (r->sent_us <= switch_us)
                continue;
            sent_after_switch++;
            to_old_after_switch += on_old[k];
            lost += r->ok && !on_new[k];
        }
        free(on_old);
        free(on_new);
    }
    /* Checked after reading: demoted meanwhile, it would hold the new
     * master's writes too, and the reading would prove nothing. */
    CHECK(vkt_sentinel_group_node_is_master(g, old));
    CHECK(read);
    fprintf(stderr, "failover: %ld writes, %ld sent after the client's switch, %ld of them on "
                    "the old master, %ld acknowledged and missing\n",
            total, sent_after_switch, to_old_after_switch, lost);
    CHECK(sent_after_switch > 0);
    CHECK_EQ_INT(to_old_after_switch, 0);
    CHECK_EQ_INT(lost, 0);
}

/* Some sentinel of g has a client subscribed to two channels: the
 * client's +switch-master / +promoted-slave subscription. */
static bool subscribed(vkt_sentinel_group *g)
{
    bool found = false;
    for (int i = 0; i < VKT_SENTINELS && !found; i++) {
        vk_config *cfg = NULL;
        vk_config_new(&cfg);
        vk_config_set_standalone(cfg, vkt_server_address(vkt_sentinel_group_sentinel(g, i)));
        vk_client *c = NULL;
        vk_reply *r = NULL;
        if (vk_client_new(&c, cfg) == VK_OK &&
            vkt_blocking_run(c, &r, 2, (const char *[]){"CLIENT", "LIST"}) == VK_OK) {
            size_t len = 0;
            const char *text = vk_reply_get_string(r, &len);
            found = text != NULL && memmem(text, len, " sub=2 ", 7) != NULL;
        }
        vk_reply_free(r);
        vk_client_free(c);
        vk_config_free(cfg);
    }
    return found;
}

typedef struct subscription_wait {
    vkt_sentinel_group *g;
    int64_t next_look_us;
} subscription_wait;

static bool client_subscribed(void *arg)
{
    subscription_wait *w = arg;
    if (vkt_now_us() < w->next_look_us)
        return false;
    w->next_look_us = vkt_now_us() + 100 * MS;
    return subscribed(w->g);
}

/* A new group monitoring `name` (*g) and a client of it, the log reset;
 * NULL (nothing left running) when either cannot be had. */
static vk_async *group_of_its_own(vkt_loop *loop, const char *name, vkt_sentinel_group **g)
{
    *g = vkt_sentinel_group_start(name);
    CHECK(*g != NULL);
    if (*g == NULL)
        return NULL;
    vkt_sentinel_log_reset();
    vk_config *cfg = sentinel_config(*g, name, VKT_SENTINELS);
    vk_async *a = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (a == NULL) {
        vkt_sentinel_group_stop(*g);
        *g = NULL;
    }
    return a;
}

/* SENTINEL FAILOVER while WRITERS writers stream SETs through one client:
 * the client follows the new master on its own (its once-a-second check),
 * logs and counts one switch, and its writes land where they should.
 * Each loop gets a group of its own (a group's second failover would
 * meet the first one's demotion). */
static void test_failover_under_load(vkt_loop *loop)
{
    const char *name = vkt_loop_name(loop);
    vkt_sentinel_group *g;
    vk_async *a = group_of_its_own(loop, name, &g);
    if (a == NULL)
        return;
    int old = vkt_sentinel_group_master(g);
    CHECK_EQ_INT(old, 0);

    static load l;
    memset(&l, 0, sizeof l);
    for (int i = 0; i < WRITERS; i++) {
        l.w[i].client = a;
        l.w[i].id = i;
    }
    run_load(loop, &l, 500);
    /* The client subscribes to the sentinels' news once connected: the
     * failover is announced to it. */
    subscription_wait sw = {g, 0};
    l.also = client_subscribed;
    l.arg = &sw;
    l.until_us = 0;
    CHECK(vkt_loop_run_until(loop, load_turn, &l, 10000));
    l.also = NULL;
    long before = 0, failed_before = 0;
    for (int i = 0; i < WRITERS; i++) {
        before += l.w[i].ok;
        failed_before += l.w[i].failed;
    }
    CHECK(before > 0);
    CHECK_EQ_INT(failed_before, 0);

    int64_t started = vkt_now_us();
    bool switched = false;
    for (int attempt = 0; attempt < 3 && !switched; attempt++) {
        const char *argv[] = {"SENTINEL", "FAILOVER", name};
        char *reply = vkt_server_cmd(vkt_sentinel_group_sentinel(g, 0), argv, 3);
        CHECK(reply != NULL && (strcmp(reply, "+OK") == 0 ||
                                (attempt > 0 && strncmp(reply, "-INPROG", 7) == 0)));
        free(reply);
        l.also = switch_logged;
        l.until_us = 0;
        switched = vkt_loop_run_until(loop, load_turn, &l, 8000);
        l.also = NULL;
    }
    CHECK(switched);
    int64_t switch_us = vkt_sentinel_log_read().last_switch_us;
    int promoted = vkt_sentinel_group_wait_new_master(g, old, (int)vkt_scaled_ms(10000));
    CHECK(promoted > 0);
    run_load(loop, &l, 1000);   /* keep writing on the new master for a while */
    for (int i = 0; i < WRITERS; i++)
        l.w[i].stop = true;
    CHECK(vkt_loop_run_until(loop, writers_idle, &l, 10000));
    if (switched && promoted > 0)
        check_where_writes_landed(&l, g, old, promoted, switch_us);

    char switch_to[64];
    CHECK_EQ_INT(vkt_sentinel_log_switches(switch_to, sizeof switch_to), 1);
    CHECK_EQ_INT(vkt_sentinel_log_read().failovers, 1);
    /* The switch came by the subscription: a +promoted-slave sent the
     * client to the sentinels at once; the +switch-master the sentinels
     * publish once the replicas are reconfigured follows, and is heard. */
    CHECK(vkt_loop_run_until(loop, announcement_heard, NULL, 10000));
    if (promoted > 0) {
        CHECK_EQ_STR(switch_to, vkt_server_address(vkt_sentinel_group_node(g, promoted)));
        check_snapshot(a, switch_to, 1);
    }
    /* Failures are bounded: only inside the failover window, and few (a
     * writer pauses 20 ms after each). */
    long failed = 0;
    for (int i = 0; i < WRITERS; i++) {
        writer *w = &l.w[i];
        failed += w->failed;
        if (w->failed == 0)
            continue;
        CHECK(w->first_error_us >= started);
        CHECK(w->last_error_us <= switch_us + vkt_scaled_ms(1000) * MS);
    }
    fprintf(stderr, "failover on %s: the client switched after %lld ms; %ld writes failed\n",
            name, (long long)((switch_us - started) / MS), failed);
    CHECK(failed <= WRITERS * ((switch_us - started) / (20 * MS) + 5));
    /* The same client, still connected, still writing. */
    CHECK(async_set(loop, a, "after:failover", "1"));
    CHECK(vk_async_is_connected(a));
    for (int i = 0; i < WRITERS; i++)
        free(l.w[i].writes);
    vk_async_free(a);
    vkt_sentinel_group_stop(g);
}

/* ---- a master demoted behind the client's back ----------------------------------- */

/* Runs a command on a node; true when it says +OK. */
static bool node_ok(vkt_server *node, const char *const *argv, int argc)
{
    char *line = vkt_server_cmd(node, argv, argc);
    bool ok = line != NULL && strncmp(line, "+OK", 3) == 0;
    free(line);
    return ok;
}

/* The sentinels fail over while the loop does not turn (the client cannot
 * check), then the old master becomes a replica of the new one by an
 * operator's REPLICAOF, which keeps its client connections. The client's
 * next write meets READONLY: it finds the master again through the
 * sentinels and the write succeeds there, on the same client, within the
 * same operation. */
static void test_demoted_master_is_left_on_readonly(vkt_loop *loop)
{
    char name[32];
    snprintf(name, sizeof name, "demoted-%s", vkt_loop_name(loop));
    vkt_sentinel_group *g;
    vk_async *a = group_of_its_own(loop, name, &g);
    if (a == NULL)
        return;
    CHECK(async_set(loop, a, "demoted:before", "1"));
    int promoted = vkt_sentinel_group_failover(g, name, 0);
    CHECK(promoted > 0);
    if (promoted > 0) {
        vkt_server *old = vkt_sentinel_group_node(g, 0);
        vkt_server *master = vkt_sentinel_group_node(g, promoted);
        char port[16];
        snprintf(port, sizeof port, "%d", vkt_server_port(master));
        const char *replicaof[] = {"REPLICAOF", "127.0.0.1", port};
        CHECK(node_ok(old, replicaof, 3));
        CHECK(async_set(loop, a, "demoted:readonly", "2"));
        char *value = vkt_node_get(master, "demoted:readonly");
        CHECK_EQ_STR(value, "2");
        free(value);
        char switch_to[64];
        CHECK_EQ_INT(vkt_sentinel_log_switches(switch_to, sizeof switch_to), 1);
        CHECK_EQ_STR(switch_to, vkt_server_address(master));
        CHECK(vk_async_is_connected(a));
        check_snapshot(a, switch_to, 1);
    }
    vk_async_free(a);
    vkt_sentinel_group_stop(g);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER VKTEST_FAILOVERS */
    group = vkt_sentinel_group_start(GROUP);
    CHECK(group != NULL);
    if (group == NULL)
        return vkt_finish();
    RUN_ON_LOOPS(test_writes_go_to_the_master);
    RUN_ON_LOOPS(test_unknown_master_name);
    RUN_ON_LOOPS(test_dead_sentinels);
    RUN_ON_LOOPS(test_replica_named_as_master_is_refused);
    RUN_ON_LOOPS(test_sentinel_auth);
    vkt_sentinel_group_stop(group);
    tls_group = vkt_sentinel_group_start_tls("vktls");
    CHECK(tls_group != NULL);
    RUN_ON_LOOPS(test_tls_group);
    vkt_sentinel_group_stop(tls_group);
    RUN_ON_LOOPS(test_failover_under_load);
    RUN_ON_LOOPS(test_demoted_master_is_left_on_readonly);
    return vkt_finish();
}
