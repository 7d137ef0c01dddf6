import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
let peerMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF]

/// A frame of `length` bytes (at least an Ethernet header) whose payload is a function of its
/// offset and `seed`, so a misplaced byte shows.
func testFrame(length: Int, seed: UInt8 = 0) -> [UInt8] {
    guestMAC + peerMAC + [0x88, 0xB5] + (14..<max(length, 14)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
}

/// A virtio-net device on one end of an in-process link, behind the MMIO transport, with a
/// driver; the test plays the other end of the link.
final class NetRig {
    let memory: GuestMemoryMmap
    let loop: EventLoop
    let device: NetDevice
    let transport: VirtioMMIOTransport
    let mmio: MMIODriver
    let peer: PairedNetBackend
    var receiveQueue: DriverQueue
    var transmitQueue: DriverQueue
    /// Where each posted receive chain's buffer is, by head.
    private(set) var receiveBuffers: [UInt16: GuestAddress] = [:]
    private var nextReceiveBuffer = GuestAddress(0x20000)
    private var usedReceive: [(id: UInt32, length: UInt32)] = []

    init(mtu: UInt16 = 1500, features: VirtioFeatures? = nil, budget: NotificationBudget = .default,
         backend: (any NetBackend)? = nil, receiveRateLimit: RateLimiter? = nil, transmitRateLimit: RateLimiter? = nil) throws {
        memory = try testMemory()
        loop = try EventLoop(name: "net-test")
        let (near, far) = try PairedNetBackend.makePair()
        peer = far
        device = try NetDevice(backend: backend ?? near, mac: guestMAC, mtu: mtu, queueSize: 64, eventLoop: loop,
                               notificationBudget: budget, receiveRateLimit: receiveRateLimit, transmitRateLimit: transmitRateLimit)
        transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
        mmio = MMIODriver(transport: transport)
        receiveQueue = try DriverQueue(memory: memory, size: 64, base: GuestAddress(0x1000))
        transmitQueue = try DriverQueue(memory: memory, size: 64, base: GuestAddress(0x4000))
        mmio.initialize(queues: [receiveQueue, transmitQueue], features: features)
    }

    deinit { loop.shutdown() }

    var needsReset: Bool { mmio.status.contains(.needsReset) }

    /// Posts `count` receive chains of one `size`-byte buffer each and notifies.
    @discardableResult
    func postReceiveBuffers(_ count: Int, size: UInt32 = 1526, notify: Bool = true) throws -> [UInt16] {
        var heads: [UInt16] = []
        for _ in 0..<count {
            let address = nextReceiveBuffer
            nextReceiveBuffer = GuestAddress(address.rawValue + UInt64(size + 63) & ~63)
            try memory.fill(0xEE, at: address, length: UInt64(size))
            let head = try receiveQueue.addChain([(address, size, true)])
            receiveBuffers[head] = address
            heads.append(head)
        }
        if notify { mmio.notify(UInt32(NetDevice.receiveQueue)) }
        return heads
    }

    /// The other end (or `other`, the end of another link) sends `frame` with `header` in front.
    func peerSend(_ frame: [UInt8], header: NetHeader = NetHeader(), through other: PairedNetBackend? = nil) throws {
        var bytes = header.bytes + frame
        let end = other ?? peer
        let sent = try bytes.withUnsafeMutableBytes { buffer in
            let vector = [iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)]
            return try vector.withUnsafeBufferPointer { try end.transmit($0) }
        }
        try #require(sent)
    }

    /// The next frame the device sent to the other end (or to `other`, the end of another
    /// link), header included, waiting a while.
    func peerReceive(from other: PairedNetBackend? = nil) throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 70_000)
        var received: Int?
        let end = other ?? peer
        _ = try waitUntil {
            received = try buffer.withUnsafeMutableBytes { raw in
                let vector = [iovec(iov_base: raw.baseAddress, iov_len: raw.count)]
                return try vector.withUnsafeBufferPointer { try end.receive(into: $0) }
            }
            return received != nil
        }
        return received.map { Array(buffer.prefix($0)) }
    }

    /// Whether the other end has a frame waiting, without taking it.
    var peerHasFrame: Bool {
        var probe = pollfd(fd: peer.fileDescriptor.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&probe, 1, 0) == 1
    }

    /// Waits until the device has used `count` receive chains in all, and returns them all.
    func waitForReceived(_ count: Int) throws -> [(id: UInt32, length: UInt32)] {
        _ = try waitUntil {
            usedReceive += try receiveQueue.takeUsed()
            return usedReceive.count >= count
        }
        return usedReceive
    }

    /// What the device wrote into receive chain `head`: `length` bytes.
    func contents(ofReceiveChain head: UInt32, length: UInt32) throws -> [UInt8] {
        let address = try #require(receiveBuffers[UInt16(head)])
        return try memory.readBytes(at: address, count: Int(length))
    }

    /// Queues `frame` with `header` for transmission, the frame split into `pieces` readable
    /// descriptors, notifies, and waits for the chain to be used.
    @discardableResult
    func transmit(_ frame: [UInt8], header: NetHeader = NetHeader(), pieces: Int = 1,
                  extra: [(address: GuestAddress, length: UInt32, writable: Bool)] = []) throws -> UInt32 {
        let base = GuestAddress(2 << 20)
        try memory.write(header.bytes, to: base)
        try memory.write(frame, to: GuestAddress(base.rawValue + 0x100))
        var buffers: [(address: GuestAddress, length: UInt32, writable: Bool)] = [(base, UInt32(NetHeader.size), false)]
        let pieceSize = (frame.count + pieces - 1) / max(pieces, 1)
        var offset = 0
        while offset < frame.count {
            let length = min(pieceSize, frame.count - offset)
            buffers.append((GuestAddress(base.rawValue + 0x100 + UInt64(offset)), UInt32(length), false))
            offset += length
        }
        try transmitQueue.addChain(buffers + extra)
        mmio.notify(UInt32(NetDevice.transmitQueue))
        var used: [(id: UInt32, length: UInt32)] = []
        _ = try waitUntil { used += try transmitQueue.takeUsed(); return !used.isEmpty || needsReset }
        return try #require(used.first).length
    }
}

