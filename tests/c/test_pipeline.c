/*
 * Pipelines (VKTEST_NEEDS_SERVER): replies in order, an error reply in the
 * middle, 10,000 commands, reuse after exec, and a freed client.
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"

#include <stdio.h>
#include <string.h>

static vkt_server *server;

static vk_status add(vk_pipeline *p, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return vk_pipeline_append(p, argc, argv, lens);
}

static vk_client *new_client(vk_config **cfg)
{
    vk_config_new(cfg);
    vk_config_set_standalone(*cfg, vkt_server_address(server));
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, *cfg));
    return c;
}

static void test_error_in_the_middle(void)
{
    vk_config *cfg;
    vk_client *c = new_client(&cfg);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *set[] = {"SET", "pipe-key", "text"};
    const char *incr[] = {"INCR", "pipe-key"};
    const char *get[] = {"GET", "pipe-key"};
    CHECK_OK(add(p, 3, set));
    CHECK_OK(add(p, 2, incr));
    CHECK_OK(add(p, 2, get));
    CHECK_EQ_INT(vk_pipeline_length(p), 3);
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK(vk_reply_get_type(r) == VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(r), 3);
    CHECK(vk_reply_get_type(vk_reply_get_element(r, 0)) == VK_REPLY_STATUS);
    CHECK(vk_reply_get_type(vk_reply_get_element(r, 1)) == VK_REPLY_ERROR);
    size_t len = 0;
    const char *s = vk_reply_get_string(vk_reply_get_element(r, 2), &len);
    CHECK(len == 4 && memcmp(s, "text", 4) == 0);
    vk_reply_free(r);

    /* Emptied for reuse; an empty exec is an empty array. */
    CHECK_EQ_INT(vk_pipeline_length(p), 0);
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 0);
    vk_reply_free(r);
    vk_pipeline_free(p);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_ten_thousand_commands(void)
{
    vk_config *cfg;
    vk_client *c = new_client(&cfg);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *del[] = {"DEL", "pipe-counter"};
    CHECK_OK(add(p, 2, del));
    const char *incr[] = {"INCR", "pipe-counter"};
    int failed = 0;
    for (int i = 0; i < 10000; i++)
        failed += add(p, 2, incr) != VK_OK;
    CHECK_EQ_INT(failed, 0);
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    CHECK_EQ_INT(vk_reply_get_length(r), 10001);
    int wrong = 0;
    for (size_t i = 1; i <= 10000; i++)
        wrong += vk_reply_get_integer(vk_reply_get_element(r, i)) != (long long)i;
    CHECK_EQ_INT(wrong, 0);
    vk_reply_free(r);
    vk_pipeline_free(p);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_binary_arguments(void)
{
    vk_config *cfg;
    vk_client *c = new_client(&cfg);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char value[] = {'\0', 'x', '\0'};
    const char *set[] = {"SET", "pipe-bin", value};
    size_t set_len[] = {3, 8, sizeof value};
    CHECK_OK(vk_pipeline_append(p, 3, set, set_len));
    const char *get[] = {"GET", "pipe-bin"};
    size_t get_len[] = {3, 8};
    CHECK_OK(vk_pipeline_append(p, 2, get, get_len));
    vk_reply *r = NULL;
    CHECK_OK(vk_pipeline_exec(&r, p, NULL));
    size_t len = 0;
    const char *s = vk_reply_get_string(vk_reply_get_element(r, 1), &len);
    CHECK(len == sizeof value && memcmp(s, value, len) == 0);
    vk_reply_free(r);
    vk_pipeline_free(p);
    vk_client_free(c);
    vk_config_free(cfg);
}

static void test_freed_client(void)
{
    vk_config *cfg;
    vk_client *c = new_client(&cfg);
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    const char *ping[] = {"PING"};
    CHECK_OK(add(p, 1, ping));
    vk_client_free(c);
    vk_reply *r = (vk_reply *)&cfg;
    CHECK_FAILS(vk_pipeline_exec(&r, p, NULL), VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK(r == NULL);
    vk_pipeline_free(p);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL)
        return 1;
    RUN(test_error_in_the_middle);
    RUN(test_ten_thousand_commands);
    RUN(test_binary_arguments);
    RUN(test_freed_client);
    vkt_server_stop(server);
    return vkt_finish();
}
