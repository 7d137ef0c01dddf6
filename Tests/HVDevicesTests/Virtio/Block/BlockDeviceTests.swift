import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Synchronization
import Testing

enum BackendKind: String, CaseIterable, CustomTestStringConvertible {
    case sync, aio, uring
    var testDescription: String { rawValue }
}

private let headerAddress = GuestAddress(0x8000)
private let dataAddress = GuestAddress(0x10000)
private let status = GuestAddress(0x9000)

/// A virtio-blk device on a temporary file behind the MMIO transport, with a driver.
final class BlockRig {
    let file: ScratchFile
    let memory: GuestMemoryMmap
    let loop: EventLoop
    let device: BlockDevice
    let transport: VirtioMMIOTransport
    let mmio: MMIODriver
    var queue: DriverQueue

    init(_ kind: BackendKind, sectors: Int = 64, readOnly: Bool = false, cacheMode: BlockCacheMode = .writeback,
         rateLimit: RateLimit? = nil, backend: ((DiskImage) -> any BlockBackend)? = nil) throws {
        // Each byte a function of its offset, so a misplaced read shows.
        file = try ScratchFile(size: sectors * 512) { UInt8(truncatingIfNeeded: $0 / 512 &+ $0) }
        memory = try testMemory()
        loop = try EventLoop(name: "blk-test")
        let disk = try DiskImage(path: file.path, readOnly: readOnly, cacheMode: cacheMode)
        let chosen: any BlockBackend
        if let backend {
            chosen = backend(disk)
        } else {
            switch kind {
            case .sync: chosen = SyncBlockBackend(disk: disk)
            case .aio: chosen = try AIOBlockBackend(disk: disk, eventLoop: loop, depth: 64)
            case .uring: chosen = try UringBlockBackend(disk: disk, eventLoop: loop, depth: 64)
            }
        }
        device = BlockDevice(backend: chosen, identifier: "hvkit-test-disk", queueSize: 128,
                             rateLimiter: rateLimit.map { RateLimiter($0) }, eventLoop: loop)
        transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
        mmio = MMIODriver(transport: transport)
        // 128 entries: room for 32 three-descriptor chains at once.
        queue = try DriverQueue(memory: memory, size: 128)
        mmio.initialize(queues: [queue])
    }

    deinit { loop.shutdown() }

    /// Writes a request header at `at` and returns its buffer.
    func header(type: UInt32, sector: UInt64, at address: GuestAddress = headerAddress) throws -> (address: GuestAddress, length: UInt32, writable: Bool) {
        try VirtioBlockRequest.writeHeader(rawType: type, sector: sector, at: address, in: memory)
    }

    /// Submits one chain, notifies, waits for it to be used and returns (used length, status byte).
    @discardableResult
    func run(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], statusAt: GuestAddress = status) throws -> (length: UInt32, status: UInt8) {
        try memory.write(UInt8(0xEE), at: statusAt)
        try queue.addChain(buffers)
        mmio.notify(0)
        var used: [(id: UInt32, length: UInt32)] = []
        _ = try waitUntil { used += try queue.takeUsed(); return !used.isEmpty }
        try #require(used.count == 1, "the request was not completed")
        return (used[0].length, try memory.read(UInt8.self, at: statusAt))
    }

    var statusBuffer: (address: GuestAddress, length: UInt32, writable: Bool) { (status, 1, true) }
}

@Suite("virtio-blk")
struct BlockDeviceTests {
    @Test(arguments: BackendKind.allCases)
    func readsSectorsIntoGuestMemory(kind: BackendKind) throws {
        let rig = try BlockRig(kind)
        let result = try rig.run([try rig.header(type: 0, sector: 3), (dataAddress, 1024, true), rig.statusBuffer])
        #expect(result.length == 1025 && result.status == 0)
        #expect(try rig.memory.readBytes(at: dataAddress, count: 1024) == Array(try rig.file.contents()[1536..<2560]))
    }

