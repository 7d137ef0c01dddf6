import HVCore
import HVDevices
import HVKVM
import HVParavirt
import Logging

/// One virtual machine and everything it is made of: the KVM VM, guest RAM, the port-I/O and
/// MMIO buses, the event loop that serves its devices, the devices, and its vCPUs.
///
/// A machine is composed in a fixed order, each step a public call anyone can reorder within
/// its phase:
/// 1. ``init(_:)``: RAM (mapped before the irqchip, which is about 10 ms faster here), the
///    in-kernel irqchip and PIT, the buses and the event loop.
/// 2. Devices: ``addLegacyDevices(console:input:)``, ``addDisk(path:readOnly:cacheMode:engine:rateLimit:name:)``,
///    ``addNetwork(tap:mac:mtu:receiveRateLimit:transmitRateLimit:name:)``, ``addEntropy(name:)``, ``addConsole(output:input:name:)``, or any ``add(virtio:name:notifications:)``.
///    Each virtio device gets an MMIO window and an interrupt, its irqfd and one ioeventfd per
///    queue, and is announced to the guest on the command line and in ACPI.
/// 3. ``load(_:)``: the kernel or unikernel, the command line, the initrd and the boot tables.
/// 4. ``start(onVCPUReady:)`` (a thread per vCPU) or ``start(on:weight:)`` (a shared `VCPUScheduler`).
/// 5. `wait()`: the vCPUs' stop reason, after an orderly shutdown that loses nothing: every
///    in-flight request finishes, every writable disk is flushed, the event loop stops.
///
/// ```swift
/// let machine = try Machine(MachineConfiguration(memorySize: 256 << 20))
/// try machine.addLegacyDevices(console: FileDescriptorSink(.standardOutput))
/// try machine.addDisk(path: "disk.img")
/// try machine.load(.linux(kernel: "vmlinux", initrd: "initramfs.cpio"))
/// try machine.start()
/// print(machine.wait())
/// ```
public final class Machine: Sendable {
    /// What the machine was made with.
    public let configuration: MachineConfiguration
    /// The KVM system handle.
    public let kvm: KVM
    /// The KVM VM.
    public let vm: VirtualMachine
    /// Guest RAM.
    public let memory: GuestMemoryMmap
    /// The port-I/O bus (legacy devices, hypercall doorbells).
    public let pio: Bus
    /// The MMIO bus (virtio-mmio windows and other memory-mapped devices).
    public let mmio: Bus
    /// The event loop thread that serves queue notifications, AIO completions and input.
    public let events: EventLoop
    /// Whether the machine made ``events`` (and so stops it at shutdown).
    let ownsEventLoop: Bool
    /// KVM's memory slot of each region of ``memory``, in order (for the dirty log).
    let memorySlots: [UInt32]
    let logger: Logger
    let metrics: MachineMetrics

    enum Phase: Sendable, Equatable {
        case composing, loaded, running, stopped
    }

    struct State: Sendable {
        var phase = Phase.composing
        var allocator: DeviceAllocator
        var virtio: [VirtioSlot] = []
        var disks: [MachineDisk] = []
        var networks: [MachineNetwork] = []
        var vsock: VsockDevice?
        var legacyNames: Set<String> = []
        /// Devices whose state snapshots save, in the order they were added.
        var statefulDevices: [(name: String, device: any SnapshotStateful)] = []
        /// Devices that cannot be saved yet: a snapshot of the machine is refused, naming them.
        var unsaveableDevices: [String] = []
        /// The snapshot this machine is being restored from (``Machine/init(restoring:_:copyingMemory:)``).
        var restoring: MachineSnapshot?
        /// The identity of the last snapshot taken or restored: a diff snapshot's parent.
        var lastSnapshot: UInt64?
        /// Whether a snapshot is being taken (a second one at once is refused).
        var snapshotting = false
        var extraCommandLine: [String] = []
        var boot: LoadedBoot?
        var traps: [TrapSite: any RegisterTrap] = [:]
        var dispatcher: HypercallDispatcher?
        var runner: VCPURunner?
        var scheduled: ScheduledVM?
        var result: MachineResult?
    }

