/*
 * Request encoding (VKTEST_NEEDS_SERVER): the bytes are hiredis's, sizes
 * are size_t end to end (a request over 2 GiB, an argument over 4 GiB),
 * and a request whose size does not fit in memory at all is refused
 * before anything is read, allocated or sent, leaving the connection
 * usable.
 *
 * Building a real request over 2 GiB would take gigabytes of memory in
 * the test and the server; the size arithmetic is checked instead, since
 * the buffer is sized from it before a byte is written.
 */
#include "vktest.h"
#include "servers.h"
#include "conns.h"
#include "vkclient.h"
#include "conn.h"

#include <limits.h>

static vkt_server *server;

static void check_same_as_hiredis(int argc, const char *const *argv, const size_t *lens)
{
    char *expected = NULL;
    int expected_len = redisFormatCommandArgv(&expected, argc, (const char **)argv, lens);
    size_t size = 0;
    CHECK(vk__request_size(argc, lens, &size));
    CHECK_EQ_INT(size, expected_len);
    char *ours = malloc(size);
    char *end = vk__request_encode(ours, argc, argv, lens);
    CHECK_EQ_INT(end - ours, expected_len);
    CHECK(expected != NULL && memcmp(ours, expected, size) == 0);
    free(ours);
    redisFreeCommand(expected);
}

static void test_encoding_matches_hiredis(void)
{
    const char *one[] = { "PING" };
    size_t one_lens[] = { 4 };
    check_same_as_hiredis(1, one, one_lens);

    const char *binary[] = { "SET", "k\r\n", "a\0b\r\nc", "" };
    size_t binary_lens[] = { 3, 3, 7, 0 };
    check_same_as_hiredis(4, binary, binary_lens);

    /* Lengths and counts around every change in the number of digits. */
    static char big[100000];
    memset(big, 'v', sizeof big);
    const char *many[12];
    size_t many_lens[12];
    size_t sizes[] = { 9, 10, 99, 100, 999, 1000, 9999, 10000, 99999, 100000, 1, 0 };
    for (int i = 0; i < 12; i++) {
        many[i] = big;
        many_lens[i] = sizes[i];
    }
    check_same_as_hiredis(9, many, many_lens);
    check_same_as_hiredis(10, many, many_lens);
    check_same_as_hiredis(12, many, many_lens);
}

/* "$<digits>\r\n<bytes>\r\n" */
static size_t bulk_size(size_t len, size_t digits)
{
    return 1 + digits + 2 + len + 2;
}

static void test_sizes_beyond_int(void)
{
    size_t over_int[] = { 3, (size_t)INT_MAX + 1, 5 };
    size_t size = 0;
    CHECK(vk__request_size(3, over_int, &size));
    CHECK(size > (size_t)INT_MAX);
    CHECK_EQ_INT(size, 4 + bulk_size(3, 1) + bulk_size((size_t)INT_MAX + 1, 10) +
                       bulk_size(5, 1));

    size_t over_4g[] = { 3, (size_t)5 << 30 };
    CHECK(vk__request_size(2, over_4g, &size));
    CHECK_EQ_INT(size, 4 + bulk_size(3, 1) + bulk_size((size_t)5 << 30, 10));

    size_t overflow[] = { SIZE_MAX / 2, SIZE_MAX / 2, 16 };
    CHECK(!vk__request_size(3, overflow, &size));
}

/* Lengths whose sum wraps a size_t: refused before argv is read (it
 * points at three bytes here). */
static void test_oversized_request_refused(void)
{
    vk_config *cfg = NULL;
    vk_conn *conn = vkt_conn_open(vkt_server_address(server), &cfg);
    if (conn == NULL) {
        vk_config_free(cfg);
        return;
    }
    const char *argv[] = { "SET", "k", "v" };
    size_t lens[] = { 3, SIZE_MAX / 2, SIZE_MAX / 2 };
    CHECK_FAILS(vk__conn_append(conn, 3, argv, lens), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: request too large");
    const char *ping[] = { "PING" };
    size_t ping_lens[] = { 4 };
    redisReply *r = NULL;
    bool sent = false;
    CHECK_OK(vk__conn_command(conn, &r, 1, ping, ping_lens, NULL, &sent));
    CHECK(r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0);
    vk__reply_free(r);
    vk__conn_close(conn);

    /* The same through the public API. */
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    vk_reply *reply = NULL;
    CHECK_FAILS(vk_client_command(&reply, c, NULL, 3, argv, lens), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: request too large");
    CHECK(reply == NULL);
    CHECK_OK(vk_client_command(&reply, c, NULL, 1, ping, ping_lens));
    vk_reply_free(reply);

    /* And through a pipeline, which encodes each command when appended:
     * the refused one leaves nothing behind. */
    vk_pipeline *p = NULL;
    CHECK_OK(vk_pipeline_new(&p, c));
    CHECK_OK(vk_pipeline_append(p, 1, ping, ping_lens));
    CHECK_FAILS(vk_pipeline_append(p, 3, argv, lens), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: request too large");
    CHECK(vk_pipeline_length(p) == 1);
    CHECK_OK(vk_pipeline_exec(&reply, p, NULL));
    CHECK(reply != NULL && vk_reply_get_length(reply) == 1);
    vk_reply_free(reply);
    vk_pipeline_free(p);
    vk_client_free(c);
    vk_config_free(cfg);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){ 0 });
    if (server == NULL) {
        fprintf(stderr, "cannot start %s\n", vkt_server_binary());
        return 1;
    }
    RUN(test_encoding_matches_hiredis);
    RUN(test_sizes_beyond_int);
    RUN(test_oversized_request_refused);
    vkt_server_stop(server);
    return vkt_finish();
}
