// Real mode: spins without ever exiting. pause_latency pauses two vCPUs running it, so every
// pause has to kick them out of the guest.
    .code16
    .intel_syntax noprefix
    .globl _start
_start:
1:
    jmp 1b
