/*
 * The client's TLS context, built once per client from its config, and the
 * per-connection sessions made from it. The peer certificate and its host
 * name (or IP address) are always verified; there is no switch to turn
 * that off.
 */
#include "net/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct vk_tls {
    SSL_CTX *ctx;
};

/* ---- a socket BIO that never raises SIGPIPE and can read without waiting */

static BIO_METHOD *nosigpipe_method;
static pthread_once_t nosigpipe_once = PTHREAD_ONCE_INIT;

static int nosigpipe_write(BIO *b, const char *buf, int len)
{
    int fd = -1;
    BIO_get_fd(b, &fd);
    errno = 0;
    int n = (int)send(fd, buf, (size_t)len, MSG_NOSIGNAL);
    BIO_clear_retry_flags(b);
    if (n <= 0 && BIO_sock_should_retry(n))
        BIO_set_retry_write(b);
    return n;
}

/* The BIO's app data is this marker while a read must not wait. */
static const char read_nowait_marker;

/* The socket stays blocking after the connect (a call without a context
 * blocks in read(2), bounded by SO_RCVTIMEO). A call that polls first must
 * not block after the poll: the bytes that woke it may be a partial record
 * or a record that is not application data (a session ticket), and a
 * blocking read would then wait past its deadline or a cancel. */
static int vk_socket_read(BIO *b, char *buf, int len)
{
    int fd = -1;
    BIO_get_fd(b, &fd);
    int flags = BIO_get_app_data(b) == &read_nowait_marker ? MSG_DONTWAIT : 0;
    errno = 0;
    int n = (int)recv(fd, buf, (size_t)len, flags);
    BIO_clear_retry_flags(b);
    if (n <= 0) {
        if (BIO_sock_should_retry(n))
            BIO_set_retry_read(b);
        else if (n == 0)
            BIO_set_flags(b, BIO_FLAGS_IN_EOF);   /* as OpenSSL's own socket BIO */
    }
    return n;
}

void vk__tls_set_read_nowait(SSL *ssl, bool nowait)
{
    BIO_set_app_data(SSL_get_rbio(ssl), nowait ? (void *)&read_nowait_marker : NULL);
}

/* OpenSSL's socket BIO writes with write(2), which raises SIGPIPE on a
 * closed peer and would kill a host process that does not ignore it. */
static void make_nosigpipe_method(void)
{
    const BIO_METHOD *base = BIO_s_socket();
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "vkclient socket");
    if (m == NULL)
        return;
    if (!BIO_meth_set_write(m, nosigpipe_write) ||
        !BIO_meth_set_read(m, vk_socket_read) ||
        !BIO_meth_set_puts(m, BIO_meth_get_puts(base)) ||
        !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(base)) ||
        !BIO_meth_set_create(m, BIO_meth_get_create(base)) ||
        !BIO_meth_set_destroy(m, BIO_meth_get_destroy(base))) {
        BIO_meth_free(m);
        return;
    }
    nosigpipe_method = m;
}

/* A host that unloads the library (a Lua state closing) gets the method
 * back rather than a leak. */
__attribute__((destructor)) static void free_nosigpipe_method(void)
{
    BIO_meth_free(nosigpipe_method);
    nosigpipe_method = NULL;
}

/* ---- loading PEM given as base64 ---------------------------------------- */

/* Decodes base64 (whitespace allowed) into a memory BIO of the PEM text.
 * The decoded copy is wiped; a BIO_s_mem is cleared when freed. */
static BIO *pem_bio_from_base64(const char *b64, const char *what)
{
    unsigned char *pem = NULL;
    size_t len = 0;
    if (vk__base64_decode(b64, &pem, &len) != 0 || len == 0) {
        free(pem);
        vk__fail(VK_ERR_TLS, "%s is not valid base64", what);
        return NULL;
    }
    BIO *out = BIO_new(BIO_s_mem());
    if (out != NULL && BIO_write(out, pem, (int)len) != (int)len) {
        BIO_free(out);
        out = NULL;
    }
    vk__wipe(pem, len);
    free(pem);
    if (out == NULL)
        vk__fail_nomem();
    return out;
}

