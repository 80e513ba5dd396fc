/*
 * Sockets: non-blocking connect bounded by the dial timeout, then blocking
 * I/O with kernel timeouts (the fast path) or poll() when a context asks
 * for deadlines or cancellation. TLS goes through the same two paths.
 */
#include "net/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>

#define VK_KEEPALIVE_IDLE_S 60
#define VK_KEEPALIVE_INTERVAL_S 15
#define VK_KEEPALIVE_COUNT 4

static int64_t deadline_after_ms(int64_t ms)
{
    if (ms <= 0)
        return VK_NO_DEADLINE;
    return vk__now_us() + ms * 1000;
}

static vk_status set_blocking(int fd, bool blocking)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return vk__fail(VK_ERR_IO, "fcntl failed: %s", strerror(errno));
    flags = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
    if (fcntl(fd, F_SETFL, flags) < 0)
        return vk__fail(VK_ERR_IO, "fcntl failed: %s", strerror(errno));
    return VK_OK;
}

static void set_timeout_opt(int fd, int opt, int64_t ms)
{
    struct timeval tv = {0, 0};   /* 0: block without limit */
    if (ms > 0) {
        tv.tv_sec = (time_t)(ms / 1000);
        tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    }
    (void)setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

void vk__transport_tune_tcp(int fd)
{
    int on = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    int idle = VK_KEEPALIVE_IDLE_S, interval = VK_KEEPALIVE_INTERVAL_S,
        count = VK_KEEPALIVE_COUNT;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

/* Waits for the non-blocking connect of fd to finish. */
static vk_status finish_connect(vk_transport *t, int fd, int64_t deadline_us, vk_context *ctx)
{
    vk_status st = vk__ctx_wait_fd(ctx, fd, POLLOUT, deadline_us);
    if (st == VK_ERR_TIMEOUT && vk__ctx_deadline_us(ctx) > deadline_us)
        return vk__fail(VK_ERR_TIMEOUT, "dial %s", t->peer);
    if (st != VK_OK)
        return st;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0)
        return vk__fail(VK_ERR_IO, "dial %s: %s", t->peer, strerror(err));
    return VK_OK;
}

/* Starts a connect to one address; fd is returned through *out. */
static vk_status connect_addr(vk_transport *t, int family, const struct sockaddr *addr,
                              socklen_t addrlen, int64_t deadline_us, vk_context *ctx,
                              int *out)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vk__fail(VK_ERR_IO, "dial %s: socket: %s", t->peer, strerror(errno));
    vk_status st = VK_OK;
    if (connect(fd, addr, addrlen) < 0) {
        if (errno == EINPROGRESS || errno == EAGAIN)
            st = finish_connect(t, fd, deadline_us, ctx);
        else
            st = vk__fail(VK_ERR_IO, "dial %s: %s", t->peer, strerror(errno));
    }
    if (st != VK_OK) {
        close(fd);
        return st;
    }
    *out = fd;
    return VK_OK;
}

static vk_status connect_unix(vk_transport *t, const vk_endpoint *ep, int64_t deadline_us,
                              vk_context *ctx, int *out)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(ep->path) >= sizeof sa.sun_path)
        return vk__fail(VK_ERR_IO, "dial %s: socket path too long", t->peer);
    memcpy(sa.sun_path, ep->path, strlen(ep->path) + 1);
    return connect_addr(t, AF_UNIX, (const struct sockaddr *)&sa, sizeof sa, deadline_us, ctx,
                        out);
}

/* Tries every address the name resolves to, in order. */
static vk_status connect_tcp(vk_transport *t, const vk_endpoint *ep, int64_t deadline_us,
                             vk_context *ctx, int *out)
{
    struct addrinfo *list = NULL;
    int rc = 0;
    vk_status st = vk__resolve(t->peer, ep->host, ep->port, deadline_us, ctx, &list, &rc);
    if (st != VK_OK)
        return st;
    if (rc != 0)
        return vk__fail(VK_ERR_IO, "dial %s: lookup %s: %s", t->peer, ep->host,
                        gai_strerror(rc));
    st = vk__fail(VK_ERR_IO, "dial %s: no address", t->peer);
    for (struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        st = connect_addr(t, ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline_us, ctx, out);
        if (st == VK_OK || st == VK_ERR_CANCELLED || st == VK_ERR_TIMEOUT)
            break;
    }
    freeaddrinfo(list);
    if (st == VK_OK)
        vk__transport_tune_tcp(*out);
    return st;
}

