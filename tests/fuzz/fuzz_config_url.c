/*
 * Fuzzes config parsing: connection URLs, addresses (host:port, [v6]:port,
 * unix:/path), topology lists, and the describe function. Besides "no
 * crash, no leak", it checks one contract rule: a password never appears in
 * a config's description.
 */
#include "vkclient.h"
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *describe(const vk_config *cfg)
{
    char *text = NULL;
    if (vk_config_describe(&text, cfg) != VK_OK)
        return NULL;
    return text;
}

static void fuzz_url(const char *s)
{
    vk_config *cfg = NULL;
    if (vk_config_from_url(&cfg, s) == VK_OK) {
        vk_config_validate(cfg);
        vk_free(describe(cfg));
    }
    vk_config_free(cfg);
}

static void fuzz_address(const char *s)
{
    vk_endpoint ep;
    if (vk__parse_address(&ep, s) == VK_OK) {
        char buf[512];
        vk__format_endpoint(buf, sizeof buf, &ep);
        /* What was formatted must parse again to the same endpoint. */
        vk_endpoint again;
        if (vk__parse_address(&again, buf) != VK_OK || again.is_unix != ep.is_unix ||
            again.port != ep.port || strcmp(again.host, ep.host) != 0 ||
            strcmp(again.path, ep.path) != 0)
            abort();
    }
    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK)
        return;
    vk_config_set_standalone(cfg, s);
    vk_config_validate(cfg);
    vk_config_free(cfg);
}

/* Comma-separated lists for the sentinel and cluster topologies. */
static void fuzz_lists(char *s)
{
    vk_config *sentinel = NULL, *cluster = NULL;
    if (vk_config_new(&sentinel) != VK_OK || vk_config_new(&cluster) != VK_OK)
        goto out;
    char *master = s, *rest = strchr(s, ';');
    if (rest)
        *rest++ = '\0';
    vk_config_set_sentinel(sentinel, master);
    vk_config_set_cluster(cluster);
    for (char *tok = rest; tok;) {
        char *next = strchr(tok, ',');
        if (next)
            *next++ = '\0';
        vk_config_add_sentinel_address(sentinel, tok);
        vk_config_add_cluster_address(cluster, tok);
        tok = next;
    }
    vk_config_validate(sentinel);
    vk_config_validate(cluster);
    vk_free(describe(sentinel));
    vk_free(describe(cluster));
out:
    vk_config_free(sentinel);
    vk_config_free(cluster);
}

/* The password must not show in the description: compare with the text
 * for a harmless password, so a password that is a word of the
 * description itself ("Standalone") is not mistaken for a leak. */
static void fuzz_password(const char *s)
{
    if (strlen(s) < 6)
        return;
    vk_config *cfg = NULL, *other = NULL;
    if (vk_config_new(&cfg) != VK_OK || vk_config_new(&other) != VK_OK)
        goto out;
    vk_config_set_standalone(cfg, "127.0.0.1:6379");
    vk_config_set_standalone(other, "127.0.0.1:6379");
    if (vk_config_set_static_password(cfg, "user", s) != VK_OK ||
        vk_config_set_static_password(other, "user", "x") != VK_OK)
        goto out;
    char *with = describe(cfg), *without = describe(other);
    if (with && without && strstr(with, s) && !strstr(without, s))
        abort();
    vk_free(with);
    vk_free(without);
out:
    vk_config_free(cfg);
    vk_config_free(other);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    char *s = malloc(size);
    if (!s)
        return 0;
    /* The first byte picks the parser; the rest is the text (NUL-ended). */
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch (data[0] % 4) {
    case 0: fuzz_url(s); break;
    case 1: fuzz_address(s); break;
    case 2: fuzz_lists(s); break;
    default: fuzz_password(s); break;
    }
    free(s);
    return 0;
}
