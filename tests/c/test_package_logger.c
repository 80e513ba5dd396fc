/*
 * vk_set_package_logger() returns its status: VK_OK when the logger is in
 * place, VK_ERR_NO_MEMORY when it could not be stored, in which case the
 * previous logger stays and the new userdata is released at once. No
 * server needed.
 *
 * Allocation failure is injected at the allocator: this program is linked
 * with -Wl,--wrap=malloc (tests/c/CMakeLists.txt), so every malloc() of the
 * statically linked core goes through __wrap_malloc below.
 */
#include "vkclient.h"
#include "vktest.h"

#include <stdbool.h>
#include <stddef.h>

void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);

static int failing_mallocs;   /* how many of the next calls return NULL */

void *__wrap_malloc(size_t size)
{
    if (failing_mallocs > 0) {
        failing_mallocs--;
        return NULL;
    }
    return __real_malloc(size);
}

typedef struct sink {
    int logged;
    int freed;
} sink;

static void count_log(void *userdata, vk_log_level level, const char *message,
                      const vk_field *fields, size_t nfields)
{
    (void)level, (void)message, (void)fields, (void)nfields;
    ((sink *)userdata)->logged++;
}

static void count_free(void *userdata)
{
    ((sink *)userdata)->freed++;
}

/* Misuse the package logger reports: a command on a NULL client. */
static void misuse(void)
{
    const char *argv[] = {"PING"};
    size_t len[] = {4};
    vk_reply *r = NULL;
    (void)vk_client_command(&r, NULL, NULL, 1, argv, len);
}

static void test_set_and_clear_return_ok(void)
{
    sink a = {0};
    CHECK_OK(vk_set_package_logger(count_log, &a, count_free));
    misuse();
    CHECK_EQ_INT(a.logged, 1);
    CHECK_OK(vk_set_package_logger(NULL, NULL, NULL));
    CHECK_EQ_INT(a.freed, 1);
    misuse();
    CHECK_EQ_INT(a.logged, 1);
}

static void test_failure_keeps_the_previous_logger(void)
{
    sink a = {0}, b = {0};
    CHECK_OK(vk_set_package_logger(count_log, &a, count_free));
    failing_mallocs = 1;
    CHECK_FAILS(vk_set_package_logger(count_log, &b, count_free), VK_ERR_NO_MEMORY,
                "out of memory");
    CHECK_EQ_INT(failing_mallocs, 0);
    /* The new userdata is released at once; the old logger still logs. */
    CHECK_EQ_INT(b.freed, 1);
    CHECK_EQ_INT(a.freed, 0);
    misuse();
    CHECK_EQ_INT(a.logged, 1);
    CHECK_EQ_INT(b.logged, 0);
    CHECK_OK(vk_set_package_logger(NULL, NULL, NULL));
    CHECK_EQ_INT(a.freed, 1);
}

int main(void)
{
    RUN(test_set_and_clear_return_ok);
    RUN(test_failure_keeps_the_previous_logger);
    return vkt_finish();
}
