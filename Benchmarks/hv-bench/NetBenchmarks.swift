import CBenchBaseline
import Glibc
import HVCore
import HVDevices
import HVDevicesTesting

// virtio-net through the device's whole frame path on a real tap: a driver-side writer in
// this process lays out chains in guest memory, kicks the virtio-mmio transport and reaps the
// used ring, as a guest driver would but without guest instructions. The baseline is a C loop
// doing the same writev (transmit) or readv (receive) on the same tap, in the same run.

private let benchMAC: [UInt8] = [0x52, 0x54, 0x00, 0x77, 0x88, 0x99]

/// A virtio-net device on a configured tap behind the MMIO transport, with its driver.
final class NetBenchRig {
    static let frameBytes = 64 << 10
    static let slots = 32
    static let headers: UInt64 = 0x10000
    static let transmitData: UInt64 = 0x100000
    static let receiveData: UInt64 = 0x1000000
    static let receiveChainBytes = 65_600
    /// A tap's largest MTU: the host's datagrams then make frames of 65,535 bytes.
    static let hostMTU = 65_521
    static let receivedFrameBytes = hostMTU + 14

    let tap: ConfiguredTap
    let memory: GuestMemoryMmap
    let loop: EventLoop
    let device: NetDevice
    let mmio: MMIODriver
    var receiveQueue: DriverQueue
    var transmitQueue: DriverQueue

    init() throws {
        tap = try ConfiguredTap(guestMAC: benchMAC)
        let name = tap.backend.interfaceName
        // Frames of 64 KiB from the host (the receive figure), and no IPv6 chatter.
        for command in ["ip -n \(tap.namespace) link set \(name) mtu \(Self.hostMTU)",
                        "ip netns exec \(tap.namespace) sysctl -qw net.ipv6.conf.\(name).disable_ipv6=1"] {
            guard system(command + " >/dev/null 2>&1") == 0 else { throw BenchError.unexpected("'\(command)' failed") }
        }
        memory = try GuestMemoryMmap(size: 64 << 20)
        loop = try EventLoop(name: "bench-net")
        device = try NetDevice(backend: tap.backend, mac: benchMAC, queueSize: 256, eventLoop: loop)
        mmio = MMIODriver(transport: VirtioMMIOTransport(device: device, memory: memory, interruptLine: NoInterrupt()))
        receiveQueue = try DriverQueue(memory: memory, size: 256, base: GuestAddress(0x1000))
        transmitQueue = try DriverQueue(memory: memory, size: 256, base: GuestAddress(0x8000))
        mmio.initialize(queues: [receiveQueue, transmitQueue])
    }

    deinit { loop.shutdown() }

    /// A frame to 10.199.N.3, an address on the tap's subnet that is not the host's, so the
    /// host drops it at the IP layer (no forwarding) without segmenting or answering it.
    /// `segmented`: a 64 KiB TCP frame with TSO4; otherwise a plain 1514-byte frame.
    func frame(segmented: Bool) -> (header: NetHeader, bytes: [UInt8]) {
        let frame = EthernetFrames.tcp(from: benchMAC, to: tap.hostMAC, sourceAddress: tap.guestAddress,
                                       destinationAddress: [10, 199, tap.subnet, 3],
                                       payloadLength: (segmented ? Self.frameBytes - 14 : 1500) - 40, segmented: segmented)
        return (frame.header, frame.frame)
    }

    /// The pieces a Linux driver would post for one frame in slot `slot`: the header, then the
    /// frame's protocol headers, then 4 KiB pages.
    func pieces(slot: Int, frameLength: Int) -> [(address: GuestAddress, length: UInt32, writable: Bool)] {
        var buffers: [(address: GuestAddress, length: UInt32, writable: Bool)] = [(GuestAddress(Self.headers + UInt64(slot) * 16), 12, false)]
        let data = Self.transmitData + UInt64(slot * Self.frameBytes)
        var offset = 0
        while offset < frameLength {
            let length = offset == 0 ? min(54, frameLength) : min(4096, frameLength - offset)
            buffers.append((GuestAddress(data + UInt64(offset)), UInt32(length), false))
            offset += length
        }
        return buffers
    }

    /// Writes the frame into every slot.
    func prepare(_ frame: (header: NetHeader, bytes: [UInt8])) throws {
        for slot in 0..<Self.slots {
            try memory.write(frame.header.bytes, to: GuestAddress(Self.headers + UInt64(slot) * 16))
            try memory.write(frame.bytes, to: GuestAddress(Self.transmitData + UInt64(slot * Self.frameBytes)))
        }
    }

