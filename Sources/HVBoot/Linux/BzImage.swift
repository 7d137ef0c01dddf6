/// A bzImage: boot sector and real-mode setup code, then the protected-mode kernel, whose
/// 64-bit entry point is 0x200 bytes in. Parsed and checked; nothing is trusted that the
/// header says about where things are.
public struct BzImage: Sendable {
    /// The setup header, checked.
    public let header: LinuxSetupHeader
    /// The whole file.
    public let bytes: [UInt8]

    /// Parses and checks a bzImage: boot flag, header magic, protocol version (2.12 or later), a 64-bit entry, and every size and offset against the image's length.
    public init(bytes: [UInt8]) throws(LinuxBootError) {
        let header = try LinuxSetupHeader(image: bytes)
        guard header.setupBytes < bytes.count else {
            throw .truncated(what: "setup_sects (\(header.setupSectors)) of setup code and a kernel",
                             needed: UInt64(header.setupBytes) + 1, fileSize: UInt64(bytes.count))
        }
        let kernelSize = UInt64(bytes.count - header.setupBytes)
        // The 64-bit entry is 0x200 into the protected-mode kernel.
        guard kernelSize > 0x200 else {
            throw .truncated(what: "the protected-mode kernel's 64-bit entry (0x200)", needed: UInt64(header.setupBytes) + 0x201,
                             fileSize: UInt64(bytes.count))
        }
        let payloadEnd = UInt64(header.payloadOffset) + UInt64(header.payloadLength)
        guard payloadEnd <= kernelSize else {
            throw .badField(name: "payload_offset + payload_length (0x248, 0x24C)", value: payloadEnd,
                            reason: "past the protected-mode kernel's 0x\(String(kernelSize, radix: 16)) bytes")
        }
        guard UInt64(header.initSize) >= kernelSize else {
            throw .badField(name: "init_size (0x260)", value: UInt64(header.initSize),
                            reason: "smaller than the protected-mode kernel (0x\(String(kernelSize, radix: 16)) bytes)")
        }
        self.header = header
        self.bytes = bytes
    }

    /// The protected-mode kernel: what is loaded into guest RAM.
    public var protectedModeKernel: ArraySlice<UInt8> { bytes[header.setupBytes...] }

    /// The compressed kernel inside the protected-mode kernel (for host-side extraction).
    public var payload: ArraySlice<UInt8> {
        let start = header.setupBytes + Int(header.payloadOffset)
        return bytes[start..<(start + Int(header.payloadLength))]
    }

    /// The setup header's bytes, 0x1F1 up to its end (at most the zero page's room for it).
    var headerBytes: ArraySlice<UInt8> {
        bytes[LinuxSetupHeader.Offset.setupSectors..<min(header.end, LinuxSetupHeader.Offset.zeroPageRoomEnd)]
    }
}
