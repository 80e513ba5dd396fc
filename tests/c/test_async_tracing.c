/*
 * Spans and command latencies of the event-loop client, on libuv and
 * libevent (VKTEST_NEEDS_SERVER): with vk_config_set_trace_commands each
 * command and pipeline has a "redis.command" span from its submission to
 * its completion (a cancelled one ends with the cancellation; a refused one
 * has none); vk_async_lock_try has its "redis.lock.try_lock" span; a
 * metrics sink sees each command's latency, as from the blocking client;
 * and freeing the client ends the "redis.close" span.
 */
#include "vktest.h"
#include "servers.h"
#include "spans.h"
#include "async_loops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vkt_server *server;

/* ---- a metrics sink counting command latencies by label ------------------------- */

typedef struct latencies {
    int get, set, other;
} latencies;

static void count_latency(void *userdata, const char *name, vk_metric_kind kind, double value,
                          const vk_field *labels, size_t nlabels)
{
    latencies *l = userdata;
    if (strcmp(name, "redis_command_duration_seconds") != 0)
        return;
    CHECK(kind == VK_METRIC_HISTOGRAM && value >= 0 && nlabels == 1);
    if (nlabels == 1 && strcmp(labels[0].value, "get") == 0)
        l->get++;
    else if (nlabels == 1 && strcmp(labels[0].value, "set") == 0)
        l->set++;
    else
        l->other++;
}

static vk_config *traced_config(void)
{
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_config_set_tracer(cfg, vkt_span_start, vkt_span_end, NULL, NULL));
    CHECK_OK(vk_config_set_trace_commands(cfg, 1));
    return cfg;
}

static void test_command_spans(vkt_loop *loop)
{
    vkt_spans_reset();
    vk_config *cfg = traced_config();
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vkt_op set = {0}, get = {0};
    CHECK(vkt_call(loop, c, &set, 3, (const char *[]){"SET", "async:trace", "not-traced"}));
    CHECK(vkt_call(loop, c, &get, 2, (const char *[]){"GET", "async:trace"}));
    vkt_span *s = vkt_spans_find("redis.command", 0);
    vkt_span *g = vkt_spans_find("redis.command", 1);
    CHECK_EQ_STR(vkt_span_attr(s, "db.operation"), "set");
    CHECK_EQ_STR(vkt_span_attr(g, "db.operation"), "get");
    CHECK(g != NULL && g->ended && g->status == VK_OK && g->parent == NULL);
    CHECK(g != NULL && g->start_ns <= g->end_ns);

    /* Refused before anything is sent, without a completion: its span
     * ends with the refusal. */
    uint64_t id = 0;
    vkt_op refused = {0};
    CHECK(vkt_submit(c, &refused, &id, 1, (const char *[]){"MULTI"}) ==
          VK_ERR_COMMAND_NOT_ALLOWED);
    vkt_span *multi = vkt_spans_find("redis.command", 2);
    CHECK(multi != NULL && multi->ended && multi->status == VK_ERR_COMMAND_NOT_ALLOWED);
    CHECK(refused.calls == 0);

    /* Cancelled in flight: its span ends with the cancellation. */
    vkt_op blpop = {0};
    CHECK_OK(vkt_submit(c, &blpop, &id, 3, (const char *[]){"BLPOP", "async:trace:none", "5"}));
    vkt_loop_run_for(loop, 50);
    CHECK_OK(vk_async_cancel(c, id));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &blpop, 5000));
    vkt_span *b = vkt_spans_find("redis.command", 3);
    CHECK_EQ_STR(vkt_span_attr(b, "db.operation"), "blpop");
    CHECK(b != NULL && b->ended && b->status == VK_ERR_CANCELLED);
    CHECK(b != NULL && strcmp(b->error, blpop.error) == 0);

    vk_pipeline *p = NULL;
    CHECK_OK(vk_async_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_append(p, 1, (const char *[]){"PING"}, (const size_t[]){4}));
    CHECK_OK(vk_pipeline_append(p, 2, (const char *[]){"GET", "async:trace"},
                                (const size_t[]){3, 11}));
    vkt_op piped = {0};
    CHECK_OK(vkt_pipeline_submit(p, vkt_op_fn, &piped, NULL));
    CHECK(vkt_loop_run_until(loop, vkt_op_done, &piped, 5000));
    vk_pipeline_free(p);
    vkt_span *ps = vkt_spans_find("redis.command", 4);
    CHECK_EQ_STR(vkt_span_attr(ps, "db.operation"), "pipeline");
    CHECK_EQ_STR(vkt_span_attr(ps, "redis.pipeline.length"), "2");
    CHECK(ps != NULL && ps->ended && ps->status == VK_OK);

    /* Freed with an operation in flight: it ends, cancelled; then the close. */
    vkt_op pending = {0};
    CHECK_OK(vkt_submit(c, &pending, NULL, 3, (const char *[]){"BLPOP", "async:trace:none", "5"}));
    vkt_loop_run_for(loop, 20);
    vk_async_free(c);
    vkt_span *last = vkt_spans_find("redis.command", 5);
    CHECK(last != NULL && last->ended && last->status == VK_ERR_CANCELLED);
    CHECK_EQ_INT(vkt_spans_named("redis.close"), 1);
    CHECK(vkt_spans_free_of("not-traced"));
    vkt_op_clear(&set);
    vkt_op_clear(&get);
    vkt_op_clear(&blpop);
    vkt_op_clear(&piped);
    vkt_op_clear(&pending);
}

