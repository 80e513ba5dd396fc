/*
 * vkpy: the C half of the Python binding, linked into the SWIG module
 * vkclient._native next to the wrappers SWIG generates from
 * swig/vkclient.i.
 *
 * SWIG wraps the plain parts of the C ABI (config setters, lock handles,
 * versions). The hot path (commands, pipelines, reply conversion) and the
 * calls that run Python code from C (lock functions, Ctrl-C checks,
 * logger and metrics sinks) are written by hand here, because this is
 * where the per-call cost and the GIL rules are decided.
 */
#ifndef VKPY_H
#define VKPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <vkclient.h>

/* ---- errors (vkpy_errors.c) ---------------------------------------------- */

/* Raises the Python exception registered for `status`, with the message of
 * vk_last_error() (or vk_strerror() when the core left none). Returns NULL
 * so callers can `return vkpy_raise(st);`. */
PyObject *vkpy_raise(vk_status status);
/* A vkclient.ResponseError instance for an error reply (new reference). */
PyObject *vkpy_response_error(const char *text, size_t len);
/* Replaces the pending exception (raised by a with_lock function) with
 * LockFunctionError("distributed lock: function execution: <str(exc)>")
 * whose __cause__ is the original. */
void vkpy_wrap_function_error(void);
/* The registry is filled from Python (vkclient/errors.py) at import. */
PyObject *vkpy_register_errors(PyObject *self, PyObject *args);

/* ---- arguments (vkpy_args.c) --------------------------------------------- */

/* Commands up to this many arguments convert without touching the heap. */
#define VKPY_SMALL_ARGC 16
/* Room for the text of one int or float argument. */
#define VKPY_NUMBER_BYTES 32

/* A command as the C ABI takes it: argv with lengths. The bytes belong to
 * the Python objects given (bytes, str) or to this struct (numbers). */
typedef struct vkpy_argv {
    int argc;
    const char **argv;
    size_t *lens;
    char (*numbers)[VKPY_NUMBER_BYTES];
    PyObject *keep; /* list of temporary objects backing some argv[i] */
    const char *small_argv[VKPY_SMALL_ARGC];
    size_t small_lens[VKPY_SMALL_ARGC];
    char small_numbers[VKPY_SMALL_ARGC][VKPY_NUMBER_BYTES];
} vkpy_argv;

/* Converts `prefix` (may be NULL) followed by items[0..n) into a; bytes,
 * str, int, float and buffer objects are accepted. Returns 0, or -1 with a
 * Python exception set. vkpy_argv_release() must follow in both cases. */
int vkpy_argv_fill(vkpy_argv *a, const char *prefix, PyObject *const *items, Py_ssize_t n);
/* Drops what vkpy_argv_fill() allocated or kept alive. */
void vkpy_argv_release(vkpy_argv *a);
/* Bytes of one argument: bytes or str (UTF-8), without copying. */
int vkpy_as_bytes(PyObject *obj, const char **data, size_t *len);

/* ---- replies (vkpy_reply.c) ---------------------------------------------- */

/* Converts a reply tree to Python objects. An error reply at the top is
 * raised as ResponseError when raise_error is set; nested error replies
 * become ResponseError instances in their container. */
PyObject *vkpy_reply_to_python(const vk_reply *reply, int raise_error);
/* A status snapshot as the tuple Client._snapshot() returns (vkpy_client.c). */
PyObject *vkpy_snapshot_tuple(const vk_snapshot *snap);
/* Interned "OK", the most common status reply. */
int vkpy_reply_init(void);

/* ---- callbacks (vkpy_callbacks.c) ---------------------------------------- */

/* Trampolines: userdata is a strong reference to a Python callable, taken
 * with Py_INCREF before the hand-over and dropped by vkpy_release_callable. */
void vkpy_log_trampoline(void *userdata, vk_log_level level, const char *message,
                         const vk_field *fields, size_t nfields);
void vkpy_metric_trampoline(void *userdata, const char *name, vk_metric_kind kind,
                            double value, const vk_field *labels, size_t nlabels);
void vkpy_release_callable(void *userdata);
/* The tracer's: userdata is a strong reference to an object with
 * start_span(name, parent, attributes, start_ns) and
 * end_span(span, error, attributes, end_ns); a span handle is a strong
 * reference to what start_span returned, dropped after end_span. */
void *vkpy_span_start_trampoline(void *userdata, const char *name, void *parent,
                                 int64_t start_ns, const vk_field *attrs, size_t nattrs);