    /// Transmits `count` frames of `frameLength` bytes with all slots in flight; wall and CPU seconds.
    func transmit(count: Int, frameLength: Int) throws -> (wall: Double, cpu: Double) {
        let before = device.counts.transmittedFrames
        // Each slot's pieces made once, as a driver keeps its buffers; the descriptors are
        // written again for every frame.
        let slotPieces = (0..<Self.slots).map { pieces(slot: $0, frameLength: frameLength) }
        var slotOfHead = [Int](repeating: -1, count: Int(transmitQueue.size))
        var issued = 0
        let cpuStart = cpuSeconds()
        let start = nowNanoseconds()
        func issue(_ slot: Int) throws {
            slotOfHead[Int(try transmitQueue.addChain(slotPieces[slot]))] = slot
            issued += 1
        }
        let inFlight = min(framesInFlight(frameLength: frameLength), count)
        for slot in 0..<inFlight { try issue(slot) }
        mmio.notify(1)
        var completed = 0
        while completed < count {
            let used = try transmitQueue.takeUsed()
            if used.isEmpty { sched_yield(); continue }
            for element in used {
                let head = Int(element.id)
                guard head < slotOfHead.count, slotOfHead[head] >= 0 else {
                    throw BenchError.unexpected("the device used head \(element.id), which is not in flight")
                }
                let slot = slotOfHead[head]
                slotOfHead[head] = -1
                completed += 1
                if issued < count { try issue(slot) }
            }
            mmio.notify(1)
        }
        let result = ((nowNanoseconds() - start) / 1e9, cpuSeconds() - cpuStart)
        guard device.counts.transmittedFrames - before == UInt64(count) else {
            throw BenchError.unexpected("the tap took \(device.counts.transmittedFrames - before) of \(count) frames")
        }
        return result
    }

    /// As many chains in flight as the ring has descriptors for.
    func framesInFlight(frameLength: Int) -> Int {
        min(Self.slots, Int(transmitQueue.size) / pieces(slot: 0, frameLength: frameLength).count)
    }

    /// The C loop: the same pieces of the same slots' memory, in turn, one writev per frame.
    func hostTransmit(count: Int, frameLength: Int) throws -> (wall: Double, cpu: Double) {
        var vectors: [iovec] = []
        let slots = framesInFlight(frameLength: frameLength)
        for slot in 0..<slots {
            for piece in pieces(slot: slot, frameLength: frameLength) {
                let host = try memory.unsafeHostBuffers(at: piece.address, length: UInt64(piece.length), for: .read)
                vectors += host.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
            }
        }
        let cpuStart = cpuSeconds()
        let start = nowNanoseconds()
        let written = hvb_c_writev_frames(tap.backend.fileDescriptor.rawValue, vectors, Int32(vectors.count / slots), Int32(slots), count)
        guard written == count else { throw BenchError.unexpected("C writev loop: \(written)") }
        return ((nowNanoseconds() - start) / 1e9, cpuSeconds() - cpuStart)
    }

    /// Has the host send `count` UDP datagrams whose frames are 64 KiB to the guest's address:
    /// they wait in the tap's queue (up to its 500 frames) until read.
    func hostSends(_ count: Int) throws {
        let sender = try tap.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(sender) }
        var to = sockaddr_in()
        to.sin_family = sa_family_t(AF_INET)
        to.sin_port = UInt16(9).bigEndian
        to.sin_addr.s_addr = tap.guestAddress.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        let payload = [UInt8](repeating: 0x5A, count: Self.hostMTU - 28)
        for _ in 0..<count {
            let sent = withUnsafePointer(to: &to) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(sender, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard sent == payload.count else { throw BenchError.unexpected("sendto: errno \(errno)") }
        }
    }

    /// Posts `count` receive chains (one 64 KiB buffer each), then kicks the device and returns
    /// the seconds until the event loop filled the last from the frames waiting in the tap.
    /// The posting is not timed: it is the guest's work (a Linux driver fills its ring ahead),
    /// and the device takes nothing before the kick.
    func receive(count: Int) throws -> Double {
        let before = device.counts.receivedFrames
        for slot in 0..<count {
            try receiveQueue.addChain([(GuestAddress(Self.receiveData + UInt64(slot * Self.receiveChainBytes)), UInt32(Self.receiveChainBytes), true)])
        }
        let start = nowNanoseconds()
        mmio.notify(0)
        var received = 0
        while received < count {
            let used = try receiveQueue.takeUsed()
            if used.isEmpty { sched_yield(); continue }
            received += used.count
        }
        let seconds = (nowNanoseconds() - start) / 1e9
        guard device.counts.receivedFrames - before == UInt64(count), device.counts.droppedReceiveFrames == 0 else {
            throw BenchError.unexpected("received \(device.counts.receivedFrames - before) of \(count) frames")
        }
        return seconds
    }