@Suite("virtio-net")
struct NetDeviceTests {
    @Test func offersWhatTheSpecificationAndTheBackendAllow() throws {
        let rig = try NetRig(mtu: 9000)
        let offered = rig.mmio.offeredFeatures
        #expect(offered.isSuperset(of: [.version1, .netMAC, .netMTU, .netStatus, .netMergeableReceiveBuffers, .eventIndex]))
        // The in-process link carries plain frames: no offloads offered.
        #expect(offered.isDisjoint(with: [.netChecksum, .netGuestChecksum, .netHostTSO4, .netGuestTSO4, .netHostUFO]))
        #expect(rig.device.deviceType == .network)
        let configuration = rig.device.configuration
        #expect(Array(configuration.prefix(6)) == guestMAC)
        #expect(configuration[6] == 1 && configuration[7] == 0, "link up")
        #expect(UInt16(configuration[10]) | UInt16(configuration[11]) << 8 == 9000)
    }

    @Test(arguments: [60, 64, 100, 1000, 1514])
    func transmitsAFrameGatheredFromItsChain(length: Int) throws {
        let rig = try NetRig()
        let frame = testFrame(length: length, seed: 3)
        #expect(try rig.transmit(frame, pieces: 3) == 0)
        let sent = try #require(try rig.peerReceive())
        #expect(sent == NetHeader().bytes + frame)
        #expect(rig.device.counts.transmittedFrames == 1 && rig.device.counts.transmittedBytes == UInt64(length))
    }

