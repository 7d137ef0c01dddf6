import HVCore
import CKernelDecompress

/// How a bzImage's payload is compressed, recognised by its magic bytes.
public enum KernelCompression: String, Sendable, Hashable, CaseIterable {
    case gzip, xz, lz4, zstd

    init?(magic payload: ArraySlice<UInt8>) {
        let bytes = Array(payload.prefix(6))
        if bytes.starts(with: [0x1F, 0x8B]) { self = .gzip }
        else if bytes.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { self = .xz }
        else if bytes.starts(with: [0x02, 0x21, 0x4C, 0x18]) { self = .lz4 }
        else if bytes.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { self = .zstd }
        else { return nil }
    }

    /// The name of a format the kernel can use but HVKit does not extract, for the error.
    static func unsupportedName(magic payload: ArraySlice<UInt8>) -> String {
        let bytes = Array(payload.prefix(4))
        if bytes.starts(with: [0x42, 0x5A, 0x68]) { return "bzip2" }
        if bytes.starts(with: [0x5D, 0x00, 0x00]) { return "lzma" }
        if bytes.starts(with: [0x89, 0x4C, 0x5A, 0x4F]) { return "lzo" }
        return "unknown (magic " + bytes.map { String($0, radix: 16) }.joined(separator: " ") + ")"
    }
}

extension BzImage {
    /// The largest kernel HVKit extracts (Debian's cloud kernel is about 53 MiB).
    public static let maximumExtractedSize = 512 << 20

    /// The payload's compression, or nil for a format HVKit does not extract.
    public var compression: KernelCompression? { KernelCompression(magic: payload) }

    /// Decompresses the payload on the host: the kernel's ELF image (vmlinux), to load with
    /// ``LinuxKernel/elf(_:)`` and enter directly, skipping the decompressor that would
    /// otherwise run inside the guest. The size the kernel's build appends to the payload
    /// (its last 4 bytes) bounds the output and must match it exactly.
    public func extractKernel() throws(LinuxBootError) -> [UInt8] {
        let payload = self.payload
        guard let compression = KernelCompression(magic: payload) else {
            throw .extraction("compressed with \(KernelCompression.unsupportedName(magic: payload)); gzip, xz, lz4 and zstd can be extracted")
        }
        guard payload.count > 4 else { throw .truncated(what: "the payload", needed: 5, fileSize: UInt64(payload.count)) }
        let sizeWord = Array(payload.suffix(4))
        let declared = Int(sizeWord.littleEndian(UInt32.self, at: 0))
        guard declared > 0, declared <= Self.maximumExtractedSize else {
            throw .extraction("the size it declares, \(declared) bytes, is 0 or over \(Self.maximumExtractedSize)")
        }
        let stream = payload.dropLast(4)
        var output = [UInt8](repeating: 0, count: declared)
        var written = 0
        let status: Int32 = unsafe stream.withUnsafeBufferPointer { input in
            unsafe output.withUnsafeMutableBufferPointer { buffer in
                // SAFETY: both buffers are valid for their counts during the call; the
                // decompressor writes at most `buffer.count` bytes.
                let source = input.baseAddress, destination = buffer.baseAddress
                switch compression {
                case .gzip: return unsafe hv_decompress_gzip(source, input.count, destination, buffer.count, &written)
                case .xz: return unsafe hv_decompress_xz(source, input.count, destination, buffer.count, &written)
                case .lz4: return unsafe hv_decompress_lz4_legacy(source, input.count, destination, buffer.count, &written)
                case .zstd: return unsafe hv_decompress_zstd(source, input.count, destination, buffer.count, &written)
                }
            }
        }
        switch status {
        case 0: break
        case HV_DECOMPRESS_TOO_LARGE: throw .extraction("\(compression) output exceeds the declared \(declared) bytes")
        case HV_DECOMPRESS_TRUNCATED: throw .extraction("\(compression) stream ends early")
        case HV_DECOMPRESS_NO_MEMORY: throw .extraction("\(compression) decoder could not allocate memory")
        case HV_DECOMPRESS_LIBRARY_MISSING:
            throw .extraction(unsafe "the \(compression) library cannot be loaded: \(String(cString: hv_decompress_missing_library()))")
        default: throw .extraction("\(compression) stream is corrupt")
        }
        guard written == declared else {
            throw .extraction("\(compression) stream gave \(written) bytes, the payload declares \(declared)")
        }
        return output
    }
}

extension LinuxKernel {
    /// The ELF kernel inside `image`, decompressed on the host (see
    /// ``BzImage/extractKernel()``).
    public init(extracting image: BzImage) throws(LinuxBootError) {
        let vmlinux = try image.extractKernel()
        do { self = .elf(try ELF64Image(bytes: vmlinux)) } catch { throw .elf(error) }
    }
}
