/// The zero page (struct boot_params, 4 KiB) a 64-bit Linux entry finds through RSI: the setup
/// header, the command line and initrd addresses, and the e820 memory map.
/// (Documentation/arch/x86/zero-page.rst.)
public struct ZeroPage: Sendable, Hashable {
    /// A zero page is one 4 KiB page.
    public static let size = 4096

    enum Offset {
        static let acpiRSDPAddress = 0x070
        static let extRamdiskImage = 0x0C0
        static let extRamdiskSize = 0x0C4
        static let extCommandLinePointer = 0x0C8
        static let e820Entries = 0x1E8
        static let e820Table = 0x2D0
        static let e820EntrySize = 20
    }

    /// The identifier a boot loader without an assigned one puts in type_of_loader.
    static let undefinedLoader: UInt8 = 0xFF

    /// The page as the kernel will read it.
    public private(set) var bytes = [UInt8](repeating: 0, count: ZeroPage.size)

    /// A zero page with `header` (the bytes from 0x1F1, as in the image) copied in.
    init(header: ArraySlice<UInt8>) {
        bytes.replaceSubrange(LinuxSetupHeader.Offset.setupSectors..<(LinuxSetupHeader.Offset.setupSectors + header.count), with: header)
        bytes[LinuxSetupHeader.Offset.typeOfLoader] = Self.undefinedLoader
    }

    /// The header an ELF kernel (vmlinux), which has none of its own, gets: the magic, the
    /// boot flag and protocol 2.12, enough for the kernel to read the fields below.
    static func synthesizedHeader(commandLineSize: UInt32, kernelAlignment: UInt32) -> ZeroPage {
        var page = ZeroPage(header: [])
        page.bytes.setLittleEndian(LinuxSetupHeader.bootFlagValue, at: LinuxSetupHeader.Offset.bootFlag)
        page.bytes.setLittleEndian(LinuxSetupHeader.magic, at: LinuxSetupHeader.Offset.magic)
        page.bytes.setLittleEndian(UInt16(0x020C), at: LinuxSetupHeader.Offset.version)
        page.bytes[LinuxSetupHeader.Offset.loadFlags] = LinuxSetupHeader.loadedHigh
        page.bytes.setLittleEndian(kernelAlignment, at: LinuxSetupHeader.Offset.kernelAlignment)
        page.bytes.setLittleEndian(commandLineSize, at: LinuxSetupHeader.Offset.commandLineSize)
        return page
    }

    mutating func setCommandLine(at address: UInt64) {
        bytes.setLittleEndian(UInt32(truncatingIfNeeded: address), at: LinuxSetupHeader.Offset.commandLinePointer)
        bytes.setLittleEndian(UInt32(truncatingIfNeeded: address >> 32), at: Offset.extCommandLinePointer)
    }

    mutating func setInitrd(at address: UInt64, size: UInt64) {
        bytes.setLittleEndian(UInt32(truncatingIfNeeded: address), at: LinuxSetupHeader.Offset.ramdiskImage)
        bytes.setLittleEndian(UInt32(truncatingIfNeeded: address >> 32), at: Offset.extRamdiskImage)
        bytes.setLittleEndian(UInt32(truncatingIfNeeded: size), at: LinuxSetupHeader.Offset.ramdiskSize)
        bytes.setLittleEndian(UInt32(truncatingIfNeeded: size >> 32), at: Offset.extRamdiskSize)
    }

    mutating func setACPIRoot(at address: UInt64) {
        bytes.setLittleEndian(address, at: Offset.acpiRSDPAddress)
    }

    /// acpi_rsdp_addr: where the RSDP is, or 0.
    public var acpiRootAddress: UInt64 { bytes.littleEndian(UInt64.self, at: Offset.acpiRSDPAddress) }

    mutating func setMemoryMap(_ entries: [E820Entry]) {
        bytes[Offset.e820Entries] = UInt8(entries.count)
        for (index, entry) in entries.enumerated() {
            let base = Offset.e820Table + index * Offset.e820EntrySize
            bytes.setLittleEndian(entry.start, at: base)
            bytes.setLittleEndian(entry.length, at: base + 8)
            bytes.setLittleEndian(entry.kind.rawValue, at: base + 16)
        }
    }

    // Readers, for tests and for embedders that want to check what the guest will see.

    /// cmd_line_ptr with ext_cmd_line_ptr: where the command line is.
    public var commandLineAddress: UInt64 {
        UInt64(bytes.littleEndian(UInt32.self, at: LinuxSetupHeader.Offset.commandLinePointer))
            | UInt64(bytes.littleEndian(UInt32.self, at: Offset.extCommandLinePointer)) << 32
    }

    /// ramdisk_image and ramdisk_size with their ext_ high halves.
    public var initrd: (address: UInt64, size: UInt64) {
        (UInt64(bytes.littleEndian(UInt32.self, at: LinuxSetupHeader.Offset.ramdiskImage))
            | UInt64(bytes.littleEndian(UInt32.self, at: Offset.extRamdiskImage)) << 32,
         UInt64(bytes.littleEndian(UInt32.self, at: LinuxSetupHeader.Offset.ramdiskSize))
            | UInt64(bytes.littleEndian(UInt32.self, at: Offset.extRamdiskSize)) << 32)
    }

    /// The e820 table (e820_entries of them).
    public var memoryMap: [E820Entry] {
        (0..<Int(bytes[Offset.e820Entries])).compactMap { index in
            let base = Offset.e820Table + index * Offset.e820EntrySize
            guard let kind = E820Entry.Kind(rawValue: bytes.littleEndian(UInt32.self, at: base + 16)) else { return nil }
            return E820Entry(start: bytes.littleEndian(UInt64.self, at: base), length: bytes.littleEndian(UInt64.self, at: base + 8), kind: kind)
        }
    }

    /// The setup header's boot flag (0xAA55).
    public var bootFlag: UInt16 { bytes.littleEndian(UInt16.self, at: LinuxSetupHeader.Offset.bootFlag) }
    /// type_of_loader (0xFF: a loader without an assigned ID).
    public var typeOfLoader: UInt8 { bytes[LinuxSetupHeader.Offset.typeOfLoader] }
}
