import CKVM
import Glibc
import HVCore
import SystemPackage

/// One virtual CPU. Not `Sendable`: KVM wants a vCPU's ioctls from the thread that created
/// it, so a `VCPU` stays on its thread. Other threads reach it through its ``kicker``.
public final class VCPU {
    /// The VM the vCPU belongs to.
    public let vm: VirtualMachine
    /// The vCPU's index in its VM (also its initial APIC ID).
    public let id: UInt32
    /// The vCPU's descriptor, closed when this object goes away.
    public let fileDescriptor: FileDescriptor
    let runMapping: KVMRunMapping
    /// Makes this vCPU leave the guest from any thread.
    public let kicker: VCPUKicker

    /// Register sets KVM copies into kvm_run on every exit (see ``enableSyncRegisters(_:)``).
    public private(set) var syncedRegisterSets: SyncRegisterSet = []
    /// Whether the sync area holds this vCPU's state (true after the first exit with sync on).
    private var syncAreaValid = false

    init(vm: VirtualMachine, id: UInt32, fileDescriptor: FileDescriptor, run: KVMRunMapping) {
        self.vm = vm
        self.id = id
        self.fileDescriptor = fileDescriptor
        self.runMapping = run
        self.kicker = VCPUKicker(run: run)
        kicker.bind(to: pthread_self())
    }

    deinit {
        kicker.unbind()
        runMapping.beginRun()  // Exit data kept past the vCPU reads as empty.
        fileDescriptor.closeQuietly()
    }

    // MARK: Running

    /// Enters the guest until the next exit and decodes it. Returns ``VMExit/interrupted``
    /// when a kick or a signal ended the run; any `immediate_exit` request is then cleared.
    public func run() throws(KVMError) -> VMExit {
        runMapping.beginRun()
        let result = ckvm_ioctl_value(fileDescriptor.rawValue, CKVM_RUN, 0)
        if result < 0 {
            let error = errno
            if error == EINTR || error == EAGAIN {
                unsafe ckvm_set_immediate_exit(runMapping.pointer, 0)
                return .interrupted
            }
            throw .ioctl("KVM_RUN", Errno(rawValue: error))
        }
        if !syncedRegisterSets.isEmpty { syncAreaValid = true }
        return decodeExit()
    }

    /// Re-enters KVM with `immediate_exit` set, so that it completes what the last exit left
    /// half-done (a port or MMIO read whose data userspace supplied, a string operation) and
    /// returns without running the guest. The KVM API asks for this before a vCPU's state is
    /// read for a snapshot: otherwise the saved RIP may still point at that instruction.
    public func completePendingOperation() throws(KVMError) {
        runMapping.beginRun()
        unsafe ckvm_set_immediate_exit(runMapping.pointer, 1)
        let result = ckvm_ioctl_value(fileDescriptor.rawValue, CKVM_RUN, 0)
        let error = errno
        unsafe ckvm_set_immediate_exit(runMapping.pointer, 0)
        if result < 0, error != EINTR, error != EAGAIN { throw .ioctl("KVM_RUN (immediate exit)", Errno(rawValue: error)) }
        if !syncedRegisterSets.isEmpty { syncAreaValid = true }
    }

