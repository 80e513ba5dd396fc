/*
 * One connection: requests are encoded into the output buffer (request.c),
 * hiredis's reader parses replies, the transport moves the bytes. Any I/O or
 * protocol failure marks the connection broken: a reply may still be in
 * flight, so the stream can never be trusted again.
 */
#include "engine/conn.h"
#include "net/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VK_READ_CHUNK 16384

struct vk_conn {
    vk_transport t;
    redisReader *reader;
    vk_reply_budget budget;
    char *obuf;         /* formatted requests not yet written */
    size_t olen;
    size_t ocap;
    bool obuf_secret;   /* obuf holds a password: wiped, never realloc()ed */
    bool broken;
    uint64_t tag;
    int64_t last_used_ms;
};

static vk_status broken(vk_conn *c, vk_status st)
{
    c->broken = true;
    return st;
}

/* ---- output ------------------------------------------------------------- */

/* Makes room for more bytes in the output buffer, which connections keep
 * between requests. While it holds a password (handshake, re-auth) it is
 * never given to realloc(): the bigger copy is made here and the old one
 * wiped first, so no copy of the secret is left behind in freed memory. */
static vk_status reserve_output(vk_conn *c, size_t more)
{
    if (VK_LIKELY(c->ocap - c->olen >= more))
        return VK_OK;
    if (more > SIZE_MAX / 2 - c->olen)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    size_t need = c->olen + more;
    size_t cap = c->ocap * 2 > need ? c->ocap * 2 : need;
    if (cap < 256)
        cap = 256;
    char *grown;
    if (VK_UNLIKELY(c->obuf_secret)) {
        grown = malloc(cap);
        if (grown != NULL) {
            memcpy(grown, c->obuf, c->olen);
            vk__wipe(c->obuf, c->olen);
            free(c->obuf);
        }
    } else {
        grown = realloc(c->obuf, cap);
    }
    if (grown == NULL)
        return vk__fail_nomem();
    c->obuf = grown;
    c->ocap = cap;
    return VK_OK;
}

/* secret: the request carries a password; the output buffer is wiped once
 * it was written (or when the connection is freed). The request is encoded
 * straight into the buffer, sized first (request.c). */
static vk_status append_request(vk_conn *c, int argc, const char *const *argv,
                                const size_t *argvlen, bool secret)
{
    size_t n;
    if (VK_UNLIKELY(!vk__request_size(argc, argvlen, &n)))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    vk_status st = reserve_output(c, n);
    if (VK_UNLIKELY(st != VK_OK))
        return st;
    vk__request_encode(c->obuf + c->olen, argc, argv, argvlen);
    c->olen += n;
    c->obuf_secret |= secret;
    return VK_OK;
}

vk_status vk__conn_append(vk_conn *c, int argc, const char *const *argv,
                          const size_t *argvlen)
{
    return append_request(c, argc, argv, argvlen, false);
}

vk_status vk__conn_flush(vk_conn *c, vk_context *ctx)
{
    if (VK_UNLIKELY(c->broken))
        return vk__fail(VK_ERR_IO, "connection to %s is broken", c->t.peer);
    vk_status st = vk__transport_write_all(&c->t, c->obuf, c->olen, ctx);
    if (VK_UNLIKELY(c->obuf_secret)) {
        vk__wipe(c->obuf, c->olen);
        c->obuf_secret = false;
    }
    c->olen = 0;
    /* Do not keep a huge request's buffer around for the next small one. */
    if (c->ocap > 1024 * 1024) {
        free(c->obuf);
        c->obuf = NULL;
        c->ocap = 0;
    }
    if (VK_UNLIKELY(st != VK_OK))
        return broken(c, st);
    return VK_OK;
}

vk_status vk__conn_write(vk_conn *c, const char *requests, size_t len, vk_context *ctx)
{
    if (VK_UNLIKELY(c->broken))
        return vk__fail(VK_ERR_IO, "connection to %s is broken", c->t.peer);
    vk_status st = vk__transport_write_all(&c->t, requests, len, ctx);
    if (VK_UNLIKELY(st != VK_OK))
        return broken(c, st);
    return VK_OK;
}