    @Test(arguments: BackendKind.allCases)
    func writesSectorsFromGuestMemory(kind: BackendKind) throws {
        let rig = try BlockRig(kind)
        try rig.memory.fill(0x5A, at: dataAddress, length: 512)
        try rig.memory.fill(0xA5, at: GuestAddress(0x20000), length: 512)
        let result = try rig.run([try rig.header(type: 1, sector: 10), (dataAddress, 512, false), (GuestAddress(0x20000), 512, false), rig.statusBuffer])
        #expect(result.length == 1 && result.status == 0)
        let contents = try rig.file.contents()
        #expect(contents[5120..<5632].allSatisfy { $0 == 0x5A })
        #expect(contents[5632..<6144].allSatisfy { $0 == 0xA5 })
    }

    @Test(arguments: BackendKind.allCases)
    func flushSucceeds(kind: BackendKind) throws {
        let rig = try BlockRig(kind)
        #expect(rig.transport.negotiatedFeatures.contains(.blockFlush))
        #expect(try rig.run([try rig.header(type: 4, sector: 0), rig.statusBuffer]).status == 0)
    }

    @Test func getIDReturnsTheSerial() throws {
        let rig = try BlockRig(.sync)
        let result = try rig.run([try rig.header(type: 8, sector: 0), (dataAddress, 20, true), rig.statusBuffer])
        #expect(result.length == 21 && result.status == 0)
        #expect(try rig.memory.readBytes(at: dataAddress, count: 15) == Array("hvkit-test-disk".utf8))
    }

    @Test(arguments: BackendKind.allCases)
    func discardAndWriteZeroesClearSectors(kind: BackendKind) throws {
        let rig = try BlockRig(kind)
        for (type, sector) in [(UInt32(11), UInt64(4)), (13, 8)] {
            try rig.memory.write(sector, at: GuestAddress(0xB000))
            try rig.memory.write(UInt32(2), at: GuestAddress(0xB008))
            try rig.memory.write(UInt32(0), at: GuestAddress(0xB00C))
            #expect(try rig.run([try rig.header(type: type, sector: 0), (GuestAddress(0xB000), 16, false), rig.statusBuffer]).status == 0)
        }
        let contents = try rig.file.contents()
        #expect(contents.count == 64 * 512)
        #expect(contents[2048..<3072].allSatisfy { $0 == 0 })
        #expect(contents[4096..<5120].allSatisfy { $0 == 0 })
        #expect(contents[3072..<4096].contains { $0 != 0 })
    }

    @Test func configurationReportsCapacityAndLimits() throws {
        let rig = try BlockRig(.sync, sectors: 100)
        let capacity = rig.transport.read(offset: 0x100, width: .doubleWord) | rig.transport.read(offset: 0x104, width: .doubleWord) << 32
        #expect(capacity == 100)
        #expect(rig.transport.read(offset: 0x100 + 20, width: .doubleWord) == 512)
        #expect(rig.transport.read(offset: 0x100 + 34, width: .word) == 1)
        #expect(rig.transport.read(offset: 0x100 + 60, width: .byte) == 0)
        #expect(rig.transport.refusedAccessCount == 1)
    }

    @Test(arguments: [BackendKind.aio, .uring])
    func manyRequestsStayInFlight(engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        let count = 32
        for index in 0..<count {
            let headerAddress = GuestAddress(0x8000 + UInt64(index) * 32)
            let statusAddress = GuestAddress(0xC000 + UInt64(index))
            try rig.memory.write(UInt8(0xEE), at: statusAddress)
            try rig.queue.addChain([
                try rig.header(type: 0, sector: UInt64(index), at: headerAddress),
                (GuestAddress(0x20000 + UInt64(index) * 4096), 4096 - 512, true),
                (statusAddress, 1, true),
            ])
        }
        rig.mmio.notify(0)
        var used: [(id: UInt32, length: UInt32)] = []
        #expect(try waitUntil { used += try rig.queue.takeUsed(); return used.count == count })
        #expect(used.allSatisfy { $0.length == 4096 - 512 + 1 }, "\(used)")
        #expect(try rig.memory.readBytes(at: GuestAddress(0xC000), count: count).allSatisfy { $0 == 0 })
        #expect(rig.device.pendingCount == 0)
    }

