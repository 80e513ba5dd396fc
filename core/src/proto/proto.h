/*
 * The protocol layer: RESP requests encoded (request.c), replies read with
 * a budget (reader.c) and handed out (reply.c). No I/O.
 */
#ifndef VK_PROTO_H
#define VK_PROTO_H

#include "support/support.h"

#include <hiredis/hiredis.h>

/* ---- reader.c: hiredis's reader with a cap on reply sizes ---------------- */

/* The most array elements one reply may announce, nested arrays included
 * (their tables take 8 bytes an element before any element arrives). */
#define VK_MAX_REPLY_ELEMENTS ((size_t)1 << 25)

typedef struct vk_reply_budget {
    size_t elements;    /* announced so far by the reply being parsed */
    bool exceeded;      /* set when a reply went over the cap */
} vk_reply_budget;

/* Frees a reply from vk__reader_get_reply (or an array of them): replies
 * of this reader must not be given to freeReplyObject(). NULL is a no-op. */
void vk__reply_free(void *reply);
/* A reader whose arrays count against a budget. NULL when out of memory. */
redisReader *vk__reader_new(void);
/* redisReaderGetReply() with budget applied to the reply being parsed; on
 * REDIS_ERR, budget->exceeded tells a refused reply from malformed input. */
int vk__reader_get_reply(redisReader *r, vk_reply_budget *budget, void **reply);

/* ---- request.c: RESP request encoding ----------------------------------- */

/* The encoded size of a command; false when it would not fit a size_t. */
bool vk__request_size(int argc, const size_t *argvlen, size_t *size);
/* Writes the command at out, which has room for vk__request_size() bytes;
 * returns the end of what was written. */
char *vk__request_encode(char *out, int argc, const char *const *argv, const size_t *argvlen);

/* An empty array reply of count elements that vk__reply_free releases
 * whole. */
redisReply *vk__array_reply_new(size_t count);

/* ---- script.c: EVALSHA with EVAL when the server lacks the script ------- */

/* A script's SHA-1 as the server names it: 40 lower-case hex digits and a
 * NUL. False when the digest cannot be computed (an OpenSSL without SHA-1). */
bool vk__script_sha1_hex(const char *source, size_t len, char out[41]);
/* Whether a reply says the server does not know the script (NOSCRIPT): the
 * one case in which EVALSHA is sent again as EVAL, which also caches it. */
bool vk__reply_is_noscript(const redisReply *reply);

/* The arguments of EVALSHA <sha> or EVAL <source>, then numkeys, keys and
 * args; numkeys is written into the caller's buffer. */
typedef struct vk_script_call {
    int argc;
    const char **argv;
    size_t *argvlen;
    char numkeys[24];
} vk_script_call;
/* Fills call (arrays allocated, freed with vk__script_call_free) for
 * EVALSHA when by_sha, else EVAL. Keys and args are borrowed. */
vk_status vk__script_call_init(vk_script_call *call, bool by_sha, const char *sha,
                               const char *source, size_t source_len, int nkeys,
                               const char *const *keys, const size_t *keylens, int nargs,
                               const char *const *args, const size_t *arglens);
/* Switches an EVALSHA call to EVAL of source (the same keys and args). */
void vk__script_call_by_source(vk_script_call *call, const char *source, size_t source_len);
void vk__script_call_free(vk_script_call *call);

#endif /* VK_PROTO_H */
