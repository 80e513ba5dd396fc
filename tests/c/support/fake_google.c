/*
 * The fake Google endpoints for the C tests (see fake_google.h). The test
 * key lives in a temporary folder made once per process; each fake gets
 * its own folder for its control file, log and ready file. A fake dies
 * with the test (PR_SET_PDEATHSIG) and is otherwise stopped by PID.
 */
#include "fake_google.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 5000
#define MAX_FAKES 16

struct vkt_google {
    vkt_google_opts opts;
    char *redis_unix;
    char redis_addrs[VKT_GOOGLE_MAX_REDIS_ADDRS][64];
    int redis_addr_count;
    char *redis_password;
    char *redis_tls_ca;
    char dir[256];
    char log_path[300], control_path[300], ready_path[300], output_path[300];
    char cert_path[300], cert_key_path[300];
    char url[64], host[64];
    int port;
    pid_t pid;
};

static vkt_google *live[MAX_FAKES];
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- small file and process utilities ---------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *vkt_read_text_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *grown = realloc(buf, cap);
            if (grown == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf == NULL)
        buf = calloc(1, 1);
    else
        buf[len] = '\0';
    return buf;
}

static bool write_text_file(const char *path, const char *text)
{
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL)
        return false;
    bool ok = fwrite(text, 1, strlen(text), f) == strlen(text);
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0;
}

