/// HVCore: what every other HVKit module builds on, and knows nothing about KVM.
///
/// - Guest-physical addresses with checked arithmetic: ``GuestAddress``, ``GuestAddressRange``.
/// - Guest memory: the ``GuestMemory`` protocol that devices consume and the
///   ``GuestMemoryMmap`` backend, with bounds-checked typed, byte and atomic accesses.
/// - Buses: ``Bus`` (port I/O and MMIO) and the ``BusDevice`` protocol.
/// - Interrupts and notifications: ``InterruptLine``, ``Notifier``, ``EventFD``.
/// - Threads that must not run on Swift's cooperative pool: ``HostThread``, and ``EventLoop``
///   (epoll on its own thread) for device backends that wait.
/// - Console output: ``ByteSink`` and ``FileDescriptorSink``, shared by devices and hypercalls.
/// - Traps that need the vCPU's registers (hypercall doorbells): ``RegisterTrap``,
///   ``GuestRegisterAccess``, ``TrapSite``.
/// - Whole host files: ``HostFile``.
public enum HVCore {}
