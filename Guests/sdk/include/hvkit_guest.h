/* hvkit_guest.h: HVKit's hypercall ABI 1.0 for guests (see docs/ABI.md).
 *
 * Freestanding C (C11); include it in a guest built with -ffreestanding. The host's
 * definitions are in HVParavirt (HypercallABI.swift and friends); a test in HVParavirtTests
 * checks that both agree on every number, code, size and offset.
 *
 * A hypercall: the number in EAX written to a doorbell, arguments in RDI, RSI, RDX, R10, R8,
 * R9, the result in RAX: >= 0 on success, a negated HV_E* code on failure.
 */
#ifndef HVKIT_GUEST_H
#define HVKIT_GUEST_H

#include <stdint.h>
#include <stddef.h>

#define HV_ABI_VERSION_MAJOR 1
#define HV_ABI_VERSION_MINOR 0
#define HV_ABI_VERSION 0x00010000 /* HV_ABI_VERSION_MAJOR << 16 | HV_ABI_VERSION_MINOR */

/* Doorbells. */
#define HV_DOORBELL_PORT 0xE0
#define HV_DOORBELL_MMIO_DEFAULT 0xFEF00000ULL

/* Hypercall numbers. */
#define HV_CALL_INFO 0
#define HV_CALL_CONSOLE_WRITE 1
#define HV_CALL_CLOCK_MONOTONIC 2
#define HV_CALL_CLOCK_WALL 3
#define HV_CALL_RANDOM 4
#define HV_CALL_BLOCK_READ 5
#define HV_CALL_BLOCK_WRITE 6
#define HV_CALL_BLOCK_FLUSH 7
#define HV_CALL_NET_SEND 8
#define HV_CALL_NET_RECEIVE 9
#define HV_CALL_POLL 10
#define HV_CALL_EXIT 11
#define HV_CALL_ABORT 12
#define HV_CALL_CHANNEL_SETUP 13
#define HV_CALL_CHANNEL_NOTIFY 14
#define HV_CALL_NULL 15
#define HV_CALL_USER_BASE 0x1000

/* Error codes, returned negated. */
#define HV_EIO 5
#define HV_E2BIG 7
#define HV_EAGAIN 11
#define HV_EFAULT 14
#define HV_EINVAL 22
#define HV_EROFS 30
#define HV_ERANGE 34
#define HV_ENOSYS 38
#define HV_EPROTO 71
#define HV_EMSGSIZE 90

/* Features in hv_info.features. */
#define HV_FEATURE_CONSOLE (1ULL << 0)
#define HV_FEATURE_CLOCK (1ULL << 1)
#define HV_FEATURE_RANDOM (1ULL << 2)
#define HV_FEATURE_BLOCK (1ULL << 3)
#define HV_FEATURE_BLOCK_READONLY (1ULL << 4)
#define HV_FEATURE_NET (1ULL << 5)
#define HV_FEATURE_POLL (1ULL << 6)
#define HV_FEATURE_CHANNEL (1ULL << 7)
#define HV_FEATURE_MMIO_DOORBELL (1ULL << 8)
#define HV_FEATURE_VMCALL (1ULL << 9)

/* Bits of what HV_CALL_POLL returns. */
#define HV_POLL_NET_RECEIVE (1ULL << 0)

/* Limits. */
#define HV_MAX_SMALL_TRANSFER 4096
#define HV_MAX_BLOCK_TRANSFER (1 << 20)
#define HV_BLOCK_SECTOR_SIZE 512
#define HV_MAX_POLL_NS 10000000000ULL

/* What HV_CALL_INFO writes at the address in its first argument. */
struct hv_info {
    uint32_t abi_version;
    uint32_t sector_size;
    uint64_t features;
    uint64_t memory_size;
    uint64_t block_capacity;
    uint8_t mac[6];
    uint16_t mtu;
    uint32_t max_transfer;
    uint32_t max_small_transfer;
    uint64_t reserved[2];
};
_Static_assert(sizeof(struct hv_info) == 64, "hv_info is 64 bytes");

/* The shared-memory channel: a 64-byte header, then a power-of-two count of 64-byte slots. */
#define HV_CHANNEL_MAX_SLOTS 4096
#define HV_CHANNEL_ALIGNMENT 64
#define HV_CHANNEL_ARGUMENTS 5

struct hv_channel_header {
    uint32_t request_producer;  /* guest: requests published */
    uint32_t request_consumer;  /* host: requests taken */
    uint32_t response_producer; /* host: results written */
    uint32_t slots;             /* host, at setup */
    uint8_t reserved[48];
};
_Static_assert(sizeof(struct hv_channel_header) == 64, "hv_channel_header is 64 bytes");

struct hv_channel_slot {
    uint32_t number;
    uint32_t flags; /* must be 0 */
    uint64_t cookie; /* the guest's; the host leaves it alone */
    uint64_t arguments[HV_CHANNEL_ARGUMENTS];
    int64_t result; /* host */
};
_Static_assert(sizeof(struct hv_channel_slot) == 64, "hv_channel_slot is 64 bytes");

