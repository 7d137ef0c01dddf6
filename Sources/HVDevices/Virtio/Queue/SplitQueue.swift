import HVCore

/// The device side of one split virtqueue (virtio 1.2, section 2.7).
///
/// The queue holds no memory: every operation takes the guest memory it works on. It is a
/// value that one owner mutates under its own lock (``LockedVirtqueue`` provides one). Everything it
/// reads from the rings is treated as hostile: ring indices are read with acquire loads,
/// descriptors are copied once and validated, chains are bounded and loop-checked, a head
/// cannot be in flight twice, and an avail index that runs ahead breaks the queue instead of
/// making the device spin.
public struct SplitQueue: Sendable {
    /// The largest size the device supports (a power of two, at most 32768).
    public let maxSize: UInt16
    /// The size the driver chose (QueueNum).
    public var size: UInt16
    /// Guest-physical address of the descriptor table.
    public var descriptorTable = GuestAddress(0)
    /// Guest-physical address of the available ("driver") ring.
    public var availableRing = GuestAddress(0)
    /// Guest-physical address of the used ("device") ring.
    public var usedRing = GuestAddress(0)
    /// Whether VIRTIO_F_EVENT_IDX was negotiated.
    public var eventIndexEnabled = false
    /// Whether VIRTIO_F_INDIRECT_DESC was negotiated.
    public var indirectEnabled = false

    /// Whether the driver made the queue ready and its layout was accepted.
    public private(set) var isReady = false
    /// The avail ring position the device reads next.
    public private(set) var nextAvailable: UInt16 = 0
    /// The used ring position the device writes next.
    public private(set) var nextUsed: UInt16 = 0
    /// Why the queue broke, if it did.
    public private(set) var fault: QueueFault?

    /// The most entries an indirect table may have. The spec sets no limit; Linux never makes
    /// one larger than its queue size, and a bound keeps a hostile table from costing much.
    public static let maxIndirectTableEntries: UInt32 = 1024
    /// The most bytes a chain may describe (virtio 1.2, 2.7.5.2).
    public static let maxChainBytes: UInt64 = 1 << 32

    private var usedAtLastNotificationCheck: UInt16 = 0
    private var inFlight: [UInt64]
    private var directVisits: [UInt32]
    private var indirectVisits: [UInt32]
    private var chainSerial: UInt32 = 0
    /// Segments in the last chain taken: room reserved for the next one, which a driver
    /// usually shapes alike (an 18-buffer network frame allocated its array four times otherwise).
    private var lastChainSegments = 4

    /// A queue of at most `maxSize` entries; `maxSize` is rounded down to a power of two and
    /// clamped to 1...32768.
    public init(maxSize: UInt16) {
        let clamped = min(max(maxSize, 1), 32768)
        let power = UInt16(1) << (15 - UInt16(clamped.leadingZeroBitCount))
        self.maxSize = power
        self.size = power
        inFlight = [UInt64](repeating: 0, count: (Int(power) + 63) / 64)
        directVisits = [UInt32](repeating: 0, count: Int(power))
        indirectVisits = []
    }

    // MARK: Setup

    /// Checks the layout the driver wrote and makes the queue ready: QueueNum a power of two
    /// no larger than ``maxSize``, each area naturally aligned and entirely in guest RAM (the
    /// used ring writable).
    public mutating func makeReady(in memory: some GuestMemory) throws(QueueFault) {
        guard size > 0, size <= maxSize, size & (size - 1) == 0 else {
            throw .invalidLayout("queue size \(size) is not a power of two in 1...\(maxSize)")
        }
        let areas: [(String, GuestAddress, UInt64, UInt64, MemoryAccess)] = [
            ("descriptor table", descriptorTable, SplitRingLayout.descriptorTableSize(size), SplitRingLayout.descriptorTableAlignment, .read),
            ("available ring", availableRing, SplitRingLayout.availableRingSize(size), SplitRingLayout.availableRingAlignment, .read),
            ("used ring", usedRing, SplitRingLayout.usedRingSize(size), SplitRingLayout.usedRingAlignment, .write),
        ]
        for (name, address, length, alignment, access) in areas {
            guard address.isAligned(to: alignment) else {
                throw .invalidLayout("\(name) at \(address) is not aligned to \(alignment) bytes")
            }
            do {
                try memory.validateRange(address, length: length, for: access)
            } catch {
                throw .invalidLayout("\(name): \(error)")
            }
        }
        isReady = true
        fault = nil
        nextAvailable = 0
        nextUsed = 0
        usedAtLastNotificationCheck = 0
        for index in inFlight.indices { inFlight[index] = 0 }
    }

