#include "conns.h"
#include "vktest.h"

vk_conn *vkt_conn_open(const char *address, vk_config **cfg)
{
    vk_endpoint ep;
    vk_conn *conn = NULL;
    *cfg = NULL;
    CHECK_OK(vk_config_new(cfg));
    if (*cfg == NULL)
        return NULL;
    CHECK_OK(vk_config_set_standalone(*cfg, address));
    CHECK_OK(vk__config_prepare(*cfg, NULL));
    CHECK_OK(vk__parse_address(&ep, address));
    vk_conn_params params = { .cfg = *cfg };
    CHECK_OK(vk__conn_open(&conn, &ep, &params, NULL));
    return conn;
}

redisReply *vkt_conn_run(vk_conn *c, int argc, const char *const *argv)
{
    size_t lens[16];
    if (argc > 16)
        return NULL;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r = NULL;
    bool sent = false;
    if (vk__conn_command(c, &r, argc, argv, lens, NULL, &sent) != VK_OK)
        return NULL;
    return r;
}
