#include "vktest.h"

int vkt_passed;
int vkt_failed;
const char *vkt_current = "";

int vkt_finish(void)
{
    printf("%d passed, %d failed\n", vkt_passed, vkt_failed);
    return vkt_failed == 0 && vkt_passed > 0 ? 0 : 1;
}
