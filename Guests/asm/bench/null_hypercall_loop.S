// Real mode: the null hypercall (number 15 in EAX, `out` to the doorbell port 0xE0) forever.
// hv-bench runs these bytes through HVParavirt's dispatcher and, as the baseline, through a
// plain C KVM_RUN loop that treats each `out` as a raw port-I/O exit.
    .code16
    .intel_syntax noprefix
    .globl _start
_start:
1:
    mov eax, 15
    out 0xE0, eax
    jmp 1b
