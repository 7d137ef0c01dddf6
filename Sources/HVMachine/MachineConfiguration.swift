import HVCore
import HVKVM
import Logging
import Metrics

/// What a ``Machine`` is made of before any device is added: RAM, vCPUs, where devices go, and
/// how the vCPUs run. Every field has a default that boots Linux and HVKit's guests.
public struct MachineConfiguration: Sendable {
    /// Guest RAM in bytes. Up to 3 GiB sits at guest address 0; the rest above 4 GiB, leaving
    /// the 32-bit hole (3 to 4 GiB) for devices, the I/O APIC and the local APIC.
    public var memorySize: UInt64
    /// vCPUs, 1 to 254.
    public var vcpuCount: Int
    /// Options for the RAM mapping. `.noReserve` (the default) lets a large guest start
    /// without the host committing its whole RAM.
    public var memoryOptions: MemoryRegionOptions = [.noReserve]
    /// Where virtio-mmio windows and other allocated MMIO devices start, in the 32-bit hole.
    public var deviceAreaStart = GuestAddress(0xD000_0000)
    /// How many bytes from ``deviceAreaStart`` devices may use (the default reaches the I/O
    /// APIC's page at 0xFEC0_0000).
    public var deviceAreaSize: UInt64 = 0x2EC0_0000
    /// Interrupt lines (GSIs) handed to virtio devices, in order. When every one is taken,
    /// further devices share them, as virtio-mmio drivers allow (Linux requests them shared).
    public var deviceInterrupts: [UInt32] = MachineConfiguration.defaultDeviceInterrupts
    /// Whether queue notifications are wired as ioeventfds by default, so that a guest's kick
    /// reaches the device on the event loop without an exit to the VMM. Turn off to see every
    /// kick as an MMIO exit (a per-device option overrides this).
    public var queueNotificationsByIOEventFD = true
    /// CPUID features hidden from the guest. The default hides CMPXCHG16B on hosts whose KVM
    /// emulates kernel code (no VMX/SVM), which refuse that instruction; Linux runs without it.
    public var hiddenCPUFeatures: [GuestCPUModel.Feature] = HostVirtualization.current.isEmulated ? [.cx16] : []
    /// Whether the VM gets KVM's in-kernel interrupt controllers (PIC, I/O APIC, local APICs)
    /// and PIT. Devices that interrupt the guest (virtio, the 16550) and SMP guests need them;
    /// a unikernel that only makes hypercalls can do without, and then its HLT exits to the VMM
    /// instead of waiting in the kernel.
    public var interruptControllers = true
    /// An event loop shared with other machines (many small VMs need not have a thread each);
    /// nil gives the machine its own, stopped at shutdown. A shared loop is left running.
    public var sharedEventLoop: EventLoop?
    /// What a triple fault, a reset event or the i8042's reset line does.
    public var resetPolicy: ResetPolicy = .stop
    /// Which host CPUs the vCPU threads may run on (own runner only).
    public var placement: VCPUPlacement = .unpinned
    /// Where ``Machine/publishMetrics()`` reports: nil for swift-metrics' bootstrapped system
    /// (`MetricsSystem.bootstrap`), or a factory of the machine's own (a test's recorder).
    public var metricsFactory: (any MetricsFactory)?
    /// The machine's name, used for its threads and log labels, and as the `vm` dimension of
    /// its metrics.
    public var name: String = "hvkit"
    /// When set, the machine's threads run under seccomp allow lists
    /// (``MachineSystemCalls``): the event loop from creation, each vCPU thread from just before
    /// it first enters the guest, and the waiting thread once it calls
    /// ``Machine/restrictCallingThread(allowingSnapshots:)``. A call outside its thread's list meets this action
    /// (`.killProcess` in production). Nil (the default) installs nothing. Applies to the
    /// machine's own runner and event loop, not to a shared ``sharedEventLoop`` or a
    /// `VCPUScheduler`'s workers, which serve other machines too.
    public var systemCallFilter: SeccompAction?
    /// Whether the machine records which pages of RAM change, so that ``Machine/snapshot(to:kind:leavePaused:)``
    /// can take diff snapshots: KVM's dirty log for the guest's own writes, and a log of the
    /// pages the VMM writes (devices, services), which KVM does not see. Costs a little on
    /// every guest page's first write after a snapshot and an atomic OR per page a device writes.
    public var dirtyPageTracking = false
    /// Where the machine logs (swift-log).
    public var logger: Logger = Logger(label: "hvkit.machine")
    /// RAM mapped from a snapshot's memory file instead of ``memoryLayout`` (set by
    /// ``Machine/init(restoring:_:copyingMemory:)``).
    var restoredMemory: [MemoryRegionSpec]?

    /// The default GSIs for devices: the I/O APIC's pins that no legacy device of
    /// ``Machine/addLegacyDevices(console:input:)`` uses (0 timer, 1 keyboard, 2 cascade,
    /// 4 serial, 8 RTC, 13 FPU are left out).
    public static let defaultDeviceInterrupts: [UInt32] = [5, 6, 7, 9, 10, 11, 12, 14, 15] + Array(16...23)

    /// A configuration with `memorySize` bytes of RAM and `vcpuCount` vCPUs.
    public init(memorySize: UInt64 = 256 << 20, vcpuCount: Int = 1) {
        self.memorySize = memorySize
        self.vcpuCount = vcpuCount
    }

    /// The RAM regions: below the 32-bit hole, and the rest from 4 GiB.
    var memoryLayout: [MemoryRegionSpec] {
        let low = min(memorySize, Self.lowMemoryLimit)
        var regions = [MemoryRegionSpec(start: GuestAddress(0), size: low, options: memoryOptions)]
        if memorySize > low {
            regions.append(MemoryRegionSpec(start: GuestAddress(4 << 30), size: memorySize - low, options: memoryOptions))
        }
        return regions
    }

    /// Where RAM below 4 GiB ends: the 32-bit hole starts here.
    static let lowMemoryLimit: UInt64 = 3 << 30

    func validate() throws(MachineError) {
        guard memorySize >= 2 << 20, memorySize % 4096 == 0 else {
            throw MachineError(.mapMemory, reason: "memory size \(memorySize) bytes: at least 2 MiB, a multiple of 4 KiB")
        }
        guard (1...254).contains(vcpuCount) else {
            throw MachineError(.start, reason: "\(vcpuCount) vCPUs: 1 to 254")
        }
        guard vcpuCount == 1 || interruptControllers else {
            throw MachineError(.start, reason: "\(vcpuCount) vCPUs need the in-kernel interrupt controllers (interruptControllers)")
        }
        guard !deviceInterrupts.isEmpty else {
            throw MachineError(.addDevice, reason: "no device interrupts configured")
        }
        let start = deviceAreaStart.rawValue
        guard start >= Self.lowMemoryLimit, deviceAreaSize > 0, deviceAreaSize <= (4 << 30) - start else {
            throw MachineError(.addDevice, reason: "device area \(deviceAreaStart) + \(deviceAreaSize) bytes is not inside the 32-bit hole (3 to 4 GiB)")
        }
    }
}
