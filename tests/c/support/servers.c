/*
 * Real servers for the C tests (see servers.h).
 *
 * Each server runs as a child process in its own mkdtemp folder with a
 * generated config file. Besides its TCP (or TLS) port, every server also
 * listens on a unix socket inside that folder: the harness uses it to check
 * readiness and to run vkt_server_cmd(), so that both work the same way for
 * plain and TLS-only servers. Servers are stopped by PID only, and whatever
 * is still running when the test program exits is stopped and its folder
 * removed. On Linux a server also dies with the thread that started it
 * (PR_SET_PDEATHSIG), so a crashed or timed-out test leaves nothing behind.
 */
#include "servers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

extern char **environ;

enum {
    START_TIMEOUT_MS = 10000,    /* a server must answer PING within this */
    STOP_TIMEOUT_MS = 5000,      /* SIGTERM, then SIGKILL after this */
    COMMAND_TIMEOUT_MS = 10000,  /* vkt_server_cmd() waits this long */
    START_ATTEMPTS = 5           /* fresh ports tried when one was taken */
};

struct vkt_server {
    char *binary_path;           /* resolved in PATH before any fork */
    bool tls;
    bool tls11_only;
    bool unix_socket;
    char *requirepass;
    char **extra;                /* copied "directive value" lines, NULL-ended */

    char dir[80];                /* short: the unix socket path lives in it */
    char conf_path[160];
    char log_path[160];
    char sock_path[108];         /* fits sockaddr_un.sun_path */
    char address[32];
    char unix_address[128];
    int port;
    pid_t pid;                   /* 0 when not running */

    pid_t owner;                 /* the process that started it */
    struct vkt_server *next;     /* registry for the exit cleanup */
};

/* ---- files, processes, encoding ------------------------------------------- */

int64_t vkt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t vkt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void vkt_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The folder for temporary files: $TMPDIR when short enough for unix socket
 * paths inside it, else /tmp. */
static const char *temp_root(void)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp != NULL && tmp[0] == '/' && strlen(tmp) < 40)
        return tmp;
    return "/tmp";
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir)
{
    if (dir[0] != '\0')
        nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* A temporary folder named prefix-XXXXXX under temp_root() into out, with
 * the PID of its owner in it, so that folders left by a test that was
 * killed (no exit handler ran) can be recognised and removed later. */
static bool make_temp_dir(char *out, size_t cap, const char *prefix)
{
    snprintf(out, cap, "%s/%s-XXXXXX", temp_root(), prefix);
    if (mkdtemp(out) == NULL) {
        fprintf(stderr, "servers: mkdtemp: %s\n", strerror(errno));
        out[0] = '\0';
        return false;
    }
    char path[200], pid[32];
    snprintf(path, sizeof path, "%s/owner.pid", out);
    snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    return write_file(path, pid);
}

/* Removes vkt-* folders whose owner process no longer exists. */
static void remove_stale_dirs(void)
{
    DIR *dir = opendir(temp_root());
    if (dir == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, "vkt-", 4) != 0 || strlen(e->d_name) > 60)
            continue;
        char path[200];
        snprintf(path, sizeof path, "%.40s/%.60s/owner.pid", temp_root(), e->d_name);
        FILE *f = fopen(path, "r");
        long owner = 0;
        if (f == NULL)
            continue;
        if (fscanf(f, "%ld", &owner) != 1)
            owner = 0;
        fclose(f);
        if (owner > 0 && kill((pid_t)owner, 0) != 0 && errno == ESRCH) {
            snprintf(path, sizeof path, "%.40s/%.60s", temp_root(), e->d_name);
            remove_tree(path);
        }
    }
    closedir(dir);
}

/* The whole file, NUL-terminated, malloc'd; NULL when unreadable. */
static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL) {
        buf[len] = '\0';
        if (len_out)
            *len_out = len;
    }
    return buf;
}

