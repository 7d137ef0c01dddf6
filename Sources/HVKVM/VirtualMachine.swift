import CKVM
import Glibc
import HVCore
import Synchronization
import SystemPackage

/// Which bus an ioeventfd listens on.
public enum IOEventSpace: Sendable {
    case pio
    case mmio
}

/// A KVM virtual machine: its memory slots, in-kernel interrupt controllers, irqfds and
/// ioeventfds, dirty-page logging, and the factory for its vCPUs. Thread-safe.
public final class VirtualMachine: Sendable {
    /// The system handle the VM was created from.
    public let kvm: KVM
    /// The VM's descriptor, closed when this object goes away.
    public let fileDescriptor: FileDescriptor

    struct Slot {
        var guestAddress: UInt64
        var size: UInt64
        var hostAddress: UInt
        var flags: UInt32
    }

    private let slots = Locked<[UInt32: Slot]>([:])
    /// Guest memory objects registered with ``map(_:)``, kept alive as long as the VM is.
    private let mappedMemory = Locked<[GuestMemoryMmap]>([])
    private let irqchipCreated = Atomic<Bool>(false)

    private let pitCreated = Atomic<Bool>(false)

    init(kvm: KVM, fileDescriptor: FileDescriptor) {
        self.kvm = kvm
        self.fileDescriptor = fileDescriptor
    }

    deinit { fileDescriptor.closeQuietly() }

    // MARK: Memory

    /// Registers every region of `memory` as a memory slot, numbering slots from the first
    /// free one. Read-only regions become read-only slots (guest writes exit as MMIO).
    /// Returns the slot numbers, in region order. The VM keeps `memory` alive.
    @discardableResult
    public func map(_ memory: GuestMemoryMmap, logDirtyPages: Bool = false) throws(KVMError) -> [UInt32] {
        var assigned: [UInt32] = []
        for region in memory.regions {
            var flags: UInt32 = 0
            if region.isReadOnly {
                try kvm.require(.readOnlyMemory)
                flags |= UInt32(KVM_MEM_READONLY)
            }
            if logDirtyPages { flags |= UInt32(KVM_MEM_LOG_DIRTY_PAGES) }
            // Choosing the free slot and registering it under one lock keeps two concurrent
            // map() calls from picking the same number.
            let slot = try slots.withLock { (slots) throws(KVMError) -> UInt32 in
                // count + 1 numbers hold at most count slots, so 0...count has a free one.
                let last = UInt32(slots.count)
                let slot = (0...last).first { slots[$0] == nil } ?? last
                try applyMemorySlot(slot, Slot(guestAddress: region.range.start.rawValue, size: region.size,
                                               hostAddress: region.hostAddress, flags: flags), in: &slots)
                return slot
            }
            assigned.append(slot)
        }
        mappedMemory.withLock { $0.append(memory) }
        return assigned
    }

    /// KVM_SET_USER_MEMORY_REGION for one slot. `size` 0 deletes the slot.
    ///
    /// The caller guarantees that `[hostAddress, hostAddress + size)` stays mapped while the
    /// slot exists; ``map(_:logDirtyPages:)`` does that for you.
    public func setMemorySlot(
        _ slot: UInt32, guestAddress: GuestAddress, size: UInt64, hostAddress: UInt, flags: UInt32 = 0
    ) throws(KVMError) {
        let wanted = Slot(guestAddress: guestAddress.rawValue, size: size, hostAddress: hostAddress, flags: flags)
        try slots.withLock { (slots) throws(KVMError) in try applyMemorySlot(slot, wanted, in: &slots) }
    }

