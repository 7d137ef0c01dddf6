import HVCore

/// Reads a fuzzer's bytes as a stream of values; past the end every read yields zero, so a
/// target never has to check lengths (libFuzzer grows inputs that reach further).
public struct FuzzInput {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0

    /// The input libFuzzer passed.
    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    }

    /// Whether every byte was read.
    public var isAtEnd: Bool { offset >= bytes.count }

    /// The next `T`, little-endian, zero-filled past the end.
    public mutating func next<T: FixedWidthInteger>(_ type: T.Type = T.self) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            let byte: UInt8 = offset < bytes.count ? bytes[offset] : 0
            offset += 1
            value |= T(truncatingIfNeeded: byte) << (8 * index)
        }
        return value
    }

    /// The next value in 0..<`bound` (0 when `bound` is 0).
    public mutating func next(below bound: Int) -> Int {
        bound <= 0 ? 0 : Int(next(UInt32.self) % UInt32(clamping: bound))
    }

    /// The next Bool.
    public mutating func nextBool() -> Bool { next(UInt8.self) & 1 == 1 }

    /// Up to `count` next bytes (fewer at the end).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        let start = min(offset, bytes.count)
        let available = max(0, min(count, bytes.count - start))
        offset = start + available
        return Array(bytes[start..<(start + available)])
    }

    /// Everything not read yet.
    public mutating func rest() -> [UInt8] { bytes(max(0, bytes.count - offset)) }
}

/// A small guest RAM with a hole and a read-only region, as the unit tests use: 0..1 MiB RAM,
/// a hole, 2..3 MiB RAM, and 4 MiB..+64 KiB read-only.
public func fuzzMemory() -> GuestMemoryMmap {
    guard let memory = try? GuestMemoryMmap([
        MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
        MemoryRegionSpec(start: GuestAddress(2 << 20), size: 1 << 20),
        MemoryRegionSpec(start: GuestAddress(4 << 20), size: 64 << 10, options: [.readOnly]),
    ]) else {
        // Only the host can make this fail (no memory): stop the run, it is not a finding.
        fatalError("cannot map the fuzzing memory")
    }
    return memory
}

/// An address a hostile driver might write: in RAM, near an edge, in the hole, read-only or
/// far outside.
public func hostileAddress(_ input: inout FuzzInput) -> UInt64 {
    let raw = input.next(UInt64.self)
    switch input.next(UInt8.self) % 8 {
    case 0: return raw % (1 << 20)
    case 1: return (1 << 20) - (raw % 64)
    case 2: return (2 << 20) + raw % (1 << 20)
    case 3: return (3 << 20) - (raw % 64)
    case 4: return (4 << 20) + raw % (64 << 10)
    case 5: return UInt64.max - (raw % 4096)
    case 6: return raw % 0x1000
    default: return raw
    }
}
