/*
 * A caller's command, classified once (command.c) when it enters the core
 * and carried with it down to the connection: every layer reads what it
 * needs here (the refusal, the reply wait of a blocking command, whether it
 * may be re-sent, its cluster slot) instead of scanning argv again.
 */
#ifndef VK_COMMAND_H
#define VK_COMMAND_H

#include "support/support.h"

/* What a command does to the connection it runs on. A pooled connection
 * goes from one caller to the next, so anything but VK_EFFECT_NONE would
 * leak into the next caller's commands: refused, except a transaction
 * kept whole in one pipeline. */
typedef enum vk_conn_effect {
    VK_EFFECT_NONE = 0,        /* leaves the connection as it found it */
    VK_EFFECT_OPENS_MULTI,     /* MULTI */
    VK_EFFECT_CLOSES_MULTI,    /* EXEC, DISCARD */
    VK_EFFECT_STATEFUL         /* SELECT, SUBSCRIBE, CLIENT REPLY, ...: always refused */
} vk_conn_effect;

/* The slot of a command in cluster mode: 0..16383, or one of these. */
enum {
    VK_SLOT_NONE = -1,      /* keyless: any node can run the command */
    VK_SLOT_UNKNOWN = -2,   /* the key positions depend on the server: ask it */
    VK_SLOT_CROSS = -3,     /* keys in more than one slot */
    VK_SLOT_PENDING = -4    /* not computed yet (only the cluster router needs it) */
};

enum {
    /* Running it twice is harmless: the retry policy may re-send it after
     * its reply was lost. Anything else is treated as a write. */
    VK_COMMAND_READONLY = 1u << 0,
    /* It waits on the server (BLPOP, XREAD BLOCK, WAIT, ...) for block_ms. */
    VK_COMMAND_BLOCKING = 1u << 1
};

typedef struct vk_command {
    int argc;                   /* the caller's arguments, borrowed */
    const char *const *argv;
    const size_t *argvlen;
    unsigned flags;             /* VK_COMMAND_* */
    int64_t block_ms;           /* with VK_COMMAND_BLOCKING: its own timeout (0: no limit) */
    vk_conn_effect effect;
    const char *refusal;        /* unless VK_EFFECT_NONE: why it is refused (static text) */
    int slot;                   /* VK_SLOT_PENDING until the cluster router fills it */
} vk_command;

/* Classifies a caller's command (argc >= 1, argvlen[i] bytes at argv[i],
 * argv[i] NULL only when empty) in one lookup of its name: effect and
 * refusal, blocking timeout, read-only. Costs a first-letter and length
 * test for most commands; never allocates, reads no clock. */
void vk__command_classify(vk_command *cmd, int argc, const char *const *argv,
                          const size_t *argvlen);
/* A command the core sends itself (COMMAND GETKEYS, CLUSTER SHARDS, ...):
 * not classified (it waits on nothing, is never re-sent once sent, is
 * refused nothing) and runs on any node (VK_SLOT_NONE). */
void vk__command_internal(vk_command *cmd, int argc, const char *const *argv,
                          const size_t *argvlen);

/* A caller's arguments: argc >= 1, argv and argvlen given, no NULL
 * argument with a length, an encoded size that fits
 * (VK_ERR_INVALID_ARGUMENT otherwise). */
vk_status vk__command_check(int argc, const char *const *argv, const size_t *argvlen);
/* A caller's command for a shared connection (the event-loop client and
 * bytes mode): argc >= 1, argv and argvlen given, no NULL argument with a
 * length, an encoded size that fits (VK_ERR_INVALID_ARGUMENT), then
 * classified, and refused when it would change the connection
 * (VK_ERR_COMMAND_NOT_ALLOWED with its refusal). */
vk_status vk__command_accept(vk_command *cmd, int argc, const char *const *argv,
                             const size_t *argvlen);
/* A copy of cmd whose arguments are in *mem (one allocation, to free);
 * the descriptor is kept. */
vk_status vk__command_copy(const vk_command *cmd, vk_command *out, void **mem);

/* The longest command label, terminator included; longer names are cut. */
#define VK_COMMAND_LABEL_MAX 64
/* The command's name in lower case, for the latency metric's label. */
void vk__command_label(const vk_command *cmd, char label[VK_COMMAND_LABEL_MAX]);
/* The same label from a command's name (its first argument). */
void vk__command_name_label(const char *name, size_t len, char label[VK_COMMAND_LABEL_MAX]);

#endif /* VK_COMMAND_H */
