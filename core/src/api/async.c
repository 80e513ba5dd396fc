/*
 * The event-loop client (vkclient_async.h): the driver that runs the engine
 * (engine.c) on the host's loop. It owns the sockets and the TLS sessions,
 * moves bytes between them and the engines, and turns the engines' wishes
 * (open, write, close, wake me at T) into non-blocking system calls and the
 * adapter's watch and timer requests. Every decision is the engines'.
 *
 * Each connection is a vk_async_conn with its engine: the node's, and in
 * Sentinel mode the probes that ask the sentinels where the master is
 * (sentinel_seek.c). The loop's one timer is set for the earliest wake-up
 * any of them asked for.
 *
 * Writes are coalesced: requests submitted while the client handles an
 * event (typically from completions) are written in one go when the
 * handler returns; requests submitted from outside a handler ask the loop
 * for write readiness, so that those submitted in the same loop iteration
 * go out together.
 */
#include "api/driven.h"
#include "net/transport.h"

#include "vkclient_async.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Read per readiness event at most, so that one busy connection cannot
 * hold the loop. */
#define VK_ASYNC_READ_CHUNK (64 * 1024)
#define VK_ASYNC_READS_PER_EVENT 16

typedef enum net_state {
    NET_RESOLVING,      /* the host name is looked up (io: the lookup's descriptor) */
    NET_CONNECTING,     /* the TCP (or unix) connect is in progress */
    NET_TLS,            /* the TLS handshake is in progress */
    NET_OPEN
} net_state;

typedef struct vk_async_conn vk_async_conn;

struct vk_async_io {
    vk_async_conn *conn;
    int fd;
    int events;          /* watched now */
    void *slot;          /* the adapter's */
    vk_async_io *next;   /* among the released, until no handler runs */
};

/* One connection and its engine. */
struct vk_async_conn {
    vk_driven_conn base; /* first: engine, endpoint, peer, wake-up */
    vk_async *client;

    /* io NULL when there is no socket. */
    vk_async_io *io;
    SSL *ssl;
    net_state net;
    vk_lookup *lookup;   /* NET_RESOLVING: owns io's descriptor */
    char stage[320];     /* drv_dial_stage's text */
    struct addrinfo *addrs, *next_addr;

    bool flush_wanted;
};

struct vk_async {
    vk_driven d;         /* first: the engine, the core, the thread */
    vk_loop_adapter loop;
    void *timer_slot;
    int64_t timer_at_ms; /* the loop's timer, VK_ENGINE_NEVER: none */

    vk_async_conn node;  /* the probes (Sentinel) are in d.probes */

    bool in_handler;     /* a handler runs: flush when it returns */
    vk_async_io *released;
    char *rbuf;
};

/* ---- the watch ---------------------------------------------------------------- */

static void watch(vk_async_conn *c, int events)
{
    vk_async_io *io = c->io;
    if (io == NULL || io->events == events)
        return;
    vk_async *a = c->client;
    if (a->loop.watch(a->loop.data, io, io->fd, events, &io->slot) != 0) {
        vk__fail(VK_ERR_IO, "%s: the event loop refused to watch the connection", c->base.peer);
        vk__engine_lost(c->base.engine, VK_ERR_IO, vk__now_ms());
        return;
    }
    io->events = events;
}

/* Closes the socket; its io is freed once no handler can be using it. */
static void close_socket(vk_async_conn *c)
{
    vk_async_io *io = c->io;
    if (io == NULL)
        return;
    vk_async *a = c->client;
    c->io = NULL;
    a->loop.watch(a->loop.data, io, io->fd, 0, &io->slot);
    if (c->ssl != NULL) {
        /* No close_notify: the socket may be anything but writable. */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->lookup != NULL) {
        /* The descriptor is the lookup's: it goes with it (a lookup still
         * running finishes alone). */
        vk__lookup_release(c->lookup);
        c->lookup = NULL;
    } else {
        close(io->fd);
    }
    io->fd = -1;
    io->next = a->released;
    a->released = io;
}

static void forget_addresses(vk_async_conn *c)
{
    if (c->addrs != NULL)
        freeaddrinfo(c->addrs);
    c->addrs = c->next_addr = NULL;
}

static void close_connection(vk_async_conn *c)
{
    forget_addresses(c);
    close_socket(c);
}

/* ---- opening ---------------------------------------------------------------- */