    let state: Locked<State>
    /// The event loop's seccomp filter, installed on its thread from ``init(_:)``: nil when
    /// there is none to wait for (a shared loop, or no filter).
    private let eventLoopFilter: EventLoop.Pending<SeccompError?>?
    /// The vCPUs' seccomp filter, built on the event loop's thread from ``init(_:)`` (nil as
    /// for ``eventLoopFilter``).
    private let vcpuFilter: EventLoop.Pending<SeccompFilter>?
    /// Held through the shutdown, so a second waiter gets the first one's result.
    let shutdownResult = Locked<MachineResult?>(nil)

    /// Creates the VM with its RAM, irqchip, PIT, buses and event loop. Nothing runs yet.
    public init(_ configuration: MachineConfiguration = MachineConfiguration()) throws(MachineError) {
        try configuration.validate()
        self.configuration = configuration
        logger = configuration.logger
        metrics = MachineMetrics(vm: configuration.name, factory: configuration.metricsFactory)
        let kvm: KVM, vm: VirtualMachine
        do {
            kvm = try KVM()
            vm = try kvm.createVM()
        } catch { throw MachineError(.createVM, error) }
        var layout = configuration.restoredMemory ?? configuration.memoryLayout
        if configuration.dirtyPageTracking {
            for index in layout.indices { layout[index].options.insert(.logWrites) }
        }
        let memory = try during(.mapMemory) { try GuestMemoryMmap(layout) }
        // RAM before the irqchip: the first slot added after KVM_CREATE_IRQCHIP costs about
        // 10 ms on this kind of host, 0.1 ms before it.
        memorySlots = try during(.mapMemory) { try vm.map(memory, logDirtyPages: configuration.dirtyPageTracking) }
        if configuration.interruptControllers {
            try during(.createInterruptControllers) {
                try vm.createIRQChip()
                try vm.createPIT()
            }
        }
        (self.kvm, self.vm, self.memory) = (kvm, vm, memory)
        pio = Bus(space: .pio)
        mmio = Bus(space: .mmio)
        var filterInstall: EventLoop.Pending<SeccompError?>?
        var vcpuFilterBuild: EventLoop.Pending<SeccompFilter>?
        if let shared = configuration.sharedEventLoop {
            events = shared
            ownsEventLoop = false
        } else {
            let loop = try during(.startEventLoop) { try EventLoop(name: "\(configuration.name)-io") }
            // KVM_GET_SUPPORTED_CPUID takes about half a millisecond on an emulating host; the
            // idle loop asks (before its filter, which does not allow it) while this thread
            // composes, and the vCPU setup finds the answer cached.
            _ = loop.submit { [kvm] in _ = try? kvm.supportedCPUID() }
            if let action = configuration.systemCallFilter {
                MachineSystemCalls.prepareProcess()
                // Built (a few hundred BPF instructions, a tenth of a millisecond) and installed
                // on the loop's thread while this one goes on composing; start() waits for the
                // outcome before any guest code runs. The vCPUs' filter is built there too.
                filterInstall = loop.submit { () -> SeccompError? in
                    do throws(SeccompError) { try MachineSystemCalls.eventLoop(mismatchAction: action).installOnCurrentThread() } catch {
                        return error
                    }
                    return nil
                }
                vcpuFilterBuild = loop.submit { MachineSystemCalls.vcpu(mismatchAction: action) }
                guard filterInstall != nil, vcpuFilterBuild != nil else {
                    loop.shutdown()
                    throw MachineError(.restrictSystemCalls, reason: "the event loop's filter: the loop stopped")
                }
            }
            events = loop
            ownsEventLoop = true
        }
        eventLoopFilter = filterInstall
        vcpuFilter = vcpuFilterBuild
        state = Locked(State(allocator: DeviceAllocator(areaStart: configuration.deviceAreaStart, areaSize: configuration.deviceAreaSize,
                                                       interrupts: configuration.deviceInterrupts)))
    }

    /// A machine with `memorySize` bytes of RAM and `vcpuCount` vCPUs, the rest as
    /// ``MachineConfiguration``'s defaults.
    public convenience init(memorySize: UInt64, vcpuCount: Int = 1) throws(MachineError) {
        try self.init(MachineConfiguration(memorySize: memorySize, vcpuCount: vcpuCount))
    }

    deinit {
        if ownsEventLoop { events.shutdown() }
    }

    // MARK: Devices