    /// More frames in one notification than a transmit batch holds: each full batch is written
    /// before the next is gathered, every frame goes out once, in order, and every chain
    /// comes back. A malformed frame among them is dropped without holding up the rest.
    @Test func oneNotificationOfMoreFramesThanABatchSendsThemAllInOrder() throws {
        let rig = try NetRig()
        let count = TransmitBatch.capacity + 8
        for index in 0..<count {
            let address = GuestAddress((2 << 20) + UInt64(index) * 0x200)
            let length = index == 5 ? 4 : 60 + index
            try rig.memory.write(NetHeader().bytes + testFrame(length: length, seed: UInt8(index)).prefix(length), to: address)
            try rig.transmitQueue.addChain([(address, UInt32(NetHeader.size + length), false)])
        }
        rig.mmio.notify(UInt32(NetDevice.transmitQueue))
        for index in 0..<count where index != 5 {
            #expect(try rig.peerReceive() == NetHeader().bytes + testFrame(length: 60 + index, seed: UInt8(index)), "frame \(index)")
        }
        #expect(!rig.peerHasFrame)
        #expect(try rig.transmitQueue.takeUsed().count == count)
        #expect(rig.device.counts.transmittedFrames == UInt64(count - 1) && rig.device.counts.droppedTransmitFrames == 1)
    }

    @Test func transmitSendsTheCheckedHeaderNotTheGuestsBytes() throws {
        let rig = try NetRig()
        var header = NetHeader()
        header.flags = NetHeader.dataValid
        header.bufferCount = 7
        header.checksumStart = 99
        try rig.transmit(testFrame(length: 100), header: header)
        let sent = try #require(try rig.peerReceive())
        let forwarded = try #require(NetHeader(bytes: sent))
        #expect(forwarded.flags == 0 && forwarded.bufferCount == 0)
    }

    @Test func receivesFramesIntoSeparateBuffersWithoutMergeableBuffers() throws {
        let offered = try NetRig().mmio.offeredFeatures
        let rig = try NetRig(features: offered.subtracting(.netMergeableReceiveBuffers))
        try rig.postReceiveBuffers(4)
        let frames = [60, 1514, 200].enumerated().map { testFrame(length: $1, seed: UInt8($0)) }
        for frame in frames { try rig.peerSend(frame) }
        let used = try rig.waitForReceived(3)
        try #require(used.count == 3)
        for (entry, frame) in zip(used, frames) {
            #expect(entry.length == UInt32(NetHeader.size + frame.count))
            let bytes = try rig.contents(ofReceiveChain: entry.id, length: entry.length)
            #expect(NetHeader(bytes: bytes)?.bufferCount == 1)
            #expect(Array(bytes.dropFirst(NetHeader.size)) == frame)
        }
        #expect(rig.device.counts.receivedFrames == 3)
    }

    /// A 9000-byte frame over 1526-byte buffers under MRG_RXBUF: six chains in order, the
    /// header's num_buffers says so, and the chains left over take the next frame.
    @Test func mergeableBuffersSplitAJumboFrame() throws {
        let rig = try NetRig(mtu: 9000)
        try rig.postReceiveBuffers(8)
        let frame = testFrame(length: 9000, seed: 9)
        try rig.peerSend(frame)
        var used = try rig.waitForReceived(6)
        try #require(used.count == 6)
        #expect(used.map(\.length) == [1526, 1526, 1526, 1526, 1526, 9012 - 5 * 1526])
        var bytes: [UInt8] = []
        for entry in used { bytes += try rig.contents(ofReceiveChain: entry.id, length: entry.length) }
        #expect(NetHeader(bytes: bytes)?.bufferCount == 6)
        #expect(Array(bytes.dropFirst(NetHeader.size)) == frame)
        // The two chains left wait until more are posted to cover a largest frame again.
        try rig.peerSend(testFrame(length: 100))
        try rig.postReceiveBuffers(6)
        used = try rig.waitForReceived(7)
        #expect(used.count == 7 && used[6].length == 112)
        #expect(try NetHeader(bytes: rig.contents(ofReceiveChain: used[6].id, length: 12))?.bufferCount == 1)
    }

