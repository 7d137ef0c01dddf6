import HVBoot
import HVCore
import HVDevices
import HVKVM

/// How a virtio device's queue notifications reach it.
public enum QueueNotifications: Sendable, Hashable {
    /// One ioeventfd per queue: a guest kick signals an eventfd in the kernel and the device
    /// runs on the machine's event loop, with no exit to the VMM.
    case ioeventfd
    /// Every kick is an MMIO exit, handled on the vCPU's thread.
    case exit
}

/// A virtio device as a ``Machine`` placed it: its transport, MMIO window, interrupt and
/// notifications, and how the guest learns of it.
public final class VirtioSlot: Sendable {
    /// The machine's name for it ("virtio-blk disk0").
    public let name: String
    /// The device model.
    public let device: any VirtioDevice
    /// Its virtio-mmio transport, registered on the machine's MMIO bus.
    public let transport: VirtioMMIOTransport
    /// The MMIO window.
    public let window: GuestAddressRange
    /// The interrupt line (GSI), injected through an irqfd.
    public let interrupt: UInt32
    /// How queue notifications arrive.
    public let notifications: QueueNotifications
    /// The ioeventfds registered with KVM, until the shutdown takes them away.
    let notifiers: Locked<[WiredNotifier]>

    init(name: String, device: any VirtioDevice, transport: VirtioMMIOTransport, window: GuestAddressRange, interrupt: UInt32,
         notifications: QueueNotifications, notifiers: [WiredNotifier]) {
        self.name = name
        self.device = device
        self.transport = transport
        self.window = window
        self.interrupt = interrupt
        self.notifications = notifications
        self.notifiers = Locked(notifiers)
    }

    /// The kernel command-line parameter that declares this device to Linux's virtio-mmio
    /// driver (`virtio_mmio.device=4K@0xd0000000:5`).
    public var commandLineAnnouncement: String {
        "virtio_mmio.device=\(window.length >> 10)K@0x\(String(window.start.rawValue, radix: 16)):\(interrupt)"
    }

    /// The record that declares this device in ACPI's DSDT.
    public var acpiRecord: ACPITables.VirtioMMIORecord {
        ACPITables.VirtioMMIORecord(base: window.start.rawValue, length: UInt32(window.length), interrupt: interrupt)
    }
}

extension VirtioDeviceType {
    /// The short name Linux and QEMU use ("virtio-blk").
    var shortName: String {
        switch self {
        case .block: return "virtio-blk"
        case .console: return "virtio-console"
        case .entropy: return "virtio-rng"
        default: return "virtio-\(rawValue)"
        }
    }
}

extension Machine {
    /// Adds a virtio device on a new virtio-mmio transport: allocates its MMIO window and
    /// interrupt, registers the transport on the MMIO bus, wires the interrupt as an irqfd and
    /// (by default) one ioeventfd per queue, and records the announcement a Linux guest needs
    /// (command line and ACPI). Only before ``load(_:)``.
    /// - Parameters:
    ///   - device: the device model.
    ///   - name: how errors and reports name it; default "virtio-TYPE N".
    ///   - notifications: overrides ``MachineConfiguration/queueNotificationsByIOEventFD``.
    @discardableResult
    public func add(virtio device: any VirtioDevice, name: String? = nil,
                    notifications: QueueNotifications? = nil) throws(MachineError) -> VirtioSlot {
        let mode = notifications ?? (configuration.queueNotificationsByIOEventFD ? .ioeventfd : .exit)
        return try state.withLock { state throws(MachineError) in
            let label = name ?? "\(device.deviceType.shortName) \(state.virtio.count)"
            try Self.requireComposing(state, device: label)
            let window = try state.allocator.allocateWindow(size: VirtioMMIOTransport.windowSize)
            let gsi = state.allocator.allocateInterrupt()
            let line = try during(.wireInterrupt, device: label) { try vm.makeInterruptLine(gsi: gsi) }
            let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: line)
            try during(.addDevice, device: label) { try mmio.register(transport, at: window.start, length: window.length) }
            // Attached in both modes: the transport also resumes a queue whose notification used
            // up its budget through them, on the event loop.
            let attached = try during(.wireNotifications, device: label) { try transport.attachNotifiers(on: events) }
            var notifiers = attached.map { WiredNotifier(notifier: $0, address: nil) }
            if mode == .ioeventfd {
                do {
                    for (index, notifier) in attached.enumerated() {
                        let address = try window.start.checkedAdd(notifier.registerOffset)
                        try vm.registerIOEventFD(notifier.eventFD, address: address, length: 4, space: .mmio,
                                                 dataMatch: notifier.dataMatch)
                        notifiers[index] = WiredNotifier(notifier: notifier, address: address)
                    }
                } catch {
                    // Those KVM already took must go too: KVM keeps an eventfd it was given.
                    unregisterIOEventFDs(notifiers)
                    transport.detachNotifiers(attached, from: events)
                    throw MachineError(.wireNotifications, device: label, error)
                }
            }
            let slot = VirtioSlot(name: label, device: device, transport: transport, window: window, interrupt: gsi,
                                  notifications: mode, notifiers: notifiers)
            state.virtio.append(slot)
            // The transport saves its registers and queues, and the device's own state when the
            // device can save it; otherwise snapshots of the machine are refused, naming it.
            if device.snapshotState != nil {
                state.statefulDevices.append((label, transport))
            } else {
                state.unsaveableDevices.append(label)
            }
            logger.debug("added \(label) at \(window.start), GSI \(gsi), notifications by \(mode)")
            return slot
        }
    }

    /// Adds a virtio entropy device (virtio-rng) fed by the host's getrandom.
    @discardableResult
    public func addEntropy(name: String? = nil) throws(MachineError) -> VirtioSlot {
        try add(virtio: EntropyDevice(), name: name)
    }

    /// Adds a virtio console (hvc0 in Linux): guest output goes to `output`; `input`, if
    /// given, is read on the event loop and fed to the guest. `ConsoleDevice/receive(_:)`
    /// feeds it from code.
    @discardableResult
    public func addConsole(output: any ByteSink, input: FileDescriptor? = nil, name: String? = nil) throws(MachineError) -> ConsoleDevice {
        let console = ConsoleDevice(output: output)
        let slot = try add(virtio: console, name: name)
        if let input {
            try during(.addDevice, device: slot.name) { try console.attachInput(input, eventLoop: events) }
        }
        return console
    }
}

/// A queue notifier on the machine's event loop, registered with KVM as an ioeventfd at
/// `address` when kicks are delivered that way (nil when they arrive as MMIO exits).
struct WiredNotifier: Sendable {
    let notifier: VirtioMMIOTransport.QueueNotifier
    let address: GuestAddress?
}

extension Machine {
    /// Unregisters `wired` from KVM and stops serving them on the event loop.
    func unwire(_ wired: [WiredNotifier], from transport: VirtioMMIOTransport) {
        unregisterIOEventFDs(wired)
        transport.detachNotifiers(wired.map(\.notifier), from: events)
    }

    /// Takes `wired` back from KVM: a guest's kick there no longer signals them.
    func unregisterIOEventFDs(_ wired: [WiredNotifier]) {
        for entry in wired {
            guard let address = entry.address else { continue }
            try? vm.unregisterIOEventFD(entry.notifier.eventFD, address: address, length: 4, space: .mmio,
                                        dataMatch: entry.notifier.dataMatch)
        }
    }
}
