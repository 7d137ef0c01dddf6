import HVCore

/// The host side of the shared-memory channel (see ``ChannelLayout``): a ring of requests in
/// guest memory that one doorbell runs as a batch.
///
/// Holds no memory; every call takes it. The host keeps its own consumer index and never
/// trusts the one in guest memory. Each slot is copied once before it is decoded. A producer
/// index more than a ring ahead breaks the channel (EPROTO on every notify until the guest
/// sets it up again) instead of being trusted.
struct HypercallChannel {
    let base: GuestAddress
    let slots: UInt32
    private(set) var consumer: UInt32 = 0
    private(set) var isBroken = false

    /// Checks the ring's placement and size, and resets its indices in guest memory.
    init(at base: GuestAddress, slots: UInt64, memory: some GuestMemory) throws(HypercallError) {
        try Self.check(base: base, slots: slots, memory: memory)
        do {
            try memory.fill(0, at: base, length: UInt64(ChannelLayout.headerSize))
            try memory.write(UInt32(slots).littleEndian, at: base.checkedAdd(UInt64(ChannelLayout.Header.slots)))
        } catch {
            throw .fault(error)
        }
        self.base = base
        self.slots = UInt32(slots)
    }

    /// A channel a snapshot saved, put back over restored guest memory: the placement and
    /// size are checked as at setup, but the ring is left as the guest left it.
    init(restoring base: GuestAddress, slots: UInt32, consumer: UInt32, isBroken: Bool, memory: some GuestMemory) throws(HypercallError) {
        try Self.check(base: base, slots: UInt64(slots), memory: memory)
        self.base = base
        self.slots = slots
        self.consumer = consumer
        self.isBroken = isBroken
    }

    private static func check(base: GuestAddress, slots: UInt64, memory: some GuestMemory) throws(HypercallError) {
        guard slots > 0, slots <= UInt64(ChannelLayout.maximumSlots), slots & (slots - 1) == 0 else {
            throw HypercallError(.invalid, "channel slot count \(slots) is not a power of two from 1 to \(ChannelLayout.maximumSlots)")
        }
        guard base.isAligned(to: ChannelLayout.alignment) else {
            throw HypercallError(.invalid, "channel ring at \(base) is not \(ChannelLayout.alignment)-byte aligned")
        }
        let length = UInt64(ChannelLayout.headerSize) + slots * UInt64(ChannelLayout.slotSize)
        do { try memory.validateRange(base, length: length, for: .write) } catch { throw .fault(error) }
    }

    /// Runs every request published since the last call, in order, through `execute`, and
    /// writes each result into its slot. Returns how many ran.
    mutating func process(
        memory: some GuestMemory, execute: (HypercallNumber, UInt32, HypercallArguments) -> UInt64
    ) throws(HypercallError) -> Int {
        guard !isBroken else { throw HypercallError(.protocolError, "channel at \(base) is broken; set it up again") }
        do {
            let producer = try memory.loadAcquire(UInt32.self, at: base.checkedAdd(UInt64(ChannelLayout.Header.requestProducer)))
            let pending = producer &- consumer
            guard pending <= slots else {
                isBroken = true
                throw HypercallError(.protocolError,
                                     "channel request producer \(producer) is \(pending) ahead of consumer \(consumer) with \(slots) slots")
            }
            for _ in 0..<pending {
                let slotAddress = try slotAddress(consumer & (slots - 1))
                let slot = try memory.readBytes(at: slotAddress, count: ChannelLayout.slotSize)
                let (number, flags, arguments) = Self.decode(slot)
                let result = execute(number, flags, arguments)
                try memory.write(result.littleEndian, at: slotAddress.checkedAdd(UInt64(ChannelLayout.Slot.result)))
                consumer &+= 1
            }
            try memory.write(consumer.littleEndian, at: base.checkedAdd(UInt64(ChannelLayout.Header.requestConsumer)))
            try memory.storeRelease(consumer, at: base.checkedAdd(UInt64(ChannelLayout.Header.responseProducer)))
            return Int(pending)
        } catch let error as GuestMemoryError {
            // The ring was validated at setup, so this means guest memory changed under us
            // (a region was unmapped): the channel cannot go on.
            isBroken = true
            throw .fault(error)
        } catch let error as HypercallError {
            throw error
        } catch {
            isBroken = true
            throw HypercallError(.protocolError, "channel: \(error)")
        }
    }

    private func slotAddress(_ index: UInt32) throws(GuestMemoryError) -> GuestAddress {
        try base.checkedAdd(UInt64(ChannelLayout.headerSize) + UInt64(index) * UInt64(ChannelLayout.slotSize))
    }

    private static func decode(_ slot: [UInt8]) -> (HypercallNumber, UInt32, HypercallArguments) {
        func u32(_ offset: Int) -> UInt32 {
            UInt32(slot[offset]) | UInt32(slot[offset + 1]) << 8 | UInt32(slot[offset + 2]) << 16 | UInt32(slot[offset + 3]) << 24
        }
        func u64(_ offset: Int) -> UInt64 { UInt64(u32(offset)) | UInt64(u32(offset + 4)) << 32 }
        let first = ChannelLayout.Slot.arguments
        let arguments = HypercallArguments(u64(first), u64(first + 8), u64(first + 16), u64(first + 24), u64(first + 32))
        return (HypercallNumber(u32(ChannelLayout.Slot.number)), u32(ChannelLayout.Slot.flags), arguments)
    }
}
