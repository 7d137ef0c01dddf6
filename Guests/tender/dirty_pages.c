/* A guest for the diff snapshot test: it sets up its virtio-blk disk, then waits for the host
 * to say go (so that a base snapshot can be taken in between), then writes guest pages 100 to
 * 199 itself and reads sector 0 of the disk into page 300 through virtio-blk: a write the
 * device makes, which KVM's dirty log does not see and the VMM's own log must. A diff taken
 * after that must hold those 101 pages.
 *
 * hv_main's argument: bits 32-63 the disk's window >> 12, bits 0-31 the record's page (>> 12).
 * The record: magic "DIRTY\0\0\0", go (the host sets 1), done (1: both done, 2: a request
 * failed). */
#define QUEUE_SIZE 8
#include "virtio_block.h"

#define PAGE 4096ULL

struct record {
    uint64_t magic;
    volatile uint64_t go;
    volatile uint64_t done;
};

static struct queue queue;

int hv_main(uint64_t argument) {
    mmio = (volatile uint8_t *)(uintptr_t)((argument >> 32) << 12);
    struct record *record = (struct record *)(uintptr_t)((argument & 0xFFFFFFFF) << 12);
    record->go = 0;
    record->done = 0;
    if (!is_device(2) || negotiate(0) || set_up_queue(0, &queue)) {
        record->done = 2;
        return 1;
    }
    write32(0x70, 0xF); /* DRIVER_OK */
    record->magic = 0x5954524944ULL; /* "DIRTY" */

    while (!record->go) __asm__ volatile("pause" ::: "memory");

    for (uint64_t page = 100; page < 200; page++) *(volatile uint64_t *)(uintptr_t)(page * PAGE + 16) = page ^ 0x6469727479ULL;
    int failed = block_request(&queue, BLOCK_IN, 0, (uint8_t *)(uintptr_t)(300 * PAGE)) != 0;
    record->done = failed ? 2 : 1;
    for (;;) __asm__ volatile("hlt");
}