    @Test(arguments: [BackendKind.aio, .uring])
    func resetWaitsForRequestsInFlight(engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        for index in 0..<16 {
            try rig.queue.addChain([
                try rig.header(type: 0, sector: UInt64(index), at: GuestAddress(0x8000 + UInt64(index) * 32)),
                (GuestAddress(0x20000 + UInt64(index) * 512), 512, true),
                (GuestAddress(0xC000 + UInt64(index)), 1, true),
            ])
        }
        rig.mmio.notify(0)
        rig.mmio.setStatus([])
        #expect(rig.device.pendingCount == 0)
        #expect((rig.device.backend as? AIOBlockBackend)?.pendingCount ?? (rig.device.backend as? UringBlockBackend)?.pendingCount == 0)
    }
}

/// Collects completion statuses.
final class StatusCollector: BlockCompletionSink {
    private let collected = Locked<[BlockStatus]>([])
    var statuses: [BlockStatus] { collected.withLock { $0 } }
    func blockOperationsCompleted(_ completions: [BlockCompletion]) { collected.withLock { $0 += completions.map(\.status) } }
}

/// A backend whose every operation fails, as a disk with a dying host file system would.
final class FailingBackend: BlockBackend {
    struct WeakSink { weak var sink: (any BlockCompletionSink)? }
    // Weak, as the real backends hold it: the device owns its backend.
    let sink = Locked(WeakSink())
    var capacity: UInt64 { 1 << 20 }
    var isReadOnly: Bool { false }
    var cacheMode: BlockCacheMode { .writeback }
    var supportsDiscard: Bool { true }
    func setCompletionSink(_ sink: any BlockCompletionSink) { self.sink.withLock { $0.sink = sink } }
    func submit(_ requests: [BlockRequest]) {
        sink.withLock { $0.sink }?.blockOperationsCompleted(requests.map { BlockCompletion(token: $0.token, status: .ioError) })
    }
    func drain() {}
}

@Suite("virtio-blk: hostile and failing requests")
struct BlockDeviceHostileTests {
    @Test(arguments: [
        (UInt32(0), UInt64(64)),  // read at the first sector past the end
        (0, 63),  // read that starts inside and runs past the end
        (1, 64),  // write past the end
        (0, UInt64.max),  // sector * 512 overflows
        (0, UInt64.max / 512),  // offset fits, offset + length does not
    ] as [(UInt32, UInt64)], BackendKind.allCases)
    func sectorsBeyondCapacityFailWithIOErr(request: (type: UInt32, sector: UInt64), engine: BackendKind) throws {
        let (type, sector) = request
        let rig = try BlockRig(engine, sectors: 64)
        let before = try rig.file.contents()
        let result = try rig.run([try rig.header(type: type, sector: sector), (dataAddress, 1024, type == 0), rig.statusBuffer])
        #expect(result.status == 1 && result.length == 1)
        #expect(try rig.file.contents() == before)
    }

    @Test(arguments: [UInt32(0), 1], BackendKind.allCases)
    func partialSectorsFailWithIOErr(type: UInt32, engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        #expect(try rig.run([try rig.header(type: type, sector: 0), (dataAddress, 100, type == 0), rig.statusBuffer]).status == 1)
    }

    @Test(arguments: BackendKind.allCases)
    func writeToAReadOnlyDiskMovesNoData(engine: BackendKind) throws {
        let rig = try BlockRig(engine, readOnly: true)
        #expect(rig.transport.negotiatedFeatures.contains(.blockReadOnly))
        #expect(!rig.transport.negotiatedFeatures.contains(.blockDiscard))
        let before = try rig.file.contents()
        try rig.memory.fill(0xFF, at: dataAddress, length: 512)
        for type in [UInt32(1), 11, 13] {
            #expect(try rig.run([try rig.header(type: type, sector: 0), (dataAddress, 512, false), rig.statusBuffer]).status == 1)
        }
        #expect(try rig.file.contents() == before)
    }