    /// The virtio devices added so far, in order.
    public var virtioDevices: [VirtioSlot] { state.withLock { $0.virtio } }
    /// The disks added so far, in order.
    public var disks: [MachineDisk] { state.withLock { $0.disks } }
    /// The network interfaces added so far, in order.
    public var networks: [MachineNetwork] { state.withLock { $0.networks } }
    /// The vsock device, if one was added.
    public var vsock: VsockDevice? { state.withLock { $0.vsock } }
    /// The hypercall dispatcher serving the loaded guest's services (per-call statistics), or
    /// nil when the guest has none.
    public var hypercallDispatcher: HypercallDispatcher? { state.withLock { $0.dispatcher } }

    /// Appends `argument` to a Linux guest's command line (after the caller's own and before
    /// the device announcements). For pseudo-devices a guest finds by a parameter.
    public func announce(_ argument: String) throws(MachineError) {
        try state.withLock { state throws(MachineError) in
            try Self.requireComposing(state, device: nil)
            state.extraCommandLine.append(argument)
        }
    }

    /// Reserves an MMIO window of `size` bytes in the device area and registers `device`
    /// there. Returns the window.
    @discardableResult
    public func add(mmio device: any BusDevice, size: UInt64, name: String) throws(MachineError) -> GuestAddressRange {
        try state.withLock { state throws(MachineError) in
            try Self.requireComposing(state, device: name)
            let window = try state.allocator.allocateWindow(size: size)
            try during(.addDevice, device: name) { try mmio.register(device, at: window.start, length: window.length) }
            state.record(device, name: name)
            return window
        }
    }

    /// Registers `device` on the port-I/O bus for `count` ports from `port` (I/O ports are
    /// their own 16-bit address space, not guest-physical addresses).
    public func add(pio device: any BusDevice, port: IOPort, count: UInt16, name: String) throws(MachineError) {
        try state.withLock { state throws(MachineError) in
            try Self.requireComposing(state, device: name)
            try during(.addDevice, device: name) { try pio.register(device, port: port, count: count) }
            state.record(device, name: name)
        }
    }

    static func requireComposing(_ state: State, device: String?) throws(MachineError) {
        guard state.phase == .composing else {
            throw MachineError(.addDevice, device: device,
                               reason: "devices can only be added before the guest is loaded (the machine is \(state.phase))")
        }
    }

    // MARK: Running

    /// Starts the vCPUs, one host thread each (`VCPURunner`), after ``load(_:)``.
    /// - Parameter onVCPUReady: runs on each vCPU's thread right before it first enters the
    ///   guest (for timing, pinning checks, or extra per-vCPU setup of your own).
    public func start(onVCPUReady: (@Sendable (VCPU) throws(KVMError) -> Void)? = nil) throws(MachineError) {
        let (boot, traps) = try takeBootForStart()
        let runner = VCPURunner(vm: vm, pio: pio, mmio: mmio, traps: traps, resetPolicy: configuration.resetPolicy,
                                placement: configuration.placement, logger: logger)
        resetLine.target = .runner(runner)
        state.withLock { $0.runner = runner }
        do {
            let setup = try vcpuSetup(for: boot)
            let filter = configuration.systemCallFilter.map { vcpuFilter?.wait() ?? MachineSystemCalls.vcpu(mismatchAction: $0) }
            try runner.start(vcpuCount: configuration.vcpuCount) { vcpu throws(KVMError) in
                try setup(vcpu)
                try onVCPUReady?(vcpu)
                // Last: from here the thread only runs the guest and serves its exits.
                do throws(SeccompError) { try filter?.installOnCurrentThread() } catch {
                    if case let .install(errno) = error { throw .systemCall("seccomp (vcpu \(vcpu.id))", errno) }
                    throw .invalidArgument("seccomp (vcpu \(vcpu.id)): \(error)")
                }
            }
        } catch {
            state.withLock { $0.phase = .stopped }
            throw MachineError(.start, error)
        }
    }

    /// Runs the vCPUs as one VM of a shared `VCPUScheduler` (many VMs on a few worker
    /// threads), after ``load(_:)``. A reset request stops the VM (the scheduler does not
    /// restart VMs).
    public func start(on scheduler: VCPUScheduler, weight: Int = 1) throws(MachineError) {
        let (boot, traps) = try takeBootForStart()
        let setup = try vcpuSetup(for: boot)
        do {
            let scheduled = try scheduler.add(vm, pio: pio, mmio: mmio, traps: traps, vcpuCount: configuration.vcpuCount,
                                              weight: weight, setup: setup)
            resetLine.target = .scheduled(scheduled)
            state.withLock { $0.scheduled = scheduled }
        } catch {
            state.withLock { $0.phase = .stopped }
            throw MachineError(.start, error)
        }
    }

