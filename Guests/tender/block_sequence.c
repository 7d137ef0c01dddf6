/* A guest for snapshot tests: a long sequence of virtio-blk requests on one disk, one at a
 * time. It writes sectors 0 to COUNT-1 with a pattern, flushes, reads each back and compares,
 * keeping its progress in a record the host can read, so a test can snapshot it mid-way,
 * restore it, and see the sequence complete with the disk's bytes right.
 *
 * hv_main's argument: bits 32-63 the disk's window >> 12, bits 0-31 the record's page (>> 12).
 * The record: magic "BLKSEQ\0\0", requests completed, result (0 running, 1 every sector read
 * back right, 2 a request failed or a sector was wrong). */
#define QUEUE_SIZE 8
#include "virtio_block.h"

#define COUNT 48

struct record {
    uint64_t magic;
    volatile uint64_t completed;
    volatile uint64_t result;
};

static struct queue queue;
static uint8_t sector[SECTOR] __attribute__((aligned(64)));

static uint8_t pattern(unsigned number, unsigned offset) { return (uint8_t)((number * 31 + offset) ^ 0x5A); }

int hv_main(uint64_t argument) {
    mmio = (volatile uint8_t *)(uintptr_t)((argument >> 32) << 12);
    struct record *record = (struct record *)(uintptr_t)((argument & 0xFFFFFFFF) << 12);
    record->completed = 0;
    record->result = 0;
    record->magic = 0x5145534B4C42ULL; /* "BLKSEQ" */
    if (!is_device(2) || negotiate(BLOCK_FEATURE_FLUSH) || set_up_queue(0, &queue)) { record->result = 2; return 1; }
    write32(0x70, 0xF);                          /* DRIVER_OK */

    unsigned wrong = 0;
    for (unsigned number = 0; number < COUNT; number++) {
        for (unsigned offset = 0; offset < SECTOR; offset++) sector[offset] = pattern(number, offset);
        if (block_request(&queue, BLOCK_OUT, number, sector) != 0) wrong++;
        record->completed++;
    }
    if (block_request(&queue, BLOCK_FLUSH, 0, sector) != 0) wrong++;
    record->completed++;
    for (unsigned number = 0; number < COUNT; number++) {
        if (block_request(&queue, BLOCK_IN, number, sector) != 0) wrong++;
        for (unsigned offset = 0; offset < SECTOR; offset++) wrong += sector[offset] != pattern(number, offset);
        record->completed++;
    }
    record->result = wrong ? 2 : 1;
    static const char right[] = "block sequence: every sector right\n", failed[] = "block sequence: wrong\n";
    if (wrong) hv_console_write(failed, sizeof failed - 1); else hv_console_write(right, sizeof right - 1);
    return wrong ? 1 : 0;
}
