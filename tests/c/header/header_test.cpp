// Compiled alone as C++ under -pedantic -Werror: the header's extern "C".
#include <vkclient.h>

int vk_header_test_anchor_cxx();
int vk_header_test_anchor_cxx()
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    vk_status (*fn)(vk_client **, const vk_config *) = &vk_client_new;
    return static_cast<int>(opts.version) + (fn != nullptr ? 1 : 0);
}
