/*
 * The SWIG interface over the C ABI (core/include/vkclient.h), shared by
 * the Python and Ruby bindings. The wrappers are generated at build time
 * and never committed.
 *
 * Language-neutral here: which functions are wrapped and the shape of the
 * typemaps. Language-specific code sits in #ifdef SWIGPYTHON / SWIGRUBY
 * blocks.
 *
 * Python: the module is vkclient._native (%module native inside the
 * package; only the extension is used, SWIG's proxy .py is not). The C half
 * of the binding (bindings/python/src/vkpy*.c) adds the hot path and the
 * calls that run Python code from C; see vkpy.h.
 */
#ifdef SWIGPYTHON
%module(threads=1, package="vkclient") native
#else
%module vkclient_native
#endif

%{
#include <vkclient.h>
%}
#ifdef SWIGPYTHON
%{
#include "vkpy.h"
%}
#endif

%include <stdint.i>

/* ---- what is wrapped ------------------------------------------------------ */

/* A bare C function pointer cannot come from a scripting language: each
 * binding installs its own trampoline in hand-written code. */
%ignore vk_context_set_interrupt_check;
/* Takes argv arrays: the bindings call it from their hand-written command
 * paths. */
%ignore vk_command_is_blocking;

/* Scans are hand-written in each binding: they hand out pages of native
 * values (bindings/python/src/vkpy_scan.c, bindings/ruby/ext/vkrb_scan.c). */
%ignore vk_scan_new;
%ignore vk_scan_new_key;
%ignore vk_scan_next;
%ignore vk_scan_done;
%ignore vk_scan_free;
%ignore vk_async_scan_new;
%ignore vk_async_scan_new_key;
%ignore vk_async_scan_next;
%ignore vk_hosted_scan_new;
%ignore vk_hosted_scan_new_key;
%ignore vk_hosted_scan_next;

#ifdef SWIGPYTHON
/* Lock option presets: lock_options_default() / lock_options_rate_limiter()
 * below return them as the tuple vkclient.LockOptions takes. */
%ignore vk_lock_options_init;
%ignore vk_lock_options_rate_limiter;
/* Python: the client, pipelines, replies, snapshots and waiting lock calls
 * are hand-written in bindings/python/src (the hot path, GIL handling). */
%ignore vk_client_new;
%ignore vk_client_free;
%ignore vk_client_connect;
%ignore vk_client_close;
%ignore vk_client_is_connected;
%ignore vk_client_last_refresh_error;
%ignore vk_client_snapshot;
%ignore vk_snapshot_free;
%ignore vk_snapshot_connected;
%ignore vk_snapshot_last_refresh_error;
%ignore vk_snapshot_last_refresh_at_ms;
%ignore vk_snapshot_refresh_loop_running;
%ignore vk_snapshot_mode;
%ignore vk_snapshot_master_address;
%ignore vk_snapshot_master_switches;
%ignore vk_snapshot_slot_map_refreshes;
%ignore vk_snapshot_moved_redirects;
%ignore vk_snapshot_ask_redirects;
%ignore vk_snapshot_node_count;
%ignore vk_snapshot_node_address;
%ignore vk_snapshot_node_slots;
%ignore vk_client_poll_events;
%ignore vk_client_wait_events;
%ignore vk_client_tick;
/* Scripts: ScriptCore and the clients' _run_script (vkpy_script.c). */
%ignore vk_script_new;
%ignore vk_script_free;
%ignore vk_script_sha1;
%ignore vk_script_source;
%ignore vk_script_run;
%ignore vk_pipeline_new;
%ignore vk_pipeline_free;
%ignore vk_pipeline_append;
%ignore vk_pipeline_length;
%ignore vk_pipeline_exec;
%ignore vk_pipeline_set_transaction;
%ignore vk_pipeline_is_transaction;
%ignore vk_session_open;
%ignore vk_session_command;
%ignore vk_session_pipeline_exec;
%ignore vk_session_close;
%ignore vk_reply_free;
%ignore vk_reply_get_type;
%ignore vk_reply_get_string;
%ignore vk_reply_get_integer;
%ignore vk_reply_get_double;
%ignore vk_reply_get_length;
%ignore vk_reply_get_element;
%ignore vk_lock_manager_try_lock;
%ignore vk_lock_manager_acquire;
%ignore vk_lock_manager_with_lock;
%ignore vk_lock_manager_with_lock_options;
%ignore vk_lock_key;
%ignore vk_free;
%ignore vk_context_new;
%ignore vk_context_free;
%ignore vk_context_set_timeout_ms;
%ignore vk_context_cancel;
%ignore vk_context_is_cancelled;
/* A tracer's parent comes from the tracer's own current context. */
%ignore vk_context_set_trace_parent;
%ignore vk_lock_options;
/* Fields reach Python as a dict (vkpy_callbacks.c). */
%ignore vk_field;
/* LockManager.unlock() is deprecated in Python too: it warns and calls
 * LockHandle.unlock(), without calling the deprecated C function. */
