/*
 * The asyncio client (vkclient.asyncio): the core's event-loop client
 * (vkclient_async.h) driven by a Python asyncio loop.
 *
 * Loop integration: a vk_loop_adapter whose watch() maps to
 * loop.add_reader/add_writer/remove_reader/remove_writer on the socket and
 * whose timer() maps to loop.call_later (the previous TimerHandle is
 * cancelled); on an open connection, write interest is served first by a
 * write at once (nothing else in flight) or by one loop.call_soon, and
 * only a full socket is watched for writing. The loop calls back a small callable
 * (loop_call) that hands the event to vk_async_handle_io() /
 * vk_async_handle_timer(); replies are parsed by the core and converted
 * once, in C, by vkpy_reply.c, and each completion resolves its asyncio
 * future with set_result/set_exception.
 *
 * A connection (conn) is one vk_async on the client's loop, counted by
 * reference: the client holds its shared connection, and so do the lock
 * managers and pipelines made on it, so that close() never leaves them
 * with a freed vk_async (the connection then closes when the last of them
 * goes). A vk_async may have several sockets (the core gives a blocking
 * command a connection of its own, Sentinel mode asks the sentinels,
 * Cluster mode talks to every master): each has its watch slot.
 *
 * A conn is never freed while one of its handlers runs (busy): a
 * completion that drops the last reference leaves the freeing to the
 * handler's return.
 *
 * Futures: the client's future class (made in vkclient/asyncio.py) is an
 * asyncio.Future whose cancel() calls async_cancel(pending, future), which
 * cancels the operation in the core (vk_async_cancel). `pending` maps each
 * future in flight to its operation.
 */
#include "vkpy.h"

#include <vkclient_async.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static PyObject *s_add_reader, *s_remove_reader, *s_add_writer, *s_remove_writer;
static PyObject *s_call_later, *s_call_soon, *s_cancel, *s_set_result, *s_set_exception, *s_done;
static PyObject *s_cancelled, *s_add_done_callback;
static PyObject *s_pong, *kwnames_loop;
static PyObject *get_running_loop; /* asyncio.events._get_running_loop */
static PyObject *invalid_state_error; /* asyncio.InvalidStateError */

/* ---- connections ----------------------------------------------------------- */

struct watch_slot;

typedef struct conn {
    vk_async *async;
    struct watch_slot *deferred;   /* slots whose write waits for end_submit() */
    PyObject *loop;
    PyObject *timer_cb; /* the loop_call the timer runs */
    int refs;
    int busy;           /* handlers of this conn running now */
    bool destroying;
    bool submitting;        /* an operation is being queued from Python */
} conn;

struct watch_slot;

typedef struct loop_call {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    conn *c;                 /* NULL once the watch or the timer is released */
    vk_async_io *io;         /* NULL: the timer's */
    struct watch_slot *w;    /* the descriptor's watch (NULL: the timer's) */
} loop_call;

static PyTypeObject loop_call_type;

static void conn_destroy(conn *c)
{
    if (c->destroying)
        return;
    c->destroying = true;
    c->busy++;
    /* Completes what is pending ("client closed"), unwatches, cancels the timer. */
    vk_async_free(c->async);
    c->async = NULL;
    if (c->timer_cb)
        ((loop_call *)c->timer_cb)->c = NULL;
    Py_CLEAR(c->timer_cb);
    Py_CLEAR(c->loop);
    PyMem_Free(c);
}

static void conn_enter(conn *c)
{
    c->busy++;
}

static void conn_leave(conn *c)
{
    if (--c->busy == 0 && c->refs == 0)
        conn_destroy(c);
}

static void conn_release(conn *c)
{
    if (c == NULL || c->destroying)
        return;
    if (--c->refs == 0 && c->busy == 0)
        conn_destroy(c);
}

/* The watch slot of one descriptor. `wanted` is what the client asked
 * for; `registered` what the loop watches. On an open connection, write
 * interest is first served by one loop.call_soon (the socket is nearly
 * always writable, and every request queued in this turn of the loop goes
 * out in one write): only when the socket is full does the loop watch it
 * for writing. This saves two epoll_ctl calls and a loop turn per batch. */
typedef struct watch_slot {
    PyObject *cb;
    PyObject *fd;
    int wanted;
    int registered;
    bool soon;       /* a call_soon for writing is scheduled */
    bool deferred;   /* write interest came while queuing: end_submit() serves it */
    struct watch_slot *deferred_next;   /* in conn.deferred */
} watch_slot;

#define VKPY_EV_SOON 4   /* the call_soon's argument: a write, optimistic */

static PyObject *loop_call_call(loop_call *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames);

static PyObject *loop_call_new(conn *c, vk_async_io *io)
{
    loop_call *cb = PyObject_New(loop_call, &loop_call_type);
    if (cb) {
        cb->vectorcall = (vectorcallfunc)loop_call_call;
        cb->c = c;
        cb->io = io;
        cb->w = NULL;
    }
    return (PyObject *)cb;
}

static void loop_call_dealloc(loop_call *self)
{
    PyObject_Free(self);
}

static int loop_method(PyObject *loop, PyObject *name, PyObject *fd, PyObject *cb, int events)
{
    PyObject *ev = cb ? PyLong_FromLong(events) : NULL;
    if (cb && !ev)
        return -1;
    PyObject *args[4] = {loop, fd, cb, ev};
    PyObject *r = PyObject_VectorcallMethod(name, args, (size_t)(cb ? 4 : 2), NULL);
    Py_XDECREF(ev);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Makes the loop's registration follow w->wanted (a write through
 * call_soon first when `optimistic`). 0, or -1 when the loop refused. */
static int sync_watch(conn *c, watch_slot *w, bool optimistic)
{
    int rc = 0;
    int want = w->wanted;
    if ((want & VK_EV_READ) && !(w->registered & VK_EV_READ)) {
        if (loop_method(c->loop, s_add_reader, w->fd, w->cb, VK_EV_READ) == 0)
            w->registered |= VK_EV_READ;
        else
            rc = -1;
    }
    if ((want & VK_EV_WRITE) && !(w->registered & VK_EV_WRITE) && !w->soon) {
        if (optimistic && c->submitting) {
            if (!w->deferred) {
                w->deferred = true;
                w->deferred_next = c->deferred;
                c->deferred = w;
            }
        } else if (optimistic) {
            PyObject *ev = PyLong_FromLong(VKPY_EV_SOON);
            PyObject *args[3] = {c->loop, w->cb, ev};
            PyObject *h = ev ? PyObject_VectorcallMethod(s_call_soon, args, 3, NULL) : NULL;
            Py_XDECREF(ev);
            if (h) {
                Py_DECREF(h);
                w->soon = true;
            } else {
                rc = -1;
            }
        } else if (loop_method(c->loop, s_add_writer, w->fd, w->cb, VK_EV_WRITE) == 0) {
            w->registered |= VK_EV_WRITE;
        } else {
            rc = -1;
        }
    }
    /* A remove that fails (a closed loop) leaves nothing watched either. */
    if (!(want & VK_EV_READ) && (w->registered & VK_EV_READ)) {
        loop_method(c->loop, s_remove_reader, w->fd, NULL, 0);
        w->registered &= ~VK_EV_READ;
    }
    if (!(want & VK_EV_WRITE) && (w->registered & VK_EV_WRITE)) {
        loop_method(c->loop, s_remove_writer, w->fd, NULL, 0);
        w->registered &= ~VK_EV_WRITE;
    }
    return rc;
}

