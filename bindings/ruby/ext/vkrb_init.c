/*
 * Entry point of the hand-written half, called from the SWIG module's init
 * (swig/ruby.swg) once the SWIG types exist.
 */
#include "vkrb.h"

VALUE vkrb_mVKClient;
VALUE vkrb_cClient;
VALUE vkrb_cLockManager;
VALUE vkrb_cLockHandle;
VALUE vkrb_cSession;

void vkrb_init(void)
{
    vkrb_mVKClient = rb_define_module("VKClient");
    vkrb_init_errors();
    vkrb_init_sinks();
    vkrb_init_trace();
    vkrb_init_client();
    vkrb_init_lock();
    vkrb_init_script();
    vkrb_init_scan();
    vkrb_init_session();
}
