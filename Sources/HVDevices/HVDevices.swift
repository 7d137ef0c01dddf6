/// HVDevices: device models. Depends on HVCore (buses, guest memory, interrupt lines, event
/// loop) and on libaio for the block backend, never on HVKVM.
///
/// - Virtio core: ``VirtioDevice`` (what a device model implements), ``VirtioFeatures``,
///   ``DeviceStatus`` and its transition rules, ``VirtioInterrupt``.
/// - Transport: ``VirtioMMIODevice``, virtio-mmio version 2 as a ``BusDevice``, notified by MMIO
///   exits or by ioeventfds served on an ``EventLoop``.
/// - Queues: ``SplitQueue`` (the device side of a split virtqueue, hardened against hostile
///   drivers), ``DescriptorChain`` with ``ChainReader`` and ``ChainWriter``, and ``Virtqueue``,
///   the locked queue a device receives at activation.
/// - Devices: ``BlockDevice`` with ``SyncBlockBackend`` or ``AIOBlockBackend`` over a
///   ``DiskImage``; ``ConsoleDevice``; ``EntropyDevice``.
/// - Legacy: ``Serial16550``, ``I8042Controller`` (the reset line), ``CMOSClock``.
/// - Pseudo-devices: ``BootTimer`` (the guest reports that it has booted).
/// - I/O helpers: ``InputPump`` (``ByteSink`` and ``FileDescriptorSink`` are in HVCore).
///
/// Threading: transports and devices are called from vCPU threads and from the event loop;
/// each protects its own state, and a device is never called with the transport's lock held.
public enum HVDevices {}