    @Test(arguments: BackendKind.allCases)
    func writeToAReadOnlyDiskFailsInTheBackendToo(kind: BackendKind) throws {
        // Even if a device forgot the check, the backend refuses.
        let rig = try BlockRig(kind, readOnly: true)
        let before = try rig.file.contents()
        let backend = rig.device.backend
        let done = StatusCollector()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 512)
        defer { buffer.deallocate() }
        backend.setCompletionSink(done)
        backend.submit([BlockRequest(token: 1, operation: .write(offset: 0, from: GuestBuffers([buffer])))])
        #expect(waitUntil { done.statuses == [.ioError] })
        #expect(try rig.file.contents() == before)
    }

    @Test func aFailingFlushReportsIOErr() throws {
        let rig = try BlockRig(.sync, backend: { _ in FailingBackend() })
        #expect(try rig.run([try rig.header(type: 4, sector: 0), rig.statusBuffer]).status == 1)
        #expect(try rig.run([try rig.header(type: 0, sector: 0), (dataAddress, 512, true), rig.statusBuffer]) == (1, 1))
    }

    /// No writable status byte: nothing can carry an error, so the queue breaks and the device
    /// asks for a reset instead of returning a request the driver could read as done.
    @Test(arguments: BackendKind.allCases)
    func missingStatusDescriptorBreaksTheQueue(engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        try rig.memory.write(UInt8(0), at: status)
        try rig.queue.addChain([try rig.header(type: 0, sector: 0), (status, 1, false)])
        rig.mmio.notify(0)
        #expect(try rig.queue.takeUsed().isEmpty)
        #expect(rig.mmio.status.contains(.needsReset))
        #expect(try rig.memory.read(UInt8.self, at: status) == 0)
        #expect(rig.transport.queueCounts.brokenQueues == 1)
    }

    @Test(arguments: BackendKind.allCases)
    func statusInReadOnlyMemoryBreaksTheQueue(engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        try rig.queue.addChain([try rig.header(type: 0, sector: 0), (readOnlyAddress, 1, true)])
        rig.mmio.notify(0)
        #expect(try rig.queue.takeUsed().isEmpty)
        #expect(rig.mmio.status.contains(.needsReset))
    }

    /// Each kind of malformed chain, with a stale 0 (OK) in the status byte a reused request
    /// buffer would hold: the driver gets IOERR there, or no completion and DEVICE_NEEDS_RESET;
    /// never a completion that reads as OK, and never data moved.
    @Test(arguments: MalformedRequest.allCases, BackendKind.allCases)
    func aMalformedChainIsNeverReportedAsOK(kind: MalformedRequest, engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        let before = try rig.file.read(at: 0, count: 4096)
        try rig.memory.write(UInt8(0), at: status)
        try kind.post(on: &rig.queue, header: try rig.header(type: 1, sector: 0), status: status)
        rig.mmio.notify(0)
        let used = try rig.queue.takeUsed()
        let statusByte = try rig.memory.read(UInt8.self, at: status)
        switch kind.expected {
        case .ioError:
            #expect(used.count == 1 && used.first?.length == 1)
            #expect(statusByte == 1)
            #expect(!rig.mmio.status.contains(.needsReset))
            // The queue goes on serving.
            #expect(try rig.run([try rig.header(type: 8, sector: 0), (dataAddress, 20, true), rig.statusBuffer]).status == 0)
        case .needsReset:
            #expect(used.isEmpty)
            #expect(rig.mmio.status.contains(.needsReset))
        }
        #expect(try rig.file.read(at: 0, count: 4096) == before)
        #expect(rig.transport.queueCounts.rejectedChains == 1)
    }

    @Test(arguments: BackendKind.allCases)
    func shortHeaderFailsWithIOErr(engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        #expect(try rig.run([(headerAddress, 8, false), rig.statusBuffer]).status == 1)
    }

    @Test(arguments: BackendKind.allCases)
    func unknownRequestTypeIsUnsupported(engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        #expect(try rig.run([try rig.header(type: 99, sector: 0), rig.statusBuffer]).status == 2)
    }

    @Test(arguments: [(11, 1), (13, 2), (11, 0x8000_0000)] as [(UInt32, UInt32)], BackendKind.allCases)
    func discardWithBadFlagsIsUnsupported(request: (type: UInt32, flags: UInt32), engine: BackendKind) throws {
        let (type, flags) = request
        let rig = try BlockRig(engine)
        try rig.memory.write(UInt64(0), at: GuestAddress(0xB000))
        try rig.memory.write(UInt32(1), at: GuestAddress(0xB008))
        try rig.memory.write(flags, at: GuestAddress(0xB00C))
        #expect(try rig.run([try rig.header(type: type, sector: 0), (GuestAddress(0xB000), 16, false), rig.statusBuffer]).status == 2)
    }

    @Test(arguments: [UInt32(8), 32], BackendKind.allCases)
    func discardWithWrongSegmentLengthFails(length: UInt32, engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        #expect(try rig.run([try rig.header(type: 11, sector: 0), (GuestAddress(0xB000), length, false), rig.statusBuffer]).status == 1)
    }

    @Test(arguments: BackendKind.allCases)
    func discardBeyondCapacityFails(engine: BackendKind) throws {
        let rig = try BlockRig(engine, sectors: 64)
        try rig.memory.write(UInt64(60), at: GuestAddress(0xB000))
        try rig.memory.write(UInt32(8), at: GuestAddress(0xB008))
        try rig.memory.write(UInt32(0), at: GuestAddress(0xB00C))
        #expect(try rig.run([try rig.header(type: 11, sector: 0), (GuestAddress(0xB000), 16, false), rig.statusBuffer]).status == 1)
    }

    @Test(arguments: BackendKind.allCases)
    func unsafeCacheModeOffersNoFlushAndRefusesOne(kind: BackendKind) throws {
        let rig = try BlockRig(kind, cacheMode: .unsafe)
        #expect(!rig.transport.negotiatedFeatures.contains(.blockFlush))
        // A driver that flushes anyway is told UNSUPP, never OK: nothing was made durable.
        #expect(try rig.run([try rig.header(type: 4, sector: 0), rig.statusBuffer]).status == 2)
    }

    /// DISCARD and WRITE_ZEROES are bounded by the limits the device advertises, so that one
    /// request cannot make the notified thread write zeros over the whole disk.
    @Test(arguments: [UInt32(11), 13], BackendKind.allCases)
    func zeroingBeyondTheAdvertisedLimitIsRefused(type: UInt32, engine: BackendKind) throws {
        let rig = try BlockRig(engine, sectors: 70_000)
        let configuration = VirtioBlockConfiguration(reading: rig.transport)
        let limit = type == 11 ? configuration.maxDiscardSectors : configuration.maxWriteZeroesSectors
        #expect(limit == 65_536)
        let before = try rig.file.read(at: 0, count: 4096)
        for (count, status) in [(limit + 1, UInt8(1)), (UInt32.max, 1), (limit, 0)] {
            try rig.memory.write(UInt64(0), at: GuestAddress(0xB000))
            try rig.memory.write(count, at: GuestAddress(0xB008))
            try rig.memory.write(UInt32(0), at: GuestAddress(0xB00C))
            if status != 0 {
                // Refused before anything reaches the file.
                #expect(try rig.run([try rig.header(type: type, sector: 0), (GuestAddress(0xB000), 16, false), rig.statusBuffer]).status == status)
                #expect(try rig.file.read(at: 0, count: 4096) == before)
            } else {
                #expect(try rig.run([try rig.header(type: type, sector: 0), (GuestAddress(0xB000), 16, false), rig.statusBuffer]).status == 0)
                #expect(try rig.file.read(at: 0, count: 4096).allSatisfy { $0 == 0 })
            }
        }
    }

    /// A flood of malformed chains (a buffer in the hole after RAM's first region) is counted
    /// exactly, while its log lines are rate-limited by the transport's GuestEventLog.
    @Test(arguments: BackendKind.allCases)
    func aFloodOfMalformedChainsIsCountedExactly(engine: BackendKind) throws {
        let rig = try BlockRig(engine)
        for round in 0..<4 {
            for _ in 0..<25 { try rig.queue.addChain([try rig.header(type: 0, sector: 0), (holeAddress, 512, true), rig.statusBuffer]) }
            rig.mmio.notify(0)
            #expect(try rig.queue.takeUsed().count == 25, "round \(round)")
        }
        #expect(rig.transport.guestEvents.count(of: "malformed-chain") == 100)
        #expect(rig.transport.queueCounts.rejectedChains == 100)
    }

    /// End to end on the device path: requests queued as fast as the driver can go, a limit
    /// of a quarter of the rate measured without one; the observed rate, after the bucket's
    /// first fill, is within 10% of the limit. Nothing is dropped: every request completes OK.
    @Test(arguments: BackendKind.allCases)
    func aRateLimitHoldsTheDeviceToItsRate(kind: BackendKind) throws {
        let unlimited = try BlockRig(kind)
        let measured = try Self.completionsPerSecond(unlimited, seconds: 0.2).rate
        // A quarter of what this machine managed, kept where a timer's latency is small.
        let limit = min(measured / 4, 2000)
        let bucketSize = UInt64(max(limit / 20, 2))
        let refill = Duration.nanoseconds(Int64(Double(bucketSize) / limit * 1e9))
        let limited = try BlockRig(kind, rateLimit: RateLimit(operations: .init(size: bucketSize, refillTime: refill)))
        let (observed, statuses) = try Self.completionsPerSecond(limited, seconds: 1.0, skipping: Int(bucketSize))
        #expect(abs(observed - limit) / limit < 0.10, "limit \(limit)/s, observed \(observed)/s (unlimited \(measured)/s)")
        #expect(statuses.allSatisfy { $0 == 0 })
        #expect(limited.device.rateLimiter?.throttledCount ?? 0 > 0)
    }

    /// Without an event loop for a timer, a held-back request goes on at a later notification
    /// once its tokens are there (a clock the test moves), in order, and is never dropped.
    @Test func withoutATimerThrottledRequestsGoOnAtLaterNotifications() throws {
        let file = try ScratchFile(size: 64 * 512)
        let clock = SteppedClock()
        let limiter = RateLimiter(RateLimit(operations: .init(size: 1, refillTime: .seconds(1))), clock: clock)
        let device = BlockDevice(backend: SyncBlockBackend(disk: try DiskImage(path: file.path)), queueSize: 16, rateLimiter: limiter)
        let memory = try testMemory()
        let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
        let mmio = MMIODriver(transport: transport)
        var queue = try DriverQueue(memory: memory, size: 16)
        mmio.initialize(queues: [queue])
        for slot in 0..<2 {
            let header = try VirtioBlockRequest.writeHeader(rawType: 0, sector: UInt64(slot), at: GuestAddress(0x8000 + UInt64(slot) * 16), in: memory)
            try queue.addChain([header, (GuestAddress(0x10000 + UInt64(slot) * 512), 512, true), (GuestAddress(0x9000 + UInt64(slot)), 1, true)])
        }
        mmio.notify(0)
        #expect(try queue.takeUsed().count == 1)
        // Tokens not back yet: a notification changes nothing.
        mmio.notify(0)
        #expect(try queue.takeUsed().isEmpty)
        clock.now.store(1_000_000_000, ordering: .relaxed)
        mmio.notify(0)
        #expect(try queue.takeUsed().count == 1)
        #expect(limiter.throttledCount >= 2)
    }

    /// Keeps 8 one-sector reads in flight for `seconds` and returns completions per second,
    /// counted from the `skipping`-th completion on, and every status byte seen.
    static func completionsPerSecond(_ rig: BlockRig, seconds: Double, skipping: Int = 0) throws -> (rate: Double, statuses: [UInt8]) {
        let depth = 8
        var slotOfHead: [UInt32: Int] = [:]
        func post(_ slot: Int) throws {
            let status = GuestAddress(0x9000 + UInt64(slot))
            try rig.memory.write(UInt8(0xEE), at: status)
            let header = try rig.header(type: 0, sector: UInt64(slot), at: GuestAddress(0x8000 + UInt64(slot) * 16))
            let head = try rig.queue.addChain([header, (GuestAddress(0x10000 + UInt64(slot) * 512), 512, true), (status, 1, true)])
            slotOfHead[UInt32(head)] = slot
        }
        for slot in 0..<depth { try post(slot) }
        rig.mmio.notify(0)
        var completed = 0
        var statuses: [UInt8] = []
        var windowStart: UInt64?
        let end = HostClock.monotonicNanoseconds() + UInt64(seconds * 1e9)
        while HostClock.monotonicNanoseconds() < end {
            let used = try rig.queue.takeUsed()
            if used.isEmpty {
                sched_yield()
                continue
            }
            for element in used {
                completed += 1
                if completed == skipping { windowStart = HostClock.monotonicNanoseconds() }
                guard let slot = slotOfHead.removeValue(forKey: element.id) else { continue }
                statuses.append(try rig.memory.read(UInt8.self, at: GuestAddress(0x9000 + UInt64(slot))))
                try post(slot)
            }
            rig.mmio.notify(0)
        }
        let start = windowStart ?? (end - UInt64(seconds * 1e9))
        let counted = completed - max(skipping, 0)
        return (Double(counted) / (Double(HostClock.monotonicNanoseconds() - start) / 1e9), statuses)
    }

    @Test func diskSmallerThanASectorIsRefused() throws {
        let file = try ScratchFile(size: 100) { UInt8(truncatingIfNeeded: $0 / 512 &+ $0) }
        #expect(throws: DiskImageError.empty(path: file.path)) { try DiskImage(path: file.path) }
        #expect(throws: DiskImageError.self) { try DiskImage(path: "/nonexistent/disk.img") }
    }
}

