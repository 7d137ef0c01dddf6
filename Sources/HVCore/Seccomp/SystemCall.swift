/// A Linux system call on x86-64, by number (the ABI's, which never changes) and name.
///
/// Only the calls HVKit's threads make are named here; ``init(number:name:)`` names others.
public struct SystemCall: Hashable, Sendable, CustomStringConvertible {
    /// The x86-64 system call number (`__NR_*`).
    public let number: UInt32
    /// Its name, for errors and documentation.
    public let name: String

    /// The call with x86-64 number `number`, called `name`.
    public init(number: UInt32, name: String) {
        self.number = number
        self.name = name
    }

    /// The name and number.
    public var description: String { "\(name) (\(number))" }

    // File descriptors and I/O.
    /// `read`, number 0.
    public static let read = SystemCall(number: 0, name: "read")
    /// `write`, number 1.
    public static let write = SystemCall(number: 1, name: "write")
    /// `close`, number 3.
    public static let close = SystemCall(number: 3, name: "close")
    /// `fstat`, number 5.
    public static let fstat = SystemCall(number: 5, name: "fstat")
    /// `lseek`, number 8.
    public static let lseek = SystemCall(number: 8, name: "lseek")
    /// `ioctl`, number 16.
    public static let ioctl = SystemCall(number: 16, name: "ioctl")
    /// `pread64`, number 17.
    public static let pread64 = SystemCall(number: 17, name: "pread64")
    /// `pwrite64`, number 18.
    public static let pwrite64 = SystemCall(number: 18, name: "pwrite64")
    /// `readv`, number 19.
    public static let readv = SystemCall(number: 19, name: "readv")
    /// `writev`, number 20.
    public static let writev = SystemCall(number: 20, name: "writev")
    /// `fsync`, number 74.
    public static let fsync = SystemCall(number: 74, name: "fsync")
    /// `fdatasync`, number 75.
    public static let fdatasync = SystemCall(number: 75, name: "fdatasync")
    /// `newfstatat`, number 262.
    public static let newfstatat = SystemCall(number: 262, name: "newfstatat")
    /// `fallocate`, number 285.
    public static let fallocate = SystemCall(number: 285, name: "fallocate")
    /// `preadv`, number 295.
    public static let preadv = SystemCall(number: 295, name: "preadv")
    /// `pwritev`, number 296.
    public static let pwritev = SystemCall(number: 296, name: "pwritev")
    /// `preadv2`, number 327.
    public static let preadv2 = SystemCall(number: 327, name: "preadv2")
    /// `pwritev2`, number 328.
    public static let pwritev2 = SystemCall(number: 328, name: "pwritev2")
    // Memory.
    /// `mmap`, number 9.
    public static let mmap = SystemCall(number: 9, name: "mmap")
    /// `mprotect`, number 10.
    public static let mprotect = SystemCall(number: 10, name: "mprotect")
    /// `munmap`, number 11.
    public static let munmap = SystemCall(number: 11, name: "munmap")
    /// `brk`, number 12.
    public static let brk = SystemCall(number: 12, name: "brk")
    /// `mremap`, number 25.
    public static let mremap = SystemCall(number: 25, name: "mremap")
    /// `madvise`, number 28.
    public static let madvise = SystemCall(number: 28, name: "madvise")
    /// `mincore`, number 27.
    public static let mincore = SystemCall(number: 27, name: "mincore")
    // Signals.
    /// `rt_sigaction`, number 13.
    public static let rtSigaction = SystemCall(number: 13, name: "rt_sigaction")
    /// `rt_sigprocmask`, number 14.
    public static let rtSigprocmask = SystemCall(number: 14, name: "rt_sigprocmask")
    /// `rt_sigreturn`, number 15.
    public static let rtSigreturn = SystemCall(number: 15, name: "rt_sigreturn")
    /// `rt_sigtimedwait`, number 128.
    public static let rtSigtimedwait = SystemCall(number: 128, name: "rt_sigtimedwait")
    /// `sigaltstack`, number 131.
    public static let sigaltstack = SystemCall(number: 131, name: "sigaltstack")
    /// `tgkill`, number 234.
    public static let tgkill = SystemCall(number: 234, name: "tgkill")
    // Threads, time and scheduling.
    /// `sched_yield`, number 24.
    public static let schedYield = SystemCall(number: 24, name: "sched_yield")
    /// `nanosleep`, number 35.
    public static let nanosleep = SystemCall(number: 35, name: "nanosleep")
    /// `getpid`, number 39.
    public static let getpid = SystemCall(number: 39, name: "getpid")
    /// `clone`, number 56.
    public static let clone = SystemCall(number: 56, name: "clone")
    /// `exit`, number 60.
    public static let exit = SystemCall(number: 60, name: "exit")
    /// `prctl`, number 157.
    public static let prctl = SystemCall(number: 157, name: "prctl")
    /// `gettid`, number 186.
    public static let gettid = SystemCall(number: 186, name: "gettid")
    /// `futex`, number 202.
    public static let futex = SystemCall(number: 202, name: "futex")
    /// `sched_getaffinity`, number 204.
    public static let schedGetaffinity = SystemCall(number: 204, name: "sched_getaffinity")
    /// `restart_syscall`, number 219.
    public static let restartSyscall = SystemCall(number: 219, name: "restart_syscall")
    /// `clock_gettime`, number 228.
    public static let clockGettime = SystemCall(number: 228, name: "clock_gettime")
    /// `clock_nanosleep`, number 230.
    public static let clockNanosleep = SystemCall(number: 230, name: "clock_nanosleep")
    /// `exit_group`, number 231.
    public static let exitGroup = SystemCall(number: 231, name: "exit_group")
    /// `set_robust_list`, number 273.
    public static let setRobustList = SystemCall(number: 273, name: "set_robust_list")
    /// `getrandom`, number 318.
    public static let getrandom = SystemCall(number: 318, name: "getrandom")
    /// `rseq`, number 334.
    public static let rseq = SystemCall(number: 334, name: "rseq")
    /// `clone3`, number 435.
    public static let clone3 = SystemCall(number: 435, name: "clone3")
    // Event loop and asynchronous I/O.
    /// `timerfd_settime`, number 286.
    public static let timerfdSettime = SystemCall(number: 286, name: "timerfd_settime")
    /// `io_setup`, number 206.
    public static let ioSetup = SystemCall(number: 206, name: "io_setup")
    /// `io_destroy`, number 207.
    public static let ioDestroy = SystemCall(number: 207, name: "io_destroy")
    /// `io_getevents`, number 208.
    public static let ioGetevents = SystemCall(number: 208, name: "io_getevents")
    /// `io_submit`, number 209.
    public static let ioSubmit = SystemCall(number: 209, name: "io_submit")
    /// `io_uring_enter`, number 426.
    public static let ioUringEnter = SystemCall(number: 426, name: "io_uring_enter")
    /// `epoll_wait`, number 232.
    public static let epollWait = SystemCall(number: 232, name: "epoll_wait")
    /// `epoll_ctl`, number 233.
    public static let epollCtl = SystemCall(number: 233, name: "epoll_ctl")
    /// `epoll_pwait`, number 281.
    public static let epollPwait = SystemCall(number: 281, name: "epoll_pwait")
    // Network backends.
    /// `recvfrom`, number 45 (a stream backend peeks at a frame's length).
    public static let recvfrom = SystemCall(number: 45, name: "recvfrom")
    /// `sendmsg`, number 46 (frames to a socket, with MSG_NOSIGNAL).
    public static let sendmsg = SystemCall(number: 46, name: "sendmsg")
    // vsock's host sockets (Unix-domain only, by the filters' argument checks).
    /// `socket`, number 41: a connection to `<path>_<port>` for a guest's connect.
    public static let socket = SystemCall(number: 41, name: "socket")
    /// `connect`, number 42.
    public static let connect = SystemCall(number: 42, name: "connect")
    /// `shutdown`, number 48: the guest sends no more, so the host reads end of file.
    public static let shutdown = SystemCall(number: 48, name: "shutdown")
    /// `socketpair`, number 53: a guest connection to an in-process listener.
    public static let socketpair = SystemCall(number: 53, name: "socketpair")
    /// `unlink`, number 87: the vsock socket's file removed at shutdown.
    public static let unlink = SystemCall(number: 87, name: "unlink")
    /// `mkdir`, number 83: a snapshot's directory.
    public static let mkdir = SystemCall(number: 83, name: "mkdir")
    /// `eventfd2`, number 290: the wake-up a thread waits on while the event loop does its part of a snapshot.
    public static let eventfd2 = SystemCall(number: 290, name: "eventfd2")
    /// `poll`, number 7: that wait.
    public static let poll = SystemCall(number: 7, name: "poll")
    /// `ftruncate`, number 77: a sparse memory file's length.
    public static let ftruncate = SystemCall(number: 77, name: "ftruncate")
    /// `rename`, number 82: a snapshot's files moved into place.
    public static let rename = SystemCall(number: 82, name: "rename")
    /// `accept4`, number 288: a host program connecting to the vsock socket.
    public static let accept4 = SystemCall(number: 288, name: "accept4")
    // Calls HVKit never makes after setup, for tests and deny lists.
    /// `openat`, number 257.
    public static let openat = SystemCall(number: 257, name: "openat")
    /// `execve`, number 59.
    public static let execve = SystemCall(number: 59, name: "execve")
    /// `getppid`, number 110.
    public static let getppid = SystemCall(number: 110, name: "getppid")
}
