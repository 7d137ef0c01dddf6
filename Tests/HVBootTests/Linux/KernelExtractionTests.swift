import HVCore
import HVTestSupport
@testable import HVBoot
import Testing

/// Host-side extraction of a bzImage's payload, in each format the kernel's build uses, and
/// against corrupt and lying payloads.
@Suite struct KernelExtractionTests {
    /// A bzImage whose payload is `stream` followed by the size word the kernel appends.
    func image(_ stream: [UInt8], declaredSize: Int = CompressedKernels.elf.count) throws -> BzImage {
        var synthetic = SyntheticBzImage()
        var sizeWord = [UInt8](repeating: 0, count: 4)
        sizeWord.setLittleEndian(UInt32(truncatingIfNeeded: declaredSize), at: 0)
        synthetic.payload = stream + sizeWord
        return try BzImage(bytes: synthetic.bytes)
    }

    static let streams: [(KernelCompression, [UInt8])] = [
        (.gzip, CompressedKernels.gzip), (.xz, CompressedKernels.xz), (.lz4, CompressedKernels.lz4), (.zstd, CompressedKernels.zstd),
    ]

    @Test("each format extracts to the same ELF kernel", arguments: 0..<streams.count)
    func extracts(index: Int) throws {
        let (format, stream) = Self.streams[index]
        let bzImage = try image(stream)
        #expect(bzImage.compression == format)
        #expect(try bzImage.extractKernel() == CompressedKernels.elf)
        guard case let .elf(elf) = try LinuxKernel(extracting: bzImage) else {
            Issue.record("not an ELF kernel")
            return
        }
        #expect(elf.entry == GuestAddress(0x20_0000))
    }

    @Test("a corrupt stream is refused, never crashes", arguments: 0..<streams.count)
    func corruptStreams(index: Int) throws {
        let (format, stream) = Self.streams[index]
        var generator = SeededGenerator(seed: UInt64(index) &+ 77)
        for round in 0..<300 {
            var broken = stream
            // Keep the magic, so the right decoder sees the damage.
            for _ in 0..<Int(generator.next() % 4 + 1) {
                let offset = 6 + Int(generator.next() % UInt64(broken.count - 6))
                broken[offset] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
            }
            if let output = try? image(broken).extractKernel() {
                // A change a format cannot detect (lz4 has no checksum) still gives exactly the
                // declared size.
                #expect(output.count == CompressedKernels.elf.count, "\(format) round \(round)")
            }
        }
    }

    @Test("a stream that ends early is refused", arguments: 0..<streams.count)
    func truncatedStreams(index: Int) throws {
        let (_, stream) = Self.streams[index]
        for length in [6, stream.count / 2, stream.count - 1] {
            #expect(throws: LinuxBootError.self) { try image(Array(stream.prefix(length))).extractKernel() }
        }
    }

    @Test("a size word that lies is refused", arguments: 0..<streams.count)
    func lyingSizes(index: Int) throws {
        let (_, stream) = Self.streams[index]
        let real = CompressedKernels.elf.count
        for declared in [1, real - 1, real + 1, real * 4, 0, BzImage.maximumExtractedSize + 1] {
            #expect(throws: LinuxBootError.self, "declared \(declared)") { try image(stream, declaredSize: declared).extractKernel() }
        }
    }

    @Test("formats HVKit does not extract are named in the error")
    func unsupportedFormats() throws {
        for (magic, name) in [([UInt8]([0x42, 0x5A, 0x68, 0x39]), "bzip2"), ([0x5D, 0x00, 0x00, 0x80], "lzma"),
                              ([0x89, 0x4C, 0x5A, 0x4F], "lzo"), ([0x00, 0x11, 0x22, 0x33], "unknown")] {
            let bzImage = try image(magic + [UInt8](repeating: 0, count: 32))
            #expect(bzImage.compression == nil)
            do {
                _ = try bzImage.extractKernel()
                Issue.record("\(name) accepted")
            } catch {
                #expect(error.description.contains(name), "\(error)")
            }
        }
    }
}
