/* A minimal virtio-blk request for HVKit's tiny C guests: one sector in or out, or a flush,
 * on the disk's queue 0 set up with virtio_mmio.h. */
#ifndef HVKIT_TENDER_VIRTIO_BLOCK_H
#define HVKIT_TENDER_VIRTIO_BLOCK_H

#include "virtio_mmio.h"

#define SECTOR 512
#define BLOCK_IN 0
#define BLOCK_OUT 1
#define BLOCK_FLUSH 4
#define BLOCK_FEATURE_FLUSH (1u << 9)

struct block_header { uint32_t type; uint32_t reserved; uint64_t sector; };

static struct block_header block_header;
static volatile uint8_t block_status;

/* Header, then `sector_data` (one sector; not for a flush), then the status byte; returns the
 * status the device wrote, or -1 if it answered with another chain. */
static inline int block_request(struct queue *queue, uint32_t type, uint64_t sector, uint8_t *sector_data) {
    block_header = (struct block_header){ type, 0, sector };
    block_status = 0xFF;
    queue->descriptors[0] = (struct descriptor){ (uint64_t)(uintptr_t)&block_header, sizeof block_header, 1 /* NEXT */, 1 };
    unsigned last = 1;
    if (type != BLOCK_FLUSH) {
        queue->descriptors[1] = (struct descriptor){ (uint64_t)(uintptr_t)sector_data, SECTOR,
                                                     (uint16_t)(1 | (type == BLOCK_IN ? 2 : 0)), 2 };
        last = 2;
    }
    queue->descriptors[last] = (struct descriptor){ (uint64_t)(uintptr_t)&block_status, 1, 2 /* WRITE */, 0 };
    if (submit(queue, 0) < 0) return -1;
    return block_status;
}

#endif
