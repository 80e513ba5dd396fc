/*
 * vk_status to exception. The classes live in lib/vkclient/errors.rb; C asks
 * VKClient.error_class_for(code) so the mapping is written down once.
 */
#include "vkrb.h"

static ID id_error_class_for;
static ID id_new;

void vkrb_init_errors(void)
{
    id_error_class_for = rb_intern("error_class_for");
    id_new = rb_intern("new");
}

static VALUE error_class(vk_status code)
{
    return rb_funcall(vkrb_mVKClient, id_error_class_for, 1, INT2FIX((int)code));
}

void vkrb_raise(vk_status code)
{
    const char *detail = vk_last_error();
    VALUE message = rb_utf8_str_new_cstr(detail && *detail ? detail : vk_strerror(code));
    if (code == VK_ERR_CANCELLED) {
        /* The usual cause is a Ruby interrupt: raise that one, as a blocking
         * Ruby call would. CancelledError only when nothing is pending. */
        rb_thread_check_ints();
    }
    VALUE exc = rb_funcall(error_class(code), id_new, 1, message);
    rb_exc_raise(exc);
}

VALUE vkrb_response_error(const char *text, size_t len)
{
    VALUE message = rb_utf8_str_new(text, (long)len);
    return rb_funcall(error_class(VK_ERR_SERVER), id_new, 1, message);
}