/* ---- input -------------------------------------------------------------- */

vk_status vk__transport_read_reply(vk_transport *t, redisReader *reader,
                                   vk_reply_budget *budget, redisReply **out,
                                   vk_context *ctx)
{
    for (;;) {
        void *reply = NULL;
        if (VK_UNLIKELY(vk__reader_get_reply(reader, budget, &reply) != REDIS_OK)) {
            if (budget->exceeded)
                return vk__fail(VK_ERR_PROTOCOL,
                                "from %s: reply with more than %zu array elements refused",
                                t->peer, (size_t)VK_MAX_REPLY_ELEMENTS);
            return vk__fail(VK_ERR_PROTOCOL, "from %s: %s", t->peer, reader->errstr);
        }
        if (reply != NULL) {
            *out = reply;
            return VK_OK;
        }
        char buf[VK_READ_CHUNK];
        size_t got = 0;
        vk_status st = vk__transport_read_some(t, buf, sizeof buf, &got, ctx);
        if (VK_UNLIKELY(st != VK_OK))
            return st;
        if (VK_UNLIKELY(redisReaderFeed(reader, buf, got) != REDIS_OK))
            return vk__fail(VK_ERR_PROTOCOL, "from %s: %s", t->peer, reader->errstr);
    }
}

vk_status vk__conn_read(vk_conn *c, redisReply **out, vk_context *ctx)
{
    *out = NULL;
    if (VK_UNLIKELY(c->broken))
        return vk__fail(VK_ERR_IO, "connection to %s is broken", c->t.peer);
    vk_status st = vk__transport_read_reply(&c->t, c->reader, &c->budget, out, ctx);
    return VK_LIKELY(st == VK_OK) ? st : broken(c, st);
}

/* append + flush; *sent once the whole request reached the socket. */
static vk_status send_command(vk_conn *c, int argc, const char *const *argv,
                              const size_t *argvlen, vk_context *ctx, bool *sent)
{
    vk_status st = vk__conn_append(c, argc, argv, argvlen);
    if (VK_LIKELY(st == VK_OK))
        st = vk__conn_flush(c, ctx);
    *sent = st == VK_OK;
    return st;
}

vk_status vk__conn_command(vk_conn *c, redisReply **out, int argc, const char *const *argv,
                           const size_t *argvlen, vk_context *ctx, bool *sent)
{
    *out = NULL;
    vk_status st = send_command(c, argc, argv, argvlen, ctx, sent);
    if (VK_UNLIKELY(st != VK_OK))
        return st;
    return vk__conn_read(c, out, ctx);
}

/* A command that waits on the server (command.c) may take its own
 * timeout to answer: the read timeout stretches by that much for this one
 * reply (none at all for a timeout of 0). */
vk_status vk__conn_read_reply_of(vk_conn *c, redisReply **out, const vk_command *cmd,
                                 vk_context *ctx)
{
    if (VK_LIKELY(!(cmd->flags & VK_COMMAND_BLOCKING)))
        return vk__conn_read(c, out, ctx);
    int64_t usual_ms = c->t.read_timeout_ms;
    int64_t wait_ms = cmd->block_ms;
    vk__transport_set_read_timeout(&c->t, wait_ms > 0 ? wait_ms + usual_ms : 0);
    vk_status st = vk__conn_read(c, out, ctx);
    vk__transport_set_read_timeout(&c->t, usual_ms);
    return st;
}

vk_status vk__conn_user_command(vk_conn *c, redisReply **out, const vk_command *cmd,
                                vk_context *ctx, bool *sent)
{
    *out = NULL;
    vk_status st = send_command(c, cmd->argc, cmd->argv, cmd->argvlen, ctx, sent);
    if (VK_UNLIKELY(st != VK_OK))
        return st;
    return vk__conn_read_reply_of(c, out, cmd, ctx);
}

/* ---- handshake ---------------------------------------------------------- */

/* Sends every step of the handshake (handshake.c) in one write and checks
 * the replies in order: one round trip however many steps there are. */
