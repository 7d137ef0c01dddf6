// io_uring through its raw system calls (no liburing): the rings are mapped here and read and
// written with the acquire and release ordering the kernel's ABI asks for, so that Swift sees
// only whole operations. See CHVDevicesShims.h for what each function does.
#define _GNU_SOURCE
#include "CHVDevicesShims.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define LOAD_ACQUIRE(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_RELEASE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static int uring_register(int fd, unsigned opcode, const void *argument, unsigned count) {
    long result = syscall(__NR_io_uring_register, fd, opcode, argument, count);
    return result < 0 ? -errno : (int)result;
}

static void unmap(hvd_uring *ring) {
    if (ring->sqe_map) munmap(ring->sqe_map, ring->sqe_map_size);
    if (ring->cq_map && ring->cq_map != ring->sq_map) munmap(ring->cq_map, ring->cq_map_size);
    if (ring->sq_map) munmap(ring->sq_map, ring->sq_map_size);
    ring->sqe_map = ring->cq_map = ring->sq_map = NULL;
}

int hvd_uring_setup(unsigned entries, int file, int event_fd, hvd_uring *ring, int *step) {
    memset(ring, 0, sizeof *ring);
    ring->fd = -1;
    int result = 0;
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    // Disabled until the restrictions below are in place.
    params.flags = IORING_SETUP_CLAMP | IORING_SETUP_R_DISABLED;
    *step = 0;
    long fd = syscall(__NR_io_uring_setup, entries, &params);
    if (fd < 0) return -errno;
    ring->fd = (int)fd;
    // Waiting with a timeout (hvd_uring_wait) needs IORING_ENTER_EXT_ARG (Linux 5.11).
    if (!(params.features & IORING_FEAT_EXT_ARG)) {
        close(ring->fd);
        ring->fd = -1;
        return -EOPNOTSUPP;
    }
    ring->sq_entries = params.sq_entries;
    ring->cq_entries = params.cq_entries;

    *step = 1;
    ring->sq_map_size = params.sq_off.array + params.sq_entries * sizeof(unsigned);
    ring->cq_map_size = params.cq_off.cqes + params.cq_entries * sizeof(struct io_uring_cqe);
    if (params.features & IORING_FEAT_SINGLE_MMAP) {
        if (ring->cq_map_size > ring->sq_map_size) ring->sq_map_size = ring->cq_map_size;
        ring->cq_map_size = ring->sq_map_size;
    }
    ring->sq_map = mmap(NULL, ring->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring->fd, IORING_OFF_SQ_RING);
    if (ring->sq_map == MAP_FAILED) { ring->sq_map = NULL; goto failed; }
    if (params.features & IORING_FEAT_SINGLE_MMAP) {
        ring->cq_map = ring->sq_map;
    } else {
        ring->cq_map = mmap(NULL, ring->cq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring->fd, IORING_OFF_CQ_RING);
        if (ring->cq_map == MAP_FAILED) { ring->cq_map = NULL; goto failed; }
    }
    ring->sqe_map_size = params.sq_entries * sizeof(struct io_uring_sqe);
    ring->sqe_map = mmap(NULL, ring->sqe_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring->fd, IORING_OFF_SQES);
    if (ring->sqe_map == MAP_FAILED) { ring->sqe_map = NULL; goto failed; }

    char *sq = ring->sq_map, *cq = ring->cq_map;
    ring->sq_head = (unsigned *)(sq + params.sq_off.head);
    ring->sq_tail = (unsigned *)(sq + params.sq_off.tail);
    ring->sq_mask = *(unsigned *)(sq + params.sq_off.ring_mask);
    ring->sq_array = (unsigned *)(sq + params.sq_off.array);
    ring->cq_head = (unsigned *)(cq + params.cq_off.head);
    ring->cq_tail = (unsigned *)(cq + params.cq_off.tail);
    ring->cq_mask = *(unsigned *)(cq + params.cq_off.ring_mask);
    ring->cq_flags = (unsigned *)(cq + params.cq_off.flags);
    ring->cqes = cq + params.cq_off.cqes;

    // The disk is the ring's only file (index 0), and completions signal `event_fd`.
    *step = 2;
    result = uring_register(ring->fd, IORING_REGISTER_FILES, &file, 1);
    if (result < 0) goto failed_with_result;
    *step = 3;
    result = uring_register(ring->fd, IORING_REGISTER_EVENTFD, &event_fd, 1);
    if (result < 0) goto failed_with_result;

    // The ring can read, write and sync that file and nothing else: every operation must name
    // a registered file, and after enabling, nothing more can be registered. io_uring runs
    // operations outside the caller's seccomp filter, so this is the filter for the ring.
    *step = 4;
    struct io_uring_restriction restrictions[5];
    memset(restrictions, 0, sizeof restrictions);
    restrictions[0].opcode = IORING_RESTRICTION_SQE_OP;
    restrictions[0].sqe_op = IORING_OP_READV;
    restrictions[1].opcode = IORING_RESTRICTION_SQE_OP;
    restrictions[1].sqe_op = IORING_OP_WRITEV;
    restrictions[2].opcode = IORING_RESTRICTION_SQE_OP;
    restrictions[2].sqe_op = IORING_OP_FSYNC;
    restrictions[3].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    restrictions[3].sqe_flags = IOSQE_FIXED_FILE;
    restrictions[4].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
    restrictions[4].sqe_flags = IOSQE_FIXED_FILE;
    result = uring_register(ring->fd, IORING_REGISTER_RESTRICTIONS, restrictions, 5);
    if (result < 0) goto failed_with_result;
    *step = 5;
    result = uring_register(ring->fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (result < 0) goto failed_with_result;
    return 0;

failed:
    result = -errno;
failed_with_result:
    unmap(ring);
    close(ring->fd);
    ring->fd = -1;
    return result;
}

void hvd_uring_close(hvd_uring *ring) {
    if (ring->fd < 0) return;
    unmap(ring);
    close(ring->fd);
    ring->fd = -1;
}

unsigned hvd_uring_space(const hvd_uring *ring) {
    // Only this process's submitter moves the tail; the kernel moves the head as it consumes.
    unsigned head = LOAD_ACQUIRE(ring->sq_head);
    unsigned tail = *ring->sq_tail;
    return ring->sq_entries - (tail - head);
}

static struct io_uring_sqe *next_entry(hvd_uring *ring, unsigned *index) {
    if (hvd_uring_space(ring) == 0) return NULL;
    unsigned tail = *ring->sq_tail;
    *index = tail & ring->sq_mask;
    struct io_uring_sqe *entry = (struct io_uring_sqe *)ring->sqe_map + *index;
    memset(entry, 0, sizeof *entry);
    return entry;
}

static void publish(hvd_uring *ring, unsigned index) {
    unsigned tail = *ring->sq_tail;
    ring->sq_array[tail & ring->sq_mask] = index;
    // The entry's fields before the tail that shows it to the kernel.
    STORE_RELEASE(ring->sq_tail, tail + 1);
}

int hvd_uring_queue_rw(hvd_uring *ring, int write, const struct iovec *vectors, unsigned count, uint64_t offset, uint64_t user_data) {
    unsigned index;
    struct io_uring_sqe *entry = next_entry(ring, &index);
    if (!entry) return -EBUSY;
    entry->opcode = write ? IORING_OP_WRITEV : IORING_OP_READV;
    entry->flags = IOSQE_FIXED_FILE;
    entry->fd = 0;
    entry->addr = (uint64_t)(uintptr_t)vectors;
    entry->len = count;
    entry->off = offset;
    entry->user_data = user_data;
    publish(ring, index);
    return 0;
}

int hvd_uring_queue_fdatasync(hvd_uring *ring, uint64_t user_data) {
    unsigned index;
    struct io_uring_sqe *entry = next_entry(ring, &index);
    if (!entry) return -EBUSY;
    entry->opcode = IORING_OP_FSYNC;
    entry->flags = IOSQE_FIXED_FILE;
    entry->fd = 0;
    entry->fsync_flags = IORING_FSYNC_DATASYNC;
    entry->user_data = user_data;
    publish(ring, index);
    return 0;
}

int hvd_uring_queue_nop(hvd_uring *ring, uint64_t user_data) {
    unsigned index;
    struct io_uring_sqe *entry = next_entry(ring, &index);
    if (!entry) return -EBUSY;
    entry->opcode = IORING_OP_NOP;
    entry->user_data = user_data;
    publish(ring, index);
    return 0;
}

void hvd_uring_unqueue(hvd_uring *ring, unsigned count) {
    // Without SQPOLL the kernel reads entries only inside io_uring_enter, which the caller
    // serializes with this: entries it did not take can be withdrawn.
    STORE_RELEASE(ring->sq_tail, *ring->sq_tail - count);
}

void hvd_uring_set_quiet(hvd_uring *ring, int quiet) {
    if (quiet) {
        __atomic_fetch_or(ring->cq_flags, IORING_CQ_EVENTFD_DISABLED, __ATOMIC_SEQ_CST);
    } else {
        __atomic_fetch_and(ring->cq_flags, ~IORING_CQ_EVENTFD_DISABLED, __ATOMIC_SEQ_CST);
    }
    // Ordered before the reap that follows, which must see every entry posted while quiet.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

int hvd_uring_enter(hvd_uring *ring, unsigned to_submit, unsigned wait_for) {
    unsigned flags = wait_for > 0 ? IORING_ENTER_GETEVENTS : 0;
    long result = syscall(__NR_io_uring_enter, ring->fd, to_submit, wait_for, flags, NULL, 0);
    return result < 0 ? -errno : (int)result;
}

int hvd_uring_wait(hvd_uring *ring, int64_t timeout_ns) {
    struct __kernel_timespec timeout = { .tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000 };
    struct io_uring_getevents_arg argument;
    memset(&argument, 0, sizeof argument);
    argument.ts = (uint64_t)(uintptr_t)&timeout;
    long result = syscall(__NR_io_uring_enter, ring->fd, 0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &argument, sizeof argument);
    if (result < 0) return errno == ETIME ? 0 : -errno;
    return 1;
}

unsigned hvd_uring_reap(hvd_uring *ring, uint64_t *user_data, int32_t *results, unsigned capacity) {
    unsigned head = *ring->cq_head;
    // The entries' contents after the tail that shows them.
    unsigned tail = LOAD_ACQUIRE(ring->cq_tail);
    unsigned count = 0;
    const struct io_uring_cqe *entries = ring->cqes;
    while (head != tail && count < capacity) {
        const struct io_uring_cqe *entry = &entries[head & ring->cq_mask];
        user_data[count] = entry->user_data;
        results[count] = entry->res;
        count++;
        head++;
    }
    // Read before the slots go back to the kernel.
    STORE_RELEASE(ring->cq_head, head);
    return count;
}
