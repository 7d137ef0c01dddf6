/* A guest for snapshot tests: counts the PIT's timer interrupts (IRQ 0 through the in-kernel
 * 8259 PIC) in a record at the guest-physical address it is given, next to a random nonce,
 * then sleeps in HLT between ticks forever. A test runs it to some ticks, snapshots it,
 * restores it elsewhere, and checks that the nonce is the same (no reboot) and that the count
 * goes on from where it was.
 *
 * The record, at the entry argument: magic "TICKS\0\0\0", nonce, ticks (all u64). */
#include "hvkit_guest.h"

struct record {
    uint64_t magic;
    uint64_t nonce;
    volatile uint64_t ticks;
};

struct gate {
    uint16_t offset_low, selector;
    uint8_t ist, type;
    uint16_t offset_middle;
    uint32_t offset_high, reserved;
} __attribute__((packed));

struct interrupt_frame;

static struct gate idt[48] __attribute__((aligned(16)));
static struct record *record;

static inline void outb(uint16_t port, uint8_t value) {
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

__attribute__((interrupt)) static void timer(struct interrupt_frame *frame) {
    (void)frame;
    record->ticks++;
    outb(0x20, 0x20); /* end of interrupt */
}

/* Any other PIC line (none is unmasked; a spurious IRQ 7 or 15 still lands here). */
__attribute__((interrupt)) static void other(struct interrupt_frame *frame) {
    (void)frame;
    outb(0xA0, 0x20);
    outb(0x20, 0x20);
}

static void set_gate(int vector, void (*handler)(struct interrupt_frame *), uint16_t selector) {
    uint64_t address = (uint64_t)(uintptr_t)handler;
    idt[vector] = (struct gate){
        .offset_low = (uint16_t)address, .selector = selector, .ist = 0, .type = 0x8E, /* present, interrupt gate */
        .offset_middle = (uint16_t)(address >> 16), .offset_high = (uint32_t)(address >> 32), .reserved = 0,
    };
}

int hv_main(uint64_t argument) {
    record = (struct record *)(uintptr_t)argument;
    uint64_t nonce = 0;
    if (hv_random(&nonce, sizeof(nonce)) != sizeof(nonce)) return 1;
    record->nonce = nonce;
    record->ticks = 0;

    uint16_t code;
    __asm__ volatile("mov %%cs, %0" : "=r"(code));
    set_gate(32, timer, code);
    for (int vector = 33; vector < 48; vector++) set_gate(vector, other, code);
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) pointer = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
    __asm__ volatile("lidt %0" : : "m"(pointer));

    /* The PICs: vectors 32-47, cascade on IRQ 2, 8086 mode; only IRQ 0 unmasked. */
    outb(0x20, 0x11); outb(0xA0, 0x11);
    outb(0x21, 32);   outb(0xA1, 40);
    outb(0x21, 4);    outb(0xA1, 2);
    outb(0x21, 1);    outb(0xA1, 1);
    outb(0x21, 0xFE); outb(0xA1, 0xFF);
    /* The PIT's channel 0: rate generator, 1193182 / 11932 = 100 Hz. */
    outb(0x43, 0x34);
    outb(0x40, 11932 & 0xFF);
    outb(0x40, 11932 >> 8);

    record->magic = 0x534B434954ULL; /* "TICKS" */
    hv_console_write("ticking\n", 8);
    for (;;) __asm__ volatile("sti; hlt" ::: "memory");
}