static void opened(vk_async_conn *c);
static void open_failed(vk_async_conn *c, vk_status st)
{
    close_connection(c);
    vk__engine_open_failed(c->base.engine, st, vk__now_ms());
}

static vk_status new_io(vk_async_conn *c, int fd)
{
    vk_async_io *io = calloc(1, sizeof *io);
    if (io == NULL) {
        if (c->lookup != NULL) {
            vk__lookup_release(c->lookup);
            c->lookup = NULL;
        } else {
            close(fd);
        }
        return vk__fail_nomem();
    }
    io->conn = c;
    io->fd = fd;
    c->io = io;
    return VK_OK;
}

/* Starts a connect to the next address: VK_OK when one is under way (or
 * done), else the reason the last one failed. */
static vk_status connect_next(vk_async_conn *c, const struct sockaddr *sa, socklen_t len,
                              int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vk__fail(VK_ERR_IO, "dial %s: socket: %s", c->base.peer, strerror(errno));
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
        int err = errno;
        close(fd);
        return vk__fail(VK_ERR_IO, "dial %s: %s", c->base.peer, strerror(err));
    }
    vk_status st = new_io(c, fd);
    if (st != VK_OK)
        return st;
    c->net = NET_CONNECTING;
    watch(c, VK_EV_WRITE);
    return VK_OK;
}

/* Tries the addresses left, in order, until a connect is under way; last
 * is the failure of the one before (VK_OK: none was tried). */
static void dial_next_address(vk_async_conn *c, vk_status last)
{
    vk_status st = last;
    while (c->next_addr != NULL) {
        struct addrinfo *ai = c->next_addr;
        c->next_addr = ai->ai_next;
        st = connect_next(c, ai->ai_addr, ai->ai_addrlen, ai->ai_family);
        if (st == VK_OK)
            return;
    }
    if (st == VK_OK)
        st = vk__fail(VK_ERR_IO, "dial %s: no address", c->base.peer);
    open_failed(c, st);
}

/* The node's addresses are known (list, or the lookup's failure rc):
 * dial them in order. */
static void addresses_ready(vk_async_conn *c, struct addrinfo *list, int rc)
{
    if (rc != 0) {
        open_failed(c, vk__fail(VK_ERR_IO, "dial %s: lookup %s: %s", c->base.peer, c->base.endpoint.host,
                                gai_strerror(rc)));
        return;
    }
    c->addrs = c->next_addr = list;
    dial_next_address(c, VK_OK);
}

/* Dials c->base.endpoint. */
static void dial(vk_async_conn *c)
{
    const vk_endpoint *ep = &c->base.endpoint;
    if (ep->is_unix) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (strlen(ep->path) >= sizeof sa.sun_path) {
            open_failed(c, vk__fail(VK_ERR_IO, "dial %s: socket path too long", c->base.peer));
            return;
        }
        memcpy(sa.sun_path, ep->path, strlen(ep->path) + 1);
        vk_status st = connect_next(c, (const struct sockaddr *)&sa, sizeof sa, AF_UNIX);
        if (st != VK_OK)
            open_failed(c, st);
        return;
    }
    /* A numeric address needs no lookup. A name is looked up on a resolver
     * thread whose descriptor the loop watches: the loop never waits for
     * it, and the engine's dial timeout bounds it. */
    int rc = 0;
    struct addrinfo *list = NULL;
    vk_lookup *pending = NULL;
    vk_status st = vk__resolve_start(c->base.peer, ep->host, ep->port, &pending, &list, &rc);
    if (st == VK_OK && pending != NULL) {
        c->lookup = pending;
        if ((st = new_io(c, vk__lookup_fd(pending))) == VK_OK) {
            c->net = NET_RESOLVING;
            watch(c, VK_EV_READ);
            return;
        }
    }
    if (st != VK_OK) {
        open_failed(c, st);
        return;
    }
    addresses_ready(c, list, rc);
}

/* The lookup's descriptor is readable: its addresses, then the dial. */
static void lookup_done(vk_async_conn *c)
{
    int rc = 0;
    struct addrinfo *list = NULL;
    if (!vk__lookup_take(c->lookup, &list, &rc))
        return;
    close_socket(c);   /* the lookup's descriptor, and the lookup */
    addresses_ready(c, list, rc);
}

