import CKVM
import Glibc
import HVCore
import SystemPackage

/// Everything KVM keeps of one vCPU, as a plain value: what a snapshot saves and a restore
/// puts back. Taken with ``VCPU/saveState()`` while the vCPU is out of the guest (paused), on
/// its own thread; given back with ``VCPU/restoreState(_:)`` before its first run.
public struct VCPUState: Sendable, Hashable {
    /// The encoding version written by ``encode(to:)``.
    public static let encodingVersion: UInt16 = 1

    /// The vCPU's index.
    public var id: UInt32
    /// Running, halted, or waiting for INIT/SIPI.
    public var mpState: MPState
    /// General registers, RIP and RFLAGS.
    public var registers: Registers
    /// Segments, descriptor tables, control registers, EFER, the APIC base.
    public var specialRegisters: SpecialRegisters
    /// The XSAVE area (x87, SSE, AVX and the other components KVM exposes), as KVM_GET_XSAVE(2)
    /// returns it.
    public var xsave: [UInt8]
    /// The extended control registers (XCR0), as (index, value).
    public var extendedControlRegisters: [ExtendedControlRegister]
    /// DR0-DR3, DR6, DR7.
    public var debugRegisters: DebugRegisters
    /// The local APIC's registers; nil without the in-kernel irqchip.
    public var lapic: LAPICState?
    /// The guest TSC's frequency in kHz.
    public var tscKHz: UInt32
    /// The CPUID the guest sees.
    public var cpuid: [CPUIDEntry]
    /// Every MSR KVM lists as saveable and could read, by index.
    public var msrs: [MSRValue]
    /// Pending exceptions, interrupts, NMIs and SIPIs, and the interrupt shadow (struct
    /// kvm_vcpu_events as KVM gives it).
    public var events: [UInt8]

    /// One MSR's index and value.
    public struct MSRValue: Sendable, Hashable {
        /// The MSR's index.
        public var index: UInt32
        /// Its value.
        public var value: UInt64

        /// MSR `index` with `value`.
        public init(index: UInt32, value: UInt64) {
            self.index = index
            self.value = value
        }
    }

    /// One extended control register (XCR).
    public struct ExtendedControlRegister: Sendable, Hashable {
        /// The register's index (0 for XCR0).
        public var index: UInt32
        /// Its value.
        public var value: UInt64

        /// XCR `index` with `value`.
        public init(index: UInt32, value: UInt64) {
            self.index = index
            self.value = value
        }
    }
}

extension VCPUState: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(id)
        encoder.append(mpState)
        encoder.append(registers)
        encoder.append(specialRegisters)
        encoder.append(bytes: xsave)
        encoder.append(UInt64(extendedControlRegisters.count))
        for register in extendedControlRegisters {
            encoder.append(register.index)
            encoder.append(register.value)
        }
        encoder.append(debugRegisters)
        encoder.append(lapic != nil)
        if let lapic { encoder.append(bytes: lapic.bytes) }
        encoder.append(tscKHz)
        encoder.append(UInt64(cpuid.count))
        for entry in cpuid { encoder.append(entry) }
        encoder.append(UInt64(msrs.count))
        for msr in msrs {
            encoder.append(msr.index)
            encoder.append(msr.value)
        }
        encoder.append(bytes: events)
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        id = try decoder.read()
        mpState = try decoder.read()
        registers = try decoder.read()
        specialRegisters = try decoder.read()
        xsave = try decoder.readBytes(limit: 1 << 20)
        let xcrCount = try decoder.readCount(elementSize: 12, limit: 16)
        extendedControlRegisters = []
        for _ in 0..<xcrCount {
            extendedControlRegisters.append(ExtendedControlRegister(index: try decoder.read(), value: try decoder.read()))
        }
        debugRegisters = try decoder.read()
        if try decoder.read(Bool.self) {
            let bytes = try decoder.readBytes(limit: LAPICState.size)
            guard bytes.count == LAPICState.size else {
                throw .malformed(what: decoder.context, reason: "a local APIC of \(bytes.count) bytes, not \(LAPICState.size)")
            }
            lapic = LAPICState(bytes: bytes)
        } else {
            lapic = nil
        }
        tscKHz = try decoder.read()
        let cpuidCount = try decoder.readCount(elementSize: 28, limit: 256)
        cpuid = []
        for _ in 0..<cpuidCount { cpuid.append(try decoder.read()) }
        let msrCount = try decoder.readCount(elementSize: 12, limit: 4096)
        msrs = []
        for _ in 0..<msrCount { msrs.append(MSRValue(index: try decoder.read(), value: try decoder.read())) }
        events = try decoder.readBytes(limit: 4096)
        guard events.count == MemoryLayout<kvm_vcpu_events>.size else {
            throw .malformed(what: decoder.context, reason: "vCPU events of \(events.count) bytes, not \(MemoryLayout<kvm_vcpu_events>.size)")
        }
    }
}