    /// A header that straddles a chain's buffers gets num_buffers across them: bytes 10 and 11
    /// of a chain of 7-, 4- and 1515-byte buffers, apart in memory, are in the second and third.
    @Test func numBuffersIsWrittenAcrossBuffersTheHeaderStraddles() throws {
        let rig = try NetRig(mtu: 9000)
        let pieces: [UInt32] = [7, 4, 1515]
        var chains: [UInt16: [(GuestAddress, UInt32)]] = [:]
        for chain in 0..<8 {
            var buffers: [(GuestAddress, UInt32)] = []
            for (index, length) in pieces.enumerated() {
                let address = GuestAddress((2 << 20) + 0x40000 + UInt64(chain) * 0x2000 + UInt64(index) * 0x800)
                try rig.memory.fill(0xEE, at: address, length: UInt64(length))
                buffers.append((address, length))
            }
            chains[try rig.receiveQueue.addChain(buffers.map { ($0.0, $0.1, true) })] = buffers
        }
        rig.mmio.notify(UInt32(NetDevice.receiveQueue))
        let frame = testFrame(length: 9000, seed: 3)
        try rig.peerSend(frame)
        let used = try rig.waitForReceived(6)
        try #require(used.count == 6)
        var bytes: [UInt8] = []
        for entry in used {
            var left = Int(entry.length)
            for (address, length) in try #require(chains[UInt16(entry.id)]) where left > 0 {
                bytes += try rig.memory.readBytes(at: address, count: min(left, Int(length)))
                left -= Int(length)
            }
        }
        #expect(NetHeader(bytes: bytes)?.bufferCount == 6)
        #expect(Array(bytes.dropFirst(NetHeader.size)) == frame)
    }

    /// Without MRG_RXBUF a frame larger than the buffer is dropped and counted; the buffer is
    /// kept for the next frame, which fits.
    @Test func aFrameThatDoesNotFitIsDroppedAndItsBufferKept() throws {
        let offered = try NetRig().mmio.offeredFeatures
        let rig = try NetRig(mtu: 9000, features: offered.subtracting(.netMergeableReceiveBuffers))
        try rig.postReceiveBuffers(1)
        try rig.peerSend(testFrame(length: 4000))
        try rig.peerSend(testFrame(length: 500, seed: 1))
        let used = try rig.waitForReceived(1)
        #expect(used.count == 1 && used[0].length == 512)
        #expect(try rig.contents(ofReceiveChain: used[0].id, length: 512).dropFirst(12).elementsEqual(testFrame(length: 500, seed: 1)))
        #expect(rig.device.counts.droppedReceiveFrames == 1)
    }

    /// With no receive buffers the device stops reading: frames wait in the backend, none is
    /// lost, and the event loop is not watching (no spinning); buffers bring them in order.
    @Test func framesWaitForBuffersWithoutLossOrSpinning() throws {
        let rig = try NetRig()
        for index in 0..<5 { try rig.peerSend(testFrame(length: 100 + index, seed: UInt8(index))) }
        usleep(20_000)
        #expect(rig.device.counts.receivedFrames == 0)
        #expect(!rig.device.isWatchingBackend)
        // Two chains of 1526 do not cover a largest frame under MRG_RXBUF: still waiting.
        try rig.postReceiveBuffers(1)
        usleep(20_000)
        #expect(rig.device.counts.receivedFrames == 0 && !rig.device.isWatchingBackend)
        try rig.postReceiveBuffers(5)
        let used = try rig.waitForReceived(5)
        #expect(used.map(\.length) == (0..<5).map { UInt32(112 + $0) })
        // One chain left, too little: not watching again.
        _ = waitUntil { !rig.device.isWatchingBackend }
        #expect(!rig.device.isWatchingBackend)
        #expect(rig.device.counts.droppedReceiveFrames == 0)
    }

    /// A flood larger than one budget arrives whole: the device comes back for the rest.
    @Test func aFloodIsDeliveredInBudgets() throws {
        let rig = try NetRig(budget: NotificationBudget(chains: 4, timeSlice: nil))
        try rig.postReceiveBuffers(40)
        for index in 0..<30 { try rig.peerSend(testFrame(length: 60, seed: UInt8(index))) }
        let used = try rig.waitForReceived(30)
        #expect(used.count == 30)
        for (index, entry) in used.enumerated() {
            #expect(try rig.contents(ofReceiveChain: entry.id, length: entry.length).dropFirst(12).elementsEqual(testFrame(length: 60, seed: UInt8(index))))
        }
    }

    @Test func twoDevicesOnOneLinkExchangeFrames() throws {
        let (left, right) = try PairedNetBackend.makePair()
        let a = try NetRig(backend: left)
        let b = try NetRig(backend: right)
        try b.postReceiveBuffers(8)
        let frame = EthernetFrames.udp(from: guestMAC, to: peerMAC, sourceAddress: [10, 0, 0, 1], destinationAddress: [10, 0, 0, 2],
                                       sourcePort: 7, destinationPort: 9, payload: Array("hello, link".utf8))
        try a.transmit(frame)
        let used = try b.waitForReceived(1)
        try #require(used.count == 1)
        let bytes = try b.contents(ofReceiveChain: used[0].id, length: used[0].length)
        #expect(EthernetFrames.udpDatagram(in: Array(bytes.dropFirst(12)))?.payload == Array("hello, link".utf8))
    }

    @Test func resetStopsReadingAndAFreshDriverGetsTheWaitingFrames() throws {
        let rig = try NetRig()
        try rig.postReceiveBuffers(8)
        rig.mmio.setStatus([])
        #expect(!rig.device.isWatchingBackend)
        try rig.peerSend(testFrame(length: 80))
        usleep(20_000)
        #expect(rig.device.counts.receivedFrames == 0)
        rig.receiveQueue = try DriverQueue(memory: rig.memory, size: 64, base: GuestAddress(0x1000))
        rig.transmitQueue = try DriverQueue(memory: rig.memory, size: 64, base: GuestAddress(0x4000))
        rig.mmio.initialize(queues: [rig.receiveQueue, rig.transmitQueue])
        try rig.postReceiveBuffers(8)
        #expect(try rig.waitForReceived(1).first?.length == 92)
    }
}