    /// Asks the vCPUs to stop (from any thread); `wait()` then returns.
    public func stop() {
        let (runner, scheduled) = state.withLock { ($0.runner, $0.scheduled) }
        runner?.stop()
        scheduled?.stop()
    }

    /// Pauses every vCPU outside the guest. Returns false when the machine is not running.
    @discardableResult
    public func pause() -> Bool {
        let (runner, scheduled) = state.withLock { ($0.runner, $0.scheduled) }
        if let runner { return runner.pause() }
        return scheduled?.pause() ?? false
    }

    /// Lets paused vCPUs run again.
    public func resume() {
        let (runner, scheduled) = state.withLock { ($0.runner, $0.scheduled) }
        runner?.resume()
        scheduled?.resume()
    }

    /// The reset line legacy devices pull (the i8042's reset): connected at start.
    let resetLine = ResetLine()

    /// Asks for a guest reset, as the i8042's reset line does: the `ResetPolicy` decides.
    public func requestReset() {
        resetLine.pull()
    }

    /// Waits until the vCPUs stop, then shuts the machine down in order (see
    /// ``MachineResult``). Returns at once with the same result when called again. Before
    /// ``start(onVCPUReady:)`` it returns a result saying the machine never ran.
    public func wait() -> MachineResult {
        let (runner, scheduled, done) = state.withLock { ($0.runner, $0.scheduled, $0.result) }
        if let done { return done }
        let reason: StopReason
        if let runner {
            reason = runner.join()
        } else if let scheduled {
            reason = scheduled.join()
        } else {
            return MachineResult(stopReason: .stopRequested, shutdown: ShutdownReport(ran: false))
        }
        return finish(reason)
    }

    /// `wait()` for async callers: suspends without blocking a thread of the pool until the
    /// vCPUs stop, then shuts down.
    public func wait() async -> MachineResult {
        let (runner, scheduled, done) = state.withLock { ($0.runner, $0.scheduled, $0.result) }
        if let done { return done }
        let reason: StopReason
        if let runner {
            reason = await runner.wait()
        } else if let scheduled {
            reason = await scheduled.wait()
        } else {
            return MachineResult(stopReason: .stopRequested, shutdown: ShutdownReport(ran: false))
        }
        return finish(reason)
    }

    /// Loads `source`, starts the vCPUs on their own threads and waits for the result.
    public func run(_ source: BootSource) throws(MachineError) -> MachineResult {
        try load(source)
        try start()
        return wait()
    }

    /// Publishes the machine's statistics through swift-metrics, so that any exporter the embedder
    /// bootstrapped (swift-prometheus, swift-otel, ...) sees them with no HVKit code.
    ///
    /// Nothing is added to the exit or I/O paths: the counters HVKit keeps anyway (per-vCPU
    /// statistics, transport and queue counts, block counts, hypercall statistics) are read when
    /// this runs (from an exporter's scrape, or a timer of the embedder's) and at
    /// shutdown, and each swift-metrics counter is incremented by what changed since the last
    /// read. Every metric carries the dimension `vm` (``MachineConfiguration/name``):
    ///
    /// | label | more dimensions | what |
    /// |---|---|---|
    /// | `hvkit_vcpu_exits_total` | `vcpu`, `kind` (pio, mmio, trap, interrupted, other) | returns from KVM_RUN |
    /// | `hvkit_vcpu_slices_total` | `vcpu` | scheduler turns (a shared `VCPUScheduler` only) |
    /// | `hvkit_vcpu_parks_total` | `vcpu` | pauses, and halts under a scheduler |
    /// | `hvkit_virtio_notifications_total` | `device` | queue kicks that reached the device |
    /// | `hvkit_virtio_requests_total` | `device` | chains returned to the driver |
    /// | `hvkit_virtio_rejected_requests_total` | `device` | malformed chains refused |
    /// | `hvkit_virtio_queue_breaks_total` | `device` | queues broken by a misbehaving driver |
    /// | `hvkit_virtio_refused_accesses_total` | `device` | illegal register accesses |
    /// | `hvkit_block_bytes_total` | `device`, `direction` (read, write) | bytes moved by a disk |
    /// | `hvkit_block_errors_total` | `device` | disk requests that failed on the host |
    /// | `hvkit_guest_events_total` | `device`, `kind` | guest-caused events, each counted though its log lines are rate-limited |
    /// | `hvkit_hypercalls_total` | `call` | hypercalls handled |
    /// | `hvkit_hypercall_errors_total` | `call` | hypercalls that returned an error |
    public func publishMetrics() {
        metrics.publish(self)
    }