/* The loop calls this for a ready descriptor (argument: the VK_EV_* bit,
 * or VKPY_EV_SOON) or for the timer (no argument). */
static PyObject *loop_call_call(loop_call *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames)
{
    conn *c = self->c;
    if (c == NULL || c->async == NULL || c->destroying)
        Py_RETURN_NONE;
    conn_enter(c);
    if (self->io) {
        long events = PyVectorcall_NARGS(nargsf) > 0 ? PyLong_AsLong(args[0]) : 0;
        if (events == VKPY_EV_SOON) {
            watch_slot *w = self->w;
            if (w)
                w->soon = false;
            if (w && (w->wanted & VK_EV_WRITE)) {
                vk_async_handle_io(self->io, VK_EV_WRITE);
                /* Still wanted: the socket is full; let the loop say when. */
                if (self->w && (self->w->wanted & VK_EV_WRITE)) {
                    PyObject *et, *ev, *tb;
                    PyErr_Fetch(&et, &ev, &tb);
                    sync_watch(c, self->w, false);
                    PyErr_Clear();
                    PyErr_Restore(et, ev, tb);
                }
            }
        } else if (events > 0) {
            vk_async_handle_io(self->io, (int)events);
        } else {
            PyErr_Clear();
        }
    } else {
        vk_async_handle_timer(c->async);
    }
    conn_leave(c);
    Py_RETURN_NONE;
}

static PyObject *loop_call_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

static int adapter_watch(void *data, vk_async_io *io, int fd, int events, void **slot)
{
    conn *c = data;
    watch_slot *w = *slot;
    int rc = 0;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (w == NULL) {
        if (events == 0)
            goto out;
        w = PyMem_Calloc(1, sizeof *w);
        if (w == NULL || !(w->cb = loop_call_new(c, io)) || !(w->fd = PyLong_FromLong(fd))) {
            if (w) {
                Py_XDECREF(w->cb);
                PyMem_Free(w);
            }
            rc = -1;
            goto out;
        }
        ((loop_call *)w->cb)->w = w;
        *slot = w;
    }
    w->wanted = events;
    rc = sync_watch(c, w, c->async != NULL && vk_async_is_connected(c->async));
    if (events == 0) {
        loop_call *cb = (loop_call *)w->cb;
        cb->c = NULL;
        cb->io = NULL;
        cb->w = NULL;
        for (watch_slot **at = &c->deferred; w->deferred && *at != NULL;
             at = &(*at)->deferred_next) {
            if (*at == w) {
                *at = w->deferred_next;
                break;
            }
        }
        Py_DECREF(w->cb);
        Py_DECREF(w->fd);
        PyMem_Free(w);
        *slot = NULL;
        rc = 0;
    }
out:
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    return rc;
}

/* Around queuing an operation from Python. Write interest that comes
 * meanwhile is served here: when the connection had nothing else in
 * flight, by writing now rather than on the next turn of the loop (a
 * request alone waits for nobody); with others in flight, by the call_soon
 * write, which gathers this turn's requests into one. */
static void begin_submit(conn *c)
{
    c->submitting = true;
}

static void end_submit(conn *c)
{
    c->submitting = false;
    if (c->deferred == NULL)
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    conn_enter(c);
    while (c->deferred != NULL) {
        watch_slot *w = c->deferred;
        c->deferred = w->deferred_next;
        w->deferred = false;
        if (!(w->wanted & VK_EV_WRITE))
            continue;
        if (!w->soon && c->deferred == NULL && vk_async_pending(c->async) == 1) {
            /* Handling the write may release this slot (a failed socket). */
            loop_call *cb = (loop_call *)w->cb;
            Py_INCREF(cb);
            vk_async_handle_io(cb->io, VK_EV_WRITE);
            /* Still wanted: the socket is full; let the loop say when. */
            if (cb->w != NULL && (cb->w->wanted & VK_EV_WRITE))
                sync_watch(c, cb->w, false);
            Py_DECREF(cb);
        } else {
            sync_watch(c, w, true);
        }
    }
    conn_leave(c);
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

static int adapter_timer(void *data, vk_async *client, int64_t ms, int release, void **slot)
{
    conn *c = data;
    PyObject *handle = *slot;
    int rc = 0;
    (void)client;
    (void)release;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (handle) {
        *slot = NULL;
        PyObject *r = PyObject_CallMethodNoArgs(handle, s_cancel);
        Py_XDECREF(r);
        Py_DECREF(handle);
    }
    if (ms >= 0 && c->timer_cb) {
        PyObject *delay = PyFloat_FromDouble((double)ms / 1000.0);
        PyObject *args[3] = {c->loop, delay, c->timer_cb};
        handle = delay ? PyObject_VectorcallMethod(s_call_later, args, 3, NULL) : NULL;
        Py_XDECREF(delay);
        if (handle)
            *slot = handle;
        else
            rc = -1;
    }
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    return rc;
}

/* A new connection on `loop` for cfg; NULL with an exception set. */
static conn *conn_new(PyObject *loop, const vk_config *cfg)
{
    conn *c = PyMem_Calloc(1, sizeof *c);
    if (c == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    c->refs = 1;
    c->loop = loop;
    Py_INCREF(loop);
    c->timer_cb = loop_call_new(c, NULL);
    if (c->timer_cb == NULL) {
        Py_DECREF(loop);
        PyMem_Free(c);
        return NULL;
    }
    vk_loop_adapter adapter = {VK_LOOP_ADAPTER_VERSION, c, adapter_watch, adapter_timer};
    vk_status st = vk_async_new(&c->async, cfg, &adapter);
    if (st != VK_OK) {
        vkpy_raise(st);
        ((loop_call *)c->timer_cb)->c = NULL;
        Py_DECREF(c->timer_cb);
        Py_DECREF(loop);
        PyMem_Free(c);
        return NULL;
    }
    return c;
}

/* ---- operations ------------------------------------------------------------ */

enum op_kind { OP_REPLY, OP_SET, OP_PING, OP_NONE, OP_PIPELINE };

typedef struct aop {
    PyObject *future;
    PyObject *pending;
    conn *c;
    uint64_t id;
    int kind;
} aop;

/* Resolves `future` (if no one cancelled it) with result, or with the
 * exception set now when result is NULL. */
static void resolve(PyObject *future, PyObject *result)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    if (result == NULL) {
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb && value)
            PyException_SetTraceback(value, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
    }
    /* A future cancelled meanwhile refuses (InvalidStateError): its task
     * no longer wants the result. */
    PyObject *r = NULL;
    if (result)
        r = PyObject_CallMethodOneArg(future, s_set_result, result);
    else if (value)
        r = PyObject_CallMethodOneArg(future, s_set_exception, value);
    if (r == NULL && PyErr_Occurred() && !PyErr_ExceptionMatches(invalid_state_error))
        PyErr_WriteUnraisable(future);
    PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(result);
    Py_XDECREF(value);
}

static PyObject *convert(int kind, const vk_reply *reply)
{
    switch (kind) {
    case OP_SET:
        return vkpy_set_result(reply);
    case OP_PING: {
        PyObject *r = vkpy_reply_to_python(reply, 1);
        if (!r)
            return NULL;
        int pong = PyUnicode_Check(r) && PyUnicode_Compare(r, s_pong) == 0;
        Py_DECREF(r);
        return PyBool_FromLong(pong);
    }
    case OP_NONE: {
        PyObject *r = vkpy_reply_to_python(reply, 1);
        if (!r)
            return NULL;
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    case OP_PIPELINE:
        return vkpy_reply_to_python(reply, 0);
    default:
        return vkpy_reply_to_python(reply, 1);
    }
}

static void on_complete(void *userdata, vk_status status, vk_reply *reply)
{
    aop *op = userdata;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (PyDict_DelItem(op->pending, op->future) < 0)
        PyErr_Clear();
    PyObject *result = NULL;
    if (status != VK_OK)
        vkpy_raise(status);
    else
        result = convert(op->kind, reply);
    vk_reply_free(reply);
    resolve(op->future, result);
    Py_DECREF(op->future);
    Py_DECREF(op->pending);
    PyMem_Free(op);
    PyErr_Restore(et, ev, tb);
}

/* ---- AsyncClientCore -------------------------------------------------------- */

typedef struct vkpy_aclient {
    PyObject_HEAD
    vk_config *cfg;      /* owned: every connection is made from it */
    PyObject *loop;      /* the loop it is bound to, once used */
    conn *shared;        /* the multiplexed connection, once opened */
    PyObject *pending;   /* future -> operation (int address) */
    PyObject *future_class;
} vkpy_aclient;

static PyTypeObject vkpy_aclient_type;

static PyObject *raise_text(vk_status status, const char *text)
{
    vkpy_raise(status);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_SetString(type, text);
    Py_XDECREF(type);
    return NULL;
}

/* The running loop, which must be the client's (binding it on first use).
 * Borrowed reference, or NULL with an exception. */
static PyObject *bound_loop(vkpy_aclient *self)
{
    if (self->cfg == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "vkclient.asyncio.Client is not initialised");
        return NULL;
    }
    PyObject *loop = PyObject_CallNoArgs(get_running_loop);
    if (loop == NULL)
        return NULL;
    if (loop == Py_None) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError,
                        "vkclient.asyncio: no running event loop (await the call in a coroutine)");
        return NULL;
    }
    if (self->loop == NULL) {
        self->loop = loop;
        return loop;
    }
    Py_DECREF(loop);
    if (loop != self->loop)
        return raise_text(VK_ERR_INVALID_ARGUMENT,
                          "vkclient.asyncio.Client is bound to the event loop it was first used on; "
                          "use it only from that loop (and its thread)");
    return loop;
}

