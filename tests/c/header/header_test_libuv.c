/* The libuv adapter under -pedantic -Werror. libuv's own <uv.h> needs POSIX
 * declarations (pthread_rwlock_t), which a strict -std=c99/c11 hides unless
 * the program asks for them. */
#define _POSIX_C_SOURCE 200809L
#include <vkclient/libuv.h>

int vk_header_test_libuv_anchor(void);
int vk_header_test_libuv_anchor(void)
{
    vk_loop_adapter uv;
    vk_libuv_adapter(&uv, (uv_loop_t *)0);
    return (int)uv.version;
}
