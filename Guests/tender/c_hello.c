/* A C guest for HVKit's tender: the same checks as hello.swift, in freestanding C. */
#include "hvkit_guest.h"

static void say(const char *text) {
    size_t length = 0;
    while (text[length]) length++;
    hv_console_write(text, length);
}

/* Entry argument: 0 for the normal run; HV_DEMO_ABORT to abort with a message instead. */
#define HV_DEMO_ABORT 0xAB0

int hv_main(uint64_t argument) {
    say("Hello from C on HVKit!\n");
    if (argument == HV_DEMO_ABORT) {
        static const char message[] = "aborting as asked";
        hv_abort(message, sizeof(message) - 1);
    }
    struct hv_info info;
    if (hv_get_info(&info) != HV_ABI_VERSION || info.abi_version != HV_ABI_VERSION) return 1;
    uint64_t before = hv_clock_monotonic();
    if (hv_clock_monotonic() < before || hv_clock_wall() == 0) return 2;
    uint64_t random[4] = {0};
    if (hv_random(random, sizeof(random)) != sizeof(random)) return 3;
    if ((random[0] | random[1] | random[2] | random[3]) == 0) return 4;
    if (info.features & HV_FEATURE_BLOCK) {
        static unsigned char sector[HV_BLOCK_SECTOR_SIZE] __attribute__((aligned(16)));
        static unsigned char check[HV_BLOCK_SECTOR_SIZE] __attribute__((aligned(16)));
        for (int i = 0; i < HV_BLOCK_SECTOR_SIZE; i++) sector[i] = (unsigned char)(i * 3 + 1);
        if (hv_block_write(0, sector, sizeof(sector)) != sizeof(sector)) return 5;
        if (hv_block_flush() != 0) return 6;
        if (hv_block_read(0, check, sizeof(check)) != sizeof(check)) return 7;
        for (int i = 0; i < HV_BLOCK_SECTOR_SIZE; i++)
            if (check[i] != sector[i]) return 8;
        say("block: sector 0 written and read back\n");
    }
    say("goodbye\n");
    return 0;
}
