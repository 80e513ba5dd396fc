/*
 * Versions of vk_lock_options (VKTEST_NEEDS_SERVER): a caller built
 * against an older header passes a shorter struct with its own version.
 * The library accepts every version from 1 to VK_LOCK_OPTIONS_VERSION and
 * touches no byte past the caller's struct; 0 and versions from the future
 * are rejected with their own texts. The caller's struct here ends flush
 * against an inaccessible page, so a read or write past it faults.
 */
#include "vkclient.h"
#include "vktest.h"
#include "servers.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* vk_lock_options as version 1 declared it, frozen: what a program built
 * against the 1.0 header passes, whatever later headers append. */
typedef struct lock_options_v1 {
    unsigned int version;
    int64_t expiry_ms;
    int tries;
    int64_t retry_delay_ms;
    double drift_factor;
    int auto_renew;
} lock_options_v1;

/* While version 1 is current, the frozen copy is the header's struct. */
_Static_assert(VK_LOCK_OPTIONS_VERSION > 1 || sizeof(lock_options_v1) == sizeof(vk_lock_options),
               "version 1 of vk_lock_options changed");

#define FUTURE_TEXT(v)                                                           \
    "invalid argument: lock options version " #v " is newer than this library " \
    "(which reads up to version 1)"
#define ZERO_TEXT                                                                \
    "invalid argument: lock options version 0 is not valid: start from "         \
    "VK_LOCK_OPTIONS_INIT or vk_lock_options_init()"

static vkt_server *server;
static vk_client *client;
static vk_lock_manager *manager;

/* Two pages, the second inaccessible; the struct ends where it starts. */
typedef struct guarded {
    unsigned char *pages;
    size_t page;
    lock_options_v1 *v1;
} guarded;

static bool guard(guarded *g)
{
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, 2 * g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return false;
    g->pages = p;
    if (mprotect(g->pages + g->page, g->page, PROT_NONE) != 0)
        return false;
    g->v1 = (lock_options_v1 *)(void *)(g->pages + g->page - sizeof(lock_options_v1));
    return true;
}

static void unguard(guarded *g)
{
    munmap(g->pages, 2 * g->page);
}

static vk_lock_options *as_options(lock_options_v1 *v1)
{
    return (vk_lock_options *)(void *)v1;
}

static void test_version_1_struct_is_read_and_written_within_its_size(void)
{
    guarded g;
    CHECK(guard(&g));
    vk_lock_options *opts = as_options(g.v1);

    CHECK_OK(vk_lock_options_init(opts, 1));
    CHECK_EQ_INT(g.v1->version, 1);
    CHECK_EQ_INT(g.v1->expiry_ms, 10000);
    CHECK_EQ_INT(g.v1->tries, 3);
    CHECK_EQ_INT(g.v1->retry_delay_ms, 500);
    CHECK(g.v1->drift_factor == 0.01);
    CHECK_EQ_INT(g.v1->auto_renew, 0);
    CHECK_OK(vk_lock_options_validate(opts));

    CHECK_OK(vk_lock_options_rate_limiter(opts, 1));
    CHECK_EQ_INT(g.v1->expiry_ms, 2000);
    CHECK_EQ_INT(g.v1->tries, 2);
    CHECK_EQ_INT(g.v1->retry_delay_ms, 100);

    /* Every field of version 1 is read: the last one too. */
    g.v1->drift_factor = 1.0;
    CHECK_FAILS(vk_lock_options_validate(opts), VK_ERR_LOCK_DRIFT_FACTOR_INVALID,
                "lock drift factor must be between 0 (inclusive) and 1 (exclusive)");
    unguard(&g);
}

static vk_status mark_ran(void *userdata, vk_lock *lock)
{
    (void)lock;
    *(int *)userdata = 1;
    return VK_OK;
}

