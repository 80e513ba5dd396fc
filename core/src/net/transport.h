/*
 * Moving bytes to and from one server: a TCP (v4/v6) or Unix socket,
 * optionally wrapped in TLS. Knows nothing of RESP.
 *
 * After the connect the socket is blocking with SO_RCVTIMEO/SO_SNDTIMEO set
 * to the read/write timeouts, so a request without a context costs exactly
 * one write() and one read(), like hiredis. Only when a context needs it
 * (deadline, cancellation, interrupt check) do reads and writes poll first.
 */
#ifndef VK_TRANSPORT_H
#define VK_TRANSPORT_H

#include "config/config.h"
#include "proto/proto.h"

#include <openssl/ssl.h>
#include <sys/types.h>

/* ---- tls.c: the client's TLS context, built once from the config -------- */

typedef struct vk_tls vk_tls;

/* Builds an SSL_CTX from a prepared config: CA from base64 PEM, peer and
 * host-name verification always on, the min version (floor per SEMANTICS),
 * optional client certificate. VK_ERR_TLS or VK_ERR_INVALID_CONFIG. */
vk_status vk__tls_new(vk_tls **out, const vk_config *cfg);
void vk__tls_free(vk_tls *tls);

/* ---- transport.c ---------------------------------------------------------- */

typedef struct vk_transport {
    int fd;
    SSL *ssl;                  /* NULL: plain */
    int64_t read_timeout_ms;
    int64_t write_timeout_ms;
    char peer[300];            /* "127.0.0.1:6379", for messages */
} vk_transport;

/* Connects within dial_timeout_ms (and ctx), then runs the TLS handshake
 * when tls is set, verifying the certificate against server_name (or the
 * endpoint's host). On failure t->fd is -1 and the detail is set. */
vk_status vk__transport_open(vk_transport *t, const vk_endpoint *ep, vk_tls *tls,
                             const char *server_name, const vk_config *cfg, vk_context *ctx);
/* Writes all len bytes. */
vk_status vk__transport_write_all(vk_transport *t, const char *buf, size_t len,
                                  vk_context *ctx);
/* Reads at least one byte (at most cap) into buf. */
vk_status vk__transport_read_some(vk_transport *t, char *buf, size_t cap, size_t *got,
                                  vk_context *ctx);
/* TCP_NODELAY and keep-alive probes on a connected TCP socket. */
void vk__transport_tune_tcp(int fd);
/* Changes the read timeout (0: none) of later reads, the socket's included. */
void vk__transport_set_read_timeout(vk_transport *t, int64_t ms);
/* False when the peer closed the connection or sent unsolicited data;
 * never blocks. */
bool vk__transport_idle_ok(vk_transport *t);
/* graceful: send TLS close_notify first. Never blocks for long. */
void vk__transport_close(vk_transport *t, bool graceful);

/* Reads one whole reply: what reader already holds, else bytes from t fed
 * to it until a reply is complete (each read within the read timeout and
 * ctx). A malformed stream or a reply over the budget is VK_ERR_PROTOCOL
 * naming the peer; the stream cannot be trusted after any failure. */
vk_status vk__transport_read_reply(vk_transport *t, redisReader *reader,
                                   vk_reply_budget *budget, redisReply **out,
                                   vk_context *ctx);

/* ---- resolve.c ---------------------------------------------------------- */

struct addrinfo;
/* The stream addresses of host:port (freeaddrinfo() them). A numeric host
 * is converted at once; a name is looked up on a resolver thread while the
 * caller waits within deadline_us and ctx: VK_ERR_TIMEOUT ("... name
 * resolution timed out") or VK_ERR_CANCELLED, the thread finishing alone.
 * A failed lookup is VK_OK with *gai_rc set; peer names the dial in
 * messages. */
vk_status vk__resolve(const char *peer, const char *host, int port, int64_t deadline_us,
                      vk_context *ctx, struct addrinfo **out, int *gai_rc);

/* The same without waiting, for an event loop: a numeric host is
 * converted at once (*pending NULL, *out and *gai_rc as above); a name
 * starts a lookup (*pending) whose descriptor becomes readable when it is
 * done. Take its result then, and release it in any case (a lookup
 * released early finishes alone). */
typedef struct vk_lookup vk_lookup;
vk_status vk__resolve_start(const char *peer, const char *host, int port, vk_lookup **pending,
                            struct addrinfo **out, int *gai_rc);
int vk__lookup_fd(const vk_lookup *l);
/* false while it runs; then the addresses (or NULL and *gai_rc). */
bool vk__lookup_take(vk_lookup *l, struct addrinfo **out, int *gai_rc);
void vk__lookup_release(vk_lookup *l);

/* ---- tls.c: a TLS session on a connected socket ------------------------- */

/* A new SSL for fd, set up for SNI (names only) and host-name or IP
 * verification against name. */
vk_status vk__tls_session_new(vk_tls *tls, int fd, const char *name, SSL **out);
/* While set, SSL_read on ssl reads only what the socket already holds
 * (SSL_ERROR_WANT_READ instead of waiting): for calls that poll first. */
void vk__tls_set_read_nowait(SSL *ssl, bool nowait);
/* Why a handshake failed, for the detail: the verification result when
 * the peer certificate was rejected, else OpenSSL's error queue. */
void vk__tls_describe_failure(SSL *ssl, char *buf, size_t cap);

#endif /* VK_TRANSPORT_H */