static char *base64_encode(const unsigned char *data, size_t len)
{
    static const char table[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    char *p = out;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)data[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)data[i + 1] << 8;
        if (i + 2 < len)
            v |= data[i + 2];
        *p++ = table[(v >> 18) & 63];
        *p++ = table[(v >> 12) & 63];
        *p++ = i + 1 < len ? table[(v >> 6) & 63] : '=';
        *p++ = i + 2 < len ? table[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

static char *base64_of_file(const char *path)
{
    size_t len = 0;
    char *pem = read_file(path, &len);
    if (pem == NULL)
        return NULL;
    char *b64 = base64_encode((const unsigned char *)pem, len);
    free(pem);
    return b64;
}

/* The absolute path of a program found in $PATH (malloc'd), or NULL. Done
 * in the parent so the forked child only has to call execv(). */
static char *find_program(const char *name)
{
    if (strchr(name, '/') != NULL)
        return access(name, X_OK) == 0 ? strdup(name) : NULL;
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        char candidate[4096];
        if (n > 0 && n + strlen(name) + 2 < sizeof candidate) {
            snprintf(candidate, sizeof candidate, "%.*s/%s", (int)n, path, name);
            if (access(candidate, X_OK) == 0)
                return strdup(candidate);
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return NULL;
}

/* Runs a program to completion with its output in log_path; true on exit 0. */
static bool run_program(const char *const *argv, const char *log_path)
{
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &actions, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        fprintf(stderr, "servers: cannot run %s: %s\n", argv[0], strerror(rc));
        return false;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- sockets ---------------------------------------------------------------- */

static bool has_ipv6_loopback;
static pthread_once_t ipv6_once = PTHREAD_ONCE_INIT;

static void probe_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    has_ipv6_loopback = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
}

/* Servers also listen on ::1 where the machine has an IPv6 loopback. */
static bool ipv6_loopback_available(void)
{
    pthread_once(&ipv6_once, probe_ipv6_loopback);
    return has_ipv6_loopback;
}

/* Binds port on the loopback of one family; true when it was free. */
static bool port_free_on(int family, int port, int *chosen)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok;
    if (family == AF_INET) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        socklen_t len = sizeof sa;
        if (ok && chosen != NULL && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
            *chosen = ntohs(sa.sin_port);
    } else {
        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                                   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
        ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    }
    close(fd);
    return ok;
}

/* A port free on 127.0.0.1 and, where it exists, ::1. Another process may
 * still take it before the server binds it: the start retries then. */
static int free_port(void)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        int port = 0;
        if (!port_free_on(AF_INET, 0, &port) || port == 0)
            return 0;
        if (!ipv6_loopback_available() || port_free_on(AF_INET6, port, NULL))
            return port;
    }
    return 0;
}

