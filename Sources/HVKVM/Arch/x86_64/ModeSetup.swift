import HVBoot
import HVCore


/// Segment selectors of the GDTs the helpers write.
public enum GDTSelector {
    /// The flat code segment.
    public static let code: UInt16 = 0x08
    /// The flat data segment.
    public static let data: UInt16 = 0x10
    /// The task state segment.
    public static let tss: UInt16 = 0x18
}

/// Builds the guest-memory side of CPU mode setup: GDTs and identity-mapped page tables.
/// Write them once per VM; then put each vCPU into the mode with the `VCPU` helpers.
public enum X86Tables {
    /// 4 GiB in bytes, as kvm_segment wants it (the GDT entry stores 0xFFFFF pages).
    static let flatLimit: UInt32 = 0xFFFF_FFFF
    static let tssSize: UInt64 = 0x68

    /// The flat code segment for a mode (64-bit when `longMode`, else 32-bit).
    static func codeSegment(longMode: Bool) -> Segment {
        Segment(base: 0, limit: flatLimit, selector: GDTSelector.code, type: X86.segmentCodeExecuteRead,
                db: !longMode, l: longMode, g: true)
    }

    static func dataSegment() -> Segment {
        Segment(base: 0, limit: flatLimit, selector: GDTSelector.data, type: X86.segmentDataReadWrite, db: true, g: true)
    }

    static func taskSegment(base: UInt64) -> Segment {
        Segment(base: base, limit: UInt32(tssSize - 1), selector: GDTSelector.tss, type: X86.segmentBusyTSS64, s: false)
    }

    /// Writes a GDT with null, flat code, flat data and a TSS descriptor at `address`, and a
    /// zeroed TSS after it. Returns the table's limit.
    @discardableResult
    public static func writeGDT(longMode: Bool, to memory: some GuestMemory, at address: GuestAddress) throws(GuestMemoryError) -> UInt16 {
        let tssAddress = try address.checkedAdd(0x100)
        let tss = taskSegment(base: tssAddress.rawValue)
        // In long mode a system descriptor is 16 bytes: the upper 8 hold base bits 32-63.
        let entries: [UInt64] = [0, codeSegment(longMode: longMode).gdtEntry, dataSegment().gdtEntry,
                                 tss.gdtEntry, tssAddress.rawValue >> 32]
        try memory.fill(0, at: address, length: 0x100 + tssSize)
        for (index, entry) in entries.enumerated() {
            try memory.write(entry.littleEndian, at: try address.checkedAdd(UInt64(index) * 8))
        }
        return UInt16(entries.count * 8 - 1)
    }

    /// Writes 4-level page tables that identity-map `[0, layout.identityMapSize)` with 2 MiB
    /// pages. Returns the value for CR3.
    @discardableResult
    public static func writeIdentityPageTables(to memory: some GuestMemory, layout: LongModeLayout) throws(KVMError) -> UInt64 {
        let gib: UInt64 = 1 << 30
        guard layout.identityMapSize >= gib, layout.identityMapSize % gib == 0, layout.identityMapSize <= 512 * gib else {
            throw .invalidArgument("identity map size \(layout.identityMapSize) (a multiple of 1 GiB, at most 512 GiB)")
        }
        guard layout.pageTableAddress.isAligned(to: 4096) else {
            throw .invalidArgument("page tables at \(layout.pageTableAddress) are not page-aligned")
        }
        do throws(GuestMemoryError) {
            let pml4 = layout.pageTableAddress
            let pdpt = try pml4.checkedAdd(4096)
            try memory.fill(0, at: pml4, length: layout.pageTableBytes)
            // Accessed and dirty are set up front so the guest's page walks never write to
            // the tables: such writes would otherwise dirty these pages in a dirty-page log
            // (and some software hypervisors fail to emulate them on write-protected pages).
            let flags = X86.pagePresent | X86.pageWritable | X86.pageAccessed
            try memory.write((pdpt.rawValue | flags).littleEndian, at: pml4)
            let directories = layout.identityMapSize / gib
            for directory in 0..<directories {
                let pd = try pdpt.checkedAdd(4096 * (1 + directory))
                try memory.write((pd.rawValue | flags).littleEndian, at: try pdpt.checkedAdd(directory * 8))
                var entries = [UInt64](repeating: 0, count: 512)
                for entry in 0..<512 {
                    let physical = directory * gib + UInt64(entry) * (2 << 20)
                    entries[entry] = (physical | flags | X86.pageDirty | X86.pageSize).littleEndian
                }
                try memory.write(contentsOf: entries, to: pd)
            }
            return pml4.rawValue
        } catch {
            throw .guestMemory(error)
        }
    }
}