static bool make_temp_dir(char *out, size_t cap, const char *prefix)
{
    const char *root = getenv("TMPDIR");
    snprintf(out, cap, "%s/%s-XXXXXX", root != NULL && root[0] ? root : "/tmp", prefix);
    return mkdtemp(out) != NULL;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir)
{
    if (dir[0] != '\0')
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs argv (PATH lookup), output to /dev/null; true on exit status 0. */
static bool run_quietly(char *const *argv)
{
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

char *vkt_base64(const void *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = data;
    char *out = malloc(len / 3 * 4 + 5);
    if (out == NULL)
        return NULL;
    size_t n = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
        out[n++] = alphabet[v >> 6 & 63];
        out[n++] = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
        out[n++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        out[n++] = '=';
    }
    out[n] = '\0';
    return out;
}

/* ---- the test key -------------------------------------------------------------- */

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static char key_dir[256];
static char key_path[300], public_path[300];
static char *key_pem;

static void remove_key_dir(void)
{
    remove_tree(key_dir);
}

static void generate_key(void)
{
    if (!make_temp_dir(key_dir, sizeof key_dir, "vk-gcp-key")) {
        key_dir[0] = '\0';
        return;
    }
    atexit(remove_key_dir);
    snprintf(key_path, sizeof key_path, "%s/key.pem", key_dir);
    snprintf(public_path, sizeof public_path, "%s/public.pem", key_dir);
    char *gen[] = {"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                   "rsa_keygen_bits:2048", "-out", key_path, NULL};
    char *pub[] = {"openssl", "pkey", "-in", key_path, "-pubout", "-out", public_path, NULL};
    if (run_quietly(gen) && run_quietly(pub))
        key_pem = vkt_read_text_file(key_path);
    if (key_pem == NULL)
        fprintf(stderr, "fake_google: generating the test key with openssl failed\n");
}

const char *vkt_google_private_key_pem(void)
{
    pthread_once(&key_once, generate_key);
    return key_pem;
}

char *vkt_google_key_json(const char *token_uri)
{
    const char *pem = vkt_google_private_key_pem();
    if (pem == NULL)
        return NULL;
    cJSON *key = cJSON_CreateObject();
    cJSON_AddStringToObject(key, "type", "service_account");
    cJSON_AddStringToObject(key, "project_id", "vk-test");
    cJSON_AddStringToObject(key, "private_key_id", "0123456789abcdef");
    cJSON_AddStringToObject(key, "private_key", pem);
    cJSON_AddStringToObject(key, "client_email", VKT_GOOGLE_CLIENT_EMAIL);
    cJSON_AddStringToObject(key, "client_id", "100000000000000000001");
    cJSON_AddStringToObject(key, "token_uri", token_uri);
    char *text = cJSON_PrintUnformatted(key);
    cJSON_Delete(key);
    return text;
}

char *vkt_google_key_base64(const char *token_uri)
{
    char *json = vkt_google_key_json(token_uri);
    if (json == NULL)
        return NULL;
    char *b64 = vkt_base64(json, strlen(json));
    free(json);
    return b64;
}

/* ---- the fake process ----------------------------------------------------------- */

static void registry_set(vkt_google *g, bool add)
{
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < MAX_FAKES; i++) {
        if (add && live[i] == NULL) {
            live[i] = g;
            break;
        }
        if (!add && live[i] == g)
            live[i] = NULL;
    }
    pthread_mutex_unlock(&live_lock);
}

static void stop_leftovers(void)
{
    for (int i = 0; i < MAX_FAKES; i++)
        if (live[i] != NULL)
            vkt_google_stop(live[i]);
}

static void register_cleanup(void)
{
    atexit(stop_leftovers);
}

static pid_t spawn_fake(const vkt_google *g)
{
    char port[16];
    snprintf(port, sizeof port, "%d", g->port);
    const char *argv[32 + 2 * VKT_GOOGLE_MAX_REDIS_ADDRS];
    int n = 0;
    argv[n++] = "/usr/bin/python3";
    argv[n++] = VK_TEST_SOURCE_DIR "/tests/harness/fake_google.py";
    argv[n++] = "--public-key";
    argv[n++] = public_path;
    argv[n++] = "--client-email";
    argv[n++] = VKT_GOOGLE_CLIENT_EMAIL;
    argv[n++] = "--service-account";
    argv[n++] = VKT_GOOGLE_SERVICE_ACCOUNT;
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--control-file";
    argv[n++] = g->control_path;
    argv[n++] = "--log";
    argv[n++] = g->log_path;
    argv[n++] = "--ready-file";
    argv[n++] = g->ready_path;
    if (g->redis_unix != NULL) {
        argv[n++] = "--redis-unix";
        argv[n++] = g->redis_unix;
    }
    for (int i = 0; i < g->redis_addr_count; i++) {
        argv[n++] = "--redis-addr";
        argv[n++] = g->redis_addrs[i];
    }
    if (g->redis_tls_ca != NULL) {
        argv[n++] = "--redis-tls-ca";
        argv[n++] = g->redis_tls_ca;
    }
    if (g->redis_password != NULL) {
        argv[n++] = "--redis-password";
        argv[n++] = g->redis_password;
    }
    if (g->opts.https) {
        argv[n++] = "--tls-cert";
        argv[n++] = g->cert_path;
        argv[n++] = "--tls-key";
        argv[n++] = g->cert_key_path;
    }
    argv[n] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int out = open(g->output_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits for the ready file; reads the port from it. On failure *why says
 * what happened. */
static bool wait_ready(vkt_google *g, char *why, size_t cap)
{
    int64_t deadline = now_ms() + START_TIMEOUT_MS;
    while (now_ms() < deadline) {
        char *text = vkt_read_text_file(g->ready_path);
        if (text != NULL) {
            cJSON *ready = cJSON_Parse(text);
            free(text);
            const cJSON *port = cJSON_GetObjectItemCaseSensitive(ready, "port");
            if (cJSON_IsNumber(port))
                g->port = port->valueint;
            cJSON_Delete(ready);
            snprintf(why, cap, "unreadable ready file");
            return g->port > 0;
        }
        int status;
        if (waitpid(g->pid, &status, WNOHANG) == g->pid) {
            g->pid = 0;
            snprintf(why, cap, "exited (status 0x%x)", (unsigned)status);
            return false;
        }
        sleep_ms(20);
    }
    snprintf(why, cap, "not ready after %d ms", START_TIMEOUT_MS);
    return false;
}

/* Starts the process; a second attempt covers a port that was briefly
 * taken (e.g. by an outgoing connection's ephemeral port while the fake
 * was down). */
static bool launch(vkt_google *g)
{
    char why[64] = "";
    for (int attempt = 0; attempt < 2; attempt++) {
        unlink(g->ready_path);
        g->pid = spawn_fake(g);
        if (g->pid > 0 && wait_ready(g, why, sizeof why)) {
            snprintf(g->url, sizeof g->url, "%s://127.0.0.1:%d",
                     g->opts.https ? "https" : "http", g->port);
            snprintf(g->host, sizeof g->host, "127.0.0.1:%d", g->port);
            return true;
        }
        vkt_google_kill(g);
        sleep_ms(200);
    }
    char *output = vkt_read_text_file(g->output_path);
    fprintf(stderr, "fake_google: did not start on port %d: %s; output:\n%s\n", g->port, why,
            output ? output : "");
    free(output);
    return false;
}

static bool make_certificate(vkt_google *g)
{
    char *req[] = {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                   "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                   "-keyout", g->cert_key_path, "-out", g->cert_path, NULL};
    return run_quietly(req);
}

vkt_google *vkt_google_start(const vkt_google_opts *opts)
{
    if (vkt_google_private_key_pem() == NULL)
        return NULL;
    vkt_google *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->opts = *opts;
    g->port = opts->port;
    g->redis_unix = opts->redis_unix ? strdup(opts->redis_unix) : NULL;
    g->redis_password = opts->redis_password ? strdup(opts->redis_password) : NULL;
    g->redis_tls_ca = opts->redis_tls_ca ? strdup(opts->redis_tls_ca) : NULL;
    for (const char *const *a = opts->redis_addrs; a != NULL && *a != NULL; a++) {
        if (g->redis_addr_count == VKT_GOOGLE_MAX_REDIS_ADDRS) {
            fprintf(stderr, "fake google: more than %d redis addresses\n",
                    VKT_GOOGLE_MAX_REDIS_ADDRS);
            free(g->redis_unix);
            free(g->redis_password);
            free(g->redis_tls_ca);
            free(g);
            return NULL;
        }
        snprintf(g->redis_addrs[g->redis_addr_count++], sizeof g->redis_addrs[0], "%s", *a);
    }
    g->opts.redis_addrs = NULL; /* copied above; the caller's array need not outlive this */
    if (!make_temp_dir(g->dir, sizeof g->dir, "vk-fake-google")) {
        free(g);
        return NULL;
    }
    snprintf(g->log_path, sizeof g->log_path, "%s/requests.jsonl", g->dir);
    snprintf(g->control_path, sizeof g->control_path, "%s/control.json", g->dir);
    snprintf(g->ready_path, sizeof g->ready_path, "%s/ready.json", g->dir);
    snprintf(g->output_path, sizeof g->output_path, "%s/output.log", g->dir);
    snprintf(g->cert_path, sizeof g->cert_path, "%s/cert.pem", g->dir);
    snprintf(g->cert_key_path, sizeof g->cert_key_path, "%s/cert-key.pem", g->dir);
    static pthread_once_t cleanup_once = PTHREAD_ONCE_INIT;
    pthread_once(&cleanup_once, register_cleanup);
    if ((opts->https && !make_certificate(g)) || !launch(g)) {
        vkt_google_stop(g);
        return NULL;
    }
    registry_set(g, true);
    return g;
}

void vkt_google_kill(vkt_google *g)
{
    if (g == NULL || g->pid <= 0)
        return;
    kill(g->pid, SIGTERM);
    int64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    int status;
    while (waitpid(g->pid, &status, WNOHANG) == 0) {
        if (now_ms() >= deadline) {
            kill(g->pid, SIGKILL);
            waitpid(g->pid, &status, 0);
            break;
        }
        sleep_ms(10);
    }
    g->pid = 0;
}

bool vkt_google_restart(vkt_google *g)
{
    vkt_google_kill(g);
    return launch(g);
}

void vkt_google_stop(vkt_google *g)
{
    if (g == NULL)
        return;
    registry_set(g, false);
    vkt_google_kill(g);
    remove_tree(g->dir);
    free(g->redis_unix);
    free(g->redis_password);
    free(g->redis_tls_ca);
    free(g);
}

pid_t vkt_google_pid(const vkt_google *g) { return g->pid; }
int vkt_google_port(const vkt_google *g) { return g->port; }
const char *vkt_google_cert_path(const vkt_google *g)
{
    return g->cert_path;
}

const char *vkt_google_url(const vkt_google *g) { return g->url; }
const char *vkt_google_host(const vkt_google *g) { return g->host; }
const char *vkt_google_log_path(const vkt_google *g) { return g->log_path; }

bool vkt_google_control(vkt_google *g, const char *json)
{
    return write_text_file(g->control_path, json);
}

double *vkt_google_requests(const vkt_google *g, const char *endpoint, size_t *count)
{
    *count = 0;
    char *text = vkt_read_text_file(g->log_path);
    if (text == NULL)
        return calloc(1, sizeof(double));
    size_t cap = 16;
    double *times = malloc(cap * sizeof *times);
    for (char *line = strtok(text, "\n"); line != NULL && times != NULL;
         line = strtok(NULL, "\n")) {
        cJSON *entry = cJSON_Parse(line);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "endpoint");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(entry, "t");
        if (cJSON_IsString(name) && strcmp(name->valuestring, endpoint) == 0 &&
            cJSON_IsNumber(t)) {
            if (*count == cap) {
                cap *= 2;
                double *grown = realloc(times, cap * sizeof *times);
                if (grown == NULL) {
                    free(times);
                    times = NULL;
                    cJSON_Delete(entry);
                    break;
                }
                times = grown;
            }
            times[(*count)++] = t->valuedouble;
        }
        cJSON_Delete(entry);
    }
    free(text);
    return times;
}