static void tls_step(vk_async_conn *c)
{
    ERR_clear_error();
    int rc = SSL_connect(c->ssl);
    if (rc == 1) {
        opened(c);
        return;
    }
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ) {
        watch(c, VK_EV_READ);
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        watch(c, VK_EV_WRITE);
        return;
    }
    char why[256];
    vk__tls_describe_failure(c->ssl, why, sizeof why);
    ERR_clear_error();
    open_failed(c, vk__fail(VK_ERR_TLS, "handshake with %s failed: %s", c->base.peer, why));
}

/* The connect finished: its outcome, then TLS or the engine. */
static void connect_done(vk_async_conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        /* This address failed: its socket goes, the next one is tried. */
        vk_status st = vk__fail(VK_ERR_IO, "dial %s: %s", c->base.peer, strerror(err));
        close_socket(c);
        dial_next_address(c, st);
        return;
    }
    if (!c->base.endpoint.is_unix)
        vk__transport_tune_tcp(c->io->fd);
    vk_async *a = c->client;
    if (a->d.core->tls == NULL) {
        opened(c);
        return;
    }
    const vk_config *cfg = vk__client_config(a->d.core);
    const char *name = cfg->tls_server_name != NULL && cfg->tls_server_name[0] != '\0'
                           ? cfg->tls_server_name
                           : c->base.endpoint.host;
    vk_status st = vk__tls_session_new(a->d.core->tls, c->io->fd, name, &c->ssl);
    if (st != VK_OK) {
        open_failed(c, st);
        return;
    }
    /* The engine's output may move between a write that would block and
     * its retry, and a write may take part of it. */
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->net = NET_TLS;
    tls_step(c);
}

static void opened(vk_async_conn *c)
{
    forget_addresses(c);
    c->net = NET_OPEN;
    watch(c, VK_EV_READ);
    vk__engine_opened(c->base.engine, vk__now_ms());
}

/* ---- moving bytes ------------------------------------------------------------ */

static vk_status io_failure(vk_async_conn *c, const char *op, int rc)
{
    if (c->ssl != NULL) {
        int err = SSL_get_error(c->ssl, rc);
        if (err == SSL_ERROR_ZERO_RETURN)
            return vk__fail(VK_ERR_IO, "%s %s: connection closed by peer", op, c->base.peer);
        if (err == SSL_ERROR_SYSCALL) {
            if (errno == 0)
                return vk__fail(VK_ERR_IO, "%s %s: EOF", op, c->base.peer);
            return vk__fail(VK_ERR_IO, "%s %s: %s", op, c->base.peer, strerror(errno));
        }
        char why[256];
        vk__tls_describe_failure(c->ssl, why, sizeof why);
        ERR_clear_error();
        return vk__fail(VK_ERR_TLS, "%s %s: %s", op, c->base.peer, why);
    }
    if (rc == 0)
        return vk__fail(VK_ERR_IO, "%s %s: EOF", op, c->base.peer);
    return vk__fail(VK_ERR_IO, "%s %s: %s", op, c->base.peer, strerror(errno));
}

/* -1: would block; 0: failed (detail set); else the bytes moved. */
static ssize_t send_some(vk_async_conn *c, const char *buf, size_t len)
{
    if (c->ssl != NULL) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n > 0)
            return n;
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
            return -1;
        io_failure(c, "write", n);
        return 0;
    }
    for (;;) {
        ssize_t n = send(c->io->fd, buf, len, MSG_NOSIGNAL);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        io_failure(c, "write", 1);
        return 0;
    }
}

static ssize_t recv_some(vk_async_conn *c, char *buf, size_t cap)
{
    if (c->ssl != NULL) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, (int)cap);
        if (n > 0)
            return n;
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            return -1;
        io_failure(c, "read", n);
        return 0;
    }
    for (;;) {
        ssize_t n = recv(c->io->fd, buf, cap, 0);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        if (n == 0)
            errno = 0;
        io_failure(c, "read", (int)n);
        return 0;
    }
}

/* Writes what the engine has until it is all out or the socket is full;
 * then watches for write readiness only if something is left. */
static void flush(vk_async_conn *c)
{
    c->flush_wanted = false;
    if (c->io == NULL || c->net != NET_OPEN)
        return;
    vk_async_io *io = c->io;
    for (;;) {
        size_t len;
        const char *out = vk__engine_output(c->base.engine, &len);
        if (len == 0) {
            watch(c, VK_EV_READ);
            return;
        }
        ssize_t n = send_some(c, out, len);
        if (n < 0) {
            watch(c, VK_EV_READ | VK_EV_WRITE);
            return;
        }
        if (n == 0) {
            vk__engine_lost(c->base.engine, vk_last_status(), vk__now_ms());
            return;
        }
        vk__engine_wrote(c->base.engine, (size_t)n, vk__now_ms());
        if (c->io != io)
            return;   /* the connection went meanwhile */
    }
}

