/*
 * The event-loop client (vkclient_async.h): the driver that runs the engine
 * (engine.c) on the host's loop. It owns the socket and the TLS session,
 * moves bytes between them and the engine, and turns the engine's wishes
 * (open, write, close, wake me at T) into non-blocking system calls and the
 * adapter's watch and timer requests. Every decision is the engine's.
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

struct vk_async_io {
    vk_async *client;
    int fd;
    int events;          /* watched now */
    void *slot;          /* the adapter's */
    vk_async_io *next;   /* among the released, until no handler runs */
};

struct vk_async {
    vk_driven d;         /* first: the engine, the core, the thread */
    vk_loop_adapter loop;
    void *timer_slot;

    /* The connection: io NULL when there is none. */
    vk_async_io *io;
    SSL *ssl;
    net_state net;
    vk_lookup *lookup;   /* NET_RESOLVING: owns io's descriptor */
    char stage[320];     /* drv_dial_stage's text */
    struct addrinfo *addrs, *next_addr;

    bool in_handler;     /* handle_io / handle_timer runs: flush when it returns */
    bool flush_wanted;
    vk_async_io *released;
    char *rbuf;
};

/* ---- the watch ---------------------------------------------------------------- */

static void watch(vk_async *a, int events)
{
    vk_async_io *io = a->io;
    if (io == NULL || io->events == events)
        return;
    if (a->loop.watch(a->loop.data, io, io->fd, events, &io->slot) != 0) {
        vk__fail(VK_ERR_IO, "%s: the event loop refused to watch the connection", a->d.peer);
        vk__engine_lost(a->d.engine, VK_ERR_IO, vk__now_ms());
        return;
    }
    io->events = events;
}

/* Closes the socket; its io is freed once no handler can be using it. */
static void close_socket(vk_async *a)
{
    vk_async_io *io = a->io;
    if (io == NULL)
        return;
    a->io = NULL;
    a->loop.watch(a->loop.data, io, io->fd, 0, &io->slot);
    if (a->ssl != NULL) {
        /* No close_notify: the socket may be anything but writable. */
        SSL_free(a->ssl);
        a->ssl = NULL;
    }
    if (a->lookup != NULL) {
        /* The descriptor is the lookup's: it goes with it (a lookup still
         * running finishes alone). */
        vk__lookup_release(a->lookup);
        a->lookup = NULL;
    } else {
        close(io->fd);
    }
    io->fd = -1;
    io->next = a->released;
    a->released = io;
}

static void forget_addresses(vk_async *a)
{
    if (a->addrs != NULL)
        freeaddrinfo(a->addrs);
    a->addrs = a->next_addr = NULL;
}

static void close_connection(vk_async *a)
{
    forget_addresses(a);
    close_socket(a);
}

/* ---- opening ---------------------------------------------------------------- */

static void opened(vk_async *a);
static void open_failed(vk_async *a, vk_status st)
{
    close_connection(a);
    vk__engine_open_failed(a->d.engine, st, vk__now_ms());
}

static vk_status new_io(vk_async *a, int fd)
{
    vk_async_io *io = calloc(1, sizeof *io);
    if (io == NULL) {
        if (a->lookup != NULL) {
            vk__lookup_release(a->lookup);
            a->lookup = NULL;
        } else {
            close(fd);
        }
        return vk__fail_nomem();
    }
    io->client = a;
    io->fd = fd;
    a->io = io;
    return VK_OK;
}

/* Starts a connect to the next address: VK_OK when one is under way (or
 * done), else the reason the last one failed. */
static vk_status connect_next(vk_async *a, const struct sockaddr *sa, socklen_t len, int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vk__fail(VK_ERR_IO, "dial %s: socket: %s", a->d.peer, strerror(errno));
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
        int err = errno;
        close(fd);
        return vk__fail(VK_ERR_IO, "dial %s: %s", a->d.peer, strerror(err));
    }
    vk_status st = new_io(a, fd);
    if (st != VK_OK)
        return st;
    a->net = NET_CONNECTING;
    watch(a, VK_EV_WRITE);
    return VK_OK;
}