/// Hostile drivers: every wrong shape is refused without a completion that could pass for a
/// delivered frame, and without touching memory outside guest RAM.
@Suite("virtio-net hostile")
struct NetDeviceHostileTests {
    @Test func aReceiveChainWithReadableBuffersBreaksTheQueue() throws {
        let rig = try NetRig()
        try rig.receiveQueue.addChain([(GuestAddress(0x20000), 100, false), (GuestAddress(0x21000), 1526, true)])
        rig.mmio.notify(0)
        #expect(rig.needsReset)
        #expect(try rig.receiveQueue.takeUsed().isEmpty)
    }

    @Test func aReceiveChainTooSmallForTheHeaderBreaksTheQueue() throws {
        let rig = try NetRig()
        try rig.receiveQueue.addChain([(GuestAddress(0x20000), 11, true)])
        rig.mmio.notify(0)
        #expect(rig.needsReset)
        #expect(try rig.receiveQueue.takeUsed().isEmpty)
    }

    @Test(arguments: [holeAddress, GuestAddress(UInt64.max - 100), readOnlyAddress])
    func aReceiveBufferOutsideWritableRAMBreaksTheQueue(address: GuestAddress) throws {
        let rig = try NetRig()
        try rig.receiveQueue.addChain([(address, 1526, true)])
        rig.mmio.notify(0)
        #expect(rig.needsReset)
        try rig.peerSend(testFrame(length: 60))
        usleep(10_000)
        #expect(rig.device.counts.receivedFrames == 0)
    }

    @Test func aLoopingReceiveChainBreaksTheQueue() throws {
        let rig = try NetRig()
        try rig.receiveQueue.writeDescriptor(0, Descriptor(address: 0x20000, length: 1526, flags: [.write, .next], next: 1))
        try rig.receiveQueue.writeDescriptor(1, Descriptor(address: 0x21000, length: 1526, flags: [.write, .next], next: 0))
        try rig.receiveQueue.publish(0)
        rig.mmio.notify(0)
        #expect(rig.needsReset)
    }

