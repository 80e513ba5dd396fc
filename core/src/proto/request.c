/*
 * RESP request encoding: "*<argc>\r\n" then "$<len>\r\n<bytes>\r\n" per
 * argument, the bytes hiredis's formatters produce.
 *
 * Encoding is split from sizing so that a caller can make room for the
 * whole request before the first byte is written: a buffer that holds a
 * password is then never moved by realloc() behind the caller's back, and
 * the bytes go straight into the caller's buffer with no intermediate
 * copy. Sizes are size_t throughout (hiredis 0.14's formatters return an
 * int and print lengths as unsigned int, which breaks requests over 2 GiB
 * and arguments over 4 GiB).
 */
#include "proto/proto.h"

#include <string.h>

static size_t decimal_digits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Writes v in decimal; returns the end. */
static char *put_decimal(char *out, size_t v)
{
    char *end = out + decimal_digits(v);
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

static bool add_size(size_t *total, size_t more)
{
    if (*total > SIZE_MAX - more)
        return false;
    *total += more;
    return true;
}

bool vk__request_size(int argc, const size_t *argvlen, size_t *size)
{
    if (argc < 0)
        return false;
    size_t total = 3 + decimal_digits((size_t)argc);
    for (int i = 0; i < argc; i++) {
        /* '$' digits "\r\n" bytes "\r\n" */
        if (!add_size(&total, decimal_digits(argvlen[i]) + 5) || !add_size(&total, argvlen[i]))
            return false;
    }
    *size = total;
    return true;
}

char *vk__request_encode(char *out, int argc, const char *const *argv, const size_t *argvlen)
{
    *out++ = '*';
    out = put_decimal(out, (size_t)argc);
    *out++ = '\r';
    *out++ = '\n';
    for (int i = 0; i < argc; i++) {
        *out++ = '$';
        out = put_decimal(out, argvlen[i]);
        *out++ = '\r';
        *out++ = '\n';
        if (argvlen[i] > 0)
            memcpy(out, argv[i], argvlen[i]);
        out += argvlen[i];
        *out++ = '\r';
        *out++ = '\n';
    }
    return out;
}