extension VCPU {
    /// Takes the vCPU's whole state, in the order KVM needs: the MP state first (it makes KVM
    /// settle pending APIC events into the registers), the vCPU events last (reading the
    /// other sets may change them). First completes whatever the last exit left half-done
    /// (``completePendingOperation()``), so the state is between two instructions. Call on
    /// the vCPU's thread while it is out of the guest.
    public func saveState() throws(KVMError) -> VCPUState {
        try completePendingOperation()
        let mp = try mpState()
        let registers = try registers()
        let special = try specialRegisters()
        let xsave = try xsaveArea()
        let xcrs = try extendedControlRegisters()
        let debug = try debugRegisters()
        let lapic = vm.hasIRQChip ? try lapic() : nil
        let tsc = try tscKHz()
        let cpuid = try cpuid()
        let msrs = try saveableMSRs()
        var events = kvm_vcpu_events()
        try kvmIoctl(fileDescriptor, CKVM_GET_VCPU_EVENTS, &events, "KVM_GET_VCPU_EVENTS")
        return VCPUState(id: id, mpState: mp, registers: registers, specialRegisters: special, xsave: xsave,
                         extendedControlRegisters: xcrs, debugRegisters: debug, lapic: lapic, tscKHz: tsc,
                         cpuid: cpuid, msrs: msrs, events: rawBytes(of: events))
    }

