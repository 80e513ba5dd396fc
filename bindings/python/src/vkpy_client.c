/*
 * ClientCore and PipelineCore: the native bases of vkclient.Client and
 * vkclient.Pipeline.
 *
 * This is the hot path, so it is written against the CPython API directly:
 * a call such as client.get(k) goes from the bytecode straight to
 * client_get() (METH_O / METH_FASTCALL, no argument tuple, no Python
 * frame), converts its arguments without copying, releases the GIL only
 * around the blocking core call, and turns the reply into Python objects
 * before freeing the C tree.
 */
#include "vkpy.h"

#include <stdbool.h>
#include <string.h>

typedef struct vkpy_client {
    PyObject_HEAD
    vk_client *client; /* NULL until _open() succeeds */
} vkpy_client;

typedef struct vkpy_pipeline {
    PyObject_HEAD
    vk_pipeline *pipeline;
    PyObject *owner; /* the ClientCore, kept alive while the pipeline is */
} vkpy_pipeline;

static PyTypeObject vkpy_client_type;
static PyTypeObject vkpy_pipeline_type;

/* Strings used as command arguments by the shortcuts below (set, ping). */
static PyObject *text_px, *text_nx, *text_pong;

/* Runs the command in `a` (released here) without the GIL. Returns 0 with
 * the reply in *out, or -1 with the exception for the failure set. A
 * command that waits on the server (BLPOP 0, XREAD BLOCK ...) may wait
 * without limit: it runs with a context that Ctrl-C cancels. Every other
 * command takes the fast path without one. */
static int run_command(vk_client *client, vkpy_argv *a, vk_reply **out)
{
    bool blocking = vk_command_is_blocking(a->argc, a->argv, a->lens);
    vkpy_interruptible in = {NULL, NULL, NULL, NULL};
    if (blocking && vkpy_interruptible_start(&in, -1) < 0) {
        vkpy_argv_release(a);
        return -1;
    }
    vk_status st;
    Py_BEGIN_ALLOW_THREADS
    st = vk_client_command(out, client, in.ctx, a->argc, a->argv, a->lens);
    Py_END_ALLOW_THREADS
    vkpy_argv_release(a);
    if (blocking && vkpy_interruptible_finish(&in)) {
        vk_reply_free(*out);
        *out = NULL;
        return -1;
    }
    if (st != VK_OK) {
        vkpy_raise(st);
        return -1;
    }
    return 0;
}

/* Runs the command in `a` and converts its reply (an error reply raises). */
static PyObject *command_to_python(vk_client *client, vkpy_argv *a)
{
    vk_reply *reply = NULL;
    if (run_command(client, a, &reply) < 0)
        return NULL;
    PyObject *result = vkpy_reply_to_python(reply, 1);
    vk_reply_free(reply);
    return result;
}

/* ---- ClientCore ---------------------------------------------------------- */