/* Tries the addresses left, in order, until a connect is under way; last
 * is the failure of the one before (VK_OK: none was tried). */
static void dial_next_address(vk_async *a, vk_status last)
{
    vk_status st = last;
    while (a->next_addr != NULL) {
        struct addrinfo *ai = a->next_addr;
        a->next_addr = ai->ai_next;
        st = connect_next(a, ai->ai_addr, ai->ai_addrlen, ai->ai_family);
        if (st == VK_OK)
            return;
    }
    if (st == VK_OK)
        st = vk__fail(VK_ERR_IO, "dial %s: no address", a->d.peer);
    open_failed(a, st);
}

/* The node's addresses are known (list, or the lookup's failure rc):
 * dial them in order. */
static void addresses_ready(vk_async *a, struct addrinfo *list, int rc)
{
    if (rc != 0) {
        open_failed(a, vk__fail(VK_ERR_IO, "dial %s: lookup %s: %s", a->d.peer,
                                a->d.endpoint.host, gai_strerror(rc)));
        return;
    }
    a->addrs = a->next_addr = list;
    dial_next_address(a, VK_OK);
}

static void drv_open(void *userdata)
{
    vk_async *a = userdata;
    const vk_endpoint *ep = &a->d.endpoint;
    if (ep->is_unix) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (strlen(ep->path) >= sizeof sa.sun_path) {
            open_failed(a, vk__fail(VK_ERR_IO, "dial %s: socket path too long", a->d.peer));
            return;
        }
        memcpy(sa.sun_path, ep->path, strlen(ep->path) + 1);
        vk_status st = connect_next(a, (const struct sockaddr *)&sa, sizeof sa, AF_UNIX);
        if (st != VK_OK)
            open_failed(a, st);
        return;
    }
    /* A numeric address needs no lookup. A name is looked up on a resolver
     * thread whose descriptor the loop watches: the loop never waits for
     * it, and the engine's dial timeout bounds it. */
    int rc = 0;
    struct addrinfo *list = NULL;
    vk_lookup *pending = NULL;
    vk_status st = vk__resolve_start(a->d.peer, ep->host, ep->port, &pending, &list, &rc);
    if (st == VK_OK && pending != NULL) {
        a->lookup = pending;
        if ((st = new_io(a, vk__lookup_fd(pending))) == VK_OK) {
            a->net = NET_RESOLVING;
            watch(a, VK_EV_READ);
            return;
        }
    }
    if (st != VK_OK) {
        open_failed(a, st);
        return;
    }
    addresses_ready(a, list, rc);
}

/* The lookup's descriptor is readable: its addresses, then the dial. */
static void lookup_done(vk_async *a)
{
    int rc = 0;
    struct addrinfo *list = NULL;
    if (!vk__lookup_take(a->lookup, &list, &rc))
        return;
    close_socket(a);   /* the lookup's descriptor, and the lookup */
    addresses_ready(a, list, rc);
}

static void tls_step(vk_async *a)
{
    ERR_clear_error();
    int rc = SSL_connect(a->ssl);
    if (rc == 1) {
        opened(a);
        return;
    }
    int err = SSL_get_error(a->ssl, rc);
    if (err == SSL_ERROR_WANT_READ) {
        watch(a, VK_EV_READ);
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        watch(a, VK_EV_WRITE);
        return;
    }
    char why[256];
    vk__tls_describe_failure(a->ssl, why, sizeof why);
    ERR_clear_error();
    open_failed(a, vk__fail(VK_ERR_TLS, "handshake with %s failed: %s", a->d.peer, why));
}

/* The connect finished: its outcome, then TLS or the engine. */
static void connect_done(vk_async *a)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(a->io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        /* This address failed: its socket goes, the next one is tried. */
        vk_status st = vk__fail(VK_ERR_IO, "dial %s: %s", a->d.peer, strerror(err));
        close_socket(a);
        dial_next_address(a, st);
        return;
    }
    if (!a->d.endpoint.is_unix)
        vk__transport_tune_tcp(a->io->fd);
    if (a->d.core->tls == NULL) {
        opened(a);
        return;
    }
    const vk_config *cfg = vk__client_config(a->d.core);
    const char *name = cfg->tls_server_name != NULL && cfg->tls_server_name[0] != '\0'
                           ? cfg->tls_server_name
                           : a->d.endpoint.host;
    vk_status st = vk__tls_session_new(a->d.core->tls, a->io->fd, name, &a->ssl);
    if (st != VK_OK) {
        open_failed(a, st);
        return;
    }
    /* The engine's output may move between a write that would block and
     * its retry, and a write may take part of it. */
    SSL_set_mode(a->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    a->net = NET_TLS;
    tls_step(a);
}

