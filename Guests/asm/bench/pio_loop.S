// Real mode: writes to port 0x10 forever. The exit-cost benchmark counts the exits and stops
// it; the Swift and C sides run exactly these bytes.
    .code16
    .intel_syntax noprefix
    .globl _start
_start:
    mov dx, 0x10
1:
    out dx, al
    jmp 1b