static vk_status handshake(vk_conn *c, const vk_conn_params *p, vk_context *ctx)
{
    vk_handshake h;
    vk__handshake_plan(&h, p->cfg, p->username, p->password);
    vk_status st = VK_OK;
    for (int i = 0; st == VK_OK && i < h.count; i++) {
        const vk_handshake_step *step = &h.steps[i];
        st = append_request(c, step->argc, step->argv, step->lens, step->secret);
    }
    if (st == VK_OK)
        st = vk__conn_flush(c, ctx);
    vk_status first_failure = VK_OK;
    for (int i = 0; st == VK_OK && i < h.count; i++) {
        redisReply *r;
        st = vk__conn_read(c, &r, ctx);
        if (st != VK_OK)
            break;
        if (first_failure == VK_OK)
            first_failure = vk__handshake_check(&h.steps[i], r);
        vk__reply_free(r);
    }
    if (st == VK_OK && first_failure != VK_OK) {
        /* The detail of the first failure is still this thread's. */
        st = first_failure;
    }
    return st;
}

vk_status vk__conn_open(vk_conn **out, const vk_endpoint *ep, const vk_conn_params *p,
                        vk_context *ctx)
{
    *out = NULL;
    vk_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return vk__fail_nomem();
    c->t.fd = -1;
    c->reader = vk__reader_new();
    c->ocap = 512;
    c->obuf = malloc(c->ocap);
    if (c->reader == NULL || c->obuf == NULL) {
        if (c->reader != NULL)
            redisReaderFree(c->reader);
        free(c->obuf);
        free(c);
        return vk__fail_nomem();
    }
    vk_status st = vk__transport_open(&c->t, ep, p->tls, p->server_name, p->cfg, ctx);
    if (st == VK_OK)
        st = handshake(c, p, ctx);
    if (st != VK_OK) {
        char *detail = vk__error_dup();
        vk__conn_close(c);
        vk__fail_restore(st, detail);
        free(detail);
        return st;
    }
    c->last_used_ms = vk__now_ms();
    *out = c;
    return VK_OK;
}

vk_status vk__conn_auth(vk_conn *c, const char *username, const char *password,
                        vk_context *ctx)
{
    vk_handshake_step auth;
    vk__handshake_auth_step(&auth, username, password);
    vk_status st = append_request(c, auth.argc, auth.argv, auth.lens, auth.secret);
    if (st == VK_OK)
        st = vk__conn_flush(c, ctx);
    redisReply *r = NULL;
    if (st == VK_OK)
        st = vk__conn_read(c, &r, ctx);
    if (st == VK_OK)
        st = vk__handshake_check(&auth, r);
    vk__reply_free(r);
    return st;
}

/* ---- state -------------------------------------------------------------- */

const char *vk__conn_peer(const vk_conn *c)
{
    return c->t.peer;
}

bool vk__conn_is_broken(const vk_conn *c)
{
    return c->broken;
}

bool vk__conn_still_usable(vk_conn *c)
{
    if (c->broken || c->reader->len > c->reader->pos)
        return false;
    if (!vk__transport_idle_ok(&c->t))
        c->broken = true;
    return !c->broken;
}

int64_t vk__conn_last_used_ms(const vk_conn *c)
{
    return c->last_used_ms;
}

uint64_t vk__conn_tag(const vk_conn *c)
{
    return c->tag;
}

void vk__conn_set_tag(vk_conn *c, uint64_t tag)
{
    c->tag = tag;
}

static void conn_free(vk_conn *c, bool graceful)
{
    if (c == NULL)
        return;
    vk__transport_close(&c->t, graceful);
    if (c->reader != NULL)
        redisReaderFree(c->reader);
    if (c->obuf_secret)
        vk__wipe(c->obuf, c->olen);
    free(c->obuf);
    free(c);
}

void vk__conn_close(vk_conn *c)
{
    conn_free(c, true);
}

void vk__conn_abandon(vk_conn *c)
{
    /* The parent process still owns the TLS session: no close_notify. */
    conn_free(c, false);
}
