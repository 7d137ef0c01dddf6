/// The shared-memory channel's layout in guest memory (`struct hv_channel_header` and
/// `struct hv_channel_slot` in the C header). All fields little-endian.
///
/// The ring is a 64-byte header followed by `slots` 64-byte slots (`slots` a power of two
/// from 1 to ``maximumSlots``), 64-byte aligned, in RAM. The guest fills slot
/// `request_producer % slots`, then publishes by storing `request_producer + 1` (release).
/// ``HypercallNumber/channelNotify`` runs every published request in order; each result goes
/// into its own slot's `result`, and then `response_producer` moves past it (release).
///
/// Header: u32 request_producer (guest) @0, u32 request_consumer (host) @4,
/// u32 response_producer (host) @8, u32 slots (host, at setup) @12, 48 reserved bytes.
/// Slot: u32 number @0, u32 flags (must be 0) @4, u64 cookie (the guest's, untouched) @8,
/// u64 arguments[5] @16, i64 result (host) @56.
public enum ChannelLayout {
    /// Bytes in the header.
    public static let headerSize = 64
    /// Bytes in each slot.
    public static let slotSize = 64
    /// The most slots a channel may have.
    public static let maximumSlots: UInt32 = 4096
    /// The ring's required alignment in guest memory.
    public static let alignment: UInt64 = 64

    /// Offsets of the header's fields.
    public enum Header {
        /// u32 request_producer, written by the guest.
        public static let requestProducer = 0
        /// u32 request_consumer, written by the host.
        public static let requestConsumer = 4
        /// u32 response_producer, written by the host.
        public static let responseProducer = 8
        /// u32 slots, written by the host at setup.
        public static let slots = 12
    }

    /// Offsets of a slot's fields.
    public enum Slot {
        /// u32 number: the hypercall.
        public static let number = 0
        /// u32 flags, which must be 0.
        public static let flags = 4
        /// u64 cookie: the guest's, left untouched.
        public static let cookie = 8
        /// u64 arguments[argumentCount].
        public static let arguments = 16
        /// How many arguments a slot carries.
        public static let argumentCount = 5
        /// i64 result, written by the host.
        public static let result = 56
    }
}
