/*
 * Event loops for the event-loop client's tests (test_async*): every
 * scenario runs once on libuv and once on libevent, each time on a fresh
 * loop driven through the adapter the library ships for it
 * (<vkclient/libuv.h>, <vkclient/libevent.h>). The loop runs on the
 * test's own thread until a condition holds or a bound passes, so a test
 * reads as "submit, run until done, check".
 *
 * The completion recorder (vkt_op) also checks what every completion must
 * satisfy: it runs once, on the loop's thread, and never from inside the
 * call that queued the operation.
 */
#ifndef VKTEST_ASYNC_LOOPS_H
#define VKTEST_ASYNC_LOOPS_H

#include "vkclient_async.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum vkt_loop_kind { VKT_LOOP_LIBUV = 0, VKT_LOOP_LIBEVENT = 1 } vkt_loop_kind;
#define VKT_LOOP_KINDS 2

typedef struct vkt_loop vkt_loop;

/* A fresh loop of that kind (a failed check and NULL when it cannot). It
 * always has a short repeating tick of its own, so one turn never blocks
 * for long. */
vkt_loop *vkt_loop_new(vkt_loop_kind kind);
/* "libuv" or "libevent". */
const char *vkt_loop_name(const vkt_loop *loop);
/* The library's adapter for this loop. */
const vk_loop_adapter *vkt_loop_adapter(const vkt_loop *loop);
/* Turns the loop until done(arg) is true or timeout_ms (scaled by
 * vkt_scaled_ms) have passed; returns done(arg). */
bool vkt_loop_run_until(vkt_loop *loop, bool (*done)(void *arg), void *arg,
                        long long timeout_ms);
/* Turns the loop for about ms (not scaled: a pause, not a bound). */
void vkt_loop_run_for(vkt_loop *loop, long long ms);
/* Closes the loop once every client on it was freed. A check fails when an
 * adapter left anything registered on it (a handle, an event). */
void vkt_loop_free(vkt_loop *loop);

/* Runs fn once per loop kind, each on a fresh loop, under the test name
 * "<name>[libuv]" / "<name>[libevent]". */
void vkt_run_on_loops(const char *name, void (*fn)(vkt_loop *loop));
#define RUN_ON_LOOPS(fn) vkt_run_on_loops(#fn, fn)

/* ---- completions ------------------------------------------------------ */

/* What one operation's completion delivered. Zero-initialise it. */
typedef struct vkt_op {
    int calls;            /* completions seen: exactly 1 once complete */
    vk_status status;
    vk_reply *reply;      /* kept here (owned): release with vkt_op_clear */
    char error[512];      /* vk_last_error() during a failed completion */
    long seq;             /* the completion's number among all (from 1) */
} vkt_op;

/* A vk_async_fn for a vkt_op *userdata. Fails a check when it runs twice
 * for one operation, off the loop's thread, or inside vkt_submit*(). */
void vkt_op_fn(void *userdata, vk_status status, vk_reply *reply);
/* For vkt_loop_run_until: the vkt_op *arg has completed. */
bool vkt_op_done(void *op);
/* Frees the kept reply and zeroes the record. */
void vkt_op_clear(vkt_op *op);
/* Completions recorded so far by vkt_op_fn and vkt_note_completion. */
long vkt_completions(void);
/* For completion functions of a test's own: takes the next completion
 * number and fails a check when called inside vkt_submit*() or off the
 * loop's thread. */
long vkt_note_completion(void);

/* vk_async_command with NUL-terminated words (at most 16), marked as a
 * submission: a completion run from inside it fails a check. */
vk_status vkt_submit(vk_async *c, vkt_op *op, uint64_t *id, int argc,
                     const char *const *argv);
/* The same with lengths and any completion function. */
vk_status vkt_submitv(vk_async *c, vk_async_fn fn, void *userdata, uint64_t *id, int argc,
                      const char *const *argv, const size_t *argvlen);
/* vk_async_pipeline_exec, marked as a submission. */
vk_status vkt_pipeline_submit(vk_pipeline *p, vk_async_fn fn, void *userdata, uint64_t *id);
/* Submits words and turns the loop until the completion ran (10 s at
 * most); false (with a failed check) when either did not happen. */
bool vkt_call(vkt_loop *loop, vk_async *c, vkt_op *op, int argc, const char *const *argv);

/* ---- replies and clients ---------------------------------------------- */

/* The reply's bytes (string, status, error) are exactly text. */
bool vkt_reply_is(const vk_reply *r, const char *text);
/* The reply is an error reply starting with prefix. */
bool vkt_reply_error_starts(const vk_reply *r, const char *prefix);
/* A standalone config for address. */
vk_config *vkt_async_config(const char *address);
/* vk_async_new on the loop, with a check that it succeeds. */
vk_async *vkt_async_new(vkt_loop *loop, const vk_config *cfg);
/* Turns the loop until the client has nothing pending (10 s at most). */
bool vkt_async_drain(vkt_loop *loop, vk_async *c);

/* ---- a blocking client beside the one under test ---------------------- */

/* vk_client_command with NUL-terminated words (at most 16). */
vk_status vkt_blocking_run(vk_client *c, vk_reply **out, int argc, const char *const *argv);
/* Runs words on c, with a check that it succeeds. */
void vkt_blocking_do(vk_client *c, int argc, const char *const *argv);
/* The reply to words on c as text into buf: "(nil)", the integer, the
 * bytes, or "failed: <error>". */
const char *vkt_blocking_text(vk_client *c, char *buf, size_t cap, int argc,
                              const char *const *argv);
/* The reply to words on c as an integer (a nil is 0, a numeric string its
 * value); -1 when the command failed or the reply is anything else. */
long long vkt_blocking_integer(vk_client *c, int argc, const char *const *argv);

#endif
