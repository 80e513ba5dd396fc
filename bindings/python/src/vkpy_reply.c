/*
 * vk_reply tree -> native Python objects, in one pass, so the caller can
 * free the C tree at once:
 *   bulk string -> bytes, simple string -> str, integer -> int, nil -> None,
 *   array/set/push -> list, map -> dict, double -> float, bool -> bool,
 *   big number -> int, verbatim string -> str, error -> ResponseError.
 */
#include "vkpy.h"

/* "OK" answers most writes: hand out one shared str instead of a new one. */
static PyObject *ok_text;

int vkpy_reply_init(void)
{
    ok_text = PyUnicode_InternFromString("OK");
    return ok_text ? 0 : -1;
}

static PyObject *status_text(const char *text, size_t len)
{
    if (len == 2 && text[0] == 'O' && text[1] == 'K') {
        Py_INCREF(ok_text);
        return ok_text;
    }
    return PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "replace");
}

static PyObject *convert(const vk_reply *reply, int raise_error);

static PyObject *to_list(const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *item = convert(vk_reply_get_element(reply, i), 0);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

static PyObject *to_dict(const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    PyObject *dict = PyDict_New();
    if (!dict)
        return NULL;
    for (size_t i = 0; i + 1 < n; i += 2) {
        PyObject *key = convert(vk_reply_get_element(reply, i), 0);
        PyObject *value = key ? convert(vk_reply_get_element(reply, i + 1), 0) : NULL;
        int rc = value ? PyDict_SetItem(dict, key, value) : -1;
        if (rc < 0 && key && value && PyErr_ExceptionMatches(PyExc_TypeError)) {
            /* An unhashable key (a nested array): keep it as a tuple. */
            PyErr_Clear();
            PyObject *frozen = PySequence_Tuple(key);
            rc = frozen ? PyDict_SetItem(dict, frozen, value) : -1;
            Py_XDECREF(frozen);
        }
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (rc < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *convert(const vk_reply *reply, int raise_error)
{
    size_t len = 0;
    const char *text;
    switch (vk_reply_get_type(reply)) {
    case VK_REPLY_STRING:
        text = vk_reply_get_string(reply, &len);
        return PyBytes_FromStringAndSize(text, (Py_ssize_t)len);
    case VK_REPLY_STATUS:
        text = vk_reply_get_string(reply, &len);
        return status_text(text ? text : "", len);
    case VK_REPLY_INTEGER:
        return PyLong_FromLongLong(vk_reply_get_integer(reply));
    case VK_REPLY_NIL:
        Py_RETURN_NONE;
    case VK_REPLY_ARRAY:
    case VK_REPLY_SET:
    case VK_REPLY_PUSH:
        return to_list(reply);
    case VK_REPLY_MAP:
    case VK_REPLY_ATTR:
        return to_dict(reply);
    case VK_REPLY_DOUBLE:
        return PyFloat_FromDouble(vk_reply_get_double(reply));
    case VK_REPLY_BOOL:
        return PyBool_FromLong(vk_reply_get_integer(reply) != 0);
    case VK_REPLY_BIGNUM: {
        text = vk_reply_get_string(reply, &len);
        PyObject *digits = PyUnicode_DecodeUTF8(text ? text : "0", (Py_ssize_t)(text ? len : 1),
                                                "strict");
        if (!digits)
            return NULL;
        PyObject *number = PyLong_FromUnicodeObject(digits, 10);
        Py_DECREF(digits);
        return number;
    }
    case VK_REPLY_VERB:
        text = vk_reply_get_string(reply, &len);
        return PyUnicode_DecodeUTF8(text ? text : "", (Py_ssize_t)len, "replace");
    case VK_REPLY_ERROR: {
        text = vk_reply_get_string(reply, &len);
        PyObject *error = vkpy_response_error(text, len);
        if (!error || !raise_error)
            return error;
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
        return NULL;
    }
    case VK_REPLY_NONE: /* no reply at all: reported below */
        break;
    }
    PyErr_Format(PyExc_RuntimeError, "unknown reply type %d", (int)vk_reply_get_type(reply));
    return NULL;
}

PyObject *vkpy_reply_to_python(const vk_reply *reply, int raise_error)
{
    return convert(reply, raise_error);
}
