// 64-bit: an invalid opcode with no IDT: #UD cannot be delivered, nor the #GP or #DF that
// follow, so the CPU shuts down (triple fault).
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    ud2
