/* Drives every virtio-mmio device in a row of windows with its own minimal drivers, the way a
 * guest of a composed machine would: each virtio-blk disk reads its sector 0 (the host wrote
 * "disk N" there) and writes "written by the guest to disk N" to sector 1, then flushes; the
 * entropy device fills 64 bytes; the virtio console prints a line on port 0. What each driver
 * saw goes to the hypercall console; hv_main returns 0 only if every device behaved.
 *
 * hv_main's argument: bits 32-63 the first window's address >> 12, bits 0-7 the number of
 * windows (4 KiB apart). Interrupts stay off: the drivers poll the used rings. Only VERSION_1
 * (and a disk's FLUSH) is negotiated. */
#define QUEUE_SIZE 8
#include "virtio_block.h"

/* Each device gets its queue afresh (they are driven one after another). */
static struct queue queue;
static uint8_t data[SECTOR] __attribute__((aligned(64)));

static unsigned length_of(const char *text) { unsigned n = 0; while (text[n]) n++; return n; }
static void say(const char *text) { hv_console_write(text, length_of(text)); }
static void say_number(const char *before, uint64_t value, const char *after) {
    char digits[21];
    int at = 20;
    digits[at] = 0;
    do { digits[--at] = (char)('0' + value % 10); value /= 10; } while (value);
    say(before);
    say(digits + at);
    say(after);
}

static void clear(void *to, unsigned length) { uint8_t *d = to; while (length--) *d++ = 0; }

/* The console's receive queue: set up, as the device wants both of a port's queues, but
 * never given a buffer. */
static struct queue console_input;

/* Resets the device, negotiates VERSION_1 plus `extra` (from feature page 0, if offered) and
 * sets up queue `index` (the console's receive queue 0 too, when `index` is its transmit
 * queue 1); 0 on success. */
static int start_device(uint32_t extra, unsigned index) {
    if (negotiate(extra)) return 1;
    clear(&console_input, sizeof console_input);
    clear(&queue, sizeof queue);
    if (index == 1 && set_up_queue(0, &console_input)) return 2;
    if (set_up_queue(index, &queue)) return 2;
    write32(0x70, 0xF);                          /* DRIVER_OK */
    return (read32(0x70) & 0x40) ? 3 : 0;        /* DEVICE_NEEDS_RESET */
}

static int drive_disk(unsigned number) {
    if (start_device(BLOCK_FEATURE_FLUSH, 0)) return 0;
    uint64_t capacity = read32(0x100) | (uint64_t)read32(0x104) << 32;
    if (capacity < 2 || block_request(&queue, BLOCK_IN, 0, data) != 0) return 0;
    say("disk sector 0: ");
    hv_console_write(data, length_of((const char *)data) < 64 ? length_of((const char *)data) : 64);
    say_number(" (", capacity, " sectors)\n");
    static const char written[] = "written by the guest to disk ";
    clear(data, SECTOR);
    for (unsigned i = 0; i < sizeof written - 1; i++) data[i] = (uint8_t)written[i];
    data[sizeof written - 1] = (uint8_t)('0' + number);
    if (block_request(&queue, BLOCK_OUT, 1, data) != 0) return 0;
    if (block_request(&queue, BLOCK_FLUSH, 0, data) != 0) return 0;
    return 1;
}

static int drive_entropy(void) {
    if (start_device(0, 0)) return 0;
    clear(data, 64);
    queue.descriptors[0] = (struct descriptor){ (uint64_t)(uintptr_t)data, 64, 2 /* WRITE */, 0 };
    int64_t filled = submit(&queue, 0);
    unsigned nonzero = 0;
    for (unsigned i = 0; i < 64; i++) nonzero += data[i] != 0;
    say_number("entropy: ", (uint64_t)filled, " bytes");
    say_number(", ", nonzero, " not zero\n");
    return filled == 64 && nonzero > 32;
}

static int drive_console(void) {
    if (start_device(0, 1)) return 0;            /* port 0's queues: receive 0, transmit 1 */
    static const char line[] = "hello through virtio-console\n";
    for (unsigned i = 0; i < sizeof line - 1; i++) data[i] = (uint8_t)line[i];
    queue.descriptors[0] = (struct descriptor){ (uint64_t)(uintptr_t)data, sizeof line - 1, 0, 0 };
    return submit(&queue, 1) >= 0;
}

int hv_main(uint64_t argument) {
    uint64_t first = (argument >> 32) << 12;
    unsigned windows = (unsigned)(argument & 0xFF);
    unsigned disks = 0, entropy = 0, consoles = 0, failures = 0;
    for (unsigned window = 0; window < windows; window++) {
        mmio = (volatile uint8_t *)(uintptr_t)(first + 0x1000 * (uint64_t)window);
        if (read32(0x00) != 0x74726976 || read32(0x04) != 2) { failures++; continue; }
        switch (read32(0x08)) {                  /* DeviceID */
        case 2: if (drive_disk(disks++)) break; failures++; say("a disk failed\n"); break;
        case 4: entropy++; if (!drive_entropy()) { failures++; say("entropy failed\n"); } break;
        case 3: consoles++; if (!drive_console()) { failures++; say("the console failed\n"); } break;
        default: failures++; say_number("unknown device ", read32(0x08), "\n");
        }
    }
    say_number("devices driven: ", disks, " disks");
    say_number(", ", entropy, " entropy");
    say_number(", ", consoles, " console");
    say_number(", ", failures, " failures\n");
    return failures == 0 && disks > 0 ? 0 : 1;
}