/* The shared connection, opened on first use. Borrowed; NULL with an exception. */
static conn *shared_conn(vkpy_aclient *self)
{
    PyObject *loop = bound_loop(self);
    if (loop == NULL)
        return NULL;
    if (self->shared == NULL)
        self->shared = conn_new(loop, self->cfg);
    return self->shared;
}

static PyObject *new_future(vkpy_aclient *self)
{
    if (self->future_class == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "vkclient.asyncio.Client is not initialised");
        return NULL;
    }
    PyObject *args[1] = {self->loop};
    return PyObject_Vectorcall(self->future_class, args, 0, kwnames_loop);
}

/* A new operation for future on c; the caller fills id. */
static aop *new_op(vkpy_aclient *self, PyObject *future, conn *c, int kind)
{
    aop *op = PyMem_Malloc(sizeof *op);
    if (op == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    op->future = future;
    Py_INCREF(future);
    op->pending = self->pending;
    Py_INCREF(self->pending);
    op->c = c;
    op->id = 0;
    op->kind = kind;
    return op;
}

static void drop_op(aop *op)
{
    Py_DECREF(op->future);
    Py_DECREF(op->pending);
    PyMem_Free(op);
}

static int track(vkpy_aclient *self, PyObject *future, aop *op)
{
    PyObject *addr = PyLong_FromVoidPtr(op);
    if (addr == NULL)
        return -1;
    int rc = PyDict_SetItem(self->pending, future, addr);
    Py_DECREF(addr);
    return rc;
}

/* A submission the client refused (status st, detail set): the error is
 * raised, and the operation, its future and its tracking are undone. */
static PyObject *refused(vkpy_aclient *self, vk_status st, PyObject *future, aop *op)
{
    vkpy_raise(st);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyDict_DelItem(self->pending, future) < 0)
        PyErr_Clear();
    drop_op(op);
    Py_DECREF(future);
    PyErr_Restore(type, value, tb);
    return NULL;
}

/* Queues the command in `a` (released here); its future, or NULL. A
 * blocking command gets a connection of its own from the core. */
static PyObject *submit(vkpy_aclient *self, vkpy_argv *a, int kind)
{
    conn *c = shared_conn(self);
    if (c == NULL) {
        vkpy_argv_release(a);
        return NULL;
    }
    PyObject *future = new_future(self);
    aop *op = future ? new_op(self, future, c, kind) : NULL;
    if (op == NULL || track(self, future, op) < 0) {
        if (op)
            drop_op(op);
        Py_XDECREF(future);
        vkpy_argv_release(a);
        return NULL;
    }
    begin_submit(c);
    vk_status st = vk_async_command(c->async, a->argc, a->argv, a->lens, on_complete, op, &op->id);
    end_submit(c);
    vkpy_argv_release(a);
    if (st != VK_OK)
        return refused(self, st, future, op);
    return future;
}

/* Queues a script run (EVALSHA, then EVAL on NOSCRIPT, in the core); its
 * future, or NULL. */
static PyObject *submit_script(vkpy_aclient *self, vk_script *script, vkpy_script_lists_t *l)
{
    conn *c = shared_conn(self);
    if (c == NULL)
        return NULL;
    PyObject *future = new_future(self);
    aop *op = future ? new_op(self, future, c, OP_REPLY) : NULL;
    if (op == NULL || track(self, future, op) < 0) {
        if (op)
            drop_op(op);
        Py_XDECREF(future);
        return NULL;
    }
    begin_submit(c);
    vk_status st = vk_async_script_run(c->async, script, l->keys.argc, l->keys.argv,
                                       l->keys.lens, l->args.argc, l->args.argv, l->args.lens,
                                       on_complete, op, &op->id);
    end_submit(c);
    if (st != VK_OK)
        return refused(self, st, future, op);
    return future;
}

static PyObject *submit_args(vkpy_aclient *self, const char *prefix, PyObject *const *args,
                             Py_ssize_t nargs, int kind)
{
    vkpy_argv a;
    if (vkpy_argv_fill(&a, prefix, args, nargs) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    return submit(self, &a, kind);
}

static void aclient_close_all(vkpy_aclient *self)
{
    conn *c = self->shared;
    self->shared = NULL;
    conn_release(c);
}

static void aclient_dealloc(vkpy_aclient *self)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    aclient_close_all(self);
    vk_config_free(self->cfg);
    self->cfg = NULL;
    Py_CLEAR(self->loop);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->future_class);
    PyErr_Restore(et, ev, tb);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int probe_watch(void *data, vk_async_io *io, int fd, int events, void **slot)
{
    (void)data;
    (void)io;
    (void)fd;
    (void)events;
    (void)slot;
    return -1;
}

