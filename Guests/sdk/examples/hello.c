// The smallest C guest: says hello on HVKit's console and exits with its argument.
//   Guests/sdk/build-guest.sh hello.c -o hello.elf
#include "hvkit_guest.h"

int hv_main(uint64_t argument) {
    static const char text[] = "hello from a C guest\n";
    hv_console_write(text, sizeof(text) - 1);
    return (int)argument;
}
