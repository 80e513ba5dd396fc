/*
 * One connection: hiredis's formatter fills the output buffer, hiredis's
 * reader parses replies, the transport moves the bytes. Any I/O or
 * protocol failure marks the connection broken: a reply may still be in
 * flight, so the stream can never be trusted again.
 */
#include "transport.h"

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

/* secret: the request carries a password; its formatted copy is wiped
 * before it is freed, so it only ever lives on in the output buffer, which
 * the caller wipes after the flush.
 *
 * hiredis's sds formatter writes the lengths with its own integer code
 * (redisFormatCommandArgv goes through sprintf, a large part of a
 * pipeline's cost); its result is copied into the output buffer, which
 * connections keep between requests. */
static vk_status append_request(vk_conn *c, int argc, const char *const *argv,
                                const size_t *argvlen, bool secret)
{
    sds cmd = NULL;
    int len = redisFormatSdsCommandArgv(&cmd, argc, (const char **)argv, argvlen);
    if (len < 0)
        return vk__fail_nomem();
    size_t n = (size_t)len;
    if (c->olen + n > c->ocap) {
        size_t cap = c->ocap * 2 > c->olen + n ? c->ocap * 2 : c->olen + n;
        if (cap < 256)
            cap = 256;
        char *grown = realloc(c->obuf, cap);
        if (grown == NULL) {
            vk__wipe(cmd, n);
            redisFreeSdsCommand(cmd);
            return vk__fail_nomem();
        }
        c->obuf = grown;
        c->ocap = cap;
    }
    memcpy(c->obuf + c->olen, cmd, n);
    c->olen += n;
    if (secret)
        vk__wipe(cmd, n);
    redisFreeSdsCommand(cmd);
    return VK_OK;
}

vk_status vk__conn_append(vk_conn *c, int argc, const char *const *argv,
                          const size_t *argvlen)
{
    return append_request(c, argc, argv, argvlen, false);
}

/* Flushes requests that carried a password, then wipes the buffer. */
static vk_status flush_secret(vk_conn *c, vk_context *ctx)
{
    size_t used = c->olen;
    vk_status st = vk__conn_flush(c, ctx);
    if (c->obuf != NULL)
        vk__wipe(c->obuf, used < c->ocap ? used : c->ocap);
    return st;
}