    /// Returns the queue to its state after a device reset: not ready, size ``maxSize``, no
    /// addresses, indices zero, no fault.
    public mutating func reset() {
        self = SplitQueue(maxSize: maxSize)
    }

    // MARK: Taking requests

    /// Takes the next available chain, or returns nil when the driver has made none available.
    ///
    /// A malformed chain is reported as ``VirtqueueError/invalidChain(_:)`` and stays in flight:
    /// the caller either reports the error through the chain's validated status byte and
    /// completes it with ``addUsed(head:length:in:)``, or gives up on the queue with
    /// ``markBroken(_:)``. A fault that makes the ring itself untrustworthy breaks the queue
    /// (``VirtqueueError/broken(_:)``).
    public mutating func popChain(in memory: some GuestMemory) throws(VirtqueueError) -> DescriptorChain? {
        try checkUsable()
        let available = try ringLoad(availableRing, offset: 2, in: memory)
        let pending = available &- nextAvailable
        if pending == 0 { return nil }
        guard pending <= size else {
            throw breakQueue(.availableIndexTooFarAhead(available: available, next: nextAvailable, size: size))
        }
        let slot = UInt64(nextAvailable & (size - 1))
        let head: UInt16
        do {
            // The acquire load of idx above orders this read after the driver's ring write.
            head = try memory.read(UInt16.self, at: availableRing.checkedAdd(4 + 2 * slot))
        } catch {
            throw breakQueue(.ringAccess(error))
        }
        nextAvailable &+= 1
        guard head < size else { throw breakQueue(.headOutOfRange(head: head, size: size)) }
        guard !isInFlight(head) else { throw breakQueue(.duplicateHead(head)) }
        setInFlight(head, true)
        do throws(MalformedChain) {
            return try parseChain(head: head, in: memory)
        } catch {
            throw .invalidChain(error)
        }
    }

    /// Breaks the queue because of `fault` (for example a malformed chain the device cannot
    /// answer): every later call fails with ``VirtqueueError/broken(_:)`` until a reset, and
    /// the device should set DEVICE_NEEDS_RESET.
    public mutating func markBroken(_ fault: QueueFault) {
        if self.fault == nil { self.fault = fault }
    }

    /// Whether the driver has made chains available that the device has not taken.
    public func hasAvailable(in memory: some GuestMemory) throws(VirtqueueError) -> Bool {
        try checkUsable()
        return try ringLoad(availableRing, offset: 2, in: memory) != nextAvailable
    }

    // MARK: Completing requests

    /// Returns chain `head` to the driver, saying the device wrote `length` bytes into it.
    public mutating func addUsed(head: UInt16, length: UInt32, in memory: some GuestMemory) throws(VirtqueueError) {
        try checkUsable()
        guard head < size, isInFlight(head) else { throw breakQueue(.headNotInFlight(head)) }
        let slot = UInt64(nextUsed & (size - 1))
        do {
            let element = try usedRing.checkedAdd(4 + 8 * slot)
            try memory.write(UInt32(head), at: element)
            try memory.write(length, at: element.checkedAdd(4))
            // Release: the element is visible before the index that publishes it.
            try memory.storeRelease(nextUsed &+ 1, at: usedRing.checkedAdd(2))
        } catch {
            throw breakQueue(.ringAccess(error))
        }
        nextUsed &+= 1
        setInFlight(head, false)
    }

    /// Whether the driver wants an interrupt for what was used since the last call (it may
    /// suppress them with VIRTQ_AVAIL_F_NO_INTERRUPT or, with EVENT_IDX, with used_event).
    public mutating func needsNotification(in memory: some GuestMemory) throws(VirtqueueError) -> Bool {
        try checkUsable()
        let old = usedAtLastNotificationCheck
        let new = nextUsed
        guard new != old else { return false }
        usedAtLastNotificationCheck = new
        // Our used idx store must be visible before we read the driver's suppression state,
        // or a driver that just re-enabled interrupts could miss this one.
        memoryFence()
        if eventIndexEnabled {
            let usedEvent = try ringLoad(availableRing, offset: 4 + 2 * UInt64(size), in: memory)
            return new &- usedEvent &- 1 < new &- old
        }
        let flags = try ringLoad(availableRing, offset: 0, in: memory)
        return flags & SplitRingLayout.availableNoInterrupt == 0
    }

