/* What HVKit's tiny C guests share to drive a virtio-mmio device with their own drivers: the
 * split virtqueue's layout, register access and queue set-up (virtio 1.x, virtio-mmio version
 * 2). Define QUEUE_SIZE before including it. Interrupts stay off: drivers poll used rings. */
#ifndef HVKIT_TENDER_VIRTIO_MMIO_H
#define HVKIT_TENDER_VIRTIO_MMIO_H

#include "hvkit_guest.h"

struct descriptor { uint64_t address; uint32_t length; uint16_t flags; uint16_t next; };
struct available { uint16_t flags; uint16_t index; uint16_t ring[QUEUE_SIZE]; uint16_t used_event; };
struct used_element { uint32_t id; uint32_t length; };
struct used { uint16_t flags; uint16_t index; struct used_element ring[QUEUE_SIZE]; uint16_t avail_event; };

struct queue {
    struct descriptor descriptors[QUEUE_SIZE] __attribute__((aligned(16)));
    struct available available __attribute__((aligned(2)));
    struct used used __attribute__((aligned(4)));
    uint16_t last_used;
};

/* The window of the device being driven. */
static volatile uint8_t *mmio;

static uint32_t read32(unsigned offset) { return *(volatile uint32_t *)(mmio + offset); }
static void write32(unsigned offset, uint32_t value) { *(volatile uint32_t *)(mmio + offset) = value; }
static void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

/* Resets the device and negotiates VERSION_1 plus those of `extra` (feature page 0) that it
 * offers, up to FEATURES_OK; 0, or 1 if the device refuses them. The driver then sets up its
 * queues and sets DRIVER_OK (0xF). */
static inline int negotiate(uint32_t extra) {
    write32(0x70, 0);                            /* reset */
    write32(0x70, 1);                            /* ACKNOWLEDGE */
    write32(0x70, 3);                            /* DRIVER */
    write32(0x14, 0);                            /* DeviceFeaturesSel 0 */
    uint32_t offered = read32(0x10);
    write32(0x24, 1);                            /* DriverFeaturesSel 1: VERSION_1 (bit 32) */
    write32(0x20, 1);
    write32(0x24, 0);
    write32(0x20, offered & extra);
    write32(0x70, 0xB);                          /* FEATURES_OK */
    return (read32(0x70) & 8) ? 0 : 1;
}

/* Whether the window holds a virtio-mmio version 2 device of type `device_id`. */
static inline int is_device(uint32_t device_id) {
    return read32(0x00) == 0x74726976 && read32(0x04) == 2 && read32(0x08) == device_id;
}

/* Gives queue `index` QUEUE_SIZE entries at `queue` and makes it ready; 0, or 2 if the device
 * offers fewer entries. */
static int set_up_queue(unsigned index, struct queue *queue) {
    write32(0x30, index);                        /* QueueSel */
    if (read32(0x34) < QUEUE_SIZE) return 2;     /* QueueNumMax */
    write32(0x38, QUEUE_SIZE);                   /* QueueNum */
    write32(0x80, (uint32_t)(uintptr_t)queue->descriptors);
    write32(0x84, 0);
    write32(0x90, (uint32_t)(uintptr_t)&queue->available);
    write32(0x94, 0);
    write32(0xA0, (uint32_t)(uintptr_t)&queue->used);
    write32(0xA4, 0);
    write32(0x44, 1);                            /* QueueReady */
    return 0;
}

/* Posts the chain that starts at descriptor 0 of `queue`, notifies queue `index` and waits
 * for the device to use it; returns the used length, or -1 if the device answered with
 * another chain. */
static inline int64_t submit(struct queue *queue, unsigned index) {
    queue->available.ring[queue->available.index % QUEUE_SIZE] = 0;
    barrier();
    queue->available.index++;
    barrier();
    write32(0x50, index);                        /* QueueNotify */
    while (*(volatile uint16_t *)&queue->used.index == queue->last_used) {}
    barrier();
    struct used_element element = queue->used.ring[queue->last_used % QUEUE_SIZE];
    queue->last_used++;
    return element.id == 0 ? (int64_t)element.length : -1;
}

#endif
