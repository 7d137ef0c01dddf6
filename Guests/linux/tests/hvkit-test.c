// hvkit-test: the checks HVKit's Linux test guest runs against HVKit's devices through the
// real Linux drivers. /init runs `hvkit-test NAME` for each name in hvkit.tests= on the kernel
// command line; each prints exactly one line
//
//     HVKIT-TEST NAME ok|fail key=value ...
//
// which LinuxGuestTests (Tests/HVMachineTests) read. The host prepares the disks and checks
// from its side what the guest did (see each check for the contract).
//
// Built static (musl where available) at artifact time by Guests/linux/build-initramfs.sh.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <sys/socket.h>

// The block ioctls of <linux/fs.h>, spelt out: musl's headers do not include the kernel's.
#ifndef BLKROSET
#define BLKROSET _IO(0x12, 93)
#define BLKROGET _IO(0x12, 94)
#define BLKFLSBUF _IO(0x12, 97)
#define BLKGETSIZE64 _IOR(0x12, 114, size_t)
#define BLKDISCARD _IO(0x12, 119)
#endif

// The layout of the writable test disk (/dev/vda), shared with the host test.
#define MARKER_BYTES 64
#define FSYNC_OFFSET (64 << 10)         // 4 KiB pattern 1, written, fsync'ed, read back
#define FSYNC_BYTES (4 << 10)
#define DIRECT_OFFSET (1 << 20)         // 1 MiB pattern 2 by O_DIRECT
#define DIRECT_BYTES (1 << 20)
#define DISCARD_OFFSET (2 << 20)        // 256 KiB the host fills with 0xA5; the guest discards
#define DISCARD_BYTES (256 << 10)

static char result[4096];

static void note(const char *format, ...) {
    size_t used = strlen(result);
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(result + used, sizeof result - used, format, arguments);
    va_end(arguments);
}

static int finish(const char *name, int ok) {
    printf("HVKIT-TEST %s %s%s\n", name, ok ? "ok" : "fail", result);
    fflush(stdout);
    return ok ? 0 : 1;
}

// The byte at offset `i` of pattern `seed` (the host computes the same).
static uint8_t pattern(unsigned seed, size_t i) {
    uint32_t x = (uint32_t)(i * 2654435761u) ^ (seed * 0x9E3779B9u);
    x ^= x >> 15;
    return (uint8_t)(x ^ (x >> 7));
}

static void fill(uint8_t *buffer, size_t length, unsigned seed) {
    for (size_t i = 0; i < length; i++) buffer[i] = pattern(seed, i);
}

static int check(const uint8_t *buffer, size_t length, unsigned seed) {
    for (size_t i = 0; i < length; i++) if (buffer[i] != pattern(seed, i)) return 0;
    return 1;
}