%ignore vk_lock_manager_unlock;
#endif

#ifdef SWIGPYTHON
/* ---- Python: the GIL ------------------------------------------------------ */

/* threads=1 would release the GIL around every call. Most calls here are
 * setters and accessors that never block: keep the GIL for those, and
 * release it only where the core may wait on the network or join one of
 * its threads (freeing the last reference to a client joins its refresh
 * loop, which may itself be waiting for the GIL to deliver a log line). */
%nothread;
%thread vk_client_command;
%thread vk_lock_unlock;
%thread vk_lock_extend;
%thread vk_lock_manager_new;
%thread vk_lock_manager_new_quorum;
%thread vk_lock_manager_free;
%thread vk_lock_free;
%thread vk_lock_auto_renew;
%thread vk_config_free;

/* ---- Python: errors ------------------------------------------------------- */

/* The one place a vk_status becomes an exception: the class registered for
 * the code (vkclient/errors.py), with str(e) == vk_last_error(). */
%typemap(out) vk_status {
    if ($1 != VK_OK) {
        vkpy_raise($1);
        SWIG_fail;
    }
    $result = SWIG_Py_Void();
}
/* ... except where a status is the answer rather than the outcome. */
%typemap(out) vk_status vk_last_status "$result = PyLong_FromLong((long)$1);";

/* ---- Python: handles returned through out pointers ------------------------ */

%define VKPY_OUT_HANDLE(TYPE)
%typemap(in, numinputs=0) TYPE **out (TYPE *handle = NULL) "$1 = &handle;";
%typemap(argout) TYPE **out {
    $result = SWIG_Python_AppendOutput($result,
                                       *$1 ? SWIG_NewPointerObj(*$1, $*1_descriptor, 0)
                                           : SWIG_Py_Void());
}
%enddef
VKPY_OUT_HANDLE(vk_config)
VKPY_OUT_HANDLE(vk_lock_manager)

/* Strings the caller owns (char **out): a str, and the C copy is freed. */
%typemap(in, numinputs=0) char **out (char *text = NULL) "$1 = &text;";
%typemap(argout) char **out {
    PyObject *text = *$1 ? PyUnicode_DecodeUTF8(*$1, (Py_ssize_t)strlen(*$1), "replace")
                         : SWIG_Py_Void();
    vk_free(*$1);
    *$1 = NULL;
    if (!text)
        SWIG_fail;
    $result = SWIG_Python_AppendOutput($result, text);
}
%typemap(freearg) char **out "vk_free(*$1);";

/* ---- Python: arguments ----------------------------------------------------- */

/* A command: any sequence of bytes/str/int/float, converted without copies
 * (vkpy_args.c). */
%typemap(in) (int argc, const char *const *argv, const size_t *argvlen)
              (vkpy_argv command, PyObject *items = NULL) {
    /* items holds the arguments (and so the bytes lent to argv) until
     * freearg, also when PySequence_Fast had to build a new list. */
    items = PySequence_Fast($input, "a command must be a sequence of arguments");
    if (!items)
        SWIG_fail;
    if (vkpy_argv_fill(&command, NULL, PySequence_Fast_ITEMS(items),
                       PySequence_Fast_GET_SIZE(items)) < 0)
        SWIG_fail;
    $1 = command.argc;
    $2 = ($2_ltype)command.argv;
    $3 = command.lens;
}
%typemap(freearg) (int argc, const char *const *argv, const size_t *argvlen) {
    if (items$argnum) {
        vkpy_argv_release(&command$argnum);
        Py_DECREF(items$argnum);
    }
}

/* The reply of vk_client_command, converted at once and freed. */
%typemap(in, numinputs=0) vk_reply **out (vk_reply *reply = NULL) "$1 = &reply;";
%typemap(argout) vk_reply **out {
    PyObject *converted = vkpy_reply_to_python(*$1, 1);
    vk_reply_free(*$1);
    *$1 = NULL;
    if (!converted)
        SWIG_fail;
    Py_DECREF($result);
    $result = converted;
}
%typemap(freearg) vk_reply **out "vk_reply_free(*$1);";

/* Lock options: None for the defaults, or the tuple
 * (expiry_ms, tries, retry_delay_ms, drift_factor, auto_renew). */
%typemap(in) const vk_lock_options *opts (vk_lock_options options) {
    if (vkpy_lock_options_from_python($input, &options) < 0)
        SWIG_fail;
    $1 = &options;
}

