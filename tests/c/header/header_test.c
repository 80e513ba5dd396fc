/* Compiled alone under -pedantic -Werror to keep the public headers clean:
 * the blocking API, the event-loop API and the libevent adapter, with no
 * feature macro (header_test_libuv.c covers the libuv adapter). */
#include <vkclient.h>
#include <vkclient_async.h>
#include <vkclient/libevent.h>

int vk_header_test_anchor(void);
int vk_header_test_anchor(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    vk_loop_adapter ev;
    vk_status (*fn)(vk_async **, const vk_config *, const vk_loop_adapter *) = &vk_async_new;
    vk_libevent_adapter(&ev, (struct event_base *)0);
    return (int)opts.version + VK_VERSION_NUMBER + (int)ev.version + (fn != 0 ? 1 : 0);
}
