// Compiled alone as C++ under -pedantic -Werror: the headers' extern "C",
// and the adapters' casts from void *.
#include <vkclient.h>
#include <vkclient_async.h>
#include <vkclient/libevent.h>
#include <vkclient/libuv.h>

int vk_header_test_anchor_cxx();
int vk_header_test_anchor_cxx()
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    vk_status (*fn)(vk_client **, const vk_config *) = &vk_client_new;
    vk_status (*afn)(vk_async **, const vk_config *, const vk_loop_adapter *) = &vk_async_new;
    vk_loop_adapter uv, ev;
    vk_libuv_adapter(&uv, nullptr);
    vk_libevent_adapter(&ev, nullptr);
    return static_cast<int>(opts.version) + (fn != nullptr ? 1 : 0) + (afn != nullptr ? 1 : 0) +
           static_cast<int>(uv.version + ev.version);
}
