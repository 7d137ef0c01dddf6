// 64-bit: writes a NUL-terminated greeting to port 0xE9 one byte at a time, then hlt.
// What hv-hello runs.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    lea rsi, [rip + message]
    mov dx, 0xE9
1:
    lodsb
    test al, al
    jz 2f
    out dx, al
    jmp 1b
2:
    hlt
message:
    .asciz "Hello from an HVKit guest in 64-bit long mode!\n"
