import Glibc
import HVCore
import HVDevices

/// The guest driver's side of a virtio-vsock device, without a guest: it sets the device up
/// through its MMIO transport, keeps receive buffers posted, sends packets (well-formed or
/// not) and collects what the device sends back. For device tests and benchmarks.
///
/// Guest memory is laid out from `base`: the three rings, then `queueSize / 2` receive buffers
/// of ``receiveBufferSize`` bytes, then room for one transmitted packet of up to 64 KiB.
/// Packets are sent one at a time: the device completes a transmit chain before the
/// notification returns.
public final class VsockDriver {
    /// The device driven.
    public let device: VsockDevice
    /// Its transport.
    public let transport: VirtioMMIOTransport
    /// The transport's registers, as a driver writes them.
    public let mmio: MMIODriver
    /// The memory the rings and buffers live in.
    public let memory: any GuestMemory
    /// Each receive buffer's size (a header and 4 KiB of data, as Linux posts them).
    public let receiveBufferSize: UInt32
    /// The guest's CID (from the configuration space).
    public var guestCID: UInt64 { device.guestCID }

    private var receiveQueue: DriverQueue
    private var transmitQueue: DriverQueue
    private var eventQueue: DriverQueue
    private let receiveArea: GuestAddress
    private let transmitArea: GuestAddress
    private let eventArea: GuestAddress
    private let receiveBufferCount: Int
    private var postedReceiveBuffers = 0
    private var postedEventBuffers = 0