    /// Asks the driver for notifications again (after ``disableNotifications(in:)``) and returns
    /// whether chains arrived meanwhile, in which case the caller should process them before
    /// waiting for the next notification.
    public mutating func enableNotifications(in memory: some GuestMemory) throws(VirtqueueError) -> Bool {
        try checkUsable()
        if eventIndexEnabled {
            try ringStore(nextAvailable, usedRing, offset: 4 + 8 * UInt64(size), in: memory)
        } else {
            try ringStore(0, usedRing, offset: 0, in: memory)
        }
        memoryFence()
        return try hasAvailable(in: memory)
    }

    /// Tells the driver it need not notify the device (a hint; with EVENT_IDX the device simply
    /// does not move avail_event).
    public mutating func disableNotifications(in memory: some GuestMemory) throws(VirtqueueError) {
        try checkUsable()
        if !eventIndexEnabled {
            try ringStore(SplitRingLayout.usedNoNotify, usedRing, offset: 0, in: memory)
        }
    }

    /// How many chains the device holds (taken and not yet used).
    public var inFlightCount: Int { inFlight.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// The used position at the last interrupt decision.
    var usedAtLastNotification: UInt16 { usedAtLastNotificationCheck }

    /// Sets the ring positions of a ready queue with nothing in flight (a restore).
    mutating func setPositions(nextAvailable: UInt16, nextUsed: UInt16, usedAtLastNotification: UInt16) {
        self.nextAvailable = nextAvailable
        self.nextUsed = nextUsed
        usedAtLastNotificationCheck = usedAtLastNotification
    }

    /// Gives back chains taken and not used, as if they had never been taken: `heads` must be
    /// the last chains taken, in the order they were taken, and still in flight. The avail
    /// ring's entries are read again to check that; the next ``popChain(in:)`` returns the
    /// first of them again. Devices that hold receive buffers use this before a snapshot, so
    /// that nothing is in flight while the state is saved. Returns false, giving nothing
    /// back, when the heads are not those (the device then keeps them).
    public mutating func giveBack(heads: [UInt16], in memory: some GuestMemory) throws(VirtqueueError) -> Bool {
        try checkUsable()
        guard heads.count <= inFlightCount else { return false }
        let start = nextAvailable &- UInt16(heads.count)
        for (offset, head) in heads.enumerated() {
            let slot = UInt64((start &+ UInt16(offset)) & (size - 1))
            guard head < size, isInFlight(head), try ringLoad(availableRing, offset: 4 + 2 * slot, in: memory) == head else {
                return false
            }
        }
        for head in heads { setInFlight(head, false) }
        nextAvailable = start
        return true
    }

    // MARK: Chain parsing

    /// Walks the chain at `head`. A loop, an index outside the table or a bad indirect table
    /// ends the walk with no status byte; a bad buffer, a readable buffer after a writable one
    /// or an oversized chain is remembered and the walk goes on, so the chain's last buffer is
    /// still found and, if it is valid writable RAM, offered as the status byte to report in.
    private mutating func parseChain(head: UInt16, in memory: some GuestMemory) throws(MalformedChain) -> DescriptorChain {
        var builder = ChainBuilder(head: head, reserving: lastChainSegments)
        do throws(ChainError) {
            try walkChain(head: head, into: &builder, in: memory)
        } catch {
            throw MalformedChain(head: head, error: error, statusByte: nil)
        }
        // Bounded: no chain is longer than a table (at most 32768) plus an indirect table.
        lastChainSegments = max(builder.segments.count, 1)
        if let error = builder.firstError {
            throw MalformedChain(head: head, error: error, statusByte: builder.trailingWritableByte)
        }
        return builder.chain(translatedBy: memory)
    }

    private mutating func walkChain(head: UInt16, into builder: inout ChainBuilder, in memory: some GuestMemory) throws(ChainError) {
        chainSerial &+= 1
        if chainSerial == 0 {
            // The marks wrapped: forget every old mark so none can look current.
            for index in directVisits.indices { directVisits[index] = 0 }
            for index in indirectVisits.indices { indirectVisits[index] = 0 }
            chainSerial = 1
        }
        let table = DescriptorTableReader(memory, at: descriptorTable, entries: UInt32(size))
        var index = head
        while true {
            guard index < size else {
                throw .descriptorIndexOutOfRange(index: index, tableSize: UInt32(size))
            }
            guard directVisits[Int(index)] != chainSerial else { throw .descriptorLoop(index: index, indirect: false) }
            directVisits[Int(index)] = chainSerial
            let descriptor = try table.descriptor(UInt32(index), in: memory)
            let flags = descriptor.descriptorFlags
            if flags.contains(.indirect) {
                guard indirectEnabled else { throw .indirectNotNegotiated }
                // The spec forbids INDIRECT with NEXT, so an indirect table ends the chain.
                guard !flags.contains(.next) else { throw .indirectWithNext }
                try parseIndirectTable(descriptor, into: &builder, in: memory)
                return
            }
            builder.append(descriptor, index: index, in: memory)
            guard flags.contains(.next) else { return }
            index = descriptor.next
        }
    }

    private mutating func parseIndirectTable(
        _ indirect: Descriptor, into builder: inout ChainBuilder, in memory: some GuestMemory
    ) throws(ChainError) {
        let length = indirect.length
        let entries = length / UInt32(Descriptor.size)
        guard length > 0, length % UInt32(Descriptor.size) == 0, entries <= Self.maxIndirectTableEntries else {
            throw .badIndirectTableLength(length)
        }
        let table = GuestAddress(indirect.address)
        do {
            try memory.validateRange(table, length: UInt64(length), for: .read)
        } catch {
            throw .badBuffer(error)
        }
        if indirectVisits.count < Int(entries) {
            indirectVisits.append(contentsOf: repeatElement(0, count: Int(entries) - indirectVisits.count))
        }
        let reader = DescriptorTableReader(memory, at: table, entries: entries)
        var index: UInt16 = 0
        while true {
            guard UInt32(index) < entries else {
                throw .descriptorIndexOutOfRange(index: index, tableSize: entries)
            }
            guard indirectVisits[Int(index)] != chainSerial else { throw .descriptorLoop(index: index, indirect: true) }
            indirectVisits[Int(index)] = chainSerial
            let descriptor = try reader.descriptor(UInt32(index), in: memory)
            let flags = descriptor.descriptorFlags
            guard !flags.contains(.indirect) else { throw .nestedIndirect }
            builder.append(descriptor, index: index, in: memory)
            guard flags.contains(.next) else { return }
            index = descriptor.next
        }
    }

    // MARK: Helpers

    private func checkUsable() throws(VirtqueueError) {
        if let fault { throw .broken(fault) }
        guard isReady else { throw .notReady }
    }

    private mutating func breakQueue(_ fault: QueueFault) -> VirtqueueError {
        self.fault = fault
        return .broken(fault)
    }

    private func ringLoad(_ base: GuestAddress, offset: UInt64, in memory: some GuestMemory) throws(VirtqueueError) -> UInt16 {
        do {
            return try memory.loadAcquire(UInt16.self, at: base.checkedAdd(offset))
        } catch {
            throw .broken(.ringAccess(error))
        }
    }

    private mutating func ringStore(_ value: UInt16, _ base: GuestAddress, offset: UInt64, in memory: some GuestMemory) throws(VirtqueueError) {
        do {
            try memory.storeRelease(value, at: base.checkedAdd(offset))
        } catch {
            throw breakQueue(.ringAccess(error))
        }
    }

    private func isInFlight(_ head: UInt16) -> Bool {
        inFlight[Int(head) >> 6] & (1 << UInt64(head & 63)) != 0
    }

    private mutating func setInFlight(_ head: UInt16, _ value: Bool) {
        if value {
            inFlight[Int(head) >> 6] |= 1 << UInt64(head & 63)
        } else {
            inFlight[Int(head) >> 6] &= ~(1 << UInt64(head & 63))
        }
    }
}

/// Accumulates a chain's validated segments, and for a malformed chain its first error and
/// whether its last buffer could carry a status byte.
private struct ChainBuilder {
    let head: UInt16
    var segments: [ChainSegment] = []
    var readableLength: UInt64 = 0
    var writableLength: UInt64 = 0
    var sawWritable = false
    /// Readable segments kept (they come before the writable ones in a well-formed chain).
    var readableSegmentCount = 0
    /// The first thing wrong with a buffer; the walk goes on to find the chain's end.
    var firstError: ChainError?
    /// The last non-empty buffer seen, if it was writable guest RAM: its last byte.
    var trailingWritableByte: GuestAddress?