static void read_ready(vk_async_conn *c)
{
    vk_async *a = c->client;
    vk_async_io *io = c->io;
    for (int i = 0; i < VK_ASYNC_READS_PER_EVENT && c->io == io && !a->d.free_requested; i++) {
        ssize_t n = recv_some(c, a->rbuf, VK_ASYNC_READ_CHUNK);
        if (n < 0)
            return;
        if (n == 0) {
            vk__engine_lost(c->base.engine, vk_last_status(), vk__now_ms());
            return;
        }
        vk__engine_feed(c->base.engine, a->rbuf, (size_t)n, vk__now_ms());
        /* A short read emptied the socket; TLS may still hold a record. */
        if ((size_t)n < VK_ASYNC_READ_CHUNK && (c->ssl == NULL || SSL_pending(c->ssl) == 0))
            return;
    }
}

/* A connection's descriptor is ready for events: the step its state takes. */
static void step(vk_async_conn *c, int events)
{
    vk_async_io *io = c->io;
    switch (c->net) {
    case NET_RESOLVING:
        lookup_done(c);
        break;
    case NET_CONNECTING:
        connect_done(c);
        break;
    case NET_TLS:
        tls_step(c);
        break;
    case NET_OPEN:
        if (events & VK_EV_READ)
            read_ready(c);
        if (c->io == io && (events & VK_EV_WRITE))
            c->flush_wanted = true;
        break;
    }
}

/* Before the engines whose wake-up is due look at their deadlines, each
 * due connection whose descriptor is ready is stepped as if the loop had
 * said so: a reply waiting unread, or a connect or TLS handshake whose
 * answer has come, is not a stall. A busy loop may run the timer before it
 * polls the sockets (libuv does), and would otherwise time out a
 * connection that is ready (seen with a hundred TLS connections opening at
 * once on a slow machine). */
static void step_if_ready(vk_async_conn *c, int64_t now_ms)
{
    if (c->io == NULL || c->base.wake_at_ms > now_ms)
        return;
    struct pollfd p = {.fd = c->io->fd, .events = 0};
    if (c->io->events & VK_EV_READ)
        p.events |= POLLIN;
    if (c->io->events & VK_EV_WRITE)
        p.events |= POLLOUT;
    if (p.events == 0 || poll(&p, 1, 0) <= 0)
        return;
    int events = 0;
    if (p.revents & (POLLIN | POLLHUP | POLLERR))
        events |= VK_EV_READ;
    if (p.revents & (POLLOUT | POLLHUP | POLLERR))
        events |= VK_EV_WRITE;
    step(c, events);
}

static void step_ready_due(vk_async *a, int64_t now_ms)
{
    step_if_ready(&a->node, now_ms);
    /* Stepping may close connections: a closed record is moved to the
     * closed list (freed after the handler) and has no socket. */
    for (vk_driven_conn *p = a->d.probes; p != NULL && !a->d.free_requested;) {
        vk_driven_conn *next = p->next;
        step_if_ready((vk_async_conn *)p, now_ms);
        p = next;
    }
}

/* The connections whose engine wants its bytes written, at the end of a
 * handler. */
static void flush_wanted(vk_async *a)
{
    if (a->node.flush_wanted && !a->d.free_requested)
        flush(&a->node);
    for (vk_driven_conn *p = a->d.probes; p != NULL && !a->d.free_requested; p = p->next) {
        vk_async_conn *c = (vk_async_conn *)p;
        if (c->flush_wanted)
            flush(c);
    }
}

/* ---- the engines' driver functions --------------------------------------------- */

static void drv_open(void *userdata)
{
    vk_async_conn *c = userdata;
    if (c->base.is_node && !vk__driven_dial_now(&c->client->d, &c->base))
        return;   /* drv_located dials */
    dial(c);
}

/* Sentinel mode: the master is known (or not) for the node's dial. */
static void drv_located(vk_driven *d, vk_status st)
{
    vk_async *a = (vk_async *)d;
    vk_async_conn *c = &a->node;
    if (st != VK_OK) {
        open_failed(c, st);
        return;
    }
    vk__engine_dial_started(c->base.engine, vk__now_ms());
    dial(c);
}

