import CHVCoreShims
import Glibc
import Logging
import Synchronization
import SystemPackage

/// One host thread waiting in epoll for file descriptors to become readable, and calling a
/// handler for each one that does.
///
/// Device backends that wait run here: a virtqueue's ioeventfd (a guest kick that needed no
/// userspace exit), libaio's completion eventfd, a tap device. Handlers run on the loop's
/// thread one at a time, so they must not block; a handler that reads an eventfd must drain it
/// (the loop is level-triggered and calls it again while the descriptor stays readable).
public final class EventLoop: Sendable {
    /// Identifies one registration, for ``unregister(_:)``.
    public struct Registration: Hashable, Sendable {
        fileprivate let token: UInt64
        fileprivate let fileDescriptor: FileDescriptor
        fileprivate let events: UInt32
    }

    /// What a registration waits for.
    public struct Readiness: OptionSet, Hashable, Sendable {
        /// The raw flags.
        public let rawValue: UInt8
        /// Readiness from its raw flags.
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Data to read, end of file, or an error (EPOLLIN, EPOLLRDHUP).
        public static let readable = Readiness(rawValue: 1)
        /// Room to write (EPOLLOUT).
        public static let writable = Readiness(rawValue: 2)
    }

    private struct State {
        var handlers: [UInt64: @Sendable () -> Void] = [:]
        /// Work queued by ``submit(_:)`` for the loop's thread.
        var work: [@Sendable () -> Void] = []
        /// Work due at a CLOCK_MONOTONIC time (``schedule(after:_:)``), earliest first.
        var timers: [(deadline: UInt64, work: @Sendable () -> Void)] = []
        var nextToken: UInt64 = 1
        var thread: HostThread?
    }

    private static let wakeToken: UInt64 = 0
    private static let timerToken: UInt64 = UInt64.max

    private let epoll: FileDescriptor
    private let wake: EventFD
    /// One timerfd for every scheduled piece of work, armed for the earliest.
    private let timer: FileDescriptor
    private let stopping = Atomic<Bool>(false)
    private let state = Locked(State())
    private let logger: Logger

    /// Creates the loop and starts its thread, named `name`.
    public init(name: String = "hv-events", logger: Logger = Logger(label: "hvkit.eventloop")) throws(Errno) {
        let fd = hv_epoll_create()
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        epoll = FileDescriptor(rawValue: fd)
        do {
            wake = try EventFD(nonBlocking: true)
        } catch {
            close(fd)
            throw error
        }
        let timerFD = hv_timerfd_create()
        guard timerFD >= 0 else {
            let error = Errno(rawValue: errno)
            close(fd)
            throw error
        }
        timer = FileDescriptor(rawValue: timerFD)
        self.logger = logger
        guard hv_epoll_control(fd, HV_EPOLL_CTL_ADD, wake.fileDescriptor.rawValue, HV_EPOLLIN, Self.wakeToken) == 0,
              hv_epoll_control(fd, HV_EPOLL_CTL_ADD, timerFD, HV_EPOLLIN, Self.timerToken) == 0 else {
            let error = Errno(rawValue: errno)
            close(fd)
            close(timerFD)
            throw error
        }
        let thread = try HostThread(name: name) { [self] in run() }
        state.withLock { $0.thread = thread }
    }

    deinit {
        close(epoll.rawValue)
        close(timer.rawValue)
    }

    /// Calls `handler` on the loop's thread whenever `fileDescriptor` is readable (or reports
    /// an error or hang-up). The caller keeps the descriptor open until it unregisters it.
    @discardableResult
    public func register(
        _ fileDescriptor: FileDescriptor, handler: @escaping @Sendable () -> Void
    ) throws(Errno) -> Registration {
        try register(fileDescriptor, for: .readable, trigger: .level, handler: handler)
    }

    /// When a registration's handler is called.
    public enum Trigger: Hashable, Sendable {
        /// Whenever the descriptor is ready, again and again while it stays so: the handler
        /// must drain it or pause the registration.
        case level
        /// Once per change to ready (and once at registration if ready then): for an owner
        /// that keeps its own record of what is ready.
        case edge
        /// Once, after which the registration sleeps until ``EventLoop/rearm(_:for:)``: for an
        /// owner that wants to hear only when it has run out of what it knew was ready (a
        /// socket read until `EAGAIN`), so a busy peer does not wake the loop for every write.
        case oneShot
    }