    /// The C loop: readv of `count` waiting frames into as many 64 KiB buffers.
    func hostReceive(count: Int) throws -> Double {
        let buffers = try memory.unsafeHostBuffers(at: GuestAddress(Self.receiveData), length: UInt64(count * Self.receiveChainBytes), for: .write)
        guard let base = buffers.first?.baseAddress, buffers.count == 1 else { throw BenchError.unexpected("receive buffers not contiguous") }
        let start = nowNanoseconds()
        var read = 0
        while read < count {
            let vector = [iovec(iov_base: base + read * Self.receiveChainBytes, iov_len: Self.receiveChainBytes)]
            let done = hvb_c_readv_frames(tap.backend.fileDescriptor.rawValue, vector, 1, 1)
            guard done >= 0 else { throw BenchError.unexpected("C readv loop: \(done)") }
            read += done
        }
        return (nowNanoseconds() - start) / 1e9
    }
}

/// MiB/s of 64 KiB TSO frames from the driver through the device into the tap, vs the C writev loop.
func netTransmitFigure(rounds: Int) throws -> Figure {
    let rig = try NetBenchRig()
    let frame = rig.frame(segmented: true)
    try rig.prepare(frame)
    let count = 2000
    let mebibytes = Double(count * frame.bytes.count) / Double(1 << 20)
    _ = try rig.transmit(count: 200, frameLength: frame.bytes.count)
    var ours: [Double] = [], host: [Double] = []
    for _ in 0..<rounds {
        host.append(mebibytes / (try rig.hostTransmit(count: count, frameLength: frame.bytes.count).wall))
        ours.append(mebibytes / (try rig.transmit(count: count, frameLength: frame.bytes.count).wall))
    }
    let framesPerSecond = median(ours) * Double(1 << 20) / Double(frame.bytes.count)
    return Figure(name: "net_tx_64k", value: median(ours), baseline: median(host), unit: "MiB/s",
                  note: "64 KiB TCP/IPv4 TSO frames in 18 descriptors, 14 in flight, through virtio-mmio into a tap (\(Int(framesPerSecond)) frames/s) vs a C writev loop of the same pieces of the same 14 slots on the same tap")
}

/// MiB/s of 64 KiB frames from the tap through the device into posted buffers, vs the C readv loop.
func netReceiveFigure(rounds: Int) throws -> Figure {
    let rig = try NetBenchRig()
    let count = 250
    let mebibytes = Double(count * NetBenchRig.receivedFrameBytes) / Double(1 << 20)
    try rig.hostSends(count)
    _ = try rig.receive(count: count)
    var ours: [Double] = [], host: [Double] = []
    for _ in 0..<rounds {
        try rig.hostSends(count)
        host.append(mebibytes / (try rig.hostReceive(count: count)))
        try rig.hostSends(count)
        ours.append(mebibytes / (try rig.receive(count: count)))
    }
    let framesPerSecond = median(ours) * Double(1 << 20) / Double(NetBenchRig.receivedFrameBytes)
    return Figure(name: "net_rx_64k", value: median(ours), baseline: median(host), unit: "MiB/s",
                  note: "\(count) 64 KiB frames waiting in a tap, read by the event loop into posted buffers (\(Int(framesPerSecond)) frames/s) vs a C readv loop of the same frames")
}

/// CPU microseconds per plain 1514-byte frame on the transmit path, driver side included, vs one C writev.
func netCPUPerFrameFigure(rounds: Int) throws -> Figure {
    let rig = try NetBenchRig()
    let frame = rig.frame(segmented: false)
    try rig.prepare(frame)
    let count = 20_000
    _ = try rig.transmit(count: 1000, frameLength: frame.bytes.count)
    var ours: [Double] = [], host: [Double] = []
    for _ in 0..<rounds {
        host.append(try rig.hostTransmit(count: count, frameLength: frame.bytes.count).cpu / Double(count) * 1e6)
        ours.append(try rig.transmit(count: count, frameLength: frame.bytes.count).cpu / Double(count) * 1e6)
    }
    return Figure(name: "net_cpu_per_frame", value: median(ours), baseline: median(host), unit: "us",
                  note: "host CPU per 1514-byte frame transmitted through the device into a tap, driver side included, vs one C writev of the same slots; overhead \(format(median(ours) - median(host))) us")
}
