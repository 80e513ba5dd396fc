/*
 * Secrets: wiping them before their memory goes back, and decoding the
 * base64 in which keys and certificates come (the config's PEM, the
 * service-account key).
 */
#include "support/support.h"

#include <openssl/crypto.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- wiping ----------------------------------------------------------------- */

void vk__wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}

void vk__free_secret(char *s)
{
    if (s == NULL)
        return;
    vk__wipe(s, strlen(s));
    free(s);
}

/* ---- base64 ------------------------------------------------------------------ */

static int base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int vk__base64_decode(const char *in, unsigned char **out, size_t *outlen)
{
    size_t inlen = strlen(in);
    unsigned char *buf = malloc(inlen / 4 * 3 + 4);
    if (buf == NULL)
        return -1;
    size_t n = 0, digits = 0, padding = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (is_space(c))
            continue;
        if (c == '=') {
            padding++;
            continue;
        }
        int v = base64_value(c);
        if (v < 0 || padding > 0)     /* a bad character, or data after '=' */
            goto malformed;
        acc = acc << 6 | (uint32_t)v;
        if (++digits % 4 == 0) {
            buf[n++] = (unsigned char)(acc >> 16);
            buf[n++] = (unsigned char)(acc >> 8);
            buf[n++] = (unsigned char)acc;
            acc = 0;
        }
    }
    /* A final group of 2 or 3 digits carries 1 or 2 bytes; 1 digit is
     * never valid, and padding must complete the group when present. */
    size_t rest = digits % 4;
    if (rest == 1 || (padding > 0 && rest + padding != 4) || padding > 2)
        goto malformed;
    if (rest == 2) {
        buf[n++] = (unsigned char)(acc >> 4);
    } else if (rest == 3) {
        buf[n++] = (unsigned char)(acc >> 10);
        buf[n++] = (unsigned char)(acc >> 2);
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;

malformed:
    vk__wipe(buf, inlen / 4 * 3 + 4);
    free(buf);
    return -1;
}