    /// Transmit frames the device must not pass on: each is dropped, counted and completed
    /// with used length 0; the other end receives nothing.
    @Test(arguments: ["csum-not-negotiated", "tso-not-negotiated", "runt", "too-long", "writable", "unknown-gso", "no-header"])
    func malformedTransmitFramesAreDropped(shape: String) throws {
        let rig = try NetRig()
        var header = NetHeader()
        var frame = testFrame(length: 100)
        var extra: [(address: GuestAddress, length: UInt32, writable: Bool)] = []
        switch shape {
        case "csum-not-negotiated":
            header.flags = NetHeader.needsChecksum
            header.checksumStart = 34
            header.checksumOffset = 6
        case "tso-not-negotiated":
            header.flags = NetHeader.needsChecksum
            header.segmentationType = NetHeader.Segmentation.tcpIPv4.rawValue
            header.segmentSize = 1448
        case "runt": frame = Array(frame.prefix(13))
        case "too-long": frame = testFrame(length: 1519)
        case "writable": extra = [(GuestAddress(0x30000), 64, true)]
        case "unknown-gso": header.segmentationType = 2
        default: frame = []
        }
        if shape == "no-header" {
            try rig.transmitQueue.addChain([(GuestAddress(2 << 20), 11, false)])
            rig.mmio.notify(1)
            _ = try waitUntil { try rig.transmitQueue.usedIndex == 1 }
            #expect(try rig.transmitQueue.takeUsed().first?.length == 0)
        } else {
            #expect(try rig.transmit(frame, header: header, extra: extra) == 0)
        }
        #expect(!rig.needsReset)
        usleep(10_000)
        #expect(!rig.peerHasFrame)
        #expect(rig.device.counts.droppedTransmitFrames == 1 && rig.device.counts.transmittedFrames == 0)
        // The queue still works.
        try rig.transmit(testFrame(length: 60))
        #expect(try rig.peerReceive()?.count == 72)
    }

    @Test func aTransmitBufferOutsideRAMBreaksTheQueue() throws {
        let rig = try NetRig()
        try rig.transmitQueue.addChain([(GuestAddress(2 << 20), 12, false), (holeAddress, 100, false)])
        rig.mmio.notify(1)
        #expect(rig.needsReset)
        #expect(!rig.peerHasFrame)
    }

    /// A driver that queues more than a notification's budget cannot hold the notified thread
    /// beyond it: one notification takes at most the budget.
    @Test func oneTransmitNotificationTakesAtMostItsBudget() throws {
        let rig = try NetRig(budget: NotificationBudget(chains: 8, timeSlice: nil))
        try rig.memory.write(NetHeader().bytes + testFrame(length: 60), to: GuestAddress(2 << 20))
        for head in 0..<UInt16(40) {
            try rig.transmitQueue.writeDescriptor(head, Descriptor(address: 2 << 20, length: 72, flags: []))
            try rig.transmitQueue.publish(head)
        }
        rig.device.queueNotified(NetDevice.transmitQueue)
        #expect(rig.device.counts.transmittedFrames == 8)
        #expect(try rig.transmitQueue.takeUsed().count == 8)
    }

    /// A driver that posts a chain again before the device gave it back breaks the queue: its
    /// frame is gathered, not yet written, so the head is still the device's. The first
    /// posting was well formed, and its frame goes out.
    @Test func aTransmitHeadPostedTwiceBreaksTheQueue() throws {
        let rig = try NetRig()
        try rig.memory.write(NetHeader().bytes + testFrame(length: 60), to: GuestAddress(2 << 20))
        try rig.transmitQueue.writeDescriptor(0, Descriptor(address: 2 << 20, length: 72, flags: []))
        for _ in 0..<40 { try rig.transmitQueue.publish(0) }
        rig.device.queueNotified(NetDevice.transmitQueue)
        #expect(rig.needsReset)
        #expect(rig.device.counts.transmittedFrames == 1)
        #expect(try rig.peerReceive() == NetHeader().bytes + testFrame(length: 60))
    }
}

@Suite("virtio-net notifications")
struct NetNotificationTests {
    /// With EVENT_IDX the device asks for the next kick on each queue once it has served
    /// what was there (avail_event), so a driver keeps kicking.
    @Test func eachQueueAsksForTheNextKick() throws {
        let rig = try NetRig()
        #expect(rig.transport.negotiatedFeatures.contains(.eventIndex))
        try rig.transmit(testFrame(length: 60))
        let event = try rig.transmitQueue.availEvent, used = try rig.transmitQueue.usedIndex
        #expect(event == rig.transmitQueue.availableIndex, "avail event \(event), used idx \(used)")
        try rig.transmit(testFrame(length: 61))
        #expect(try rig.transmitQueue.availEvent == rig.transmitQueue.availableIndex)
        try rig.postReceiveBuffers(2)
        #expect(try rig.receiveQueue.availEvent == rig.receiveQueue.availableIndex)
    }
}

