import Glibc
import HVCore
import Logging
import SystemPackage

/// virtio-vsock (virtio 1.2, section 5.10): stream sockets between the guest (its CID) and
/// host programs, with the hybrid Unix-socket protocol of Firecracker and Cloud Hypervisor.
///
/// - A host program connects to the device's Unix socket, writes `CONNECT <port>\n`, and
///   reads `OK <host port>\n` once a guest program listening on `<port>` accepted; then the
///   socket carries the stream. If nothing listens in the guest, the socket is closed.
/// - A guest program connecting to host port P reaches the Unix socket listening at
///   `<path>_<P>`, or an in-process listener for P (``listen(port:accept:)``); with neither,
///   the guest's connect is refused (RST).
/// - A program that links HVKit opens connections to guest ports with
///   ``connect(toGuestPort:timeout:)`` and accepts the guest's with ``listen(port:accept:)``,
///   without a socket path: it gets its end of a connected socket pair.
///
/// Every connection's host socket is served by the event loop (one-shot readiness): bytes from the
/// guest go to it as they come; bytes for the guest are read from it straight into the guest's
/// receive buffers, only while the guest has buffers and credit for them. Flow control is the
/// specification's credit: the device never sends more than the guest's advertised buffer
/// allows, and a guest that sends more than the device's buffer (``VsockLimits/bufferAllocation``,
/// 64 KiB) is reset, so a host reader that stops reading holds at most that much in the VMM.
public final class VsockDevice: VirtioDevice {
    /// The receive queue's index.
    public static let receiveQueue = 0
    /// The transmit queue's index.
    public static let transmitQueue = 1
    /// The event queue's index.
    public static let eventQueue = 2

    /// The guest's context ID, in the configuration space.
    public let guestCID: UInt64
    /// The Unix socket host programs connect to, if any.
    public var socketPath: String? { muxer.socketPath }
    /// The three queues' maximum sizes.
    public let queueMaxSizes: [UInt16]
    /// The transport's features (stream sockets need no feature bit).
    public let offeredFeatures = VirtioFeatures.transportDefaults
    /// Guest-caused events (malformed packets, refused connections), logged rate-limited and counted.
    public let guestEvents: GuestEventLog
    private let muxer: VsockMuxer

    /// - Parameters:
    ///   - guestCID: the guest's context ID: 3 or more, and below 2^32 − 1 (which means any).
    ///   - socketPath: where host programs connect (`CONNECT <port>`), and the prefix of the
    ///     sockets guest connections reach (`<path>_<port>`); nil for in-process connections
    ///     only. A socket file left there by an earlier process is replaced.
    ///   - eventLoop: where host sockets are served.
    ///   - limits: buffer, connection count and timeouts.
    ///   - queueSize: each queue's maximum size.
    ///   - logger: where refused packets and host socket failures are logged.
    /// - Throws: ``VsockError`` for a CID out of range or a socket that could not be set up.
    public init(guestCID: UInt64, socketPath: String? = nil, eventLoop: EventLoop, limits: VsockLimits = VsockLimits(),
                queueSize: UInt16 = 256, logger: Logger = Logger(label: "hvkit.virtio-vsock")) throws(VsockError) {
        guard guestCID >= 3, guestCID < UInt64(UInt32.max) else { throw .invalidGuestCID(guestCID) }
        self.guestCID = guestCID
        let maxSize = SplitQueue(maxSize: queueSize).maxSize
        queueMaxSizes = [maxSize, maxSize, maxSize]
        guestEvents = GuestEventLog(logger: logger)
        muxer = try VsockMuxer(guestCID: guestCID, socketPath: socketPath, limits: limits, eventLoop: eventLoop,
                               guestEvents: guestEvents, logger: logger)
    }

    /// ``VirtioDeviceType/vsock`` (19).
    public var deviceType: VirtioDeviceType { .vsock }

