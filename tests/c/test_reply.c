/*
 * The reply tree and its accessors, on replies from a real server (the
 * word VKTEST_NEEDS_SERVER makes ctest run this against valkey and redis):
 * every RESP2 type, nesting, out-of-range and wrong-type access, NULL.
 */
#include "conn.h"
#include "support/servers.h"
#include "support/vktest.h"

#include <vkclient.h>

static vkt_server *server;
static vk_client *client;

/* Runs a command given as NUL-terminated words. */
static vk_reply *run(int argc, const char *const *argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    vk_reply *r = NULL;
    CHECK_OK(vk_client_command(&r, client, NULL, argc, argv, lens));
    return r;
}

static void test_scalars(void)
{
    const char *set[] = {"SET", "reply:s", "hello"};
    vk_reply *r = run(3, set);
    size_t len = 99;
    CHECK(vk_reply_get_type(r) == VK_REPLY_STATUS);
    CHECK(len == 99 && vk_reply_get_string(r, &len) != NULL && len == 2);
    CHECK(memcmp(vk_reply_get_string(r, NULL), "OK", 2) == 0);
    CHECK_EQ_INT(vk_reply_get_length(r), 0);
    CHECK(vk_reply_get_element(r, 0) == NULL);
    vk_reply_free(r);

    const char *get[] = {"GET", "reply:s"};
    r = run(2, get);
    CHECK(vk_reply_get_type(r) == VK_REPLY_STRING);
    const char *s = vk_reply_get_string(r, &len);
    CHECK(len == 5 && memcmp(s, "hello", 5) == 0);
    /* Wrong-type access gives the neutral value, never a crash. */
    CHECK_EQ_INT(vk_reply_get_integer(r), 0);
    CHECK(vk_reply_get_double(r) == 0.0);
    vk_reply_free(r);

    const char *incr[] = {"INCRBY", "reply:n", "-42"};
    r = run(3, incr);
    CHECK(vk_reply_get_type(r) == VK_REPLY_INTEGER);
    CHECK_EQ_INT(vk_reply_get_integer(r), -42);
    CHECK(vk_reply_get_double(r) == -42.0);
    CHECK(vk_reply_get_string(r, &len) == NULL && len == 0);
    vk_reply_free(r);

    const char *missing[] = {"GET", "reply:missing"};
    r = run(2, missing);
    CHECK(vk_reply_get_type(r) == VK_REPLY_NIL);
    CHECK(vk_reply_get_string(r, &len) == NULL && len == 0);
    vk_reply_free(r);

    const char *bad[] = {"INCR", "reply:s"};
    r = run(2, bad);
    CHECK(vk_reply_get_type(r) == VK_REPLY_ERROR);
    s = vk_reply_get_string(r, &len);
    CHECK(s != NULL && len > 4 && memcmp(s, "ERR ", 4) == 0);
    vk_reply_free(r);
}

static void test_nested_arrays(void)
{
    /* A script can return any shape of nested arrays. */
    const char *eval[] = {"EVAL", "return {1, 'two', {3, {'four'}}, {}}", "0"};
    vk_reply *r = run(3, eval);
    CHECK(vk_reply_get_type(r) == VK_REPLY_ARRAY);
    CHECK_EQ_INT(vk_reply_get_length(r), 4);
    CHECK_EQ_INT(vk_reply_get_integer(vk_reply_get_element(r, 0)), 1);
    size_t len;
    const char *s = vk_reply_get_string(vk_reply_get_element(r, 1), &len);
    CHECK(len == 3 && memcmp(s, "two", 3) == 0);
    const vk_reply *inner = vk_reply_get_element(r, 2);
    CHECK(vk_reply_get_type(inner) == VK_REPLY_ARRAY && vk_reply_get_length(inner) == 2);
    const vk_reply *deepest = vk_reply_get_element(vk_reply_get_element(inner, 1), 0);
    s = vk_reply_get_string(deepest, &len);
    CHECK(len == 4 && memcmp(s, "four", 4) == 0);
    const vk_reply *empty = vk_reply_get_element(r, 3);
    CHECK(vk_reply_get_type(empty) == VK_REPLY_ARRAY && vk_reply_get_length(empty) == 0);
    CHECK(vk_reply_get_element(r, 4) == NULL);
    CHECK(vk_reply_get_type(vk_reply_get_element(r, 4)) == VK_REPLY_NONE);
    CHECK(vk_reply_get_element(r, (size_t)-1) == NULL);
    vk_reply_free(r);
}

