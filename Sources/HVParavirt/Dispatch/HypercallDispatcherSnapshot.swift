import HVCore

/// What a snapshot keeps of a dispatcher: the shared-memory channel the guest set up (where
/// its ring is, how many slots, and how far the host has consumed it), since the guest goes on
/// using that ring after a restore without setting it up again. The services themselves are
/// host code, given again to the restored machine's dispatcher; their counters start at zero.
///
/// ```
/// version 1: has channel u8 (0 or 1), then if 1: base u64  slots u32  consumer u32  broken u8
/// ```
extension HypercallDispatcher: SnapshotStateful {
    /// The version of the encoding ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Writes the channel, if the guest set one up. Called while the vCPUs are paused, so no
    /// notify is running.
    public func saveState(to encoder: inout SnapshotEncoder) {
        let ring = channel.withLock { $0 }
        encoder.append(ring != nil)
        guard let ring else { return }
        encoder.append(ring.base.rawValue)
        encoder.append(ring.slots)
        encoder.append(ring.consumer)
        encoder.append(ring.isBroken)
    }

    /// Puts the saved channel back over the restored guest memory, after checking its
    /// placement and size as its setup did: a ring outside RAM, misaligned or of a size setup
    /// would refuse is refused here too.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        guard try decoder.read(Bool.self) else {
            try decoder.expectEnd()
            channel.withLock { $0 = nil }
            return
        }
        let base = GuestAddress(try decoder.read(UInt64.self))
        let slots = try decoder.read(UInt32.self)
        let consumer = try decoder.read(UInt32.self)
        let isBroken = try decoder.read(Bool.self)
        try decoder.expectEnd()
        do throws(HypercallError) {
            let ring = try HypercallChannel(restoring: base, slots: slots, consumer: consumer, isBroken: isBroken, memory: memory)
            channel.withLock { $0 = ring }
        } catch {
            throw .malformed(what: decoder.context, reason: "the hypercall channel: \(error)")
        }
    }
}
