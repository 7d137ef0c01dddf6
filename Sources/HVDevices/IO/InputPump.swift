import Glibc
import HVCore
import Logging
import SystemPackage

/// Reads a host file descriptor (a terminal, a pipe, a socket) on an `EventLoop` into a
/// bounded buffer that a device drains at the guest's pace.
///
/// When the buffer is full the pump stops watching the descriptor, so a guest that never reads
/// costs neither memory nor a busy loop; ``take(_:)`` resumes it. At end of input it stops for
/// good.
public final class InputPump: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        var registration: EventLoop.Registration?
        var ended = false
        var stopped = false
    }

    /// The descriptor read.
    public let fileDescriptor: FileDescriptor
    /// The most bytes held for the guest.
    public let capacity: Int
    private let loop: EventLoop
    private let state = Locked(State())
    private let onInput: @Sendable () -> Void
    private let logger: Logger

    /// Starts watching `fileDescriptor` (which the caller keeps open). `onInput` runs on the
    /// loop's thread after new bytes arrive.
    public init(fileDescriptor: FileDescriptor, eventLoop: EventLoop, capacity: Int = 4096,
                logger: Logger = Logger(label: "hvkit.input"), onInput: @escaping @Sendable () -> Void) throws(Errno) {
        self.fileDescriptor = fileDescriptor
        self.capacity = max(capacity, 1)
        loop = eventLoop
        self.onInput = onInput
        self.logger = logger
        try watch()
    }

    /// Bytes waiting for the guest.
    public var availableCount: Int { state.withLock { $0.buffer.count } }
    /// Whether the descriptor reached end of file or failed.
    public var hasEnded: Bool { state.withLock { $0.ended } }

    /// Takes up to `count` waiting bytes, resuming the pump if it had paused.
    public func take(_ count: Int) -> [UInt8] {
        let (bytes, resume) = state.withLock { state -> ([UInt8], Bool) in
            let taken = Array(state.buffer.prefix(max(count, 0)))
            state.buffer.removeFirst(taken.count)
            return (taken, state.registration == nil && !state.ended && !state.stopped && state.buffer.count < capacity)
        }
        if resume { try? watch() }
        return bytes
    }

    /// Stops watching the descriptor for good.
    public func stop() {
        let registration = state.withLock { state in
            state.stopped = true
            return state.registration.take()
        }
        if let registration { loop.unregister(registration) }
    }

    private func watch() throws(Errno) {
        let registration = try loop.register(fileDescriptor) { [weak self] in self?.readAvailable() }
        let keep = state.withLock { state -> Bool in
            guard state.registration == nil, !state.stopped else { return false }
            state.registration = registration
            return true
        }
        if !keep { loop.unregister(registration) }
    }

    private func readAvailable() {
        var chunk = [UInt8](repeating: 0, count: 1024)
        let room = state.withLock { capacity - $0.buffer.count }
        guard room > 0 else {
            // Full: stop watching until take() makes room (a zero-length read would look like EOF).
            if let registration = state.withLock({ $0.registration.take() }) { loop.unregister(registration) }
            return
        }
        let got = unsafe chunk.withUnsafeMutableBytes { unsafe read(fileDescriptor.rawValue, $0.baseAddress, min(room, $0.count)) }
        if got < 0, errno == EINTR || errno == EAGAIN { return }
        let pause = state.withLock { state -> EventLoop.Registration? in
            if got > 0 { state.buffer += chunk[..<got] }
            if got <= 0 { state.ended = true }
            return state.ended || state.buffer.count >= capacity ? state.registration.take() : nil
        }
        if let pause { loop.unregister(pause) }
        if got < 0 { logger.warning("input descriptor failed; no more input", metadata: ["errno": "\(Errno(rawValue: errno))"]) }
        if got > 0 { onInput() }
    }
}
