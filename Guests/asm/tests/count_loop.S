// 64-bit: counts in RBX forever without exiting; only a kick gets it out. The pause tests
// read RBX while the vCPU is parked and check the count goes on after a resume.
    .code64
    .intel_syntax noprefix
    .globl _start
_start:
1:
    inc rbx
    jmp 1b
