import HVCore

/// The PVH boot protocol (Xen's docs/misc/pvh.pandoc, which Linux, FreeBSD and unikernels
/// follow without Xen): the image names a 32-bit entry point in an ELF note, and is entered
/// in 32-bit protected mode with paging off and EBX pointing at an `hvm_start_info`. This is
/// the entry QEMU and Firecracker prefer for an uncompressed kernel.
public enum PVH {
    /// The owner and type of the note carrying the entry (XEN_ELFNOTE_PHYS32_ENTRY).
    static let noteName = "Xen"
    static let entryNoteType: UInt32 = 18

    /// The PVH entry point of `image`, or nil when it has no XEN_ELFNOTE_PHYS32_ENTRY note.
    /// The descriptor is 4 or 8 bytes (kernels differ); the address must fit in 32 bits and
    /// lie inside one of the image's executable segments.
    public static func entryPoint(of image: ELF64Image) throws(LinuxBootError) -> GuestAddress? {
        let notes: [ELFNote]
        do { notes = try image.notes() } catch { throw .elf(error) }
        guard let note = notes.first(where: { $0.name == noteName && $0.type == entryNoteType }) else { return nil }
        let address: UInt64
        switch note.descriptor.count {
        case 4: address = UInt64(note.descriptor.littleEndian(UInt32.self, at: 0))
        case 8: address = note.descriptor.littleEndian(UInt64.self, at: 0)
        default: throw .badPVHNote("its descriptor has \(note.descriptor.count) bytes, not 4 or 8")
        }
        guard address <= UInt32.max else {
            throw .badPVHNote("the entry 0x\(String(address, radix: 16)) is above 4 GiB; PVH starts in 32-bit mode")
        }
        guard image.segments.contains(where: { $0.isExecutable && $0.containsPhysical(address) }) else {
            throw .badPVHNote("the entry 0x\(String(address, radix: 16)) is not inside an executable PT_LOAD segment")
        }
        return GuestAddress(address)
    }
}

/// `struct hvm_start_info` (version 1) with the tables it points at, as one block for guest
/// memory: the start info, then the module list (the initrd), then the memory map.
public struct PVHStartInfo: Sendable, Hashable {
    static let magic: UInt32 = 0x336E_C578
    static let version: UInt32 = 1
    static let headerSize = 56
    static let moduleEntrySize = 32
    static let memoryMapEntrySize = 24

    enum Offset {
        static let magic = 0
        static let version = 4
        static let moduleCount = 12
        static let moduleListAddress = 16
        static let commandLineAddress = 24
        static let rsdpAddress = 32
        static let memoryMapAddress = 40
        static let memoryMapEntries = 48
    }

    /// Where the block goes in guest memory.
    public let address: GuestAddress
    /// The start info, then its module list and memory map, laid out from ``address``.
    public let bytes: [UInt8]

    /// - Parameters:
    ///   - initrd: the first (only) module, which Linux takes as its initrd.
    ///   - acpiRoot: the RSDP's address, or nil for none.
    init(at address: GuestAddress, commandLine: GuestAddress, initrd: GuestAddressRange?, acpiRoot: GuestAddress?,
         memoryMap: [E820Entry]) {
        self.address = address
        let moduleCount = initrd == nil ? 0 : 1
        let moduleList = address.rawValue &+ UInt64(Self.headerSize)
        let memoryMapAddress = moduleList &+ UInt64(moduleCount * Self.moduleEntrySize)
        var bytes = [UInt8](repeating: 0, count: Self.size(memoryMapEntries: memoryMap.count, hasInitrd: initrd != nil))
        bytes.setLittleEndian(Self.magic, at: Offset.magic)
        bytes.setLittleEndian(Self.version, at: Offset.version)
        bytes.setLittleEndian(UInt32(moduleCount), at: Offset.moduleCount)
        bytes.setLittleEndian(initrd == nil ? 0 : moduleList, at: Offset.moduleListAddress)
        bytes.setLittleEndian(commandLine.rawValue, at: Offset.commandLineAddress)
        bytes.setLittleEndian(acpiRoot?.rawValue ?? 0, at: Offset.rsdpAddress)
        bytes.setLittleEndian(memoryMapAddress, at: Offset.memoryMapAddress)
        bytes.setLittleEndian(UInt32(memoryMap.count), at: Offset.memoryMapEntries)
        if let initrd {
            // hvm_modlist_entry: paddr, size, cmdline_paddr (none), reserved.
            bytes.setLittleEndian(initrd.start.rawValue, at: Self.headerSize)
            bytes.setLittleEndian(initrd.length, at: Self.headerSize + 8)
        }
        for (index, entry) in memoryMap.enumerated() {
            // hvm_memmap_table_entry: addr, size, type (the e820 types), reserved.
            let base = Self.headerSize + moduleCount * Self.moduleEntrySize + index * Self.memoryMapEntrySize
            bytes.setLittleEndian(entry.start, at: base)
            bytes.setLittleEndian(entry.length, at: base + 8)
            bytes.setLittleEndian(entry.kind.rawValue, at: base + 16)
        }
        self.bytes = bytes
    }

    static func size(memoryMapEntries: Int, hasInitrd: Bool) -> Int {
        headerSize + (hasInitrd ? moduleEntrySize : 0) + memoryMapEntries * memoryMapEntrySize
    }

    // Readers, for tests and for embedders that want to check what the guest will see.

    /// cmdline_paddr: where the command line is.
    public var commandLineAddress: UInt64 { bytes.littleEndian(UInt64.self, at: Offset.commandLineAddress) }
    /// rsdp_paddr: where the ACPI RSDP is, or 0.
    public var rsdpAddress: UInt64 { bytes.littleEndian(UInt64.self, at: Offset.rsdpAddress) }
    /// nr_modules: 1 with an initrd, else 0.
    public var moduleCount: UInt32 { bytes.littleEndian(UInt32.self, at: Offset.moduleCount) }
    /// memmap_entries: how many memory map entries follow.
    public var memoryMapEntryCount: UInt32 { bytes.littleEndian(UInt32.self, at: Offset.memoryMapEntries) }
}
