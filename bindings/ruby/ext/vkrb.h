/*
 * The hand-written half of the Ruby binding. SWIG (swig/ruby.swg) wraps the
 * plain configuration calls; these files own what SWIG cannot do well:
 * the command hot path, replies, the GVL around every blocking call, the
 * lock manager with Ruby blocks, and the logger/metrics/tracer trampolines.
 *
 * Threading rules, kept by every file here:
 *  - a call that may wait on the network runs through vkrb_blocking(), with
 *    the GVL released and an unblock function that cancels its vk_context,
 *    so Thread#raise, Timeout.timeout and Ctrl-C interrupt it;
 *  - Ruby is never entered from a thread Ruby does not know: the clients use
 *    VK_EVENTS_QUEUED and a Ruby thread delivers background events.
 */
#ifndef VKRB_H
#define VKRB_H

#include <ruby.h>
#include <ruby/thread.h>
#include <vkclient.h>

/* ---- module objects (vkrb_init.c) ---------------------------------------- */

extern VALUE vkrb_mVKClient;   /* VKClient */
extern VALUE vkrb_cClient;     /* VKClient::Client */
extern VALUE vkrb_cLockManager; /* VKClient::LockManager */
extern VALUE vkrb_cLockHandle; /* VKClient::LockHandle */
extern VALUE vkrb_cSession;    /* VKClient::Session */

void vkrb_init(void);
void vkrb_init_client(void);
void vkrb_init_lock(void);
/* VKClient::Script and Client#_run_script (vkrb_script.c). */
void vkrb_init_script(void);
void vkrb_init_scan(void);
void vkrb_init_sinks(void);
void vkrb_init_errors(void);
void vkrb_init_session(void);

/* The core handle behind a VKClient::Client (NULL when never opened). */
vk_client *vkrb_client_handle(VALUE client);

/* ---- errors (vkrb_errors.c) ---------------------------------------------- */

/* Raises the VKClient::Error subclass of code with message vk_last_error().
 * A cancelled call first lets Ruby raise the interrupt that cancelled it
 * (Timeout::Error, Interrupt, the Thread#raise exception). */
NORETURN(void vkrb_raise(vk_status code));
/* The exception object for a server error reply (VKClient::ResponseError). */
VALUE vkrb_response_error(const char *text, size_t len);

/* ---- blocking calls without the GVL (vkrb_blocking.c) -------------------- */

/* Work run without the GVL; ctx is cancelled when Ruby interrupts the thread. */
typedef vk_status (*vkrb_blocking_fn)(void *data, vk_context *ctx);

/* Runs fn(data, ctx) with the GVL released. Returns its status; never
 * raises, so the caller can release what it holds before vkrb_raise().
 * fn may not touch Ruby objects. */
vk_status vkrb_blocking(vkrb_blocking_fn fn, void *data);
/* Non-zero while the calling thread runs inside vkrb_blocking() with the
 * GVL released (zero again while vkrb_call_with_gvl() holds it). */
int vkrb_in_blocking(void);
/* From inside vkrb_blocking(): runs fn(arg) with the GVL taken back
 * (rb_thread_call_with_gvl), marking the thread as holding it meanwhile so
 * that a vkclient call made by fn nests. */
void *vkrb_call_with_gvl(void *(*fn)(void *), void *arg);

/* ---- command arguments and replies (vkrb_args.c, vkrb_reply.c) ----------- */

/* A command's arguments, copied out of the Ruby objects so that the call can
 * run without the GVL (another thread may change the Strings meanwhile).
 * Short commands live in the inline buffer; longer ones on the heap. */
#define VKRB_INLINE_ARGS 16
#define VKRB_INLINE_BYTES 1024
typedef struct vkrb_argv {
    int argc;
    const char **argv;
    size_t *lens;
    char *bytes;
    const char *inline_argv[VKRB_INLINE_ARGS];
    size_t inline_lens[VKRB_INLINE_ARGS];
    char inline_bytes[VKRB_INLINE_BYTES];
} vkrb_argv;

/* Fills argv from n Ruby values (String, Symbol, Integer, Float); raises
 * TypeError/ArgumentError on anything else (nothing to release then). */
void vkrb_argv_fill(vkrb_argv *argv, const VALUE *items, long n);
void vkrb_argv_release(vkrb_argv *argv);

/* Converts and frees a reply, also when the conversion raises
 * (vkrb_client.c). */
VALUE vkrb_take_reply(vk_reply *reply);
/* A new pipeline of client holding the commands (an Array of Arrays of
 * arguments), in transaction mode when transaction is set; raises (and
 * frees it) on a bad command (vkrb_client.c). */
vk_pipeline *vkrb_pipeline_of(vk_client *client, VALUE commands, int transaction);

/* Converts a reply tree to Ruby objects. Error replies become
 * VKClient::ResponseError objects (not raised). Does not free the reply. */
VALUE vkrb_reply_to_ruby(const vk_reply *reply);

/* ---- sinks (vkrb_sinks.c) ------------------------------------------------ */

/* Installs callable (responding to #call) as the config's logger/metrics
 * sink, or removes it for nil. The callable must be kept alive by the
 * caller for as long as the client lives (VKClient::Client keeps it). */
void vkrb_config_set_logger(vk_config *cfg, VALUE callable);
void vkrb_config_set_metrics(vk_config *cfg, VALUE callable);
/* While muted (non-zero), events raised on this thread are dropped: used
 * around the core's free functions, which run inside Ruby's GC where no
 * Ruby code may run. Returns the previous setting. */
int vkrb_sinks_mute(int muted);
/* Re-raises an interrupt (Thread#kill, Interrupt...) that a sink received
 * while the core was delivering events; no-op when there is none. */
void vkrb_sinks_reraise_pending(void);
/* Runs fn(arg) holding the GVL, for a callback of the core: directly on a
 * thread that holds it, through vkrb_call_with_gvl() inside vkrb_blocking().
 * Returns 0, without running fn, where Ruby may not be entered (muted, or a
 * thread Ruby does not know). */
int vkrb_sinks_enter(void *(*fn)(void *), void *arg);
/* With the GVL: call(arg) under rb_protect. A StandardError is printed as
 * a warning ("vkclient: <what> raised: ...") and dropped; an interrupt is
 * kept for vkrb_sinks_reraise_pending(). Returns 0 without calling when an
 * interrupt is already pending on this thread, else 1. */
int vkrb_sinks_protect(VALUE (*call)(VALUE), VALUE arg, const char *what);

/* ---- tracer (vkrb_trace.c) ----------------------------------------------- */

/* Non-zero once a tracer was installed in any config of this process. */
extern int vkrb_tracing_in_use;
/* With the GVL: puts the caller's trace parent (VKClient.with_trace_parent
 * on this fiber, else none) on ctx, before a call runs with it. */
void vkrb_trace_set_parent(vk_context *ctx);
void vkrb_init_trace(void);

/* ---- SWIG glue (swig/ruby.swg) ------------------------------------------- */

/* The vk_config behind a SWIG-wrapped config pointer; raises TypeError. */
vk_config *vkrb_unwrap_config(VALUE obj);

#endif /* VKRB_H */