    /// Calls `handler` on the loop's thread when `fileDescriptor` is ready as `readiness` says
    /// (an error or hang-up counts as readable), as `trigger` says. The handler is not told
    /// which readiness came; it tries what it has to do. The caller keeps the descriptor open
    /// until it unregisters it.
    @discardableResult
    public func register(
        _ fileDescriptor: FileDescriptor, for readiness: Readiness, trigger: Trigger,
        handler: @escaping @Sendable () -> Void
    ) throws(Errno) -> Registration {
        let events = Self.events(readiness, trigger)
        let token = state.withLock { state in
            let token = state.nextToken
            state.nextToken += 1
            state.handlers[token] = handler
            return token
        }
        guard hv_epoll_control(epoll.rawValue, HV_EPOLL_CTL_ADD, fileDescriptor.rawValue, events, token) == 0 else {
            let error = Errno(rawValue: errno)
            _ = state.withLock { $0.handlers.removeValue(forKey: token) }
            throw error
        }
        return Registration(token: token, fileDescriptor: fileDescriptor, events: events)
    }

    /// Arms a ``Trigger/oneShot`` registration again, for `readiness` (none: it stays asleep).
    /// Its handler is then called once, when the descriptor is ready that way (at once if it
    /// is already).
    public func rearm(_ registration: Registration, for readiness: Readiness) throws(Errno) {
        let events = readiness.isEmpty ? HV_EPOLLONESHOT : Self.events(readiness, .oneShot)
        guard hv_epoll_control(epoll.rawValue, HV_EPOLL_CTL_MOD, registration.fileDescriptor.rawValue, events, registration.token) == 0 else {
            throw Errno(rawValue: errno)
        }
    }

    private static func events(_ readiness: Readiness, _ trigger: Trigger) -> UInt32 {
        var events: UInt32 = 0
        if readiness.contains(.readable) { events |= HV_EPOLLIN | HV_EPOLLRDHUP }
        if readiness.contains(.writable) { events |= HV_EPOLLOUT }
        switch trigger {
        case .level: break
        case .edge: events |= HV_EPOLLET
        case .oneShot: events |= HV_EPOLLONESHOT
        }
        return events
    }

    /// Stops watching a descriptor. A call of its handler already under way on the loop's
    /// thread may still finish after this returns, unless this is called from that handler.
    public func unregister(_ registration: Registration) {
        _ = state.withLock { $0.handlers.removeValue(forKey: registration.token) }
        // The descriptor may already be closed, which removed it from the epoll set.
        _ = hv_epoll_control(epoll.rawValue, HV_EPOLL_CTL_DEL, registration.fileDescriptor.rawValue, 0, 0)
    }

    /// Pauses or resumes watching a registered descriptor, keeping its handler: for a
    /// backend that has nowhere to put what it would read (a network device whose guest posted
    /// no receive buffers), so the level-triggered loop does not call it again and again.
    /// A paused descriptor is out of the epoll set, so a hang-up does not call it either.
    /// Pausing or resuming twice is harmless. A call of its handler already under way may
    /// still finish after pausing.
    public func setWatching(_ registration: Registration, _ watching: Bool) throws(Errno) {
        let descriptor = registration.fileDescriptor.rawValue
        let result = watching
            ? hv_epoll_control(epoll.rawValue, HV_EPOLL_CTL_ADD, descriptor, registration.events, registration.token)
            : hv_epoll_control(epoll.rawValue, HV_EPOLL_CTL_DEL, descriptor, 0, 0)
        guard result == 0 else {
            let error = Errno(rawValue: errno)
            // Already in the set, or already out of it.
            if error == (watching ? .fileExists : .noSuchFileOrDirectory) { return }
            throw error
        }
    }

    /// The result of work queued with ``submit(_:)``, to wait for when it is needed.
    public final class Pending<Result: Sendable>: Sendable {
        fileprivate let result = Locked<Result?>(nil)
        fileprivate let done: EventFD
        /// Kept for its `stopping` flag; the loop drops queued work when it shuts down, which
        /// ends the cycle through the work's closure.
        private let loop: EventLoop

        fileprivate init(loop: EventLoop, done: EventFD) {
            self.loop = loop
            self.done = done
        }