vk_status vk__conn_flush(vk_conn *c, vk_context *ctx)
{
    if (VK_UNLIKELY(c->broken))
        return vk__fail(VK_ERR_IO, "connection to %s is broken", c->t.peer);
    vk_status st = vk__transport_write_all(&c->t, c->obuf, c->olen, ctx);
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

vk_status vk__conn_read(vk_conn *c, redisReply **out, vk_context *ctx)
{
    *out = NULL;
    if (VK_UNLIKELY(c->broken))
        return vk__fail(VK_ERR_IO, "connection to %s is broken", c->t.peer);
    for (;;) {
        void *reply = NULL;
        if (VK_UNLIKELY(vk__reader_get_reply(c->reader, &c->budget, &reply) != REDIS_OK)) {
            if (c->budget.exceeded)
                return broken(c, vk__fail(VK_ERR_PROTOCOL,
                                          "from %s: reply with more than %zu array elements refused",
                                          c->t.peer, (size_t)VK_MAX_REPLY_ELEMENTS));
            return broken(c, vk__fail(VK_ERR_PROTOCOL, "from %s: %s", c->t.peer,
                                      c->reader->errstr));
        }
        if (reply != NULL) {
            *out = reply;
            return VK_OK;
        }
        char buf[VK_READ_CHUNK];
        size_t got = 0;
        vk_status st = vk__transport_read_some(&c->t, buf, sizeof buf, &got, ctx);
        if (VK_UNLIKELY(st != VK_OK))
            return broken(c, st);
        if (VK_UNLIKELY(redisReaderFeed(c->reader, buf, got) != REDIS_OK))
            return broken(c, vk__fail(VK_ERR_PROTOCOL, "from %s: %s", c->t.peer,
                                      c->reader->errstr));
    }
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

/* A command that waits on the server (blocking.c) may take its own
 * timeout to answer: the read timeout stretches by that much for this one
 * reply (none at all for a timeout of 0). */
static vk_status read_blocking_reply(vk_conn *c, redisReply **out, vk_context *ctx,
                                     int64_t wait_ms)
{
    int64_t usual_ms = c->t.read_timeout_ms;
    vk__transport_set_read_timeout(&c->t, wait_ms > 0 ? wait_ms + usual_ms : 0);
    vk_status st = vk__conn_read(c, out, ctx);
    vk__transport_set_read_timeout(&c->t, usual_ms);
    return st;
}

vk_status vk__conn_user_command(vk_conn *c, redisReply **out, int argc,
                                const char *const *argv, const size_t *argvlen,
                                vk_context *ctx, bool *sent)
{
    int64_t wait_ms;
    if (VK_LIKELY(!vk__blocking_timeout_ms(argc, argv, argvlen, &wait_ms)))
        return vk__conn_command(c, out, argc, argv, argvlen, ctx, sent);
    *out = NULL;
    vk_status st = send_command(c, argc, argv, argvlen, ctx, sent);
    if (st != VK_OK)
        return st;
    return read_blocking_reply(c, out, ctx, wait_ms);
}

/* ---- handshake ---------------------------------------------------------- */

static bool starts_with(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

/* Maps an error reply met during the handshake to its status. */
static vk_status handshake_error(const redisReply *r, const char *step)
{
    if (starts_with(r->str, r->len, "WRONGPASS") || starts_with(r->str, r->len, "NOAUTH") ||
        strcmp(step, "AUTH") == 0 || strcmp(step, "HELLO") == 0)
        return vk__fail(VK_ERR_AUTH, "%.*s", (int)r->len, r->str);
    return vk__fail(VK_ERR_SERVER, "%s: %.*s", step, (int)r->len, r->str);
}

static vk_status append_auth(vk_conn *c, const char *username, const char *password)
{
    const char *argv[3] = {"AUTH"};
    size_t lens[3] = {4};
    int argc = 1;
    if (username != NULL && username[0] != '\0') {
        argv[argc] = username;
        lens[argc++] = strlen(username);
    }
    argv[argc] = password;
    lens[argc++] = strlen(password);
    return append_request(c, argc, argv, lens, true);
}

#if HIREDIS_MAJOR >= 1
static vk_status append_hello3(vk_conn *c, const char *username, const char *password)
{
    const char *argv[5] = {"HELLO", "3"};
    size_t lens[5] = {5, 1};
    int argc = 2;
    if (password != NULL) {
        const char *user = username != NULL && username[0] != '\0' ? username : "default";
        argv[argc] = "AUTH";
        lens[argc++] = 4;
        argv[argc] = user;
        lens[argc++] = strlen(user);
        argv[argc] = password;
        lens[argc++] = strlen(password);
    }
    return append_request(c, argc, argv, lens, true);
}
#endif

/* Sends every handshake step in one write and checks the replies in order:
 * one round trip however many steps there are. */
static vk_status handshake(vk_conn *c, const vk_conn_params *p, vk_context *ctx)
{
    const char *steps[3];
    int nsteps = 0;
    vk_status st = VK_OK;
#if HIREDIS_MAJOR >= 1
    if (p->cfg->protocol == 3) {
        st = append_hello3(c, p->username, p->password);
        steps[nsteps++] = "HELLO";
    } else
#endif
    if (p->password != NULL) {
        st = append_auth(c, p->username, p->password);
        steps[nsteps++] = "AUTH";
    }
    if (st == VK_OK && p->cfg->db != 0) {
        char db[16];
        int len = snprintf(db, sizeof db, "%d", p->cfg->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, (size_t)len};
        st = vk__conn_append(c, 2, argv, lens);
        steps[nsteps++] = "SELECT";
    }
    if (st == VK_OK) {
        const char *argv[1] = {"PING"};
        size_t lens[1] = {4};
        st = vk__conn_append(c, 1, argv, lens);
        steps[nsteps++] = "PING";
    }
    if (st == VK_OK)
        st = flush_secret(c, ctx);
    vk_status first_failure = VK_OK;
    for (int i = 0; st == VK_OK && i < nsteps; i++) {
        redisReply *r;
        st = vk__conn_read(c, &r, ctx);
        if (st != VK_OK)
            break;
        if (r->type == REDIS_REPLY_ERROR && first_failure == VK_OK)
            first_failure = handshake_error(r, steps[i]);
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
    /* Room for the handshake, so a password is never left behind in a
     * buffer that realloc() moved away from. */
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
    vk_status st = append_auth(c, username, password);
    if (st == VK_OK)
        st = flush_secret(c, ctx);
    redisReply *r = NULL;
    if (st == VK_OK)
        st = vk__conn_read(c, &r, ctx);
    if (st == VK_OK && r->type == REDIS_REPLY_ERROR)
        st = handshake_error(r, "AUTH");
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
