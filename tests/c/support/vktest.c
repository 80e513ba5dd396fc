#include "vktest.h"

int vkt_passed;
int vkt_failed;
const char *vkt_current = "";

long long vkt_scaled_ms(long long ms)
{
    const char *env = getenv("VK_TEST_TIME_SCALE");
    long long scale = env != NULL ? atoll(env) : 1;
    return ms * (scale > 1 ? scale : 1);
}

int vkt_finish(void)
{
    printf("%d passed, %d failed\n", vkt_passed, vkt_failed);
    return vkt_failed == 0 && vkt_passed > 0 ? 0 : 1;
}
