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

#endif
