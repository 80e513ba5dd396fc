/*
 * Reading back what landed on a node (readback.h).
 */
#include "readback.h"
#include "vktest.h"

#include "vkclient.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *vkt_node_get(const vkt_server *node, const char *key)
{
    const char *argv[] = {"GET", key};
    char *header = vkt_server_cmd_line(node, argv, 2, 0);
    bool missing = header == NULL || strcmp(header, "$-1") == 0;
    free(header);
    return missing ? NULL : vkt_server_cmd_line(node, argv, 2, 1);
}

/* A plain client of the node. */
static vk_client *node_client(const vkt_server *node)
{
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(node));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_config_free(cfg);
    return c;
}

bool *vkt_keys_held(const vkt_server *node, const char *prefix, long count)
{
    enum { BATCH = 500 };
    bool *held = calloc((size_t)count + 1, sizeof *held);
    vk_client *c = node_client(node);
    if (held == NULL || c == NULL) {
        free(held);
        vk_client_free(c);
        return NULL;
    }
    static char keys[BATCH][64];
    const char *argv[BATCH + 1] = {"MGET"};
    size_t len[BATCH + 1] = {4};
    for (long from = 0; from < count && held != NULL; from += BATCH) {
        int n = count - from < BATCH ? (int)(count - from) : BATCH;
        for (int j = 0; j < n; j++) {
            snprintf(keys[j], sizeof keys[j], "%s%ld", prefix, from + j);
            argv[j + 1] = keys[j];
            len[j + 1] = strlen(keys[j]);
        }
        vk_reply *r = NULL;
        vk_status st = vk_client_command(&r, c, NULL, n + 1, argv, len);
        bool read = st == VK_OK && vk_reply_get_type(r) == VK_REPLY_ARRAY &&
                    vk_reply_get_length(r) == (size_t)n;
        CHECK(read);
        for (int j = 0; j < n && read; j++) {
            char want[32];
            size_t got_len = 0;
            const char *got = vk_reply_get_string(vk_reply_get_element(r, (size_t)j), &got_len);
            snprintf(want, sizeof want, "%ld", from + j);
            held[from + j] = got != NULL && got_len == strlen(want) &&
                             memcmp(got, want, got_len) == 0;
        }
        vk_reply_free(r);
        if (!read) {
            free(held);
            held = NULL;
        }
    }
    vk_client_free(c);
    return held;
}
