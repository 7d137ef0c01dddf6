// 64-bit: reports 1 on port 0x20, halts, reports 2, halts, reports 3 and spins. Without an
// in-kernel irqchip each hlt exits to the VMM, so a scheduler can put the vCPU to sleep.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov eax, 1
    out 0x20, eax
    hlt
    mov eax, 2
    out 0x20, eax
    hlt
    mov eax, 3
    out 0x20, eax
1:
    jmp 1b
