/*
 * The lock calls that wait or run Python code: acquire (retries, so it
 * must stop on Ctrl-C), try_lock (the fast path of a lock pair) and
 * with_lock (runs a Python function under the lock).
 *
 * with_lock: the core calls run_lock_fn() on this thread while the GIL is
 * released; it takes the GIL, calls fn(), and keeps fn's result or its
 * exception in the lock_call. The core releases the lock whatever the
 * outcome; only then is the exception raised: LockFunctionError with the
 * very object fn raised as its __cause__.
 */
#include "vkpy.h"

typedef struct lock_call {
    PyObject *fn;
    PyObject *result;
    PyObject *type, *value, *traceback;
} lock_call;

int vkpy_lock_options_from_python(PyObject *obj, vk_lock_options *opts)
{
    vk_status st = vk_lock_options_init(opts, VK_LOCK_OPTIONS_VERSION);
    if (st != VK_OK) {
        vkpy_raise(st);
        return -1;
    }
    if (obj == Py_None)
        return 0;
    long long expiry_ms = 0, retry_delay_ms = 0;
    int tries = 0, auto_renew = 0;
    double drift = 0.0;
    if (!PyArg_ParseTuple(obj, "LiLdp:lock options", &expiry_ms, &tries, &retry_delay_ms, &drift,
                          &auto_renew))
        return -1;
    opts->expiry_ms = expiry_ms;
    opts->tries = tries;
    opts->retry_delay_ms = retry_delay_ms;
    opts->drift_factor = drift;
    opts->auto_renew = auto_renew;
    return 0;
}

PyObject *vkpy_lock_options_to_python(const vk_lock_options *opts)
{
    return Py_BuildValue("(LiLdN)", (long long)opts->expiry_ms, opts->tries,
                         (long long)opts->retry_delay_ms, opts->drift_factor,
                         PyBool_FromLong(opts->auto_renew));
}

/* Manager pointer, key bytes: the arguments every call here starts with. */
static int manager_and_key(PyObject *manager_obj, PyObject *key_obj, vk_lock_manager **manager,
                           const char **key, size_t *keylen)
{
    void *ptr = NULL;
    if (vkpy_unwrap_pointer(manager_obj, VKPY_LOCK_MANAGER, &ptr) < 0)
        return -1;
    *manager = ptr;
    if (key_obj == Py_None) {
        /* The core reports a missing key with the contract's text. */
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

/* try_lock(manager, key) -> lock pointer, or None when someone holds it. */
static PyObject *py_try_lock(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "try_lock(manager, key)");
        return NULL;
    }
    vk_lock_manager *manager;
    const char *key;
    size_t keylen;
    if (manager_and_key(args[0], args[1], &manager, &key, &keylen) < 0)
        return NULL;
    vk_lock *lock = NULL;
    vk_status st;
    Py_BEGIN_ALLOW_THREADS
    st = vk_lock_manager_try_lock(&lock, manager, NULL, key, keylen);
    Py_END_ALLOW_THREADS
    if (st != VK_OK)
        return vkpy_raise(st);
    if (!lock)
        Py_RETURN_NONE;
    PyObject *wrapped = vkpy_wrap_pointer(lock, VKPY_LOCK);
    if (!wrapped)
        vk_lock_free(lock);
    return wrapped;
}

static int64_t timeout_ms_from(PyObject *timeout)
{
    if (timeout == Py_None)
        return -1;
    long long ms = PyLong_AsLongLong(timeout);
    if (ms == -1 && PyErr_Occurred())
        return -2;
    return ms < 0 ? 0 : (int64_t)ms;
}

