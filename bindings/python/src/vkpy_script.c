/*
 * ScriptCore: the native half of vkclient.Script and
 * vkclient.asyncio.AsyncScript, one vk_script handle (the source and its
 * SHA-1, computed once). The clients run it with _run_script / run_script
 * (vkpy_client.c, vkpy_async.c), which take their keys and args through
 * vkpy_script_lists below.
 */
#include "vkpy.h"

typedef struct vkpy_script {
    PyObject_HEAD
    vk_script *script;
    PyObject *sha;      /* str */
} vkpy_script;

static PyTypeObject vkpy_script_type;

static PyObject *script_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *source;
    static char *names[] = {"source", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:ScriptCore", names, &source))
        return NULL;
    const char *bytes;
    size_t len;
    if (vkpy_as_bytes(source, &bytes, &len) < 0)
        return NULL;
    vk_script *script = NULL;
    vk_status st = vk_script_new(&script, bytes, len);
    if (st != VK_OK)
        return vkpy_raise(st);
    vkpy_script *self = (vkpy_script *)type->tp_alloc(type, 0);
    if (self == NULL) {
        vk_script_free(script);
        return NULL;
    }
    self->script = script;
    self->sha = PyUnicode_FromString(vk_script_sha1(script));
    if (self->sha == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void script_dealloc(vkpy_script *self)
{
    vk_script_free(self->script);
    Py_XDECREF(self->sha);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *script_sha(vkpy_script *self, void *closure)
{
    (void)closure;
    Py_INCREF(self->sha);
    return self->sha;
}

static PyGetSetDef script_getset[] = {
    {"sha", (getter)script_sha, NULL, "The script's SHA-1: 40 lower-case hex digits.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject vkpy_script_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.ScriptCore",
    .tp_basicsize = sizeof(vkpy_script),
    .tp_dealloc = (destructor)script_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "ScriptCore(source): a Lua script and its SHA-1 (one vk_script handle).",
    .tp_getset = script_getset,
    .tp_new = script_new,
};

vk_script *vkpy_script_handle(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &vkpy_script_type)) {
        PyErr_Format(PyExc_TypeError, "a registered script is required, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((vkpy_script *)obj)->script;
}

/* An empty argv that vkpy_argv_release accepts. */
static void empty_argv(vkpy_argv *a)
{
    a->argc = 0;
    a->argv = a->small_argv;
    a->lens = a->small_lens;
    a->numbers = a->small_numbers;
    a->keep = NULL;
}

/* One list: None is empty; a str or bytes alone is refused (it would be
 * taken letter by letter). */
static int fill_list(vkpy_argv *a, PyObject *obj, const char *what, PyObject **fast)
{
    empty_argv(a);
    *fast = NULL;
    if (obj == Py_None)
        return 0;
    if (PyUnicode_Check(obj) || PyBytes_Check(obj) || PyByteArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list or tuple, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *fast = PySequence_Fast(obj, "keys and args must be lists or tuples");
    if (*fast == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(*fast) == 0)
        return 0;
    return vkpy_argv_fill(a, NULL, PySequence_Fast_ITEMS(*fast), PySequence_Fast_GET_SIZE(*fast));
}

int vkpy_script_lists(vkpy_script_lists_t *l, PyObject *keys, PyObject *args)
{
    empty_argv(&l->args);
    l->fast_args = NULL;
    if (fill_list(&l->keys, keys, "keys", &l->fast_keys) < 0)
        return -1;
    return fill_list(&l->args, args, "args", &l->fast_args);
}

void vkpy_script_lists_release(vkpy_script_lists_t *l)
{
    vkpy_argv_release(&l->keys);
    vkpy_argv_release(&l->args);
    Py_XDECREF(l->fast_keys);
    Py_XDECREF(l->fast_args);
    l->fast_keys = l->fast_args = NULL;
}

int vkpy_script_init(PyObject *module)
{
    if (PyType_Ready(&vkpy_script_type) < 0)
        return -1;
    Py_INCREF(&vkpy_script_type);
    if (PyModule_AddObject(module, "ScriptCore", (PyObject *)&vkpy_script_type) < 0)
        return -1;
    return 0;
}
