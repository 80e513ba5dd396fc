/*
 * The handshake of a new connection, without I/O: which requests it sends
 * (HELLO 3 [AUTH user pass] for protocol 3, else AUTH [user] pass when a
 * password is set; SELECT db when db != 0; PING), and what each reply
 * means. Every driver sends the steps in one write and checks the replies
 * in order, so a connection is ready after one round trip however many
 * steps there are; the first refusal decides the outcome.
 */
#ifndef VK_HANDSHAKE_H
#define VK_HANDSHAKE_H

#include "config/config.h"
#include "proto/proto.h"

#include <hiredis/hiredis.h>

/* HELLO or AUTH, SELECT, PING, and ROLE for a client that follows a
 * master (vk__handshake_role_check). */
#define VK_HANDSHAKE_MAX_STEPS 4

typedef struct vk_handshake_step {
    const char *name;       /* "HELLO", "AUTH", "SELECT" or "PING", for messages */
    int argc;
    const char *argv[5];
    size_t lens[5];
    bool secret;            /* carries a password: its bytes are wiped once written */
} vk_handshake_step;

/* The steps borrow the username and password given to the plan, and the
 * plan's own text (SELECT's number): keep it in place while it is used. */
typedef struct vk_handshake {
    int count;
    vk_handshake_step steps[VK_HANDSHAKE_MAX_STEPS];
    char db[16];
} vk_handshake;

/* The steps for a connection of a prepared config, with these credentials
 * (password NULL: no authentication). */
void vk__handshake_plan(vk_handshake *h, const vk_config *cfg, const char *username,
                        const char *password);
/* The one step that authenticates an open connection again (a new token):
 * AUTH [user] pass. */
void vk__handshake_auth_step(vk_handshake_step *step, const char *username,
                             const char *password);
/* VK_OK when the reply accepts the step, else vk__handshake_error(). */
vk_status vk__handshake_check(const vk_handshake_step *step, const redisReply *reply);
/* The status for an error reply to a handshake step ("AUTH", "HELLO",
 * "SELECT", "PING"): a refusal of the credentials (WRONGPASS, NOAUTH,
 * "invalid password", NOPERM to AUTH or HELLO, anything else AUTH answers)
 * is VK_ERR_AUTH with the server's text; NOPROTO and an unknown command
 * are VK_ERR_PROTOCOL, anything else VK_ERR_SERVER, both "<step>: <text>".
 * Arguments the server quotes back are cut off (they hold the password). */
vk_status vk__handshake_error(const char *step, const char *text, size_t len);

/* Sentinel mode: a sentinel's word is not enough (it may be stale or
 * partitioned), the node itself must say it is a master, so that the
 * client never writes to a replica. The meaning of the reply to ROLE from
 * address: VK_OK for a master, else VK_ERR_SERVER "redis sentinel:
 * <address> is not a master (role: <role>)" or "redis sentinel: ROLE on
 * <address> failed: <error>", or VK_ERR_PROTOCOL "redis sentinel:
 * unexpected reply to ROLE from <address>". */
vk_status vk__handshake_role_check(const char *address, const redisReply *reply);

#endif /* VK_HANDSHAKE_H */