static void drv_close(void *userdata)
{
    vk_async_conn *c = userdata;
    close_connection(c);
    if (c->base.is_node)
        vk__driven_node_closed(&c->client->d);
}

static void drv_want_write(void *userdata)
{
    vk_async_conn *c = userdata;
    if (c->client->in_handler)
        c->flush_wanted = true;
    else if (c->io != NULL && c->net == NET_OPEN)
        watch(c, VK_EV_READ | VK_EV_WRITE);
}

/* A dial that runs out of time while the name is looked up says so, as
 * the blocking client's does. */
static const char *drv_dial_stage(void *userdata)
{
    vk_async_conn *c = userdata;
    if (c->lookup == NULL)
        return NULL;
    snprintf(c->stage, sizeof c->stage, "lookup %s: name resolution timed out",
             c->base.endpoint.host);
    return c->stage;
}

/* The loop's timer goes off at the earliest wake-up asked for. */
static void schedule_timer(vk_async *a)
{
    int64_t at = vk__driven_next_wake(&a->d, &a->node.base);
    if (at == a->timer_at_ms)
        return;
    a->timer_at_ms = at;
    int64_t ms = -1;
    if (at != VK_ENGINE_NEVER) {
        ms = at - vk__now_ms();
        if (ms < 0)
            ms = 0;
    }
    a->loop.timer(a->loop.data, a, ms, 0, &a->timer_slot);
}

static void drv_wake(void *userdata, int64_t at_ms)
{
    vk_async_conn *c = userdata;
    c->base.wake_at_ms = at_ms;
    schedule_timer(c->client);
}

static vk_engine_driver conn_driver(vk_async_conn *c)
{
    return (vk_engine_driver){
        .userdata = c,
        .open = drv_open,
        .close = drv_close,
        .want_write = drv_want_write,
        .wake = drv_wake,
        .complete = vk__driven_complete,
        .check_master = c->base.is_node ? vk__driven_conn_check_master : NULL,
        .push = c->base.is_node ? NULL : vk__driven_conn_push,
        .dial_stage = drv_dial_stage,
    };
}

/* Sentinel mode: a record for a probe's connection (driven.h). */
static vk_driven_conn *drv_conn_new(vk_driven *d, vk_engine_driver *driver)
{
    vk_async_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->client = (vk_async *)d;
    *driver = conn_driver(c);
    return &c->base;
}

static void drv_conn_closed(vk_driven *d, vk_driven_conn *c)
{
    close_connection((vk_async_conn *)c);
    schedule_timer((vk_async *)d);
}

static void drv_conn_free(vk_driven_conn *c)
{
    close_connection((vk_async_conn *)c);
    free(c);
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* What was released while handlers ran: probes and sockets' ios. */
static void release_pending(vk_async *a)
{
    vk__driven_free_closed(&a->d);
    while (a->released != NULL) {
        vk_async_io *io = a->released;
        a->released = io->next;
        free(io);
    }
}

/* After the engines (which closed their connections) and the core are gone. */
static void release(vk_driven *d)
{
    vk_async *a = (vk_async *)d;
    close_connection(&a->node);
    release_pending(a);
    a->loop.timer(a->loop.data, a, -1, 1, &a->timer_slot);
    free(a->rbuf);
    free(a);
}

/* Every entry from the loop: enter() ... leave(). The outermost leave
 * frees what was released meanwhile, or the client when its free was asked
 * for from inside a completion. */
static void enter(vk_async *a)
{
    vk__driven_enter(&a->d);
}

static void leave(vk_async *a)
{
    if (!vk__driven_leave(&a->d) && a->d.depth == 0)
        release_pending(a);
}

VK_API vk_status vk_async_new(vk_async **out, const vk_config *cfg,
                              const vk_loop_adapter *adapter)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (cfg == NULL)
        return vk__fail(VK_ERR_INVALID_CONFIG, "config is NULL");
    if (adapter == NULL || adapter->version != VK_LOOP_ADAPTER_VERSION ||
        adapter->watch == NULL || adapter->timer == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "the loop adapter is NULL, of another version, or lacks watch/timer");
    vk_async *a = calloc(1, sizeof *a);
    if (a == NULL || (a->rbuf = malloc(VK_ASYNC_READ_CHUNK)) == NULL) {
        free(a);
        return vk__fail_nomem();
    }
    a->loop = *adapter;
    a->timer_at_ms = VK_ENGINE_NEVER;
    a->d.kind = VK_DRIVEN_ASYNC;
    a->d.release = release;
    a->d.conn_new = drv_conn_new;
    a->d.conn_closed = drv_conn_closed;
    a->d.conn_free = drv_conn_free;
    a->d.located = drv_located;
    a->node.client = a;
    vk__driven_conn_init(&a->node.base, &a->d, NULL, true);
    const vk_engine_driver driver = conn_driver(&a->node);
    vk_status st = vk__driven_init(&a->d, cfg, &driver);
    if (st != VK_OK) {
        release_pending(a);
        free(a->rbuf);
        free(a);
        return st;
    }
    a->node.base.engine = a->d.engine;
    *out = a;
    return VK_OK;
}

