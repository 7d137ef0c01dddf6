// 64-bit: writes to port 0x10 forever (the exit-cost benchmark counts exits and stops it).
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov dx, 0x10
1:
    out dx, al
    jmp 1b
