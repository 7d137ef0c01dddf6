// 64-bit, one copy per vCPU, each started at this entry with its own stack and its vCPU id in
// RDI: adds 100 to a shared counter at 0x9100 (locked), stores id + 0x100 in its own slot
// at 0x9000 + 8 * id, reports its id on port 0x20, and spins.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov ecx, 100
1:
    lock inc qword ptr [0x9100]
    dec ecx
    jnz 1b
    lea rax, [rdi + 0x100]
    mov qword ptr [rdi * 8 + 0x9000], rax
    mov eax, edi
    out 0x20, eax
2:
    jmp 2b