VK_API void vk_async_free(vk_async *client)
{
    if (client != NULL)
        vk__driven_free(&client->d, "vk_async_free");
}

VK_API void vk_async_handle_io(vk_async_io *io, int events)
{
    if (io == NULL)
        return;
    vk_async_conn *c = io->conn;
    vk_async *a = c->client;
    if (!vk__driven_on_thread(&a->d, "vk_async_handle_io"))
        return;
    if (c->io != io || a->d.free_requested)
        return;   /* a connection closed since the loop saw it ready */
    enter(a);
    bool outer = !a->in_handler;
    a->in_handler = true;
    step(c, events);
    if (outer) {
        flush_wanted(a);
        a->in_handler = false;
    }
    leave(a);
}

VK_API void vk_async_handle_timer(vk_async *client)
{
    if (client == NULL)
        return;
    if (!vk__driven_on_thread(&client->d, "vk_async_handle_timer"))
        return;
    if (client->d.free_requested)
        return;
    enter(client);
    bool outer = !client->in_handler;
    client->in_handler = true;
    client->timer_at_ms = VK_ENGINE_NEVER;   /* it went off */
    step_ready_due(client, vk__now_ms());
    vk__driven_tick(&client->d, &client->node.base, vk__now_ms());
    if (!client->d.free_requested)
        schedule_timer(client);
    if (outer) {
        flush_wanted(client);
        client->in_handler = false;
    }
    leave(client);
}

/* ---- operations ------------------------------------------------------------------- */

VK_API vk_status vk_async_command(vk_async *client, int argc, const char *const *argv,
                                  const size_t *argvlen, vk_async_fn fn, void *userdata,
                                  uint64_t *id)
{
    return vk__driven_command(client != NULL ? &client->d : NULL, "vk_async_command", argc,
                              argv, argvlen, fn, userdata, id);
}

VK_API vk_status vk_async_script_run(vk_async *client, const vk_script *script, int nkeys,
                                     const char *const *keys, const size_t *keylens,
                                     int nargs, const char *const *args,
                                     const size_t *arglens, vk_async_fn fn, void *userdata,
                                     uint64_t *id)
{
    return vk__driven_script_run(client != NULL ? &client->d : NULL, "vk_async_script_run",
                                 script, nkeys, keys, keylens, nargs, args, arglens, fn,
                                 userdata, id);
}

VK_API vk_status vk_async_pipeline_new(vk_pipeline **out, vk_async *client)
{
    return vk__driven_pipeline_new(client != NULL ? &client->d : NULL, "vk_async_pipeline_new",
                                   out);
}

VK_API vk_status vk_async_pipeline_exec(vk_pipeline *pipeline, vk_async_fn fn,
                                        void *userdata, uint64_t *id)
{
    return vk__driven_pipeline_exec(VK_DRIVEN_ASYNC, "vk_async_pipeline_exec", pipeline, fn,
                                    userdata, id);
}

VK_API vk_status vk_async_cancel(vk_async *client, uint64_t id)
{
    return vk__driven_cancel(client != NULL ? &client->d : NULL, "vk_async_cancel", id);
}

VK_API vk_status vk_async_snapshot(vk_snapshot **out, vk_async *client)
{
    return vk__driven_snapshot(out, client != NULL ? &client->d : NULL, "vk_async_snapshot");
}

VK_API int vk_async_poll_events(vk_async *client, int max)
{
    return vk__driven_poll_events(client != NULL ? &client->d : NULL, "vk_async_poll_events", max);
}

VK_API int vk_async_is_connected(const vk_async *client)
{
    return client != NULL && vk__driven_connected(&client->d);
}

VK_API size_t vk_async_pending(const vk_async *client)
{
    return client != NULL ? vk__driven_pending(&client->d) : 0;
}
