/// A device that answers reads and writes on a ``Bus``.
///
/// Devices are called from vCPU threads, possibly several at once, so they are classes that
/// protect their own state. `offset` is relative to the base the device was registered at;
/// values are little-endian and only the low `width.byteCount` bytes are meaningful. Offsets
/// and values come from the guest: a device must treat them as hostile and never trap on them.
public protocol BusDevice: AnyObject, Sendable {
    /// A read of `width` bytes at `offset`; return the value in the low bytes.
    func read(offset: UInt64, width: AccessWidth) -> UInt64
    /// A write of `width` bytes at `offset`; `value` holds them in its low bytes.
    func write(offset: UInt64, width: AccessWidth, value: UInt64)
    /// The device as a ``SnapshotStateful``, when it saves its state: nil by default, itself
    /// for devices that conform. A requirement rather than a cast, so that composing a machine
    /// does not make the runtime scan every protocol conformance in the program.
    var snapshotState: (any SnapshotStateful)? { get }
}

extension BusDevice {
    /// Nil: the device does not save its state.
    public var snapshotState: (any SnapshotStateful)? { nil }
}

extension BusDevice where Self: SnapshotStateful {
    /// The device itself.
    public var snapshotState: (any SnapshotStateful)? { self }
}