static void test_lock_calls_read_a_version_1_struct(void)
{
    guarded g;
    CHECK(guard(&g));
    vk_lock_options *opts = as_options(g.v1);
    CHECK_OK(vk_lock_options_init(opts, 1));
    g.v1->expiry_ms = 3000;
    g.v1->tries = 1;

    vk_lock *lock = NULL;
    CHECK_OK(vk_lock_manager_acquire(&lock, manager, NULL, "versions:acquire", 16, opts));
    CHECK(lock != NULL);
    /* The caller's expiry was read, not the default's 10 s. */
    CHECK(vk_lock_validity_ms(lock) > 0 && vk_lock_validity_ms(lock) <= 3000);
    CHECK_OK(vk_lock_unlock(lock, NULL));
    vk_lock_free(lock);

    g.v1->auto_renew = 1;
    int ran = 0;
    CHECK_OK(vk_lock_manager_with_lock_options(manager, NULL, "versions:with", 13, opts,
                                                mark_ran, &ran));
    CHECK_EQ_INT(ran, 1);

    g.v1->tries = 0;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, "versions:acquire", 16, opts),
                VK_ERR_LOCK_TRIES_INVALID, "lock tries must be at least 1");
    unguard(&g);
}

static void test_every_version_up_to_the_current_one_is_accepted(void)
{
    for (unsigned int v = 1; v <= VK_LOCK_OPTIONS_VERSION; v++) {
        vk_lock_options opts;
        CHECK_OK(vk_lock_options_init(&opts, v));
        CHECK_EQ_INT(opts.version, v);
        CHECK_OK(vk_lock_options_validate(&opts));
        CHECK_OK(vk_lock_options_rate_limiter(&opts, v));
        CHECK_OK(vk_lock_options_validate(&opts));
    }
}

/* A struct from a newer header may be longer than anything this library
 * knows: it is refused before any field past the version is read. */
static void test_future_and_zero_versions_are_rejected(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    CHECK_FAILS(vk_lock_options_init(&opts, VK_LOCK_OPTIONS_VERSION + 1),
                VK_ERR_INVALID_ARGUMENT, FUTURE_TEXT(2));
    CHECK_FAILS(vk_lock_options_rate_limiter(&opts, 0), VK_ERR_INVALID_ARGUMENT, ZERO_TEXT);
    CHECK_FAILS(vk_lock_options_init(&opts, 0), VK_ERR_INVALID_ARGUMENT, ZERO_TEXT);

    /* Only the first 8 bytes of a future caller's struct (the version and
     * the padding after it) are readable here. */
    guarded g;
    CHECK(guard(&g));
    unsigned int *version = (unsigned int *)(void *)(g.pages + g.page - 8);
    vk_lock_options *future = (vk_lock_options *)(void *)version;
    *version = 2;
    CHECK_FAILS(vk_lock_options_validate(future), VK_ERR_INVALID_ARGUMENT, FUTURE_TEXT(2));
    vk_lock *lock = NULL;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, "versions:future", 15, future),
                VK_ERR_INVALID_ARGUMENT, FUTURE_TEXT(2));
    CHECK(lock == NULL);
    int ran = 0;
    CHECK_FAILS(vk_lock_manager_with_lock_options(manager, NULL, "versions:future", 15, future,
                                                  mark_ran, &ran),
                VK_ERR_INVALID_ARGUMENT, FUTURE_TEXT(2));
    CHECK_EQ_INT(ran, 0);
    *version = 0;
    CHECK_FAILS(vk_lock_manager_acquire(&lock, manager, NULL, "versions:future", 15, future),
                VK_ERR_INVALID_ARGUMENT, ZERO_TEXT);
    unguard(&g);
}

int main(void)
{
    /* VKTEST_NEEDS_SERVER */
    server = vkt_server_start(&(vkt_server_opts){0});
    CHECK(server != NULL);
    if (server == NULL)
        return vkt_finish();
    vk_config *cfg = NULL;
    CHECK_OK(vk_config_new(&cfg));
    CHECK_OK(vk_config_set_standalone(cfg, vkt_server_address(server)));
    CHECK_OK(vk_client_new(&client, cfg));
    vk_config_free(cfg);
    CHECK_OK(vk_lock_manager_new(&manager, client));

    RUN(test_version_1_struct_is_read_and_written_within_its_size);
    RUN(test_lock_calls_read_a_version_1_struct);
    RUN(test_every_version_up_to_the_current_one_is_accepted);
    RUN(test_future_and_zero_versions_are_rejected);

    vk_lock_manager_free(manager);
    vk_client_free(client);
    vkt_server_stop(server);
    return vkt_finish();
}
