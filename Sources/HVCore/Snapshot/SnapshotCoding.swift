/// Appends a snapshot's fields as little-endian bytes. Every state value HVKit saves writes
/// itself with one of these, and reads itself back with a ``SnapshotDecoder``.
public struct SnapshotEncoder: Sendable {
    /// What was written so far.
    public var bytes: [UInt8] { written }
    @usableFromInline var written: [UInt8] = []

    /// An empty encoder.
    public init() {}

    /// Appends an integer, little-endian. Inlinable, so that each caller gets it specialised
    /// for its integer type: unspecialised, every byte went through protocol witnesses.
    @inlinable
    public mutating func append<Value: FixedWidthInteger>(_ value: Value) {
        for index in 0..<MemoryLayout<Value>.size { written.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    /// Appends a Boolean as one byte.
    public mutating func append(_ value: Bool) {
        written.append(value ? 1 : 0)
    }

    /// Appends a byte string with its length in front.
    public mutating func append(bytes value: some Collection<UInt8>) {
        append(UInt64(value.count))
        written.append(contentsOf: value)
    }

    /// Appends a UTF-8 string with its length in front.
    public mutating func append(_ value: String) {
        append(bytes: Array(value.utf8))
    }

    /// Appends integers with their count in front.
    @inlinable
    public mutating func append<Value: FixedWidthInteger>(array values: [Value]) {
        append(UInt64(values.count))
        for value in values { append(value) }
    }

    /// Appends a value that encodes itself.
    public mutating func append(_ value: some SnapshotEncodable) {
        value.encode(to: &self)
    }
}

/// Reads what a ``SnapshotEncoder`` wrote, checking every length against what is there: the
/// file may be damaged or hostile, so nothing it says is believed without a check.
public struct SnapshotDecoder: Sendable {
    /// The bytes being read.
    public let bytes: [UInt8]
    /// The next byte to read.
    public var offset: Int { position }
    @usableFromInline var position: Int
    /// What is being read, for errors ("vCPU 0").
    public var context: String

    /// A decoder over `bytes`, naming them `context` in errors.
    public init(_ bytes: [UInt8], context: String) {
        self.bytes = bytes
        self.position = 0
        self.context = context
    }

    /// How many bytes are left.
    public var remaining: Int { bytes.count - offset }

    /// Reads an integer, little-endian. Inlinable, so that each caller gets it specialised for
    /// its integer type (decoding a vCPU's state unspecialised took a third of a millisecond).
    @inlinable
    public mutating func read<Value: FixedWidthInteger>(_: Value.Type = Value.self) throws(SnapshotError) -> Value {
        let size = MemoryLayout<Value>.size
        try require(size)
        var value = Value.zero
        for index in 0..<size { value |= Value(truncatingIfNeeded: bytes[position + index]) << (8 * index) }
        position += size
        return value
    }

    /// Reads a Boolean (one byte, 0 or 1).
    public mutating func read(_: Bool.Type = Bool.self) throws(SnapshotError) -> Bool {
        switch try read(UInt8.self) {
        case 0: return false
        case 1: return true
        case let other: throw .malformed(what: context, reason: "a flag holds \(other)")
        }
    }

    /// Reads a length-prefixed byte string of at most `limit` bytes.
    public mutating func readBytes(limit: Int = .max) throws(SnapshotError) -> [UInt8] {
        let count = try readCount(elementSize: 1, limit: limit)
        defer { position += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// Reads a length-prefixed UTF-8 string of at most `limit` bytes.
    public mutating func readString(limit: Int = 4096) throws(SnapshotError) -> String {
        let raw = try readBytes(limit: limit)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw .malformed(what: context, reason: "a string is not UTF-8")
        }
        return text
    }

    /// Reads integers written with ``SnapshotEncoder/append(array:)``, at most `limit` of them.
    @inlinable
    public mutating func readArray<Value: FixedWidthInteger>(of _: Value.Type = Value.self, limit: Int = 1 << 20) throws(SnapshotError) -> [Value] {
        let count = try readCount(elementSize: MemoryLayout<Value>.size, limit: limit)
        var values: [Value] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try read(Value.self)) }
        return values
    }

    /// Reads `count` bytes with no length in front.
    public mutating func readFixed(_ count: Int) throws(SnapshotError) -> [UInt8] {
        try require(count)
        defer { position += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// Reads a value that decodes itself.
    public mutating func read<Value: SnapshotDecodable>(_: Value.Type = Value.self) throws(SnapshotError) -> Value {
        try Value(from: &self)
    }

    /// Throws unless every byte was read: trailing bytes mean the writer and reader disagree.
    public func expectEnd() throws(SnapshotError) {
        guard remaining == 0 else {
            throw .malformed(what: context, reason: "\(remaining) bytes follow its last field")
        }
    }

    /// Reads an element count and checks that it is within `limit` and that the elements fit
    /// in what is left, before anything is allocated for them.
    public mutating func readCount(elementSize: Int, limit: Int) throws(SnapshotError) -> Int {
        let raw = try read(UInt64.self)
        guard raw <= UInt64(limit) else {
            throw .malformed(what: context, reason: "a count of \(raw) is more than the \(limit) allowed")
        }
        let count = Int(raw)
        let (size, overflow) = count.multipliedReportingOverflow(by: elementSize)
        guard !overflow else { throw .malformed(what: context, reason: "a count of \(count) overflows") }
        try require(size)
        return count
    }

    @usableFromInline
    func require(_ size: Int) throws(SnapshotError) {
        guard size <= remaining else {
            throw .truncated(what: context, offset: offset, needed: size, available: remaining)
        }
    }
}

/// A value that writes itself into a snapshot.
public protocol SnapshotEncodable {
    /// Appends the value's fields.
    func encode(to encoder: inout SnapshotEncoder)
}

/// A value that reads itself back from a snapshot, refusing what cannot be right.
public protocol SnapshotDecodable {
    /// Reads the value's fields in the order ``SnapshotEncodable/encode(to:)`` wrote them.
    init(from decoder: inout SnapshotDecoder) throws(SnapshotError)
}

/// A value saved in and restored from snapshots.
public typealias SnapshotCodable = SnapshotEncodable & SnapshotDecodable
