// CHVCoreShims: small inline helpers for HVCore that Swift cannot express directly on raw
// guest memory: atomic loads and stores with explicit ordering at an arbitrary address, and
// Linux calls whose declarations need _GNU_SOURCE.
#ifndef CHVCORESHIMS_H
#define CHVCORESHIMS_H

// No _GNU_SOURCE here: it would make these system headers differ from the ones in Swift's
// Glibc module. memfd_create is called through syscall(2) for that reason.
#include <linux/memfd.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
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

long syscall(long number, ...);
static inline int hv_memfd_create(const char *name, unsigned int flags) { return (int)syscall(SYS_memfd_create, name, flags); }
static inline int hv_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }

static const int HV_MAP_NORESERVE = MAP_NORESERVE;
static const int HV_MAP_HUGETLB = MAP_HUGETLB;
static const unsigned int HV_MFD_CLOEXEC = MFD_CLOEXEC;
static const unsigned int HV_MFD_HUGETLB = MFD_HUGETLB;
static const int HV_EFD_CLOEXEC = EFD_CLOEXEC;
static const int HV_EFD_NONBLOCK = EFD_NONBLOCK;
static const int HV_EFD_SEMAPHORE = EFD_SEMAPHORE;
static const int HV_MADV_HUGEPAGE = MADV_HUGEPAGE;

#endif