static void test_null_reply(void)
{
    size_t len = 7;
    CHECK(vk_reply_get_type(NULL) == VK_REPLY_NONE);
    CHECK_EQ_INT(VK_REPLY_NONE, 0);   /* what 1.0 returned, unnamed */
    CHECK(vk_reply_get_string(NULL, &len) == NULL && len == 0);
    CHECK(vk_reply_get_string(NULL, NULL) == NULL);
    CHECK_EQ_INT(vk_reply_get_integer(NULL), 0);
    CHECK(vk_reply_get_double(NULL) == 0.0);
    CHECK_EQ_INT(vk_reply_get_length(NULL), 0);
    CHECK(vk_reply_get_element(NULL, 0) == NULL);
    vk_reply_free(NULL);
}

/* Feeds bytes to the capped reader and returns its verdict on them. */
static int parse(redisReader *r, vk_reply_budget *b, const char *bytes, void **reply)
{
    *reply = NULL;
    if (redisReaderFeed(r, bytes, strlen(bytes)) != REDIS_OK)
        return REDIS_ERR;
    return vk__reader_get_reply(r, b, reply);
}

/* A reply announcing more elements than the cap is refused before anything
 * is allocated for it; the same counts summed over nested arrays too. */
static void test_huge_arrays_refused(void)
{
    redisReader *r = vk__reader_new();
    vk_reply_budget b = {0, false};
    void *reply;
    CHECK(parse(r, &b, "*2\r\n:1\r\n*1\r\n$1\r\nx\r\n", &reply) == REDIS_OK && reply != NULL);
    CHECK(!b.exceeded && b.elements == 3);
    vk_reply_free(reply);
    CHECK(parse(r, &b, "*2000000000\r\n", &reply) == REDIS_ERR);
    CHECK(b.exceeded);
    redisReaderFree(r);

    char nested[64];
    snprintf(nested, sizeof nested, "*%zu\r\n*%zu\r\n", VK_MAX_REPLY_ELEMENTS / 2 + 1,
             VK_MAX_REPLY_ELEMENTS / 2);
    r = vk__reader_new();
    b = (vk_reply_budget){0, false};
    CHECK(parse(r, &b, nested, &reply) == REDIS_ERR && b.exceeded);
    redisReaderFree(r);

    /* Every reply has its own budget: it starts again at each reply. */
    r = vk__reader_new();
    b = (vk_reply_budget){0, false};
    for (int i = 0; i < 3; i++) {
        CHECK(parse(r, &b, "*2\r\n:1\r\n:2\r\n", &reply) == REDIS_OK && reply != NULL);
        CHECK(!b.exceeded && b.elements == 2);
        vk_reply_free(reply);
    }
    redisReaderFree(r);
}

int main(void)
{
    server = vkt_server_start(&(vkt_server_opts){0});
    if (server == NULL)
        return 1;
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, vkt_server_address(server)));
    CHECK_OK(vk_client_new(&client, cfg));
    vk_config_free(cfg);
    if (client != NULL) {
        RUN(test_scalars);
        RUN(test_nested_arrays);
    }
    RUN(test_null_reply);
    RUN(test_huge_arrays_refused);
    vk_client_free(client);
    vkt_server_stop(server);
    return vkt_finish();
}
