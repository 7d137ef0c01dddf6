// 64-bit: a fixed amount of work, RDI iterations counted in RBX, then reports the count on
// port 0x20 and halts. The scheduler tests run many of these side by side.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov rcx, rdi
1:
    inc rbx
    dec rcx
    jnz 1b
    mov eax, ebx
    out 0x20, eax
    hlt
2:
    jmp 2b
