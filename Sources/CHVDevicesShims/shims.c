#define _GNU_SOURCE
#include "CHVDevicesShims.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int hvd_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    return fallocate(fd, mode, (off_t)offset, (off_t)length);
}

const int HVD_O_DIRECT = O_DIRECT;
const int HVD_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int HVD_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int HVD_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;
const unsigned long HVD_BLKGETSIZE64 = BLKGETSIZE64;

const int HVD_IFNAMSIZ = IFNAMSIZ;

int hvd_tap_open(const char *name, char *actual_name, int header_size, int *step) {
    *step = 0;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    *step = 1;
    if (ioctl(fd, TUNSETIFF, &request) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    *step = 2;
    if (ioctl(fd, TUNSETVNETHDRSZ, &header_size) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    memcpy(actual_name, request.ifr_name, IFNAMSIZ);
    actual_name[IFNAMSIZ - 1] = 0;
    return fd;
}

int hvd_tap_set_offload(int fd, unsigned int flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0 ? -errno : 0;
}

int hvd_enter_network_namespace(int fd) {
    return setns(fd, CLONE_NEWNET);
}
