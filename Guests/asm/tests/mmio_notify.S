// 64-bit: five 32-bit writes to MMIO 0xD0000000 (an ioeventfd address), then hlt.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov rbx, 0xD0000000
    mov ecx, 5
1:
    mov dword ptr [rbx], ecx
    dec ecx
    jnz 1b
    hlt
