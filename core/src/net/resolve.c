/*
 * Host name resolution bounded by the dial deadline and the context.
 *
 * getaddrinfo() cannot be cancelled and may wait 30 s or more on a
 * resolver that does not answer. A name is therefore looked up on a thread
 * of its own while the caller waits on an eventfd together with the
 * deadline and the context (its cancel fd and interrupt check). A caller
 * that gives up leaves: the lookup state is shared and refcounted, and
 * whichever of the two lets go last frees it, with any result.
 *
 * Numeric addresses never need a resolver: they are converted inline
 * first, so connecting to 127.0.0.1 or ::1 costs no thread.
 *
 * An event loop starts a lookup and watches its descriptor instead of
 * waiting (vk__resolve_start): the loop never waits on a resolver.
 */
#include "net/transport.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct vk_lookup {
    atomic_int refs;         /* the caller and the resolver thread */
    atomic_bool done;        /* rc and list are set */
    int done_fd;             /* eventfd, readable once done */
    int rc;                  /* getaddrinfo()'s result */
    struct addrinfo *list;
    char port[8];
    char host[];
};
typedef vk_lookup lookup;

static int getaddrinfo_stream(const char *host, const char *port, int flags,
                              struct addrinfo **out)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = flags;
    return getaddrinfo(host, port, &hints, out);
}

/* The blocking lookup, as the resolver thread runs it. */
static int resolve_name(const char *host, const char *port, struct addrinfo **out)
{
    int rc = getaddrinfo_stream(host, port, AI_ADDRCONFIG | AI_NUMERICSERV, out);
    if (rc == EAI_ADDRFAMILY || rc == EAI_NONAME) {
        /* AI_ADDRCONFIG hides ::1 on hosts whose only IPv6 is loopback. */
        rc = getaddrinfo_stream(host, port, AI_NUMERICSERV, out);
    }
    return rc;
}

static void lookup_release(lookup *l)
{
    if (atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    if (l->list != NULL)
        freeaddrinfo(l->list);
    close(l->done_fd);
    free(l);
}

static void *resolver_main(void *arg)
{
    lookup *l = arg;
    l->rc = resolve_name(l->host, l->port, &l->list);
    atomic_store(&l->done, true);
    uint64_t one = 1;
    ssize_t written = write(l->done_fd, &one, sizeof one);
    (void)written; /* a fresh eventfd counter cannot overflow */
    lookup_release(l);
    return NULL;
}

/* Starts the resolver thread with every signal blocked, so that signals
 * meant for the host (Python's SIGINT, for one) never land on it. */
static int start_resolver(lookup *l)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0)
        return rc;
    (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    rc = pthread_create(&thread, &attr, resolver_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc;
}

static vk_status lookup_new(lookup **out, const char *peer, const char *host,
                            const char *port)
{
    size_t host_len = strlen(host);
    lookup *l = calloc(1, sizeof *l + host_len + 1);
    if (l == NULL)
        return vk__fail_nomem();
    l->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->done_fd < 0) {
        int err = errno;
        free(l);
        return vk__fail(VK_ERR_IO, "dial %s: lookup %s: eventfd: %s", peer, host,
                        strerror(err));
    }
    atomic_init(&l->refs, 2);
    atomic_init(&l->done, false);
    snprintf(l->port, sizeof l->port, "%s", port);
    memcpy(l->host, host, host_len + 1);
    *out = l;
    return VK_OK;
}

/* A numeric host converted at once (VK_OK, *numeric true), else nothing
 * done. */
static void convert_numeric(const char *host, const char *service, struct addrinfo **out,
                            int *gai_rc, bool *numeric)
{
    int rc = getaddrinfo_stream(host, service, AI_NUMERICHOST | AI_NUMERICSERV, out);
    *numeric = rc != EAI_NONAME;
    *gai_rc = *numeric ? rc : 0;
}

/* A lookup of host on its own thread. */
static vk_status lookup_start(lookup **out, const char *peer, const char *host,
                              const char *service)
{
    lookup *l = NULL;
    vk_status st = lookup_new(&l, peer, host, service);
    if (st != VK_OK)
        return st;
    int rc = start_resolver(l);
    if (rc != 0) {
        close(l->done_fd);
        free(l);
        return vk__fail(VK_ERR_IO, "dial %s: lookup %s: cannot start a resolver thread: %s",
                        peer, host, strerror(rc));
    }
    *out = l;
    return VK_OK;
}

vk_status vk__resolve_start(const char *peer, const char *host, int port, vk_lookup **pending,
                            struct addrinfo **out, int *gai_rc)
{
    *pending = NULL;
    *out = NULL;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    bool numeric;
    convert_numeric(host, service, out, gai_rc, &numeric);
    return numeric ? VK_OK : lookup_start(pending, peer, host, service);
}

int vk__lookup_fd(const vk_lookup *l)
{
    return l->done_fd;
}

bool vk__lookup_take(vk_lookup *l, struct addrinfo **out, int *gai_rc)
{
    if (!atomic_load(&l->done))
        return false;
    *gai_rc = l->rc;
    *out = l->list;
    l->list = NULL;
    return true;
}

void vk__lookup_release(vk_lookup *l)
{
    if (l != NULL)
        lookup_release(l);
}

vk_status vk__resolve(const char *peer, const char *host, int port, int64_t deadline_us,
                      vk_context *ctx, struct addrinfo **out, int *gai_rc)
{
    *out = NULL;
    *gai_rc = 0;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    bool numeric;
    convert_numeric(host, service, out, gai_rc, &numeric);
    if (numeric)
        return VK_OK;

    /* No thread for a call that is already over. */
    vk_status st = vk__ctx_check(ctx);
    if (st != VK_OK)
        return st;
    lookup *l = NULL;
    st = lookup_start(&l, peer, host, service);
    if (st != VK_OK)
        return st;
    st = vk__ctx_wait_fd(ctx, l->done_fd, POLLIN, deadline_us);
    if (st == VK_ERR_TIMEOUT && vk__ctx_deadline_us(ctx) > deadline_us)
        st = vk__fail(VK_ERR_TIMEOUT, "dial %s: lookup %s: name resolution timed out", peer,
                      host);
    if (st == VK_OK)
        vk__lookup_take(l, out, gai_rc);
    lookup_release(l);
    return st;
}