extension NetNotificationTests {
    /// Kicks through the queues' eventfds (as KVM's ioeventfds deliver them), on the event loop.
    @Test func kicksThroughNotifiersReachBothQueues() throws {
        let rig = try NetRig()
        let notifiers = try rig.transport.attachNotifiers(on: rig.loop)
        defer { rig.transport.detachNotifiers(notifiers, from: rig.loop) }
        let transmit = try #require(notifiers.first { $0.queueIndex == NetDevice.transmitQueue })
        for index in 0..<3 {
            try rig.memory.write(NetHeader().bytes + testFrame(length: 60 + index), to: GuestAddress((2 << 20) + UInt64(index) * 0x1000))
            try rig.transmitQueue.addChain([(GuestAddress((2 << 20) + UInt64(index) * 0x1000), UInt32(72 + index), false)])
            try transmit.eventFD.signal()
            #expect(try rig.peerReceive()?.count == 72 + index)
        }
        // The event loop's thread adds its batch to the counters after the frame went out.
        #expect(waitUntil { rig.device.counts.transmittedFrames == 3 })
    }
}

/// Rate limits on each direction, with a clock the test steps: a frame without tokens waits
/// (it is never dropped) until the event loop's timer finds them.
@Suite("virtio-net rate limits")
struct NetRateLimitTests {
    /// Two operations at once, then one per half second.
    static func twoFramesThenWait(_ clock: SteppedClock) -> RateLimiter {
        RateLimiter(RateLimit(operations: .init(size: 2, refillTime: .seconds(1))), clock: clock)
    }

    @Test func transmitFramesBeyondTheLimitWaitInOrder() throws {
        let clock = SteppedClock()
        let rig = try NetRig(transmitRateLimit: Self.twoFramesThenWait(clock))
        for index in 0..<3 {
            try rig.memory.write(NetHeader().bytes + testFrame(length: 60, seed: UInt8(index)), to: GuestAddress((2 << 20) + UInt64(index) * 0x1000))
            try rig.transmitQueue.addChain([(GuestAddress((2 << 20) + UInt64(index) * 0x1000), 72, false)])
        }
        rig.mmio.notify(1)
        #expect(try rig.peerReceive() == NetHeader().bytes + testFrame(length: 60, seed: 0))
        #expect(try rig.peerReceive() == NetHeader().bytes + testFrame(length: 60, seed: 1))
        usleep(50_000)
        #expect(!rig.peerHasFrame, "the third frame went out without tokens")
        #expect(try rig.transmitQueue.takeUsed().count == 2)
        clock.now.store(600_000_000, ordering: .relaxed)
        #expect(try rig.peerReceive() == NetHeader().bytes + testFrame(length: 60, seed: 2))
        _ = try waitUntil { try rig.transmitQueue.usedIndex == 3 }
        #expect(try rig.transmitQueue.usedIndex == 3)
        #expect(rig.device.counts.droppedTransmitFrames == 0)
    }

    @Test func receivedFramesBeyondTheLimitWaitUnannounced() throws {
        let clock = SteppedClock()
        let rig = try NetRig(receiveRateLimit: Self.twoFramesThenWait(clock))
        try rig.postReceiveBuffers(8)
        for index in 0..<3 { try rig.peerSend(testFrame(length: 80, seed: UInt8(index))) }
        #expect(try rig.waitForReceived(2).count == 2)
        usleep(50_000)
        #expect(try rig.receiveQueue.usedIndex == 2, "the third frame was announced without tokens")
        clock.now.store(600_000_000, ordering: .relaxed)
        let used = try rig.waitForReceived(3)
        try #require(used.count == 3)
        #expect(try rig.contents(ofReceiveChain: used[2].id, length: used[2].length).dropFirst(12).elementsEqual(testFrame(length: 80, seed: 2)))
        #expect(rig.device.counts.droppedReceiveFrames == 0)
    }
}