extension VCPU {
    /// Puts the vCPU in 16-bit real mode at `segment:offset`, data segments at 0.
    public func setupRealMode(codeSegment segment: UInt16, offset: UInt16, stackPointer: UInt16 = 0) throws(KVMError) {
        var sregs = try specialRegisters()
        var code = Segment(base: UInt64(segment) << 4, limit: 0xFFFF, selector: segment, type: X86.segmentCodeExecuteRead)
        code.db = false
        sregs.cs = code
        let data = Segment(base: 0, limit: 0xFFFF, selector: 0, type: X86.segmentDataReadWrite)
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.cr0 &= ~(X86.cr0ProtectionEnable | X86.cr0Paging)
        sregs.efer = 0
        try setSpecialRegisters(sregs)
        var regs = Registers()
        regs.rip = UInt64(offset)
        regs.rsp = UInt64(stackPointer)
        try setRegisters(regs)
    }

    /// Puts the vCPU in 32-bit protected mode (flat segments, no paging) at `entry`, with a
    /// GDT written at `gdtAddress`.
    public func setupProtectedMode(
        memory: some GuestMemory, entry: GuestAddress, stackPointer: UInt64 = 0,
        gdtAddress: GuestAddress = GuestAddress(0x500)
    ) throws(KVMError) {
        let limit: UInt16
        do { limit = try X86Tables.writeGDT(longMode: false, to: memory, at: gdtAddress) } catch { throw .guestMemory(error) }
        guard entry.rawValue <= UInt32.max, stackPointer <= UInt32.max else {
            throw .invalidArgument("32-bit entry \(entry) or stack 0x\(String(stackPointer, radix: 16)) above 4 GiB")
        }
        var sregs = try specialRegisters()
        loadFlatSegments(into: &sregs, longMode: false, gdtBase: gdtAddress, gdtLimit: limit)
        sregs.cr0 = (sregs.cr0 | X86.cr0ProtectionEnable | X86.cr0ExtensionType) & ~X86.cr0Paging
        sregs.efer = 0
        try setSpecialRegisters(sregs)
        var regs = Registers()
        regs.rip = entry.rawValue
        regs.rsp = stackPointer
        try setRegisters(regs)
    }

    /// Puts the vCPU in 64-bit long mode at `entry`: writes a GDT and identity page tables
    /// (see `LongModeLayout`), enables PAE, paging, LME and SSE, and sets RIP and RSP, and
    /// RDI to `argument` (the entry's first argument in the System V convention).
    /// On a multi-vCPU VM the tables are shared; writing them again is harmless.
    public func setupLongMode(
        memory: some GuestMemory, entry: GuestAddress, stackPointer: UInt64 = 0, argument: UInt64 = 0,
        layout: LongModeLayout = LongModeLayout()
    ) throws(KVMError) {
        let limit: UInt16
        do { limit = try X86Tables.writeGDT(longMode: true, to: memory, at: layout.gdtAddress) } catch { throw .guestMemory(error) }
        let cr3 = try X86Tables.writeIdentityPageTables(to: memory, layout: layout)
        try enterLongMode(entry: entry, stackPointer: stackPointer, argument: argument, cr3: cr3,
                          gdtAddress: layout.gdtAddress, gdtLimit: limit)
    }

    /// The register half of ``setupLongMode(memory:entry:stackPointer:argument:layout:)``, for
    /// tables already in guest memory.
    public func enterLongMode(
        entry: GuestAddress, stackPointer: UInt64, argument: UInt64 = 0, cr3: UInt64, gdtAddress: GuestAddress, gdtLimit: UInt16
    ) throws(KVMError) {
        var sregs = try specialRegisters()
        loadFlatSegments(into: &sregs, longMode: true, gdtBase: gdtAddress, gdtLimit: gdtLimit)
        sregs.cr3 = cr3
        sregs.cr4 |= X86.cr4PhysicalAddressExtension | X86.cr4OSFXSR | X86.cr4OSXMMEXCPT
        sregs.cr0 |= X86.cr0ProtectionEnable | X86.cr0MonitorCoprocessor | X86.cr0ExtensionType
            | X86.cr0NumericError | X86.cr0WriteProtect | X86.cr0Paging
        sregs.efer |= X86.eferLongModeEnable | X86.eferLongModeActive
        try setSpecialRegisters(sregs)
        var regs = Registers()
        regs.rip = entry.rawValue
        regs.rsp = stackPointer
        regs.rdi = argument
        try setRegisters(regs)
    }

    private func loadFlatSegments(into sregs: inout SpecialRegisters, longMode: Bool, gdtBase: GuestAddress, gdtLimit: UInt16) {
        sregs.gdt = DescriptorTable(base: gdtBase.rawValue, limit: gdtLimit)
        sregs.idt = DescriptorTable(base: 0, limit: 0)
        sregs.cs = X86Tables.codeSegment(longMode: longMode)
        let data = X86Tables.dataSegment()
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.tr = X86Tables.taskSegment(base: gdtBase.rawValue &+ 0x100)
    }
}
