// 64-bit: drives a virtio-mmio entropy device at 0xD0000000 the way a driver does. Reset,
// ACKNOWLEDGE, DRIVER, accept VERSION_1 only, FEATURES_OK, set up queue 0 with 4 entries
// (descriptors 0xB000, avail 0xB100, used 0xB200), DRIVER_OK. Then offer one 16-byte
// writable buffer at 0xC000, notify, poll the used index, report the used length on port
// 0x10 and the status register on port 0x14, and hlt.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
    mov rbx, 0xD0000000
    mov dword ptr [rbx + 0x70], 0
    mov dword ptr [rbx + 0x70], 1
    mov dword ptr [rbx + 0x70], 3
    mov dword ptr [rbx + 0x24], 1
    mov dword ptr [rbx + 0x20], 1
    mov dword ptr [rbx + 0x24], 0
    mov dword ptr [rbx + 0x20], 0
    mov dword ptr [rbx + 0x70], 0xB
    mov dword ptr [rbx + 0x30], 0
    mov dword ptr [rbx + 0x38], 4
    mov dword ptr [rbx + 0x80], 0xB000
    mov dword ptr [rbx + 0x84], 0
    mov dword ptr [rbx + 0x90], 0xB100
    mov dword ptr [rbx + 0x94], 0
    mov dword ptr [rbx + 0xA0], 0xB200
    mov dword ptr [rbx + 0xA4], 0
    mov dword ptr [rbx + 0x44], 1
    mov dword ptr [rbx + 0x70], 0xF
    // Descriptor 0: 16 device-writable bytes at 0xC000.
    mov qword ptr [0xB000], 0xC000
    mov dword ptr [0xB008], 16
    mov word ptr [0xB00C], 2
    mov word ptr [0xB00E], 0
    // Avail ring: no flags, ring[0] = head 0, then publish idx 1.
    mov word ptr [0xB100], 0
    mov word ptr [0xB104], 0
    mov word ptr [0xB102], 1
    mov dword ptr [rbx + 0x50], 0
1:
    pause
    movzx eax, word ptr [0xB202]
    cmp eax, 1
    jne 1b
    mov eax, dword ptr [0xB208]
    mov dx, 0x10
    out dx, eax
    mov eax, dword ptr [rbx + 0x70]
    mov dx, 0x14
    out dx, eax
    hlt
