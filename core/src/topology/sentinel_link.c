/*
 * One connection to one sentinel: the transport moves the bytes, requests
 * are encoded by request.c and replies parsed by hiredis's reader, with
 * the same reply loop as a data connection (vk__transport_read_reply). A
 * subscriber spends most of its life waiting for a message that may never
 * come, so waiting is separate from reading here: giving up a wait leaves
 * the connection intact.
 */
#include "topology/sentinel.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

static vk_status send_formatted(vk_sentinel_link *link, int argc, const char *const *argv,
                                const size_t *lens, bool secret, vk_context *ctx)
{
    size_t len;
    if (!vk__request_size(argc, lens, &len))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    char *cmd = malloc(len);
    if (cmd == NULL)
        return vk__fail_nomem();
    vk__request_encode(cmd, argc, argv, lens);
    vk_status st = vk__transport_write_all(&link->t, cmd, len, ctx);
    if (secret)
        vk__wipe(cmd, len);
    free(cmd);
    return st;
}

vk_status vk__sentinel_link_send(vk_sentinel_link *link, int argc, const char *const *argv,
                                 vk_context *ctx)
{
    size_t lens[8];
    if (argc < 1 || argc > 8)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a sentinel command takes 1 to 8 arguments");
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return send_formatted(link, argc, argv, lens, false, ctx);
}

vk_status vk__sentinel_link_read(vk_sentinel_link *link, redisReply **out, vk_context *ctx)
{
    *out = NULL;
    return vk__transport_read_reply(&link->t, link->reader, &link->budget, out, ctx);
}

vk_status vk__sentinel_link_command(vk_sentinel_link *link, redisReply **out, int argc,
                                    const char *const *argv, vk_context *ctx)
{
    *out = NULL;
    vk_status st = vk__sentinel_link_send(link, argc, argv, ctx);
    return st == VK_OK ? vk__sentinel_link_read(link, out, ctx) : st;
}

vk_status vk__sentinel_link_wait(vk_sentinel_link *link, int64_t deadline_us, vk_context *ctx)
{
    /* Bytes already parsed or decrypted are invisible to poll(). */
    if (link->reader->pos < link->reader->len ||
        (link->t.ssl != NULL && SSL_pending(link->t.ssl) > 0))
        return VK_OK;
    vk_status st = vk__ctx_wait_fd(ctx, link->t.fd, POLLIN, deadline_us);
    if (st == VK_ERR_TIMEOUT && vk__ctx_deadline_us(ctx) > deadline_us)
        return VK_ERR_TIMEOUT;   /* our own deadline: nothing arrived, no failure */
    return st;
}

/* AUTH [user] pass with the sentinels' own credentials. */
static vk_status authenticate(vk_sentinel_link *link, const vk_config *cfg, vk_context *ctx)
{
    const char *argv[3] = {"AUTH"};
    size_t lens[3] = {4};
    int argc = 1;
    if (cfg->sentinel_username != NULL && cfg->sentinel_username[0] != '\0') {
        argv[argc] = cfg->sentinel_username;
        lens[argc++] = strlen(cfg->sentinel_username);
    }
    argv[argc] = cfg->sentinel_password;
    lens[argc++] = strlen(cfg->sentinel_password);
    vk_status st = send_formatted(link, argc, argv, lens, true, ctx);
    redisReply *r = NULL;
    if (st == VK_OK)
        st = vk__sentinel_link_read(link, &r, ctx);
    if (st == VK_OK && r->type == REDIS_REPLY_ERROR)
        st = vk__fail(VK_ERR_AUTH, "sentinel %s: %.*s", link->t.peer, (int)r->len, r->str);
    vk__reply_free(r);
    return st;
}

vk_status vk__sentinel_link_open(vk_sentinel_link *link, const vk_endpoint *ep,
                                 const vk_config *cfg, vk_tls *tls, vk_context *ctx)
{
    memset(link, 0, sizeof *link);
    link->t.fd = -1;
    link->reader = vk__reader_new();
    if (link->reader == NULL)
        return vk__fail_nomem();
    vk_status st = vk__transport_open(&link->t, ep, tls, cfg->tls_server_name, cfg, ctx);
    if (st == VK_OK && cfg->sentinel_password != NULL)
        st = authenticate(link, cfg, ctx);
    if (st != VK_OK) {
        char *detail = vk__error_dup();
        vk__sentinel_link_close(link, true);
        vk__fail_restore(st, detail);
        free(detail);
    }
    return st;
}

void vk__sentinel_link_close(vk_sentinel_link *link, bool graceful)
{
    vk__transport_close(&link->t, graceful);
    if (link->reader != NULL)
        redisReaderFree(link->reader);
    link->reader = NULL;
}