static void opened(vk_async *a)
{
    forget_addresses(a);
    a->net = NET_OPEN;
    watch(a, VK_EV_READ);
    vk__engine_opened(a->d.engine, vk__now_ms());
}

/* ---- moving bytes ------------------------------------------------------------ */

static vk_status io_failure(vk_async *a, const char *op, int rc)
{
    if (a->ssl != NULL) {
        int err = SSL_get_error(a->ssl, rc);
        if (err == SSL_ERROR_ZERO_RETURN)
            return vk__fail(VK_ERR_IO, "%s %s: connection closed by peer", op, a->d.peer);
        if (err == SSL_ERROR_SYSCALL) {
            if (errno == 0)
                return vk__fail(VK_ERR_IO, "%s %s: EOF", op, a->d.peer);
            return vk__fail(VK_ERR_IO, "%s %s: %s", op, a->d.peer, strerror(errno));
        }
        char why[256];
        vk__tls_describe_failure(a->ssl, why, sizeof why);
        ERR_clear_error();
        return vk__fail(VK_ERR_TLS, "%s %s: %s", op, a->d.peer, why);
    }
    if (rc == 0)
        return vk__fail(VK_ERR_IO, "%s %s: EOF", op, a->d.peer);
    return vk__fail(VK_ERR_IO, "%s %s: %s", op, a->d.peer, strerror(errno));
}

