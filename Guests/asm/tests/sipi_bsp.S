// 32-bit protected mode, the bootstrap processor of an SMP guest with the in-kernel LAPIC:
// reports 0xB5 on port 0x20, then enables its LAPIC and starts every other processor the way
// Linux does (INIT, then a startup IPI with vector 8, so they begin in real mode at 0x8000,
// see sipi_ap.S), and spins. Reporting first makes the order a test can check race-free: the
// report is handled before the BSP runs on, so any AP report that comes before it is an AP
// that ran without being started.
    .code32
    .intel_syntax noprefix
    .globl _start
_start:
    mov eax, 0xB5
    out 0x20, eax
    mov dword ptr [0xFEE000F0], 0x1FF       // spurious-interrupt register: APIC on
    mov dword ptr [0xFEE00300], 0x000C4500  // ICR: INIT, assert, all but self
    mov dword ptr [0xFEE00300], 0x000C4608  // ICR: startup, vector 8 (0x8000)
1:
    jmp 1b