    init(head: UInt16, reserving capacity: Int) {
        self.head = head
        segments.reserveCapacity(capacity)
    }

    func chain(translatedBy memory: some GuestMemory) -> DescriptorChain {
        // Host addresses are kept for memory with an identity a reader can check (see
        // DescriptorChain.reader(in:)).
        DescriptorChain(head: head, segments: segments, readableLength: readableLength, writableLength: writableLength,
                        translatedBy: memory.hostMappingIdentity, readableSegmentCount: readableSegmentCount)
    }

    /// Validates one buffer descriptor and adds it. Zero-length buffers carry nothing and are
    /// skipped. Once the chain is known to be malformed nothing more is kept but the end.
    mutating func append(_ descriptor: Descriptor, index: UInt16, in memory: some GuestMemory) {
        let writable = descriptor.descriptorFlags.contains(.write)
        if !writable, sawWritable { record(.readableAfterWritable(index: index)) }
        sawWritable = sawWritable || writable
        guard descriptor.length > 0 else { return }
        let address = GuestAddress(descriptor.address)
        let length = UInt64(descriptor.length)
        var hostAddress: HostAddress?
        do {
            // One region nearly always holds a buffer: one lookup, with no chunk walk; the
            // general check splits one that spans regions and says why a range is refused.
            if let buffer = unsafe try? memory.unsafeHostBuffer(at: address, length: length, for: writable ? .write : .read) {
                if !writable, let base = buffer.baseAddress { hostAddress = unsafe HostAddress(base) }
            } else {
                try memory.validateRange(address, length: length, for: writable ? .write : .read)
            }
            // Validated, so the last byte's address cannot overflow.
            trailingWritableByte = writable ? GuestAddress(address.rawValue + length - 1) : nil
        } catch {
            trailingWritableByte = nil
            record(.badBuffer(error))
            return
        }
        // At most 32768 + 1024 buffers of under 4 GiB each: these sums cannot overflow.
        if writable { writableLength += length } else { readableLength += length }
        if readableLength + writableLength > SplitQueue.maxChainBytes { record(.chainTooLarge) }
        guard firstError == nil else { return }
        segments.append(ChainSegment(address: address, length: descriptor.length, isWritable: writable, hostAddress: hostAddress))
        if !writable { readableSegmentCount += 1 }
    }

