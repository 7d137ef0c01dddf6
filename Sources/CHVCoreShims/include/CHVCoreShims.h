// CHVCoreShims: small inline helpers for HVCore that Swift cannot express directly on raw
// guest memory: atomic loads and stores with explicit ordering at an arbitrary address, and
// Linux calls whose declarations need _GNU_SOURCE.
#ifndef CHVCORESHIMS_H
#define CHVCORESHIMS_H

// No _GNU_SOURCE here: it would make these system headers differ from the ones in Swift's
// Glibc module. memfd_create is called through syscall(2) for that reason.
#include <linux/memfd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

// Atomic accesses to naturally aligned locations in guest memory. The guest may write these
// locations concurrently (virtqueue ring indices), so plain loads would be data races.
static inline uint16_t hv_load_acquire_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline uint32_t hv_load_acquire_u32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE); }
static inline uint64_t hv_load_acquire_u64(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE); }
static inline void hv_store_release_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline void hv_store_release_u32(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE); }
static inline void hv_store_release_u64(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE); }
static inline void hv_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
// A page-write log's words: bits set by any thread, taken (and cleared) by a snapshot.
static inline void hv_atomic_or_u64(uint64_t *p, uint64_t bits) { __atomic_fetch_or(p, bits, __ATOMIC_RELAXED); }
static inline uint64_t hv_atomic_take_u64(uint64_t *p) { return __atomic_exchange_n(p, 0, __ATOMIC_ACQ_REL); }

long syscall(long number, ...);
static inline int hv_memfd_create(const char *name, unsigned int flags) { return (int)syscall(SYS_memfd_create, name, flags); }
static inline int hv_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }
static inline long hv_getrandom(void *buffer, size_t length, unsigned int flags) { return syscall(SYS_getrandom, buffer, length, flags); }

// Thread names through prctl, which needs no _GNU_SOURCE (pthread_setname_np does).
int prctl(int option, ...);
static inline int hv_set_thread_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }

// CPU affinity of the calling thread (shims.c, which needs _GNU_SOURCE for cpu_set_t).
/// Pins the calling thread to `cpus`; returns 0 or an errno value.
int hv_set_thread_affinity(const int *cpus, int count);
/// Fills `cpus` with the CPUs the calling thread may run on; returns the count or -errno.
int hv_thread_affinity(int *cpus, int capacity);
/// The CPU the calling thread is running on now, or -1.
int hv_current_cpu(void);
/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the next connection on a listening socket, or -1 and errno.
int hv_accept_nonblocking(int fd);

// epoll with the event's data as a plain 64-bit token: struct epoll_event is packed on x86-64,
// which Swift does not import faithfully, so it never crosses into Swift.
static inline int hv_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
static inline int hv_epoll_control(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event event = { .events = events, .data = { .u64 = token } };
    return epoll_ctl(epfd, op, fd, &event);
}
/// Waits for up to `capacity` events; on success fills tokens[i] and events[i] and returns the count.
static inline int hv_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int capacity, int timeout_ms) {
    struct epoll_event ready[64];
    if (capacity > 64) capacity = 64;
    int count = epoll_wait(epfd, ready, capacity, timeout_ms);
    for (int i = 0; i < count; i++) { tokens[i] = ready[i].data.u64; events[i] = ready[i].events; }
    return count;
}
static const int HV_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
static const int HV_EPOLL_CTL_DEL = EPOLL_CTL_DEL;
static const uint32_t HV_EPOLLIN = EPOLLIN;
static const uint32_t HV_EPOLLOUT = EPOLLOUT;
static const uint32_t HV_EPOLLERR = EPOLLERR;
static const uint32_t HV_EPOLLHUP = EPOLLHUP;
static const uint32_t HV_EPOLLRDHUP = EPOLLRDHUP;
static const uint32_t HV_EPOLLET = EPOLLET;
static const uint32_t HV_EPOLLONESHOT = EPOLLONESHOT;
static const int HV_EPOLL_CTL_MOD = EPOLL_CTL_MOD;

static const int HV_MAP_NORESERVE = MAP_NORESERVE;
static const int HV_MAP_HUGETLB = MAP_HUGETLB;
static const unsigned int HV_MFD_CLOEXEC = MFD_CLOEXEC;
static const unsigned int HV_MFD_HUGETLB = MFD_HUGETLB;
static const int HV_EFD_CLOEXEC = EFD_CLOEXEC;
static const int HV_EFD_NONBLOCK = EFD_NONBLOCK;
static const int HV_EFD_SEMAPHORE = EFD_SEMAPHORE;
static const int HV_MADV_HUGEPAGE = MADV_HUGEPAGE;


/// Installs a seccomp filter of `count` classic BPF instructions (struct sock_filter, 8 bytes
/// each) on the calling thread, after setting no_new_privs as an unprivileged filter needs.
/// Threads the caller creates later inherit it; other threads are unaffected. Returns 0, or
/// -1 with errno set.
static inline int hv_seccomp_install_filter(const void *instructions, unsigned short count) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    struct sock_fprog program = { .len = count, .filter = (struct sock_filter *)instructions };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program);
}


/// A non-blocking, close-on-exec CLOCK_MONOTONIC timerfd, or -1 with errno set.
static inline int hv_timerfd_create(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); }

/// Arms `fd` to expire once at the absolute CLOCK_MONOTONIC time `deadline` (ns); 0 disarms.
static inline int hv_timerfd_arm_absolute(int fd, uint64_t deadline) {
    struct itimerspec spec = {0};
    spec.it_value.tv_sec = (time_t)(deadline / 1000000000u);
    spec.it_value.tv_nsec = (long)(deadline % 1000000000u);
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, 0);
}

// ThreadSanitizer annotations for locks it cannot see (Synchronization.Mutex waits on a
// futex): a happens-before edge from each release to the next acquire of the same address.
// Out of line, in shims.c, because only code SwiftPM compiles with -fsanitize=thread knows
// whether the sanitizer is on; elsewhere they do nothing.
void hv_tsan_acquire(const void *address);
void hv_tsan_release(const void *address);

#endif
