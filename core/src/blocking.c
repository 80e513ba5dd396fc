/*
 * Commands that wait on the server: BLPOP and its kin, XREAD / XREADGROUP
 * with BLOCK, WAIT, WAITAOF. Their reply may rightly take as long as the
 * timeout they carry, so a call's read timeout stretches to that timeout
 * plus the configured read timeout (go-redis does the same), and a timeout
 * of 0 waits without limit, as the server does. Bindings ask
 * vk_command_is_blocking() to give such calls an interruptible context.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum timeout_unit { SECONDS, MILLISECONDS } timeout_unit;

/* Where a command keeps its timeout: argv[at] when at > 0, counted from
 * the end when at < 0, after the BLOCK option when at == 0. */
typedef struct blocking_command {
    const char *name;
    int at;
    timeout_unit unit;
} blocking_command;

static const blocking_command blocking_commands[] = {
    {"BLPOP", -1, SECONDS},    {"BRPOP", -1, SECONDS},      {"BZPOPMIN", -1, SECONDS},
    {"BZPOPMAX", -1, SECONDS}, {"BRPOPLPUSH", -1, SECONDS}, {"BLMOVE", -1, SECONDS},
    {"BLMPOP", 1, SECONDS},    {"BZMPOP", 1, SECONDS},      {"WAIT", 2, MILLISECONDS},
    {"WAITAOF", 3, MILLISECONDS}, {"XREAD", 0, MILLISECONDS}, {"XREADGROUP", 0, MILLISECONDS},
};

static bool is_word(const char *s, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(s, word, len) == 0;
}

/* The argument as a number of ms; false when it is not a number >= 0. */
static bool parse_timeout(const char *s, size_t len, timeout_unit unit, int64_t *ms)
{
    char text[32];
    if (s == NULL || len == 0 || len >= sizeof text)
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    char *end;
    double value = strtod(text, &end);
    if (*end != '\0' || !(value >= 0) || value > 1e12)
        return false;
    *ms = (int64_t)(unit == SECONDS ? value * 1000.0 : value);
    if (*ms == 0 && value > 0)
        *ms = 1;   /* BLPOP k 0.0001 still has a limit */
    return true;
}

/* XREAD [COUNT n] [BLOCK ms] STREAMS ...: the BLOCK option, if any, comes
 * before STREAMS. */
static int block_option_index(int argc, const char *const *argv, const size_t *argvlen)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (is_word(argv[i], argvlen[i], "STREAMS"))
            return -1;
        if (is_word(argv[i], argvlen[i], "BLOCK"))
            return i + 1;
    }
    return -1;
}

bool vk__blocking_timeout_ms(int argc, const char *const *argv, const size_t *argvlen,
                             int64_t *timeout_ms)
{
    /* The hot path: one comparison for almost every command. */
    if (argc < 2 || argvlen[0] < 4)
        return false;
    char first = argv[0][0];
    if (first != 'B' && first != 'b' && first != 'W' && first != 'w' && first != 'X' &&
        first != 'x')
        return false;
    for (size_t i = 0; i < sizeof blocking_commands / sizeof blocking_commands[0]; i++) {
        const blocking_command *b = &blocking_commands[i];
        if (!is_word(argv[0], argvlen[0], b->name))
            continue;
        int at = b->at > 0 ? b->at : b->at < 0 ? argc + b->at
                                               : block_option_index(argc, argv, argvlen);
        if (at < 1 || at >= argc)
            return false;
        return parse_timeout(argv[at], argvlen[at], b->unit, timeout_ms);
    }
    return false;
}

VK_API int vk_command_is_blocking(int argc, const char *const *argv, const size_t *argvlen)
{
    int64_t ms;
    return argv != NULL && argvlen != NULL && argv[0] != NULL &&
           vk__blocking_timeout_ms(argc, argv, argvlen, &ms);
}
