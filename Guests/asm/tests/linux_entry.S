// 64-bit, a stand-in for a Linux kernel's 64-bit entry (what a bzImage has at +0x200): with
// RSI pointing at the zero page, writes the command line (cmd_line_ptr, 0x228) byte by byte to
// port 0x3F8, then the number of e820 entries (0x1E8) to port 0x3F9, and halts.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov ebx, dword ptr [rsi + 0x228]
    mov dx, 0x3F8
1:
    mov al, byte ptr [rbx]
    test al, al
    jz 2f
    out dx, al
    inc rbx
    jmp 1b
2:
    mov al, byte ptr [rsi + 0x1E8]
    mov dx, 0x3F9
    out dx, al
    hlt
