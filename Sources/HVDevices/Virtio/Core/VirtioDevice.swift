import HVCore

/// A virtio device model: what it offers, its configuration space, and what it does with its
/// queues once the driver has set them up.
///
/// A transport (``VirtioMMIOTransport``) owns the register interface, feature negotiation and the
/// status state machine; it calls the device only at these points, never while holding its
/// own lock, so a device may call back into the ``VirtioActivation`` it was given at any time.
public protocol VirtioDevice: AnyObject, Sendable {
    /// The device ID the transport reports.
    var deviceType: VirtioDeviceType { get }
    /// Every feature the device offers, including the transport bits it supports (usually
    /// ``VirtioFeatures/transportDefaults``). Must contain ``VirtioFeatures/version1``.
    var offeredFeatures: VirtioFeatures { get }
    /// The largest size of each queue; the count is the number of queues.
    var queueMaxSizes: [UInt16] { get }
    /// The device-specific configuration space as it reads now, little-endian.
    var configuration: [UInt8] { get }
    /// A driver write of `bytes` at `offset` in the configuration space; the transport has
    /// checked that it lies inside ``configuration``. Devices with no writable fields ignore it.
    func writeConfiguration(at offset: Int, bytes: [UInt8])
    /// The driver set DRIVER_OK: start serving the queues. Throwing makes the transport set
    /// DEVICE_NEEDS_RESET.
    func activate(_ activation: VirtioActivation) throws(VirtioDeviceError)
    /// The driver notified queue `index` (an MMIO write or an ioeventfd). May come after a
    /// reset or before activation; ignore it then.
    func queueNotified(_ index: Int)
    /// Return to the state before activation: stop using the queues and guest memory, with no
    /// request still in flight when this returns.
    func reset()
    /// The device as a `SnapshotStateful`, when it saves its state: nil by default, itself for
    /// devices that conform (a requirement, so no dynamic cast is needed to ask).
    var snapshotState: (any SnapshotStateful)? { get }
}

extension VirtioDevice {
    /// Ignores the write: most devices' configuration is read-only.
    public func writeConfiguration(at offset: Int, bytes: [UInt8]) {}
    /// Nil: the device does not save its state.
    public var snapshotState: (any SnapshotStateful)? { nil }
}

extension VirtioDevice where Self: SnapshotStateful {
    /// The device itself.
    public var snapshotState: (any SnapshotStateful)? { self }
}

/// Why a device could not be activated or had to stop.
public enum VirtioDeviceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The driver did not make queue `index` ready, and the device needs it.
    case queueNotReady(index: Int)
    /// The backend (file, descriptor, event loop) failed.
    case backend(String)

    /// Why the device refused, in words.
    public var description: String {
        switch self {
        case let .queueNotReady(index): "queue \(index) is needed but the driver did not make it ready"
        case let .backend(reason): "device backend failed: \(reason)"
        }
    }
}
