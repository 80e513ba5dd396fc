/*
 * Node addresses: "host:port", "[v6]:port" and "unix:/path.sock".
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static vk_status bad_address(const char *address, const char *why)
{
    return vk__fail(VK_ERR_INVALID_CONFIG, "invalid address \"%s\": %s", address, why);
}

/* Digits only, 1..65535. */
static bool parse_port(const char *s, int *port)
{
    if (*s == '\0' || strlen(s) > 5)
        return false;
    int value = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        value = value * 10 + (*s - '0');
    }
    if (value < 1 || value > 65535)
        return false;
    *port = value;
    return true;
}

static bool has_space_or_control(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7F)
            return true;
    return false;
}

static vk_status parse_unix(vk_endpoint *out, const char *address)
{
    const char *path = address + strlen("unix:");
    if (path[0] != '/')
        return bad_address(address, "a unix socket path must be absolute");
    if (strlen(path) >= sizeof out->path)
        return bad_address(address, "unix socket path is too long");
    out->is_unix = true;
    strcpy(out->path, path);
    return VK_OK;
}

vk_status vk__parse_address(vk_endpoint *out, const char *address)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "endpoint is NULL");
    memset(out, 0, sizeof *out);
    if (address == NULL || address[0] == '\0')
        return vk__fail(VK_ERR_INVALID_CONFIG, "address is empty");
    if (strncmp(address, "unix:", 5) == 0)
        return parse_unix(out, address);
    if (has_space_or_control(address))
        return bad_address(address, "contains spaces or control characters");

    const char *host = address, *host_end, *port;
    if (address[0] == '[') {
        host = address + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return bad_address(address, "missing ']' after the IPv6 address");
        if (host_end[1] != ':')
            return bad_address(address, "missing port");
        port = host_end + 2;
    } else {
        host_end = strrchr(address, ':');
        if (host_end == NULL)
            return bad_address(address, "missing port");
        if (memchr(address, ':', (size_t)(host_end - address)) != NULL)
            return bad_address(address, "an IPv6 address must be in brackets, e.g. [::1]:6379");
        port = host_end + 1;
    }
    size_t host_len = (size_t)(host_end - host);
    if (host_len == 0)
        return bad_address(address, "missing host");
    if (host_len >= sizeof out->host)
        return bad_address(address, "host name is too long");
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    if (address[0] == '[') {
        struct in6_addr ignored;
        if (inet_pton(AF_INET6, out->host, &ignored) != 1)
            return bad_address(address, "not a valid IPv6 address in brackets");
    }
    if (!parse_port(port, &out->port))
        return bad_address(address, "port must be a number from 1 to 65535");
    return VK_OK;
}

void vk__format_endpoint(char *buf, size_t cap, const vk_endpoint *ep)
{
    if (buf == NULL || cap == 0)
        return;
    if (ep == NULL)
        snprintf(buf, cap, "<nil>");
    else if (ep->is_unix)
        snprintf(buf, cap, "unix:%s", ep->path);
    else if (strchr(ep->host, ':') != NULL)
        snprintf(buf, cap, "[%s]:%d", ep->host, ep->port);
    else
        snprintf(buf, cap, "%s:%d", ep->host, ep->port);
}

bool vk__endpoint_equal(const vk_endpoint *a, const vk_endpoint *b)
{
    if (a->is_unix != b->is_unix)
        return false;
    if (a->is_unix)
        return strcmp(a->path, b->path) == 0;
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}