void vkpy_span_end_trampoline(void *userdata, void *span, int64_t end_ns, vk_status status,
                              const char *error, const vk_field *attrs, size_t nattrs);

/* A context for a blocking call that must stop on Ctrl-C: its interrupt
 * check runs Python's signal handlers under the GIL, and a handler's
 * exception (KeyboardInterrupt) is kept in `pending` until the call has
 * returned and vkpy_interruptible_finish() re-raises it. */
typedef struct vkpy_interruptible {
    vk_context *ctx;
    PyObject *type, *value, *traceback;
} vkpy_interruptible;

/* timeout_ms < 0: no deadline. Returns 0, or -1 with an exception set. */
int vkpy_interruptible_start(vkpy_interruptible *in, int64_t timeout_ms);
/* Frees the context; returns 1 and restores the pending exception if a
 * signal handler raised during the call, else 0. */
int vkpy_interruptible_finish(vkpy_interruptible *in);

/* ---- client, pipeline and lock calls (vkpy_client.c, vkpy_lock.c) ------- */

/* Adds ClientCore and PipelineCore and the hand-written functions to the
 * module. Returns 0, or -1 with an exception set. */
int vkpy_init_module(PyObject *module);
/* A vk_lock_options from None (the defaults) or from the tuple
 * (expiry_ms, tries, retry_delay_ms, drift_factor, auto_renew) that
 * vkclient.LockOptions hands over. Returns 0, or -1 with an exception. */
int vkpy_lock_options_from_python(PyObject *obj, vk_lock_options *opts);
PyObject *vkpy_lock_options_to_python(const vk_lock_options *opts);
extern PyMethodDef vkpy_lock_methods[];
/* SET's argv from set(key, value, px=None, nx=False) (FASTCALL arguments);
 * 0, or -1 with an exception. vkpy_argv_release() must follow either way. */
int vkpy_set_argv(vkpy_argv *a, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
/* set()'s result for SET's reply: True, None when NX prevented it; an error
 * reply raises ResponseError. */
PyObject *vkpy_set_result(const vk_reply *reply);

/* ---- scripts (vkpy_script.c) --------------------------------------------- */

/* Adds ScriptCore. Returns 0, or -1 with an exception set. */
int vkpy_script_init(PyObject *module);
/* The handle of a ScriptCore (borrowed), or NULL with a TypeError. */
vk_script *vkpy_script_handle(PyObject *obj);
/* A run's keys and args (each a list or tuple, or None) as argv. */
typedef struct vkpy_script_lists_t {
    vkpy_argv keys, args;
    PyObject *fast_keys, *fast_args; /* the sequences backing them */
} vkpy_script_lists_t;
/* Returns 0, or -1 with an exception; vkpy_script_lists_release() must
 * follow either way. */
int vkpy_script_lists(vkpy_script_lists_t *l, PyObject *keys, PyObject *args);
void vkpy_script_lists_release(vkpy_script_lists_t *l);

/* ---- scans (vkpy_scan.c) ------------------------------------------------- */

/* Adds ScanCore. Returns 0, or -1 with an exception set. */
int vkpy_scan_init(PyObject *module);

/* The handles behind a ClientCore (NULL when never opened: the core says
 * so) and a PipelineCore (vkpy_client.c); -1 / NULL with a TypeError for
 * another type. */
int vkpy_client_handle(PyObject *obj, vk_client **out);
vk_pipeline *vkpy_pipeline_handle(PyObject *obj);

/* ---- sessions (vkpy_session.c) ------------------------------------------- */

/* Adds SessionCore. Returns 0, or -1 with an exception set. */
int vkpy_session_init(PyObject *module);

/* ---- the event-loop client (vkpy_async.c) ------------------------------- */

/* Adds AsyncClientCore, AsyncPipelineCore, AsyncLockManagerCore and the
 * async_* functions. Returns 0, or -1 with an exception set. */
int vkpy_async_init(PyObject *module);

/* Bridges to SWIG's pointer objects, defined in swig/vkclient.i where the
 * SWIG runtime lives. NULL with an exception set on a wrong type; None
 * converts to NULL without an error. */
typedef enum vkpy_pointer_kind {
    VKPY_CONFIG,
    VKPY_CLIENT,
    VKPY_LOCK_MANAGER,
    VKPY_LOCK
} vkpy_pointer_kind;
int vkpy_unwrap_pointer(PyObject *obj, vkpy_pointer_kind kind, void **out);
PyObject *vkpy_wrap_pointer(void *ptr, vkpy_pointer_kind kind);

#endif /* VKPY_H */