    /// struct virtio_vsock_config: guest_cid, little-endian.
    public var configuration: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: guestCID >> (8 * $0)) }
    }

    /// Takes the three queues.
    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let receive = try activation.queue(Self.receiveQueue)
        let transmit = try activation.queue(Self.transmitQueue)
        let events = try activation.queue(Self.eventQueue)
        muxer.start(receive: receive, transmit: transmit, events: events)
    }

    /// Receive buffers posted, packets queued, or event buffers posted.
    public func queueNotified(_ index: Int) {
        switch index {
        case Self.receiveQueue: muxer.receiveNotified()
        case Self.transmitQueue: muxer.transmitNotified()
        case Self.eventQueue: muxer.eventNotified()
        default: break
        }
    }

    /// Ends every connection (their host sockets close) and drops the queues; the Unix
    /// socket and in-process listeners stay.
    public func reset() {
        muxer.reset()
    }

    /// Closes the Unix socket, removes its file and ends every connection. The device serves
    /// nothing afterwards; called when it is released.
    public func close() {
        muxer.shutdown()
    }

    /// Ends every connection and tells the guest with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    /// (the driver then drops its sockets and reads the CID again): after a restore, when the
    /// host sockets behind the guest's connections are gone.
    public func resetTransport() {
        muxer.resetTransport()
    }

    // MARK: In-process connections

    /// Accepts the guest's connections to host port `port` in this process: `accept` gets
    /// the host end of each, a blocking connected stream socket that it owns (and closes), on
    /// the event loop's thread, so it must hand the socket on rather than serve it there.
    /// Takes precedence over a Unix socket at `<path>_<port>`.
    public func listen(port: UInt32, accept: @escaping @Sendable (FileDescriptor) -> Void) {
        muxer.listen(port: port, accept: accept)
    }

    /// Stops accepting connections to host port `port` in this process.
    public func stopListening(port: UInt32) {
        muxer.stopListening(port: port)
    }

    /// Opens a connection to guest port `port`; `completion` gets the host end (a blocking
    /// connected stream socket the caller owns) once the guest accepted, or why not. Called
    /// on whichever thread served the guest's answer, without the device's lock.
    public func connect(toGuestPort port: UInt32,
                        completion: @escaping @Sendable (Result<FileDescriptor, VsockConnectError>) -> Void) {
        muxer.connect(toGuestPort: port, completion: completion)
    }

    /// Opens a connection to guest port `port` and waits, at most `timeout`, for the guest to
    /// accept: the host end, a blocking connected stream socket the caller owns. Must not be
    /// called on the event loop's thread, which serves the answer.
    public func connect(toGuestPort port: UInt32, timeout: Duration = .seconds(5)) throws(VsockConnectError) -> FileDescriptor {
        let done: EventFD
        do { done = try EventFD(nonBlocking: true) } catch { throw .system(error) }
        let outcome = Locked<Result<FileDescriptor, VsockConnectError>?>(nil)
        muxer.connect(toGuestPort: port) { result in
            let taken = outcome.withLock { outcome -> Bool in
                guard outcome == nil else { return false }
                outcome = result
                return true
            }
            // An answer after the caller gave up: nobody will use the socket.
            if !taken, case let .success(descriptor) = result { Glibc.close(descriptor.rawValue) }
            try? done.signal()
        }
        let deadline = HostClock.monotonicDeadline(after: timeout)
        while true {
            let now = HostClock.monotonicNanoseconds()
            let result = outcome.withLock { outcome -> Result<FileDescriptor, VsockConnectError>? in
                if outcome == nil, now >= deadline { outcome = .failure(.timedOut) }
                return outcome
            }
            if let result { return try result.get() }
            var waiter = pollfd(fd: done.fileDescriptor.rawValue, events: Int16(POLLIN), revents: 0)
            _ = unsafe poll(&waiter, 1, Int32(clamping: (deadline - now) / 1_000_000 + 1))
        }
    }

    /// Connections open now, in any state.
    public var connectionCount: Int { muxer.connectionCount }

    /// Bytes from the guest that wait for each connection's host socket (which has not read
    /// them yet), by host port: never more than ``VsockLimits/bufferAllocation`` each.
    public var bufferedTowardsHost: [UInt32: Int] { muxer.bufferedTowardsHost }
}

