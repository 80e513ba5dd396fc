/*
 * The protocol state of one multiplexed connection, without I/O: many
 * requests in flight at once, written back to back and matched with their
 * replies in order. It is the sans-I/O form of a connection: the driver
 * that owns the socket (a blocking caller, an event loop, a host's own
 * sockets) asks for the bytes to write, reports how many were written,
 * feeds the bytes it read, and reports a lost connection;
 * every decision about which operation a reply or a failure belongs to is
 * taken here. Nothing in it makes a system call, reads a clock or starts a
 * thread.
 *
 * Operations are the caller's pointers. A request expects one reply (an
 * encoded batch, as many as it holds). An operation completes exactly
 * once (a batch: once per reply), through the completion function:
 *   - with VK_OK and its reply (the completion owns it: vk__reply_free), or
 *   - with the failure of the connection, and `sent` telling whether the
 *     whole request had been written before it failed (a write whose reply
 *     was lost must never be re-sent; one not fully sent may be), or
 *   - with VK_ERR_CANCELLED, when it is cancelled before any of its bytes
 *     were written.
 * An operation cancelled after its bytes went out stays in line: its reply
 * is read and dropped when it comes, so the stream stays in step, and the
 * completion is not called again.
 */
#ifndef VK_MUX_H
#define VK_MUX_H

#include "proto/proto.h"

typedef struct vk_mux vk_mux;

typedef void (*vk_mux_done_fn)(void *userdata, void *op, vk_status status,
                               redisReply *reply, bool sent);

/* Told when an operation cancelled after its bytes went out leaves the
 * line (its last reply dropped, or the connection failed): from then on
 * the mux holds no pointer to it. */
typedef void (*vk_mux_drop_fn)(void *userdata, void *op);

/* max_in_flight (>= 1) bounds the requests submitted and not yet answered:
 * a submit beyond it is refused until replies come (back-pressure). */
vk_status vk__mux_new(vk_mux **out, size_t max_in_flight, vk_mux_done_fn done,
                      void *userdata);
/* Completes every operation still in line with VK_ERR_IO (as a lost
 * connection would), then frees. NULL-safe. */
void vk__mux_free(vk_mux *m);

/* Encodes the request of op at the end of the output. At the in-flight
 * bound it is refused (VK_ERR_INVALID_ARGUMENT: the driver holds back
 * operations until vk__mux_can_submit()); nothing is queued then. After a
 * failure of the connection every submit fails with that failure. */
vk_status vk__mux_submit(vk_mux *m, void *op, int argc, const char *const *argv,
                         const size_t *argvlen);
/* The same for a request that carries a password (AUTH, HELLO ... AUTH):
 * no copy of it is left in freed memory, and the output is wiped once it
 * has all been written, or when the mux fails or is freed. */
vk_status vk__mux_submit_secret(vk_mux *m, void *op, int argc, const char *const *argv,
                                const size_t *argvlen, bool secret);
/* Already encoded requests (len bytes, copied) that expect `replies`
 * replies: the completion runs once per reply, in order (the last one
 * takes op out of the line); a failure completes op once. */
vk_status vk__mux_submit_encoded(vk_mux *m, void *op, const char *bytes, size_t len,
                                 size_t replies, bool secret);
/* A subscribed connection's message, which no request asked for: the
 * function owns it. */
typedef void (*vk_mux_push_fn)(void *userdata, redisReply *message);
/* Sets the function that takes pub/sub messages ("message", "pmessage",
 * "smessage" arrays, RESP3 pushes); without one (the default) they fail
 * the connection as any reply nobody asked for does. */
void vk__mux_set_push(vk_mux *m, vk_mux_push_fn push);
/* Sets the function told of dropped operations (none by default). */
void vk__mux_set_drop(vk_mux *m, vk_mux_drop_fn drop);
/* Room for another request under the in-flight bound. */
bool vk__mux_can_submit(const vk_mux *m);
/* Requests submitted and not yet answered, cancelled ones still in line
 * included. */
size_t vk__mux_in_flight(const vk_mux *m);

/* The bytes waiting to be written (all submitted requests, coalesced);
 * *len 0 when there is nothing to write. Valid until the next call. */
const char *vk__mux_output(const vk_mux *m, size_t *len);
/* n bytes of the output were written. */
void vk__mux_wrote(vk_mux *m, size_t n);

/* Bytes read from the connection: every reply they complete goes to its
 * operation, in order. A malformed stream, a reply over the size budget or
 * a reply nobody asked for fails the connection (vk__mux_fail) and is
 * returned as VK_ERR_PROTOCOL. */
vk_status vk__mux_feed(vk_mux *m, const char *bytes, size_t len);

/* Cancels op: see above. False when op is not in line (already complete). */
bool vk__mux_cancel(vk_mux *m, void *op);

/* The connection is lost (status and the current vk_last_error() detail):
 * every operation in line completes with it, in order. The mux stays
 * failed. */
void vk__mux_fail(vk_mux *m, vk_status status);
/* VK_OK, or the failure that ended the connection. */
vk_status vk__mux_status(const vk_mux *m);

#endif /* VK_MUX_H */
