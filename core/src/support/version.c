/*
 * Run-time versions: of vkclient, and of the hiredis it was built with
 * (which decides whether RESP3 is available).
 */
#include "support/support.h"

#include <hiredis/hiredis.h>

#define VK_STRINGIFY_(x) #x
#define VK_STRINGIFY(x) VK_STRINGIFY_(x)

VK_API const char *vk_version(void)
{
    return VK_VERSION_STRING;
}

VK_API int vk_version_number(void)
{
    return VK_VERSION_NUMBER;
}

VK_API const char *vk_hiredis_version(void)
{
    return VK_STRINGIFY(HIREDIS_MAJOR) "." VK_STRINGIFY(HIREDIS_MINOR) "." VK_STRINGIFY(
        HIREDIS_PATCH);
}

VK_API int vk_resp3_supported(void)
{
    return HIREDIS_MAJOR >= 1;
}
