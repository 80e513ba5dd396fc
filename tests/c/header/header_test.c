/* Compiled alone under -pedantic -Werror to keep the public header clean. */
#include <vkclient.h>

int vk_header_test_anchor(void);
int vk_header_test_anchor(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    return (int)opts.version + VK_VERSION_NUMBER;
}