/* The handshake runs on the still non-blocking socket so that it honours
 * the dial deadline and the context. */
static vk_status tls_handshake(vk_transport *t, vk_tls *tls, const char *name,
                               int64_t deadline_us, vk_context *ctx)
{
    vk_status st = vk__tls_session_new(tls, t->fd, name, &t->ssl);
    if (st != VK_OK)
        return st;
    for (;;) {
        ERR_clear_error();
        int rc = SSL_connect(t->ssl);
        if (rc == 1)
            return VK_OK;
        int err = SSL_get_error(t->ssl, rc);
        short events;
        if (err == SSL_ERROR_WANT_READ)
            events = POLLIN;
        else if (err == SSL_ERROR_WANT_WRITE)
            events = POLLOUT;
        else {
            char why[256];
            vk__tls_describe_failure(t->ssl, why, sizeof why);
            return vk__fail(VK_ERR_TLS, "handshake with %s failed: %s", t->peer, why);
        }
        st = vk__ctx_wait_fd(ctx, t->fd, events, deadline_us);
        if (st == VK_ERR_TIMEOUT && vk__ctx_deadline_us(ctx) > deadline_us)
            return vk__fail(VK_ERR_TIMEOUT, "TLS handshake with %s", t->peer);
        if (st != VK_OK)
            return st;
    }
}

vk_status vk__transport_open(vk_transport *t, const vk_endpoint *ep, vk_tls *tls,
                             const char *server_name, const vk_config *cfg, vk_context *ctx)
{
    memset(t, 0, sizeof *t);
    t->fd = -1;
    t->read_timeout_ms = cfg->read_timeout_ms;
    t->write_timeout_ms = cfg->write_timeout_ms;
    vk__format_endpoint(t->peer, sizeof t->peer, ep);

    int64_t deadline_us = deadline_after_ms(cfg->dial_timeout_ms);
    vk_status st = ep->is_unix ? connect_unix(t, ep, deadline_us, ctx, &t->fd)
                               : connect_tcp(t, ep, deadline_us, ctx, &t->fd);
    if (st != VK_OK) {
        t->fd = -1;
        return st;
    }
    if (tls != NULL) {
        const char *name = server_name != NULL && server_name[0] != '\0' ? server_name
                                                                           : ep->host;
        st = tls_handshake(t, tls, name, deadline_us, ctx);
    }
    if (st == VK_OK)
        st = set_blocking(t->fd, true);
    if (st != VK_OK) {
        vk__transport_close(t, false);
        return st;
    }
    set_timeout_opt(t->fd, SO_RCVTIMEO, t->read_timeout_ms);
    set_timeout_opt(t->fd, SO_SNDTIMEO, t->write_timeout_ms);
    return VK_OK;
}

void vk__transport_set_read_timeout(vk_transport *t, int64_t ms)
{
    if (t->read_timeout_ms == ms)
        return;
    t->read_timeout_ms = ms;
    if (t->fd >= 0)
        set_timeout_opt(t->fd, SO_RCVTIMEO, ms);
}

/* ---- reads and writes --------------------------------------------------- */

static vk_status io_timeout(const vk_transport *t, const char *op)
{
    return vk__fail(VK_ERR_TIMEOUT, "%s %s", op, t->peer);
}

/* With a context: waits until fd is ready (or the op's own timeout). */
static vk_status wait_ready(vk_transport *t, short events, int64_t timeout_ms,
                            const char *op, vk_context *ctx)
{
    int64_t deadline_us = deadline_after_ms(timeout_ms);
    vk_status st = vk__ctx_wait_fd(ctx, t->fd, events, deadline_us);
    if (st == VK_ERR_TIMEOUT && vk__ctx_deadline_us(ctx) > deadline_us)
        return io_timeout(t, op);
    return st;
}

