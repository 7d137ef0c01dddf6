// Real mode: a fixed amount of guest work (3000 rounds of a two-instruction loop), one
// write to port 0x10, then hlt. mn_vs_dedicated runs 100 of these, on the scheduler's two
// workers and on a thread each.
    .code16
    .intel_syntax noprefix
    .globl _start
_start:
    mov ecx, 3000
1:
    dec ecx
    jnz 1b
    out 0x10, al
    hlt
