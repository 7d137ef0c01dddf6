// Real mode: writes a byte to MMIO at physical 0xD0000 forever (the MMIO exit benchmark).
    .code16
    .intel_syntax noprefix
    .globl _start
_start:
    mov ax, 0xD000
    mov ds, ax
1:
    mov byte ptr [0], al
    jmp 1b