    /// KVM_SET_USER_MEMORY_REGION and the bookkeeping, done while the caller holds the lock
    /// on `slots`, so the kernel's view and ours never disagree.
    private func applyMemorySlot(_ number: UInt32, _ slot: Slot, in slots: inout [UInt32: Slot]) throws(KVMError) {
        var region = kvm_userspace_memory_region(
            slot: number, flags: slot.flags, guest_phys_addr: slot.guestAddress,
            memory_size: slot.size, userspace_addr: UInt64(slot.hostAddress))
        try kvmIoctl(fileDescriptor, CKVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION")
        slots[number] = slot.size == 0 ? nil : slot
    }

    /// The registered slots: number, guest range and flags.
    public var memorySlots: [(slot: UInt32, range: GuestAddressRange, flags: UInt32)] {
        slots.withLock { slots in
            slots.sorted { $0.key < $1.key }.compactMap { key, slot in
                guard let range = try? GuestAddressRange(start: GuestAddress(slot.guestAddress), length: slot.size) else { return nil }
                return (key, range, slot.flags)
            }
        }
    }

    // MARK: Dirty-page logging

    /// Turns dirty-page logging on or off for `slot`.
    public func setDirtyLogging(slot: UInt32, enabled: Bool) throws(KVMError) {
        try slots.withLock { (slots) throws(KVMError) in
            guard var current = slots[slot] else { throw .invalidArgument("memory slot \(slot) is not registered") }
            let bit = UInt32(KVM_MEM_LOG_DIRTY_PAGES)
            current.flags = enabled ? current.flags | bit : current.flags & ~bit
            try applyMemorySlot(slot, current, in: &slots)
        }
    }

    /// The pages of `slot` written since the last call (KVM_GET_DIRTY_LOG, which also resets
    /// the log), as page indices relative to the slot's start.
    public func dirtyPages(slot: UInt32) throws(KVMError) -> [UInt64] {
        guard let current = slots.withLock({ $0[slot] }) else {
            throw .invalidArgument("memory slot \(slot) is not registered")
        }
        guard current.flags & UInt32(KVM_MEM_LOG_DIRTY_PAGES) != 0 else {
            throw .invalidArgument("dirty-page logging is off for memory slot \(slot)")
        }
        let pages = (current.size + 4095) / 4096
        let bitmap = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: Int((pages + 63) / 64))
        defer { unsafe bitmap.deallocate() }
        unsafe bitmap.initialize(repeating: 0)
        var log = unsafe kvm_dirty_log()
        unsafe log.slot = slot
        unsafe log.dirty_bitmap = UnsafeMutableRawPointer(bitmap.baseAddress)
        unsafe try kvmIoctl(fileDescriptor, CKVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG")
        var dirty: [UInt64] = []
        for unsafe (wordIndex, word) in unsafe bitmap.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                let bit = UInt64(bits.trailingZeroBitCount)
                dirty.append(UInt64(wordIndex) * 64 + bit)
                bits &= bits - 1
            }
        }
        return dirty
    }

    // MARK: Interrupt controllers and x86 housekeeping

    /// Creates the in-kernel PIC, IOAPIC and per-vCPU LAPICs. Call before creating vCPUs,
    /// and best after mapping guest memory: measured on a 6.18 host, the first memory slot
    /// added after the irqchip takes about 10 ms (the same slot added before it, 0.1 ms), which
    /// is most of a microVM's start-up.
    public func createIRQChip() throws(KVMError) {
        try kvmIoctl(fileDescriptor, CKVM_CREATE_IRQCHIP, value: 0, "KVM_CREATE_IRQCHIP")
        irqchipCreated.store(true, ordering: .releasing)
    }

    /// Whether ``createIRQChip()`` succeeded (HLT then waits in the kernel, not in userspace).
    public var hasIRQChip: Bool { irqchipCreated.load(ordering: .acquiring) }

    /// Creates the in-kernel i8254 PIT. Needs the in-kernel irqchip.
    public func createPIT() throws(KVMError) {
        var config = kvm_pit_config()
        try kvmIoctl(fileDescriptor, CKVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2")
        pitCreated.store(true, ordering: .releasing)
    }

    /// Whether ``createPIT()`` succeeded.
    public var hasPIT: Bool { pitCreated.load(ordering: .acquiring) }

    /// Sets the three-page region Intel VMX needs for real-mode emulation's TSS. It must not
    /// overlap guest RAM or devices; 0xfffbd000 (just below the BIOS area) is customary.
    public func setTSSAddress(_ address: GuestAddress) throws(KVMError) {
        try kvmIoctl(fileDescriptor, CKVM_SET_TSS_ADDR, value: UInt(address.rawValue), "KVM_SET_TSS_ADDR")
    }

    /// Sets the one-page identity-map table VMX uses for real mode; customary 0xfffbc000.
    public func setIdentityMapAddress(_ address: GuestAddress) throws(KVMError) {
        var value = address.rawValue
        try kvmIoctl(fileDescriptor, CKVM_SET_IDENTITY_MAP_ADDR, &value, "KVM_SET_IDENTITY_MAP_ADDR")
    }

    /// Sets a GSI's level on the in-kernel irqchip (KVM_IRQ_LINE).
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        try kvmIoctl(fileDescriptor, CKVM_IRQ_LINE, &line, "KVM_IRQ_LINE")
    }

    // MARK: irqfd and ioeventfd

    /// Makes every write to `eventfd` inject GSI `gsi` (KVM_IRQFD). Needs the irqchip.
    public func registerIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(KVMError) {
        // KVM answers EINVAL without one, which says nothing of the cause.
        guard hasIRQChip else {
            throw .invalidArgument("KVM_IRQFD for GSI \(gsi) needs the in-kernel irqchip: call createIRQChip() first")
        }
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventfd.fileDescriptor.rawValue)
        request.gsi = gsi
        try kvmIoctl(fileDescriptor, CKVM_IRQFD, &request, "KVM_IRQFD")
    }

    /// Undoes ``registerIRQFD(_:gsi:)``.
    public func unregisterIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventfd.fileDescriptor.rawValue)
        request.gsi = gsi
        request.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        try kvmIoctl(fileDescriptor, CKVM_IRQFD, &request, "KVM_IRQFD(deassign)")
    }

    /// An interrupt line that injects `gsi` through a new irqfd.
    public func makeInterruptLine(gsi: UInt32) throws(KVMError) -> IRQFDLine {
        let eventfd: EventFD
        do { eventfd = try EventFD() } catch { throw .systemCall("eventfd", error) }
        try registerIRQFD(eventfd, gsi: gsi)
        return IRQFDLine(eventfd: eventfd, gsi: gsi)
    }

    /// Makes a guest write of `length` bytes at `address` signal `eventfd` in the kernel,
    /// without an exit to userspace (KVM_IOEVENTFD). With `dataMatch`, only writes of that
    /// value do. `length` is 1, 2, 4 or 8 (0 matches any length for MMIO).
    public func registerIOEventFD(
        _ eventfd: EventFD, address: GuestAddress, length: UInt32, space: IOEventSpace, dataMatch: UInt64? = nil
    ) throws(KVMError) {
        try ioeventfd(eventfd, address: address, length: length, space: space, dataMatch: dataMatch, deassign: false)
    }

    /// Undoes ``registerIOEventFD(_:address:length:space:dataMatch:)``; pass the same values.
    public func unregisterIOEventFD(
        _ eventfd: EventFD, address: GuestAddress, length: UInt32, space: IOEventSpace, dataMatch: UInt64? = nil
    ) throws(KVMError) {
        try ioeventfd(eventfd, address: address, length: length, space: space, dataMatch: dataMatch, deassign: true)
    }

    private func ioeventfd(
        _ eventfd: EventFD, address: GuestAddress, length: UInt32, space: IOEventSpace, dataMatch: UInt64?, deassign: Bool
    ) throws(KVMError) {
        guard [0, 1, 2, 4, 8].contains(length), !(space == .pio && length == 0) else {
            throw .invalidArgument("ioeventfd length \(length) (1, 2, 4 or 8; 0 only for MMIO)")
        }
        var request = kvm_ioeventfd()
        request.addr = address.rawValue
        request.len = length
        request.fd = eventfd.fileDescriptor.rawValue
        if space == .pio { request.flags |= CKVM_IOEVENTFD_FLAG_PIO }
        if let dataMatch {
            request.flags |= CKVM_IOEVENTFD_FLAG_DATAMATCH
            request.datamatch = dataMatch
        }
        if deassign { request.flags |= CKVM_IOEVENTFD_FLAG_DEASSIGN }
        try kvmIoctl(fileDescriptor, CKVM_IOEVENTFD, &request, "KVM_IOEVENTFD")
    }

    // MARK: vCPUs

    // MARK: Capabilities

    /// KVM_CHECK_EXTENSION on this VM (some answers depend on the VM, not only the host).
    public func checkExtension(_ capability: Capability) -> Int32 {
        (try? kvmIoctl(fileDescriptor, CKVM_CHECK_EXTENSION, value: UInt(capability.rawValue), "KVM_CHECK_EXTENSION")) ?? 0
    }

    /// The hypercall numbers KVM can forward to userspace as ``VMExit/hypercall(number:arguments:longMode:)``
    /// (KVM_CAP_EXIT_HYPERCALL): bit N set means hypercall N. Mainline KVM forwards only
    /// KVM_HC_MAP_GPA_RANGE (12), and checks its arguments itself; it answers every other
    /// `vmcall` in the kernel with -KVM_ENOSYS. Empty when the capability is absent.
    public var forwardableHypercalls: UInt64 {
        UInt64(UInt32(bitPattern: max(0, checkExtension(.exitHypercall))))
    }

    /// Makes KVM forward the hypercalls whose bits are set in `mask` to userspace. `mask`
    /// must be a subset of ``forwardableHypercalls``.
    public func enableHypercallExits(_ mask: UInt64) throws(KVMError) {
        guard mask & ~forwardableHypercalls == 0 else {
            throw .missingCapability("KVM_CAP_EXIT_HYPERCALL for hypercall mask 0x\(String(mask, radix: 16)) (host forwards 0x\(String(forwardableHypercalls, radix: 16)))")
        }
        try enable(.exitHypercall, argument: mask, "KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)")
    }


    /// Whether the host lets a VM set its own halt polling (KVM_CAP_HALT_POLL).
    public var haltPollingSupported: Bool { checkExtension(.haltPoll) > 0 }

    /// Sets how long, at most, KVM busy-polls on a host CPU when a vCPU of this VM halts
    /// (with the in-kernel irqchip) before it puts the thread to sleep. Polling cuts the wake
    /// latency of an interrupt that comes soon after; 0 turns it off, which is what many VMs
    /// sharing few CPUs want, since a polling vCPU burns the CPU the others need. Without
    /// the capability the host's module-wide default applies and this throws
    /// ``KVMError/missingCapability(_:)``.
    public func setHaltPolling(maxNanoseconds: UInt32) throws(KVMError) {
        guard haltPollingSupported else { throw .missingCapability("KVM_CAP_HALT_POLL") }
        try enable(.haltPoll, argument: UInt64(maxNanoseconds), "KVM_ENABLE_CAP(KVM_CAP_HALT_POLL)")
    }

    /// KVM_ENABLE_CAP on this VM with one argument.
    private func enable(_ capability: Capability, argument: UInt64, _ name: StaticString) throws(KVMError) {
        var request = kvm_enable_cap()
        request.cap = UInt32(capability.rawValue)
        request.args.0 = argument
        try kvmIoctl(fileDescriptor, CKVM_ENABLE_CAP, &request, name)
    }

    /// Creates vCPU `id`. KVM expects a vCPU's ioctls from the thread that created it, so
    /// call this on the thread that will run it (``VCPURunner`` does).
    public func createVCPU(id: UInt32) throws(KVMError) -> VCPU {
        let fd = try kvmIoctl(fileDescriptor, CKVM_CREATE_VCPU, value: UInt(id), "KVM_CREATE_VCPU")
        let descriptor = FileDescriptor(rawValue: fd)
        do throws(KVMError) {
            let run = try KVMRunMapping(vcpuFileDescriptor: descriptor, size: kvm.vcpuMmapSize)
            return VCPU(vm: self, id: id, fileDescriptor: descriptor, run: run)
        } catch {
            descriptor.closeQuietly()
            throw error
        }
    }
}

/// An `InterruptLine` backed by a KVM irqfd: `trigger()` writes the eventfd and the kernel
/// injects the GSI, from any thread, without a vCPU exit.
public final class IRQFDLine: InterruptLine {
    /// The eventfd KVM watches.
    public let eventfd: EventFD
    /// The interrupt line it injects.
    public let gsi: UInt32

    init(eventfd: EventFD, gsi: UInt32) {
        self.eventfd = eventfd
        self.gsi = gsi
    }

    /// Injects the interrupt (an edge) from any thread.
    public func trigger() throws(Errno) { try eventfd.signal() }
}