static int connect_unix(const char *path, int timeout_ms)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool tcp_port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Appends one command in RESP to a growing buffer; false on no memory. */
static bool append_command(char **buf, size_t *len, const char *const *argv, int argc)
{
    size_t need = 32;
    for (int i = 0; i < argc; i++)
        need += strlen(argv[i]) + 32;
    char *bigger = realloc(*buf, *len + need);
    if (bigger == NULL)
        return false;
    *buf = bigger;
    *len += (size_t)sprintf(*buf + *len, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        *len += (size_t)sprintf(*buf + *len, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    return true;
}

/* Reads up to and including the line number `index` (0-based) of the
 * replies; returns that line without CRLF, malloc'd, or NULL. */
static char *read_line(int fd, int index)
{
    size_t cap = 256, len = 0;
    char *buf = malloc(cap);
    int64_t deadline = vkt_now_ms() + COMMAND_TIMEOUT_MS;
    while (buf != NULL && vkt_now_ms() < deadline) {
        /* Look for the wanted line in what arrived so far. */
        int line = 0;
        size_t start = 0;
        for (size_t i = 0; i + 1 < len; i++) {
            if (buf[i] == '\r' && buf[i + 1] == '\n') {
                if (line == index) {
                    size_t n = i - start;
                    memmove(buf, buf + start, n);
                    buf[n] = '\0';
                    return buf;
                }
                line++;
                start = i + 2;
            }
        }
        if (cap - len < 128) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                break;
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    free(buf);
    return NULL;
}

/* ---- the registry of live servers, for the exit cleanup ------------------------ */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static vkt_server *registry;
static pthread_once_t cleanup_once = PTHREAD_ONCE_INIT;
static char ca_root[128];
static pid_t ca_owner;

static void terminate(vkt_server *s, int sig);

/* At exit: stops what this process started. Children forked by a test run
 * the same handler and must leave the parent's servers alone. */
static void cleanup_at_exit(void)
{
    pthread_mutex_lock(&registry_lock);
    vkt_server *s = registry;
    registry = NULL;
    pthread_mutex_unlock(&registry_lock);
    while (s != NULL) {
        vkt_server *next = s->next;
        if (s->owner == getpid()) {
            terminate(s, SIGTERM);
            remove_tree(s->dir);
        }
        s = next;
    }
    if (ca_owner == getpid())
        remove_tree(ca_root);
}

static void register_cleanup(void)
{
    remove_stale_dirs();
    atexit(cleanup_at_exit);
}

static void registry_add(vkt_server *s)
{
    pthread_once(&cleanup_once, register_cleanup);
    pthread_mutex_lock(&registry_lock);
    s->next = registry;
    registry = s;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(vkt_server *s)
{
    pthread_mutex_lock(&registry_lock);
    for (vkt_server **p = &registry; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- certificates ------------------------------------------------------------- */

typedef struct ca_files {
    char dir[160];
    char ca_cert[200], ca_key[200];
    char server_cert[200], server_key[200];
    char client_cert[200], client_key[200];
    char *ca_b64, *client_cert_b64, *client_key_b64;
} ca_files;

static ca_files harness_ca, other_ca;
static bool certificates_ok;
static pthread_once_t certificates_once = PTHREAD_ONCE_INIT;

static bool openssl(const ca_files *ca, const char *const *argv)
{
    char log[220];
    snprintf(log, sizeof log, "%s/openssl.log", ca->dir);
    if (run_program(argv, log))
        return true;
    fprintf(stderr, "servers: openssl %s failed\n", argv[1]);
    char *text = read_file(log, NULL);
    if (text != NULL)
        fputs(text, stderr);
    free(text);
    return false;
}

/* A P-256 key and a certificate for subject, signed by the CA, 10 years. */
static bool sign_certificate(const ca_files *ca, const char *name, const char *subject,
                  const char *extensions, char *cert_out, char *key_out)
{
    char csr[200], ext[200];
    snprintf(key_out, 200, "%s/%s.key", ca->dir, name);
    snprintf(cert_out, 200, "%s/%s.crt", ca->dir, name);
    snprintf(csr, sizeof csr, "%s/%s.csr", ca->dir, name);
    snprintf(ext, sizeof ext, "%s/%s.ext", ca->dir, name);
    if (!write_file(ext, extensions))
        return false;
    const char *genkey[] = { "openssl", "ecparam", "-name", "prime256v1", "-genkey",
                             "-noout", "-out", key_out, NULL };
    const char *req[] = { "openssl", "req", "-new", "-key", key_out, "-subj", subject,
                          "-out", csr, NULL };
    const char *sign[] = { "openssl", "x509", "-req", "-in", csr, "-CA", ca->ca_cert,
                           "-CAkey", ca->ca_key, "-CAcreateserial", "-days", "3650",
                           "-sha256", "-extfile", ext, "-out", cert_out, NULL };
    return openssl(ca, genkey) && openssl(ca, req) && openssl(ca, sign);
}

/* A CA in dir, with a server certificate for localhost/127.0.0.1/::1 and
 * a client certificate signed by it. */
static bool make_ca(ca_files *ca, const char *dir, const char *name)
{
    snprintf(ca->dir, sizeof ca->dir, "%s", dir);
    if (mkdir(dir, 0700) != 0)
        return false;
    snprintf(ca->ca_key, sizeof ca->ca_key, "%s/ca.key", dir);
    snprintf(ca->ca_cert, sizeof ca->ca_cert, "%s/ca.crt", dir);
    char subject[128];
    snprintf(subject, sizeof subject, "/CN=%s", name);
    const char *genkey[] = { "openssl", "ecparam", "-name", "prime256v1", "-genkey",
                             "-noout", "-out", ca->ca_key, NULL };
    const char *self_sign[] = { "openssl", "req", "-x509", "-new", "-key", ca->ca_key,
                                "-sha256", "-days", "3650", "-subj", subject,
                                "-addext", "basicConstraints=critical,CA:TRUE",
                                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                                "-out", ca->ca_cert, NULL };
    if (!openssl(ca, genkey) || !openssl(ca, self_sign))
        return false;
    if (!sign_certificate(ca, "server", "/CN=localhost",
               "basicConstraints=CA:FALSE\n"
               "keyUsage=critical,digitalSignature,keyEncipherment\n"
               "extendedKeyUsage=serverAuth,clientAuth\n"
               "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n",
               ca->server_cert, ca->server_key))
        return false;
    if (!sign_certificate(ca, "client", "/CN=vkclient test client",
               "basicConstraints=CA:FALSE\n"
               "keyUsage=critical,digitalSignature,keyEncipherment\n"
               "extendedKeyUsage=clientAuth\n",
               ca->client_cert, ca->client_key))
        return false;
    ca->ca_b64 = base64_of_file(ca->ca_cert);
    ca->client_cert_b64 = base64_of_file(ca->client_cert);
    ca->client_key_b64 = base64_of_file(ca->client_key);
    return ca->ca_b64 && ca->client_cert_b64 && ca->client_key_b64;
}

static void make_certificates(void)
{
    if (!make_temp_dir(ca_root, sizeof ca_root, "vkt-ca"))
        return;
    ca_owner = getpid();
    pthread_once(&cleanup_once, register_cleanup);
    char dir[160];
    snprintf(dir, sizeof dir, "%s/harness", ca_root);
    bool ok = make_ca(&harness_ca, dir, "vkclient test CA");
    snprintf(dir, sizeof dir, "%s/other", ca_root);
    certificates_ok = ok && make_ca(&other_ca, dir, "vkclient unrelated CA");
    if (!certificates_ok)
        fprintf(stderr, "servers: generating the test certificates failed\n");
}

static bool certificates(void)
{
    pthread_once(&certificates_once, make_certificates);
    return certificates_ok;
}

const char *vkt_ca_base64(void)
{
    return certificates() ? harness_ca.ca_b64 : NULL;
}

const char *vkt_ca_path(void)
{
    return certificates() ? harness_ca.ca_cert : NULL;
}

const char *vkt_other_ca_base64(void)
{
    return certificates() ? other_ca.ca_b64 : NULL;
}

const char *vkt_client_cert_base64(void)
{
    return certificates() ? harness_ca.client_cert_b64 : NULL;
}

const char *vkt_client_key_base64(void)
{
    return certificates() ? harness_ca.client_key_b64 : NULL;
}

/* ---- server processes ----------------------------------------------------------- */

const char *vkt_server_binary(void)
{
    const char *env = getenv("VK_TEST_SERVER");
    return env != NULL && env[0] != '\0' ? env : "valkey-server";
}

static bool write_config(const vkt_server *s)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return false;
    fprintf(f, "bind 127.0.0.1%s\n", ipv6_loopback_available() ? " -::1" : "");
    fprintf(f, "daemonize no\n");
    fprintf(f, "dir %s\n", s->dir);
    fprintf(f, "logfile %s\n", s->log_path);
    fprintf(f, "save \"\"\n");
    fprintf(f, "appendonly no\n");
    fprintf(f, "unixsocket %s\n", s->sock_path);
    fprintf(f, "unixsocketperm 700\n");
    if (s->tls) {
        fprintf(f, "port 0\n");
        fprintf(f, "tls-port %d\n", s->port);
        fprintf(f, "tls-cert-file %s\n", harness_ca.server_cert);
        fprintf(f, "tls-key-file %s\n", harness_ca.server_key);
        fprintf(f, "tls-ca-cert-file %s\n", harness_ca.ca_cert);
        fprintf(f, "tls-auth-clients optional\n");
        if (s->tls11_only) {
            /* OpenSSL 3 only negotiates TLS 1.1 at security level 0. */
            fprintf(f, "tls-protocols \"TLSv1.1\"\n");
            fprintf(f, "tls-ciphers DEFAULT:@SECLEVEL=0\n");
        }
    } else {
        fprintf(f, "port %d\n", s->port);
    }
    if (s->requirepass != NULL)
        fprintf(f, "requirepass %s\n", s->requirepass);
    for (char **line = s->extra; line != NULL && *line != NULL; line++)
        fprintf(f, "%s\n", *line);
    if (fclose(f) != 0) {
        free(text);
        return false;
    }
    bool ok = write_file(s->conf_path, text);
    free(text);
    return ok;
}

static pid_t spawn_server(const vkt_server *s)
{
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
#else
        (void)parent;
#endif
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        /* Leave none of the test's sockets open in the server. */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        char *const argv[] = { s->binary_path, (char *)s->conf_path, NULL };
        execv(s->binary_path, argv);
        _exit(127);
    }
    close(devnull);
    return pid;
}

/* True once the process exited (reaped); waits up to timeout_ms. */
static bool wait_exit(pid_t pid, int timeout_ms)
{
    int64_t deadline = vkt_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD))
            return true;
        if (vkt_now_ms() >= deadline)
            return false;
        vkt_sleep_ms(10);
    }
}

static void terminate(vkt_server *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    /* A test may have left it stopped (SIGSTOP); it cannot exit before it
     * runs again. */
    kill(s->pid, SIGCONT);
    if (!wait_exit(s->pid, STOP_TIMEOUT_MS)) {
        kill(s->pid, SIGKILL);
        wait_exit(s->pid, STOP_TIMEOUT_MS);
    }
    s->pid = 0;
}

/* A connection to the server's unix socket, logged in when the server has
 * a password; -1 on failure. The AUTH reply is awaited before anything else
 * is sent: a valkey-server (8.0) does not answer a failing AUTH that arrived
 * in one write with the AUTH before it, so a test asking whether a password
 * is refused would otherwise wait out the whole command timeout. */
static int admin_connect(const vkt_server *s, int timeout_ms)
{
    int fd = connect_unix(s->sock_path, timeout_ms);
    if (fd < 0 || s->requirepass == NULL)
        return fd;
    char *buf = NULL;
    size_t len = 0;
    const char *auth[] = { "AUTH", s->requirepass };
    bool ok = append_command(&buf, &len, auth, 2) && send_all(fd, buf, len);
    free(buf);
    char *reply = ok ? read_line(fd, 0) : NULL;   /* an AUTH reply is always one line */
    if (reply == NULL) {
        close(fd);
        return -1;
    }
    free(reply);
    return fd;
}

/* The first reply line of argv run on the admin unix socket, after AUTH
 * when the server has a password. */
static char *admin_command(const vkt_server *s, const char *const *argv, int argc,
                           int timeout_ms)
{
    int fd = admin_connect(s, timeout_ms);
    if (fd < 0)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    bool ok = append_command(&buf, &len, argv, argc) && send_all(fd, buf, len);
    free(buf);
    char *line = ok ? read_line(fd, 0) : NULL;
    close(fd);
    return line;
}

static bool answers_ping(const vkt_server *s)
{
    const char *ping[] = { "PING" };
    char *line = admin_command(s, ping, 1, 1000);
    bool ok = line != NULL && strcmp(line, "+PONG") == 0;
    free(line);
    return ok && tcp_port_accepts(s->port);
}

static void print_log_tail(const vkt_server *s)
{
    char *log = read_file(s->log_path, NULL);
    if (log == NULL) {
        fprintf(stderr, "servers: %s wrote no log\n", s->binary_path);
        return;
    }
    size_t len = strlen(log);
    const char *tail = len > 2000 ? log + len - 2000 : log;
    fprintf(stderr, "servers: %s on port %d did not start; log:\n%s\n", s->binary_path,
            s->port, tail);
    free(log);
}

static bool log_says_port_taken(const vkt_server *s)
{
    char *log = read_file(s->log_path, NULL);
    bool taken = log != NULL && strstr(log, "Address already in use") != NULL;
    free(log);
    return taken;
}

/* Starts the process on s->port and waits until it answers. */
static bool launch(vkt_server *s)
{
    unlink(s->log_path);
    if (!write_config(s))
        return false;
    s->pid = spawn_server(s);
    if (s->pid < 0) {
        s->pid = 0;
        return false;
    }
    int64_t deadline = vkt_now_ms() + START_TIMEOUT_MS;
    while (vkt_now_ms() < deadline) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;   /* exited: a bad config or a taken port */
            return false;
        }
        if (answers_ping(s))
            return true;
        vkt_sleep_ms(20);
    }
    terminate(s, SIGKILL);
    return false;
}

