// 64-bit long mode: port I/O of 1, 2 and 4 bytes and MMIO of 1, 2, 4 and 8 bytes at
// 0xD0000000, each value echoed back incremented, then hlt.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov dx, 0x10
    in al, dx
    inc al
    out dx, al
    in ax, dx
    inc ax
    out dx, ax
    in eax, dx
    inc eax
    out dx, eax
    mov rbx, 0xD0000000
    mov al, byte ptr [rbx]
    inc al
    mov byte ptr [rbx], al
    mov ax, word ptr [rbx + 2]
    inc ax
    mov word ptr [rbx + 2], ax
    mov eax, dword ptr [rbx + 4]
    inc eax
    mov dword ptr [rbx + 4], eax
    mov rax, qword ptr [rbx + 8]
    inc rax
    mov qword ptr [rbx + 8], rax
    hlt
