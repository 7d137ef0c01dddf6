import HVCore
import HVDevices

/// The driver side of a split virtqueue, written the way a guest driver would: it lays out the
/// descriptor table, avail ring and used ring in guest memory, adds chains and reads back what
/// the device used. Hostile tests use its raw writers to break the rules on purpose.
///
/// For tests and benchmarks of device models without a guest; it trusts itself and traps on
/// misuse, unlike the device side.
public struct DriverQueue: Sendable {
    /// The guest memory the rings live in.
    public let memory: any GuestMemory
    /// Entries in the queue (a power of two).
    public let size: UInt16
    /// Where the descriptor table is.
    public let descriptorTable: GuestAddress
    /// Where the available ring is.
    public let availableRing: GuestAddress
    /// Where the used ring is.
    public let usedRing: GuestAddress
    /// The available index the driver has published.
    public private(set) var availableIndex: UInt16 = 0
    private var nextFreeDescriptor: UInt16 = 0
    private var lastUsedSeen: UInt16 = 0

    /// Lays the rings out from `base` (16-byte aligned) and zeroes them.
    public init(memory: any GuestMemory, size: UInt16, base: GuestAddress = GuestAddress(0x1000)) throws {
        self.memory = memory
        self.size = size
        descriptorTable = base
        availableRing = GuestAddress(base.rawValue + 16 * UInt64(size))
        let usedStart = availableRing.rawValue + 6 + 2 * UInt64(size)
        usedRing = GuestAddress((usedStart + 3) & ~3)
        try memory.fill(0, at: base, length: usedRing.rawValue + 6 + 8 * UInt64(size) - base.rawValue)
    }

    /// A device-side queue pointed at these rings and made ready.
    public func makeDeviceQueue(eventIndex: Bool = false, indirect: Bool = true) throws -> SplitQueue {
        var queue = SplitQueue(maxSize: size)
        queue.size = size
        queue.descriptorTable = descriptorTable
        queue.availableRing = availableRing
        queue.usedRing = usedRing
        queue.eventIndexEnabled = eventIndex
        queue.indirectEnabled = indirect
        try queue.makeReady(in: memory)
        return queue
    }

    // MARK: Raw writers

    /// Writes descriptor `index` of the queue's table, or of an indirect `table`.
    public func writeDescriptor(_ index: UInt16, _ descriptor: Descriptor, table: GuestAddress? = nil) throws {
        try memory.write(descriptor, at: GuestAddress((table ?? descriptorTable).rawValue + 16 * UInt64(index)))
    }

    /// Puts `head` in the next avail slot and publishes it.
    public mutating func publish(_ head: UInt16) throws {
        try memory.write(head, at: GuestAddress(availableRing.rawValue + 4 + 2 * UInt64(availableIndex % size)))
        availableIndex &+= 1
        try memory.storeRelease(availableIndex, at: GuestAddress(availableRing.rawValue + 2))
    }

    /// Writes the avail idx directly (hostile drivers).
    public mutating func setAvailableIndex(_ index: UInt16) throws {
        availableIndex = index
        try memory.storeRelease(index, at: GuestAddress(availableRing.rawValue + 2))
    }

    /// Sets the available ring's flags (VIRTQ_AVAIL_F_NO_INTERRUPT is 1).
    public func setAvailableFlags(_ flags: UInt16) throws {
        try memory.write(flags, at: availableRing)
    }

    /// Sets used_event, the index at which the driver wants an interrupt (EVENT_IDX).
    public func setUsedEvent(_ value: UInt16) throws {
        try memory.write(value, at: GuestAddress(availableRing.rawValue + 4 + 2 * UInt64(size)))
    }

    /// avail_event as the device wrote it: the index at which it wants a kick (EVENT_IDX).
    public var availEvent: UInt16 {
        get throws { try memory.read(UInt16.self, at: GuestAddress(usedRing.rawValue + 4 + 8 * UInt64(size))) }
    }

