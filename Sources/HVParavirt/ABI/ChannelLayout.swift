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
    public static let headerSize = 64
    public static let slotSize = 64
    public static let maximumSlots: UInt32 = 4096
    public static let alignment: UInt64 = 64

    public enum Header {
        public static let requestProducer = 0
        public static let requestConsumer = 4
        public static let responseProducer = 8
        public static let slots = 12
    }

    public enum Slot {
        public static let number = 0
        public static let flags = 4
        public static let cookie = 8
        public static let arguments = 16
        public static let argumentCount = 5
        public static let result = 56
    }
}
