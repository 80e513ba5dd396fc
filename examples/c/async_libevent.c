/*
 * async_libevent: the event-loop client (vkclient_async.h) on a libevent
 * event_base.
 *
 *   async_libevent [host:port]   (default 127.0.0.1:6379)
 *
 * SET then GET a key, a small pipeline, then 100 INCRs in flight at once,
 * all on one multiplexed connection. Each call returns at once; its
 * completion runs later on the loop's thread. The last completion frees the
 * client, which leaves the base no event, so event_base_dispatch() returns.
 */
#include <vkclient_async.h>
#include <vkclient/libevent.h>

#include <stdio.h>
#include <string.h>

#define KEY "vkclient:example:libevent"
#define COUNTER "vkclient:example:libevent:counter"
#define LIST "vkclient:example:libevent:list"
#define INCRS 100

typedef struct app {
    vk_async *client; /* NULL once freed */
    int status;       /* the exit status */
    int incrs_done;
} app;

/* Prints a reply (the completion still owns it). */
static void print_reply(const vk_reply *reply, int indent)
{
    size_t len = 0;
    const char *text = vk_reply_get_string(reply, &len);
    printf("%*s", indent, "");
    switch (vk_reply_get_type(reply)) {
    case VK_REPLY_INTEGER:
        printf("(integer) %lld\n", vk_reply_get_integer(reply));
        break;
    case VK_REPLY_NIL:
        printf("(nil)\n");
        break;
    case VK_REPLY_ERROR:
        printf("(error) %.*s\n", (int)len, text);
        break;
    case VK_REPLY_ARRAY:
        printf("(array of %zu)\n", vk_reply_get_length(reply));
        for (size_t i = 0; i < vk_reply_get_length(reply); i++)
            print_reply(vk_reply_get_element(reply, i), indent + 2);
        break;
    default:
        printf("%.*s\n", (int)len, text ? text : "");
        break;
    }
}

/* Frees the client once; the operations still queued complete with
 * VK_ERR_CANCELLED. The pointer is cleared first, so those completions see
 * that the client is gone. Safe inside a completion. */
static void stop(app *a)
{
    vk_async *client = a->client;
    a->client = NULL;
    vk_async_free(client);
}

/* A failed operation (or one cancelled by stop()): report it and stop. */
static int failed(app *a, const char *what, vk_status status)
{
    if (status == VK_OK)
        return 0;
    if (a->client != NULL) { /* the first failure, not the cancellations */
        fprintf(stderr, "async_libevent: %s: %s\n", what, vk_last_error());
        a->status = 1;
        stop(a);
    }
    return 1;
}

/* Queues one command given as NUL-terminated strings. */
static vk_status command(app *a, vk_async_fn fn, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    vk_status st = vk_async_command(a->client, argc, argv, lens, fn, a, NULL);
    if (st != VK_OK)
        failed(a, argv[0], st);
    return st;
}

static void on_incr(void *userdata, vk_status status, vk_reply *reply)
{
    app *a = userdata;
    if (failed(a, "INCR", status))
        return;
    /* Replies come back in the order the commands were queued. */
    long long value = vk_reply_get_integer(reply);
    vk_reply_free(reply);
    if (value != ++a->incrs_done) {
        fprintf(stderr, "async_libevent: INCR %d returned %lld\n", a->incrs_done, value);
        a->status = 1;
    }
    if (a->incrs_done == INCRS) {
        printf("INCR x%d: the last reply is %lld\n", INCRS, value);
        stop(a); /* the loop has nothing left to wait for */
    }
}

static void on_pipeline(void *userdata, vk_status status, vk_reply *reply)
{
    app *a = userdata;
    if (failed(a, "pipeline", status))
        return;
    printf("pipeline ->\n");
    print_reply(reply, 2);
    vk_reply_free(reply);

    /* 100 commands in flight at once: written together, answered in order. */
    const char *incr[] = {"INCR", COUNTER};
    for (int i = 0; i < INCRS; i++)
        if (command(a, on_incr, 2, incr) != VK_OK)
            return;
    printf("INCR x%d queued, %zu in flight\n", INCRS, vk_async_pending(a->client));
}

static void on_get(void *userdata, vk_status status, vk_reply *reply)
{
    app *a = userdata;
    if (failed(a, "GET", status))
        return;
    printf("GET %s -> ", KEY);
    print_reply(reply, 0);
    vk_reply_free(reply);

    /* A pipeline: one completion with one reply per command. An error reply
     * (INCR of a list) is one element and loses none of the others. */
    vk_pipeline *p = NULL;
    const char *del[] = {"DEL", COUNTER, LIST};
    const char *push[] = {"RPUSH", LIST, "a", "b", "c"};
    const char *range[] = {"LRANGE", LIST, "0", "-1"};
    const char *bad[] = {"INCR", LIST};
    const char *const *cmds[] = {del, push, range, bad};
    const int argcs[] = {3, 5, 4, 2};
    vk_status st = vk_async_pipeline_new(&p, a->client);
    for (int c = 0; st == VK_OK && c < 4; c++) {
        size_t lens[5];
        for (int i = 0; i < argcs[c]; i++)
            lens[i] = strlen(cmds[c][i]);
        st = vk_pipeline_append(p, argcs[c], cmds[c], lens);
    }
    if (st == VK_OK)
        st = vk_async_pipeline_exec(p, on_pipeline, a, NULL);
    failed(a, "pipeline", st);
    vk_pipeline_free(p); /* exec took its commands */
}

static void on_set(void *userdata, vk_status status, vk_reply *reply)
{
    app *a = userdata;
    if (failed(a, "SET", status))
        return;
    printf("SET %s -> ", KEY);
    print_reply(reply, 0);
    vk_reply_free(reply);
}

int main(int argc, char **argv)
{
    const char *address = argc > 1 ? argv[1] : "127.0.0.1:6379";
    app a = {NULL, 0, 0};

    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK || vk_config_set_standalone(cfg, address) != VK_OK) {
        fprintf(stderr, "async_libevent: config: %s\n", vk_last_error());
        vk_config_free(cfg);
        return 1;
    }
    vk_config_set_read_timeout_ms(cfg, 2000);

    struct event_base *base = event_base_new();
    if (base == NULL) {
        vk_config_free(cfg);
        return 1;
    }
    vk_loop_adapter adapter;
    vk_libevent_adapter(&adapter, base);
    /* No I/O yet: the connection opens with the first command. */
    vk_status st = vk_async_new(&a.client, cfg, &adapter);
    vk_config_free(cfg);
    if (st != VK_OK) {
        fprintf(stderr, "async_libevent: client: %s\n", vk_last_error());
        event_base_free(base);
        return 1;
    }

    /* Both queued at once: GET is answered after SET, so it sees the value. */
    const char *set[] = {"SET", KEY, "hello from libevent"};
    const char *get[] = {"GET", KEY};
    if (command(&a, on_set, 3, set) == VK_OK)
        command(&a, on_get, 2, get);

    event_base_dispatch(base); /* returns once the client is freed */
    if (a.client != NULL) {
        fprintf(stderr, "async_libevent: the loop stopped with %zu operations pending\n",
                vk_async_pending(a.client));
        a.status = 1;
        stop(&a);
    }
    event_base_free(base);
    libevent_global_shutdown(); /* libevent's own globals, for leak checkers */
    return a.status;
}
