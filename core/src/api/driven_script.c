/*
 * Scripts on the event-loop and hosted clients: one operation made of
 * EVALSHA and, when its reply is NOSCRIPT (proto/script.c's rule), EVAL
 * with the same keys and args, submitted from EVALSHA's completion. Both
 * are ordinary commands of the client (vk__driven_command): routed by
 * their keys to the same node, under the same retry policy. The caller's
 * completion sees only the final reply, and the run's id (with
 * VK_SCRIPT_ID_BIT) cancels whichever request is in flight.
 */
#include "api/driven.h"
#include "api/script.h"

#include <stdlib.h>
#include <string.h>

struct vk_script_op {
    vk_driven *d;
    vk_script_op *next;       /* in d->script_ops */
    uint64_t id;              /* the run's, given to the caller */
    uint64_t inner;           /* the request in flight */
    vk_script *script;        /* referenced: the caller may free it */
    vk_script_call call;      /* keys and args point into bytes */
    bool by_sha;              /* the request in flight is EVALSHA */
    char *bytes;              /* the keys' and args' copies */
    vk_async_fn fn;
    void *userdata;
};

static void unlink_op(vk_script_op *op)
{
    for (vk_script_op **at = &op->d->script_ops; *at != NULL; at = &(*at)->next) {
        if (*at == op) {
            *at = op->next;
            return;
        }
    }
}

static void free_op(vk_script_op *op)
{
    vk__script_call_free(&op->call);
    vk_script_free(op->script);
    free(op->bytes);
    free(op);
}

/* The keys and args are the caller's only during the call; EVAL may be
 * sent later, so the run keeps copies (one block). */
static vk_status copy_arguments(vk_script_op *op)
{
    size_t total = 1;
    for (int i = 3; i < op->call.argc; i++)
        total += op->call.argvlen[i];
    op->bytes = malloc(total);
    if (op->bytes == NULL)
        return vk__fail_nomem();
    char *at = op->bytes;
    for (int i = 3; i < op->call.argc; i++) {
        if (op->call.argvlen[i] > 0)
            memcpy(at, op->call.argv[i], op->call.argvlen[i]);
        op->call.argv[i] = at;
        at += op->call.argvlen[i];
    }
    return VK_OK;
}

static void step(void *userdata, vk_status st, vk_reply *reply);

static vk_status submit(vk_script_op *op, const char *function)
{
    return vk__driven_command(op->d, function, op->call.argc, op->call.argv, op->call.argvlen,
                              step, op, &op->inner);
}

/* A request of the run completed: EVALSHA's NOSCRIPT sends EVAL; anything
 * else is the run's result. */
static void step(void *userdata, vk_status st, vk_reply *reply)
{
    vk_script_op *op = userdata;
    if (st == VK_OK && op->by_sha && vk__reply_is_noscript((const redisReply *)reply)) {
        vk_reply_free(reply);
        reply = NULL;
        op->by_sha = false;
        vk__script_call_by_source(&op->call, op->script->source, op->script->len);
        st = submit(op, "vk_script_run");
        if (st == VK_OK)
            return;
    }
    unlink_op(op);
    vk_async_fn fn = op->fn;
    void *fn_userdata = op->userdata;
    free_op(op);
    fn(fn_userdata, st, reply);
}

vk_status vk__driven_script_run(vk_driven *d, const char *function, const vk_script *script,
                                int nkeys, const char *const *keys, const size_t *keylens,
                                int nargs, const char *const *args, const size_t *arglens,
                                vk_async_fn fn, void *userdata, uint64_t *id)
{
    if (id != NULL)
        *id = 0;
    vk_status st = vk__driven_usable(d, function);
    if (st != VK_OK)
        return st;
    if (fn == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a completion function is required");
    vk_script_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return vk__fail_nomem();
    st = vk__script_prepare(&op->call, script, nkeys, keys, keylens, nargs, args, arglens);
    if (st == VK_OK)
        st = copy_arguments(op);
    if (st != VK_OK) {
        vk__script_call_free(&op->call);
        free(op->bytes);
        free(op);
        return st;
    }
    /* argv[1] (the sha, later the source) is the script's: keep it. */
    op->script = (vk_script *)script;
    vk__script_ref(op->script);
    op->by_sha = true;
    op->d = d;
    op->fn = fn;
    op->userdata = userdata;
    op->id = VK_SCRIPT_ID_BIT | ++d->next_script_id;
    vk__driven_enter(d);
    op->next = d->script_ops;
    d->script_ops = op;
    st = submit(op, function);
    uint64_t run_id = op->id;
    if (st != VK_OK) {
        unlink_op(op);
        free_op(op);
    }
    if (!vk__driven_leave(d) && st == VK_OK && id != NULL)
        *id = run_id;
    return st;
}

vk_status vk__driven_script_cancel(vk_driven *d, uint64_t id)
{
    vk_script_op *op = d->script_ops;
    while (op != NULL && op->id != id)
        op = op->next;
    if (op == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "no operation %llu in flight",
                        (unsigned long long)id);
    /* Its request completes, cancelled, and step() hands that on. */
    return vk__driven_cancel_id(d, op->inner);
}