/* A server that rejects the client (TLS 1.3 checks client certificates
 * after the client thinks the handshake is over) sends an alert and closes.
 * A write may then fail with a bare reset; reading picks up the alert,
 * which says what actually went wrong. */
static bool pending_tls_alert(vk_transport *t, const char *op)
{
    char byte;
    ERR_clear_error();
    vk__tls_set_read_nowait(t->ssl, true);
    int rc = SSL_read(t->ssl, &byte, 1);
    vk__tls_set_read_nowait(t->ssl, false);
    bool alert = rc <= 0 && SSL_get_error(t->ssl, rc) == SSL_ERROR_SSL;
    if (alert) {
        char why[256];
        vk__tls_describe_failure(t->ssl, why, sizeof why);
        vk__fail(VK_ERR_TLS, "%s %s: %s", op, t->peer, why);
    }
    ERR_clear_error();
    return alert;
}

static vk_status tls_io_failure(vk_transport *t, int rc, const char *op)
{
    int err = SSL_get_error(t->ssl, rc);
    int saved_errno = errno;
    if (err == SSL_ERROR_SYSCALL && (saved_errno == ECONNRESET || saved_errno == EPIPE) &&
        strcmp(op, "write") == 0 && pending_tls_alert(t, op))
        return VK_ERR_TLS;
    errno = saved_errno;
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return io_timeout(t, op);   /* the kernel timeout fired */
    if (err == SSL_ERROR_ZERO_RETURN)
        return vk__fail(VK_ERR_IO, "%s %s: connection closed by peer", op, t->peer);
    if (err == SSL_ERROR_SYSCALL) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return io_timeout(t, op);
        if (errno == 0)
            return vk__fail(VK_ERR_IO, "%s %s: EOF", op, t->peer);
        return vk__fail(VK_ERR_IO, "%s %s: %s", op, t->peer, strerror(errno));
    }
    char why[256];
    vk__tls_describe_failure(t->ssl, why, sizeof why);
    return vk__fail(VK_ERR_TLS, "%s %s: %s", op, t->peer, why);
}

static vk_status sock_io_failure(vk_transport *t, int err, const char *op)
{
    if (err == EAGAIN || err == EWOULDBLOCK)
        return io_timeout(t, op);
    return vk__fail(VK_ERR_IO, "%s %s: %s", op, t->peer, strerror(err));
}

/* A failure of a call that ran watched (see vk__ctx_watch_fd): when the
 * context was cancelled meanwhile, the shutdown was ours. */
static vk_status watched_result(vk_context *ctx, int fd, vk_status st)
{
    vk__ctx_unwatch_fd(ctx, fd);
    if (st != VK_OK && vk_context_is_cancelled(ctx))
        return vk__fail(VK_ERR_CANCELLED, NULL);
    return st;
}

static vk_status write_all(vk_transport *t, const char *buf, size_t len, vk_context *ctx)
{
    bool poll_first = vk__ctx_needs_poll(ctx);
    if (poll_first && t->ssl == NULL) {
        /* A request nearly always fits the socket buffer: try without
         * waiting first (it cannot block), and poll only when it is full. */
        vk_status st = vk__ctx_check(ctx);
        if (st != VK_OK)
            return st;
        ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return sock_io_failure(t, errno, "write");
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        }
    }
    while (len > 0) {
        if (VK_UNLIKELY(poll_first)) {
            vk_status st = wait_ready(t, POLLOUT, t->write_timeout_ms, "write", ctx);
            if (st != VK_OK)
                return st;
        }
        ssize_t n;
        if (t->ssl != NULL) {
            ERR_clear_error();
            int chunk = len > (size_t)INT32_MAX ? INT32_MAX : (int)len;
            int rc = SSL_write(t->ssl, buf, chunk);
            if (rc <= 0)
                return tls_io_failure(t, rc, "write");
            n = rc;
        } else {
            n = send(t->fd, buf, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return sock_io_failure(t, errno, "write");
            }
        }
        buf += n;
        len -= (size_t)n;
    }
    return VK_OK;
}

