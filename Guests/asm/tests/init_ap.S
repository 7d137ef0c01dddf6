// 32-bit protected mode, hostile: enables the LAPIC and sends INIT to the processor with APIC
// ID 1, which then waits inside KVM_RUN for a startup IPI that never comes. The VMM must still
// be able to pause and stop it, and a scheduler must still run other VMs. Then it spins.
    .code32
    .intel_syntax noprefix
    .globl _start
_start:
    mov dword ptr [0xFEE000F0], 0x1FF       // spurious-interrupt register: APIC on
    mov dword ptr [0xFEE00310], 0x01000000  // ICR high: APIC ID 1
    mov dword ptr [0xFEE00300], 0x00004500  // ICR: INIT, assert, physical destination
1:
    jmp 1b
