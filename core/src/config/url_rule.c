/*
 * The URL rule of the IAM endpoints (config.h): the config validates the
 * endpoint with it, and the HTTP calls check every URL they are given.
 */
#include "config/config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- the rule ---------------------------------------------------------- */

static bool is_loopback_host(const char *host, size_t len)
{
    char name[256];
    if (len == 0 || len >= sizeof name)
        return false;
    memcpy(name, host, len);
    name[len] = '\0';
    if (strcasecmp(name, "localhost") == 0 || strcmp(name, "[::1]") == 0)
        return true;
    /* 127.0.0.0/8 written as a dotted quad. */
    unsigned a, b, c, d;
    char extra;
    return sscanf(name, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 &&
           b < 256 && c < 256 && d < 256;
}

bool vk__http_url_allowed(const char *url)
{
    if (url == NULL)
        return false;
    if (strncasecmp(url, "https://", 8) == 0)
        return url[8] != '\0' && url[8] != '/';
    if (strncasecmp(url, "http://", 7) != 0)
        return false;
    const char *host = url + 7;
    const char *at = strchr(host, '@');
    if (at != NULL && at < host + strcspn(host, "/?#"))
        return false;                  /* userinfo could disguise the host */
    size_t len;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (end == NULL)
            return false;
        len = (size_t)(end - host) + 1;
    } else {
        len = strcspn(host, ":/?#");
    }
    return is_loopback_host(host, len);
}

