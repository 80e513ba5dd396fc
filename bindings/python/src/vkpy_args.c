/*
 * Python arguments -> argv + lengths for the C ABI, without copying the
 * common cases: bytes lend their buffer, str lends its cached UTF-8 form,
 * ints and floats are formatted into space inside the vkpy_argv itself.
 * Only unusual arguments (huge ints, bytearray, memoryview) are copied into
 * temporary bytes objects kept alive until vkpy_argv_release().
 */
#include "vkpy.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vkpy_as_bytes(PyObject *obj, const char **data, size_t *len)
{
    if (PyBytes_CheckExact(obj)) {
        *data = PyBytes_AS_STRING(obj);
        *len = (size_t)PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        Py_ssize_t size = 0;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &size);
        if (!utf8)
            return -1;
        *data = utf8;
        *len = (size_t)size;
        return 0;
    }
    if (PyBytes_Check(obj)) {
        *data = PyBytes_AS_STRING(obj);
        *len = (size_t)PyBytes_GET_SIZE(obj);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "expected str or bytes, got %.80s", Py_TYPE(obj)->tp_name);
    return -1;
}

/* Keeps `copy` alive in a->keep and lends its bytes to argv[i]. Steals. */
static int keep_bytes(vkpy_argv *a, int i, PyObject *copy)
{
    if (!copy)
        return -1;
    if (!a->keep && !(a->keep = PyList_New(0))) {
        Py_DECREF(copy);
        return -1;
    }
    int rc = PyList_Append(a->keep, copy);
    Py_DECREF(copy);
    if (rc < 0)
        return -1;
    a->argv[i] = PyBytes_AS_STRING(copy);
    a->lens[i] = (size_t)PyBytes_GET_SIZE(copy);
    return 0;
}

static int convert_int(vkpy_argv *a, int i, PyObject *obj)
{
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (overflow) {
        /* Beyond 64 bits: Python's own decimal text. */
        PyObject *text = PyObject_Str(obj);
        if (!text)
            return -1;
        PyObject *copy = PyUnicode_AsUTF8String(text);
        Py_DECREF(text);
        return keep_bytes(a, i, copy);
    }
    int n = snprintf(a->numbers[i], VKPY_NUMBER_BYTES, "%lld", value);
    a->argv[i] = a->numbers[i];
    a->lens[i] = (size_t)n;
    return 0;
}

static int convert_float(vkpy_argv *a, int i, PyObject *obj)
{
    /* repr() of the float: the shortest text that reads back exactly, as
     * redis-py sends it ("1.5", "1e+100", "inf"). */
    char *text = PyOS_double_to_string(PyFloat_AS_DOUBLE(obj), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!text)
        return -1;
    size_t len = strlen(text);
    if (len >= VKPY_NUMBER_BYTES) {
        PyObject *copy = PyBytes_FromStringAndSize(text, (Py_ssize_t)len);
        PyMem_Free(text);
        return keep_bytes(a, i, copy);
    }
    memcpy(a->numbers[i], text, len + 1);
    PyMem_Free(text);
    a->argv[i] = a->numbers[i];
    a->lens[i] = len;
    return 0;
}

static int convert_one(vkpy_argv *a, int i, PyObject *obj)
{
    if (PyBytes_CheckExact(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj))
        return vkpy_as_bytes(obj, &a->argv[i], &a->lens[i]);
    if (PyLong_Check(obj))
        return convert_int(a, i, obj);
    if (PyFloat_Check(obj))
        return convert_float(a, i, obj);
    if (PyObject_CheckBuffer(obj))
        /* A snapshot: another thread may change a bytearray while the
         * command runs without the GIL. */
        return keep_bytes(a, i, PyBytes_FromObject(obj));
    PyErr_Format(PyExc_TypeError,
                 "invalid command argument of type %.80s: expected bytes, str, int or float",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

int vkpy_argv_fill(vkpy_argv *a, const char *prefix, PyObject *const *items, Py_ssize_t n)
{
    int offset = prefix ? 1 : 0;
    a->argc = 0;
    a->argv = a->small_argv;
    a->lens = a->small_lens;
    a->numbers = a->small_numbers;
    a->keep = NULL;
    if (n + offset == 0) {
        PyErr_SetString(PyExc_TypeError, "a command needs at least its name");
        return -1;
    }
    if (n > INT_MAX - 1) {
        PyErr_SetString(PyExc_OverflowError, "too many command arguments");
        return -1;
    }
    int argc = (int)n + offset;
    if (argc > VKPY_SMALL_ARGC) {
        a->argv = PyMem_Malloc((size_t)argc * sizeof *a->argv);
        a->lens = PyMem_Malloc((size_t)argc * sizeof *a->lens);
        a->numbers = PyMem_Malloc((size_t)argc * sizeof *a->numbers);
        if (!a->argv || !a->lens || !a->numbers) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (prefix) {
        a->argv[0] = prefix;
        a->lens[0] = strlen(prefix);
    }
    for (Py_ssize_t k = 0; k < n; k++)
        if (convert_one(a, (int)k + offset, items[k]) < 0)
            return -1;
    a->argc = argc;
    return 0;
}

void vkpy_argv_release(vkpy_argv *a)
{
    if (a->argv != a->small_argv)
        PyMem_Free((void *)a->argv);
    if (a->lens != a->small_lens)
        PyMem_Free(a->lens);
    if (a->numbers != a->small_numbers)
        PyMem_Free(a->numbers);
    Py_CLEAR(a->keep);
    a->argv = a->small_argv;
    a->lens = a->small_lens;
    a->numbers = a->small_numbers;
    a->argc = 0;
}