static ssize_t full_pread(int fd, void *buffer, size_t length, off_t offset) {
    size_t done = 0;
    while (done < length) {
        ssize_t n = pread(fd, (char *)buffer + done, length - done, offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? -1 : (ssize_t)done;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static ssize_t full_pwrite(int fd, const void *buffer, size_t length, off_t offset) {
    size_t done = 0;
    while (done < length) {
        ssize_t n = pwrite(fd, (const char *)buffer + done, length - done, offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

// blk: /dev/vda. The marker the host wrote at offset 0; pattern 1 written, fsync'ed and read
// back after BLKFLSBUF dropped the page cache; 1 MiB of pattern 2 written and read back with
// O_DIRECT; a discarded range reads as zeros. The host then finds both patterns in the file,
// zeros and a hole where the discard was.
static int test_blk(void) {
    const char *name = "blk";
    int fd = open("/dev/vda", O_RDWR);
    if (fd < 0) { note(" open=%s", strerror(errno)); return finish(name, 0); }
    int ok = 1;

    char marker[MARKER_BYTES + 1] = {0};
    if (full_pread(fd, marker, MARKER_BYTES, 0) != MARKER_BYTES) { note(" marker-read=%s", strerror(errno)); ok = 0; }
    for (int i = 0; i < MARKER_BYTES; i++) if (marker[i] == '\n' || marker[i] == ' ' || marker[i] < 0x20) marker[i] = 0;
    note(" marker=%s", marker);

    static uint8_t small[FSYNC_BYTES];
    fill(small, sizeof small, 1);
    if (full_pwrite(fd, small, sizeof small, FSYNC_OFFSET) < 0 || fsync(fd) != 0) {
        note(" fsync-write=%s", strerror(errno)); ok = 0;
    } else {
        memset(small, 0, sizeof small);
        if (ioctl(fd, BLKFLSBUF, 0) != 0) { note(" blkflsbuf=%s", strerror(errno)); ok = 0; }
        int good = full_pread(fd, small, sizeof small, FSYNC_OFFSET) == sizeof small && check(small, sizeof small, 1);
        note(" fsync-readback=%s", good ? "same" : "different");
        ok &= good;
    }

    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) == 0) note(" bytes=%llu", (unsigned long long)size);
    close(fd);

    int direct = open("/dev/vda", O_RDWR | O_DIRECT);
    uint8_t *big = NULL;
    if (direct < 0 || posix_memalign((void **)&big, 4096, DIRECT_BYTES) != 0) {
        note(" direct-open=%s", strerror(errno)); ok = 0;
    } else {
        fill(big, DIRECT_BYTES, 2);
        if (full_pwrite(direct, big, DIRECT_BYTES, DIRECT_OFFSET) < 0) { note(" direct-write=%s", strerror(errno)); ok = 0; }
        memset(big, 0, DIRECT_BYTES);
        int good = full_pread(direct, big, DIRECT_BYTES, DIRECT_OFFSET) == DIRECT_BYTES && check(big, DIRECT_BYTES, 2);
        note(" direct-readback=%s", good ? "same" : "different");
        ok &= good;

        uint64_t range[2] = {DISCARD_OFFSET, DISCARD_BYTES};
        if (ioctl(direct, BLKDISCARD, range) != 0) {
            note(" discard=%s", strerror(errno)); ok = 0;
        } else {
            int zeros = full_pread(direct, big, DISCARD_BYTES, DISCARD_OFFSET) == DISCARD_BYTES;
            for (size_t i = 0; zeros && i < DISCARD_BYTES; i++) zeros = big[i] == 0;
            note(" discard-reads=%s", zeros ? "zeros" : "data");
            ok &= zeros;
        }
        if (fsync(direct) != 0) { note(" flush=%s", strerror(errno)); ok = 0; }
        close(direct);
    }
    return finish(name, ok);
}

// blk-ro: /dev/vdb, offered read-only (VIRTIO_BLK_F_RO). The kernel marks the disk read-only
// and refuses a write before it reaches the device (EPERM); BLKROSET cannot lift a read-only
// flag the device set. (The device's own refusal of a write, IOERR, is checked by the
// driver-side tests in HVDevicesTests.) The host checks the file is unchanged.
static int test_blk_readonly(void) {
    const char *name = "blk-ro";
    int ok = 1;
    int fd = open("/dev/vdb", O_RDONLY);
    if (fd < 0) { note(" open=%s", strerror(errno)); return finish(name, 0); }
    int readonly = 0;
    ioctl(fd, BLKROGET, &readonly);
    note(" kernel-ro=%d", readonly);
    ok &= readonly == 1;
    char first[16];
    ok &= full_pread(fd, first, sizeof first, 0) == sizeof first;
    close(fd);

    uint8_t *buffer = NULL;
    int writer = open("/dev/vdb", O_WRONLY | O_DIRECT);
    if (writer >= 0 && posix_memalign((void **)&buffer, 4096, 4096) == 0) {
        memset(buffer, 0x5A, 4096);
        ssize_t n = pwrite(writer, buffer, 4096, 0);
        note(" write=%s", n < 0 ? strerror(errno) : "accepted");
        ok &= n < 0;
        if (fsync(writer) == 0) note(" fsync=ok");
        close(writer);
    } else {
        note(" write-open=%s", strerror(errno));
    }
    return finish(name, ok);
}

// rng: /dev/hwrng is the virtio device and gives bytes that are not all zero.
static int test_rng(void) {
    const char *name = "rng";
    int ok = 1;
    char current[64] = {0};
    int fd = open("/sys/class/misc/hw_random/rng_current", O_RDONLY);
    if (fd >= 0) { ssize_t n = read(fd, current, sizeof current - 1); if (n > 0) current[n - 1] = 0; close(fd); }
    note(" source=%s", current);
    ok &= strncmp(current, "virtio_rng", 10) == 0;
    uint8_t bytes[64];
    fd = open("/dev/hwrng", O_RDONLY);
    ssize_t got = fd < 0 ? -1 : read(fd, bytes, sizeof bytes);
    if (got <= 0) { note(" read=%s", got < 0 ? strerror(errno) : "nothing"); return finish(name, 0); }
    int nonzero = 0;
    for (ssize_t i = 0; i < got; i++) nonzero |= bytes[i];
    note(" bytes=%zd", got);
    ok &= nonzero != 0;
    return finish(name, ok);
}

// console: /dev/hvc0 (virtio-console). The guest writes HVKIT-CONSOLE-READY, the host answers
// with one line, the guest prints what it read.
static int test_console(void) {
    const char *name = "console";
    int fd = open("/dev/hvc0", O_RDWR | O_NOCTTY);
    if (fd < 0) { note(" open=%s", strerror(errno)); return finish(name, 0); }
    struct termios mode;
    if (tcgetattr(fd, &mode) == 0) {
        cfmakeraw(&mode);
        tcsetattr(fd, TCSANOW, &mode);
    }
    const char *ready = "HVKIT-CONSOLE-READY\n";
    if (write(fd, ready, strlen(ready)) < 0) { note(" write=%s", strerror(errno)); return finish(name, 0); }
    char line[128] = {0};
    size_t used = 0;
    while (used < sizeof line - 1) {
        struct pollfd wait = {.fd = fd, .events = POLLIN};
        int ready = poll(&wait, 1, 30000);
        if (ready <= 0) { note(" read=%s", ready == 0 ? "timeout" : strerror(errno)); break; }
        ssize_t n = read(fd, line + used, sizeof line - 1 - used);
        if (n <= 0) break;
        used += (size_t)n;
        if (memchr(line, '\n', used)) break;
    }
    char *end = memchr(line, '\n', used);
    if (end) *end = 0;
    for (char *c = line; *c; c++) if (*c == ' ' || *c < 0x20) *c = '_';
    note(" received=%s", line);
    close(fd);
    return finish(name, end != NULL);
}

// smp: every online CPU runs a process pinned to it.
static int test_smp(void) {
    const char *name = "smp";
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    note(" online=%ld ran-on=", cpus);
    int ok = cpus >= 1;
    for (long cpu = 0; cpu < cpus && cpu < 64; cpu++) {
        pid_t child = fork();
        if (child == 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            if (sched_setaffinity(0, sizeof set, &set) != 0) _exit(2);
            sched_yield();
            _exit(sched_getcpu() == cpu ? 0 : 1);
        }
        int status = 0;
        int ran = child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        note("%s%ld%s", cpu ? "," : "", cpu, ran ? "" : "!");
        ok &= ran;
    }
    return finish(name, ok);
}

// features: per virtio device, its type and the feature bits the driver accepted, as hex
// (bit 0 is the first character of sysfs' features string).
static int test_features(void) {
    const char *name = "features";
    DIR *devices = opendir("/sys/bus/virtio/devices");
    if (!devices) { note(" sysfs=%s", strerror(errno)); return finish(name, 0); }
    struct dirent *entry;
    int count = 0;
    while ((entry = readdir(devices))) {
        if (entry->d_name[0] == '.') continue;
        char path[300], bits[80] = {0}, type[16] = {0}, base[300] = {0};
        snprintf(path, sizeof path, "/sys/bus/virtio/devices/%s/features", entry->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, bits, sizeof bits - 1);
        close(fd);
        snprintf(path, sizeof path, "/sys/bus/virtio/devices/%s/device", entry->d_name);
        fd = open(path, O_RDONLY);
        if (fd >= 0) { ssize_t m = read(fd, type, sizeof type - 1); if (m > 0) type[m - 1] = 0; close(fd); }
        // The transport: the link ends in .../<platform device>/virtioN, and a device from the
        // command line is virtio-mmio.K, K its place among the virtio_mmio.device= parameters.
        snprintf(path, sizeof path, "/sys/bus/virtio/devices/%s", entry->d_name);
        char resolved[300];
        ssize_t length = readlink(path, resolved, sizeof resolved - 1);
        if (length > 0) {
            resolved[length] = 0;
            char *last = strrchr(resolved, '/');
            if (last) {
                *last = 0;
                char *parent = strrchr(resolved, '/');
                snprintf(base, sizeof base, "%s", parent ? parent + 1 : resolved);
            }
        }
        uint64_t value = 0;
        for (ssize_t i = 0; i < n && i < 64; i++) if (bits[i] == '1') value |= 1ull << i;
        note(" %s=%s:%llx", base, type, (unsigned long long)value);
        count++;
    }
    closedir(devices);
    note(" devices=%d", count);
    return finish(name, count > 0);
}

static double seconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

// blk-dd: what `dd bs=1M count=1 oflag=direct` and `iflag=direct` do on /dev/vda, timed in the
// guest: one 1 MiB O_DIRECT write at offset 0, then one read back (hv-bench's linux_blk_dd runs
// it under minivmm and under QEMU). The disk's first MiB is overwritten.
static int test_blk_dd(void) {
    const char *name = "blk-dd";
    int fd = open("/dev/vda", O_RDWR | O_DIRECT);
    uint8_t *buffer = NULL;
    if (fd < 0 || posix_memalign((void **)&buffer, 4096, DIRECT_BYTES) != 0) {
        note(" open=%s", strerror(errno));
        return finish(name, 0);
    }
    fill(buffer, DIRECT_BYTES, 3);
    // The host times from this line to the result line (the guest's clock may be coarse).
    printf("HVKIT-DD-START\n");
    fflush(stdout);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int ok = full_pwrite(fd, buffer, DIRECT_BYTES, 0) == DIRECT_BYTES;
    double write_seconds = seconds_since(&start);
    memset(buffer, 0, DIRECT_BYTES);
    clock_gettime(CLOCK_MONOTONIC, &start);
    ok &= full_pread(fd, buffer, DIRECT_BYTES, 0) == DIRECT_BYTES;
    double read_seconds = seconds_since(&start);
    ok &= check(buffer, DIRECT_BYTES, 3);
    close(fd);
    note(" write-us=%.0f read-us=%.0f", write_seconds * 1e6, read_seconds * 1e6);
    return finish(name, ok);
}

// The byte count each way of the net checks' TCP transfers, shared with the host test.
#define NET_TRANSFER_BYTES (2 << 20)
#define NET_PASST_TRANSFER_BYTES (1 << 20)

// The interface the net check at hand configures.
static const char *net_interface = "eth0";

static uint16_t internet_checksum(const void *data, size_t length) {
    const uint8_t *bytes = data;
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < length; i += 2) sum += (uint32_t)bytes[i] << 8 | bytes[i + 1];
    if (length & 1) sum += (uint32_t)bytes[length - 1] << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return htons((uint16_t)~sum);
}

// Configures net_interface as `address`/24 and brings it up, by ioctl (no ip or ifconfig needed).
static int configure_interface(const char *address) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) return 0;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    snprintf(request.ifr_name, sizeof request.ifr_name, "%s", net_interface);
    struct sockaddr_in *in = (struct sockaddr_in *)&request.ifr_addr;
    in->sin_family = AF_INET;
    int ok = inet_pton(AF_INET, address, &in->sin_addr) == 1 && ioctl(fd, SIOCSIFADDR, &request) == 0;
    inet_pton(AF_INET, "255.255.255.0", &in->sin_addr);
    ok = ok && ioctl(fd, SIOCSIFNETMASK, &request) == 0;
    ok = ok && ioctl(fd, SIOCGIFFLAGS, &request) == 0;
    request.ifr_flags |= IFF_UP | IFF_RUNNING;
    ok = ok && ioctl(fd, SIOCSIFFLAGS, &request) == 0;
    if (!ok) note(" configure=%s", strerror(errno));
    close(fd);
    return ok;
}

// Sends `count` ICMP echo requests to `host` and counts the replies (a raw socket: the init
// runs as root).
static int ping_host(struct in_addr host, int count) {
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (fd < 0) { note(" ping-socket=%s", strerror(errno)); return 0; }
    struct timeval timeout = { .tv_sec = 2 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr = host };
    int replies = 0;
    for (int sequence = 1; sequence <= count; sequence++) {
        uint8_t packet[64] = {0};
        struct icmphdr *icmp = (struct icmphdr *)packet;
        icmp->type = ICMP_ECHO;
        icmp->un.echo.id = htons(0x4856);
        icmp->un.echo.sequence = htons(sequence);
        for (size_t i = sizeof *icmp; i < sizeof packet; i++) packet[i] = (uint8_t)(i + sequence);
        icmp->checksum = internet_checksum(packet, sizeof packet);
        if (sendto(fd, packet, sizeof packet, 0, (struct sockaddr *)&to, sizeof to) != sizeof packet) continue;
        for (;;) {
            uint8_t reply[128];
            ssize_t n = recv(fd, reply, sizeof reply, 0);
            if (n < 0) break;
            size_t header = (size_t)(reply[0] & 0x0F) * 4;
            if ((size_t)n < header + sizeof(struct icmphdr)) continue;
            struct icmphdr *answer = (struct icmphdr *)(reply + header);
            if (answer->type == ICMP_ECHOREPLY && answer->un.echo.id == htons(0x4856)
                && answer->un.echo.sequence == htons(sequence)) { replies++; break; }
        }
    }
    close(fd);
    return replies;
}

// net_interface's counter `name` from sysfs, or -1.
static long interface_counter(const char *name) {
    char path[128], text[32] = {0};
    snprintf(path, sizeof path, "/sys/class/net/%s/statistics/%s", net_interface, name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    return n > 0 ? atol(text) : -1;
}

// Notes net_interface's packet counters, for a failure's diagnosis.
static void note_interface_counters(void) {
    note(" rx-packets=%ld tx-packets=%ld rx-dropped=%ld rx-length-errors=%ld", interface_counter("rx_packets"),
         interface_counter("tx_packets"), interface_counter("rx_dropped"), interface_counter("rx_length_errors"));
    char state[32] = {0};
    char operstate[96];
    snprintf(operstate, sizeof operstate, "/sys/class/net/%s/operstate", net_interface);
    int carrier = open(operstate, O_RDONLY);
    if (carrier >= 0) { ssize_t n = read(carrier, state, sizeof state - 1); if (n > 0) state[n - 1] = 0; close(carrier); }
    note(" operstate=%s tx-dropped=%ld", state, interface_counter("tx_dropped"));
    // The neighbour table's entry for the host (flags 0x2: complete) and the device's interrupts.
    char text[1024] = {0};
    int fd = open("/proc/net/arp", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof text - 1);
        close(fd);
        char *entry = n > 0 ? strchr(text, '\n') : NULL;
        if (entry) {
            for (char *c = ++entry; *c; c++) if (*c == ' ' || *c == '\n') *c = '_';
            note(" arp=%.60s", entry);
        }
    }
    memset(text, 0, sizeof text);
    fd = open("/proc/interrupts", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof text - 1);
        close(fd);
        char *line = n > 0 ? strstr(text, "virtio") : NULL;
        if (line) {
            while (line > text && line[-1] != '\n') line--;
            char *end = strchr(line, '\n');
            if (end) *end = 0;
            for (char *c = line; *c; c++) if (*c == ' ') *c = '_';
            note(" irq=%.60s", line);
        }
    }
}

