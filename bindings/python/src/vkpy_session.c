/*
 * SessionCore: the native base of vkclient.Session, one vk_session (a
 * pooled connection pinned to its caller). Blocking calls release the GIL;
 * a command that waits on the server runs with a context that Ctrl-C
 * cancels, which fails the session (its connection is closed, never
 * pooled), as the core does for any command cut off mid-way.
 */
#include "vkpy.h"

#include <stdbool.h>

typedef struct vkpy_session {
    PyObject_HEAD
    vk_session *session;   /* NULL once closed */
    PyObject *owner;       /* the ClientCore, kept alive while the session is */
} vkpy_session;

static PyObject *session_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"client", "key", NULL};
    PyObject *owner = NULL, *key = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:Session", names, &owner, &key))
        return NULL;
    vk_client *client;
    if (vkpy_client_handle(owner, &client) < 0)
        return NULL;
    const char *data = NULL;
    size_t len = 0;
    if (key != Py_None && vkpy_as_bytes(key, &data, &len) < 0)
        return NULL;
    vkpy_session *self = (vkpy_session *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    /* key's bytes belong to key, which the caller holds during the call. */
    vk_session *session = NULL;
    vk_status st;
    Py_BEGIN_ALLOW_THREADS
    st = vk_session_open(&session, client, NULL, data, len);
    Py_END_ALLOW_THREADS
    if (st != VK_OK) {
        Py_DECREF(self);
        return vkpy_raise(st);
    }
    self->session = session;
    Py_INCREF(owner);
    self->owner = owner;
    return (PyObject *)self;
}

static void close_session(vkpy_session *self)
{
    vk_session *session = self->session;
    self->session = NULL;
    if (session != NULL) {
        Py_BEGIN_ALLOW_THREADS
        vk_session_close(session);
        Py_END_ALLOW_THREADS
    }
}

static void session_dealloc(vkpy_session *self)
{
    close_session(self);
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(vkpy_session *self)
{
    if (self->session != NULL)
        return 0;
    PyErr_SetString(PyExc_ValueError, "the session is closed");
    return -1;
}

PyDoc_STRVAR(session_execute_doc,
             "_execute(*args)\n--\n\n"
             "Runs one command on the session's connection (internal: see\n"
             "vkclient.Session.execute). An error reply raises ResponseError; an\n"
             "EXEC aborted by a WATCH raises WatchError.");
static PyObject *session_execute(vkpy_session *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_open(self) < 0)
        return NULL;
    vkpy_argv a;
    if (vkpy_argv_fill(&a, NULL, args, nargs) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    bool blocking = vk_command_is_blocking(a.argc, a.argv, a.lens);
    vkpy_interruptible in = {NULL, NULL, NULL, NULL};
    if (blocking && vkpy_interruptible_start(&in, -1) < 0) {
        vkpy_argv_release(&a);
        return NULL;
    }
    vk_reply *reply = NULL;
    vk_status st;
    vk_session *session = self->session;
    Py_BEGIN_ALLOW_THREADS
    st = vk_session_command(&reply, session, in.ctx, a.argc, a.argv, a.lens);
    Py_END_ALLOW_THREADS
    vkpy_argv_release(&a);
    if (blocking && vkpy_interruptible_finish(&in)) {
        vk_reply_free(reply);
        return NULL;
    }
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *result = vkpy_reply_to_python(reply, 1);
    vk_reply_free(reply);
    return result;
}

PyDoc_STRVAR(session_run_pipeline_doc,
             "_run_pipeline(pipeline)\n--\n\n"
             "Runs a Pipeline of the same client on the session's connection and\n"
             "returns its replies (a transaction pipeline: EXEC's results).");
static PyObject *session_run_pipeline(vkpy_session *self, PyObject *arg)
{
    if (check_open(self) < 0)
        return NULL;
    vk_pipeline *pipeline = vkpy_pipeline_handle(arg);
    if (pipeline == NULL)
        return NULL;
    vk_reply *reply = NULL;
    vk_status st;
    vk_session *session = self->session;
    Py_BEGIN_ALLOW_THREADS
    st = vk_session_pipeline_exec(&reply, session, pipeline, NULL);
    Py_END_ALLOW_THREADS
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *result = vkpy_reply_to_python(reply, 0);
    vk_reply_free(reply);
    return result;
}

PyDoc_STRVAR(session_close_doc,
             "close()\n--\n\n"
             "Gives the connection back to the pool, undoing what the session\n"
             "changed (MULTI, WATCH, SELECT), or closes it when that cannot be\n"
             "done for sure. Closing twice is harmless.");
static PyObject *session_close(vkpy_session *self, PyObject *unused)
{
    close_session(self);
    Py_RETURN_NONE;
}

static PyObject *session_closed(vkpy_session *self, void *unused)
{
    return PyBool_FromLong(self->session == NULL);
}

static PyMethodDef session_methods[] = {
    {"_execute", (PyCFunction)(void (*)(void))session_execute, METH_FASTCALL,
     session_execute_doc},
    {"_run_pipeline", (PyCFunction)session_run_pipeline, METH_O, session_run_pipeline_doc},
    {"close", (PyCFunction)session_close, METH_NOARGS, session_close_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef session_getset[] = {
    {"closed", (getter)session_closed, NULL, "Whether close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject vkpy_session_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.SessionCore",
    .tp_basicsize = sizeof(vkpy_session),
    .tp_dealloc = (destructor)session_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Native base of vkclient.Session: one vk_session handle.",
    .tp_methods = session_methods,
    .tp_getset = session_getset,
    .tp_new = session_new,
};

int vkpy_session_init(PyObject *module)
{
    if (PyType_Ready(&vkpy_session_type) < 0)
        return -1;
    Py_INCREF(&vkpy_session_type);
    return PyModule_AddObject(module, "SessionCore", (PyObject *)&vkpy_session_type);
}
