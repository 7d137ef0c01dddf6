// 64-bit: reports eax on port 0x10, increments it, reports it again, then hlt. Lets a test
// change rax through the kvm_run sync area between the two exits.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov dx, 0x10
    out dx, eax
    inc eax
    out dx, eax
    hlt
