/*
 * Commands that change the state of the connection they run on. A pooled
 * connection goes from one caller to the next, so such a command would
 * leak into whatever the next caller sends (SELECT 1 makes its GET read
 * db 1; MULTI makes it answer QUEUED). The shared command path and
 * pipelines refuse them before anything is sent; the README lists them
 * with the reason for each.
 *
 * This sits on the command path: a command is rejected as harmless by its
 * length and first letter before any comparison, and nothing allocates.
 */
#include "internal.h"

#include <string.h>

typedef struct stateful_command {
    const char *name;     /* upper case */
    size_t len;
    vk_conn_effect effect;
    const char *reason;   /* the detail of VK_ERR_COMMAND_NOT_ALLOWED */
} stateful_command;

#define ENTRY(name, effect, reason) {name, sizeof name - 1, effect, reason}

#define TRANSACTION_ADVICE "send MULTI ... EXEC in one pipeline (a transaction API is to come)"
#define WATCH_ADVICE "a transaction API with WATCH is to come"
#define PUBSUB_ADVICE "use a dedicated connection (a pub/sub API is to come)"

static const stateful_command commands[] = {
    ENTRY("SELECT", VK_EFFECT_STATEFUL,
          "SELECT changes the database of the connection; choose the database with the db "
          "connection option"),
    ENTRY("MULTI", VK_EFFECT_OPENS_MULTI,
          "MULTI leaves the connection in a transaction; " TRANSACTION_ADVICE),
    ENTRY("EXEC", VK_EFFECT_CLOSES_MULTI, "EXEC without MULTI; " TRANSACTION_ADVICE),
    ENTRY("DISCARD", VK_EFFECT_CLOSES_MULTI, "DISCARD without MULTI; " TRANSACTION_ADVICE),
    ENTRY("WATCH", VK_EFFECT_STATEFUL,
          "WATCH leaves keys watched on the connection; " WATCH_ADVICE),
    ENTRY("UNWATCH", VK_EFFECT_STATEFUL,
          "UNWATCH acts on keys watched by the connection; " WATCH_ADVICE),
    ENTRY("SUBSCRIBE", VK_EFFECT_STATEFUL,
          "SUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    ENTRY("PSUBSCRIBE", VK_EFFECT_STATEFUL,
          "PSUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    ENTRY("SSUBSCRIBE", VK_EFFECT_STATEFUL,
          "SSUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    ENTRY("UNSUBSCRIBE", VK_EFFECT_STATEFUL,
          "UNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
    ENTRY("PUNSUBSCRIBE", VK_EFFECT_STATEFUL,
          "PUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
    ENTRY("SUNSUBSCRIBE", VK_EFFECT_STATEFUL,
          "SUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
    ENTRY("MONITOR", VK_EFFECT_STATEFUL,
          "MONITOR turns the connection into a stream of every command; " PUBSUB_ADVICE),
    ENTRY("RESET", VK_EFFECT_STATEFUL,
          "RESET drops the database, user and protocol of the connection; set them with the "
          "db, auth and protocol config options"),
    ENTRY("QUIT", VK_EFFECT_STATEFUL,
          "QUIT closes the connection; close the client with its close call"),
    ENTRY("HELLO", VK_EFFECT_STATEFUL,
          "HELLO changes the protocol and user of the connection; set them with the protocol "
          "and auth config options"),
    ENTRY("AUTH", VK_EFFECT_STATEFUL,
          "AUTH changes the user of the connection; set the credentials with the auth config "
          "options"),
    ENTRY("READONLY", VK_EFFECT_STATEFUL,
          "READONLY changes how the connection reads in a cluster; the client chooses the "
          "nodes it reads from"),
    ENTRY("READWRITE", VK_EFFECT_STATEFUL,
          "READWRITE changes how the connection reads in a cluster; the client chooses the "
          "nodes it reads from"),
    ENTRY("ASKING", VK_EFFECT_STATEFUL,
          "ASKING applies to the next command on the connection; the client follows ASK "
          "redirects itself"),
    ENTRY("SYNC", VK_EFFECT_STATEFUL,
          "SYNC turns the connection into a replication stream; use a dedicated connection"),
    ENTRY("PSYNC", VK_EFFECT_STATEFUL,
          "PSYNC turns the connection into a replication stream; use a dedicated connection"),
    ENTRY("REPLCONF", VK_EFFECT_STATEFUL,
          "REPLCONF configures the connection as a replica; use a dedicated connection"),
};

/* CLIENT subcommands that change the connection they are sent on. */
static const stateful_command client_subcommands[] = {
    ENTRY("REPLY", VK_EFFECT_STATEFUL,
          "CLIENT REPLY stops the replies of the connection; every command needs its reply"),
    ENTRY("TRACKING", VK_EFFECT_STATEFUL,
          "CLIENT TRACKING sends invalidations on the connection; use a dedicated connection"),
    ENTRY("CACHING", VK_EFFECT_STATEFUL,
          "CLIENT CACHING changes tracking for the next command on the connection; use a "
          "dedicated connection"),
    ENTRY("SETNAME", VK_EFFECT_STATEFUL,
          "CLIENT SETNAME names the connection for every later caller; use a dedicated "
          "connection"),
    ENTRY("SETINFO", VK_EFFECT_STATEFUL,
          "CLIENT SETINFO labels the connection for every later caller; use a dedicated "
          "connection"),
    ENTRY("NO-EVICT", VK_EFFECT_STATEFUL,
          "CLIENT NO-EVICT changes the eviction of the connection for every later caller; use "
          "a dedicated connection"),
    ENTRY("NO-TOUCH", VK_EFFECT_STATEFUL,
          "CLIENT NO-TOUCH changes what every later command on the connection does to key "
          "access times; use a dedicated connection"),
    ENTRY("CAPA", VK_EFFECT_STATEFUL,
          "CLIENT CAPA changes the replies of the connection for every later caller; use a "
          "dedicated connection"),
    ENTRY("IMPORT-SOURCE", VK_EFFECT_STATEFUL,
          "CLIENT IMPORT-SOURCE marks the connection for every later caller; use a dedicated "
          "connection"),
};

#define COUNT(table) (sizeof table / sizeof table[0])

/* First letters of every name above (ASCII, upper case), one bit each. */
#define LETTER(c) (1u << ((c) - 'A'))
#define FIRST_LETTERS                                                                      \
    (LETTER('A') | LETTER('C') | LETTER('D') | LETTER('E') | LETTER('H') | LETTER('M') |   \
     LETTER('P') | LETTER('Q') | LETTER('R') | LETTER('S') | LETTER('U') | LETTER('W'))
#define SHORTEST 4    /* AUTH, EXEC, QUIT, SYNC */
#define LONGEST 12    /* PUNSUBSCRIBE, SUNSUBSCRIBE */

/* ASCII-only and locale-independent; s may hold any bytes. */
static bool equals_upper(const char *s, const char *upper, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'a' && c <= 'z')
            c = (unsigned char)(c - 'a' + 'A');
        if (c != (unsigned char)upper[i])
            return false;
    }
    return true;
}

static const stateful_command *find(const stateful_command *table, size_t count,
                                    const char *name, size_t len)
{
    for (size_t i = 0; i < count; i++) {
        if (table[i].len == len && equals_upper(name, table[i].name, len))
            return &table[i];
    }
    return NULL;
}

vk_conn_effect vk__command_effect(int argc, const char *const *argv, const size_t *argvlen,
                                  const char **reason)
{
    size_t len = argvlen[0];
    if (VK_LIKELY(len < SHORTEST || len > LONGEST))
        return VK_EFFECT_NONE;
    unsigned letter = ((unsigned char)argv[0][0] | 0x20u) - 'a';
    if (VK_LIKELY(letter >= 26 || !(FIRST_LETTERS & (1u << letter))))
        return VK_EFFECT_NONE;
    const stateful_command *found = find(commands, COUNT(commands), argv[0], len);
    /* Two-word commands: CLIENT KILL, CLIENT LIST, ... leave the connection
     * as it is; the ones in the table do not. */
    if (found == NULL && argc >= 2 && argv[1] != NULL && len == 6 &&
        equals_upper(argv[0], "CLIENT", 6))
        found = find(client_subcommands, COUNT(client_subcommands), argv[1], argvlen[1]);
    if (found == NULL)
        return VK_EFFECT_NONE;
    *reason = found->reason;
    return found->effect;
}