/* The trap: one `out` to the doorbell port. Inline assembly is the one part a Swift guest
 * cannot write itself (Swift has no inline assembly), so the Embedded Swift SDK calls these. */
static inline int64_t hv_call6(uint32_t number, uint64_t a0, uint64_t a1, uint64_t a2,
                               uint64_t a3, uint64_t a4, uint64_t a5) {
    register uint64_t r10 __asm__("r10") = a3;
    register uint64_t r8 __asm__("r8") = a4;
    register uint64_t r9 __asm__("r9") = a5;
    uint64_t result = number;
    __asm__ volatile("outl %%eax, %[port]"
                     : "+a"(result)
                     : [port] "i"(HV_DOORBELL_PORT), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                     : "memory");
    return (int64_t)result;
}

static inline int64_t hv_call3(uint32_t number, uint64_t a0, uint64_t a1, uint64_t a2) {
    uint64_t result = number;
    __asm__ volatile("outl %%eax, %[port]" : "+a"(result) : [port] "i"(HV_DOORBELL_PORT), "D"(a0), "S"(a1), "d"(a2) : "memory");
    return (int64_t)result;
}

static inline int64_t hv_call0(uint32_t number) { return hv_call3(number, 0, 0, 0); }
static inline int64_t hv_call1(uint32_t number, uint64_t a0) { return hv_call3(number, a0, 0, 0); }
static inline int64_t hv_call2(uint32_t number, uint64_t a0, uint64_t a1) { return hv_call3(number, a0, a1, 0); }

/* The same call through an MMIO doorbell (a 32-bit store of the number). */
static inline int64_t hv_call3_mmio(uint64_t doorbell, uint32_t number, uint64_t a0, uint64_t a1, uint64_t a2) {
    register uint64_t r11 __asm__("r11") = doorbell;
    uint64_t result = number;
    __asm__ volatile("movl %%eax, (%%r11)" : "+a"(result) : "r"(r11), "D"(a0), "S"(a1), "d"(a2) : "memory");
    return (int64_t)result;
}

/* Flushes the console line the runtime buffers for putchar (Guests/sdk/runtime/runtime.c). */
void hv_flush_console(void);

/* Wrappers. Buffers are guest-physical addresses: HVKit guests run identity-mapped. */
static inline int64_t hv_get_info(struct hv_info *info) { return hv_call1(HV_CALL_INFO, (uint64_t)(uintptr_t)info); }
static inline int64_t hv_console_write(const void *bytes, size_t length) {
    return hv_call2(HV_CALL_CONSOLE_WRITE, (uint64_t)(uintptr_t)bytes, length);
}
static inline uint64_t hv_clock_monotonic(void) { return (uint64_t)hv_call0(HV_CALL_CLOCK_MONOTONIC); }
static inline uint64_t hv_clock_wall(void) { return (uint64_t)hv_call0(HV_CALL_CLOCK_WALL); }
static inline int64_t hv_random(void *buffer, size_t length) { return hv_call2(HV_CALL_RANDOM, (uint64_t)(uintptr_t)buffer, length); }
static inline int64_t hv_block_read(uint64_t offset, void *buffer, size_t length) {
    return hv_call3(HV_CALL_BLOCK_READ, offset, (uint64_t)(uintptr_t)buffer, length);
}
static inline int64_t hv_block_write(uint64_t offset, const void *buffer, size_t length) {
    return hv_call3(HV_CALL_BLOCK_WRITE, offset, (uint64_t)(uintptr_t)buffer, length);
}
static inline int64_t hv_block_flush(void) { return hv_call0(HV_CALL_BLOCK_FLUSH); }
static inline int64_t hv_net_send(const void *frame, size_t length) { return hv_call2(HV_CALL_NET_SEND, (uint64_t)(uintptr_t)frame, length); }
static inline int64_t hv_net_receive(void *buffer, size_t capacity) {
    return hv_call2(HV_CALL_NET_RECEIVE, (uint64_t)(uintptr_t)buffer, capacity);
}
static inline int64_t hv_poll(uint64_t timeout_ns) { return hv_call1(HV_CALL_POLL, timeout_ns); }
static inline int64_t hv_channel_setup(struct hv_channel_header *ring, uint32_t slots) {
    return hv_call2(HV_CALL_CHANNEL_SETUP, (uint64_t)(uintptr_t)ring, slots);
}
static inline int64_t hv_channel_notify(void) { return hv_call0(HV_CALL_CHANNEL_NOTIFY); }
static inline int64_t hv_null(void) { return hv_call0(HV_CALL_NULL); }
static inline void hv_exit(int32_t status) {
    for (;;) hv_call1(HV_CALL_EXIT, (uint64_t)(uint32_t)status);
}
static inline void hv_abort(const char *message, size_t length) {
    for (;;) hv_call2(HV_CALL_ABORT, (uint64_t)(uintptr_t)message, length);
}

#endif