// One stream's exchange, the same over TCP and vsock: receives `bytes` of pattern
// `receive_seed` into `buffer`, checks them, sends as many of pattern `send_seed`, shuts its
// sending half and waits for the host to close (it has checked everything by then). Counts
// what moved in *received and *sent; returns whether the received bytes were right.
static int exchange_patterns(int connection, uint8_t *buffer, size_t bytes, unsigned receive_seed, unsigned send_seed,
                             size_t *received, size_t *sent) {
    *received = 0;
    *sent = 0;
    while (buffer && *received < bytes) {
        ssize_t n = recv(connection, buffer + *received, bytes - *received, 0);
        if (n <= 0) break;
        *received += (size_t)n;
    }
    int ok = buffer && *received == bytes && check(buffer, bytes, receive_seed);
    if (buffer) fill(buffer, bytes, send_seed);
    while (buffer && *sent < bytes) {
        ssize_t n = send(connection, buffer + *sent, bytes - *sent, 0);
        if (n <= 0) break;
        *sent += (size_t)n;
    }
    shutdown(connection, SHUT_WR);
    char end;
    while (recv(connection, &end, 1, 0) > 0) {}
    close(connection);
    return ok;
}

// net: eth0 (virtio-net on a tap) configured from hvkit.net=GUEST,HOST,PORT on the command
// line; 10 pings of the host; then one TCP connection to HOST:PORT that receives `bytes` of
// pattern 5 and sends as many of pattern 6 (the host checks them). net-passt: the same on eth1
// (virtio-net on passt's socket) from hvkit.net-passt=, HOST being passt's gateway address,
// which passt maps to the host itself, with no pings and half the bytes.
static int test_net(const char *name, const char *parameter, const char *interface, int pings, size_t bytes) {
    char cmdline[4096] = {0}, guest[32] = {0}, host[32] = {0}, format[64];
    int port = 0;
    net_interface = interface;
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) { ssize_t n = read(fd, cmdline, sizeof cmdline - 1); (void)n; close(fd); }
    char *argument = strstr(cmdline, parameter);
    snprintf(format, sizeof format, "%s%%31[0-9.],%%31[0-9.],%%d", parameter);
    if (!argument || sscanf(argument, format, guest, host, &port) != 3) {
        note(" %smissing", parameter);
        return finish(name, 0);
    }
    if (!configure_interface(guest)) return finish(name, 0);
    struct in_addr host_address;
    inet_pton(AF_INET, host, &host_address);
    int replies = pings > 0 ? ping_host(host_address, pings) : 0;
    if (pings > 0) note(" ping=%d/%d", replies, pings);
    if (replies != pings) note_interface_counters();

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int connection = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval timeout = { .tv_sec = 60 };
    setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = host_address };
    if (connect(connection, (struct sockaddr *)&to, sizeof to) != 0) {
        note(" connect=%s", strerror(errno));
        note_interface_counters();
        return finish(name, 0);
    }
    uint8_t *buffer = malloc(bytes);
    size_t received, sent;
    int ok = exchange_patterns(connection, buffer, bytes, 5, 6, &received, &sent);
    free(buffer);
    note(" received=%zu sent=%zu pattern=%s tcp-ms=%.0f", received, sent, ok ? "ok" : "bad", seconds_since(&start) * 1e3);
    return finish(name, replies == pings && ok && sent == bytes);
}

