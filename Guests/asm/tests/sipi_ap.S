// 16-bit real mode at 0x8000, where a startup IPI with vector 8 starts an application
// processor: takes a ticket from the counter at 0x9100 (locked), reports it on port 0x21
// and spins.
    .code16
    .intel_syntax noprefix
    .globl _start
_start:
    mov ax, 1
    lock xadd word ptr [0x9100], ax
    out 0x21, ax
1:
    jmp 1b
