/// The setup header of a bzImage (Linux x86 boot protocol, Documentation/arch/x86/boot.rst),
/// read and checked. Offsets are from the start of the image, which is also where the header
/// sits in the zero page.
public struct LinuxSetupHeader: Sendable, Hashable {
    /// Offsets of the fields HVKit reads or writes.
    enum Offset {
        static let setupSectors = 0x1F1
        static let bootFlag = 0x1FE
        static let jump = 0x200
        static let magic = 0x202
        static let version = 0x206
        static let typeOfLoader = 0x210
        static let loadFlags = 0x211
        static let ramdiskImage = 0x218
        static let ramdiskSize = 0x21C
        static let commandLinePointer = 0x228
        static let initrdAddressMax = 0x22C
        static let kernelAlignment = 0x230
        static let relocatable = 0x234
        static let xloadFlags = 0x236
        static let commandLineSize = 0x238
        static let payloadOffset = 0x248
        static let payloadLength = 0x24C
        static let preferredAddress = 0x258
        static let initSize = 0x260
        /// The first byte after the last field HVKit reads (kernel_info_offset, 2.15).
        static let fieldsEnd = 0x26C
        /// Where the header's room in the zero page ends (edd_mbr_sig_buffer follows).
        static let zeroPageRoomEnd = 0x290
    }

    static let magic: UInt32 = 0x5372_6448  // "HdrS"
    static let bootFlagValue: UInt16 = 0xAA55
    static let loadedHigh: UInt8 = 1 << 0
    static let kernel64: UInt16 = 1 << 0

    /// Sectors of real-mode setup code after the boot sector (0 in the file means 4).
    public let setupSectors: Int
    /// Protocol version, major in the high byte (0x020F is 2.15).
    public let version: UInt16
    /// loadflags: bit 0 LOADED_HIGH (the protected-mode kernel goes at 1 MiB).
    public let loadFlags: UInt8
    /// xloadflags: bit 0 XLF_KERNEL_64 (a 64-bit entry at +0x200).
    public let xloadFlags: UInt16
    /// The highest address the initrd may occupy.
    public let initrdAddressMax: UInt32
    /// Alignment a relocatable kernel needs.
    public let kernelAlignment: UInt32
    /// Whether the kernel may be loaded elsewhere than pref_address (relocatable_kernel).
    public let relocatable: Bool
    /// The longest command line the kernel takes, without its terminating NUL.
    public let commandLineSize: UInt32
    /// The compressed payload, relative to the start of the protected-mode kernel.
    public let payloadOffset: UInt32
    /// The compressed payload's size (payload_length).
    public let payloadLength: UInt32
    /// Where the kernel prefers to be loaded.
    public let preferredAddress: UInt64
    /// Bytes of RAM the kernel needs from its load address while it decompresses and starts.
    public let initSize: UInt32
    /// The header's end, from the jump at 0x200 (0x202 plus its displacement byte).
    public let end: Int

    /// Parses and checks the header at the start of `image`.
    public init(image: [UInt8]) throws(LinuxBootError) {
        guard image.count >= Offset.fieldsEnd else {
            throw .truncated(what: "the setup header", needed: UInt64(Offset.fieldsEnd), fileSize: UInt64(image.count))
        }
        guard image.littleEndian(UInt32.self, at: Offset.magic) == Self.magic else { throw .notAKernel }
        let bootFlag = image.littleEndian(UInt16.self, at: Offset.bootFlag)
        guard bootFlag == Self.bootFlagValue else { throw .badBootFlag(bootFlag) }
        version = image.littleEndian(UInt16.self, at: Offset.version)
        guard version >= 0x020C else { throw .protocolTooOld(version: version) }
        loadFlags = image[Offset.loadFlags]
        guard loadFlags & Self.loadedHigh != 0 else { throw .notLoadedHigh(loadflags: loadFlags) }
        xloadFlags = image.littleEndian(UInt16.self, at: Offset.xloadFlags)
        guard xloadFlags & Self.kernel64 != 0 else { throw .no64BitEntry(xloadflags: xloadFlags) }

        let sectors = Int(image[Offset.setupSectors])
        setupSectors = sectors == 0 ? 4 : sectors
        end = 0x202 + Int(image[Offset.jump + 1])
        guard end >= Offset.fieldsEnd else {
            throw .badField(name: "the jump at 0x200", value: UInt64(end), reason: "the header it implies ends before kernel_info_offset (0x26C)")
        }
        guard end <= (setupSectors + 1) * 512 else {
            throw .badField(name: "the jump at 0x200", value: UInt64(end), reason: "the header it implies runs past the setup code")
        }
        initrdAddressMax = image.littleEndian(UInt32.self, at: Offset.initrdAddressMax)
        kernelAlignment = image.littleEndian(UInt32.self, at: Offset.kernelAlignment)
        relocatable = image[Offset.relocatable] != 0
        guard kernelAlignment != 0, kernelAlignment & (kernelAlignment - 1) == 0 else {
            throw .badField(name: "kernel_alignment (0x230)", value: UInt64(kernelAlignment), reason: "not a power of two")
        }
        commandLineSize = image.littleEndian(UInt32.self, at: Offset.commandLineSize)
        guard commandLineSize > 0 else {
            throw .badField(name: "cmdline_size (0x238)", value: 0, reason: "the kernel takes no command line")
        }
        payloadOffset = image.littleEndian(UInt32.self, at: Offset.payloadOffset)
        payloadLength = image.littleEndian(UInt32.self, at: Offset.payloadLength)
        preferredAddress = image.littleEndian(UInt64.self, at: Offset.preferredAddress)
        initSize = image.littleEndian(UInt32.self, at: Offset.initSize)
    }

    /// Bytes of boot sector and setup code before the protected-mode kernel.
    public var setupBytes: Int { (setupSectors + 1) * 512 }
}
