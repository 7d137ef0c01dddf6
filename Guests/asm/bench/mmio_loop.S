// 64-bit: writes to MMIO address 0xD0000000 forever (the MMIO exit-cost benchmark).
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov rbx, 0xD0000000
1:
    mov dword ptr [rbx], eax
    jmp 1b