// AF_VSOCK's address, spelt out: musl's headers do not include <linux/vm_sockets.h>.
#define HVKIT_AF_VSOCK 40
#define HVKIT_VMADDR_CID_ANY 0xFFFFFFFFu
#define HVKIT_VMADDR_CID_HOST 2u
struct hvkit_sockaddr_vm {
    sa_family_t svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_flags;
    unsigned char svm_zero[3];
};

static int vsock_connect(unsigned port) {
    int fd = socket(HVKIT_AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) return -errno;
    struct hvkit_sockaddr_vm to = { .svm_family = HVKIT_AF_VSOCK, .svm_port = port, .svm_cid = HVKIT_VMADDR_CID_HOST };
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) { int error = errno; close(fd); return -error; }
    struct timeval timeout = { .tv_sec = 60 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    return fd;
}

// vsock: from hvkit.vsock=LISTEN,HOST,REFUSED,BYTES on the command line, through the kernel's
// virtio-vsock driver (AF_VSOCK): connects to the host's port HOST, receives BYTES of pattern 7
// and sends as many of pattern 8 (the host checks them); connects to REFUSED, where nothing
// listens on the host, and expects the connection refused; then listens on LISTEN and echoes
// one connection (the host's CONNECT LISTEN) until its end of file.
static int test_vsock(void) {
    char cmdline[4096] = {0};
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) { ssize_t n = read(fd, cmdline, sizeof cmdline - 1); (void)n; close(fd); }
    char *argument = strstr(cmdline, "hvkit.vsock=");
    unsigned listen_port = 0, host_port = 0, refused_port = 0;
    size_t bytes = 0;
    if (!argument || sscanf(argument, "hvkit.vsock=%u,%u,%u,%zu", &listen_port, &host_port, &refused_port, &bytes) != 4) {
        note(" hvkit.vsock=missing");
        return finish("vsock", 0);
    }
    // Out to the host.
    int connection = vsock_connect(host_port);
    if (connection < 0) { note(" connect=%s", strerror(-connection)); return finish("vsock", 0); }
    uint8_t *buffer = malloc(bytes);
    size_t received, sent;
    int ok = exchange_patterns(connection, buffer, bytes, 7, 8, &received, &sent);
    note(" received=%zu sent=%zu pattern=%s", received, sent, ok ? "ok" : "bad");
    ok = ok && sent == bytes;

    // Nothing listens there: refused (the device's RST).
    int refused = vsock_connect(refused_port);
    note(" refused=%s", refused >= 0 ? "connected" : -refused == ECONNRESET ? "ECONNRESET"
                        : -refused == ECONNREFUSED ? "ECONNREFUSED" : -refused == ETIMEDOUT ? "ETIMEDOUT" : "other");
    if (refused >= 0) { close(refused); ok = 0; }

    // The host's connection in: echo until its end of file.
    int listener = socket(HVKIT_AF_VSOCK, SOCK_STREAM, 0);
    struct hvkit_sockaddr_vm any = { .svm_family = HVKIT_AF_VSOCK, .svm_port = listen_port, .svm_cid = HVKIT_VMADDR_CID_ANY };
    if (listener < 0 || bind(listener, (struct sockaddr *)&any, sizeof any) != 0 || listen(listener, 1) != 0) {
        note(" listen=%s", strerror(errno));
        free(buffer);
        return finish("vsock", 0);
    }
    struct pollfd waiting = { .fd = listener, .events = POLLIN };
    int client = poll(&waiting, 1, 120000) == 1 ? accept(listener, NULL, NULL) : -1;
    size_t echoed = 0;
    if (client >= 0) {
        struct timeval timeout = { .tv_sec = 60 };
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        for (;;) {
            ssize_t n = recv(client, buffer, bytes, 0);
            if (n <= 0) break;
            ssize_t done = 0;
            while (done < n) {
                ssize_t w = send(client, buffer + done, (size_t)(n - done), 0);
                if (w <= 0) break;
                done += w;
            }
            if (done < n) break;
            echoed += (size_t)n;
        }
        close(client);
    } else {
        note(" accept=none");
        ok = 0;
    }
    close(listener);
    free(buffer);
    note(" echoed=%zu", echoed);
    return finish("vsock", ok && echoed == bytes);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: hvkit-test blk|blk-ro|blk-dd|rng|console|smp|features|net|net-passt|vsock\n"); return 2; }
    const char *name = argv[1];
    if (!strcmp(name, "blk")) return test_blk();
    if (!strcmp(name, "blk-ro")) return test_blk_readonly();
    if (!strcmp(name, "blk-dd")) return test_blk_dd();
    if (!strcmp(name, "rng")) return test_rng();
    if (!strcmp(name, "console")) return test_console();
    if (!strcmp(name, "smp")) return test_smp();
    if (!strcmp(name, "features")) return test_features();
    if (!strcmp(name, "net")) return test_net("net", "hvkit.net=", "eth0", 10, NET_TRANSFER_BYTES);
    if (!strcmp(name, "net-passt")) return test_net("net-passt", "hvkit.net-passt=", "eth1", 0, NET_PASST_TRANSFER_BYTES);
    if (!strcmp(name, "vsock")) return test_vsock();
    note(" unknown-test");
    return finish(name, 0);
}
