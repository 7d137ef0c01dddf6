import HVCore
import HVKVM
import Glibc

/// The system calls each kind of a machine's threads makes once the guest runs: the seccomp
/// allow lists ``MachineConfiguration/systemCallFilter`` installs (Firecracker's split: vCPU
/// threads, the event loop, the thread that waits for the machine).
///
/// The lists were taken from `strace -f` of minivmm booting the Linux test guest with a disk,
/// the entropy device and a virtio console, plus the paths that run rarely (a flush, the
/// offload thread started for a write-zeroes, a reset). None of them can open a file, create a
/// socket other than a Unix-domain one (vsock's host connections), execute a program or fork: `clone` needs CLONE_THREAD, and `clone3` (whose flags a
/// filter cannot see) fails with ENOSYS so that glibc falls back to `clone`. ioctl is limited to
/// KVM's requests (type 0xAE), and on the waiting thread also the terminal's (type 'T').
public enum MachineSystemCalls {
    /// What every thread needs: memory, signals, futexes, time, thread creation and exit, the
    /// reads and writes of eventfds and output, and getrandom (hash seeds, virtio-rng).
    public static let common: [SeccompRule] = ([
        .read, .write, .readv, .writev, .close, .fstat, .newfstatat, .lseek,
        .mmap, .mprotect, .munmap, .mremap, .brk, .madvise,
        .rtSigaction, .rtSigprocmask, .rtSigreturn, .sigaltstack, .tgkill,
        .schedYield, .nanosleep, .clockNanosleep, .clockGettime, .restartSyscall,
        .getpid, .gettid, .futex, .exit, .exitGroup, .getrandom, .rseq, .setRobustList, .schedGetaffinity,
        // Arming the event loop's timer (a rate-limited request waits on it).
        .timerfdSettime,
    ] as [SystemCall]).map { SeccompRule($0) } + [
        // A new thread names itself (PR_SET_NAME); nothing else through prctl.
        SeccompRule(.prctl, argument: 0, mask: 0xFFFF_FFFF, value: 15),
        // Threads only (CLONE_THREAD), never a new process.
        SeccompRule(.clone, argument: 0, mask: 0x0001_0000, value: 0x0001_0000),
    ]

    /// Disk I/O that device work may do on the thread that was notified: the sync backend's
    /// reads, writes and flushes, fallocate for discard and write-zeroes, AIO submission, and
    /// io_uring's enter (whose rings allow only reads, writes and syncs of their one disk; they
    /// were set up, and restricted, when the disk was added).
    public static let diskIO: [SeccompRule] = ([
        .pread64, .pwrite64, .preadv, .pwritev, .preadv2, .pwritev2, .fsync, .fdatasync, .fallocate,
        .ioSubmit, .ioGetevents, .ioUringEnter,
    ] as [SystemCall]).map { SeccompRule($0) }

    /// KVM's ioctls (type 0xAE): KVM_RUN, registers, interrupt lines.
    public static let kvmIoctls = SeccompRule.ioctl(type: 0xAE)

    /// What network devices do on the thread that serves them: frames to a socket backend
    /// (sendmsg), a stream backend's look at what waits (recvfrom with MSG_PEEK, FIONREAD), the
    /// event loop's watch on a backend paused and resumed (epoll_ctl), and a tap's offloads set
    /// when a driver activates or resets the device (TUNSETOFFLOAD). The two ioctls only.
    public static let network: [SeccompRule] = [
        SeccompRule(.sendmsg), SeccompRule(.recvfrom), SeccompRule(.epollCtl),
        SeccompRule(.ioctl, argument: 1, mask: 0xFFFF_FFFF, value: tunSetOffload),
        SeccompRule(.ioctl, argument: 1, mask: 0xFFFF_FFFF, value: bytesWaiting),
    ]

    /// What a vsock device does on the threads that serve it: accept host programs on its Unix
    /// socket, connect to `<path>_<port>` (or make a socket pair for an in-process listener)
    /// when the guest connects, and shut a write half. Unix-domain sockets only (AF_UNIX, 1),
    /// checked on socket(2)'s and socketpair(2)'s first argument.
    public static let vsock: [SeccompRule] = [
        SeccompRule(.socket, argument: 0, mask: 0xFFFF_FFFF, value: UInt32(AF_UNIX)),
        SeccompRule(.socketpair, argument: 0, mask: 0xFFFF_FFFF, value: UInt32(AF_UNIX)),
        SeccompRule(.connect), SeccompRule(.accept4), SeccompRule(.shutdown),
    ]

