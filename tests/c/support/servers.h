/*
 * Real servers for the C tests: valkey-server / redis-server processes on
 * free loopback ports, each in its own temporary folder, stopped by PID.
 */
#ifndef VKTEST_SERVERS_H
#define VKTEST_SERVERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct vkt_server vkt_server;

typedef struct vkt_server_opts {
    const char *binary;        /* NULL: $VK_TEST_SERVER, else valkey-server */
    bool tls;                  /* serve TLS only, with the harness CA */
    bool tls11_only;           /* serve TLS 1.1 and nothing else (floor tests) */
    const char *requirepass;   /* password of the default user, or NULL */
    const char *const *extra;  /* more "directive value" config lines, NULL-ended */
    bool unix_socket;          /* also listen on a unix socket */
} vkt_server_opts;

/* Starts a server and waits until it answers PING; NULL on failure
 * (the reason is printed). */
vkt_server *vkt_server_start(const vkt_server_opts *opts);
int vkt_server_port(const vkt_server *s);
pid_t vkt_server_pid(const vkt_server *s);
/* "127.0.0.1:<port>" */
const char *vkt_server_address(const vkt_server *s);

/* Monotonic milliseconds, and a sleep that resumes after signals. */
int64_t vkt_now_ms(void);
/* The same clock in microseconds. */
int64_t vkt_now_us(void);
void vkt_sleep_ms(int ms);
/* "unix:<path>" when unix_socket was asked for, else NULL. */
const char *vkt_server_unix_address(const vkt_server *s);
/* SIGKILL, wait. The port stays reserved for vkt_server_restart(). */
void vkt_server_kill(vkt_server *s);
/* Starts the server again on the same port; true when it answers. */
bool vkt_server_restart(vkt_server *s);
/* Runs a command through valkey-cli/redis-cli-free raw RESP on a fresh
 * socket (no TLS); returns the raw first reply line, malloc'd. */
char *vkt_server_cmd(const vkt_server *s, const char *const *argv, int argc);
/* Like vkt_server_cmd(), but the reply's line number `line` (0-based):
 * e.g. line 4 of GET-MASTER-ADDR-BY-NAME's "*2 $9 127.0.0.1 $4 6380" is
 * the port. */
char *vkt_server_cmd_line(const vkt_server *s, const char *const *argv, int argc, int line);
/* Stops (SIGTERM, then SIGKILL), removes the temporary folder, frees. */
void vkt_server_stop(vkt_server *s);

/* The harness CA (generated once per process with openssl), base64 of PEM,
 * for vk_config_set_tls(). A second, unrelated CA for "wrong CA" tests. */
const char *vkt_ca_base64(void);
const char *vkt_other_ca_base64(void);
/* The path of the harness CA's PEM file (for tools that read a file). */
const char *vkt_ca_path(void);
/* Client certificate and key signed by the harness CA, base64 of PEM. */
const char *vkt_client_cert_base64(void);
const char *vkt_client_key_base64(void);

/* "valkey-server" or "redis-server", from $VK_TEST_SERVER. */
const char *vkt_server_binary(void);

/* A TCP port free on the loopback right now (0 when none was found), for
 * a second listener such as a cluster bus. Another process may take it
 * before it is bound. */
int vkt_free_port(void);
/* A blocking TCP connection to ip:port (a test's own host of the bytes
 * mode); -1 with errno set when it fails. */
int vkt_dial_tcp(const char *ip, int port);

#endif
