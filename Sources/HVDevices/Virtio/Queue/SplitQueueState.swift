import HVCore

/// A split virtqueue's device-side state as a snapshot saves it: the layout the driver chose
/// and where the device is in the rings. Saved only with no chain in flight (devices finish or
/// give back what they hold first), so the rings themselves, in guest memory, hold the rest.
public struct SplitQueueState: Sendable, Hashable, SnapshotCodable {
    /// QueueNum.
    public var size: UInt16
    /// The descriptor table's guest address.
    public var descriptorTable: GuestAddress
    /// The available ring's guest address.
    public var availableRing: GuestAddress
    /// The used ring's guest address.
    public var usedRing: GuestAddress
    /// Whether EVENT_IDX is in use.
    public var eventIndexEnabled: Bool
    /// Whether indirect descriptors are in use.
    public var indirectEnabled: Bool
    /// Whether the driver made the queue ready.
    public var isReady: Bool
    /// The avail ring position the device reads next.
    public var nextAvailable: UInt16
    /// The used ring position the device writes next.
    public var nextUsed: UInt16
    /// The used position at the last interrupt decision (EVENT_IDX needs it).
    public var usedAtLastNotificationCheck: UInt16
    /// Whether the queue was broken.
    public var isBroken: Bool

    /// A state with these fields.
    public init(size: UInt16, descriptorTable: GuestAddress, availableRing: GuestAddress, usedRing: GuestAddress,
                eventIndexEnabled: Bool, indirectEnabled: Bool, isReady: Bool, nextAvailable: UInt16, nextUsed: UInt16,
                usedAtLastNotificationCheck: UInt16, isBroken: Bool) {
        self.size = size
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
        self.eventIndexEnabled = eventIndexEnabled
        self.indirectEnabled = indirectEnabled
        self.isReady = isReady
        self.nextAvailable = nextAvailable
        self.nextUsed = nextUsed
        self.usedAtLastNotificationCheck = usedAtLastNotificationCheck
        self.isBroken = isBroken
    }

    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(size)
        for address in [descriptorTable, availableRing, usedRing] { encoder.append(address.rawValue) }
        for flag in [eventIndexEnabled, indirectEnabled, isReady, isBroken] { encoder.append(flag) }
        for index in [nextAvailable, nextUsed, usedAtLastNotificationCheck] { encoder.append(index) }
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        size = try decoder.read()
        descriptorTable = GuestAddress(try decoder.read(UInt64.self))
        availableRing = GuestAddress(try decoder.read(UInt64.self))
        usedRing = GuestAddress(try decoder.read(UInt64.self))
        eventIndexEnabled = try decoder.read()
        indirectEnabled = try decoder.read()
        isReady = try decoder.read()
        isBroken = try decoder.read()
        nextAvailable = try decoder.read()
        nextUsed = try decoder.read()
        usedAtLastNotificationCheck = try decoder.read()
    }
}

extension SplitQueue {
    /// The queue's state for a snapshot. The caller makes sure nothing is in flight
    /// (``inFlightCount`` is 0): a chain held across a snapshot would be lost on restore.
    public var savedState: SplitQueueState {
        SplitQueueState(size: size, descriptorTable: descriptorTable, availableRing: availableRing, usedRing: usedRing,
                        eventIndexEnabled: eventIndexEnabled, indirectEnabled: indirectEnabled, isReady: isReady,
                        nextAvailable: nextAvailable, nextUsed: nextUsed,
                        usedAtLastNotificationCheck: usedAtLastNotification, isBroken: fault != nil)
    }

    /// Takes on a saved state. A ready queue's layout is checked again against `memory` as
    /// when the driver made it ready (a snapshot is input from outside too); a size the
    /// queue cannot have is refused.
    public mutating func restore(_ saved: SplitQueueState, in memory: some GuestMemory) throws(QueueFault) {
        self = SplitQueue(maxSize: maxSize)
        size = saved.size
        descriptorTable = saved.descriptorTable
        availableRing = saved.availableRing
        usedRing = saved.usedRing
        eventIndexEnabled = saved.eventIndexEnabled
        indirectEnabled = saved.indirectEnabled
        guard saved.size <= maxSize else { throw .invalidLayout("a saved queue size of \(saved.size); this queue holds \(maxSize)") }
        guard saved.isReady else { return }
        try makeReady(in: memory)
        setPositions(nextAvailable: saved.nextAvailable, nextUsed: saved.nextUsed, usedAtLastNotification: saved.usedAtLastNotificationCheck)
        if saved.isBroken { markBroken(.invalidLayout("the queue was broken when the snapshot was taken")) }
    }
}
