// 32-bit, a stand-in for a PVH kernel entry: with EBX pointing at the hvm_start_info, writes
// 1 to port 0x3FB if its magic and version are right (else 0xEE), the command line
// (cmdline_paddr, +24) byte by byte to port 0x3F8, the memory map's entry count (+48) to port
// 0x3F9 and the module count (+12) to port 0x3FA, and halts. Running at all shows a 32-bit
// code segment: in 64-bit mode these bytes decode differently.
    .code32
    .intel_syntax noprefix
    .globl _start
_start:
    mov al, 0xEE
    cmp dword ptr [ebx], 0x336EC578
    jne 1f
    cmp dword ptr [ebx + 4], 1
    jb 1f
    mov al, 1
1:
    mov dx, 0x3FB
    out dx, al
    mov esi, dword ptr [ebx + 24]
    mov dx, 0x3F8
2:
    mov al, byte ptr [esi]
    test al, al
    jz 3f
    out dx, al
    inc esi
    jmp 2b
3:
    mov al, byte ptr [ebx + 48]
    mov dx, 0x3F9
    out dx, al
    mov al, byte ptr [ebx + 12]
    mov dx, 0x3FA
    out dx, al
    hlt