/* acquire(manager, key, options, timeout_ms) -> lock pointer. */
static PyObject *py_acquire(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "acquire(manager, key, options, timeout_ms)");
        return NULL;
    }
    vk_lock_manager *manager;
    const char *key;
    size_t keylen;
    vk_lock_options opts;
    if (manager_and_key(args[0], args[1], &manager, &key, &keylen) < 0 ||
        vkpy_lock_options_from_python(args[2], &opts) < 0)
        return NULL;
    int64_t timeout_ms = timeout_ms_from(args[3]);
    vkpy_interruptible in;
    if (timeout_ms == -2 || vkpy_interruptible_start(&in, timeout_ms) < 0)
        return NULL;
    vk_lock *lock = NULL;
    vk_status st;
    Py_BEGIN_ALLOW_THREADS
    st = vk_lock_manager_acquire(&lock, manager, in.ctx, key, keylen, &opts);
    Py_END_ALLOW_THREADS
    if (vkpy_interruptible_finish(&in)) {
        if (lock) {
            /* Interrupted after the lock was taken: give it back. */
            Py_BEGIN_ALLOW_THREADS
            vk_lock_unlock(lock, NULL);
            Py_END_ALLOW_THREADS
            vk_lock_free(lock);
        }
        return NULL;
    }
    if (st != VK_OK)
        return vkpy_raise(st);
    PyObject *wrapped = vkpy_wrap_pointer(lock, VKPY_LOCK);
    if (!wrapped)
        vk_lock_free(lock);
    return wrapped;
}

static vk_status run_lock_fn(void *userdata, vk_lock *lock)
{
    lock_call *call = userdata;
    PyGILState_STATE gil = PyGILState_Ensure();
    call->result = PyObject_CallNoArgs(call->fn);
    if (!call->result)
        PyErr_Fetch(&call->type, &call->value, &call->traceback);
    PyGILState_Release(gil);
    return call->result ? VK_OK : VK_ERR_LOCK_FN;
}

/* with_lock(manager, key, options, fn, timeout_ms) -> fn() */
static PyObject *py_with_lock(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "with_lock(manager, key, options, fn, timeout_ms)");
        return NULL;
    }
    vk_lock_manager *manager;
    const char *key;
    size_t keylen;
    vk_lock_options opts;
    PyObject *options = args[2];
    if (manager_and_key(args[0], args[1], &manager, &key, &keylen) < 0 ||
        vkpy_lock_options_from_python(options, &opts) < 0)
        return NULL;
    lock_call call = {args[3], NULL, NULL, NULL, NULL};
    if (call.fn != Py_None && !PyCallable_Check(call.fn)) {
        PyErr_Format(PyExc_TypeError, "lock function must be callable, not %.80s",
                     Py_TYPE(call.fn)->tp_name);
        return NULL;
    }
    /* None reaches the core as NULL: "lock function is nil". */
    vk_lock_fn fn = call.fn == Py_None ? NULL : run_lock_fn;
    int64_t timeout_ms = timeout_ms_from(args[4]);
    vkpy_interruptible in;
    if (timeout_ms == -2 || vkpy_interruptible_start(&in, timeout_ms) < 0)
        return NULL;
    vk_status st;
    const vk_lock_options *resolved = options == Py_None ? NULL : &opts;
    Py_BEGIN_ALLOW_THREADS
    st = vk_lock_manager_with_lock_options(manager, in.ctx, key, keylen, resolved, fn, &call);
    Py_END_ALLOW_THREADS
    if (call.type) {
        /* fn raised: its exception wins over a Ctrl-C seen while waiting.
         * An Exception is wrapped as the original wraps a function's error;
         * KeyboardInterrupt, SystemExit and the like pass unchanged. */
        vkpy_interruptible_finish(&in);
        PyErr_Clear();
        PyErr_Restore(call.type, call.value, call.traceback);
        if (PyErr_ExceptionMatches(PyExc_Exception))
            vkpy_wrap_function_error();
        return NULL;
    }
    if (vkpy_interruptible_finish(&in)) {
        Py_XDECREF(call.result);
        return NULL;
    }
    if (st != VK_OK) {
        Py_XDECREF(call.result);
        return vkpy_raise(st);
    }
    return call.result;
}

PyMethodDef vkpy_lock_methods[] = {
    {"try_lock", (PyCFunction)(void (*)(void))py_try_lock, METH_FASTCALL,
     "try_lock(manager, key) -> lock pointer or None: one attempt, default expiry."},
    {"acquire", (PyCFunction)(void (*)(void))py_acquire, METH_FASTCALL,
     "acquire(manager, key, options, timeout_ms) -> lock pointer (retries; Ctrl-C stops it)."},
    {"with_lock", (PyCFunction)(void (*)(void))py_with_lock, METH_FASTCALL,
     "with_lock(manager, key, options, fn, timeout_ms) -> fn(), run under the lock."},
    {NULL, NULL, 0, NULL},
};