vk_status vk__transport_write_all(vk_transport *t, const char *buf, size_t len,
                                  vk_context *ctx)
{
    if (VK_LIKELY(ctx == NULL) || !vk__ctx_watch_fd(ctx, t->fd))
        return write_all(t, buf, len, ctx);
    /* Blocking, bounded by the socket's timeout; a cancel shuts it down. */
    return watched_result(ctx, t->fd, write_all(t, buf, len, NULL));
}

static vk_status read_some(vk_transport *t, char *buf, size_t cap, size_t *got,
                           vk_context *ctx)
{
    bool poll_first = vk__ctx_needs_poll(ctx);
    for (;;) {
        /* Bytes OpenSSL already decrypted are not visible to poll(). */
        if (VK_UNLIKELY(poll_first) && (t->ssl == NULL || SSL_pending(t->ssl) == 0)) {
            vk_status st = wait_ready(t, POLLIN, t->read_timeout_ms, "read", ctx);
            if (st != VK_OK)
                return st;
        }
        if (t->ssl != NULL) {
            ERR_clear_error();
            int chunk = cap > (size_t)INT32_MAX ? INT32_MAX : (int)cap;
            if (VK_UNLIKELY(poll_first))
                vk__tls_set_read_nowait(t->ssl, true);
            int rc = SSL_read(t->ssl, buf, chunk);
            if (VK_UNLIKELY(poll_first)) {
                vk__tls_set_read_nowait(t->ssl, false);
                /* Only part of a record, or no application data: wait again. */
                if (rc <= 0 && SSL_get_error(t->ssl, rc) == SSL_ERROR_WANT_READ)
                    continue;
            }
            if (rc <= 0)
                return tls_io_failure(t, rc, "read");
            *got = (size_t)rc;
            return VK_OK;
        }
        ssize_t n = recv(t->fd, buf, cap, 0);
        if (VK_LIKELY(n > 0)) {
            *got = (size_t)n;
            return VK_OK;
        }
        if (n == 0)
            return vk__fail(VK_ERR_IO, "read %s: EOF", t->peer);
        if (errno != EINTR)
            return sock_io_failure(t, errno, "read");
    }
}

vk_status vk__transport_read_some(vk_transport *t, char *buf, size_t cap, size_t *got,
                                  vk_context *ctx)
{
    if (VK_LIKELY(ctx == NULL) || !vk__ctx_watch_fd(ctx, t->fd))
        return read_some(t, buf, cap, got, ctx);
    /* Blocking, bounded by the socket's timeout; a cancel shuts it down. */
    return watched_result(ctx, t->fd, read_some(t, buf, cap, got, NULL));
}

/* TLS: peek through OpenSSL so that post-handshake records (session
 * tickets) are consumed instead of being mistaken for unsolicited data. */
static bool tls_idle_ok(vk_transport *t)
{
    if (SSL_pending(t->ssl) > 0)
        return false;
    char byte;
    ERR_clear_error();
    vk__tls_set_read_nowait(t->ssl, true);
    int rc = SSL_peek(t->ssl, &byte, 1);
    vk__tls_set_read_nowait(t->ssl, false);
    int err = rc > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, rc);
    ERR_clear_error();
    return rc <= 0 && err == SSL_ERROR_WANT_READ;
}

bool vk__transport_idle_ok(vk_transport *t)
{
    if (t->fd < 0)
        return false;
    if (t->ssl != NULL)
        return tls_idle_ok(t);
    char byte;
    ssize_t n = recv(t->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void vk__transport_close(vk_transport *t, bool graceful)
{
    if (t->ssl != NULL) {
        if (graceful && t->fd >= 0) {
            /* Best effort and never blocking: the peer may be gone. */
            (void)set_blocking(t->fd, false);
            ERR_clear_error();
            (void)SSL_shutdown(t->ssl);
        }
        ERR_clear_error();
        SSL_free(t->ssl);
        t->ssl = NULL;
    }
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
}
