import CLibAIO
import Glibc

/// One operation of an ``AIOBlockBackend``, from its request until it completes: what the
/// kernel is asked to do, kept as a value until it goes into flight (and back to the backlog
/// if io_submit has no room for it).
/// SAFETY: `buffers` point into guest RAM that the device keeps mapped, and the chain unused,
/// until the operation completes.
@safe struct AIOOperation: @unchecked Sendable {
    enum Kind { case read, write, flush }

    let token: UInt64
    let kind: Kind
    let offset: UInt64
    let buffers: GuestBuffers?
    let expectedBytes: Int

    static func transfer(_ token: UInt64, write: Bool, _ buffers: GuestBuffers, offset: UInt64) -> AIOOperation {
        AIOOperation(token: token, kind: write ? .write : .read, offset: offset, buffers: buffers, expectedBytes: buffers.byteCount)
    }

    static func flush(_ token: UInt64) -> AIOOperation {
        AIOOperation(token: token, kind: .flush, offset: 0, buffers: nil, expectedBytes: 0)
    }
}

/// The operations of an ``AIOBlockBackend`` in the kernel: an ``InFlightTable`` as large as its
/// AIO context, whose every entry has an iocb and room for a few iovecs, allocated once with
/// the backend; a completion finds its entry from the iocb address it carries, by arithmetic.
/// Before it, every request allocated its iocb and iovecs.
/// SAFETY: the table owns both allocations and frees them once (``deallocate()``), after the
/// AIO context that reads them is destroyed; it moves between threads only inside the
/// backend's lock.
@safe struct AIOControlTable: @unchecked Sendable {
    /// iovecs each entry holds; an operation with more buffers allocates its own.
    static let inlineVectors = 4

    /// SAFETY: `extraVectors` is owned by the entry and freed when it is removed.
    @safe struct Entry: @unchecked Sendable {
        let operation: AIOOperation
        /// Whether its completion signals the backend's eventfd.
        let signals: Bool
        /// The iovecs of an operation with more than ``inlineVectors`` buffers.
        let extraVectors: UnsafeMutablePointer<iovec>?
    }

    private var entries: InFlightTable<Entry>
    private let controls: UnsafeMutablePointer<iocb>
    private let vectors: UnsafeMutablePointer<iovec>

    init(capacity: Int) {
        entries = InFlightTable(capacity: capacity)
        let capacity = entries.capacity
        unsafe controls = .allocate(capacity: capacity)
        unsafe controls.initialize(repeating: iocb(), count: capacity)
        unsafe vectors = .allocate(capacity: capacity * Self.inlineVectors)
        unsafe vectors.initialize(repeating: iovec(), count: capacity * Self.inlineVectors)
    }

    /// Frees the iocbs and iovecs: only once the AIO context is destroyed, as the kernel may
    /// read them until then.
    func deallocate() {
        for entry in entries.elements { unsafe entry.extraVectors?.deallocate() }
        unsafe controls.deallocate()
        unsafe vectors.deallocate()
    }

    /// Operations in the table.
    var count: Int { entries.count }

    /// Prepares `operation`'s iocb on `file` in a free entry (with `eventFD` when it `signals`)
    /// and returns it; nil when every entry is in use.
    mutating func insert(_ operation: AIOOperation, file: Int32, eventFD: Int32, signals: Bool) -> UnsafeMutablePointer<iocb>? {
        let buffers = unsafe operation.buffers?.buffers ?? []
        let count = unsafe buffers.count
        let extra = count > Self.inlineVectors ? UnsafeMutablePointer<iovec>.allocate(capacity: count) : nil
        guard let index = unsafe entries.insert(Entry(operation: operation, signals: signals, extraVectors: extra)) else {
            unsafe extra?.deallocate()
            return nil
        }
        // SAFETY: index < capacity, so the iocb and its inline iovecs lie inside the allocations.
        let control = unsafe controls + index
        unsafe control.pointee = iocb()
        switch operation.kind {
        case .flush:
            unsafe io_prep_fdsync(control, file)
        case .read, .write:
            let target = unsafe extra ?? (vectors + index * Self.inlineVectors)
            // SAFETY: `target` holds buffers.count iovecs; the buffers were checked against
            // guest RAM when the request was parsed (see AIOOperation).
            for unsafe (position, buffer) in unsafe buffers.enumerated() {
                unsafe (target + position).pointee = unsafe iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            }
            if operation.kind == .write {
                unsafe io_prep_pwritev(control, file, target, Int32(count), Int64(operation.offset))
            } else {
                unsafe io_prep_preadv(control, file, target, Int32(count), Int64(operation.offset))
            }
        }
        if signals { unsafe io_set_eventfd(control, eventFD) }
        return unsafe control
    }

    /// Takes the entry whose iocb is `control`; nil for an address that is not one of the
    /// table's iocbs in use (a completion the backend did not submit).
    mutating func remove(_ control: UnsafeMutablePointer<iocb>) -> Entry? {
        let stride = unsafe MemoryLayout<iocb>.stride
        let offset = unsafe Int(bitPattern: control) &- Int(bitPattern: controls)
        guard offset >= 0, offset % stride == 0, let entry = entries.remove(at: offset / stride) else { return nil }
        unsafe entry.extraVectors?.deallocate()
        return entry
    }
}
