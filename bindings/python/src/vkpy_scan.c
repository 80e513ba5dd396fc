/*
 * ScanCore: one vk_scan, the native half of Client.scan_iter and its
 * hscan/sscan/zscan siblings (vkclient/client.py turns the pages into
 * generators). Each page runs without the GIL, with a context that Ctrl-C
 * cancels; the cursor stays where it was when a page fails.
 */
#include "vkpy.h"

typedef struct vkpy_scan {
    PyObject_HEAD
    vk_scan *scan;
    PyObject *owner; /* the ClientCore, kept alive while the scan is */
} vkpy_scan;

/* Optional bytes/str argument: *data NULL for None. */
static int optional_bytes(PyObject *obj, const char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (obj == Py_None)
        return 0;
    return vkpy_as_bytes(obj, data, len);
}

/* ScanCore(client, command, key, match, count, type): command "SCAN" (key
 * None) or "HSCAN"/"SSCAN"/"ZSCAN"; None for each option not given. */
static PyObject *scan_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner, *key, *match, *count, *kind;
    const char *command;
    if (kwargs != NULL && PyDict_Size(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "ScanCore takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OsOOOO:ScanCore", &owner, &command, &key, &match, &count,
                          &kind))
        return NULL;
    vk_client *client;
    if (vkpy_client_handle(owner, &client) < 0)
        return NULL;
    const char *keyp, *matchp, *typep = NULL;
    size_t keylen, matchlen, typelen;
    if (optional_bytes(key, &keyp, &keylen) < 0 || optional_bytes(match, &matchp, &matchlen) < 0 ||
        optional_bytes(kind, &typep, &typelen) < 0)
        return NULL;
    if (typep != NULL && memchr(typep, '\0', typelen) != NULL) {
        PyErr_SetString(PyExc_ValueError, "scan type contains a NUL byte");
        return NULL;
    }
    long long n = 0;
    if (count != Py_None) {
        if (!PyLong_Check(count) || PyBool_Check(count)) {
            PyErr_SetString(PyExc_TypeError, "count must be an int or None");
            return NULL;
        }
        n = PyLong_AsLongLong(count);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n == 0) {
            PyErr_SetString(PyExc_ValueError, "count must be a positive int or None");
            return NULL;
        }
    }
    /* type is NUL-terminated in the C ABI: a copy in a bytes object. */
    PyObject *type_bytes = NULL;
    if (typep != NULL && (type_bytes = PyBytes_FromStringAndSize(typep, (Py_ssize_t)typelen)) == NULL)
        return NULL;
    vk_scan *scan = NULL;
    vk_status st;
    if (keyp == NULL && strcmp(command, "SCAN") == 0)
        st = vk_scan_new(&scan, client, matchp, matchlen, (int64_t)n,
                         type_bytes != NULL ? PyBytes_AS_STRING(type_bytes) : NULL);
    else
        st = vk_scan_new_key(&scan, client, command, keyp, keylen, matchp, matchlen,
                             (int64_t)n);
    Py_XDECREF(type_bytes);
    if (st != VK_OK)
        return vkpy_raise(st);
    vkpy_scan *self = (vkpy_scan *)type->tp_alloc(type, 0);
    if (!self) {
        vk_scan_free(scan);
        return NULL;
    }
    self->scan = scan;
    Py_INCREF(owner);
    self->owner = owner;
    return (PyObject *)self;
}

static void scan_dealloc(vkpy_scan *self)
{
    vk_scan_free(self->scan);
    self->scan = NULL;
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(scan_next_doc, "next_page()\n--\n\n"
                            "The next page as a list (possibly empty); [] once done().");
static PyObject *scan_next(vkpy_scan *self, PyObject *unused)
{
    vkpy_interruptible in = {NULL, NULL, NULL, NULL};
    if (vkpy_interruptible_start(&in, -1) < 0)
        return NULL;
    vk_reply *page = NULL;
    vk_status st;
    vk_scan *scan = self->scan;
    Py_BEGIN_ALLOW_THREADS
    st = vk_scan_next(&page, scan, in.ctx);
    Py_END_ALLOW_THREADS
    /* A Ctrl-C during the page: its KeyboardInterrupt wins. */
    if (vkpy_interruptible_finish(&in)) {
        vk_reply_free(page);
        return NULL;
    }
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *result = vkpy_reply_to_python(page, 1);
    vk_reply_free(page);
    return result;
}

PyDoc_STRVAR(scan_done_doc, "done()\n--\n\nTrue once the last page was returned.");
static PyObject *scan_done(vkpy_scan *self, PyObject *unused)
{
    return PyBool_FromLong(vk_scan_done(self->scan));
}

static PyMethodDef scan_methods[] = {
    {"next_page", (PyCFunction)scan_next, METH_NOARGS, scan_next_doc},
    {"done", (PyCFunction)scan_done, METH_NOARGS, scan_done_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject vkpy_scan_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkclient._native.ScanCore",
    .tp_basicsize = sizeof(vkpy_scan),
    .tp_dealloc = (destructor)scan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One vk_scan handle: SCAN, HSCAN, SSCAN or ZSCAN page by page.",
    .tp_methods = scan_methods,
    .tp_new = scan_new,
};

int vkpy_scan_init(PyObject *module)
{
    if (PyType_Ready(&vkpy_scan_type) < 0)
        return -1;
    Py_INCREF(&vkpy_scan_type);
    return PyModule_AddObject(module, "ScanCore", (PyObject *)&vkpy_scan_type);
}
