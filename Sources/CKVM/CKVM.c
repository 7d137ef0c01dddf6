#define _GNU_SOURCE 1
#include "CKVM.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
const unsigned long CKVM_GET_MSR_FEATURE_INDEX_LIST = KVM_GET_MSR_FEATURE_INDEX_LIST;

const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
const unsigned long CKVM_IRQFD = KVM_IRQFD;
const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
const unsigned long CKVM_GET_CLOCK = KVM_GET_CLOCK;
const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
const unsigned long CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
const unsigned long CKVM_GET_PIT2 = KVM_GET_PIT2;
const unsigned long CKVM_SET_PIT2 = KVM_SET_PIT2;

const unsigned long CKVM_RUN = KVM_RUN;
const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
const unsigned long CKVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
const unsigned long CKVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
const unsigned long CKVM_GET_CPUID2 = KVM_GET_CPUID2;
const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
const unsigned long CKVM_GET_XSAVE2 = KVM_GET_XSAVE2;
const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
const unsigned long CKVM_SET_TSC_KHZ = KVM_SET_TSC_KHZ;
const unsigned long CKVM_KVMCLOCK_CTRL = KVM_KVMCLOCK_CTRL;

const uint32_t CKVM_IOEVENTFD_FLAG_DATAMATCH = KVM_IOEVENTFD_FLAG_DATAMATCH;
const uint32_t CKVM_IOEVENTFD_FLAG_PIO = KVM_IOEVENTFD_FLAG_PIO;
const uint32_t CKVM_IOEVENTFD_FLAG_DEASSIGN = KVM_IOEVENTFD_FLAG_DEASSIGN;

const size_t CKVM_RUN_MMIO_DATA_OFFSET = offsetof(struct kvm_run, mmio.data);

int ckvm_ioctl_pointer(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

int ckvm_ioctl_value(int fd, unsigned long request, unsigned long argument) {
    return ioctl(fd, request, argument);
}

static void ckvm_kick_handler(int signo) {
    (void)signo;  // The interruption of KVM_RUN is the whole point; nothing to do here.
}

int ckvm_install_kick_handler(int signo) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = ckvm_kick_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // No SA_RESTART: KVM_RUN must return with EINTR.
    return sigaction(signo, &action, NULL);
}

int ckvm_kick_signal(void) {
    return SIGRTMIN;
}

int ckvm_set_thread_name(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

int ckvm_unblock_kick_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
