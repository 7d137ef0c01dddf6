// 64-bit: reads 4 bytes of MMIO where no device lives, reports the value on port 0x10,
// writes there too, then hlt.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov rbx, 0xE0000000
    mov eax, dword ptr [rbx]
    mov dx, 0x10
    out dx, eax
    mov dword ptr [rbx], eax
    hlt
