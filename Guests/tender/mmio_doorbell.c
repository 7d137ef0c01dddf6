/* Calls the host through the MMIO doorbell (its address comes in the entry argument) rather
 * than the port, for platforms without port I/O. */
#include "hvkit_guest.h"

int hv_main(uint64_t doorbell) {
    static const char text[] = "hello through the MMIO doorbell\n";
    if (hv_call3_mmio(doorbell, HV_CALL_CONSOLE_WRITE, (uint64_t)(uintptr_t)text, sizeof(text) - 1, 0) != sizeof(text) - 1)
        return 1;
    if (hv_call3_mmio(doorbell, 0x0FFF, 0, 0, 0) != -HV_ENOSYS) return 2;
    for (;;) hv_call3_mmio(doorbell, HV_CALL_EXIT, 0, 0, 0);
}
