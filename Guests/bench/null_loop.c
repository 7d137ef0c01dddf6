/* hv-bench: `count` null hypercalls (count in the entry argument), then exit. */
#include "hvkit_guest.h"

int hv_main(uint64_t count) {
    for (uint64_t i = 0; i < count; i++) hv_null();
    return 0;
}