static int probe_timer(void *data, vk_async *client, int64_t ms, int release, void **slot)
{
    (void)data;
    (void)client;
    (void)ms;
    (void)release;
    (void)slot;
    return 0;
}

PyDoc_STRVAR(aclient_init_doc,
             "_init(config_pointer, probe)\n--\n\n"
             "Takes the native config (owned from now on) and checks it: validation\n"
             "texts; probe=True also asks the event-loop client to accept it (the\n"
             "topology), which does no I/O without GCP IAM auth (internal).");
static PyObject *aclient_init(vkpy_aclient *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_init(config_pointer, probe)");
        return NULL;
    }
    void *cfg = NULL;
    if (vkpy_unwrap_pointer(args[0], VKPY_CONFIG, &cfg) < 0)
        return NULL;
    if (self->cfg) {
        PyErr_SetString(PyExc_RuntimeError, "client is already initialised");
        return NULL;
    }
    self->cfg = cfg;
    vk_status st = vk_config_validate(cfg);
    if (st != VK_OK)
        return vkpy_raise(st);
    if (PyObject_IsTrue(args[1])) {
        vk_async *probe = NULL;
        vk_loop_adapter adapter = {VK_LOOP_ADAPTER_VERSION, NULL, probe_watch, probe_timer};
        st = vk_async_new(&probe, cfg, &adapter);
        if (st != VK_OK)
            return vkpy_raise(st);
        vk_async_free(probe);
    }
    Py_RETURN_NONE;
}

static PyObject *aclient_set_future_class(vkpy_aclient *self, PyObject *cls)
{
    Py_INCREF(cls);
    Py_XSETREF(self->future_class, cls);
    Py_RETURN_NONE;
}

static PyObject *aclient_pending(vkpy_aclient *self, PyObject *unused)
{
    Py_INCREF(self->pending);
    return self->pending;
}

PyDoc_STRVAR(aclient_execute_doc,
             "execute(*args)\n--\n\n"
             "Queues any command and returns an awaitable for its reply (the blocking\n"
             "client's conversion; an error reply raises vkclient.ResponseError).");
static PyObject *aclient_execute(vkpy_aclient *self, PyObject *const *args, Py_ssize_t nargs)
{
    return submit_args(self, NULL, args, nargs, OP_REPLY);
}

PyDoc_STRVAR(aclient_run_script_doc,
             "run_script(script_core, keys, args)\n--\n\n"
             "Queues a registered script: EVALSHA, and EVAL when the server does not\n"
             "have it; returns a future of the final reply (internal: AsyncScript).");
static PyObject *aclient_run_script(vkpy_aclient *self, PyObject *const *args,
                                    Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "run_script(script, keys, args)");
        return NULL;
    }
    vk_script *script = vkpy_script_handle(args[0]);
    if (script == NULL)
        return NULL;
    vkpy_script_lists_t l;
    PyObject *future = NULL;
    if (vkpy_script_lists(&l, args[1], args[2]) == 0)
        future = submit_script(self, script, &l);
    vkpy_script_lists_release(&l);
    return future;
}

PyDoc_STRVAR(aclient_get_doc, "get(key)\n--\n\nGET key: awaits bytes, or None.");
static PyObject *aclient_get(vkpy_aclient *self, PyObject *key)
{
    return submit_args(self, "GET", &key, 1, OP_REPLY);
}

PyDoc_STRVAR(aclient_set_doc,
             "set(key, value, px=None, nx=False)\n--\n\n"
             "SET key value [PX px] [NX]: awaits True, or None when NX prevented it.");
static PyObject *aclient_set(vkpy_aclient *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    vkpy_argv a;
    if (vkpy_set_argv(&a, args, nargs, kwnames) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    return submit(self, &a, OP_SET);
}

PyDoc_STRVAR(aclient_delete_doc, "delete(*keys)\n--\n\nDEL keys...: awaits the number removed.");
static PyObject *aclient_delete(vkpy_aclient *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs == 0) {
        PyErr_SetString(PyExc_TypeError, "delete() needs at least one key");
        return NULL;
    }
    return submit_args(self, "DEL", args, nargs, OP_REPLY);
}

PyDoc_STRVAR(aclient_ping_doc, "ping()\n--\n\nPING: awaits True when the server answered PONG.");
static PyObject *aclient_ping(vkpy_aclient *self, PyObject *unused)
{
    return submit_args(self, "PING", NULL, 0, OP_PING);
}

PyDoc_STRVAR(aclient_connect_doc,
             "_connect()\n--\n\nOpens the connection (handshake and PING); awaits None.");
static PyObject *aclient_connect(vkpy_aclient *self, PyObject *unused)
{
    return submit_args(self, "PING", NULL, 0, OP_NONE);
}

PyDoc_STRVAR(aclient_close_doc,
             "_close()\n--\n\n"
             "Closes the connection: operations in flight fail with CancelledError\n"
             "(\"client closed\"). A later call opens a new one on the same loop.");
static PyObject *aclient_close(vkpy_aclient *self, PyObject *unused)
{
    aclient_close_all(self);
    Py_RETURN_NONE;
}

static PyObject *aclient_is_connected(vkpy_aclient *self, PyObject *unused)
{
    return PyBool_FromLong(self->shared && vk_async_is_connected(self->shared->async));
}

PyDoc_STRVAR(aclient_snapshot_doc,
             "_snapshot()\n--\n\n"
             "The connection's status snapshot, as vkclient.Client._snapshot(); None\n"
             "before the client was first used (internal).");
static PyObject *aclient_snapshot(vkpy_aclient *self, PyObject *unused)
{
    if (self->shared == NULL)
        Py_RETURN_NONE;
    vk_snapshot *snap = NULL;
    vk_status st = vk_async_snapshot(&snap, self->shared->async);
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *result = vkpy_snapshot_tuple(snap);
    vk_snapshot_free(snap);
    return result;
}

static PyObject *aclient_bound(vkpy_aclient *self, PyObject *unused)
{
    return PyBool_FromLong(self->loop != NULL);
}