/// The bounds a vsock device keeps.
public struct VsockLimits: Hashable, Sendable {
    /// Each connection's receive buffer, advertised to the guest as `buf_alloc`: what the
    /// guest may have in flight, and so what the VMM holds at most for a host reader that
    /// does not keep up. 64 KiB, as Firecracker and Linux use.
    public var bufferAllocation: UInt32
    /// Connections open at once; a guest request beyond it is refused with RST, a host client
    /// beyond it closed.
    public var maximumConnections: Int
    /// How long the guest has to answer a connection request (and a Unix-socket client to
    /// send its `CONNECT` line).
    public var requestTimeout: Duration
    /// How long the guest has to confirm a shutdown with RST, and a closed connection's host
    /// socket to take its last bytes.
    public var shutdownTimeout: Duration

    /// The defaults: 64 KiB, 256 connections, 2 s each (Firecracker's timeouts).
    public init(bufferAllocation: UInt32 = 64 << 10, maximumConnections: Int = 256,
                requestTimeout: Duration = .seconds(2), shutdownTimeout: Duration = .seconds(2)) {
        self.bufferAllocation = bufferAllocation
        self.maximumConnections = maximumConnections
        self.requestTimeout = requestTimeout
        self.shutdownTimeout = shutdownTimeout
    }
}

/// Why a vsock device could not be made.
public enum VsockError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The CID is reserved (0 to 2) or means any (2^32 − 1), or does not fit 32 bits.
    case invalidGuestCID(UInt64)
    /// The Unix socket at `path` failed at `step`.
    case socket(path: String, step: String, Errno)

    /// What went wrong.
    public var description: String {
        switch self {
        case let .invalidGuestCID(cid): "guest CID \(cid) is reserved or out of range (3 to 4294967294)"
        case let .socket(path, step, error): "vsock socket \(path): \(step) failed: \(error)"
        }
    }
}

/// Why an in-process connection to the guest did not open.
public enum VsockConnectError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The guest refused (RST): nothing listens on the port.
    case refused
    /// The guest did not answer in time.
    case timedOut
    /// As many connections as the limit allows are open.
    case connectionLimit(Int)
    /// The driver reset the device, or the transport was reset.
    case reset
    /// The device was closed.
    case closed
    /// A socket pair could not be made.
    case system(Errno)

    /// What went wrong.
    public var description: String {
        switch self {
        case .refused: "the guest refused the connection (nothing listens on the port)"
        case .timedOut: "the guest did not answer the connection request in time"
        case let .connectionLimit(limit): "the device has \(limit) connections open, its limit"
        case .reset: "the device or its transport was reset"
        case .closed: "the device is closed"
        case let .system(error): "no socket pair: \(error)"
        }
    }
}

/// A vsock device keeps its listeners and its Unix socket, which belong to the process that
/// runs it, and saves no connection: their host ends do not survive into another process. A
/// restored device tells the guest with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, so that its
/// driver drops the old sockets and reads the CID again; programs in the guest reconnect. The
/// device that goes on running keeps its connections.
extension VsockDevice: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Brings the device to rest for a snapshot: nothing in flight, nothing held.
    public func prepareSnapshot() throws(SnapshotError) {
        guard muxer.giveBackBuffers() else {
            throw .incompatible("virtio-vsock's buffers could not be given back to their queues")
        }
    }

    /// Takes back, after the snapshot, what ``prepareSnapshot()`` gave up.
    public func snapshotFinished() {
        muxer.retakeBuffers()
    }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {}

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        try decoder.expectEnd()
        muxer.resetTransport()
    }
}