    private mutating func record(_ error: ChainError) {
        if firstError == nil { firstError = error }
    }
}

/// A descriptor table as one walk reads it: looked up once, when one region holds the whole
/// table (always, for tables a driver allocates as one block), rather than once per descriptor
/// (an 18-descriptor network frame made 18 lookups); otherwise each descriptor is read through
/// the guest memory API. The walk passes its memory to every read rather than the reader
/// holding a reference of its own, which cost a retain and a release per chain.
/// SAFETY: `bytes` points into the RAM of the memory it was made with, which the walk holds
/// (and passes to ``descriptor(_:in:)``) for as long as it uses the reader.
@safe private struct DescriptorTableReader {
    let address: GuestAddress
    let entries: UInt32
    let bytes: UnsafeRawBufferPointer?

    init(_ memory: some GuestMemory, at address: GuestAddress, entries: UInt32) {
        self.address = address
        self.entries = entries
        let found = unsafe try? memory.unsafeHostBuffer(at: address, length: UInt64(entries) * Descriptor.size, for: .read)
        unsafe bytes = unsafe found.map { UnsafeRawBufferPointer($0) }
    }

    /// Copies descriptor `index` out of guest memory: the one and only read of it (the driver
    /// may change the table meanwhile; the copy is what the device checks and uses). `memory`
    /// must be the memory the reader was made with.
    func descriptor(_ index: UInt32, in memory: some GuestMemory) throws(ChainError) -> Descriptor {
        if let bytes = unsafe bytes, index < entries {
            // SAFETY: the lookup checked that `bytes` is entries * 16 bytes of guest RAM, and
            // index < entries; `memory`, held by the caller, keeps the mapping alive.
            return withExtendedLifetime(memory) {
                unsafe bytes.loadUnaligned(fromByteOffset: Int(index) * Int(Descriptor.size), as: Descriptor.self)
            }
        }
        do {
            return try memory.read(Descriptor.self, at: address.checkedAdd(UInt64(index) * Descriptor.size))
        } catch {
            throw .badBuffer(error)
        }
    }
}
