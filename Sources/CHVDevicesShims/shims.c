#define _GNU_SOURCE
#include "CHVDevicesShims.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <string.h>

int hvd_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    return fallocate(fd, mode, (off_t)offset, (off_t)length);
}

const int HVD_O_DIRECT = O_DIRECT;
const int HVD_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int HVD_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int HVD_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;
const unsigned long HVD_BLKGETSIZE64 = BLKGETSIZE64;