    /// What taking a snapshot adds on the thread that takes it (``Machine/snapshot(to:kind:leavePaused:)``):
    /// waiting for the event loop to bring the devices to rest (an eventfd and poll), creating
    /// the snapshot's directory and files, sizing the sparse memory file and renaming the files
    /// into place. Given to the waiting thread only when the embedder asks
    /// (``Machine/restrictCallingThread(allowingSnapshots:)``), since it lets that thread
    /// create files.
    public static let snapshots: [SeccompRule] = ([.eventfd2, .poll, .mkdir, .openat, .ftruncate, .rename] as [SystemCall]).map { SeccompRule($0) }

    /// TUNSETOFFLOAD: _IOW('T', 208, unsigned int).
    static let tunSetOffload: UInt32 = 0x4004_54D0
    /// FIONREAD.
    static let bytesWaiting: UInt32 = 0x541B

    /// Does once, before any filter, what would otherwise need a forbidden call later: glibc
    /// reads /etc/localtime the first time anything converts a local time (the CMOS clock,
    /// log timestamps), and a filtered thread may not open files.
    public static func prepareProcess() {
        tzset()
    }

    /// clone3 fails with ENOSYS (glibc then uses clone, whose flags are checked).
    static let failing: [SystemCall: Int32] = [.clone3: ENOSYS]

    /// A vCPU thread: KVM_RUN and the exits it serves (device registers, doorbells, hypercalls,
    /// the queue work a notification by exit does).
    public static func vcpu(mismatchAction: SeccompAction = .killProcess) -> SeccompFilter {
        SeccompFilter(allowing: common + diskIO + network + vsock + [kvmIoctls], failing: failing, mismatchAction: mismatchAction)
    }

    /// The event loop's thread: epoll, the eventfds of ioeventfds, irqfds and AIO completions,
    /// the device work they start, console input, and KVM interrupt lines for the 16550.
    public static func eventLoop(mismatchAction: SeccompAction = .killProcess) -> SeccompFilter {
        SeccompFilter(allowing: common + diskIO + network + vsock + [kvmIoctls] + ([.epollWait, .epollPwait] as [SystemCall]).map { SeccompRule($0) },
                      failing: failing, mismatchAction: mismatchAction)
    }

    /// The thread that started the machine and waits for it: stopping the vCPUs, unwiring
    /// devices (KVM and epoll), draining and flushing disks, unmapping memory, restoring the
    /// terminal, removing a vsock device's socket file, and waiting for signals; and, once the guest has ended, reporting how much of
    /// guest RAM is resident (HVCore's `GuestMemoryMmap.residentBytes()`, mincore), which only reads
    /// the process's own page tables.
    /// With `allowingSnapshots`, also ``snapshots``.
    public static func waiter(mismatchAction: SeccompAction = .killProcess, allowingSnapshots: Bool = false) -> SeccompFilter {
        SeccompFilter(allowing: common + diskIO + network + vsock + [kvmIoctls, .ioctl(type: UInt8(ascii: "T"))]
                          + ([.ioDestroy, .rtSigtimedwait, .mincore, .unlink] as [SystemCall]).map { SeccompRule($0) }
                          + (allowingSnapshots ? snapshots : []),
                      failing: failing, mismatchAction: mismatchAction)
    }
}

extension Machine {
    /// Installs ``MachineSystemCalls/waiter(mismatchAction:allowingSnapshots:)`` on the calling thread: call it
    /// from the thread that waits for the machine, after ``start(onVCPUReady:)``, when
    /// ``MachineConfiguration/systemCallFilter`` is set (otherwise it does nothing). Threads
    /// this thread creates afterwards inherit the filter. `allowingSnapshots` lets this
    /// thread (and those it makes) take snapshots, which creates files.
    public func restrictCallingThread(allowingSnapshots: Bool = false) throws(MachineError) {
        guard let action = configuration.systemCallFilter else { return }
        do {
            try MachineSystemCalls.waiter(mismatchAction: action, allowingSnapshots: allowingSnapshots).installOnCurrentThread()
        } catch {
            throw MachineError(.restrictSystemCalls, error)
        }
    }
}
