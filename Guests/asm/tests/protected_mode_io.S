// 32-bit protected mode, flat segments, no paging: a 4-byte port round trip and a 4-byte
// MMIO round trip at 0xD0000000, each echoed back incremented, then hlt.
    .code32
    .intel_syntax noprefix
    .globl _start
_start:
    mov dx, 0x10
    in eax, dx
    inc eax
    out dx, eax
    mov ebx, 0xD0000000
    mov eax, dword ptr [ebx]
    inc eax
    mov dword ptr [ebx], eax
    hlt
