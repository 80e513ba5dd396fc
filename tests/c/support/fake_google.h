/*
 * The fake Google endpoints (tests/harness/fake_google.py) for the C tests:
 * a test service-account key generated with openssl at run time, the fake
 * running as a child process (stopped by PID), its control file and its
 * request log.
 */
#ifndef VKTEST_FAKE_GOOGLE_H
#define VKTEST_FAKE_GOOGLE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define VKT_GOOGLE_CLIENT_EMAIL "caller@vk-test.iam.gserviceaccount.com"
#define VKT_GOOGLE_SERVICE_ACCOUNT "redis-user@vk-test.iam.gserviceaccount.com"

typedef struct vkt_google vkt_google;

#define VKT_GOOGLE_MAX_REDIS_ADDRS 8

typedef struct vkt_google_opts {
    const char *redis_unix;       /* unix socket of the server receiving tokens, or NULL */
    /* "host:port" of plain TCP servers that also receive every token (each
     * node of a cluster), NULL-terminated; at most VKT_GOOGLE_MAX_REDIS_ADDRS. */
    const char *const *redis_addrs;
    const char *redis_tls_ca;     /* CA file when those servers serve TLS, or NULL */
    const char *redis_password;   /* those servers' default-user password, or NULL */
    bool https;                   /* serve HTTPS with a self-signed certificate */
    int port;                     /* 0: a free port */
} vkt_google_opts;

/* Starts the fake and waits until it listens; NULL on failure (reason
 * printed). */
vkt_google *vkt_google_start(const vkt_google_opts *opts);
/* SIGTERM, then SIGKILL; the port and files are kept for _restart. */
void vkt_google_kill(vkt_google *g);
/* Starts it again on the same port, with the same log and control file. */
bool vkt_google_restart(vkt_google *g);
/* Stops it and removes its folder. NULL-safe. */
void vkt_google_stop(vkt_google *g);

pid_t vkt_google_pid(const vkt_google *g);
int vkt_google_port(const vkt_google *g);
/* "http://127.0.0.1:<port>" (or https). */
const char *vkt_google_url(const vkt_google *g);
/* With opts.https: the PEM file of the server's self-signed certificate,
 * which a client may trust as its CA. */
const char *vkt_google_cert_path(const vkt_google *g);
/* "127.0.0.1:<port>" for GCE_METADATA_HOST. */
const char *vkt_google_host(const vkt_google *g);

/* Writes the control file ({"status":500} etc.; "" behaves). */
bool vkt_google_control(vkt_google *g, const char *json);
/* Path of the request log (JSON lines). */
const char *vkt_google_log_path(const vkt_google *g);
/* Times (Unix s) of the logged requests to endpoint ("token", "iam",
 * "metadata"); malloc'd array, *count entries. */
double *vkt_google_requests(const vkt_google *g, const char *endpoint, size_t *count);
/* Whole file contents, malloc'd ("" when empty); NULL if unreadable. */
char *vkt_read_text_file(const char *path);

/* The test key, generated once per process. */
const char *vkt_google_private_key_pem(void);      /* the PEM text */
/* A service-account key JSON for token_uri (malloc'd), and its base64. */
char *vkt_google_key_json(const char *token_uri);
char *vkt_google_key_base64(const char *token_uri);
/* base64 of arbitrary bytes (malloc'd). */
char *vkt_base64(const void *data, size_t len);

#endif