/// Malformed write requests, each posted with a valid header and a status byte at the end
/// where the chain can still be walked to it.
enum MalformedRequest: String, CaseIterable, CustomTestStringConvertible {
    case dataOutsideRAM, dataAcrossTheHole, readableAfterWritable, loop, nextOutOfRange, badIndirectTable, nestedIndirect

    enum Outcome { case ioError, needsReset }

    var testDescription: String { rawValue }

    /// IOERR when the walk reaches a writable last byte, otherwise NEEDS_RESET.
    var expected: Outcome {
        switch self {
        case .dataOutsideRAM, .dataAcrossTheHole, .readableAfterWritable: .ioError
        case .loop, .nextOutOfRange, .badIndirectTable, .nestedIndirect: .needsReset
        }
    }

    func post(on queue: inout DriverQueue, header: (address: GuestAddress, length: UInt32, writable: Bool),
              status: GuestAddress) throws {
        let data = GuestAddress(0x10000)
        let indirectTable = GuestAddress(0xA000)
        let headerDescriptor = Descriptor(address: header.address.rawValue, length: header.length, flags: [.next], next: 1)
        let statusDescriptor = Descriptor(address: status.rawValue, length: 1, flags: [.write])
        let base = queue.availableIndex &* 3 & (queue.size - 1)
        func at(_ index: UInt16) -> UInt16 { (base + index) & (queue.size - 1) }
        var descriptors: [Descriptor]
        switch self {
        case .dataOutsideRAM:
            descriptors = [headerDescriptor, Descriptor(address: 0x1_0000_0000, length: 512, flags: [.next], next: 2), statusDescriptor]
        case .dataAcrossTheHole:
            descriptors = [headerDescriptor, Descriptor(address: holeAddress.rawValue - 256, length: 512, flags: [.next], next: 2), statusDescriptor]
        case .readableAfterWritable:
            descriptors = [Descriptor(address: data.rawValue, length: 512, flags: [.write, .next], next: 1),
                           Descriptor(address: header.address.rawValue, length: header.length, flags: [.next], next: 2), statusDescriptor]
        case .loop:
            descriptors = [headerDescriptor, Descriptor(address: data.rawValue, length: 512, flags: [.next], next: 0), statusDescriptor]
        case .nextOutOfRange:
            descriptors = [headerDescriptor, Descriptor(address: data.rawValue, length: 512, flags: [.next], next: 0x7FFF), statusDescriptor]
        case .badIndirectTable:
            descriptors = [Descriptor(address: indirectTable.rawValue, length: 17, flags: [.indirect])]
        case .nestedIndirect:
            try queue.writeDescriptor(0, Descriptor(address: indirectTable.rawValue, length: 16, flags: [.indirect]), table: indirectTable)
            descriptors = [Descriptor(address: indirectTable.rawValue, length: 16, flags: [.indirect])]
        }
        // Relative `next` fields become slots of this queue.
        for (offset, descriptor) in descriptors.enumerated() {
            var placed = descriptor
            if descriptor.descriptorFlags.contains(.next), descriptor.next < 3 { placed.next = at(descriptor.next) }
            try queue.writeDescriptor(at(UInt16(offset)), placed)
        }
        try queue.publish(at(0))
    }
}

/// A rate limiter's clock the test sets.
final class SteppedClock: RateLimiterClock {
    let now = Atomic<UInt64>(0)
    func nanoseconds() -> UInt64 { now.load(ordering: .relaxed) }
}