/* Adds every certificate of a PEM text to the context's trust store;
 * returns how many were added. */
static int add_certificates(SSL_CTX *ctx, BIO *pem)
{
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(pem, NULL, NULL, NULL);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int added = 0;
    for (int i = 0; infos != NULL && i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);
        if (info->x509 != NULL && X509_STORE_add_cert(store, info->x509) == 1)
            added++;
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    ERR_clear_error();
    return added;
}

static vk_status load_ca_base64(SSL_CTX *ctx, const char *b64)
{
    BIO *pem = pem_bio_from_base64(b64, "CA certificate");
    if (pem == NULL)
        return vk_last_status();
    int added = add_certificates(ctx, pem);
    BIO_free(pem);
    if (added == 0)
        return vk__fail(VK_ERR_TLS, "CA certificate: no PEM certificate found");
    return VK_OK;
}

/* Validation checked that the file opens; here it is read and parsed. */
static vk_status load_ca_file(SSL_CTX *ctx, const char *path)
{
    errno = 0;
    BIO *pem = BIO_new_file(path, "r");
    if (pem == NULL) {
        int err = errno;
        ERR_clear_error();
        return vk__fail(VK_ERR_TLS, "CA file \"%s\" cannot be read: %s", path,
                        err != 0 ? strerror(err) : "cannot open");
    }
    int added = add_certificates(ctx, pem);
    BIO_free(pem);
    if (added == 0)
        return vk__fail(VK_ERR_TLS, "CA file \"%s\": no PEM certificate found", path);
    return VK_OK;
}

/* OpenSSL's default verify paths: the system bundle and folder, or
 * SSL_CERT_FILE / SSL_CERT_DIR when set (read now, not at each handshake). */
static vk_status load_system_ca(SSL_CTX *ctx)
{
    int ok = SSL_CTX_set_default_verify_paths(ctx);
    ERR_clear_error();
    if (ok != 1)
        return vk__fail(VK_ERR_TLS, "loading the system trust store failed");
    return VK_OK;
}

static bool is_blank(const char *s)
{
    return s == NULL || s[strspn(s, " \t\r\n\v\f")] == '\0';
}

/* Every trust source the config names (config.c: at least one). */
static vk_status load_trust(SSL_CTX *ctx, const vk_config *cfg)
{
    vk_status st = VK_OK;
    if (!is_blank(cfg->tls_ca_base64))
        st = load_ca_base64(ctx, cfg->tls_ca_base64);
    if (st == VK_OK && cfg->tls_ca_file != NULL)
        st = load_ca_file(ctx, cfg->tls_ca_file);
    if (st == VK_OK && cfg->tls_system_ca)
        st = load_system_ca(ctx);
    return st;
}

