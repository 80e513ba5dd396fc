/*
 * vk_status -> Python exception. The classes are defined in Python
 * (vkclient/errors.py, where they get their docstrings and builtin bases)
 * and handed to C once at import, so raising costs one table lookup.
 */
#include "vkpy.h"

#include <string.h>

/* Codes are append-only and small; anything beyond gets the base class. */
#define VKPY_MAX_CODE 64

static PyObject *error_classes[VKPY_MAX_CODE];
static PyObject *base_error_class;

static PyObject *class_for(vk_status status)
{
    int code = (int)status;
    if (code > 0 && code < VKPY_MAX_CODE && error_classes[code])
        return error_classes[code];
    return base_error_class ? base_error_class : PyExc_RuntimeError;
}

PyObject *vkpy_raise(vk_status status)
{
    /* Read the thread-local detail first: nothing below calls vkclient. */
    const char *message = vk_last_error();
    if (!message || !*message)
        message = vk_strerror(status);
    PyObject *text = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace");
    if (!text)
        return NULL;
    PyErr_SetObject(class_for(status), text);
    Py_DECREF(text);
    return NULL;
}

PyObject *vkpy_response_error(const char *text, size_t len)
{
    PyObject *message = PyUnicode_DecodeUTF8(text ? text : "", (Py_ssize_t)len, "replace");
    if (!message)
        return NULL;
    PyObject *error = PyObject_CallOneArg(class_for(VK_ERR_SERVER), message);
    Py_DECREF(message);
    return error;
}

void vkpy_wrap_function_error(void)
{
    PyObject *type, *cause, *traceback;
    PyErr_Fetch(&type, &cause, &traceback);
    PyErr_NormalizeException(&type, &cause, &traceback);
    if (traceback)
        PyException_SetTraceback(cause, traceback);
    Py_XDECREF(traceback);
    /* An exception whose str() is empty is named by its type. */
    PyObject *text = PyObject_Str(cause);
    if (text && PyUnicode_GetLength(text) == 0)
        Py_SETREF(text, PyUnicode_FromString(Py_TYPE(cause)->tp_name));
    PyObject *message = text ? PyUnicode_FromFormat("%s: %U", vk_strerror(VK_ERR_LOCK_FN), text)
                             : NULL;
    Py_XDECREF(text);
    PyObject *error = message ? PyObject_CallOneArg(class_for(VK_ERR_LOCK_FN), message) : NULL;
    Py_XDECREF(message);
    if (!error) {
        /* Could not build it: the original is better than nothing. */
        PyErr_Clear();
        PyErr_Restore(type, cause, NULL);
        return;
    }
    Py_DECREF(type);
    /* raise error from cause: SetCause steals one reference, SetContext
     * another, so the context gets its own. */
    Py_INCREF(cause);
    PyException_SetContext(error, cause);
    PyException_SetCause(error, cause);
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    Py_DECREF(error);
}

/* _register_errors(base, {code: class, ...}) */
PyObject *vkpy_register_errors(PyObject *self, PyObject *args)
{
    PyObject *base = NULL, *mapping = NULL;
    if (!PyArg_ParseTuple(args, "OO!:_register_errors", &base, &PyDict_Type, &mapping))
        return NULL;
    if (!PyType_Check(base) || !PyType_IsSubtype((PyTypeObject *)base,
                                                 (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "base must be an exception class");
        return NULL;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(mapping, &pos, &key, &value)) {
        long code = PyLong_AsLong(key);
        if (code == -1 && PyErr_Occurred())
            return NULL;
        if (code <= 0 || code >= VKPY_MAX_CODE || !PyType_Check(value)) {
            PyErr_Format(PyExc_ValueError, "bad error registration for code %ld", code);
            return NULL;
        }
        Py_INCREF(value);
        Py_XSETREF(error_classes[code], value);
    }
    Py_INCREF(base);
    Py_XSETREF(base_error_class, base);
    Py_RETURN_NONE;
}
