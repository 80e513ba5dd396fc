/*
 * Commands that change the state of the connection they run on. A pooled
 * connection goes from one caller to the next, so such a command would
 * leak into whatever the next caller sends (SELECT 1 makes its GET read
 * db 1; MULTI makes it answer QUEUED). The shared command path and
 * pipelines refuse them before anything is sent; the README lists them
 * with the reason for each.
 *
 * This sits on the command path: a command is found harmless by its length,
 * then compared only with the few names of its first letter (by length
 * first); nothing allocates.
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

/* By first letter, so that a command is compared with a handful of names
 * at most. */
static const stateful_command a_commands[] = {
    ENTRY("ASKING", VK_EFFECT_STATEFUL,
          "ASKING applies to the next command on the connection; the client follows ASK "
          "redirects itself"),
    ENTRY("AUTH", VK_EFFECT_STATEFUL,
          "AUTH changes the user of the connection; set the credentials with the auth config "
          "options"),
};
static const stateful_command d_commands[] = {
    ENTRY("DISCARD", VK_EFFECT_CLOSES_MULTI, "DISCARD without MULTI; " TRANSACTION_ADVICE),
};
static const stateful_command e_commands[] = {
    ENTRY("EXEC", VK_EFFECT_CLOSES_MULTI, "EXEC without MULTI; " TRANSACTION_ADVICE),
};
static const stateful_command h_commands[] = {
    ENTRY("HELLO", VK_EFFECT_STATEFUL,
          "HELLO changes the protocol and user of the connection; set them with the protocol "
          "and auth config options"),
};
static const stateful_command m_commands[] = {
    ENTRY("MULTI", VK_EFFECT_OPENS_MULTI,
          "MULTI leaves the connection in a transaction; " TRANSACTION_ADVICE),
    ENTRY("MONITOR", VK_EFFECT_STATEFUL,
          "MONITOR turns the connection into a stream of every command; " PUBSUB_ADVICE),
};
static const stateful_command p_commands[] = {
    ENTRY("PSUBSCRIBE", VK_EFFECT_STATEFUL,
          "PSUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    ENTRY("PUNSUBSCRIBE", VK_EFFECT_STATEFUL,
          "PUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
    ENTRY("PSYNC", VK_EFFECT_STATEFUL,
          "PSYNC turns the connection into a replication stream; use a dedicated connection"),
};
static const stateful_command q_commands[] = {
    ENTRY("QUIT", VK_EFFECT_STATEFUL,
          "QUIT closes the connection; close the client with its close call"),
};
static const stateful_command r_commands[] = {
    ENTRY("RESET", VK_EFFECT_STATEFUL,
          "RESET drops the database, user and protocol of the connection; set them with the "
          "db, auth and protocol config options"),
    ENTRY("READONLY", VK_EFFECT_STATEFUL,
          "READONLY changes how the connection reads in a cluster; the client chooses the "
          "nodes it reads from"),
    ENTRY("READWRITE", VK_EFFECT_STATEFUL,
          "READWRITE changes how the connection reads in a cluster; the client chooses the "
          "nodes it reads from"),
    ENTRY("REPLCONF", VK_EFFECT_STATEFUL,
          "REPLCONF configures the connection as a replica; use a dedicated connection"),
};
static const stateful_command s_commands[] = {
    ENTRY("SELECT", VK_EFFECT_STATEFUL,
          "SELECT changes the database of the connection; choose the database with the db "
          "connection option"),
    ENTRY("SUBSCRIBE", VK_EFFECT_STATEFUL,
          "SUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    ENTRY("SSUBSCRIBE", VK_EFFECT_STATEFUL,
          "SSUBSCRIBE turns the connection into a subscriber; " PUBSUB_ADVICE),
    ENTRY("SUNSUBSCRIBE", VK_EFFECT_STATEFUL,
          "SUNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
    ENTRY("SYNC", VK_EFFECT_STATEFUL,
          "SYNC turns the connection into a replication stream; use a dedicated connection"),
};
static const stateful_command u_commands[] = {
    ENTRY("UNSUBSCRIBE", VK_EFFECT_STATEFUL,
          "UNSUBSCRIBE acts on the subscriptions of the connection; " PUBSUB_ADVICE),
    ENTRY("UNWATCH", VK_EFFECT_STATEFUL,
          "UNWATCH acts on keys watched by the connection; " WATCH_ADVICE),
};
static const stateful_command w_commands[] = {
    ENTRY("WATCH", VK_EFFECT_STATEFUL,
          "WATCH leaves keys watched on the connection; " WATCH_ADVICE),
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
#define BUCKET(table) {table, COUNT(table)}

typedef struct bucket {
    const stateful_command *entries;
    size_t count;
} bucket;

/* Indexed by the first letter; CLIENT ('C') is matched on its subcommand. */
static const bucket by_letter[26] = {
    ['A' - 'A'] = BUCKET(a_commands), ['D' - 'A'] = BUCKET(d_commands),
    ['E' - 'A'] = BUCKET(e_commands), ['H' - 'A'] = BUCKET(h_commands),
    ['M' - 'A'] = BUCKET(m_commands), ['P' - 'A'] = BUCKET(p_commands),
    ['Q' - 'A'] = BUCKET(q_commands), ['R' - 'A'] = BUCKET(r_commands),
    ['S' - 'A'] = BUCKET(s_commands), ['U' - 'A'] = BUCKET(u_commands),
    ['W' - 'A'] = BUCKET(w_commands),
};

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
    if (VK_UNLIKELY(letter >= 26))
        return VK_EFFECT_NONE;
    const stateful_command *found;
    if (letter == 'c' - 'a') {
        /* CLIENT KILL, CLIENT LIST, ... leave the connection as it is;
         * the subcommands in the table do not. */
        if (len != 6 || argc < 2 || argv[1] == NULL || !equals_upper(argv[0], "CLIENT", 6))
            return VK_EFFECT_NONE;
        found = find(client_subcommands, COUNT(client_subcommands), argv[1], argvlen[1]);
    } else {
        found = find(by_letter[letter].entries, by_letter[letter].count, argv[0], len);
    }
    if (found == NULL)
        return VK_EFFECT_NONE;
    *reason = found->reason;
    return found->effect;
}
