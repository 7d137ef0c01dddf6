import HVCore

/// A bzImage built field by field, so each test can break exactly one thing.
public struct SyntheticBzImage {
    public init() {}
    public var setupSectors: UInt8 = 4
    /// What the header says, when it should not match the layout (a lying image).
    public var declaredSetupSectors: UInt8?
    public var bootFlag: UInt16 = 0xAA55
    public var magic: UInt32 = 0x5372_6448
    public var version: UInt16 = 0x020F
    public var loadFlags: UInt8 = 0x01
    public var xloadFlags: UInt16 = 0x0001
    /// The jump's displacement at 0x201: the header ends at 0x202 plus this.
    public var headerDisplacement: UInt8 = 0x6A
    public var initrdAddressMax: UInt32 = 0x37FF_FFFF
    public var kernelAlignment: UInt32 = 0x20_0000
    public var relocatable = true
    public var commandLineSize: UInt32 = 2048
    public var preferredAddress: UInt64 = 0x100_0000
    /// The code at the 64-bit entry, 0x200 into the protected-mode kernel.
    public var entryCode: [UInt8] = TestGuests.linuxEntry
    public var payloadOffset: UInt32 = 0x400
    public var payloadLength: UInt32 = 0x100
    /// Default: the protected-mode kernel's size rounded up to 4 KiB.
    public var initSize: UInt32?
    /// A real payload (a compressed kernel and its size word) at payloadOffset, replacing the
    /// pattern; payloadLength follows it.
    public var payload: [UInt8]?

    public var kernelSize: Int { payload.map { max(0x600, Int(payloadOffset) + $0.count) } ?? 0x600 }

    public var bytes: [UInt8] {
        let setupBytes = (Int(setupSectors == 0 ? 4 : setupSectors) + 1) * 512
        var image = [UInt8](repeating: 0, count: setupBytes + kernelSize)
        image[0x1F1] = declaredSetupSectors ?? setupSectors
        image.storeLittleEndian(bootFlag, at: 0x1FE)
        image[0x200] = 0xEB
        image[0x201] = headerDisplacement
        image.storeLittleEndian(magic, at: 0x202)
        image.storeLittleEndian(version, at: 0x206)
        image[0x211] = loadFlags
        image.storeLittleEndian(initrdAddressMax, at: 0x22C)
        image.storeLittleEndian(kernelAlignment, at: 0x230)
        image[0x234] = relocatable ? 1 : 0
        image.storeLittleEndian(xloadFlags, at: 0x236)
        image.storeLittleEndian(commandLineSize, at: 0x238)
        image.storeLittleEndian(payloadOffset, at: 0x248)
        image.storeLittleEndian(payload.map { UInt32($0.count) } ?? payloadLength, at: 0x24C)
        image.storeLittleEndian(preferredAddress, at: 0x258)
        image.storeLittleEndian(initSize ?? UInt32((kernelSize + 0xFFF) & ~0xFFF), at: 0x260)
        if let payload {
            image.replaceSubrange((setupBytes + Int(payloadOffset))..<(setupBytes + Int(payloadOffset) + payload.count), with: payload)
        } else {
            // Payload bytes, to recognise.
            for index in 0..<Int(min(payloadLength, 0x100)) where Int(payloadOffset) + index < kernelSize {
                image[setupBytes + Int(payloadOffset) + index] = UInt8(truncatingIfNeeded: index ^ 0x5A)
            }
        }
        image.replaceSubrange((setupBytes + 0x200)..<(setupBytes + 0x200 + entryCode.count), with: entryCode)
        return image
    }
}

/// The PVH entry note (Xen, XEN_ELFNOTE_PHYS32_ENTRY) with an 8-byte address, as Linux writes it.
public func pvhNote(entry: UInt64) -> [UInt8] {
    elfNote(name: "Xen", type: 18, descriptor: (0..<8).map { UInt8(truncatingIfNeeded: entry >> ($0 * 8)) })
}