static PyMethodDef aclient_methods[] = {
    {"_init", (PyCFunction)(void (*)(void))aclient_init, METH_FASTCALL, aclient_init_doc},
    {"_set_future_class", (PyCFunction)aclient_set_future_class, METH_O,
     "_set_future_class(cls): the asyncio.Future subclass of this client (internal)."},
    {"_pending", (PyCFunction)aclient_pending, METH_NOARGS,
     "_pending(): the dict of operations in flight (internal)."},
    {"execute", (PyCFunction)(void (*)(void))aclient_execute, METH_FASTCALL, aclient_execute_doc},
    {"get", (PyCFunction)aclient_get, METH_O, aclient_get_doc},
    {"_run_script", (PyCFunction)(void (*)(void))aclient_run_script, METH_FASTCALL,
     aclient_run_script_doc},
    {"set", (PyCFunction)(void (*)(void))aclient_set, METH_FASTCALL | METH_KEYWORDS,
     aclient_set_doc},
    {"delete", (PyCFunction)(void (*)(void))aclient_delete, METH_FASTCALL, aclient_delete_doc},
    {"ping", (PyCFunction)aclient_ping, METH_NOARGS, aclient_ping_doc},
    {"_connect", (PyCFunction)aclient_connect, METH_NOARGS, aclient_connect_doc},
    {"_close", (PyCFunction)aclient_close, METH_NOARGS, aclient_close_doc},
    {"is_connected", (PyCFunction)aclient_is_connected, METH_NOARGS,
     "is_connected()\n--\n\nWhether the connection is open and ready (no probe)."},
    {"_snapshot", (PyCFunction)aclient_snapshot, METH_NOARGS, aclient_snapshot_doc},
    {"_bound", (PyCFunction)aclient_bound, METH_NOARGS,
     "_bound(): whether the client is bound to a loop (internal)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *aclient_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    vkpy_aclient *self = (vkpy_aclient *)type->tp_alloc(type, 0);
    if (self && !(self->pending = PyDict_New())) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyTypeObject vkpy_aclient_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.AsyncClientCore",
    .tp_basicsize = sizeof(vkpy_aclient),
    .tp_dealloc = (destructor)aclient_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Native base of vkclient.asyncio.Client: a vk_async on an asyncio loop.",
    .tp_methods = aclient_methods,
    .tp_new = aclient_new,
};

/* async_cancel(pending, future): cancels the operation of future in the core. */
static PyObject *py_async_cancel(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "async_cancel(pending, future)");
        return NULL;
    }
    PyObject *addr = PyDict_GetItemWithError(args[0], args[1]);
    if (addr == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;   /* completed meanwhile */
    }
    aop *op = PyLong_AsVoidPtr(addr);
    if (op == NULL)
        return NULL;
    conn *c = op->c;
    uint64_t id = op->id;
    /* The completion runs inside; the connection is freed, if that was its
     * last use, once the cancel has returned. */
    conn_enter(c);
    vk_async_cancel(c->async, id);
    conn_leave(c);
    Py_RETURN_NONE;
}

/* ---- AsyncPipelineCore ------------------------------------------------------- */

/* A pipeline queues on the shared connection (one holding a blocking
 * command gets a connection of its own from the core, as that command
 * alone would). */
typedef struct vkpy_apipeline {
    PyObject_HEAD
    vk_pipeline *pipeline;
    conn *c;
    vkpy_aclient *owner;
} vkpy_apipeline;

static PyObject *apipeline_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner = NULL;
    if (!PyArg_ParseTuple(args, "O!:Pipeline", &vkpy_aclient_type, &owner))
        return NULL;
    conn *c = shared_conn((vkpy_aclient *)owner);
    if (c == NULL)
        return NULL;
    vk_pipeline *pipeline = NULL;
    vk_status st = vk_async_pipeline_new(&pipeline, c->async);
    if (st != VK_OK)
        return vkpy_raise(st);
    vkpy_apipeline *self = (vkpy_apipeline *)type->tp_alloc(type, 0);
    if (!self) {
        vk_pipeline_free(pipeline);
        return NULL;
    }
    self->pipeline = pipeline;
    self->c = c;
    c->refs++;
    Py_INCREF(owner);
    self->owner = (vkpy_aclient *)owner;
    return (PyObject *)self;
}

