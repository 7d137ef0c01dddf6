/* A hostile C guest: every hypercall with arguments the host must refuse. Exits with 0 when
 * each one came back with the expected error code, else with the number of the first check
 * that did not (and says which on the console). */
#include "hvkit_guest.h"

static int failed_check;

static void expect(int check, int64_t result, int64_t code) {
    if (result != -code && !failed_check) {
        failed_check = check;
        static char text[] = "check ?? failed\n";
        text[6] = (char)('0' + check / 10);
        text[7] = (char)('0' + check % 10);
        hv_console_write(text, sizeof(text) - 1);
    }
}

/* Arguments come from the host as: a0 = first address past RAM. */
int hv_main(uint64_t ram_end) {
    static unsigned char buffer[4096 * 2] __attribute__((aligned(4096)));
    const uint64_t top = ~0ULL;
    expect(1, hv_call0(0x0FFF), HV_ENOSYS);                                   /* unknown number */
    expect(2, hv_call0(0xFFFFFFFFu), HV_ENOSYS);
    expect(3, hv_console_write((void *)ram_end, 16), HV_EFAULT);               /* outside RAM */
    expect(4, hv_call2(HV_CALL_CONSOLE_WRITE, top - 4, 16), HV_EFAULT);       /* wraps around */
    expect(5, hv_console_write(buffer, HV_MAX_SMALL_TRANSFER + 1), HV_E2BIG);  /* oversized */
    expect(6, hv_call2(HV_CALL_CONSOLE_WRITE, (uint64_t)buffer, top), HV_E2BIG);
    expect(7, hv_random((void *)(ram_end - 8), 16), HV_EFAULT);                /* straddles the end */
    expect(8, hv_random(buffer, 0), HV_EINVAL);
    expect(9, hv_get_info((struct hv_info *)(ram_end - 32)), HV_EFAULT);
    expect(10, hv_block_read(0, buffer, 512), HV_ENOSYS);                      /* no disk attached */
    expect(11, hv_channel_notify(), HV_EINVAL);                                /* before setup */
    expect(12, hv_channel_setup((struct hv_channel_header *)(buffer + 8), 4), HV_EINVAL); /* unaligned */
    expect(13, hv_channel_setup((struct hv_channel_header *)buffer, 3), HV_EINVAL);       /* not a power of 2 */
    expect(14, hv_channel_setup((struct hv_channel_header *)(ram_end - 64), 1), HV_EFAULT);
    /* A ring whose producer runs far ahead breaks the channel. */
    struct hv_channel_header *ring = (struct hv_channel_header *)buffer;
    if (hv_channel_setup(ring, 4) != 0) expect(15, -1, 0);
    ring->request_producer = 1000;
    expect(16, hv_channel_notify(), HV_EPROTO);
    ring->request_producer = 0;
    expect(17, hv_channel_notify(), HV_EPROTO);                                /* stays broken */
    /* Set up again: a request that may not run on the channel gets EINVAL in its slot. */
    if (hv_channel_setup(ring, 4) != 0) expect(18, -1, 0);
    struct hv_channel_slot *slots = (struct hv_channel_slot *)(ring + 1);
    slots[0] = (struct hv_channel_slot){ .number = HV_CALL_EXIT, .arguments = { 7 } };
    slots[1] = (struct hv_channel_slot){ .number = HV_CALL_NULL, .flags = 1 };
    slots[2] = (struct hv_channel_slot){ .number = HV_CALL_CONSOLE_WRITE, .arguments = { ram_end, 4 } };
    slots[3] = (struct hv_channel_slot){ .number = HV_CALL_NULL };
    __atomic_store_n(&ring->request_producer, 4, __ATOMIC_RELEASE);
    if (hv_channel_notify() != 4) expect(19, -1, 0);
    expect(20, slots[0].result, HV_EINVAL);
    expect(21, slots[1].result, HV_EINVAL);
    expect(22, slots[2].result, HV_EFAULT);
    if (slots[3].result != 0 || ring->response_producer != 4) expect(23, -1, 0);
    /* Polls with absurd timeouts return (clamped; a source-less poll just times out). */
    expect(24, hv_poll(0) == 0 ? -99 : 0, 99);
    return failed_check;
}
