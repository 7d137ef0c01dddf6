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

#endif