static void apipeline_dealloc(vkpy_apipeline *self)
{
    vk_pipeline_free(self->pipeline);
    self->pipeline = NULL;
    conn_release(self->c);
    self->c = NULL;
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *apipeline_execute(vkpy_apipeline *self, PyObject *const *args, Py_ssize_t nargs)
{
    vkpy_argv a;
    if (vkpy_argv_fill(&a, NULL, args, nargs) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    vk_status st = vk_pipeline_append(self->pipeline, a.argc, a.argv, a.lens);
    vkpy_argv_release(&a);
    if (st != VK_OK)
        return vkpy_raise(st);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *apipeline_run(vkpy_apipeline *self, PyObject *unused)
{
    vkpy_aclient *owner = self->owner;
    if (bound_loop(owner) == NULL)
        return NULL;
    PyObject *future = new_future(owner);
    if (future == NULL)
        return NULL;
    if (vk_pipeline_length(self->pipeline) == 0) {
        /* Nothing to send: the empty list at once. */
        PyObject *empty = PyList_New(0);
        PyObject *r = empty ? PyObject_CallMethodOneArg(future, s_set_result, empty) : NULL;
        Py_XDECREF(empty);
        if (r == NULL) {
            Py_DECREF(future);
            return NULL;
        }
        Py_DECREF(r);
        return future;
    }
    conn *c = self->c;
    aop *op = new_op(owner, future, c, OP_PIPELINE);
    if (op == NULL || track(owner, future, op) < 0) {
        if (op)
            drop_op(op);
        Py_DECREF(future);
        return NULL;
    }
    begin_submit(c);
    vk_status st = vk_async_pipeline_exec(self->pipeline, on_complete, op, &op->id);
    end_submit(c);
    if (st != VK_OK)
        return refused(owner, st, future, op);
    return future;
}

static PyObject *apipeline_set_transaction(vkpy_apipeline *self, PyObject *on)
{
    int flag = PyObject_IsTrue(on);
    if (flag < 0)
        return NULL;
    vk_status st = vk_pipeline_set_transaction(self->pipeline, flag);
    if (st != VK_OK)
        return vkpy_raise(st);
    Py_RETURN_NONE;
}

static PyObject *apipeline_is_transaction(vkpy_apipeline *self, PyObject *unused)
{
    return PyBool_FromLong(vk_pipeline_is_transaction(self->pipeline));
}

static Py_ssize_t apipeline_length(vkpy_apipeline *self)
{
    return (Py_ssize_t)vk_pipeline_length(self->pipeline);
}

static PyMethodDef apipeline_methods[] = {
    {"execute", (PyCFunction)(void (*)(void))apipeline_execute, METH_FASTCALL,
     "execute(*args)\n--\n\nQueues one command; returns the pipeline."},
    {"run", (PyCFunction)apipeline_run, METH_NOARGS,
     "run()\n--\n\nSends every queued command; awaits their replies as a list\n"
     "(error replies as ResponseError instances). The pipeline is empty after."},
    {"_set_transaction", (PyCFunction)apipeline_set_transaction, METH_O,
     "_set_transaction(on)\n--\n\nTransaction mode: run() sends MULTI ... EXEC (internal)."},
    {"_is_transaction", (PyCFunction)apipeline_is_transaction, METH_NOARGS,
     "_is_transaction()\n--\n\nWhether the pipeline is in transaction mode."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods apipeline_sequence = {
    .sq_length = (lenfunc)apipeline_length,
};

static PyTypeObject vkpy_apipeline_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.AsyncPipelineCore",
    .tp_basicsize = sizeof(vkpy_apipeline),
    .tp_dealloc = (destructor)apipeline_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Native base of vkclient.asyncio.Pipeline.",
    .tp_methods = apipeline_methods,
    .tp_as_sequence = &apipeline_sequence,
    .tp_new = apipeline_new,
};

/* ---- AsyncScanCore ------------------------------------------------------------ */

/* One vk_scan on the shared connection, page by page, for the async
 * generators Client.scan_iter and friends (vkclient/asyncio.py). A page's
 * future is not tracked for cancellation: cancelling it leaves the page to
 * complete unheard, and the scan (freed with its generator) cancels a page
 * still out. */
typedef struct vkpy_ascan {
    PyObject_HEAD
    vk_scan *scan;
    conn *c;
    vkpy_aclient *owner;
} vkpy_ascan;

static int optional_bytes(PyObject *obj, const char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    return obj == Py_None ? 0 : vkpy_as_bytes(obj, data, len);
}

/* AsyncScanCore(client, command, key, match, count, type), as ScanCore. */
static PyObject *ascan_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner, *key, *match, *count, *kind;
    const char *command;
    if (kwargs != NULL && PyDict_Size(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "AsyncScanCore takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!sOOOO:AsyncScanCore", &vkpy_aclient_type, &owner, &command,
                          &key, &match, &count, &kind))
        return NULL;
    const char *keyp, *matchp, *typep;
    size_t keylen, matchlen, typelen;
    if (optional_bytes(key, &keyp, &keylen) < 0 || optional_bytes(match, &matchp, &matchlen) < 0 ||
        optional_bytes(kind, &typep, &typelen) < 0)
        return NULL;
    long long n = 0;
    if (count != Py_None) {
        if (!PyLong_Check(count) || PyBool_Check(count)) {
            PyErr_SetString(PyExc_TypeError, "count must be an int or None");
            return NULL;
        }
        if ((n = PyLong_AsLongLong(count)) == -1 && PyErr_Occurred())
            return NULL;
        if (n == 0) {
            PyErr_SetString(PyExc_ValueError, "count must be a positive int or None");
            return NULL;
        }
    }
    PyObject *type_bytes = NULL;
    if (typep != NULL) {
        if (memchr(typep, '\0', typelen) != NULL) {
            PyErr_SetString(PyExc_ValueError, "scan type contains a NUL byte");
            return NULL;
        }
        if ((type_bytes = PyBytes_FromStringAndSize(typep, (Py_ssize_t)typelen)) == NULL)
            return NULL;
    }
    conn *c = shared_conn((vkpy_aclient *)owner);
    if (c == NULL) {
        Py_XDECREF(type_bytes);
        return NULL;
    }
    vk_scan *scan = NULL;
    vk_status st;
    if (keyp == NULL && strcmp(command, "SCAN") == 0)
        st = vk_async_scan_new(&scan, c->async, matchp, matchlen, (int64_t)n,
                               type_bytes != NULL ? PyBytes_AS_STRING(type_bytes) : NULL);
    else
        st = vk_async_scan_new_key(&scan, c->async, command, keyp, keylen, matchp, matchlen,
                                   (int64_t)n);
    Py_XDECREF(type_bytes);
    if (st != VK_OK)
        return vkpy_raise(st);
    vkpy_ascan *self = (vkpy_ascan *)type->tp_alloc(type, 0);
    if (!self) {
        vk_scan_free(scan);
        return NULL;
    }
    self->scan = scan;
    self->c = c;
    c->refs++;
    Py_INCREF(owner);
    self->owner = (vkpy_aclient *)owner;
    return (PyObject *)self;
}

static void ascan_dealloc(vkpy_ascan *self)
{
    conn *c = self->c;
    if (c != NULL) {
        /* A page still out completes (cancelled) inside the free. */
        conn_enter(c);
        vk_scan_free(self->scan);
        conn_leave(c);
    }
    self->scan = NULL;
    conn_release(c);
    self->c = NULL;
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ascan_next_page(vkpy_ascan *self, PyObject *unused)
{
    vkpy_aclient *owner = self->owner;
    if (bound_loop(owner) == NULL)
        return NULL;
    PyObject *future = new_future(owner);
    if (future == NULL)
        return NULL;
    conn *c = self->c;
    aop *op = new_op(owner, future, c, OP_REPLY);
    if (op == NULL) {
        Py_DECREF(future);
        return NULL;
    }
    begin_submit(c);
    vk_status st = vk_async_scan_next(self->scan, on_complete, op);
    end_submit(c);
    if (st != VK_OK) {
        drop_op(op);
        Py_DECREF(future);
        return vkpy_raise(st);
    }
    return future;
}

static PyObject *ascan_done(vkpy_ascan *self, PyObject *unused)
{
    return PyBool_FromLong(vk_scan_done(self->scan));
}

static PyMethodDef ascan_methods[] = {
    {"next_page", (PyCFunction)ascan_next_page, METH_NOARGS,
     "next_page()\n--\n\nAwaits the next page as a list ([] once done())."},
    {"done", (PyCFunction)ascan_done, METH_NOARGS,
     "done()\n--\n\nTrue once the last page was returned."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject vkpy_ascan_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.AsyncScanCore",
    .tp_basicsize = sizeof(vkpy_ascan),
    .tp_dealloc = (destructor)ascan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One vk_scan of an event-loop client: SCAN, HSCAN, SSCAN or ZSCAN page by page.",
    .tp_methods = ascan_methods,
    .tp_new = ascan_new,
};

/* ---- AsyncLockManagerCore ---------------------------------------------------- */

typedef struct vkpy_alocks {
    PyObject_HEAD
    vk_async_lock_manager *manager;
    PyObject *clients;  /* tuple of AsyncClientCore (or None) */
    conn **conns;
    size_t n;
    PyObject *loop;
} vkpy_alocks;

static PyTypeObject vkpy_alocks_type;

static void alocks_release(vkpy_alocks *self)
{
    vk_async_lock_manager_free(self->manager);
    self->manager = NULL;
    for (size_t i = 0; self->conns && i < self->n; i++)
        conn_release(self->conns[i]);
    PyMem_Free(self->conns);
    self->conns = NULL;
    self->n = 0;
}

static void alocks_dealloc(vkpy_alocks *self)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    alocks_release(self);
    Py_CLEAR(self->clients);
    Py_CLEAR(self->loop);
    PyErr_Restore(et, ev, tb);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* AsyncLockManagerCore((client, ...)): on the running loop, over each
 * client's shared connection. */
static PyObject *alocks_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *clients = NULL;
    if (!PyArg_ParseTuple(args, "O!:LockManager", &PyTuple_Type, &clients))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(clients);
    vkpy_alocks *self = (vkpy_alocks *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    Py_INCREF(clients);
    self->clients = clients;
    self->conns = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof *self->conns);
    vk_async **asyncs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof *asyncs);
    if (!self->conns || !asyncs) {
        PyMem_Free(asyncs);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(clients, i);
        if (item == Py_None)
            continue;
        if (!PyObject_TypeCheck(item, &vkpy_aclient_type)) {
            PyErr_Format(PyExc_TypeError,
                         "LockManager takes a vkclient.asyncio.Client or a list of them, not %.80s",
                         Py_TYPE(item)->tp_name);
            goto fail;
        }
        conn *c = shared_conn((vkpy_aclient *)item);
        if (c == NULL)
            goto fail;
        c->refs++;
        self->conns[self->n++] = c;
        asyncs[i] = c->async;
        if (self->loop == NULL) {
            self->loop = ((vkpy_aclient *)item)->loop;
            Py_INCREF(self->loop);
        }
    }
    vk_status st = vk_async_lock_manager_new(&self->manager, asyncs, (size_t)n);
    PyMem_Free(asyncs);
    asyncs = NULL;
    if (st != VK_OK) {
        vkpy_raise(st);
        goto fail;
    }
    return (PyObject *)self;
fail:
    PyMem_Free(asyncs);
    Py_DECREF(self);
    return NULL;
}

/* A lock operation in flight: its future and what keeps the manager alive. */
typedef struct lock_op {
    PyObject *future;
    PyObject *manager;
} lock_op;

static void free_lock_after_unlock(void *userdata, vk_status status)
{
    (void)status;
    vk_lock_free(userdata);
}

static void on_lock(void *userdata, vk_status status, vk_lock *lock)
{
    lock_op *op = userdata;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *done = PyObject_CallMethodNoArgs(op->future, s_done);
    int is_done = done ? PyObject_IsTrue(done) : 1;
    Py_XDECREF(done);
    PyErr_Clear();
    if (is_done) {
        /* Nobody waits for it any more (the task was cancelled): give it back. */
        if (lock && vk_async_lock_unlock(lock, free_lock_after_unlock, lock) != VK_OK)
            vk_lock_free(lock);
    } else {
        PyObject *result = NULL;
        if (status != VK_OK)
            vkpy_raise(status);
        else if ((result = vkpy_wrap_pointer(lock, VKPY_LOCK)) == NULL)
            vk_lock_free(lock);
        resolve(op->future, result);
    }
    Py_DECREF(op->future);
    Py_DECREF(op->manager);
    PyMem_Free(op);
    PyErr_Restore(et, ev, tb);
}

static void on_lock_done(void *userdata, vk_status status)
{
    lock_op *op = userdata;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *result = NULL;
    if (status != VK_OK)
        vkpy_raise(status);
    else {
        result = Py_None;
        Py_INCREF(result);
    }
    resolve(op->future, result);
    Py_DECREF(op->future);
    Py_DECREF(op->manager);
    PyMem_Free(op);
    PyErr_Restore(et, ev, tb);
}

static lock_op *new_lock_op(PyObject *manager, PyObject *future)
{
    lock_op *op = PyMem_Malloc(sizeof *op);
    if (op == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    op->future = future;
    Py_INCREF(future);
    op->manager = manager;
    Py_INCREF(manager);
    return op;
}

static void drop_lock_op(lock_op *op)
{
    Py_DECREF(op->future);
    Py_DECREF(op->manager);
    PyMem_Free(op);
}

static void begin_submit_all(vkpy_alocks *self)
{
    for (size_t i = 0; i < self->n; i++)
        begin_submit(self->conns[i]);
}

static void end_submit_all(vkpy_alocks *self)
{
    for (size_t i = 0; i < self->n; i++)
        end_submit(self->conns[i]);
}

/* The running loop must be the manager's; a future on it (or NULL). */
static PyObject *lock_future(vkpy_alocks *self)
{
    if (self->loop == NULL || self->n == 0) {
        PyErr_SetString(PyExc_RuntimeError, "lock manager has no client");
        return NULL;
    }
    vkpy_aclient *first = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->clients); i++)
        if (PyTuple_GET_ITEM(self->clients, i) != Py_None) {
            first = (vkpy_aclient *)PyTuple_GET_ITEM(self->clients, i);
            break;
        }
    if (bound_loop(first) == NULL)
        return NULL;
    return new_future(first);
}

static int lock_key_bytes(PyObject *key_obj, const char **key, size_t *keylen)
{
    if (key_obj == Py_None) {
        *key = NULL;
        *keylen = 0;
        return 0;
    }
    if (!PyUnicode_Check(key_obj) && !PyBytes_Check(key_obj)) {
        PyErr_Format(PyExc_TypeError, "lock key must be str or bytes, not %.80s",
                     Py_TYPE(key_obj)->tp_name);
        return -1;
    }
    return vkpy_as_bytes(key_obj, key, keylen);
}

/* A lock operation with its future (NULL with the error set). */
static lock_op *start_lock_op(vkpy_alocks *self)
{
    PyObject *future = lock_future(self);
    if (future == NULL)
        return NULL;
    lock_op *op = new_lock_op((PyObject *)self, future);
    Py_DECREF(future);   /* the operation holds it */
    return op;
}

/* After the core's call: the future to await, or NULL with the refusal
 * raised (no completion comes then). */
static PyObject *lock_op_submitted(lock_op *op, vk_status st)
{
    if (st != VK_OK) {
        vkpy_raise(st);
        drop_lock_op(op);
        return NULL;
    }
    Py_INCREF(op->future);   /* completions never run inside the call */
    return op->future;
}

/* The done callback of an acquisition's future, bound to (manager, id): a
 * cancelled future (its task cancelled, or a wait_for timing out) cancels
 * the acquisition in the core, which gives back whatever its attempt in
 * flight takes. One that completed meanwhile is no longer in flight: the
 * core refuses, and on_lock gave back a lock nobody awaited. */
static PyObject *acquisition_done(PyObject *bound, PyObject *future)
{
    PyObject *cancelled = PyObject_CallMethodNoArgs(future, s_cancelled);
    int yes = cancelled != NULL && PyObject_IsTrue(cancelled) == 1;
    Py_XDECREF(cancelled);
    PyErr_Clear();
    if (yes) {
        vkpy_alocks *self = (vkpy_alocks *)PyTuple_GET_ITEM(bound, 0);
        unsigned long long id = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(bound, 1));
        if (self->manager != NULL && !PyErr_Occurred()) {
            begin_submit_all(self);
            vk_async_lock_cancel(self->manager, (uint64_t)id);
            end_submit_all(self);
        }
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static PyMethodDef acquisition_done_def = {"_acquisition_done", acquisition_done, METH_O,
                                           "Cancels a cancelled future's acquisition."};

/* Binds the cancel of acquisition id to future's cancellation (-1 with
 * an error set). */
static int cancel_with_future(vkpy_alocks *self, PyObject *future, uint64_t id)
{
    PyObject *bound = Py_BuildValue("(OK)", (PyObject *)self, (unsigned long long)id);
    PyObject *callback = bound != NULL ? PyCFunction_New(&acquisition_done_def, bound) : NULL;
    Py_XDECREF(bound);
    PyObject *r = callback != NULL
                      ? PyObject_CallMethodOneArg(future, s_add_done_callback, callback)
                      : NULL;
    Py_XDECREF(callback);
    Py_XDECREF(r);
    return r != NULL ? 0 : -1;
}

/* try_lock(key) / acquire(key, options): a future for the lock pointer. */
static PyObject *alocks_acquire_common(vkpy_alocks *self, PyObject *key_obj, PyObject *options,
                                       bool once)
{
    const char *key;
    size_t keylen;
    vk_lock_options opts;
    if (lock_key_bytes(key_obj, &key, &keylen) < 0)
        return NULL;
    if (!once && vkpy_lock_options_from_python(options, &opts) < 0)
        return NULL;
    lock_op *op = start_lock_op(self);
    if (op == NULL)
        return NULL;
    begin_submit_all(self);
    uint64_t id = 0;
    vk_status st = once ? vk_async_lock_try(self->manager, key, keylen, on_lock, op, &id)
                        : vk_async_lock_acquire(self->manager, key, keylen,
                                                options == Py_None ? NULL : &opts, on_lock, op,
                                                &id);
    end_submit_all(self);
    PyObject *future = lock_op_submitted(op, st);
    if (future != NULL && cancel_with_future(self, future, id) < 0) {
        /* Without the binding a cancel would not reach the core: better
         * no lock than one nobody can stop waiting for. */
        begin_submit_all(self);
        vk_async_lock_cancel(self->manager, id);
        end_submit_all(self);
        Py_CLEAR(future);
    }
    return future;
}

static PyObject *alocks_try_lock(vkpy_alocks *self, PyObject *key)
{
    return alocks_acquire_common(self, key, Py_None, true);
}

static PyObject *alocks_acquire(vkpy_alocks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "acquire(key, options)");
        return NULL;
    }
    return alocks_acquire_common(self, args[0], args[1], false);
}

/* unlock(lock) / extend(lock, expiry_ms): a future for None. */
static PyObject *alocks_unlock_or_extend(vkpy_alocks *self, PyObject *lock_obj, PyObject *ms_obj)
{
    void *lock = NULL;
    if (vkpy_unwrap_pointer(lock_obj, VKPY_LOCK, &lock) < 0)
        return NULL;
    long long ms = 0;
    if (ms_obj && (ms = PyLong_AsLongLong(ms_obj)) == -1 && PyErr_Occurred())
        return NULL;
    lock_op *op = start_lock_op(self);
    if (op == NULL)
        return NULL;
    begin_submit_all(self);
    vk_status st = ms_obj ? vk_async_lock_extend(lock, (int64_t)ms, on_lock_done, op)
                          : vk_async_lock_unlock(lock, on_lock_done, op);
    end_submit_all(self);
    return lock_op_submitted(op, st);
}

static PyObject *alocks_unlock(vkpy_alocks *self, PyObject *lock)
{
    return alocks_unlock_or_extend(self, lock, NULL);
}

static PyObject *alocks_extend(vkpy_alocks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "extend(lock, expiry_ms)");
        return NULL;
    }
    return alocks_unlock_or_extend(self, args[0], args[1]);
}

