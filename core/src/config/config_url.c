/*
 * Configs from URLs:
 *   redis://[[user]:password@]host[:port][/db]     (port 6379 by default)
 *   rediss://...                                  (the same, with TLS on,
 *                                                  trusting the system store
 *                                                  until a CA is set)
 *   unix://[[user]:password@]/path.sock[?db=N]
 * User and password are percent-decoded. A URL in an error message always
 * has its password replaced by REDACTED.
 */
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define VK_DEFAULT_PORT 6379

/* The pieces of a URL, each a malloc'd string (or NULL when absent). */
typedef struct url_parts {
    char *redacted;   /* the URL as it may be shown */
    bool tls;
    bool is_unix;
    char *username;   /* decoded */
    char *password;   /* decoded; a secret */
    char *location;   /* host[:port] or the socket path, still encoded */
    char *path;       /* "/db" for redis://, NULL when none */
    char *query;      /* after '?', NULL when none */
} url_parts;

static void url_parts_free(url_parts *u)
{
    free(u->redacted);
    free(u->username);
    vk__free_secret(u->password);
    free(u->location);
    free(u->path);
    free(u->query);
}

static vk_status bad_url(const url_parts *u, const char *why)
{
    return vk__fail(VK_ERR_INVALID_CONFIG, "invalid URL \"%s\": %s",
                    u->redacted != NULL ? u->redacted : "", why);
}

static char *copy_range(const char *begin, const char *end)
{
    size_t n = (size_t)(end - begin);
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, begin, n);
        s[n] = '\0';
    }
    return s;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX escapes of [begin, end) into a new string. *out is NULL when
 * an escape is malformed or would decode to a NUL byte (or out of memory:
 * *bad tells the two apart). */
static char *percent_decode(const char *begin, const char *end, bool *bad)
{
    *bad = false;
    char *out = malloc((size_t)(end - begin) + 1), *w = out;
    if (out == NULL)
        return NULL;
    for (const char *p = begin; p < end; p++) {
        if (*p != '%') {
            *w++ = *p;
            continue;
        }
        int hi = p + 1 < end ? hex_value(p[1]) : -1;
        int lo = p + 2 < end ? hex_value(p[2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            vk__wipe(out, (size_t)(end - begin) + 1);
            free(out);
            *bad = true;
            return NULL;
        }
        *w++ = (char)(hi * 16 + lo);
        p += 2;
    }
    *w = '\0';
    return out;
}

/* Splits the URL; fills u->redacted first so every later error can show it. */
static vk_status split_url(url_parts *u, const char *url)
{
    const char *rest;
    if (strncasecmp(url, "redis://", 8) == 0) {
        rest = url + 8;
    } else if (strncasecmp(url, "rediss://", 9) == 0) {
        rest = url + 9;
        u->tls = true;
    } else if (strncasecmp(url, "unix://", 7) == 0) {
        rest = url + 7;
        u->is_unix = true;
    } else {
        /* No known scheme: show only the scheme-ish part, never the rest
         * (it may hold a password in an unexpected shape). */
        const char *colon = strchr(url, ':');
        size_t shown = colon != NULL && colon - url < 16 ? (size_t)(colon - url) : 0;
        return vk__fail(VK_ERR_INVALID_CONFIG,
                        "invalid URL: unsupported scheme \"%.*s\" (use redis://, rediss:// or "
                        "unix://)",
                        (int)shown, url);
    }
    size_t scheme_len = (size_t)(rest - url);

    /* The last '@' ends the user info, so unencoded '@', '/' or ':' in a
     * password still parse. */
    const char *at = strrchr(rest, '@');
    const char *after_userinfo = at != NULL ? at + 1 : rest;

    /* The redacted form: scheme, user, ":REDACTED" when there was a
     * password, then everything after the user info. */
    const char *colon = at != NULL ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
    const char *user_end = colon != NULL ? colon : at;
    size_t shown_user = at != NULL ? (size_t)(user_end - rest) : 0;
    size_t size = scheme_len + shown_user + strlen(":REDACTED@") + strlen(after_userinfo) + 1;
    if ((u->redacted = malloc(size)) == NULL)
        return vk__fail_nomem();
    snprintf(u->redacted, size, "%.*s%.*s%s%s%s", (int)scheme_len, url, (int)shown_user, rest,
             colon != NULL ? ":REDACTED" : "", at != NULL ? "@" : "", after_userinfo);

    if (at != NULL) {
        bool bad;
        u->username = percent_decode(rest, user_end, &bad);
        if (u->username == NULL)
            return bad ? bad_url(u, "malformed percent-encoding in the user name")
                       : vk__fail_nomem();
        if (colon != NULL) {
            u->password = percent_decode(colon + 1, at, &bad);
            if (u->password == NULL)
                return bad ? bad_url(u, "malformed percent-encoding in the password")
                           : vk__fail_nomem();
        }
    }

    const char *query = strchr(after_userinfo, '?');
    const char *location_end = query != NULL ? query : after_userinfo + strlen(after_userinfo);
    if (query != NULL && (u->query = strdup(query + 1)) == NULL)
        return vk__fail_nomem();
    if (u->is_unix) {
        u->location = copy_range(after_userinfo, location_end);
    } else {
        const char *slash = memchr(after_userinfo, '/', (size_t)(location_end - after_userinfo));
        const char *host_end = slash != NULL ? slash : location_end;
        u->location = copy_range(after_userinfo, host_end);
        if (slash != NULL && (u->path = copy_range(slash, location_end)) == NULL)
            return vk__fail_nomem();
    }
    return u->location != NULL ? VK_OK : vk__fail_nomem();
}

/* A non-negative decimal number that fits an int. */
static bool parse_number(const char *s, int *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 9)
        return false;
    int value = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        value = value * 10 + (*s - '0');
    }
    *out = value;
    return true;
}