/* A quorum: a list of client handles. */
%typemap(in) (vk_client *const *clients, size_t n) {
    PyObject *items = PySequence_Fast($input, "clients must be a sequence");
    if (!items)
        SWIG_fail;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    $1 = PyMem_Calloc((size_t)(count ? count : 1), sizeof(vk_client *));
    $2 = (size_t)count;
    for (Py_ssize_t i = 0; $1 && i < count; i++) {
        void *ptr = NULL;
        if (vkpy_unwrap_pointer(PySequence_Fast_GET_ITEM(items, i), VKPY_CLIENT, &ptr) < 0) {
            Py_DECREF(items);
            SWIG_fail;
        }
        ((vk_client **)$1)[i] = ptr;
    }
    Py_DECREF(items);
    if (!$1) {
        PyErr_NoMemory();
        SWIG_fail;
    }
}
%typemap(freearg) (vk_client *const *clients, size_t n) "PyMem_Free((void *)$1);";

/* Callbacks: a Python callable (or None to remove the sink). The core owns
 * the reference from here on and drops it through vkpy_release_callable. */
%typemap(in) (vk_log_fn fn, void *userdata, vk_free_fn free_userdata) {
    if ($input == Py_None) {
        $1 = NULL;
        $2 = NULL;
        $3 = NULL;
    } else if (!PyCallable_Check($input)) {
        SWIG_exception_fail(SWIG_TypeError, "the logger must be callable or None");
    } else {
        Py_INCREF($input);
        $1 = vkpy_log_trampoline;
        $2 = $input;
        $3 = vkpy_release_callable;
    }
}
%typemap(in) (vk_metric_fn fn, void *userdata, vk_free_fn free_userdata) {
    if ($input == Py_None) {
        $1 = NULL;
        $2 = NULL;
        $3 = NULL;
    } else if (!PyCallable_Check($input)) {
        SWIG_exception_fail(SWIG_TypeError, "the metrics sink must be callable or None");
    } else {
        Py_INCREF($input);
        $1 = vkpy_metric_trampoline;
        $2 = $input;
        $3 = vkpy_release_callable;
    }
}

/* The tracer: an object with start_span and end_span (checked by
 * vkclient.config), or None to remove it. */
%typemap(in) (vk_span_start_fn start, vk_span_end_fn end, void *userdata,
              vk_free_fn free_userdata) {
    if ($input == Py_None) {
        $1 = NULL;
        $2 = NULL;
        $3 = NULL;
        $4 = NULL;
    } else {
        Py_INCREF($input);
        $1 = vkpy_span_start_trampoline;
        $2 = vkpy_span_end_trampoline;
        $3 = $input;
        $4 = vkpy_release_callable;
    }
}

/* ---- Python: the hand-written half ------------------------------------------ */

%wrapper %{
/* SWIG defines the module's init function without declaring it first. */
PyMODINIT_FUNC PyInit__native(void);

static swig_type_info *vkpy_swig_type(vkpy_pointer_kind kind)
{
    switch (kind) {
    case VKPY_CONFIG: return SWIGTYPE_p_vk_config;
    case VKPY_CLIENT: return SWIGTYPE_p_vk_client;
    case VKPY_LOCK_MANAGER: return SWIGTYPE_p_vk_lock_manager;
    case VKPY_LOCK: return SWIGTYPE_p_vk_lock;
    }
    return NULL;
}

int vkpy_unwrap_pointer(PyObject *obj, vkpy_pointer_kind kind, void **out)
{
    *out = NULL;
    if (obj == Py_None)
        return 0;
    if (!SWIG_IsOK(SWIG_ConvertPtr(obj, out, vkpy_swig_type(kind), 0))) {
        PyErr_Format(PyExc_TypeError, "expected a native %s handle",
                     vkpy_swig_type(kind)->str);
        return -1;
    }
    return 0;
}

PyObject *vkpy_wrap_pointer(void *ptr, vkpy_pointer_kind kind)
{
    if (!ptr)
        return SWIG_Py_Void();
    return SWIG_NewPointerObj(ptr, vkpy_swig_type(kind), 0);
}
%}

/* Lock option presets as the tuple LockOptions takes. */
%inline %{
static PyObject *lock_options_default(void)
{
    vk_lock_options opts;
    vk_status st = vk_lock_options_init(&opts, VK_LOCK_OPTIONS_VERSION);
    return st == VK_OK ? vkpy_lock_options_to_python(&opts) : vkpy_raise(st);
}

static PyObject *lock_options_rate_limiter(void)
{
    vk_lock_options opts;
    vk_status st = vk_lock_options_rate_limiter(&opts, VK_LOCK_OPTIONS_VERSION);
    return st == VK_OK ? vkpy_lock_options_to_python(&opts) : vkpy_raise(st);
}

/* The key of a held lock: bytes (keys are binary safe). */
static PyObject *lock_key(const vk_lock *lock)
{
    size_t len = 0;
    const char *key = vk_lock_key(lock, &len);
    if (!key)
        return SWIG_Py_Void();
    return PyBytes_FromStringAndSize(key, (Py_ssize_t)len);
}
%}

%init %{
    if (vkpy_init_module(m) < 0 || vkpy_async_init(m) < 0)
        return NULL;
%}
#endif /* SWIGPYTHON */

#ifdef SWIGRUBY
%include "ruby.swg"
#endif

%include "vkclient.h"