static PyMethodDef alocks_methods[] = {
    {"try_lock", (PyCFunction)alocks_try_lock, METH_O,
     "try_lock(key) -> awaitable lock pointer or None (one attempt, default options)."},
    {"acquire", (PyCFunction)(void (*)(void))alocks_acquire, METH_FASTCALL,
     "acquire(key, options) -> awaitable lock pointer (tries per options)."},
    {"unlock", (PyCFunction)alocks_unlock, METH_O, "unlock(lock) -> awaitable None."},
    {"extend", (PyCFunction)(void (*)(void))alocks_extend, METH_FASTCALL,
     "extend(lock, expiry_ms) -> awaitable None."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject vkpy_alocks_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.AsyncLockManagerCore",
    .tp_basicsize = sizeof(vkpy_alocks),
    .tp_dealloc = (destructor)alocks_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A vk_async_lock_manager over the shared connections of asyncio clients.",
    .tp_methods = alocks_methods,
    .tp_new = alocks_new,
};

/* async_lock_function_error(exc): the LockFunctionError a with_lock
 * function's exception becomes (raised from it), as the blocking with_lock. */
static PyObject *py_lock_function_error(PyObject *module, PyObject *exc)
{
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "expected an exception");
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    vkpy_wrap_function_error();
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* async_lock_auto_renew(lock) and async_lock_free(lock): the SWIG wrappers
 * of vk_lock_auto_renew and vk_lock_free release the GIL (a blocking
 * lock's renewal is a thread); a handle of the event-loop manager works on
 * the loop, through the adapter, which needs the GIL: these keep it. */
static PyObject *py_async_lock_auto_renew(PyObject *module, PyObject *lock_obj)
{
    void *lock = NULL;
    if (vkpy_unwrap_pointer(lock_obj, VKPY_LOCK, &lock) < 0)
        return NULL;
    vk_status st = vk_lock_auto_renew(lock);
    if (st != VK_OK)
        return vkpy_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_async_lock_free(PyObject *module, PyObject *lock_obj)
{
    void *lock = NULL;
    if (vkpy_unwrap_pointer(lock_obj, VKPY_LOCK, &lock) < 0)
        return NULL;
    vk_lock_free(lock);
    Py_RETURN_NONE;
}

static PyMethodDef async_functions[] = {
    {"async_lock_auto_renew", (PyCFunction)py_async_lock_auto_renew, METH_O,
     "async_lock_auto_renew(lock): renews an event-loop lock on its loop."},
    {"async_lock_free", (PyCFunction)py_async_lock_free, METH_O,
     "async_lock_free(lock): frees an event-loop lock handle."},
    {"async_cancel", (PyCFunction)(void (*)(void))py_async_cancel, METH_FASTCALL,
     "async_cancel(pending, future): cancels the future's operation in the core."},
    {"async_lock_function_error", (PyCFunction)py_lock_function_error, METH_O,
     "async_lock_function_error(exc) -> LockFunctionError raised from exc."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject loop_call_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.LoopCall",
    .tp_basicsize = sizeof(loop_call),
    .tp_dealloc = (destructor)loop_call_dealloc,
    .tp_call = loop_call_tp_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(loop_call, vectorcall),
    .tp_doc = "Hands a loop event to the event-loop client (internal).",
};

int vkpy_async_init(PyObject *module)
{
#define INTERN(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1
    INTERN(s_add_reader, "add_reader");
    INTERN(s_remove_reader, "remove_reader");
    INTERN(s_add_writer, "add_writer");
    INTERN(s_remove_writer, "remove_writer");
    INTERN(s_call_later, "call_later");
    INTERN(s_call_soon, "call_soon");
    INTERN(s_cancel, "cancel");
    INTERN(s_set_result, "set_result");
    INTERN(s_set_exception, "set_exception");
    INTERN(s_done, "done");
    INTERN(s_cancelled, "cancelled");
    INTERN(s_add_done_callback, "add_done_callback");
    INTERN(s_pong, "PONG");
#undef INTERN
    kwnames_loop = Py_BuildValue("(s)", "loop");
    if (!kwnames_loop)
        return -1;
    PyObject *events = PyImport_ImportModule("asyncio.events");
    if (!events)
        return -1;
    get_running_loop = PyObject_GetAttrString(events, "_get_running_loop");
    Py_DECREF(events);
    if (!get_running_loop)
        return -1;
    PyObject *exceptions = PyImport_ImportModule("asyncio.exceptions");
    if (!exceptions)
        return -1;
    invalid_state_error = PyObject_GetAttrString(exceptions, "InvalidStateError");
    Py_DECREF(exceptions);
    if (!invalid_state_error)
        return -1;
    if (PyType_Ready(&loop_call_type) < 0 || PyType_Ready(&vkpy_aclient_type) < 0 ||
        PyType_Ready(&vkpy_apipeline_type) < 0 || PyType_Ready(&vkpy_alocks_type) < 0 ||
        PyType_Ready(&vkpy_ascan_type) < 0)
        return -1;
    Py_INCREF(&vkpy_ascan_type);
    if (PyModule_AddObject(module, "AsyncScanCore", (PyObject *)&vkpy_ascan_type) < 0)
        return -1;
    Py_INCREF(&vkpy_aclient_type);
    if (PyModule_AddObject(module, "AsyncClientCore", (PyObject *)&vkpy_aclient_type) < 0)
        return -1;
    Py_INCREF(&vkpy_apipeline_type);
    if (PyModule_AddObject(module, "AsyncPipelineCore", (PyObject *)&vkpy_apipeline_type) < 0)
        return -1;
    Py_INCREF(&vkpy_alocks_type);
    if (PyModule_AddObject(module, "AsyncLockManagerCore", (PyObject *)&vkpy_alocks_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, async_functions);
}
