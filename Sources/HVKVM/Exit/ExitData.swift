/// The data bytes of a port-I/O or MMIO exit, inside the vCPU's kvm_run page.
///
/// Valid only until the vCPU runs again: handle it before the next ``VCPU/run()``. For an
/// `in` or an MMIO read, store the value the guest should see; KVM completes the instruction
/// with it on the next run. Indices are bounds-checked.
///
/// A value kept past that point cannot reach the page KVM is rewriting: every access checks
/// that the vCPU has not entered the guest since the exit (or gone away), and a stale value
/// behaves as empty. Its ``count`` is 0, so reads give 0 and writes are dropped, and
/// ``isCurrent`` says so. The value also keeps the kvm_run mapping alive, so even a value that
/// outlives its vCPU never points at unmapped memory.
@safe public struct ExitData {
    private let base: UnsafeMutableRawPointer
    private let exitCount: Int
    /// The mapping `base` points into and the run it belongs to; `nil` only for data over
    /// memory the caller owns (the exit-dispatch tests).
    private let mapping: KVMRunMapping?
    private let run: UInt64

    /// Data of the exit that ended run number `run` of the vCPU whose kvm_run page is `mapping`.
    init(mapping: KVMRunMapping, offset: Int, count: Int) {
        self.mapping = mapping
        self.run = mapping.currentRun
        unsafe self.base = unsafe mapping.raw + offset
        self.exitCount = count
    }

    /// Data over `count` bytes at `base` that the caller keeps valid; for tests of the code
    /// that consumes exits.
    init(base: UnsafeMutableRawPointer, count: Int) {
        self.mapping = nil
        self.run = 0
        unsafe self.base = unsafe base
        self.exitCount = count
    }

    /// Whether the vCPU is still stopped at the exit this data belongs to.
    public var isCurrent: Bool {
        guard let mapping else { return true }
        return mapping.currentRun == run
    }

    /// Total bytes (for `rep ins/outs`, element size times count); 0 once the data is stale.
    public var count: Int { isCurrent ? exitCount : 0 }

    /// Byte `index`; out-of-range (or stale) reads give 0 and writes are dropped.
    public subscript(index: Int) -> UInt8 {
        get {
            guard index >= 0 && index < count else { return 0 }
            // SAFETY: index < count, which is 0 once stale; decodeExit checked that the
            // exit's count bytes lie inside the mapping, which this value keeps alive.
            return unsafe base.load(fromByteOffset: index, as: UInt8.self)
        }
        nonmutating set {
            guard index >= 0 && index < count else { return }
            // SAFETY: as for the getter.
            unsafe base.storeBytes(of: newValue, toByteOffset: index, as: UInt8.self)
        }
    }

    /// The little-endian value of element `element` of `width` bytes (0 if out of range).
    public func value(element: Int = 0, width: Int) -> UInt64 {
        guard let start = range(element: element, width: width) else { return 0 }
        var result: UInt64 = 0
        for byte in 0..<width {
            // SAFETY: start + width <= count (see range(element:width:)).
            unsafe result |= UInt64(base.load(fromByteOffset: start + byte, as: UInt8.self)) << (8 * UInt64(byte))
        }
        return result
    }

    /// Stores the low `width` bytes of `value` little-endian as element `element`.
    public func setValue(_ value: UInt64, element: Int = 0, width: Int) {
        guard let start = range(element: element, width: width) else { return }
        for byte in 0..<width {
            // SAFETY: start + width <= count (see range(element:width:)).
            unsafe base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))), toByteOffset: start + byte, as: UInt8.self)
        }
    }

    /// The first byte of element `element` of `width` bytes, if the whole element is inside
    /// the (current) data.
    private func range(element: Int, width: Int) -> Int? {
        let (start, overflow) = element.multipliedReportingOverflow(by: width)
        guard !overflow, element >= 0, width > 0, width <= 8, start <= count &- width else { return nil }
        return start
    }

    /// A copy of the bytes (empty once stale).
    public var bytes: [UInt8] { (0..<count).map { self[$0] } }
}
