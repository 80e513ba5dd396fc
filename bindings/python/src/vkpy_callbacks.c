/*
 * Trampolines from the core's C callbacks into Python.
 *
 * The core may call a sink from any thread: the calling thread (which has
 * released the GIL around the blocking call) or a background thread (the
 * IAM refresh loop). Each trampoline therefore takes the GIL itself with
 * PyGILState_Ensure, which works in both cases. A sink's exception cannot
 * travel back through C: it is reported with PyErr_WriteUnraisable, as
 * Python does for exceptions in __del__ and weakref callbacks.
 */
#include "vkpy.h"

#include <string.h>

/* After interpreter shutdown there is no Python left to call into. */
static int python_alive(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsInitialized() && !Py_IsFinalizing();
#else
    return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

static PyObject *fields_to_dict(const vk_field *fields, size_t n)
{
    PyObject *dict = PyDict_New();
    for (size_t i = 0; dict && i < n; i++) {
        PyObject *value = PyUnicode_DecodeUTF8(fields[i].value ? fields[i].value : "",
                                               (Py_ssize_t)strlen(fields[i].value ? fields[i].value : ""),
                                               "replace");
        if (!value || PyDict_SetItemString(dict, fields[i].key ? fields[i].key : "", value) < 0)
            Py_CLEAR(dict);
        Py_XDECREF(value);
    }
    return dict;
}

/* Calls callable(*args) under the GIL, keeping any exception that was
 * already pending on this thread untouched. Steals `args`. */
static void call_sink(PyObject *callable, PyObject *args)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *result = args ? PyObject_CallObject(callable, args) : NULL;
    if (!result)
        PyErr_WriteUnraisable(callable);
    Py_XDECREF(result);
    Py_XDECREF(args);
    PyErr_Restore(type, value, traceback);
}

void vkpy_log_trampoline(void *userdata, vk_log_level level, const char *message,
                         const vk_field *fields, size_t nfields)
{
    if (!python_alive())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *dict = fields_to_dict(fields, nfields);
    PyObject *args = dict ? Py_BuildValue("(ssN)", vk_log_level_name(level),
                                          message ? message : "", dict)
                          : NULL;
    call_sink((PyObject *)userdata, args);
    PyGILState_Release(gil);
}

void vkpy_metric_trampoline(void *userdata, const char *name, vk_metric_kind kind,
                            double value, const vk_field *labels, size_t nlabels)
{
    if (!python_alive())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *dict = fields_to_dict(labels, nlabels);
    PyObject *args = dict ? Py_BuildValue("(ssdN)", name ? name : "",
                                          vk_metric_kind_name(kind), value, dict)
                          : NULL;
    call_sink((PyObject *)userdata, args);
    PyGILState_Release(gil);
}

/* ---- the tracer: an object with start_span and end_span ------------------- */

/* tracer.<method>(*args) under the GIL, as call_sink; a new reference to
 * the result, or NULL after reporting the tracer's exception. Steals args. */
static PyObject *call_tracer(PyObject *tracer, const char *method, PyObject *args)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *result = NULL;
    PyObject *fn = args ? PyObject_GetAttrString(tracer, method) : NULL;
    if (fn != NULL)
        result = PyObject_CallObject(fn, args);
    if (result == NULL)
        PyErr_WriteUnraisable(fn != NULL ? fn : tracer);
    Py_XDECREF(fn);
    Py_XDECREF(args);
    PyErr_Restore(type, value, traceback);
    return result;
}

void *vkpy_span_start_trampoline(void *userdata, const char *name, void *parent,
                                 int64_t start_ns, const vk_field *attrs, size_t nattrs)
{
    if (!python_alive())
        return NULL;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *dict = fields_to_dict(attrs, nattrs);
    PyObject *args = dict ? Py_BuildValue("(sONL)", name, parent ? (PyObject *)parent : Py_None,
                                          dict, (long long)start_ns)
                          : NULL;
    /* The handle is the tracer's span, referenced until end_span; None
     * when start_span failed, so that end_span still pairs with it. */
    PyObject *span = call_tracer((PyObject *)userdata, "start_span", args);
    if (span == NULL) {
        span = Py_None;
        Py_INCREF(span);
    }
    PyGILState_Release(gil);
    return span;
}

void vkpy_span_end_trampoline(void *userdata, void *span, int64_t end_ns, vk_status status,
                              const char *error, const vk_field *attrs, size_t nattrs)
{
    if (span == NULL || !python_alive())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *dict = fields_to_dict(attrs, nattrs);
    PyObject *args = NULL;
    if (dict != NULL && status == VK_OK)
        args = Py_BuildValue("(OONL)", (PyObject *)span, Py_None, dict, (long long)end_ns);
    else if (dict != NULL)
        args = Py_BuildValue("(OsNL)", (PyObject *)span,
                             error != NULL ? error : vk_strerror(status), dict,
                             (long long)end_ns);
    Py_XDECREF(call_tracer((PyObject *)userdata, "end_span", args));
    Py_DECREF((PyObject *)span);
    PyGILState_Release(gil);
}

void vkpy_release_callable(void *userdata)
{
    if (!python_alive())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_XDECREF((PyObject *)userdata);
    PyGILState_Release(gil);
}

/* ---- Ctrl-C during a blocking call --------------------------------------- */

/* Polled by the core every <= 50 ms while it waits, with the GIL released.
 * PyErr_CheckSignals runs pending Python signal handlers (only on the main
 * thread, as Python requires); SIGINT's default handler raises
 * KeyboardInterrupt, which is kept here and makes the core cancel. */
static int check_signals(void *userdata)
{
    vkpy_interruptible *in = userdata;
    if (in->type || !python_alive())
        return in->type != NULL;
    PyGILState_STATE gil = PyGILState_Ensure();
    int interrupted = 0;
    if (PyErr_CheckSignals() < 0) {
        PyErr_Fetch(&in->type, &in->value, &in->traceback);
        interrupted = 1;
    }
    PyGILState_Release(gil);
    return interrupted;
}

int vkpy_interruptible_start(vkpy_interruptible *in, int64_t timeout_ms)
{
    in->ctx = NULL;
    in->type = in->value = in->traceback = NULL;
    vk_status st = vk_context_new(&in->ctx);
    if (st == VK_OK)
        st = vk_context_set_interrupt_check(in->ctx, check_signals, in);
    if (st == VK_OK && timeout_ms >= 0)
        st = vk_context_set_timeout_ms(in->ctx, timeout_ms);
    if (st != VK_OK) {
        vkpy_raise(st);
        vk_context_free(in->ctx);
        in->ctx = NULL;
        return -1;
    }
    return 0;
}

int vkpy_interruptible_finish(vkpy_interruptible *in)
{
    vk_context_free(in->ctx);
    in->ctx = NULL;
    if (!in->type)
        return 0;
    PyErr_Restore(in->type, in->value, in->traceback);
    in->type = in->value = in->traceback = NULL;
    return 1;
}
