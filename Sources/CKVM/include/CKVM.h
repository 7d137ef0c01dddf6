// CKVM: the parts of <linux/kvm.h> that Swift cannot import by itself.
//
// KVM's ioctl request numbers are function-like macros (_IO, _IOW, _IOR, _IOWR), which the
// Swift importer drops; they are re-exported here as constants. Plain object-like macros and
// the kernel's structs (struct kvm_run, struct kvm_regs, ...) import directly.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <stdint.h>
#include <stddef.h>

// System ioctls (on the /dev/kvm descriptor).
extern const unsigned long CKVM_GET_API_VERSION;
extern const unsigned long CKVM_CREATE_VM;
extern const unsigned long CKVM_CHECK_EXTENSION;
extern const unsigned long CKVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long CKVM_GET_SUPPORTED_CPUID;
extern const unsigned long CKVM_GET_MSR_INDEX_LIST;
extern const unsigned long CKVM_GET_MSR_FEATURE_INDEX_LIST;

// VM ioctls.
extern const unsigned long CKVM_CREATE_VCPU;
extern const unsigned long CKVM_SET_USER_MEMORY_REGION;
extern const unsigned long CKVM_CREATE_IRQCHIP;
extern const unsigned long CKVM_CREATE_PIT2;
extern const unsigned long CKVM_SET_TSS_ADDR;
extern const unsigned long CKVM_SET_IDENTITY_MAP_ADDR;
extern const unsigned long CKVM_IRQFD;
extern const unsigned long CKVM_IOEVENTFD;
extern const unsigned long CKVM_IRQ_LINE;
extern const unsigned long CKVM_GET_DIRTY_LOG;
extern const unsigned long CKVM_ENABLE_CAP;
extern const unsigned long CKVM_GET_CLOCK;
extern const unsigned long CKVM_SET_CLOCK;
extern const unsigned long CKVM_GET_IRQCHIP;
extern const unsigned long CKVM_SET_IRQCHIP;
extern const unsigned long CKVM_GET_PIT2;
extern const unsigned long CKVM_SET_PIT2;

// vCPU ioctls.
extern const unsigned long CKVM_RUN;
extern const unsigned long CKVM_GET_REGS;
extern const unsigned long CKVM_SET_REGS;
extern const unsigned long CKVM_GET_SREGS;
extern const unsigned long CKVM_SET_SREGS;
extern const unsigned long CKVM_GET_FPU;
extern const unsigned long CKVM_SET_FPU;
extern const unsigned long CKVM_GET_DEBUGREGS;
extern const unsigned long CKVM_SET_DEBUGREGS;
extern const unsigned long CKVM_GET_MSRS;
extern const unsigned long CKVM_SET_MSRS;
extern const unsigned long CKVM_GET_CPUID2;
extern const unsigned long CKVM_SET_CPUID2;
extern const unsigned long CKVM_GET_LAPIC;
extern const unsigned long CKVM_SET_LAPIC;
extern const unsigned long CKVM_GET_MP_STATE;
extern const unsigned long CKVM_SET_MP_STATE;
extern const unsigned long CKVM_GET_VCPU_EVENTS;
extern const unsigned long CKVM_SET_VCPU_EVENTS;
extern const unsigned long CKVM_GET_XSAVE;
extern const unsigned long CKVM_GET_XSAVE2;
extern const unsigned long CKVM_SET_XSAVE;
extern const unsigned long CKVM_GET_XCRS;
extern const unsigned long CKVM_SET_XCRS;
extern const unsigned long CKVM_GET_TSC_KHZ;
extern const unsigned long CKVM_SET_TSC_KHZ;
extern const unsigned long CKVM_KVMCLOCK_CTRL;

// Flags built from enums with shifts, which do not import as plain constants.
extern const uint32_t CKVM_IOEVENTFD_FLAG_DATAMATCH;
extern const uint32_t CKVM_IOEVENTFD_FLAG_PIO;
extern const uint32_t CKVM_IOEVENTFD_FLAG_DEASSIGN;

// Offsets inside struct kvm_run that Swift cannot compute through its anonymous union.
extern const size_t CKVM_RUN_MMIO_DATA_OFFSET;

// ioctl(2) is variadic and so not callable from Swift; these are its two shapes.
// Both return the ioctl's result, or -1 with errno set.
int ckvm_ioctl_pointer(int fd, unsigned long request, void *argument);
int ckvm_ioctl_value(int fd, unsigned long request, unsigned long argument);

// Installs a handler that does nothing for `signo`, without SA_RESTART, so that delivering
// the signal to a thread blocked in KVM_RUN makes the ioctl return EINTR. Returns 0 or -1.
int ckvm_install_kick_handler(int signo);

// The signal HVKit uses to kick vCPU threads out of KVM_RUN (SIGRTMIN, which glibc computes
// at run time, so Swift cannot import it as a constant).
int ckvm_kick_signal(void);

// Unblocks the kick signal on the calling thread. Threads inherit their creator's signal
// mask, and Swift's concurrency pool blocks nearly everything, so a vCPU thread must do this
// itself or kicks stay pending while the guest runs. Returns 0 or an errno value.
int ckvm_unblock_kick_signal(void);

// Names the calling thread (pthread_setname_np needs _GNU_SOURCE, which Swift cannot set).
int ckvm_set_thread_name(const char *name);

// immediate_exit is read by the kernel on entry to KVM_RUN and written by other threads that
// want the vCPU out; an atomic byte store keeps that a defined cross-thread write.
// The register sets in kvm_run's sync area, as pointers: reading them through the union from
// Swift would copy the whole 2 KiB padded area for every access.
static inline struct kvm_regs *ckvm_sync_regs(struct kvm_run *run) { return &run->s.regs.regs; }
static inline struct kvm_sregs *ckvm_sync_sregs(struct kvm_run *run) { return &run->s.regs.sregs; }

// The host CPU's own CPUID leaf `leaf`, subleaf `subleaf`: EAX, EBX, ECX, EDX into `out`.
static inline void ckvm_host_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(subleaf));
    out[0] = a; out[1] = b; out[2] = c; out[3] = d;
}

static inline void ckvm_set_immediate_exit(struct kvm_run *run, uint8_t value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}

#endif
