/*
 * Every public client, pipeline and snapshot function on NULL handles:
 * the documented code and text, and a line through the package logger.
 */
#include "vktest.h"
#include "vkclient.h"

#include <string.h>

static int misuse_lines;

static void package_logger(void *userdata, vk_log_level level, const char *message,
                           const vk_field *fields, size_t nfields)
{
    misuse_lines++;
}

static void test_client_functions(void)
{
    const char *nil = "redis client is nil";
    CHECK_FAILS(vk_client_new(NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    vk_client *c = (vk_client *)&c;
    CHECK(vk_client_new(&c, NULL) == VK_ERR_INVALID_CONFIG);
    CHECK(c == NULL);
    vk_client_free(NULL);
    CHECK_FAILS(vk_client_connect(NULL, NULL), VK_ERR_NIL_CLIENT, nil);
    CHECK_FAILS(vk_client_close(NULL), VK_ERR_NIL_CLIENT, nil);
    CHECK_EQ_INT(vk_client_is_connected(NULL), 0);
    char *err = (char *)"x";
    CHECK_FAILS(vk_client_last_refresh_error(&err, NULL), VK_ERR_NIL_CLIENT, nil);
    CHECK(err == NULL);

    int before = misuse_lines;
    const char *argv[] = {"PING"};
    size_t len[] = {4};
    vk_reply *r = (vk_reply *)&r;
    CHECK_FAILS(vk_client_command(&r, NULL, NULL, 1, argv, len), VK_ERR_NIL_CLIENT, nil);
    CHECK(r == NULL);
    CHECK(misuse_lines > before);
    CHECK_FAILS(vk_client_command(NULL, NULL, NULL, 1, argv, len), VK_ERR_NIL_CLIENT, nil);

    CHECK_EQ_INT(vk_client_poll_events(NULL, 0), -1);
    CHECK_FAILS(vk_client_wait_events(NULL, NULL, 10), VK_ERR_NIL_CLIENT, nil);
    CHECK_FAILS(vk_client_tick(NULL, NULL), VK_ERR_NIL_CLIENT, nil);
}

static void test_snapshot_functions(void)
{
    vk_snapshot *s = (vk_snapshot *)&s;
    CHECK_FAILS(vk_client_snapshot(&s, NULL), VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK(s == NULL);
    CHECK_FAILS(vk_client_snapshot(NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    vk_snapshot_free(NULL);
    CHECK_EQ_INT(vk_snapshot_connected(NULL), 0);
    CHECK(vk_snapshot_last_refresh_error(NULL) == NULL);
    CHECK_EQ_INT(vk_snapshot_last_refresh_at_ms(NULL), 0);
    CHECK_EQ_INT(vk_snapshot_refresh_loop_running(NULL), 0);
    CHECK(vk_snapshot_mode(NULL) == NULL);
    CHECK(vk_snapshot_master_address(NULL) == NULL);
    CHECK_EQ_INT(vk_snapshot_master_switches(NULL), 0);
    CHECK_EQ_INT(vk_snapshot_slot_map_refreshes(NULL), 0);
    CHECK_EQ_INT(vk_snapshot_moved_redirects(NULL), 0);
    CHECK_EQ_INT(vk_snapshot_ask_redirects(NULL), 0);
    CHECK_EQ_INT(vk_snapshot_node_count(NULL), 0);
    CHECK(vk_snapshot_node_address(NULL, 0) == NULL);
    CHECK_EQ_INT(vk_snapshot_node_slots(NULL, 0), 0);
}

static void test_pipeline_functions(void)
{
    vk_pipeline *p = (vk_pipeline *)&p;
    CHECK_FAILS(vk_pipeline_new(&p, NULL), VK_ERR_NIL_CLIENT, "redis client is nil");
    CHECK(p == NULL);
    CHECK_FAILS(vk_pipeline_new(NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: out is NULL");
    vk_pipeline_free(NULL);
    const char *argv[] = {"PING"};
    size_t len[] = {4};
    CHECK_FAILS(vk_pipeline_append(NULL, 1, argv, len), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: pipeline is nil");
    CHECK_EQ_INT(vk_pipeline_length(NULL), 0);
    vk_reply *r = (vk_reply *)&r;
    CHECK_FAILS(vk_pipeline_exec(&r, NULL, NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: pipeline is nil");
    CHECK(r == NULL);
}

int main(void)
{
    vk_set_package_logger(package_logger, NULL, NULL);
    RUN(test_client_functions);
    RUN(test_snapshot_functions);
    RUN(test_pipeline_functions);
    vk_set_package_logger(NULL, NULL, NULL);
    return vkt_finish();
}
