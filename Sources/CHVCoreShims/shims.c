// Helpers whose system declarations need _GNU_SOURCE, which is set only here so that the
// header Swift imports sees the same system headers as Swift's Glibc module.
#define _GNU_SOURCE
#include <sys/socket.h>
#include <errno.h>
#include <sched.h>
#include "CHVCoreShims.h"

int hv_set_thread_affinity(const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) return EINVAL;
        CPU_SET(cpus[i], &set);
    }
    // pid 0: the calling thread (sched_setaffinity acts on a thread, not the process).
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : errno;
}

int hv_thread_affinity(int *cpus, int capacity) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -errno;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[count++] = cpu;
    }
    return count;
}

int hv_current_cpu(void) { return sched_getcpu(); }

int hv_accept_nonblocking(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HV_THREAD_SANITIZER 1
#endif
#endif

#ifdef HV_THREAD_SANITIZER
void __tsan_acquire(void *address);
void __tsan_release(void *address);
void hv_tsan_acquire(const void *address) { __tsan_acquire((void *)address); }
void hv_tsan_release(const void *address) { __tsan_release((void *)address); }
#else
void hv_tsan_acquire(const void *address) { (void)address; }
void hv_tsan_release(const void *address) { (void)address; }
#endif
