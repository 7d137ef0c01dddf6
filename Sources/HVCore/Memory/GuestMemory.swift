import CHVCoreShims

/// What an access intends to do with the memory it asks for.
public enum MemoryAccess: Sendable {
    case read
    case write
}

/// Guest RAM as device models and loaders see it.
///
/// Consumers (devices, loaders, hypercall handlers) take `some GuestMemory`; backends (such as
/// ``GuestMemoryMmap``) implement the two requirements and inherit every bounds-checked
/// accessor from the extension. All values in guest memory may change at any moment because
/// the guest runs concurrently: copy what you need once, validate the copy, and never re-read.
public protocol GuestMemory: Sendable {
    /// The guest-physical ranges backed by RAM, sorted by address and never overlapping.
    /// Gaps between them are holes (typically device memory).
    var ramRanges: [GuestAddressRange] { get }

    /// Host memory for `length` bytes at `address`, which must lie inside one region.
    ///
    /// The returned buffer is valid for as long as `self` is alive; callers keep `self` alive
    /// (for instance with `withExtendedLifetime`) while they use it. The guest may write to it
    /// at any time. Refuses zero length, overflow, ranges outside RAM, ranges that span
    /// regions, and writes to read-only regions.
    func unsafeHostBuffer(
        at address: GuestAddress, length: UInt64, for access: MemoryAccess
    ) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer

    /// Fills `length` bytes at `address` with `value`. A default stores the bytes; a backend
    /// may do better (``GuestMemoryMmap`` gives whole pages of private anonymous RAM back to
    /// the kernel to zero them).
    func fill(_ value: UInt8, at address: GuestAddress, length: UInt64) throws(GuestMemoryError)

    /// Identifies the host mapping behind the buffers ``unsafeHostBuffer(at:length:for:)``
    /// returns, or nil (the default) when there is none to name. Two values with the same
    /// identity translate every guest range to the same host buffer, so a translation made
    /// through one holds for the other while either is alive: a virtio chain checked through
    /// the queue's memory keeps its host addresses for the device's reads of it. A backend
    /// that keeps its regions mapped at the same host addresses for its whole life takes one
    /// ``HostMappingIdentity/next()`` when it is made.
    var hostMappingIdentity: HostMappingIdentity? { get }
}

extension GuestMemory {
    /// The total number of bytes of RAM.
    public var ramSize: UInt64 { ramRanges.reduce(0) { $0 &+ $1.length } }

    /// Whether the whole range `[address, address + length)` is RAM, possibly spread over
    /// adjacent regions without a hole.
    public func isRAM(_ address: GuestAddress, length: UInt64) -> Bool {
        (try? validateRange(address, length: length, for: .read)) != nil
    }

    /// Visits the host buffers backing `[address, address + length)` in order. The range may
    /// span regions that touch each other; a hole anywhere inside it is an error, reported
    /// before any chunk is visited.
    func forEachChunk(
        at address: GuestAddress, length: UInt64, for access: MemoryAccess,
        _ body: (UnsafeMutableRawBufferPointer, Int) throws(GuestMemoryError) -> Void
    ) throws(GuestMemoryError) {
        let whole = try GuestAddressRange(start: address, length: length)
        guard length <= UInt64(Int.max) else { throw .lengthTooLarge(address: address, length: length) }
        // Fast path: the range sits in one region, which is nearly always the case.
        if let buffer = unsafe try? unsafeHostBuffer(at: address, length: length, for: access) {
            unsafe try body(buffer, 0)
            return
        }
        // Slow path: translate every piece first, so nothing is touched if any piece fails.
        var pieces: [(UnsafeMutableRawBufferPointer, Int)] = unsafe []
        var cursor = address
        var done: UInt64 = 0
        let ranges = ramRanges
        while done < length {
            guard let region = ranges.first(where: { $0.contains(cursor) }) else {
                throw done == 0
                    ? .outOfBounds(address: address, length: length)
                    : .crossesHole(address: address, length: length)
            }
            let available = region.lastAddress.rawValue - cursor.rawValue + 1
            let take = min(available, length - done)
            let buffer = unsafe try unsafeHostBuffer(at: cursor, length: take, for: access)
            unsafe pieces.append((buffer, Int(done)))
            done += take
            if done < length {
                guard let next = cursor.adding(take) else {
                    throw .addressOverflow(address: whole.start, length: length)
                }
                cursor = next
            }
        }
        for unsafe (buffer, offset) in unsafe pieces { unsafe try body(buffer, offset) }
    }