    private func decodeExit() -> VMExit {
        let state = unsafe runMapping.pointer
        let reason = unsafe state.pointee.exit_reason
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let io = unsafe state.pointee.io
            let total = Int(io.size) &* Int(io.count)
            // The kernel computed these, but a wrong offset would make us touch memory
            // outside the mapping, so check before trusting them.
            guard io.size > 0, total > 0, io.data_offset <= UInt64(runMapping.size),
                  UInt64(total) <= UInt64(runMapping.size) - io.data_offset else {
                return .unknown(reason: reason)
            }
            let data = ExitData(mapping: runMapping, offset: Int(io.data_offset), count: total)
            return io.direction == KVM_EXIT_IO_OUT
                ? .ioOut(port: io.port, size: Int(io.size), data: data)
                : .ioIn(port: io.port, size: Int(io.size), data: data)
        case KVM_EXIT_MMIO:
            let mmio = unsafe state.pointee.mmio
            let length = min(Int(mmio.len), 8)
            let data = ExitData(mapping: runMapping, offset: CKVM_RUN_MMIO_DATA_OFFSET, count: length)
            let address = GuestAddress(mmio.phys_addr)
            return mmio.is_write != 0 ? .mmioWrite(address: address, data: data) : .mmioRead(address: address, data: data)
        case KVM_EXIT_HLT:
            return .halt
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            let event = unsafe state.pointee.system_event
            switch Int32(event.type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return .systemEvent(.shutdown)
            case KVM_SYSTEM_EVENT_RESET: return .systemEvent(.reset)
            case KVM_SYSTEM_EVENT_CRASH: return .systemEvent(.crash)
            default: return .systemEvent(.other(type: event.type, flags: event.flags))
            }
        case KVM_EXIT_INTERNAL_ERROR:
            let failure = unsafe state.pointee.`internal`
            var data = failure.data
            let count = min(Int(failure.ndata), 16)
            let values = unsafe withUnsafeBytes(of: &data) { unsafe Array($0.bindMemory(to: UInt64.self).prefix(count)) }
            return .internalError(suberror: failure.suberror, data: values)
        case KVM_EXIT_FAIL_ENTRY:
            let failure = unsafe state.pointee.fail_entry
            return .failEntry(reason: failure.hardware_entry_failure_reason, cpu: failure.cpu)
        case KVM_EXIT_HYPERCALL:
            let call = unsafe state.pointee.hypercall
            let a = call.args
            return .hypercall(number: call.nr, arguments: [a.0, a.1, a.2, a.3, a.4, a.5], longMode: call.longmode != 0)
        case KVM_EXIT_EXCEPTION:
            return unsafe .exception(number: state.pointee.ex.exception, errorCode: state.pointee.ex.error_code)
        case KVM_EXIT_DEBUG:
            return .debug
        case KVM_EXIT_INTR:
            unsafe ckvm_set_immediate_exit(runMapping.pointer, 0)
            return .interrupted
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            return .interruptWindowOpen
        default:
            return .unknown(reason: reason)
        }
    }

    /// The value `vmcall` returns to the guest, for a pending ``VMExit/hypercall(number:arguments:longMode:)``.
    public func setHypercallResult(_ value: UInt64) {
        unsafe runMapping.pointer.pointee.hypercall.ret = value
    }

    /// Asks KVM to exit with ``VMExit/interruptWindowOpen`` as soon as the guest can take an
    /// interrupt (for userspace interrupt controllers).
    public var requestInterruptWindow: Bool {
        get { unsafe runMapping.pointer.pointee.request_interrupt_window != 0 }
        set { unsafe runMapping.pointer.pointee.request_interrupt_window = newValue ? 1 : 0 }
    }

    // MARK: Sync registers

    /// Makes KVM copy `sets` into the shared kvm_run page on every exit and take changes back
    /// from it on entry, so reading and writing registers around an exit costs no ioctl.
    /// Each exit then costs a little more (KVM copies the registers out), so enable it only
    /// where exits need registers (hypercalls). Needs KVM_CAP_SYNC_REGS.
    public func enableSyncRegisters(_ sets: SyncRegisterSet = [.general, .special]) throws(KVMError) {
        let supported = vm.kvm.checkExtension(.syncRegisters)
        guard supported > 0, UInt64(supported) & sets.rawValue == sets.rawValue else {
            throw .missingCapability("KVM_CAP_SYNC_REGS for \(sets)")
        }
        unsafe runMapping.pointer.pointee.kvm_valid_regs = sets.rawValue
        syncedRegisterSets = sets
        syncAreaValid = false
    }

    /// Stops syncing registers through kvm_run; pending changes are flushed first.
    public func disableSyncRegisters() throws(KVMError) {
        if syncAreaValid, unsafe runMapping.pointer.pointee.kvm_dirty_regs != 0 {
            // Apply what was written to the sync area before dropping it.
            let pending = unsafe runMapping.pointer.pointee.kvm_dirty_regs
            if pending & SyncRegisterSet.general.rawValue != 0 {
                var regs = unsafe ckvm_sync_regs(runMapping.pointer).pointee
                try kvmIoctl(fileDescriptor, CKVM_SET_REGS, &regs, "KVM_SET_REGS")
            }
            if pending & SyncRegisterSet.special.rawValue != 0 {
                var sregs = unsafe ckvm_sync_sregs(runMapping.pointer).pointee
                try kvmIoctl(fileDescriptor, CKVM_SET_SREGS, &sregs, "KVM_SET_SREGS")
            }
        }
        unsafe runMapping.pointer.pointee.kvm_valid_regs = 0
        unsafe runMapping.pointer.pointee.kvm_dirty_regs = 0
        syncedRegisterSets = []
        syncAreaValid = false
    }

    // MARK: Registers

    /// The general registers; from the sync area when it is valid, else KVM_GET_REGS.
    public func registers() throws(KVMError) -> Registers {
        unsafe Registers(try readRegisterSet(.general, ckvm_sync_regs(runMapping.pointer), CKVM_GET_REGS, "KVM_GET_REGS"))
    }

    /// Sets the general registers; through the sync area (applied on the next run) when it is
    /// valid, else KVM_SET_REGS.
    public func setRegisters(_ registers: Registers) throws(KVMError) {
        unsafe try writeRegisterSet(.general, ckvm_sync_regs(runMapping.pointer), registers.raw, CKVM_SET_REGS, "KVM_SET_REGS")
    }

    /// Segment, control and descriptor-table registers (sync area when valid).
    public func specialRegisters() throws(KVMError) -> SpecialRegisters {
        unsafe SpecialRegisters(try readRegisterSet(.special, ckvm_sync_sregs(runMapping.pointer), CKVM_GET_SREGS, "KVM_GET_SREGS"))
    }

    /// Sets the special registers (sync area when valid, applied on the next run).
    public func setSpecialRegisters(_ registers: SpecialRegisters) throws(KVMError) {
        unsafe try writeRegisterSet(.special, ckvm_sync_sregs(runMapping.pointer), registers.raw, CKVM_SET_SREGS, "KVM_SET_SREGS")
    }

    /// Reads one register set from kvm_run's sync area when KVM keeps it there, else by ioctl.
    private func readRegisterSet<Raw>(
        _ set: SyncRegisterSet, _ area: UnsafeMutablePointer<Raw>, _ request: UInt, _ name: StaticString
    ) throws(KVMError) -> Raw {
        if syncAreaValid, syncedRegisterSets.contains(set) {
            return unsafe area.pointee
        }
        var raw = unsafe area.pointee  // Any value; the ioctl overwrites it.
        try kvmIoctl(fileDescriptor, request, &raw, name)
        return raw
    }

    /// Writes one register set into the sync area (marking it dirty) or by ioctl.
    private func writeRegisterSet<Raw>(
        _ set: SyncRegisterSet, _ area: UnsafeMutablePointer<Raw>, _ value: Raw, _ request: UInt, _ name: StaticString
    ) throws(KVMError) {
        if syncAreaValid, syncedRegisterSets.contains(set) {
            // SAFETY: area points into this vCPU's kvm_run mapping, alive as long as self.
            unsafe area.pointee = value
            unsafe runMapping.pointer.pointee.kvm_dirty_regs |= set.rawValue
            return
        }
        var raw = value
        try kvmIoctl(fileDescriptor, request, &raw, name)
    }

    /// The x87, SSE and MXCSR state (KVM_GET_FPU).
    public func fpuRegisters() throws(KVMError) -> FPURegisters {
        var fpu = kvm_fpu()
        try kvmIoctl(fileDescriptor, CKVM_GET_FPU, &fpu, "KVM_GET_FPU")
        return FPURegisters(fpu)
    }

    /// Sets the x87, SSE and MXCSR state (KVM_SET_FPU).
    public func setFPURegisters(_ registers: FPURegisters) throws(KVMError) {
        var fpu = registers.raw
        try kvmIoctl(fileDescriptor, CKVM_SET_FPU, &fpu, "KVM_SET_FPU")
    }

    /// DR0-DR3, DR6 and DR7 (KVM_GET_DEBUGREGS).
    public func debugRegisters() throws(KVMError) -> DebugRegisters {
        var regs = kvm_debugregs()
        try kvmIoctl(fileDescriptor, CKVM_GET_DEBUGREGS, &regs, "KVM_GET_DEBUGREGS")
        return DebugRegisters(regs)
    }

    /// Sets DR0-DR3, DR6 and DR7 (KVM_SET_DEBUGREGS).
    public func setDebugRegisters(_ registers: DebugRegisters) throws(KVMError) {
        var regs = registers.raw
        try kvmIoctl(fileDescriptor, CKVM_SET_DEBUGREGS, &regs, "KVM_SET_DEBUGREGS")
    }

    // MARK: MSRs, CPUID, LAPIC, MP state

    /// Reads the MSRs `indices`. Throws naming the first MSR KVM refused.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt32: UInt64] {
        var entries = indices.map { (index: $0, value: UInt64(0)) }
        try transferMSRs(&entries, CKVM_GET_MSRS, "KVM_GET_MSRS")
        return Dictionary(entries.map { ($0.index, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    /// Writes MSRs. Throws naming the first MSR KVM refused; the ones before it were written.
    public func setMSRs(_ values: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        var entries = values
        try transferMSRs(&entries, CKVM_SET_MSRS, "KVM_SET_MSRS")
    }

    /// Reads or writes `entries`; returns how many KVM did. Throws naming the MSR it stopped at
    /// unless `partial`.
    @discardableResult
    func transferMSRs(_ entries: inout [(index: UInt32, value: UInt64)], _ request: UInt, _ name: StaticString,
                      partial: Bool = false) throws(KVMError) -> Int {
        guard !entries.isEmpty else { return 0 }
        let header = MemoryLayout<kvm_msrs>.size
        let stride = MemoryLayout<kvm_msr_entry>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + entries.count * stride, alignment: 8)
        defer { unsafe buffer.deallocate() }
        unsafe buffer.initializeMemory(as: UInt8.self, repeating: 0, count: header + entries.count * stride)
        unsafe buffer.bindMemory(to: kvm_msrs.self, capacity: 1).pointee.nmsrs = UInt32(entries.count)
        let slots = unsafe (buffer + header).bindMemory(to: kvm_msr_entry.self, capacity: entries.count)
        for (offset, entry) in entries.enumerated() {
            unsafe slots[offset].index = entry.index
            unsafe slots[offset].data = entry.value
        }
        let done = unsafe Int(try kvmIoctl(fileDescriptor, request, buffer, name))
        for offset in 0..<min(done, entries.count) { entries[offset].value = unsafe slots[offset].data }
        if done < entries.count, !partial {
            throw .invalidArgument("\(name) stopped at MSR 0x\(String(entries[done].index, radix: 16)) (\(done) of \(entries.count) done)")
        }
        return done
    }

    /// Sets the CPUID the guest sees (KVM_SET_CPUID2). Typically KVM's supported list,
    /// possibly filtered. Must happen before the first run.
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        try CPUIDEntry.submit(entries, fileDescriptor, CKVM_SET_CPUID2, "KVM_SET_CPUID2")
    }

    /// The CPUID the guest sees (KVM_GET_CPUID2).
    public func cpuid() throws(KVMError) -> [CPUIDEntry] {
        try CPUIDEntry.query(fileDescriptor, CKVM_GET_CPUID2, "KVM_GET_CPUID2")
    }

    /// The local APIC's registers. Needs the in-kernel irqchip.
    public func lapic() throws(KVMError) -> LAPICState {
        var state = kvm_lapic_state()
        try kvmIoctl(fileDescriptor, CKVM_GET_LAPIC, &state, "KVM_GET_LAPIC")
        let bytes = unsafe withUnsafeBytes(of: &state.regs) { unsafe Array($0) }
        return LAPICState(bytes: bytes)
    }

    /// Sets the in-kernel local APIC's registers (KVM_SET_LAPIC); needs the irqchip.
    public func setLAPIC(_ lapicState: LAPICState) throws(KVMError) {
        var state = kvm_lapic_state()
        unsafe withUnsafeMutableBytes(of: &state.regs) { destination in
            unsafe lapicState.bytes.withUnsafeBytes { unsafe destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(destination.count))) }
        }
        try kvmIoctl(fileDescriptor, CKVM_SET_LAPIC, &state, "KVM_SET_LAPIC")
    }

    /// The vCPU's multiprocessing state (KVM_GET_MP_STATE): running, waiting for INIT or SIPI, halted.
    public func mpState() throws(KVMError) -> MPState {
        var state = kvm_mp_state()
        try kvmIoctl(fileDescriptor, CKVM_GET_MP_STATE, &state, "KVM_GET_MP_STATE")
        return MPState(state.mp_state)
    }

    /// Sets the multiprocessing state (KVM_SET_MP_STATE).
    public func setMPState(_ state: MPState) throws(KVMError) {
        var raw = kvm_mp_state(mp_state: state.raw)
        try kvmIoctl(fileDescriptor, CKVM_SET_MP_STATE, &raw, "KVM_SET_MP_STATE")
    }
}

/// Register sets that can live in kvm_run's sync area (KVM_SYNC_X86_*).
public struct SyncRegisterSet: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The KVM_SYNC_X86_* bits.
    public let rawValue: UInt64
    /// A set from its bits.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The general registers (kvm_regs).
    public static let general = SyncRegisterSet(rawValue: UInt64(KVM_SYNC_X86_REGS))
    /// The special registers (kvm_sregs).
    public static let special = SyncRegisterSet(rawValue: UInt64(KVM_SYNC_X86_SREGS))
    /// Pending events (kvm_vcpu_events).
    public static let events = SyncRegisterSet(rawValue: UInt64(KVM_SYNC_X86_EVENTS))

    /// The sets by name.
    public var description: String {
        var names: [String] = []
        if contains(.general) { names.append("general") }
        if contains(.special) { names.append("special") }
        if contains(.events) { names.append("events") }
        return "[" + names.joined(separator: ", ") + "]"
    }
}