static void client_dealloc(vkpy_client *self)
{
    vk_client *client = self->client;
    self->client = NULL;
    if (client) {
        /* Freeing joins the refresh thread, which may be waiting for the
         * GIL to deliver a log line: let it have it. */
        Py_BEGIN_ALLOW_THREADS
        vk_client_free(client);
        Py_END_ALLOW_THREADS
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(client_open_doc, "_open(config_pointer)\n--\n\n"
                              "Creates the core client from a native config (internal).");
static PyObject *client_open(vkpy_client *self, PyObject *arg)
{
    void *cfg = NULL;
    if (vkpy_unwrap_pointer(arg, VKPY_CONFIG, &cfg) < 0)
        return NULL;
    if (self->client) {
        PyErr_SetString(PyExc_RuntimeError, "client is already open");
        return NULL;
    }
    vk_client *client = NULL;
    vk_status st;
    Py_BEGIN_ALLOW_THREADS
    st = vk_client_new(&client, cfg);
    Py_END_ALLOW_THREADS
    if (st != VK_OK)
        return vkpy_raise(st);
    self->client = client;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(client_execute_doc,
             "execute(*args)\n--\n\n"
             "Runs any command, e.g. execute(\"SET\", \"k\", b\"v\"), and returns its\n"
             "reply: bytes for bulk strings, str for simple strings, int, None for\n"
             "nil, list for arrays (dict, float, bool under RESP3). Arguments may\n"
             "be bytes, str (sent as UTF-8), int or float. An error reply raises\n"
             "vkclient.ResponseError; connection problems raise the matching\n"
             "vkclient.Error subclass. The GIL is released while waiting.");
static PyObject *client_execute(vkpy_client *self, PyObject *const *args, Py_ssize_t nargs)
{
    vkpy_argv a;
    if (vkpy_argv_fill(&a, NULL, args, nargs) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    return command_to_python(self->client, &a);
}

PyDoc_STRVAR(client_run_script_doc,
             "_run_script(script_core, keys, args)\n--\n\n"
             "Runs a registered script: EVALSHA, and EVAL when the server does not\n"
             "have it (internal: vkclient.Script calls it).");
static PyObject *client_run_script(vkpy_client *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_run_script(script, keys, args)");
        return NULL;
    }
    vk_script *script = vkpy_script_handle(args[0]);
    if (script == NULL)
        return NULL;
    vkpy_script_lists_t l;
    if (vkpy_script_lists(&l, args[1], args[2]) < 0) {
        vkpy_script_lists_release(&l);
        return NULL;
    }
    vk_reply *reply = NULL;
    vk_status st;
    Py_BEGIN_ALLOW_THREADS
    st = vk_script_run(&reply, self->client, NULL, script, l.keys.argc, l.keys.argv,
                       l.keys.lens, l.args.argc, l.args.argv, l.args.lens);
    Py_END_ALLOW_THREADS
    vkpy_script_lists_release(&l);
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *result = vkpy_reply_to_python(reply, 1);
    vk_reply_free(reply);
    return result;
}

PyDoc_STRVAR(client_get_doc, "get(key)\n--\n\n"
                             "GET key: the value as bytes, or None when the key does not exist.");
static PyObject *client_get(vkpy_client *self, PyObject *key)
{
    vkpy_argv a;
    if (vkpy_argv_fill(&a, "GET", &key, 1) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    return command_to_python(self->client, &a);
}

/* px as milliseconds (int or float) or a datetime.timedelta, as an int.
 * New reference. */
static PyObject *milliseconds(PyObject *px)
{
    if (PyLong_Check(px)) {
        Py_INCREF(px);
        return px;
    }
    if (PyFloat_Check(px))
        return PyLong_FromDouble(PyFloat_AS_DOUBLE(px) + 0.5);
    if (!PyObject_HasAttrString(px, "total_seconds")) {
        PyErr_Format(PyExc_TypeError, "px must be milliseconds or a datetime.timedelta, not %.80s",
                     Py_TYPE(px)->tp_name);
        return NULL;
    }
    PyObject *seconds = PyObject_CallMethod(px, "total_seconds", NULL);
    if (!seconds)
        return NULL;
    double value = PyFloat_AsDouble(seconds);
    Py_DECREF(seconds);
    if (value == -1.0 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLongLong((long long)(value * 1000.0 + 0.5));
}

/* SET's arguments from set(key, value, px=None, nx=False), shared with the
 * event-loop client (vkpy_async.c). */
int vkpy_set_argv(vkpy_argv *a, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "px", "nx"};
    PyObject *values[4] = {NULL, NULL, Py_None, Py_False};
    a->argc = 0;
    a->argv = a->small_argv;
    a->lens = a->small_lens;
    a->numbers = a->small_numbers;
    a->keep = NULL;
    if (nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "set() takes at most 4 positional arguments");
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        values[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        int slot = -1;
        for (int j = 0; name && j < 4; j++)
            if (strcmp(name, names[j]) == 0)
                slot = j;
        if (slot < 0 || slot < nargs) {
            PyErr_Format(PyExc_TypeError, "set() got an unexpected or repeated argument '%s'",
                         name ? name : "?");
            return -1;
        }
        values[slot] = args[nargs + k];
    }
    if (!values[0] || !values[1]) {
        PyErr_SetString(PyExc_TypeError, "set() needs a key and a value");
        return -1;
    }

    PyObject *items[5] = {values[0], values[1]};
    Py_ssize_t n = 2;
    PyObject *px_ms = NULL;
    if (values[2] != Py_None) {
        if (!(px_ms = milliseconds(values[2])))
            return -1;
        items[n++] = text_px;
        items[n++] = px_ms;
    }
    int nx = PyObject_IsTrue(values[3]);
    if (nx < 0) {
        Py_XDECREF(px_ms);
        return -1;
    }
    if (nx)
        items[n++] = text_nx;
    /* An int argument is copied into a's own buffer: px_ms may go now. */
    int rc = vkpy_argv_fill(a, "SET", items, n);
    Py_XDECREF(px_ms);
    return rc;
}

PyObject *vkpy_set_result(const vk_reply *reply)
{
    if (vk_reply_get_type(reply) == VK_REPLY_NIL)
        Py_RETURN_NONE;
    PyObject *result = vkpy_reply_to_python(reply, 1);
    if (!result)
        return NULL;
    Py_DECREF(result);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(client_set_doc,
             "set(key, value, px=None, nx=False)\n--\n\n"
             "SET key value [PX px] [NX]. px is the expiry in milliseconds (int) or a\n"
             "datetime.timedelta; nx=True sets only when the key does not exist.\n"
             "Returns True when the value was set, None when NX prevented it.");
static PyObject *client_set(vkpy_client *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    vkpy_argv a;
    if (vkpy_set_argv(&a, args, nargs, kwnames) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    vk_reply *reply = NULL;
    if (run_command(self->client, &a, &reply) < 0)
        return NULL;
    PyObject *result = vkpy_set_result(reply);
    vk_reply_free(reply);
    return result;
}

PyDoc_STRVAR(client_delete_doc, "delete(*keys)\n--\n\n"
                                "DEL keys...: the number of keys that were removed.");
static PyObject *client_delete(vkpy_client *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs == 0) {
        PyErr_SetString(PyExc_TypeError, "delete() needs at least one key");
        return NULL;
    }
    vkpy_argv a;
    if (vkpy_argv_fill(&a, "DEL", args, nargs) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    return command_to_python(self->client, &a);
}

PyDoc_STRVAR(client_ping_doc, "ping()\n--\n\nPING: True when the server answered PONG.");
static PyObject *client_ping(vkpy_client *self, PyObject *unused)
{
    vkpy_argv a;
    if (vkpy_argv_fill(&a, "PING", NULL, 0) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    PyObject *reply = command_to_python(self->client, &a);
    if (!reply)
        return NULL;
    int pong = PyUnicode_Check(reply) && PyUnicode_Compare(reply, text_pong) == 0;
    Py_DECREF(reply);
    return PyBool_FromLong(pong);
}

PyDoc_STRVAR(client_connect_doc,
             "connect()\n--\n\n"
             "(Re)connects with create-ping-swap: the new connections are built and\n"
             "pinged before the old ones close; on failure the old ones stay.");
static PyObject *client_connect(vkpy_client *self, PyObject *unused)
{
    vkpy_interruptible in;
    if (vkpy_interruptible_start(&in, -1) < 0)
        return NULL;
    vk_status st;
    vk_client *client = self->client;
    Py_BEGIN_ALLOW_THREADS
    st = vk_client_connect(client, in.ctx);
    Py_END_ALLOW_THREADS
    if (vkpy_interruptible_finish(&in))
        return NULL;
    if (st != VK_OK)
        return vkpy_raise(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(client_close_doc,
             "close()\n--\n\n"
             "Stops the refresh loop and closes every connection. Closing twice is\n"
             "harmless; a later command reconnects on demand.");
static PyObject *client_close(vkpy_client *self, PyObject *unused)
{
    vk_status st;
    vk_client *client = self->client;
    Py_BEGIN_ALLOW_THREADS
    st = vk_client_close(client);
    Py_END_ALLOW_THREADS
    if (st != VK_OK)
        return vkpy_raise(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(client_is_connected_doc,
             "is_connected()\n--\n\nWhether the client has a live connection set (no probe).");
static PyObject *client_is_connected(vkpy_client *self, PyObject *unused)
{
    int connected;
    vk_client *client = self->client;
    Py_BEGIN_ALLOW_THREADS
    connected = vk_client_is_connected(client);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(connected);
}

PyDoc_STRVAR(client_last_refresh_error_doc,
             "last_refresh_error()\n--\n\n"
             "The last IAM refresh / reconnect error message, or None.");
static PyObject *client_last_refresh_error(vkpy_client *self, PyObject *unused)
{
    char *text = NULL;
    vk_status st;
    vk_client *client = self->client;
    Py_BEGIN_ALLOW_THREADS
    st = vk_client_last_refresh_error(&text, client);
    Py_END_ALLOW_THREADS
    if (st != VK_OK)
        return vkpy_raise(st);
    if (!text)
        Py_RETURN_NONE;
    PyObject *result = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    vk_free(text);
    return result;
}

/* Cluster: ((address, slots), ...) for the masters of the map in service. */
static PyObject *snapshot_nodes(const vk_snapshot *snap)
{
    size_t n = vk_snapshot_node_count(snap);
    PyObject *nodes = PyTuple_New((Py_ssize_t)n);
    if (nodes == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *node = Py_BuildValue("(si)", vk_snapshot_node_address(snap, i),
                                       vk_snapshot_node_slots(snap, i));
        if (node == NULL) {
            Py_DECREF(nodes);
            return NULL;
        }
        PyTuple_SET_ITEM(nodes, (Py_ssize_t)i, node);
    }
    return nodes;
}

PyObject *vkpy_snapshot_tuple(const vk_snapshot *snap)
{
    PyObject *nodes = snapshot_nodes(snap);
    if (nodes == NULL)
        return NULL;
    return Py_BuildValue(
        "(NzLNszKKKKN)", PyBool_FromLong(vk_snapshot_connected(snap)),
        vk_snapshot_last_refresh_error(snap), (long long)vk_snapshot_last_refresh_at_ms(snap),
        PyBool_FromLong(vk_snapshot_refresh_loop_running(snap)), vk_snapshot_mode(snap),
        vk_snapshot_master_address(snap), (unsigned long long)vk_snapshot_master_switches(snap),
        (unsigned long long)vk_snapshot_slot_map_refreshes(snap),
        (unsigned long long)vk_snapshot_moved_redirects(snap),
        (unsigned long long)vk_snapshot_ask_redirects(snap), nodes);
}

PyDoc_STRVAR(client_snapshot_doc,
             "_snapshot()\n--\n\n"
             "(connected, last_refresh_error, last_refresh_at_ms, refresh_loop_running, mode,\n"
             " master_address, master_switches, slot_map_refreshes, moved_redirects,\n"
             " ask_redirects, ((node_address, slots), ...)).");
static PyObject *client_snapshot(vkpy_client *self, PyObject *unused)
{
    vk_snapshot *snap = NULL;
    vk_status st;
    vk_client *client = self->client;
    Py_BEGIN_ALLOW_THREADS
    st = vk_client_snapshot(&snap, client);
    Py_END_ALLOW_THREADS
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *result = vkpy_snapshot_tuple(snap);
    vk_snapshot_free(snap);
    return result;
}

PyDoc_STRVAR(client_pointer_doc, "_pointer()\n--\n\n"
                                 "The native vk_client handle, for the SWIG-level functions.");
static PyObject *client_pointer(vkpy_client *self, PyObject *unused)
{
    return vkpy_wrap_pointer(self->client, VKPY_CLIENT);
}

static PyMethodDef client_methods[] = {
    {"_open", (PyCFunction)client_open, METH_O, client_open_doc},
    {"execute", (PyCFunction)(void (*)(void))client_execute, METH_FASTCALL, client_execute_doc},
    {"get", (PyCFunction)client_get, METH_O, client_get_doc},
    {"_run_script", (PyCFunction)(void (*)(void))client_run_script, METH_FASTCALL,
     client_run_script_doc},
    {"set", (PyCFunction)(void (*)(void))client_set, METH_FASTCALL | METH_KEYWORDS,
     client_set_doc},
    {"delete", (PyCFunction)(void (*)(void))client_delete, METH_FASTCALL, client_delete_doc},
    {"ping", (PyCFunction)client_ping, METH_NOARGS, client_ping_doc},
    {"connect", (PyCFunction)client_connect, METH_NOARGS, client_connect_doc},
    {"close", (PyCFunction)client_close, METH_NOARGS, client_close_doc},
    {"is_connected", (PyCFunction)client_is_connected, METH_NOARGS, client_is_connected_doc},
    {"last_refresh_error", (PyCFunction)client_last_refresh_error, METH_NOARGS,
     client_last_refresh_error_doc},
    {"_snapshot", (PyCFunction)client_snapshot, METH_NOARGS, client_snapshot_doc},
    {"_pointer", (PyCFunction)client_pointer, METH_NOARGS, client_pointer_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject vkpy_client_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.ClientCore",
    .tp_basicsize = sizeof(vkpy_client),
    .tp_dealloc = (destructor)client_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Native base of vkclient.Client: one vk_client handle.",
    .tp_methods = client_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- PipelineCore -------------------------------------------------------- */

static PyObject *pipeline_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner = NULL;
    if (!PyArg_ParseTuple(args, "O!:Pipeline", &vkpy_client_type, &owner))
        return NULL;
    vk_pipeline *pipeline = NULL;
    vk_status st = vk_pipeline_new(&pipeline, ((vkpy_client *)owner)->client);
    if (st != VK_OK)
        return vkpy_raise(st);
    vkpy_pipeline *self = (vkpy_pipeline *)type->tp_alloc(type, 0);
    if (!self) {
        vk_pipeline_free(pipeline);
        return NULL;
    }
    self->pipeline = pipeline;
    Py_INCREF(owner);
    self->owner = owner;
    return (PyObject *)self;
}

static void pipeline_dealloc(vkpy_pipeline *self)
{
    vk_pipeline_free(self->pipeline);
    self->pipeline = NULL;
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(pipeline_execute_doc,
             "execute(*args)\n--\n\n"
             "Queues one command (same arguments as Client.execute); nothing is sent\n"
             "until run(). Returns the pipeline, so calls can be chained.");
static PyObject *pipeline_execute(vkpy_pipeline *self, PyObject *const *args, Py_ssize_t nargs)
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

PyDoc_STRVAR(pipeline_run_doc,
             "run()\n--\n\n"
             "Sends every queued command in one round trip and returns their replies\n"
             "as a list, in order. An error reply is a vkclient.ResponseError\n"
             "instance in the list (not raised), and the other replies are kept.\n"
             "The pipeline is empty afterwards and can be reused.");
static PyObject *pipeline_run(vkpy_pipeline *self, PyObject *unused)
{
    vk_reply *reply = NULL;
    vk_status st;
    vk_pipeline *pipeline = self->pipeline;
    Py_BEGIN_ALLOW_THREADS
    st = vk_pipeline_exec(&reply, pipeline, NULL);
    Py_END_ALLOW_THREADS
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *result = vkpy_reply_to_python(reply, 0);
    vk_reply_free(reply);
    return result;
}

PyDoc_STRVAR(pipeline_set_transaction_doc,
             "_set_transaction(on)\n--\n\n"
             "Transaction mode: run() sends MULTI, the commands and EXEC (internal).");
static PyObject *pipeline_set_transaction(vkpy_pipeline *self, PyObject *on)
{
    int flag = PyObject_IsTrue(on);
    if (flag < 0)
        return NULL;
    vk_status st = vk_pipeline_set_transaction(self->pipeline, flag);
    if (st != VK_OK)
        return vkpy_raise(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(pipeline_is_transaction_doc,
             "_is_transaction()\n--\n\nWhether the pipeline is in transaction mode.");
static PyObject *pipeline_is_transaction(vkpy_pipeline *self, PyObject *unused)
{
    return PyBool_FromLong(vk_pipeline_is_transaction(self->pipeline));
}

static Py_ssize_t pipeline_length(vkpy_pipeline *self)
{
    return (Py_ssize_t)vk_pipeline_length(self->pipeline);
}

static PyMethodDef pipeline_methods[] = {
    {"execute", (PyCFunction)(void (*)(void))pipeline_execute, METH_FASTCALL,
     pipeline_execute_doc},
    {"run", (PyCFunction)pipeline_run, METH_NOARGS, pipeline_run_doc},
    {"_set_transaction", (PyCFunction)pipeline_set_transaction, METH_O,
     pipeline_set_transaction_doc},
    {"_is_transaction", (PyCFunction)pipeline_is_transaction, METH_NOARGS,
     pipeline_is_transaction_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods pipeline_sequence = {
    .sq_length = (lenfunc)pipeline_length,
};

static PyTypeObject vkpy_pipeline_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.PipelineCore",
    .tp_basicsize = sizeof(vkpy_pipeline),
    .tp_dealloc = (destructor)pipeline_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Native base of vkclient.Pipeline: one vk_pipeline handle.",
    .tp_methods = pipeline_methods,
    .tp_as_sequence = &pipeline_sequence,
    .tp_new = pipeline_new,
};

/* ---- what the scans and sessions need ---------------------------------------- */

int vkpy_client_handle(PyObject *obj, vk_client **out)
{
    if (!PyObject_TypeCheck(obj, &vkpy_client_type)) {
        PyErr_Format(PyExc_TypeError, "a vkclient.Client is needed, not %.80s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = ((vkpy_client *)obj)->client;
    return 0;
}

vk_pipeline *vkpy_pipeline_handle(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &vkpy_pipeline_type)) {
        PyErr_Format(PyExc_TypeError, "a vkclient.Pipeline is needed, not %.80s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((vkpy_pipeline *)obj)->pipeline;
}

/* ---- module -------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"_register_errors", vkpy_register_errors, METH_VARARGS,
     "_register_errors(base, {code: class}): the exception classes per vk_status."},
    {NULL, NULL, 0, NULL},
};

int vkpy_init_module(PyObject *module)
{
    text_px = PyUnicode_InternFromString("PX");
    text_nx = PyUnicode_InternFromString("NX");
    text_pong = PyUnicode_InternFromString("PONG");
    if (!text_px || !text_nx || !text_pong || vkpy_reply_init() < 0)
        return -1;
    if (PyType_Ready(&vkpy_client_type) < 0 || PyType_Ready(&vkpy_pipeline_type) < 0)
        return -1;
    Py_INCREF(&vkpy_client_type);
    if (PyModule_AddObject(module, "ClientCore", (PyObject *)&vkpy_client_type) < 0)
        return -1;
    Py_INCREF(&vkpy_pipeline_type);
    if (PyModule_AddObject(module, "PipelineCore", (PyObject *)&vkpy_pipeline_type) < 0)
        return -1;
    if (vkpy_script_init(module) < 0 || vkpy_session_init(module) < 0)
        return -1;
    if (PyModule_AddFunctions(module, module_methods) < 0 ||
        PyModule_AddFunctions(module, vkpy_lock_methods) < 0)
        return -1;
    return vkpy_scan_init(module);
}
