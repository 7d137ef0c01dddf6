// 64-bit: counts its boots in memory at 0x9200, reports the count on port 0x22, then asks
// for a reset: with ECX = 0 by triple fault (ud2 with no IDT), otherwise by writing to the
// reset device on port 0x23, after which it spins.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    lock inc qword ptr [0x9200]
    mov rax, qword ptr [0x9200]
    out 0x22, eax
    test ecx, ecx
    jnz 1f
    ud2
1:
    out 0x23, al
2:
    jmp 2b
