// 64-bit: reads the first word of a read-only region at 0x100000, writes it back plus one
// (which KVM turns into an MMIO write exit), then hlt.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov eax, dword ptr [0x100000]
    inc eax
    mov dword ptr [0x100000], eax
    hlt
