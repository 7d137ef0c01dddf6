import HVCore

/// ``HypercallNumber/netSend`` and ``HypercallNumber/netReceive``: Ethernet frames between the
/// guest and a ``FrameBackend``.
///
/// A frame is 14 to `mtu + 14` bytes (EINVAL below, EMSGSIZE above). A receive returns the
/// next frame's length, EAGAIN when none is waiting, or EMSGSIZE when the guest's buffer is
/// smaller than the frame; the frame then stays queued, so nothing is lost.
public final class NetService: ParavirtService {
    /// Bytes of an Ethernet header, the smallest frame accepted.
    public static let headerSize = 14
    /// Where frames go and come from.
    public let backend: any FrameBackend
    /// The guest's MAC address, reported in the info block.
    public let mac: [UInt8]
    /// The MTU, reported in the info block; larger frames are refused.
    public let mtu: UInt16
    /// A frame a receive could not deliver because the guest's buffer was too small.
    private let held = HeldFrame()

    /// A network over `backend` with this MAC address and MTU.
    public init(backend: any FrameBackend, mac: [UInt8] = [0x02, 0x48, 0x56, 0x4B, 0x00, 0x01], mtu: UInt16 = 1500) {
        self.backend = backend
        self.mac = Array(mac.prefix(6)) + [UInt8](repeating: 0, count: max(0, 6 - mac.count))
        self.mtu = mtu
    }

    /// What ``PollService`` watches for ``PollEvents/netReceive``.
    public var pollSource: PollService.Source { PollService.Source(events: .netReceive, descriptor: backend.readiness, isReady: { [held] in held.isHolding }) }

    /// Adds net_send and net_receive.
    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.net)
        table.info.mac = mac
        table.info.mtu = mtu
        let largest = Int(mtu) + Self.headerSize
        try table.register(.netSend, name: "net_send") { [backend] call throws(HypercallError) in
            let length = call.arguments.a1
            guard length >= UInt64(Self.headerSize) else { throw HypercallError(.invalid, "frame of \(length) bytes is shorter than an Ethernet header") }
            guard length <= UInt64(largest) else { throw HypercallError(.messageSize, "frame of \(length) bytes is over \(largest)") }
            let frame = try call.readBytes(at: call.address(0), count: Int(length))
            guard backend.send(frame) else { throw HypercallError(.again, "network backend dropped the frame") }
            return .count(frame.count)
        }
        try table.register(.netReceive, name: "net_receive") { [backend, held] call throws(HypercallError) in
            let capacity = call.arguments.a1
            guard let frame = held.take() ?? backend.receive() else { throw HypercallError(.again, "no frame waiting") }
            guard UInt64(frame.count) <= capacity else {
                held.put(frame)
                throw HypercallError(.messageSize, "buffer of \(capacity) bytes for a frame of \(frame.count)")
            }
            do throws(HypercallError) {
                try call.writeBytes(frame, to: call.address(0))
            } catch {
                held.put(frame)
                throw error
            }
            return .count(frame.count)
        }
    }
}

/// At most one frame put back by a failed receive; it goes out first next time.
private final class HeldFrame: Sendable {
    private let frame = Locked<[UInt8]?>(nil)
    func put(_ value: [UInt8]) { frame.withLock { $0 = value } }
    func take() -> [UInt8]? { frame.withLock { value in defer { value = nil }; return value } }
    var isHolding: Bool { frame.withLock { $0 != nil } }
}
