// CHVDevicesShims: Linux calls and constants HVDevices needs whose declarations sit behind
// _GNU_SOURCE. They are defined in shims.c, which sets _GNU_SOURCE for itself, so this header
// does not change how the system headers look to Swift.
#ifndef CHVDEVICESSHIMS_H
#define CHVDEVICESSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// fallocate(2); returns 0 or -1 with errno set.
int hvd_fallocate(int fd, int mode, int64_t offset, int64_t length);

/// Flags for open(2) and fallocate(2).
extern const int HVD_O_DIRECT;
extern const int HVD_FALLOC_FL_KEEP_SIZE;
extern const int HVD_FALLOC_FL_PUNCH_HOLE;
extern const int HVD_FALLOC_FL_ZERO_RANGE;

/// BLKGETSIZE64 and BLKSSZGET, for block devices used as disks.
extern const unsigned long HVD_BLKGETSIZE64;

/// Opens /dev/net/tun non-blocking and attaches it to the tap interface `name` (created if it
/// does not exist; an empty name lets the kernel choose) with IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR and a `header_size`-byte virtio-net header. Writes the interface's name into
/// `actual_name` (16 bytes). Returns the descriptor, or -errno (the step that failed in `*step`:
/// 0 open, 1 TUNSETIFF, 2 TUNSETVNETHDRSZ).
int hvd_tap_open(const char *name, char *actual_name, int header_size, int *step);

// Moves the calling thread into the network namespace `fd` refers to (setns, CLONE_NEWNET):
// for tests whose host-side sockets live beside a tap in its own namespace. 0 or -1 (errno).
int hvd_enter_network_namespace(int fd);
/// TUNSETOFFLOAD; returns 0 or -errno.
int hvd_tap_set_offload(int fd, unsigned int flags);

/// The size of an interface name buffer (IFNAMSIZ).
extern const int HVD_IFNAMSIZ;

/// An io_uring instance and its rings, mapped into this process (uring.c). Callers serialize
/// the submission side (queue, enter) and the completion side (reap) themselves.
typedef struct hvd_uring {
    int fd;
    unsigned sq_entries, cq_entries;
    unsigned *sq_head, *sq_tail, *sq_array;
    unsigned sq_mask;
    unsigned *cq_head, *cq_tail, *cq_flags;
    unsigned cq_mask;
    void *cqes;
    void *sq_map, *cq_map, *sqe_map;
    size_t sq_map_size, cq_map_size, sqe_map_size;
} hvd_uring;

struct iovec;

/// Sets up an io_uring of `entries` submission slots (clamped by the kernel) for one file:
/// `file` is registered as its only file (operations name it as index 0, IOSQE_FIXED_FILE),
/// completions signal `event_fd`, and restrictions allow only readv, writev and fsync on
/// registered files before the ring is enabled. Returns 0 or -errno, with the step that failed
/// in `*step` (0 io_uring_setup, 1 mmap, 2 register files, 3 register eventfd, 4 restrictions,
/// 5 enable); -EOPNOTSUPP before step 1 when the kernel is older than 5.11.
int hvd_uring_setup(unsigned entries, int file, int event_fd, hvd_uring *ring, int *step);
/// Unmaps the rings and closes the instance.
void hvd_uring_close(hvd_uring *ring);
/// Free submission slots.
unsigned hvd_uring_space(const hvd_uring *ring);
/// Queues a readv (`write` 0) or writev of the registered file; `vectors` must stay valid until
/// the completion. 0, or -EBUSY when the submission ring is full.
int hvd_uring_queue_rw(hvd_uring *ring, int write, const struct iovec *vectors, unsigned count, uint64_t offset, uint64_t user_data);
/// Queues an fdatasync of the registered file. 0, or -EBUSY.
int hvd_uring_queue_fdatasync(hvd_uring *ring, uint64_t user_data);
/// Queues a NOP, an operation the restrictions forbid: for the test that they hold. 0, or -EBUSY.
int hvd_uring_queue_nop(hvd_uring *ring, uint64_t user_data);
/// Withdraws the last `count` queued entries, which no io_uring_enter took (the caller
/// serializes this with its enters).
void hvd_uring_unqueue(hvd_uring *ring, unsigned count);
/// Stops (quiet 1) or restarts (0) the eventfd's signals (IORING_CQ_EVENTFD_DISABLED): a
/// submitter that reaps what completes while it submits keeps the event loop from waking for
/// it, and reaps again after restarting, for anything posted while they were off.
void hvd_uring_set_quiet(hvd_uring *ring, int quiet);
/// io_uring_enter: submits `to_submit` queued entries and, with `wait_for` > 0, waits for that
/// many completions. The number submitted, or -errno.
int hvd_uring_enter(hvd_uring *ring, unsigned to_submit, unsigned wait_for);
/// Waits until a completion is there to reap or `timeout_ns` passed: 1, 0 on the timeout, or
/// -errno (-EINTR when a signal came).
int hvd_uring_wait(hvd_uring *ring, int64_t timeout_ns);
/// Takes up to `capacity` completions into `user_data` and `results` (res: bytes or -errno).
unsigned hvd_uring_reap(hvd_uring *ring, uint64_t *user_data, int32_t *results, unsigned capacity);

#endif