static void test_latencies(vkt_loop *loop)
{
    latencies seen = {0};
    vk_config *cfg = vkt_async_config(vkt_server_address(server));
    CHECK_OK(vk_config_set_metrics(cfg, count_latency, &seen, NULL));
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vkt_op op = {0};
    CHECK(vkt_call(loop, c, &op, 3, (const char *[]){"SET", "async:latency", "1"}));
    vkt_op_clear(&op);
    for (int i = 0; i < 5; i++) {
        CHECK(vkt_call(loop, c, &op, 2, (const char *[]){"GET", "async:latency"}));
        vkt_op_clear(&op);
    }
    /* An error reply is timed too, as in the blocking client. */
    CHECK(vkt_call(loop, c, &op, 2, (const char *[]){"HGET", "async:latency"}));
    vkt_op_clear(&op);
    CHECK_EQ_INT(seen.set, 1);
    CHECK_EQ_INT(seen.get, 5);
    CHECK_EQ_INT(seen.other, 1);
    vk_async_free(c);
}

typedef struct lock_result {
    int calls;
    vk_status status;
    vk_lock *lock;
} lock_result;

static void lock_done(void *userdata, vk_status status, vk_lock *lock)
{
    lock_result *r = userdata;
    vkt_note_completion();
    r->calls++;
    r->status = status;
    r->lock = lock;
}

static bool lock_finished(void *arg)
{
    return ((lock_result *)arg)->calls > 0;
}

static void test_try_lock_span(vkt_loop *loop)
{
    vkt_spans_reset();
    vk_config *cfg = traced_config();
    vk_async *c = vkt_async_new(loop, cfg);
    vk_config_free(cfg);
    if (c == NULL)
        return;
    vk_async_lock_manager *m = NULL;
    CHECK_OK(vk_async_lock_manager_new(&m, &c, 1));
    char key[64];
    snprintf(key, sizeof key, "async:trace:lock:%s", vkt_loop_name(loop));
    lock_result first = {0}, second = {0};
    CHECK_OK(vk_async_lock_try(m, key, strlen(key), lock_done, &first, NULL));
    CHECK(vkt_loop_run_until(loop, lock_finished, &first, 5000));
    CHECK(first.status == VK_OK && first.lock != NULL);
    CHECK_OK(vk_async_lock_try(m, key, strlen(key), lock_done, &second, NULL));
    CHECK(vkt_loop_run_until(loop, lock_finished, &second, 5000));
    CHECK(second.status == VK_OK && second.lock == NULL);
    vkt_span *got = vkt_spans_find("redis.lock.try_lock", 0);
    vkt_span *busy = vkt_spans_find("redis.lock.try_lock", 1);
    CHECK_EQ_STR(vkt_span_attr(got, "redis.lock.key"), key);
    CHECK_EQ_STR(vkt_span_attr(got, "redis.lock.outcome"), "acquired");
    CHECK_EQ_STR(vkt_span_attr(busy, "redis.lock.outcome"), "contended");
    CHECK_EQ_STR(vkt_span_attr(busy, "redis.lock.attempts"), "1");
    CHECK(busy != NULL && busy->ended && busy->status == VK_OK);
    vk_lock_free(first.lock);
    vk_async_lock_manager_free(m);
    vk_async_free(c);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL)
        return 1;
    RUN_ON_LOOPS(test_command_spans);
    RUN_ON_LOOPS(test_latencies);
    RUN_ON_LOOPS(test_try_lock_span);
    vkt_server_stop(server);
    return vkt_finish();
}