static vk_status load_client_cert(SSL_CTX *ctx, const char *cert_b64, const char *key_b64)
{
    BIO *pem = pem_bio_from_base64(cert_b64, "client certificate");
    if (pem == NULL)
        return vk_last_status();
    X509 *cert = PEM_read_bio_X509(pem, NULL, NULL, NULL);
    bool ok = cert != NULL && SSL_CTX_use_certificate(ctx, cert) == 1;
    X509_free(cert);
    /* Intermediate certificates after the leaf go into the chain. */
    X509 *extra;
    while (ok && (extra = PEM_read_bio_X509(pem, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            ok = false;
        }
    }
    BIO_free(pem);
    ERR_clear_error();
    if (!ok)
        return vk__fail(VK_ERR_TLS, "client certificate: no usable PEM certificate found");

    pem = pem_bio_from_base64(key_b64, "client key");
    if (pem == NULL)
        return vk_last_status();
    EVP_PKEY *key = PEM_read_bio_PrivateKey(pem, NULL, NULL, NULL);
    BIO_free(pem);   /* memory BIOs of key material are cleared on free */
    ERR_clear_error();
    if (key == NULL)
        return vk__fail(VK_ERR_TLS, "client key: no usable PEM private key found");
    /* OpenSSL checks the key against the certificate as it installs it. */
    ok = SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (!ok)
        return vk__fail(VK_ERR_TLS, "client key does not match the client certificate");
    return VK_OK;
}

/* The lowest protocol the handshake offers. A legacy minimum (TLS 1.0/1.1)
 * stays in the config, logged as insecure, as the original keeps it; but
 * like the original the dial is floored at TLS 1.2. Offering 1.0/1.1 would
 * also need OpenSSL's security level 0, which admits weak keys and SHA-1
 * signatures, so the security level is never lowered either. */
static int handshake_floor(vk_tls_version v)
{
    return v == VK_TLS1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

vk_status vk__tls_new(vk_tls **out, const vk_config *cfg)
{
    *out = NULL;
    pthread_once(&nosigpipe_once, make_nosigpipe_method);
    if (nosigpipe_method == NULL)
        return vk__fail(VK_ERR_TLS, "creating the socket BIO method failed");
    vk_tls *tls = calloc(1, sizeof *tls);
    if (tls == NULL)
        return vk__fail_nomem();
    tls->ctx = SSL_CTX_new(TLS_client_method());
    if (tls->ctx == NULL) {
        free(tls);
        ERR_clear_error();
        return vk__fail(VK_ERR_TLS, "creating the TLS context failed");
    }
    SSL_CTX_set_verify(tls->ctx, SSL_VERIFY_PEER, NULL);
    vk_status st = VK_OK;
    if (SSL_CTX_set_min_proto_version(tls->ctx, handshake_floor(cfg->tls_min_version)) != 1) {
        ERR_clear_error();
        st = vk__fail(VK_ERR_TLS, "setting the minimum TLS version failed");
    }
    if (st == VK_OK)
        st = load_trust(tls->ctx, cfg);
    if (st == VK_OK && cfg->tls_cert_base64 != NULL && cfg->tls_key_base64 != NULL)
        st = load_client_cert(tls->ctx, cfg->tls_cert_base64, cfg->tls_key_base64);
    if (st != VK_OK) {
        vk__tls_free(tls);
        return st;
    }
    *out = tls;
    return VK_OK;
}

void vk__tls_free(vk_tls *tls)
{
    if (tls == NULL)
        return;
    SSL_CTX_free(tls->ctx);
    free(tls);
}

static bool is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

vk_status vk__tls_session_new(vk_tls *tls, int fd, const char *name, SSL **out)
{
    *out = NULL;
    SSL *ssl = SSL_new(tls->ctx);
    BIO *bio = ssl != NULL ? BIO_new(nosigpipe_method) : NULL;
    if (bio == NULL || BIO_set_fd(bio, fd, BIO_NOCLOSE) != 1) {
        BIO_free(bio);
        SSL_free(ssl);
        ERR_clear_error();
        return vk__fail(VK_ERR_TLS, "creating a TLS session failed");
    }
    SSL_set_bio(ssl, bio, bio);
    bool ok;
    if (is_ip_literal(name)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
    } else {
        ok = SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return vk__fail(VK_ERR_TLS, "cannot verify against server name \"%s\"", name);
    }
    *out = ssl;
    return VK_OK;
}

void vk__tls_describe_failure(SSL *ssl, char *buf, size_t cap)
{
    long verify = SSL_get_verify_result(ssl);
    unsigned long err = ERR_peek_last_error();
    if (verify != X509_V_OK) {
        snprintf(buf, cap, "certificate verify failed: %s",
                 X509_verify_cert_error_string(verify));
    } else if (err != 0) {
        char text[200];
        ERR_error_string_n(err, text, sizeof text);
        const char *reason = ERR_reason_error_string(err);
        snprintf(buf, cap, "%s", reason != NULL ? reason : text);
    } else if (errno != 0) {
        snprintf(buf, cap, "%s", strerror(errno));
    } else {
        snprintf(buf, cap, "connection closed during the handshake");
    }
    ERR_clear_error();
}