    /// The used ring's flags (VIRTQ_USED_F_NO_NOTIFY is 1).
    public var usedFlags: UInt16 {
        get throws { try memory.read(UInt16.self, at: usedRing) }
    }

    /// The descriptor index the next chain's head will take.
    public var nextDescriptor: UInt16 { nextFreeDescriptor }

    // MARK: Chains

    /// Writes a chain of direct descriptors for `buffers` (readable ones should come first)
    /// into free table slots, publishes it, and returns its head.
    ///
    /// Descriptors are taken in turn around the table, as if chains came back in the order
    /// they were added: a driver whose requests complete out of order keeps each in-flight
    /// chain's descriptors with ``addChain(_:at:)`` instead.
    @discardableResult
    public mutating func addChain(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)]) throws -> UInt16 {
        let head = try addChain(buffers, at: nextFreeDescriptor)
        nextFreeDescriptor = (head &+ UInt16(buffers.count)) % size
        return head
    }

    /// Writes a chain of direct descriptors for `buffers` from descriptor `first` on (wrapping
    /// around the table), publishes it, and returns its head (`first`): for a driver that gives
    /// each request slot descriptors of its own, so that no chain still in flight is
    /// overwritten whatever order the device completes them in.
    @discardableResult
    public mutating func addChain(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], at first: UInt16) throws -> UInt16 {
        let head = first % size
        // The table looked up once, as a guest driver stores into its own table: a benchmark
        // charges the driver's work to the device it measures.
        let table = unsafe try memory.unsafeHostBuffer(at: descriptorTable, length: 16 * UInt64(size), for: .write)
        withExtendedLifetime(memory) {
            for (offset, buffer) in buffers.enumerated() {
                let index = (head &+ UInt16(offset)) % size
                let last = offset == buffers.count - 1
                var flags: Descriptor.Flags = buffer.writable ? [.write] : []
                if !last { flags.insert(.next) }
                let descriptor = Descriptor(address: buffer.address.rawValue, length: buffer.length, flags: flags, next: (index &+ 1) % size)
                // SAFETY: index < size, so its 16 bytes lie inside the table's 16 * size.
                unsafe table.storeBytes(of: descriptor, toByteOffset: 16 * Int(index), as: Descriptor.self)
            }
        }
        try publish(head)
        return head
    }

    /// Writes `buffers` as an indirect table at `table` and publishes one descriptor pointing at it.
    @discardableResult
    public mutating func addIndirectChain(
        _ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], table: GuestAddress
    ) throws -> UInt16 {
        for (index, buffer) in buffers.enumerated() {
            var flags: Descriptor.Flags = buffer.writable ? [.write] : []
            if index < buffers.count - 1 { flags.insert(.next) }
            try writeDescriptor(UInt16(index), Descriptor(address: buffer.address.rawValue, length: buffer.length, flags: flags, next: UInt16(index + 1)), table: table)
        }
        let head = nextFreeDescriptor
        try writeDescriptor(head, Descriptor(address: table.rawValue, length: UInt32(16 * buffers.count), flags: [.indirect]))
        nextFreeDescriptor = (head &+ 1) % size
        try publish(head)
        return head
    }

    // MARK: Used ring

    /// The used index as the device wrote it.
    public var usedIndex: UInt16 {
        get throws { try memory.loadAcquire(UInt16.self, at: GuestAddress(usedRing.rawValue + 2)) }
    }

    /// The used elements the device added since the last call.
    public mutating func takeUsed() throws -> [(id: UInt32, length: UInt32)] {
        let end = try usedIndex
        // Labelled as returned: an unlabelled array would be converted element by element.
        var result: [(id: UInt32, length: UInt32)] = []
        guard lastUsedSeen != end else { return result }
        while lastUsedSeen != end {
            let element = GuestAddress(usedRing.rawValue + 4 + 8 * UInt64(lastUsedSeen % size))
            result.append((try memory.read(UInt32.self, at: element), try memory.read(UInt32.self, at: GuestAddress(element.rawValue + 4))))
            lastUsedSeen &+= 1
        }
        return result
    }
}
