// The entry point of an HVKit guest: HVKit's loaders start it in 64-bit long mode with
// identity-mapped memory and interrupts off. Sets up the stack, calls hv_main, and exits
// with its return value.
    .section .text.start, "ax"
    .globl _start
_start:
    lea hv_stack_top(%rip), %rsp
    xor %ebp, %ebp
    call hv_main
    mov %eax, %edi
1:  mov $11, %eax          // HV_CALL_EXIT
    outl %eax, $0xE0
    jmp 1b

    .section .bss
    .balign 16
    .space 32768
hv_stack_top:
