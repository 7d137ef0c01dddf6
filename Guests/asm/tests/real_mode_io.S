// Real mode: port I/O and MMIO of each width through a test device, then hlt.
// Reads come back to the device incremented by one, so a test can tell that the guest saw
// exactly the value the device returned.
    .code16
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
    // MMIO at physical 0xD0000 (segment 0xD000), outside the guest's RAM.
    mov ax, 0xD000
    mov ds, ax
    mov al, byte ptr [0]
    inc al
    mov byte ptr [0], al
    mov ax, word ptr [2]
    inc ax
    mov word ptr [2], ax
    mov eax, dword ptr [4]
    inc eax
    mov dword ptr [4], eax
    hlt
