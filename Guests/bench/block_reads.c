/* hv-bench: read `total` bytes of the disk in 4 KiB requests, either one hypercall per request
 * (mode 0) or through the shared-memory channel with one doorbell per 32 requests (mode 1).
 * Entry argument: mode in bit 63, total bytes below. Exits 0 when every request succeeded. */
#include "hvkit_guest.h"

#define REQUEST 4096
#define BATCH 32

static unsigned char data[BATCH][REQUEST] __attribute__((aligned(4096)));
static struct {
    struct hv_channel_header header;
    struct hv_channel_slot slots[BATCH];
} ring __attribute__((aligned(64)));

int hv_main(uint64_t argument) {
    const int use_ring = (int)(argument >> 63);
    const uint64_t total = argument & ~(1ULL << 63);
    const uint64_t requests = total / REQUEST;
    if (!use_ring) {
        for (uint64_t i = 0; i < requests; i++)
            if (hv_block_read(i * REQUEST, data[i % BATCH], REQUEST) != REQUEST) return 1;
        return 0;
    }
    if (hv_channel_setup(&ring.header, BATCH) != 0) return 2;
    uint32_t producer = 0;
    for (uint64_t done = 0; done < requests;) {
        uint64_t batch = requests - done < BATCH ? requests - done : BATCH;
        for (uint64_t j = 0; j < batch; j++) {
            struct hv_channel_slot *slot = &ring.slots[(producer + j) % BATCH];
            slot->number = HV_CALL_BLOCK_READ;
            slot->flags = 0;
            slot->arguments[0] = (done + j) * REQUEST;
            slot->arguments[1] = (uint64_t)(uintptr_t)data[j];
            slot->arguments[2] = REQUEST;
        }
        producer += (uint32_t)batch;
        __atomic_store_n(&ring.header.request_producer, producer, __ATOMIC_RELEASE);
        if (hv_channel_notify() != (int64_t)batch) return 3;
        for (uint64_t j = 0; j < batch; j++)
            if (ring.slots[(producer - batch + j) % BATCH].result != REQUEST) return 4;
        done += batch;
    }
    return 0;
}