/* "host", "host:port", "[v6]" or "[v6]:port" into "host:port" / "[v6]:port". */
static vk_status tcp_address(const url_parts *u, char *out, size_t cap)
{
    const char *loc = u->location;
    const char *host_end, *port = NULL;
    if (loc[0] == '[') {
        host_end = strchr(loc, ']');
        if (host_end == NULL)
            return bad_url(u, "missing ']' after the IPv6 host");
        host_end++;
        if (*host_end == ':')
            port = host_end + 1;
        else if (*host_end != '\0')
            return bad_url(u, "unexpected text after the IPv6 host");
    } else {
        host_end = strrchr(loc, ':');
        if (host_end != NULL) {
            if (memchr(loc, ':', (size_t)(host_end - loc)) != NULL)
                return bad_url(u, "an IPv6 host must be in brackets, e.g. [::1]");
            port = host_end + 1;
        } else {
            host_end = loc + strlen(loc);
        }
    }
    if (host_end == loc || (loc[0] == '[' && host_end - loc <= 2))
        return bad_url(u, "missing host");
    int port_number = VK_DEFAULT_PORT;
    if (port != NULL && (!parse_number(port, &port_number) || port_number < 1 ||
                         port_number > 65535))
        return bad_url(u, "port must be a number from 1 to 65535");
    snprintf(out, cap, "%.*s:%d", (int)(host_end - loc), loc, port_number);
    return VK_OK;
}

/* Applies "db=N&protocol=P" options; unknown names are errors. */
static vk_status apply_query(vk_config *cfg, const url_parts *u)
{
    if (u->query == NULL || u->query[0] == '\0')
        return VK_OK;
    char *query = strdup(u->query);
    if (query == NULL)
        return vk__fail_nomem();
    vk_status st = VK_OK;
    char *save = NULL;
    for (char *item = strtok_r(query, "&", &save); item != NULL && st == VK_OK;
         item = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(item, '=');
        const char *value = eq != NULL ? eq + 1 : "";
        if (eq != NULL)
            *eq = '\0';
        int number;
        if (strcmp(item, "db") == 0) {
            st = parse_number(value, &number) ? vk_config_set_db(cfg, number)
                                              : bad_url(u, "db must be a non-negative number");
        } else if (strcmp(item, "protocol") == 0) {
            st = parse_number(value, &number) ? vk_config_set_protocol(cfg, number)
                                              : bad_url(u, "protocol must be 2 or 3");
        } else {
            char why[160];
            snprintf(why, sizeof why, "unsupported option \"%.64s\" (supported: db, protocol)",
                     item);
            st = bad_url(u, why);
        }
    }
    free(query);
    return st;
}

static vk_status build_config(vk_config *cfg, const url_parts *u)
{
    vk_status st;
    if (u->is_unix) {
        if (u->location[0] != '/')
            return bad_url(u, "the socket path must be absolute, e.g. unix:///run/redis.sock");
        bool bad;
        char *path = percent_decode(u->location, u->location + strlen(u->location), &bad);
        if (path == NULL)
            return bad ? bad_url(u, "malformed percent-encoding in the socket path")
                       : vk__fail_nomem();
        size_t size = strlen(path) + 6;
        char *address = malloc(size);
        if (address == NULL) {
            free(path);
            return vk__fail_nomem();
        }
        snprintf(address, size, "unix:%s", path);
        free(path);
        st = vk_config_set_standalone(cfg, address);
        free(address);
    } else {
        char address[300];
        if (strlen(u->location) > 270)
            return bad_url(u, "host is too long");
        if ((st = tcp_address(u, address, sizeof address)) != VK_OK)
            return st;
        st = vk_config_set_standalone(cfg, address);
        if (st == VK_OK && u->path != NULL && strcmp(u->path, "/") != 0) {
            int db;
            if (!parse_number(u->path + 1, &db))
                return bad_url(u, "the path must be a database number, e.g. /0");
            st = vk_config_set_db(cfg, db);
        }
    }
    /* As with AUTH itself, a user name without a password means no auth. */
    if (st == VK_OK && u->password != NULL && u->password[0] != '\0')
        st = vk_config_set_static_password(cfg, u->username, u->password);
    if (st == VK_OK && u->tls) {
        /* As redis-py: without a CA the system store is trusted. A CA set
         * later replaces this default (config.c). */
        cfg->tls_enabled = true;
        cfg->tls_system_ca = true;
        cfg->tls_system_ca_by_default = true;
    }
    if (st == VK_OK)
        st = apply_query(cfg, u);
    return st;
}

VK_API vk_status vk_config_from_url(vk_config **out, const char *url)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (url == NULL) {
        vk__misuse("vk_config_from_url", "url is NULL");
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "url is NULL");
    }
    url_parts parts = {0};
    vk_config *cfg = NULL;
    vk_status st = split_url(&parts, url);
    if (st == VK_OK)
        st = vk_config_new(&cfg);
    if (st == VK_OK)
        st = build_config(cfg, &parts);
    url_parts_free(&parts);
    if (st != VK_OK) {
        vk_config_free(cfg);
        return st;
    }
    *out = cfg;
    return VK_OK;
}