    /// Sets `device` up behind a new MMIO transport in `memory`, with all three queues of
    /// `queueSize`, and posts the receive and event buffers.
    /// - Parameters:
    ///   - device: the device.
    ///   - memory: guest memory with at least 1 MiB from `base`.
    ///   - interruptLine: the transport's interrupt line.
    ///   - base: where the rings and buffers go.
    ///   - queueSize: each queue's size (at most 64, so that the layout fits in 1 MiB).
    ///   - receiveBufferSize: each receive buffer's size.
    public init(device: VsockDevice, memory: any GuestMemory, interruptLine: any InterruptLine, base: GuestAddress = GuestAddress(0x10000),
                queueSize: UInt16 = 64, receiveBufferSize: UInt32 = UInt32(VsockHeader.size) + 4096) throws {
        self.device = device
        self.memory = memory
        self.receiveBufferSize = receiveBufferSize
        transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: interruptLine)
        mmio = MMIODriver(transport: transport)
        let ringBytes: UInt64 = 0x2000
        receiveQueue = try DriverQueue(memory: memory, size: queueSize, base: base)
        transmitQueue = try DriverQueue(memory: memory, size: queueSize, base: GuestAddress(base.rawValue + ringBytes))
        eventQueue = try DriverQueue(memory: memory, size: queueSize, base: GuestAddress(base.rawValue + 2 * ringBytes))
        eventArea = GuestAddress(base.rawValue + 3 * ringBytes)
        receiveArea = GuestAddress(base.rawValue + 4 * ringBytes)
        receiveBufferCount = Int(queueSize) / 2
        transmitArea = GuestAddress(receiveArea.rawValue + UInt64(receiveBufferCount) * UInt64((receiveBufferSize + 0xFFF) & ~0xFFF))
        mmio.initialize(queues: [receiveQueue, transmitQueue, eventQueue])
        try postReceiveBuffers()
        try postEventBuffers(4)
    }

    /// The same driver, its rings and buffers as they are, going on with `device` behind
    /// `transport`: how a guest goes on after its machine was restored from a snapshot.
    public init(continuing driver: VsockDriver, device: VsockDevice, transport: VirtioMMIOTransport) {
        self.device = device
        self.transport = transport
        mmio = MMIODriver(transport: transport)
        memory = driver.memory
        receiveBufferSize = driver.receiveBufferSize
        receiveQueue = driver.receiveQueue
        transmitQueue = driver.transmitQueue
        eventQueue = driver.eventQueue
        receiveArea = driver.receiveArea
        transmitArea = driver.transmitArea
        eventArea = driver.eventArea
        receiveBufferCount = driver.receiveBufferCount
        postedReceiveBuffers = driver.postedReceiveBuffers
        postedEventBuffers = driver.postedEventBuffers
    }

    /// Whether the device asked for a reset (DEVICE_NEEDS_RESET).
    public var needsReset: Bool { mmio.status.contains(.needsReset) }

    // MARK: Sending

    /// Sends one packet: `header` (with `len` as given, unless `fixLength`) and `data`,
    /// in two readable descriptors (one when `data` is empty).
    public func send(_ header: VsockHeader, data: [UInt8] = [], fixLength: Bool = true) throws {
        var header = header
        if fixLength { header.length = UInt32(data.count) }
        let dataAddress = GuestAddress(transmitArea.rawValue + 0x100)
        try memory.write(header.bytes, to: transmitArea)
        var buffers: [(address: GuestAddress, length: UInt32, writable: Bool)] = [(transmitArea, UInt32(VsockHeader.size), false)]
        if !data.isEmpty {
            try memory.write(data, to: dataAddress)
            buffers.append((dataAddress, UInt32(data.count), false))
        }
        try sendChain(buffers)
    }

    /// Sends several packets with one notification, as a driver with much to send does: each
    /// a header and its data (`len` set to the data's size) in two readable descriptors, laid
    /// out one after another in the transmit area. At most `queueSize / 2` packets.
    public func send(batch packets: [(header: VsockHeader, data: [UInt8])]) throws {
        var address = transmitArea.rawValue
        for (header, data) in packets {
            var header = header
            header.length = UInt32(data.count)
            let headerAddress = GuestAddress(address)
            let dataAddress = GuestAddress(address + UInt64(VsockHeader.size))
            try memory.write(header.bytes, to: headerAddress)
            var buffers: [(address: GuestAddress, length: UInt32, writable: Bool)] = [(headerAddress, UInt32(VsockHeader.size), false)]
            if !data.isEmpty {
                try memory.write(data, to: dataAddress)
                buffers.append((dataAddress, UInt32(data.count), false))
            }
            try transmitQueue.addChain(buffers)
            address += (UInt64(VsockHeader.size + data.count) + 63) & ~63
        }
        mmio.notify(UInt32(VsockDevice.transmitQueue))
        _ = try transmitQueue.takeUsed()
    }

    /// Sends a chain of any shape (for hostile tests); the buffers' contents are the caller's.
    public func sendChain(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)]) throws {
        try transmitQueue.addChain(buffers)
        mmio.notify(UInt32(VsockDevice.transmitQueue))
        _ = try transmitQueue.takeUsed()
    }

    /// A stream packet from guest port `guestPort` to host port `hostPort`, carrying the
    /// guest's credit (`bufferAllocation`, `forwardCount`).
    public func header(_ operation: VsockHeader.Operation, from guestPort: UInt32, to hostPort: UInt32, flags: UInt32 = 0,
                       bufferAllocation: UInt32 = 64 << 10, forwardCount: UInt32 = 0) -> VsockHeader {
        VsockHeader(from: (guestCID, guestPort), to: (VsockConnection.hostCID, hostPort), operation: operation, flags: flags,
                    bufferAllocation: bufferAllocation, forwardCount: forwardCount)
    }

    /// The host area where ``send(_:data:fixLength:)`` puts a packet: for hostile chains built
    /// by hand.
    public var scratch: GuestAddress { transmitArea }

    // MARK: Receiving

    /// The packets the device delivered since the last call, in order, with their data; the
    /// buffers they used are posted again.
    public func receive() throws -> [(header: VsockHeader, data: [UInt8])] {
        var packets: [(header: VsockHeader, data: [UInt8])] = []
        for used in try receiveQueue.takeUsed() {
            let address = receiveBufferAddress(Int(used.id) % receiveBufferCount)
            let bytes = try memory.readBytes(at: address, count: Int(min(used.length, receiveBufferSize)))
            guard let header = VsockHeader(bytes: bytes) else { throw VsockDriverError.shortPacket(used.length) }
            packets.append((header, Array(bytes.dropFirst(VsockHeader.size))))
            postedReceiveBuffers -= 1
        }
        try postReceiveBuffers()
        return packets
    }

    /// The headers of the packets the device delivered since the last call, without copying
    /// their data (as a driver whose reader takes the bytes in place); the buffers they used
    /// are posted again. For benchmarks.
    public func receiveHeaders() throws -> [VsockHeader] {
        var headers: [VsockHeader] = []
        for used in try receiveQueue.takeUsed() {
            let address = receiveBufferAddress(Int(used.id) % receiveBufferCount)
            // Decoded from a stack copy, as a driver reads a header in place: no array each.
            let decoded = used.length >= UInt32(VsockHeader.size)
                ? try unsafe withUnsafeTemporaryAllocation(byteCount: VsockHeader.size, alignment: 8) { copy in
                    unsafe try memory.read(into: copy, from: address)
                    return unsafe VsockHeader(loading: UnsafeRawBufferPointer(copy))
                }
                : nil
            guard let header = decoded else { throw VsockDriverError.shortPacket(used.length) }
            headers.append(header)
            postedReceiveBuffers -= 1
        }
        try postReceiveBuffers()
        return headers
    }

    /// Waits up to `seconds` for packets, collecting them until `enough` says so; returns all
    /// collected (possibly not enough, if time ran out).
    public func receive(for seconds: Double = 20, until enough: ([(header: VsockHeader, data: [UInt8])]) -> Bool)
        throws -> [(header: VsockHeader, data: [UInt8])] {
        var packets: [(header: VsockHeader, data: [UInt8])] = []
        let deadline = HostClock.monotonicDeadline(after: .milliseconds(Int64(seconds * 1000)))
        while true {
            packets += try receive()
            if enough(packets) || HostClock.monotonicNanoseconds() > deadline { return packets }
            usleep(200)
        }
    }

    /// Posts receive buffers until `queueSize / 2` are outstanding (or only `limit` more).
    public func postReceiveBuffers(limit: Int? = nil) throws {
        var posted = 0
        while postedReceiveBuffers < receiveBufferCount, posted < limit ?? .max {
            // One-descriptor chains, used in order: descriptor slots and buffers cycle together.
            let slot = Int(receiveQueue.nextDescriptor) % receiveBufferCount
            try receiveQueue.addChain([(receiveBufferAddress(slot), receiveBufferSize, true)])
            postedReceiveBuffers += 1
            posted += 1
        }
        if posted > 0 { mmio.notify(UInt32(VsockDevice.receiveQueue)) }
    }

    private func receiveBufferAddress(_ slot: Int) -> GuestAddress {
        GuestAddress(receiveArea.rawValue + UInt64(slot) * UInt64((receiveBufferSize + 0xFFF) & ~0xFFF))
    }

    // MARK: Events

    /// Posts `count` event buffers (4 bytes each).
    public func postEventBuffers(_ count: Int) throws {
        for _ in 0..<count {
            let address = GuestAddress(eventArea.rawValue + UInt64(eventQueue.nextDescriptor) * 8)
            try eventQueue.addChain([(address, 4, true)])
            postedEventBuffers += 1
        }
        mmio.notify(UInt32(VsockDevice.eventQueue))
    }

    /// The event IDs the device reported since the last call (0 is TRANSPORT_RESET).
    public func events() throws -> [UInt32] {
        try eventQueue.takeUsed().map { used in
            try memory.read(UInt32.self, at: GuestAddress(eventArea.rawValue + UInt64(used.id) * 8))
        }
    }
}

/// What the vsock driver found wrong in what the device sent.
public enum VsockDriverError: Error, CustomStringConvertible {
    /// A used receive buffer shorter than a header.
    case shortPacket(UInt32)

    /// What was wrong.
    public var description: String {
        switch self {
        case let .shortPacket(length): "the device used a receive buffer for \(length) bytes, less than a header"
        }
    }
}
