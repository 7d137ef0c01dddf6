// 64-bit: reads the 32-bit value the host left at 0xA000, reports it on port 0x10, copies it
// to 0xA004, then hlt. Two VMs running it at once must each see only their own value.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov eax, dword ptr [0xA000]
    mov dx, 0x10
    out dx, eax
    mov dword ptr [0xA004], eax
    hlt
