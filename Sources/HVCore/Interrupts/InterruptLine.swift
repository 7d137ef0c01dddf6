import SystemPackage

/// A way for a device to interrupt the guest.
///
/// Device models hold an `any InterruptLine` and never know how it is delivered: KVM backs it
/// with an irqfd (HVKVM's `IRQFDLine`), tests with a counter. Safe to call from any thread.
public protocol InterruptLine: Sendable {
    /// Raises an edge-triggered interrupt.
    func trigger() throws(Errno)
}

/// An interrupt line whose level the device drives (legacy level-triggered devices).
public protocol LevelInterruptLine: InterruptLine {
    func setLevel(_ asserted: Bool) throws(Errno)
}

/// Something that can be signalled from another thread or by the hypervisor on the guest's
/// behalf (an ioeventfd), and waited on by a device's own thread.
public protocol Notifier: Sendable {
    /// Signals the notifier once.
    func notify() throws(Errno)
    /// Takes all pending notifications: their count, or nil if none are pending and the
    /// notifier does not block.
    func consume() throws(Errno) -> UInt64?
}
