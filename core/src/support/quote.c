/*
 * Quoting of lock keys for logs and errors, like Go's strconv.QuoteToASCII:
 * printable ASCII stays, quotes and backslashes are escaped, control bytes
 * become \n, \t, ... or \xNN, valid UTF-8 becomes \uNNNN / \UNNNNNNNN and
 * invalid bytes \xNN. A quoted form over 128 characters is cut.
 */
#include "support/support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VK_QUOTE_LIMIT 128
#define VK_QUOTE_CUT_SUFFIX "...(truncated)"

/* Decodes one UTF-8 sequence at s (n bytes available); returns its length
 * and the code point, or 0 when the bytes are not valid UTF-8. */
static size_t decode_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t min;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2, min = 0x80, *cp = s[0] & 0x1F;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3, min = 0x800, *cp = s[0] & 0x0F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4, min = 0x10000, *cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3F);
    }
    if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF))
        return 0;
    return len;
}

/* Writes the escaped form of the character at s into out (room for 11
 * bytes); returns how many input bytes it consumed. */
static size_t escape_one(const unsigned char *s, size_t n, char *out)
{
    unsigned char c = s[0];
    switch (c) {
    case '"': strcpy(out, "\\\""); return 1;
    case '\\': strcpy(out, "\\\\"); return 1;
    case '\a': strcpy(out, "\\a"); return 1;
    case '\b': strcpy(out, "\\b"); return 1;
    case '\f': strcpy(out, "\\f"); return 1;
    case '\n': strcpy(out, "\\n"); return 1;
    case '\r': strcpy(out, "\\r"); return 1;
    case '\t': strcpy(out, "\\t"); return 1;
    case '\v': strcpy(out, "\\v"); return 1;
    default: break;
    }
    if (c >= 0x20 && c < 0x7F) {
        out[0] = (char)c;
        out[1] = '\0';
        return 1;
    }
    uint32_t cp;
    size_t len = c >= 0x80 ? decode_utf8(s, n, &cp) : 0;
    if (len == 0) {
        snprintf(out, 11, "\\x%02x", c);
        return 1;
    }
    if (cp <= 0xFFFF)
        snprintf(out, 11, "\\u%04x", (unsigned)cp);
    else
        snprintf(out, 11, "\\U%08x", (unsigned)cp);
    return len;
}

char *vk__quote_key(const char *s, size_t len)
{
    /* Build at most a little over the limit: enough to know it was cut. */
    char quoted[VK_QUOTE_LIMIT + 16];
    size_t used = 0;
    bool over = false;
    quoted[used++] = '"';
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    if (s == NULL)
        len = 0;
    for (size_t i = 0; i < len;) {
        char piece[12];
        i += escape_one(p + i, len - i, piece);
        size_t piece_len = strlen(piece);
        if (used + piece_len > VK_QUOTE_LIMIT) {
            memcpy(quoted + used, piece, piece_len);
            used += piece_len;
            over = true;
            break;
        }
        memcpy(quoted + used, piece, piece_len);
        used += piece_len;
    }
    if (!over) {
        quoted[used++] = '"';
        over = used > VK_QUOTE_LIMIT;
    }
    if (over)
        used = VK_QUOTE_LIMIT;
    size_t suffix_len = over ? strlen(VK_QUOTE_CUT_SUFFIX) : 0;
    char *result = malloc(used + suffix_len + 1);
    if (result == NULL)
        return NULL;
    memcpy(result, quoted, used);
    memcpy(result + used, VK_QUOTE_CUT_SUFFIX, suffix_len);
    result[used + suffix_len] = '\0';
    return result;
}
