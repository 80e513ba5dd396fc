/*
 * Fork safety (VKTEST_NEEDS_SERVER): a client made in the parent works in a
 * fork()ed child, and the parent's connection still works afterwards (the
 * child never touched the parent's connection).
 */
#include "vktest.h"
#include "servers.h"
#include "vkclient.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Global, so the child (which exits without stopping the parent's server)
 * still reaches it: no leak is reported for the child. */
static vkt_server *server;

static long long client_id(vk_client *c)
{
    const char *argv[] = {"CLIENT", "ID"};
    size_t len[] = {6, 2};
    vk_reply *r = NULL;
    long long id = -1;
    if (vk_client_command(&r, c, NULL, 2, argv, len) == VK_OK)
        id = vk_reply_get_integer(r);
    vk_reply_free(r);
    return id;
}

static void test_child_and_parent_both_work(void)
{
    server = vkt_server_start(&(vkt_server_opts){0});
    CHECK(server != NULL);
    if (server == NULL)
        return;
    vk_config *cfg = NULL;
    vk_config_new(&cfg);
    vk_config_set_standalone(cfg, vkt_server_address(server));
    vk_config_set_pool_size(cfg, 1);
    vk_client *c = NULL;
    CHECK_OK(vk_client_new(&c, cfg));
    long long parent_id = client_id(c);
    CHECK(parent_id > 0);

    pid_t pid = fork();
    if (pid == 0) {
        /* The child gets a connection of its own, never the parent's. */
        long long child_id = client_id(c);
        int ok = child_id > 0 && child_id != parent_id;
        vk_client_free(c);
        vk_config_free(cfg);
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Same connection as before the fork: the child did not close it. */
    CHECK_EQ_INT(client_id(c), parent_id);
    vk_client_free(c);
    vk_config_free(cfg);
    vkt_server_stop(server);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    RUN(test_child_and_parent_both_work);
    return vkt_finish();
}