static void free_server(vkt_server *s)
{
    free(s->binary_path);
    free(s->requirepass);
    for (char **line = s->extra; line != NULL && *line != NULL; line++)
        free(*line);
    free(s->extra);
    free(s);
}

static bool copy_options(vkt_server *s, const vkt_server_opts *opts)
{
    const char *binary = opts->binary ? opts->binary : vkt_server_binary();
    s->binary_path = find_program(binary);
    if (s->binary_path == NULL) {
        fprintf(stderr, "servers: %s not found in PATH\n", binary);
        return false;
    }
    s->tls = opts->tls || opts->tls11_only;
    s->tls11_only = opts->tls11_only;
    s->unix_socket = opts->unix_socket;
    s->requirepass = dup_or_null(opts->requirepass);
    if (opts->requirepass != NULL && s->requirepass == NULL)
        return false;
    size_t n = 0;
    while (opts->extra != NULL && opts->extra[n] != NULL)
        n++;
    s->extra = calloc(n + 1, sizeof *s->extra);
    if (s->extra == NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        s->extra[i] = strdup(opts->extra[i]);
        if (s->extra[i] == NULL)
            return false;
    }
    return true;
}

vkt_server *vkt_server_start(const vkt_server_opts *opts)
{
    static const vkt_server_opts defaults = { 0 };
    if (opts == NULL)
        opts = &defaults;
    vkt_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->owner = getpid();
    if (!copy_options(s, opts)) {
        free_server(s);
        return NULL;
    }
    if (s->tls && !certificates()) {
        free_server(s);
        return NULL;
    }
    const char *base = strrchr(s->binary_path, '/');
    char prefix[32];
    snprintf(prefix, sizeof prefix, "vkt-%.16s", base ? base + 1 : s->binary_path);
    if (!make_temp_dir(s->dir, sizeof s->dir, prefix)) {
        free_server(s);
        return NULL;
    }
    snprintf(s->conf_path, sizeof s->conf_path, "%s/server.conf", s->dir);
    snprintf(s->log_path, sizeof s->log_path, "%s/server.log", s->dir);
    snprintf(s->sock_path, sizeof s->sock_path, "%s/server.sock", s->dir);
    snprintf(s->unix_address, sizeof s->unix_address, "unix:%s", s->sock_path);
    registry_add(s);

    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        s->port = free_port();
        if (s->port == 0)
            break;
        snprintf(s->address, sizeof s->address, "127.0.0.1:%d", s->port);
        if (launch(s))
            return s;
        if (!log_says_port_taken(s))
            break;
    }
    print_log_tail(s);
    vkt_server_stop(s);
    return NULL;
}