    /// Puts `state` back, in the order KVM needs (CPUID, MP state, registers, special registers,
    /// XSAVE, XCRs, debug registers, LAPIC, MSRs, events), then tells a guest with a
    /// paravirtual clock that it was stopped (KVM_KVMCLOCK_CTRL), so its watchdogs do not see
    /// the pause as a hang. Call on the vCPU's thread before it runs.
    public func restoreState(_ state: VCPUState) throws(KVMError) {
        guard state.id == id else {
            throw .invalidArgument("the state of vCPU \(state.id) cannot be restored into vCPU \(id)")
        }
        var events = kvm_vcpu_events()
        do { try loadRaw(state.events, into: &events, what: "vCPU \(id)'s events") } catch {
            throw .invalidArgument("\(error)")
        }
        try setCPUID(state.cpuid)
        try setTSCKHz(state.tscKHz)
        try setMPState(state.mpState)
        try setRegisters(state.registers)
        try setSpecialRegisters(state.specialRegisters)
        try setXSAVEArea(state.xsave)
        try setExtendedControlRegisters(state.extendedControlRegisters)
        try setDebugRegisters(state.debugRegisters)
        if let lapic = state.lapic { try setLAPIC(lapic) }
        try restoreMSRs(state.msrs)
        try kvmIoctl(fileDescriptor, CKVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS")
        // EINVAL: the guest never set up a paravirtual clock, so there is nothing to tell.
        if ckvm_ioctl_value(fileDescriptor.rawValue, CKVM_KVMCLOCK_CTRL, 0) < 0, errno != EINVAL {
            throw .ioctl("KVM_KVMCLOCK_CTRL", Errno(rawValue: errno))
        }
    }

    /// The XSAVE area: KVM_GET_XSAVE2 with the size KVM_CAP_XSAVE2 gives where the host has
    /// more state than the classic 4 KiB, else KVM_GET_XSAVE.
    public func xsaveArea() throws(KVMError) -> [UInt8] {
        let size = max(Int(vm.checkExtension(.xsave2)), MemoryLayout<kvm_xsave>.size)
        let request = size > MemoryLayout<kvm_xsave>.size ? CKVM_GET_XSAVE2 : CKVM_GET_XSAVE
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { unsafe buffer.deallocate() }
        // SAFETY: the buffer holds `size` bytes, what KVM writes for this request.
        unsafe buffer.initializeMemory(as: UInt8.self, repeating: 0)
        try unsafe kvmIoctl(fileDescriptor, request, buffer.baseAddress, "KVM_GET_XSAVE")
        return unsafe Array(buffer)
    }

    /// Sets the XSAVE area (KVM_SET_XSAVE); refuses an area smaller than the classic 4 KiB.
    public func setXSAVEArea(_ area: [UInt8]) throws(KVMError) {
        guard area.count >= MemoryLayout<kvm_xsave>.size else {
            throw .invalidArgument("an XSAVE area of \(area.count) bytes (at least \(MemoryLayout<kvm_xsave>.size) needed)")
        }
        let supported = max(Int(vm.checkExtension(.xsave2)), MemoryLayout<kvm_xsave>.size)
        guard area.count <= supported else {
            throw .invalidArgument("an XSAVE area of \(area.count) bytes; this host's KVM takes \(supported)")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: area.count, alignment: 16)
        defer { unsafe buffer.deallocate() }
        // SAFETY: KVM reads at most the area size it supports, which the buffer holds.
        unsafe buffer.copyBytes(from: area)
        try unsafe kvmIoctl(fileDescriptor, CKVM_SET_XSAVE, buffer.baseAddress, "KVM_SET_XSAVE")
    }

    /// The extended control registers (KVM_GET_XCRS).
    public func extendedControlRegisters() throws(KVMError) -> [VCPUState.ExtendedControlRegister] {
        var xcrs = kvm_xcrs()
        try kvmIoctl(fileDescriptor, CKVM_GET_XCRS, &xcrs, "KVM_GET_XCRS")
        let count = min(Int(xcrs.nr_xcrs), Int(KVM_MAX_XCRS))
        return unsafe withUnsafeBytes(of: &xcrs.xcrs) { bytes in
            (0..<count).map { index in
                let entry = unsafe bytes.loadUnaligned(fromByteOffset: index * MemoryLayout<kvm_xcr>.stride, as: kvm_xcr.self)
                return VCPUState.ExtendedControlRegister(index: entry.xcr, value: entry.value)
            }
        }
    }

    /// Sets the extended control registers (KVM_SET_XCRS).
    public func setExtendedControlRegisters(_ registers: [VCPUState.ExtendedControlRegister]) throws(KVMError) {
        guard registers.count <= Int(KVM_MAX_XCRS) else {
            throw .invalidArgument("\(registers.count) XCRs (KVM takes at most \(KVM_MAX_XCRS))")
        }
        var xcrs = kvm_xcrs()
        xcrs.nr_xcrs = UInt32(registers.count)
        unsafe withUnsafeMutableBytes(of: &xcrs.xcrs) { bytes in
            for (offset, register) in registers.enumerated() {
                var entry = kvm_xcr()
                entry.xcr = register.index
                entry.value = register.value
                unsafe bytes.storeBytes(of: entry, toByteOffset: offset * MemoryLayout<kvm_xcr>.stride, as: kvm_xcr.self)
            }
        }
        try kvmIoctl(fileDescriptor, CKVM_SET_XCRS, &xcrs, "KVM_SET_XCRS")
    }

    /// The guest TSC's frequency in kHz (KVM_GET_TSC_KHZ).
    public func tscKHz() throws(KVMError) -> UInt32 {
        UInt32(truncatingIfNeeded: try kvmIoctl(fileDescriptor, CKVM_GET_TSC_KHZ, value: 0, "KVM_GET_TSC_KHZ"))
    }

    /// Sets the guest TSC's frequency when it differs from the current one (KVM_SET_TSC_KHZ).
    /// A host without TSC scaling refuses a different frequency; the error says so.
    public func setTSCKHz(_ frequency: UInt32) throws(KVMError) {
        let current = try tscKHz()
        guard frequency != 0, frequency != current else { return }
        do {
            try kvmIoctl(fileDescriptor, CKVM_SET_TSC_KHZ, value: UInt(frequency), "KVM_SET_TSC_KHZ")
        } catch {
            throw .invalidArgument("the guest's TSC ran at \(frequency) kHz and this host's at \(current) kHz, which KVM cannot scale to (\(error))")
        }
    }

    /// Writes `msrs`. KVM refuses a write to some MSRs it lists as saveable but that this
    /// vCPU's configuration lacks (a paravirtual feature the guest never turned on); such an
    /// MSR is skipped when it already holds the saved value, because then nothing is lost.
    /// Any other refusal throws, naming the MSR.
    private func restoreMSRs(_ msrs: [VCPUState.MSRValue]) throws(KVMError) {
        var pending = msrs.map { (index: $0.index, value: $0.value) }
        while !pending.isEmpty {
            let done = try transferMSRs(&pending, CKVM_SET_MSRS, "KVM_SET_MSRS", partial: true)
            guard done < pending.count else { return }
            let refused = pending[done]
            var current = [(index: refused.index, value: UInt64(0))]
            let readable = try transferMSRs(&current, CKVM_GET_MSRS, "KVM_GET_MSRS", partial: true) == 1
            guard readable ? current[0].value == refused.value : refused.value == 0 else {
                throw .invalidArgument("KVM refused MSR 0x\(String(refused.index, radix: 16)) = 0x\(String(refused.value, radix: 16)) on vCPU \(id)")
            }
            pending.removeFirst(done + 1)
        }
    }

    /// Every MSR KVM lists as saveable (KVM_GET_MSR_INDEX_LIST) that this vCPU can read;
    /// those KVM refuses on this vCPU (features the guest's CPUID does not have) are left out.
    public func saveableMSRs() throws(KVMError) -> [VCPUState.MSRValue] {
        var indices = try vm.kvm.msrIndexList()
        var values: [VCPUState.MSRValue] = []
        while !indices.isEmpty {
            var entries = indices.map { (index: $0, value: UInt64(0)) }
            let done = try transferMSRs(&entries, CKVM_GET_MSRS, "KVM_GET_MSRS", partial: true)
            values += entries.prefix(done).map { VCPUState.MSRValue(index: $0.index, value: $0.value) }
            // KVM stops at the first MSR it refuses: skip that one and go on after it.
            indices.removeFirst(min(done + 1, indices.count))
        }
        return values
    }
}
