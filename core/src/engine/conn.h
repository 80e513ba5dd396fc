/*
 * One connection to one node: a transport (TCP/Unix, optionally TLS) plus
 * the request encoder and hiredis's reader. The protocol state (output buffer,
 * reader) is kept apart from socket I/O so another I/O driver can move the
 * bytes later.
 */
#ifndef VK_CONN_H
#define VK_CONN_H

#include "proto/command.h"
#include "engine/handshake.h"
#include "net/transport.h"

#include <hiredis/hiredis.h>

/* ---- conn.c ------------------------------------------------------------- */

typedef struct vk_conn vk_conn;

typedef struct vk_conn_params {
    const vk_config *cfg;   /* prepared: timeouts, db, protocol */
    vk_tls *tls;            /* NULL: plain */
    const char *server_name;/* TLS name to verify; NULL: the endpoint's host */
    const char *username;   /* NULL: the default user */
    const char *password;   /* NULL: no AUTH */
} vk_conn_params;

/* Connects within the dial timeout (and ctx), then the handshake of
 * handshake.h (HELLO/AUTH, SELECT, PING in one round trip). Auth refusals
 * are VK_ERR_AUTH with the server's message. */
vk_status vk__conn_open(vk_conn **out, const vk_endpoint *ep, const vk_conn_params *p,
                        vk_context *ctx);
/* Formats a command into the output buffer (no I/O). */
vk_status vk__conn_append(vk_conn *c, int argc, const char *const *argv,
                          const size_t *argvlen);
/* Writes the whole output buffer within the write timeout (and ctx). On
 * failure nothing may be assumed about what the server received, except
 * that an incomplete request is never executed. Marks the conn broken. */
vk_status vk__conn_flush(vk_conn *c, vk_context *ctx);
/* Writes requests formatted by the caller (RESP, one or more commands)
 * directly, as vk__conn_flush() does with the output buffer, which must be
 * empty. */
vk_status vk__conn_write(vk_conn *c, const char *requests, size_t len, vk_context *ctx);
/* Reads one reply within the read timeout (and ctx). I/O and protocol
 * failures mark the conn broken. */
vk_status vk__conn_read(vk_conn *c, redisReply **out, vk_context *ctx);
/* append + flush + read. *sent is set true once the request was fully
 * written (for the retry policy). */
vk_status vk__conn_command(vk_conn *c, redisReply **out, int argc, const char *const *argv,
                           const size_t *argvlen, vk_context *ctx, bool *sent);
/* Reads the reply of cmd, sent before: as vk__conn_read, but a command
 * that waits on the server (BLPOP, XREAD BLOCK, ...; command.c) gets its
 * own timeout added to the read timeout for its reply, or no read timeout
 * for a timeout 0. */
vk_status vk__conn_read_reply_of(vk_conn *c, redisReply **out, const vk_command *cmd,
                                 vk_context *ctx);
/* A caller's command: as vk__conn_command, with its reply read by
 * vk__conn_read_reply_of. */
vk_status vk__conn_user_command(vk_conn *c, redisReply **out, const vk_command *cmd,
                                vk_context *ctx, bool *sent);
/* "host:port" of the server, for messages. */
const char *vk__conn_peer(const vk_conn *c);
/* Re-authenticates an idle connection (AUTH [user] pass). */
vk_status vk__conn_auth(vk_conn *c, const char *username, const char *password,
                        vk_context *ctx);
bool vk__conn_is_broken(const vk_conn *c);
/* For a connection that sat idle in a pool: false when the peer closed it
 * or sent something unexpected (checked without blocking). */
bool vk__conn_still_usable(vk_conn *c);
int64_t vk__conn_last_used_ms(const vk_conn *c);
/* A tag the owner may set, e.g. the credential generation it authed with. */
uint64_t vk__conn_tag(const vk_conn *c);
void vk__conn_set_tag(vk_conn *c, uint64_t tag);
/* Closes gracefully. NULL-safe. */
void vk__conn_close(vk_conn *c);
/* After fork() in the child: closes the fd and frees memory without any
 * TLS shutdown or bytes on the wire (the parent still owns the session). */
void vk__conn_abandon(vk_conn *c);

#endif /* VK_CONN_H */
