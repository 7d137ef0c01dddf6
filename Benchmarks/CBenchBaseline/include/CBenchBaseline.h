// The C baseline for hv-bench: the same KVM work as the Swift side, written as a plain C
// program would, so hv-bench can report Swift/C ratios measured in the same run.
#ifndef CBENCHBASELINE_H
#define CBENCHBASELINE_H

#include <stddef.h>
#include <stdint.h>

// Runs `code` (a real-mode guest loaded at 0x10000, CS=0x1000) in a fresh VM with 640 KiB of
// RAM (so 0xD0000 is a hole) and handles `exits` port-I/O or MMIO exits (whichever the guest makes) in a plain
// KVM_RUN loop. Returns the nanoseconds from the first exit to the last, divided by
// (exits - 1), or a negative errno value on failure.
double hvb_c_exit_loop(const uint8_t *code, size_t code_size, int exits);

// Opens /dev/kvm, creates a VM, maps 2 MiB, creates one vCPU, loads `code` and runs to the
// first port-I/O exit. Returns the nanoseconds that took, or a negative errno value.
double hvb_c_vm_create(const uint8_t *code, size_t code_size);

// vm_create's work `count` times in a row, each VM closed before the next: returns the
// nanoseconds for all of them, or a negative errno value.
double hvb_c_vm_loop(const uint8_t *code, size_t code_size, int count);

struct iovec;

// Writes `count` frames to `fd` (a tap), each one writev of `iovcnt` pieces, as a plain C
// VMM's transmit loop would: `pieces` holds `slots` frames' pieces one after the other, taken
// in turn, so the loop reads the same buffers as a device with that many frames in flight.
// Returns the frames written, or a negative errno value.
long hvb_c_writev_frames(int fd, const struct iovec *pieces, int iovcnt, int slots, long count);

// Reads up to `count` frames from the non-blocking `fd` (a tap), one readv each into `pieces`,
// stopping early when none is left. Returns the frames read, or a negative errno value.
long hvb_c_readv_frames(int fd, const struct iovec *pieces, int iovcnt, long count);

// Writes `size` bytes from `bytes` into a new file at `path` with one write(2) loop of
// 1 MiB chunks, then fsync and close: what saving the same memory costs a plain C program.
// Returns the nanoseconds that took, or a negative errno value.
double hvb_c_write_file(const char *path, const uint8_t *bytes, size_t size);

// Makes stdout line-buffered (Swift 6 cannot touch the C global `stdout` safely).
void hvb_line_buffer_stdout(void);

#endif