int vkt_server_port(const vkt_server *s)
{
    return s ? s->port : 0;
}

pid_t vkt_server_pid(const vkt_server *s)
{
    return s ? s->pid : 0;
}

const char *vkt_server_address(const vkt_server *s)
{
    return s ? s->address : NULL;
}

const char *vkt_server_unix_address(const vkt_server *s)
{
    return s && s->unix_socket ? s->unix_address : NULL;
}

void vkt_server_kill(vkt_server *s)
{
    if (s != NULL)
        terminate(s, SIGKILL);
}

bool vkt_server_restart(vkt_server *s)
{
    if (s == NULL)
        return false;
    terminate(s, SIGTERM);
    /* The old listening socket may linger for a moment: keep the port. */
    int64_t deadline = vkt_now_ms() + START_TIMEOUT_MS;
    while (vkt_now_ms() < deadline) {
        if (launch(s))
            return true;
        if (!log_says_port_taken(s))
            break;
        vkt_sleep_ms(100);
    }
    print_log_tail(s);
    return false;
}

char *vkt_server_cmd(const vkt_server *s, const char *const *argv, int argc)
{
    if (s == NULL || s->pid <= 0 || argv == NULL || argc <= 0)
        return NULL;
    return admin_command(s, argv, argc, COMMAND_TIMEOUT_MS);
}

void vkt_server_stop(vkt_server *s)
{
    if (s == NULL)
        return;
    registry_remove(s);
    if (s->owner == getpid()) {
        terminate(s, SIGTERM);
        remove_tree(s->dir);
    }
    free_server(s);
}

/* Like vkt_server_cmd(), but returns line number `line` (0-based) of the raw
 * reply, e.g. line 4 of "*2 $9 127.0.0.1 $4 6380" is the port; a bulk
 * string's own CRLF-separated lines count too. */
char *vkt_server_cmd_line(const vkt_server *s, const char *const *argv, int argc, int line)
{
    if (s == NULL || s->pid <= 0 || argv == NULL || argc <= 0 || line < 0)
        return NULL;
    int fd = admin_connect(s, COMMAND_TIMEOUT_MS);
    if (fd < 0)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    bool ok = append_command(&buf, &len, argv, argc) && send_all(fd, buf, len);
    free(buf);
    char *text = ok ? read_line(fd, line) : NULL;
    close(fd);
    return text;
}

int vkt_free_port(void)
{
    return free_port();
}

int vkt_dial_tcp(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    int err = errno;
    if (fd >= 0)
        close(fd);
    errno = err;
    return -1;
}