        /// Waits until the work has run and returns its result (again on later calls); nil if
        /// the loop stopped before running it. Must not be called from one of the loop's
        /// handlers.
        public func wait() -> Result? {
            if let value = result.withLock({ $0 }) { return value }
            do {
                // A loop that stopped first never runs the work, so the wait wakes up now and
                // then to check; work that ran just before the loop stopped still gives its result.
                while try done.consume() == nil {
                    guard !loop.stopping.load(ordering: .acquiring) else { return result.withLock { $0 } }
                    var waiter = pollfd(fd: done.fileDescriptor.rawValue, events: Int16(POLLIN), revents: 0)
                    _ = unsafe poll(&waiter, 1, 50)
                }
            } catch {
                return nil
            }
            return result.withLock { $0 }
        }
    }

    /// Queues `work` for the loop's thread, to run between handlers, and returns at once: for
    /// what must happen on that thread (installing its seccomp filter, say) while the caller
    /// goes on with something else. ``Pending/wait()`` returns the result. Nil if the loop has
    /// stopped.
    public func submit<Result: Sendable>(_ work: @escaping @Sendable () -> Result) -> Pending<Result>? {
        guard !stopping.load(ordering: .acquiring), let done = try? EventFD(nonBlocking: true) else { return nil }
        let pending = Pending<Result>(loop: self, done: done)
        state.withLock { state in
            state.work.append {
                let value = work()
                pending.result.withLock { $0 = value }
                try? pending.done.signal()
            }
        }
        do { try wake.signal() } catch { return nil }
        return pending
    }

    /// Runs `work` on the loop's thread, between handlers, and returns its result: ``submit(_:)``
    /// and its wait in one call. Must not be called from a handler; nil if the loop has stopped.
    public func perform<Result: Sendable>(_ work: @escaping @Sendable () -> Result) -> Result? {
        submit(work)?.wait()
    }

    /// Runs `work` on the loop's thread once `delay` has passed (CLOCK_MONOTONIC), in deadline
    /// order: for what must wait without blocking a thread (a rate-limited request). Dropped
    /// if the loop stops first.
    public func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) {
        let deadline = HostClock.monotonicDeadline(after: delay)
        state.withLock { state in
            let index = state.timers.firstIndex { $0.deadline > deadline } ?? state.timers.endIndex
            state.timers.insert((deadline, work), at: index)
            // Re-armed whenever the earliest deadline changes (here, or after firing).
            if index == 0 { _ = hv_timerfd_arm_absolute(timer.rawValue, max(deadline, 1)) }
        }
    }

    /// Ends the loop's thread and waits for it. Registered handlers are dropped. Idempotent;
    /// must not be called from a handler.
    public func shutdown() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? wake.signal()
        let thread = state.withLock { state in
            state.handlers.removeAll()
            state.timers.removeAll()
            state.work.removeAll()
            return state.thread.take()
        }
        thread?.join()
    }

    private func runQueuedWork() {
        _ = try? wake.consume()
        let work = state.withLock { state in
            defer { state.work.removeAll() }
            return state.work
        }
        for item in work { item() }
    }

    private func runDueTimers() {
        var expirations: UInt64 = 0
        _ = unsafe Glibc.read(timer.rawValue, &expirations, 8)
        let now = HostClock.monotonicNanoseconds()
        let due = state.withLock { state -> [@Sendable () -> Void] in
            let count = state.timers.firstIndex { $0.deadline > now } ?? state.timers.endIndex
            let due = state.timers.prefix(count).map(\.work)
            state.timers.removeFirst(count)
            _ = hv_timerfd_arm_absolute(timer.rawValue, state.timers.first?.deadline ?? 0)
            return due
        }
        for work in due { work() }
    }

    private func run() {
        let capacity = 64
        var tokens = [UInt64](repeating: 0, count: capacity)
        var events = [UInt32](repeating: 0, count: capacity)
        while !stopping.load(ordering: .acquiring) {
            let count = unsafe tokens.withUnsafeMutableBufferPointer { tokenBuffer in
                unsafe events.withUnsafeMutableBufferPointer { eventBuffer in
                    unsafe hv_epoll_wait(epoll.rawValue, tokenBuffer.baseAddress, eventBuffer.baseAddress, Int32(capacity), -1)
                }
            }
            if count < 0 {
                if errno == EINTR { continue }
                logger.error("epoll_wait failed; the event loop stops", metadata: ["errno": "\(Errno(rawValue: errno))"])
                return
            }
            for index in 0..<Int(count) {
                guard tokens[index] != Self.wakeToken else {
                    runQueuedWork()
                    continue
                }
                guard tokens[index] != Self.timerToken else {
                    runDueTimers()
                    continue
                }
                let handler = state.withLock { $0.handlers[tokens[index]] }
                handler?()
            }
        }
    }
}