/* -1: would block; 0: failed (detail set); else the bytes moved. */
static ssize_t send_some(vk_async *a, const char *buf, size_t len)
{
    if (a->ssl != NULL) {
        ERR_clear_error();
        int n = SSL_write(a->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n > 0)
            return n;
        int err = SSL_get_error(a->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
            return -1;
        io_failure(a, "write", n);
        return 0;
    }
    for (;;) {
        ssize_t n = send(a->io->fd, buf, len, MSG_NOSIGNAL);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        io_failure(a, "write", 1);
        return 0;
    }
}

static ssize_t recv_some(vk_async *a, char *buf, size_t cap)
{
    if (a->ssl != NULL) {
        ERR_clear_error();
        int n = SSL_read(a->ssl, buf, (int)cap);
        if (n > 0)
            return n;
        int err = SSL_get_error(a->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            return -1;
        io_failure(a, "read", n);
        return 0;
    }
    for (;;) {
        ssize_t n = recv(a->io->fd, buf, cap, 0);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        if (n == 0)
            errno = 0;
        io_failure(a, "read", (int)n);
        return 0;
    }
}

/* Writes what the engine has until it is all out or the socket is full;
 * then watches for write readiness only if something is left. */
static void flush(vk_async *a)
{
    a->flush_wanted = false;
    if (a->io == NULL || a->net != NET_OPEN)
        return;
    vk_async_io *io = a->io;
    for (;;) {
        size_t len;
        const char *out = vk__engine_output(a->d.engine, &len);
        if (len == 0) {
            watch(a, VK_EV_READ);
            return;
        }
        ssize_t n = send_some(a, out, len);
        if (n < 0) {
            watch(a, VK_EV_READ | VK_EV_WRITE);
            return;
        }
        if (n == 0) {
            vk__engine_lost(a->d.engine, vk_last_status(), vk__now_ms());
            return;
        }
        vk__engine_wrote(a->d.engine, (size_t)n, vk__now_ms());
        if (a->io != io)
            return;   /* the connection went meanwhile */
    }
}

static void read_ready(vk_async *a)
{
    vk_async_io *io = a->io;
    for (int i = 0; i < VK_ASYNC_READS_PER_EVENT && a->io == io && !a->d.free_requested; i++) {
        ssize_t n = recv_some(a, a->rbuf, VK_ASYNC_READ_CHUNK);
        if (n < 0)
            return;
        if (n == 0) {
            vk__engine_lost(a->d.engine, vk_last_status(), vk__now_ms());
            return;
        }
        vk__engine_feed(a->d.engine, a->rbuf, (size_t)n, vk__now_ms());
        /* A short read emptied the socket; TLS may still hold a record. */
        if ((size_t)n < VK_ASYNC_READ_CHUNK && (a->ssl == NULL || SSL_pending(a->ssl) == 0))
            return;
    }
}

/* ---- the engine's driver functions --------------------------------------------- */

static void drv_close(void *userdata)
{
    close_connection(userdata);
}

static void drv_want_write(void *userdata)
{
    vk_async *a = userdata;
    if (a->in_handler)
        a->flush_wanted = true;
    else if (a->io != NULL && a->net == NET_OPEN)
        watch(a, VK_EV_READ | VK_EV_WRITE);
}

/* A dial that runs out of time while the name is looked up says so, as
 * the blocking client's does. */
static const char *drv_dial_stage(void *userdata)
{
    vk_async *a = userdata;
    if (a->lookup == NULL)
        return NULL;
    snprintf(a->stage, sizeof a->stage, "lookup %s: name resolution timed out",
             a->d.endpoint.host);
    return a->stage;
}

static void drv_wake(void *userdata, int64_t at_ms)
{
    vk_async *a = userdata;
    int64_t ms = -1;
    if (at_ms != VK_ENGINE_NEVER) {
        ms = at_ms - vk__now_ms();
        if (ms < 0)
            ms = 0;
    }
    a->loop.timer(a->loop.data, a, ms, 0, &a->timer_slot);
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void release_ios(vk_async *a)
{
    while (a->released != NULL) {
        vk_async_io *io = a->released;
        a->released = io->next;
        free(io);
    }
}

/* After the engine (which closed the connection) and the core are gone. */
static void release(vk_driven *d)
{
    vk_async *a = (vk_async *)d;
    close_connection(a);
    a->loop.timer(a->loop.data, a, -1, 1, &a->timer_slot);
    release_ios(a);
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
        release_ios(a);
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
    a->d.kind = VK_DRIVEN_ASYNC;
    a->d.release = release;
    const vk_engine_driver driver = {
        .userdata = a,
        .open = drv_open,
        .close = drv_close,
        .want_write = drv_want_write,
        .wake = drv_wake,
        .complete = vk__driven_complete,
        .dial_stage = drv_dial_stage,
    };
    vk_status st = vk__driven_init(&a->d, cfg, &driver);
    if (st != VK_OK) {
        free(a->rbuf);
        free(a);
        return st;
    }
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
    vk_async *a = io->client;
    if (!vk__driven_on_thread(&a->d, "vk_async_handle_io"))
        return;
    if (a->io != io || a->d.free_requested)
        return;   /* a connection closed since the loop saw it ready */
    enter(a);
    bool outer = !a->in_handler;
    a->in_handler = true;
    switch (a->net) {
    case NET_RESOLVING:
        lookup_done(a);
        break;
    case NET_CONNECTING:
        connect_done(a);
        break;
    case NET_TLS:
        tls_step(a);
        break;
    case NET_OPEN:
        if (events & VK_EV_READ)
            read_ready(a);
        if (a->io == io && (events & VK_EV_WRITE))
            a->flush_wanted = true;
        break;
    }
    if (outer) {
        if (a->flush_wanted && !a->d.free_requested)
            flush(a);
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
    vk__engine_tick(client->d.engine, vk__now_ms());
    if (outer) {
        if (client->flush_wanted && !client->d.free_requested)
            flush(client);
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

VK_API int vk_async_is_connected(const vk_async *client)
{
    return client != NULL && client->d.engine != NULL && vk__engine_ready(client->d.engine);
}

VK_API size_t vk_async_pending(const vk_async *client)
{
    return client != NULL && client->d.engine != NULL ? vk__engine_pending(client->d.engine)
                                                      : 0;
}