    /// Per-vCPU statistics (exits by kind, time in the guest), while or after it runs.
    public func statistics() -> [UInt32: VCPUStatistics] {
        let (runner, scheduled) = state.withLock { ($0.runner, $0.scheduled) }
        return runner?.statistics() ?? scheduled?.statistics() ?? [:]
    }

    private func takeBootForStart() throws(MachineError) -> (LoadedBoot, [TrapSite: any RegisterTrap]) {
        if let eventLoopFilter {
            switch eventLoopFilter.wait() {
            case .some(.none): break
            case let .some(.some(error)):
                throw MachineError(.restrictSystemCalls, reason: "the event loop's filter: \(error)")
            case .none:
                throw MachineError(.restrictSystemCalls, reason: "the event loop's filter: the loop stopped")
            }
        }
        return try state.withLock { state throws(MachineError) in
            guard state.phase == .loaded, let boot = state.boot else {
                throw MachineError(.start, reason: state.phase == .composing
                    ? "nothing to run: load a guest first (Machine.load)"
                    : "the machine was already started")
            }
            state.phase = .running
            return (boot, state.traps)
        }
    }

    /// The setup each vCPU runs on its own thread before it first enters the guest.
    private func vcpuSetup(for boot: LoadedBoot) throws(MachineError) -> VCPURunner.Setup {
        if case let .restored(states) = boot {
            // The saved CPUID comes back with the rest of each vCPU's state.
            return { vcpu throws(KVMError) in
                guard let saved = states[vcpu.id] else { throw .invalidArgument("the snapshot has no state for vCPU \(vcpu.id)") }
                try vcpu.restoreState(saved)
            }
        }
        var cpu = try during(.start) { try GuestCPUModel(kvm: kvm, vcpuCount: configuration.vcpuCount) }
        for feature in configuration.hiddenCPUFeatures { cpu.removeFeature(feature) }
        let memory = self.memory
        let model = cpu
        switch boot {
        case let .linux(plan):
            return { vcpu throws(KVMError) in
                try vcpu.setCPUID(model.entries(forVCPU: vcpu.id))
                // The others wait in KVM_RUN for the guest's startup IPI.
                guard vcpu.id == 0 else { return }
                try vcpu.setupLinuxBoot(plan, memory: memory)
            }
        case let .unikernel(entry, argument):
            return { vcpu throws(KVMError) in
                try vcpu.setCPUID(model.entries(forVCPU: vcpu.id))
                guard vcpu.id == 0 else { return }
                try vcpu.setupLongMode(memory: memory, entry: entry, argument: argument)
            }
        case .restored:
            throw MachineError(.start, reason: "a restored machine's vCPUs were not set up from its snapshot")
        }
    }
}

/// Where a reset request goes once the machine runs.
final class ResetLine: Sendable {
    enum Target: Sendable {
        case runner(VCPURunner)
        case scheduled(ScheduledVM)
    }

    private let storage = Locked<Target?>(nil)

    var target: Target? {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }

    func pull() {
        switch target {
        case let .runner(runner): runner.requestReset()
        case let .scheduled(scheduled): scheduled.stop()
        case nil: break
        }
    }
}

extension Machine.State {
    /// Notes whether snapshots can save `device`.
    mutating func record(_ device: any BusDevice, name: String) {
        if let stateful = device.snapshotState {
            statefulDevices.append((name, stateful))
        } else {
            unsaveableDevices.append(name)
        }
    }
}

extension Machine.Phase: CustomStringConvertible {
    var description: String {
        switch self {
        case .composing: return "being composed"
        case .loaded: return "loaded"
        case .running: return "running"
        case .stopped: return "stopped"
        }
    }
}
