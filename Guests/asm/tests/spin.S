// 64-bit: a tight loop that never exits on its own; only a kick gets it out.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
1:
    jmp 1b