    /// Checks that `[address, address + length)` is RAM the access may use (possibly spread
    /// over adjacent regions), and says why not otherwise.
    public func validateRange(_ address: GuestAddress, length: UInt64, for access: MemoryAccess) throws(GuestMemoryError) {
        unsafe try forEachChunk(at: address, length: length, for: access) { _, _ throws(GuestMemoryError) in }
    }

    /// The host buffers backing `[address, address + length)`, in order: one per region the
    /// range touches. For zero-copy I/O (preadv/pwritev, libaio) straight into guest RAM.
    ///
    /// The buffers stay valid while `self` is alive; the guest may change their contents at any
    /// time. Refuses the same ranges as ``read(into:from:)`` and, for `.write`, read-only regions.
    public func unsafeHostBuffers(
        at address: GuestAddress, length: UInt64, for access: MemoryAccess
    ) throws(GuestMemoryError) -> [UnsafeMutableRawBufferPointer] {
        var buffers: [UnsafeMutableRawBufferPointer] = unsafe []
        unsafe try forEachChunk(at: address, length: length, for: access) { chunk, _ throws(GuestMemoryError) in
            unsafe buffers.append(chunk)
        }
        return unsafe buffers
    }

    // MARK: Byte buffers

    /// Copies `buffer.count` bytes of guest memory at `address` into `buffer`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, from address: GuestAddress) throws(GuestMemoryError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { throw .zeroLength(address: address) }
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe try forEachChunk(at: address, length: UInt64(buffer.count), for: .read) { chunk, offset throws(GuestMemoryError) in
                // A chunk is never empty; an empty one has nothing to copy.
                guard let source = chunk.baseAddress else { return }
                // SAFETY: chunk was bounds-checked by the backend; offset + chunk.count <= buffer.count.
                unsafe (base + offset).copyMemory(from: source, byteCount: chunk.count)
            }
        }
    }

    /// Copies `bytes` into guest memory at `address`.
    public func write(_ bytes: UnsafeRawBufferPointer, to address: GuestAddress) throws(GuestMemoryError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { throw .zeroLength(address: address) }
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe try forEachChunk(at: address, length: UInt64(bytes.count), for: .write) { chunk, offset throws(GuestMemoryError) in
                // A chunk is never empty; an empty one has nothing to copy.
                guard let destination = chunk.baseAddress else { return }
                // SAFETY: chunk was bounds-checked by the backend; offset + chunk.count <= bytes.count.
                unsafe destination.copyMemory(from: base + offset, byteCount: chunk.count)
            }
        }
    }

    /// Reads `count` bytes at `address` into a new array.
    public func readBytes(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        guard count > 0 else { throw .zeroLength(address: address) }
        var result = [UInt8](repeating: 0, count: count)
        try narrowingError {
            unsafe try result.withUnsafeMutableBytes { buffer in unsafe try read(into: buffer, from: address) }
        }
        return result
    }

    /// Writes `bytes` at `address`.
    @inlinable
    public func write(_ bytes: some Collection<UInt8>, to address: GuestAddress) throws(GuestMemoryError) {
        // Arrays and other contiguous collections are written from where they are.
        let written: Void? = try narrowingError {
            try bytes.withContiguousStorageIfAvailable { buffer in unsafe try write(UnsafeRawBufferPointer(buffer), to: address) }
        }
        guard written == nil else { return }
        let array = Array(bytes)
        try narrowingError { unsafe try array.withUnsafeBytes { buffer in unsafe try write(buffer, to: address) } }
    }

    /// Writes the elements of `values` back to back at `address`, in host byte order.
    public func write<T: BitwiseCopyable>(contentsOf values: [T], to address: GuestAddress) throws(GuestMemoryError) {
        try narrowingError { unsafe try values.withUnsafeBytes { buffer in unsafe try write(buffer, to: address) } }
    }

    /// Fills `length` bytes at `address` with `value`.
    public func fill(_ value: UInt8, at address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        try storeFill(value, at: address, length: length)
    }

    /// No identity: translations are not reused.
    public var hostMappingIdentity: HostMappingIdentity? { nil }

    /// ``fill(_:at:length:)`` by storing every byte.
    func storeFill(_ value: UInt8, at address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe try forEachChunk(at: address, length: length, for: .write) { chunk, _ throws(GuestMemoryError) in
                // SAFETY: each chunk is writable guest RAM checked by unsafeHostBuffer.
                unsafe chunk.initializeMemory(as: UInt8.self, repeating: value)
            }
        }
    }

    // MARK: Plain values

    /// Reads a plain value (no references) stored at `address`, in host byte order.
    @inlinable
    public func read<T: BitwiseCopyable>(_ type: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        guard size > 0 else { throw .zeroLength(address: address) }
        return try withExtendedLifetime(self) { () throws(GuestMemoryError) -> T in
            if let buffer = unsafe try? unsafeHostBuffer(at: address, length: UInt64(size), for: .read), let base = buffer.baseAddress {
                // SAFETY: buffer holds exactly `size` bytes; T is BitwiseCopyable, so any bytes form a value.
                return unsafe base.loadUnaligned(as: T.self)
            }
            let bytes = try readBytes(at: address, count: size)
            return unsafe bytes.withUnsafeBytes { unsafe $0.loadUnaligned(as: T.self) }
        }
    }

    /// Writes a plain value at `address`, in host byte order.
    @inlinable
    public func write<T: BitwiseCopyable>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let size = MemoryLayout<T>.size
        guard size > 0 else { throw .zeroLength(address: address) }
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            // Fast path: one region, no temporary buffers (ring entries, status bytes).
            if let buffer = unsafe try? unsafeHostBuffer(at: address, length: UInt64(size), for: .write), let base = buffer.baseAddress {
                // SAFETY: buffer holds exactly `size` bytes of writable guest RAM.
                unsafe base.storeBytes(of: value, as: T.self)
                return
            }
            var copy = value
            try narrowingError { unsafe try withUnsafeBytes(of: &copy) { bytes in unsafe try write(bytes, to: address) } }
        }
    }

    // MARK: Atomics (ring indices)

    @usableFromInline
    func atomicPointer(at address: GuestAddress, size: UInt64, for access: MemoryAccess) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        guard address.isAligned(to: size) else { throw .misaligned(address: address, alignment: size) }
        // Naturally aligned and at most 8 bytes: never spans two pages, so never two regions.
        // SAFETY: unsafeHostBuffer checked the `size` bytes lie in one region allowing `access`.
        guard let pointer = unsafe try unsafeHostBuffer(at: address, length: size, for: access).baseAddress else {
            throw .zeroLength(address: address)
        }
        return unsafe pointer
    }

    /// An atomic load with acquire ordering of a naturally aligned `UInt16`.
    @inlinable
    public func loadAcquire(_ type: UInt16.Type, at address: GuestAddress) throws(GuestMemoryError) -> UInt16 {
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe hv_load_acquire_u16(try atomicPointer(at: address, size: 2, for: .read))
        }
    }

    /// An atomic load with acquire ordering of a naturally aligned `UInt32`.
    @inlinable
    public func loadAcquire(_ type: UInt32.Type, at address: GuestAddress) throws(GuestMemoryError) -> UInt32 {
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe hv_load_acquire_u32(try atomicPointer(at: address, size: 4, for: .read))
        }
    }

    /// An atomic load with acquire ordering of a naturally aligned `UInt64`.
    @inlinable
    public func loadAcquire(_ type: UInt64.Type, at address: GuestAddress) throws(GuestMemoryError) -> UInt64 {
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe hv_load_acquire_u64(try atomicPointer(at: address, size: 8, for: .read))
        }
    }

    /// An atomic store with release ordering of a naturally aligned `UInt16`.
    @inlinable
    public func storeRelease(_ value: UInt16, at address: GuestAddress) throws(GuestMemoryError) {
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe hv_store_release_u16(try atomicPointer(at: address, size: 2, for: .write), value)
        }
    }

    /// An atomic store with release ordering of a naturally aligned `UInt32`.
    @inlinable
    public func storeRelease(_ value: UInt32, at address: GuestAddress) throws(GuestMemoryError) {
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe hv_store_release_u32(try atomicPointer(at: address, size: 4, for: .write), value)
        }
    }

    /// An atomic store with release ordering of a naturally aligned `UInt64`.
    @inlinable
    public func storeRelease(_ value: UInt64, at address: GuestAddress) throws(GuestMemoryError) {
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe hv_store_release_u64(try atomicPointer(at: address, size: 8, for: .write), value)
        }
    }
}

/// A full memory barrier, for the places where the virtio specification asks for one
/// between a store and a later load (for example before reading the event index).
@inlinable public func memoryFence() { hv_fence_seq_cst() }

/// Runs `body`, whose only thrown errors are `GuestMemoryError`s passed through a standard
/// library closure API that is `rethrows` rather than typed-throws, and restores the type.
@inline(__always) @usableFromInline
func narrowingError<R>(_ body: () throws -> R) throws(GuestMemoryError) -> R {
    do {
        return try body()
    } catch let error as GuestMemoryError {
        throw error
    } catch {
        // Unreachable: every throwing call inside `body` throws GuestMemoryError.
        preconditionFailure("unexpected error type \(type(of: error))")
    }
}
