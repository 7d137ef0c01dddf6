/// The data bytes of a port-I/O or MMIO exit, inside the vCPU's kvm_run page.
///
/// Valid only until the vCPU runs again: handle it before the next ``VCPU/run()``. For an
/// `in` or an MMIO read, store the value the guest should see; KVM completes the instruction
/// with it on the next run. Indices are bounds-checked.
public struct ExitData {
    @usableFromInline let base: UnsafeMutableRawPointer
    /// Total bytes (for `rep ins/outs`, element size times count).
    public let count: Int

    @usableFromInline init(base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    /// Byte `index`; out-of-range reads give 0 and writes are dropped.
    public subscript(index: Int) -> UInt8 {
        get { index >= 0 && index < count ? base.load(fromByteOffset: index, as: UInt8.self) : 0 }
        nonmutating set {
            guard index >= 0 && index < count else { return }
            base.storeBytes(of: newValue, toByteOffset: index, as: UInt8.self)
        }
    }

    /// The little-endian value of element `element` of `width` bytes (0 if out of range).
    @inlinable
    public func value(element: Int = 0, width: Int) -> UInt64 {
        let start = element &* width
        guard element >= 0, width > 0, width <= 8, start >= 0, start + width <= count else { return 0 }
        var result: UInt64 = 0
        for byte in 0..<width {
            result |= UInt64(base.load(fromByteOffset: start + byte, as: UInt8.self)) << (8 * UInt64(byte))
        }
        return result
    }

    /// Stores the low `width` bytes of `value` little-endian as element `element`.
    @inlinable
    public func setValue(_ value: UInt64, element: Int = 0, width: Int) {
        let start = element &* width
        guard element >= 0, width > 0, width <= 8, start >= 0, start + width <= count else { return }
        for byte in 0..<width {
            base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))), toByteOffset: start + byte, as: UInt8.self)
        }
    }

    /// A copy of the bytes.
    public var bytes: [UInt8] { (0..<count).map { self[$0] } }
}
