/*
 * The handshake's requests and the meaning of their replies (handshake.h).
 */
#include "engine/handshake.h"

#include <stdio.h>
#include <string.h>

static void add_arg(vk_handshake_step *s, const char *arg)
{
    s->argv[s->argc] = arg;
    s->lens[s->argc++] = strlen(arg);
}

static vk_handshake_step *next_step(vk_handshake *h, const char *name, bool secret)
{
    vk_handshake_step *s = &h->steps[h->count++];
    memset(s, 0, sizeof *s);
    s->name = name;
    s->secret = secret;
    return s;
}

void vk__handshake_auth_step(vk_handshake_step *step, const char *username,
                             const char *password)
{
    memset(step, 0, sizeof *step);
    step->name = "AUTH";
    step->secret = true;
    add_arg(step, "AUTH");
    if (username != NULL && username[0] != '\0')
        add_arg(step, username);
    add_arg(step, password);
}

void vk__handshake_plan(vk_handshake *h, const vk_config *cfg, const char *username,
                        const char *password)
{
    h->count = 0;
#if HIREDIS_MAJOR >= 1
    if (cfg->protocol == 3) {
        vk_handshake_step *s = next_step(h, "HELLO", password != NULL);
        add_arg(s, "HELLO");
        add_arg(s, "3");
        if (password != NULL) {
            add_arg(s, "AUTH");
            add_arg(s, username != NULL && username[0] != '\0' ? username : "default");
            add_arg(s, password);
        }
    } else
#endif
    if (password != NULL) {
        vk__handshake_auth_step(&h->steps[h->count++], username, password);
    }
    if (cfg->db != 0) {
        vk_handshake_step *s = next_step(h, "SELECT", false);
        snprintf(h->db, sizeof h->db, "%d", cfg->db);
        add_arg(s, "SELECT");
        add_arg(s, h->db);
    }
    add_arg(next_step(h, "PING", false), "PING");
}

vk_status vk__handshake_check(const vk_handshake_step *step, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ERROR)
        return VK_OK;
    return vk__handshake_error(step->name, reply->str, reply->len);
}

static bool starts_with(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

/* Servers quote the arguments of a command they do not know ("ERR unknown
 * command 'HELLO', with args beginning with: '3' 'AUTH' 'user' 'pass'"):
 * during the handshake that would put the password in the message. */
static size_t without_quoted_args(const char *text, size_t len)
{
    static const char marker[] = ", with args beginning with";
    for (size_t i = 0; i + sizeof marker - 1 <= len; i++)
        if (memcmp(text + i, marker, sizeof marker - 1) == 0)
            return i;
    return len;
}

static bool is_unknown_command(const char *text, size_t len)
{
    return starts_with(text, len, "ERR unknown command") ||
           starts_with(text, len, "ERR Unknown command");
}

vk_status vk__handshake_error(const char *step, const char *text, size_t len)
{
    len = without_quoted_args(text, len);
    bool authenticating = strcmp(step, "AUTH") == 0 || strcmp(step, "HELLO") == 0;
    if (starts_with(text, len, "WRONGPASS") || starts_with(text, len, "NOAUTH") ||
        starts_with(text, len, "ERR invalid password") ||
        (authenticating && starts_with(text, len, "NOPERM")) ||
        (strcmp(step, "AUTH") == 0 && !is_unknown_command(text, len)))
        return vk__fail(VK_ERR_AUTH, "%.*s", (int)len, text);
    /* A server without RESP3, or without HELLO at all, is not refusing the
     * credentials: it does not speak the protocol asked for. */
    if (starts_with(text, len, "NOPROTO") || is_unknown_command(text, len))
        return vk__fail(VK_ERR_PROTOCOL, "%s: %.*s", step, (int)len, text);
    return vk__fail(VK_ERR_SERVER, "%s: %.*s", step, (int)len, text);
}

vk_status vk__handshake_role_check(const char *address, const redisReply *r)
{
    const redisReply *role = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0] : NULL;
    if (role != NULL && role->type == REDIS_REPLY_STRING && role->len == 6 &&
        memcmp(role->str, "master", 6) == 0)
        return VK_OK;
    if (role != NULL && role->type == REDIS_REPLY_STRING)
        return vk__fail_msg(VK_ERR_SERVER, "redis sentinel: %s is not a master (role: %.*s)",
                            address, (int)role->len, role->str);
    if (r->type == REDIS_REPLY_ERROR)
        return vk__fail_msg(VK_ERR_SERVER, "redis sentinel: ROLE on %s failed: %.*s", address,
                            (int)r->len, r->str);
    return vk__fail_msg(VK_ERR_PROTOCOL, "redis sentinel: unexpected reply to ROLE from %s",
                        address);
}
