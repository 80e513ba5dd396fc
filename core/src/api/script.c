/*
 * Scripts on the blocking client: the script object, and a run that is
 * EVALSHA, then EVAL on NOSCRIPT (the rule is proto/script.c's). Each of
 * the two is an ordinary command of vk_client_command: routed by its keys,
 * retried only when it cannot have run (EVALSHA and EVAL are writes).
 */
#include "api/script.h"

#include <stdlib.h>
#include <string.h>

VK_API vk_status vk_script_new(vk_script **out, const char *source, size_t len)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (source == NULL && len > 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "script source is NULL");
    vk_script *script = malloc(sizeof *script + len + 1);
    if (script == NULL)
        return vk__fail_nomem();
    atomic_init(&script->refs, 1);
    script->len = len;
    if (len > 0)
        memcpy(script->source, source, len);
    script->source[len] = '\0';
    if (!vk__script_sha1_hex(script->source, len, script->sha)) {
        free(script);
        return vk__fail(VK_ERR_PROTOCOL, "SHA-1 is not available: a script cannot be named");
    }
    *out = script;
    return VK_OK;
}

void vk__script_ref(vk_script *script)
{
    atomic_fetch_add_explicit(&script->refs, 1, memory_order_relaxed);
}

VK_API void vk_script_free(vk_script *script)
{
    if (script != NULL && atomic_fetch_sub_explicit(&script->refs, 1, memory_order_acq_rel) == 1)
        free(script);
}

VK_API const char *vk_script_sha1(const vk_script *script)
{
    return script != NULL ? script->sha : NULL;
}

VK_API const char *vk_script_source(const vk_script *script, size_t *len)
{
    if (len != NULL)
        *len = script != NULL ? script->len : 0;
    return script != NULL ? script->source : NULL;
}

/* A count and its arrays: count >= 0; items and lengths present when count
 * > 0, and no NULL item with a length. */
static vk_status check_list(const char *what, int count, const char *const *items,
                            const size_t *lens)
{
    if (count < 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "the number of %s is negative", what);
    if (count > 0 && (items == NULL || lens == NULL))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "%s and their lengths are required", what);
    for (int i = 0; i < count; i++) {
        if (items[i] == NULL && lens[i] != 0)
            return vk__fail(VK_ERR_INVALID_ARGUMENT, "%s %d is NULL", what, i);
    }
    return VK_OK;
}

vk_status vk__script_prepare(vk_script_call *call, const vk_script *script, int nkeys,
                             const char *const *keys, const size_t *keylens, int nargs,
                             const char *const *args, const size_t *arglens)
{
    if (script == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "script is NULL");
    vk_status st = check_list("keys", nkeys, keys, keylens);
    if (st == VK_OK)
        st = check_list("args", nargs, args, arglens);
    if (st == VK_OK && nkeys > INT32_MAX - 3 - nargs)
        st = vk__fail(VK_ERR_INVALID_ARGUMENT, "too many keys and args");
    if (st != VK_OK)
        return st;
    return vk__script_call_init(call, true, script->sha, script->source, script->len, nkeys,
                                keys, keylens, nargs, args, arglens);
}

VK_API vk_status vk_script_run(vk_reply **out, vk_client *client, vk_context *ctx,
                               const vk_script *script, int nkeys,
                               const char *const *keys, const size_t *keylens, int nargs,
                               const char *const *args, const size_t *arglens)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL) {
        vk__misuse("vk_script_run", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    vk_script_call call;
    vk_status st = vk__script_prepare(&call, script, nkeys, keys, keylens, nargs, args,
                                      arglens);
    if (st != VK_OK)
        return st;
    st = vk_client_command(out, client, ctx, call.argc, call.argv, call.argvlen);
    if (st == VK_OK && vk__reply_is_noscript((const redisReply *)*out)) {
        vk_reply_free(*out);
        *out = NULL;
        vk__script_call_by_source(&call, script->source, script->len);
        st = vk_client_command(out, client, ctx, call.argc, call.argv, call.argvlen);
    }
    vk__script_call_free(&call);
    return st;
}
