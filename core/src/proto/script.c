/*
 * Scripts run by digest: EVALSHA first, and EVAL with the source when the
 * server answers NOSCRIPT (first use on that node, a restart, SCRIPT FLUSH,
 * a replica promoted without the script cache). EVAL also caches the
 * script, so the next call is one EVALSHA round trip again: SCRIPT LOAD
 * folded into the first call. The rule and the request's shape live here
 * once; the blocking client (api/script.c), the event-loop and hosted
 * clients (api/driven_script.c) and the lock's scripts all use them.
 */
#include "proto/proto.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool vk__script_sha1_hex(const char *source, size_t len, char out[41])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = '\0';
    if (EVP_Digest(source, len, digest, &n, EVP_sha1(), NULL) != 1 || n != 20)
        return false;
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 0x0f];
    }
    out[40] = '\0';
    return true;
}

bool vk__reply_is_noscript(const redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_ERROR && reply->str != NULL &&
           reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0;
}

vk_status vk__script_call_init(vk_script_call *call, bool by_sha, const char *sha,
                               const char *source, size_t source_len, int nkeys,
                               const char *const *keys, const size_t *keylens, int nargs,
                               const char *const *args, const size_t *arglens)
{
    memset(call, 0, sizeof *call);
    call->argc = 3 + nkeys + nargs;
    call->argv = malloc((size_t)call->argc * sizeof *call->argv);
    call->argvlen = malloc((size_t)call->argc * sizeof *call->argvlen);
    if (call->argv == NULL || call->argvlen == NULL) {
        vk__script_call_free(call);
        return vk__fail_nomem();
    }
    int len = snprintf(call->numkeys, sizeof call->numkeys, "%d", nkeys);
    call->argv[0] = "EVALSHA";
    call->argvlen[0] = 7;
    call->argv[1] = sha;
    call->argvlen[1] = 40;
    call->argv[2] = call->numkeys;
    call->argvlen[2] = (size_t)len;
    for (int i = 0; i < nkeys; i++) {
        call->argv[3 + i] = keys[i];
        call->argvlen[3 + i] = keylens[i];
    }
    for (int i = 0; i < nargs; i++) {
        call->argv[3 + nkeys + i] = args[i];
        call->argvlen[3 + nkeys + i] = arglens[i];
    }
    if (!by_sha)
        vk__script_call_by_source(call, source, source_len);
    return VK_OK;
}

void vk__script_call_by_source(vk_script_call *call, const char *source, size_t source_len)
{
    call->argv[0] = "EVAL";
    call->argvlen[0] = 4;
    call->argv[1] = source;
    call->argvlen[1] = source_len;
}

void vk__script_call_free(vk_script_call *call)
{
    free(call->argv);
    free(call->argvlen);
    call->argv = NULL;
    call->argvlen = NULL;
    call->argc = 0;
}
