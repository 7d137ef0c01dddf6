#include <sys/uio.h>
#include "CBenchBaseline.h"

#include <CKVM.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define GUEST_SIZE (2u << 20)
// The exit loops map only the PC's 640 KiB of low memory, so that 0xD0000 is a hole.
#define LOW_MEMORY_SIZE 0xA0000u
#define GUEST_ENTRY 0x10000u

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct vm {
    int kvm, vm, vcpu;
    void *memory;
    struct kvm_run *run;
    size_t run_size;
    size_t memory_size;
};

static void vm_close(struct vm *v) {
    if (v->run) munmap(v->run, v->run_size);
    if (v->memory) munmap(v->memory, v->memory_size);
    if (v->vcpu >= 0) close(v->vcpu);
    if (v->vm >= 0) close(v->vm);
    if (v->kvm >= 0) close(v->kvm);
}

// Everything up to a vCPU ready to enter real mode at 0x1000:0000.
static int vm_open(struct vm *v, const uint8_t *code, size_t code_size, size_t memory_size) {
    memset(v, 0, sizeof *v);
    v->kvm = v->vm = v->vcpu = -1;
    v->memory_size = memory_size;
    if ((v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0) return -errno;
    if ((v->vm = ckvm_ioctl_value(v->kvm, CKVM_CREATE_VM, 0)) < 0) return -errno;
    v->memory = mmap(NULL, memory_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (v->memory == MAP_FAILED) { v->memory = NULL; return -errno; }
    memcpy((uint8_t *)v->memory + GUEST_ENTRY, code, code_size);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = memory_size, .userspace_addr = (uint64_t)(uintptr_t)v->memory,
    };
    if (ckvm_ioctl_pointer(v->vm, CKVM_SET_USER_MEMORY_REGION, &region) < 0) return -errno;
    if ((v->vcpu = ckvm_ioctl_value(v->vm, CKVM_CREATE_VCPU, 0)) < 0) return -errno;
    int size = ckvm_ioctl_value(v->kvm, CKVM_GET_VCPU_MMAP_SIZE, 0);
    if (size < 0) return -errno;
    v->run_size = (size_t)size;
    v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
    if (v->run == MAP_FAILED) { v->run = NULL; return -errno; }
    struct kvm_sregs sregs;
    if (ckvm_ioctl_pointer(v->vcpu, CKVM_GET_SREGS, &sregs) < 0) return -errno;
    sregs.cs.base = GUEST_ENTRY;
    sregs.cs.selector = GUEST_ENTRY >> 4;
    sregs.ds.base = sregs.es.base = sregs.fs.base = sregs.gs.base = sregs.ss.base = 0;
    sregs.ds.selector = sregs.es.selector = sregs.fs.selector = sregs.gs.selector = sregs.ss.selector = 0;
    if (ckvm_ioctl_pointer(v->vcpu, CKVM_SET_SREGS, &sregs) < 0) return -errno;
    struct kvm_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.rip = 0;
    regs.rflags = 2;
    if (ckvm_ioctl_pointer(v->vcpu, CKVM_SET_REGS, &regs) < 0) return -errno;
    return 0;
}

// What a minimal C VMM does with an exit: hand the data to a device. The device here counts
// and remembers the last value, so the compiler cannot drop the work.
static volatile uint64_t device_last_value;
static volatile uint64_t device_accesses;

double hvb_c_exit_loop(const uint8_t *code, size_t code_size, int exits) {
    struct vm v;
    int error = vm_open(&v, code, code_size, LOW_MEMORY_SIZE);
    if (error < 0 || exits < 2) { vm_close(&v); return error < 0 ? error : -EINVAL; }
    double first = 0, last = 0;
    for (int handled = 0; handled < exits;) {
        if (ckvm_ioctl_value(v.vcpu, CKVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            error = -errno;
            break;
        }
        if (v.run->exit_reason == KVM_EXIT_IO) {
            uint8_t *data = (uint8_t *)v.run + v.run->io.data_offset;
            uint64_t value = 0;
            memcpy(&value, data, v.run->io.size);
            device_last_value = value;
            device_accesses++;
        } else if (v.run->exit_reason == KVM_EXIT_MMIO) {
            uint64_t value = 0;
            memcpy(&value, v.run->mmio.data, v.run->mmio.len);
            device_last_value = value;
            device_accesses++;
        } else {
            error = -EPROTO;
            break;
        }
        handled++;
        if (handled == 1) first = now_ns();
        if (handled == exits) last = now_ns();
    }
    vm_close(&v);
    return error < 0 ? error : (last - first) / (exits - 1);
}

// Runs the vCPU until its first port-I/O exit; 0 or a negative errno value.
static int run_to_first_io(struct vm *v) {
    for (;;) {
        if (ckvm_ioctl_value(v->vcpu, CKVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        return v->run->exit_reason == KVM_EXIT_IO ? 0 : -EPROTO;
    }
}

double hvb_c_vm_create(const uint8_t *code, size_t code_size) {
    double start = now_ns();
    struct vm v;
    int error = vm_open(&v, code, code_size, GUEST_SIZE);
    if (error == 0) error = run_to_first_io(&v);
    double elapsed = now_ns() - start;
    vm_close(&v);
    return error < 0 ? error : elapsed;
}

double hvb_c_vm_loop(const uint8_t *code, size_t code_size, int count) {
    double start = now_ns();
    for (int i = 0; i < count; i++) {
        struct vm v;
        int error = vm_open(&v, code, code_size, GUEST_SIZE);
        if (error == 0) error = run_to_first_io(&v);
        vm_close(&v);
        if (error < 0) return error;
    }
    return now_ns() - start;
}

void hvb_line_buffer_stdout(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}

long hvb_c_writev_frames(int fd, const struct iovec *pieces, int iovcnt, int slots, long count) {
    for (long frame = 0; frame < count; frame++) {
        if (writev(fd, pieces + (frame % slots) * iovcnt, iovcnt) < 0) return -errno;
    }
    return count;
}

long hvb_c_readv_frames(int fd, const struct iovec *pieces, int iovcnt, long count) {
    long frames = 0;
    while (frames < count) {
        if (readv(fd, pieces, iovcnt) < 0) {
            if (errno == EAGAIN) break;
            return -errno;
        }
        frames++;
    }
    return frames;
}

double hvb_c_write_file(const char *path, const uint8_t *bytes, size_t size) {
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    size_t done = 0;
    while (done < size) {
        size_t chunk = size - done < (1u << 20) ? size - done : (1u << 20);
        ssize_t written = write(fd, bytes + done, chunk);
        if (written < 0) {
            if (errno == EINTR) continue;
            int error = errno;
            close(fd);
            return -error;
        }
        done += (size_t)written;
    }
    if (fsync(fd) != 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    close(fd);
    clock_gettime(CLOCK_MONOTONIC, &end);
    return (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
}
