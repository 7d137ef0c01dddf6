import Glibc
import HVCore
import SystemPackage
import HVTestSupport
@testable import HVBoot
import Testing

/// The seed corpora of the image-parsing fuzz targets (Fuzz/Corpus) are the unit tests' own
/// cases: synthetic ELF images with and without PVH notes, bzImages carrying a kernel in each
/// compression the kernel's build uses, and machine descriptions for the boot tables. This
/// test rebuilds them from the same helpers and fails when the committed seeds are stale;
/// `HVKIT_UPDATE_FUZZ_SEEDS=1 swift test --filter FuzzCorpusTests` rewrites them.
@Suite struct FuzzCorpusTests {
    static let corpus = URLPath(#filePath).parent.parent.parent.appending("Fuzz/Corpus")

    /// Seeds by target and file name.
    static var seeds: [(target: String, name: String, bytes: [UInt8])] {
        var seeds: [(String, String, [UInt8])] = []
        let entry: UInt64 = 0x10_0000
        seeds.append(("fuzz-elf", "plain", syntheticELF(code: TestGuests.countLoop, at: entry)))
        seeds.append(("fuzz-elf", "pvh-note", syntheticELF(code: TestGuests.pvhEntry, at: entry, notes: pvhNote(entry: entry))))
        seeds.append(("fuzz-elf", "vmlinux", CompressedKernels.elf))
        for (name, stream) in [("gzip", CompressedKernels.gzip), ("xz", CompressedKernels.xz),
                               ("lz4", CompressedKernels.lz4), ("zstd", CompressedKernels.zstd)] {
            var image = SyntheticBzImage()
            var sizeWord = [UInt8](repeating: 0, count: 4)
            sizeWord.setLittleEndian(UInt32(CompressedKernels.elf.count), at: 0)
            image.payload = stream + sizeWord
            // The first byte asks the target to extract the payload.
            seeds.append(("fuzz-bzimage", "bzimage-\(name)", [1] + image.bytes))
        }
        seeds.append(("fuzz-bzimage", "bzimage-plain", [0] + SyntheticBzImage().bytes))
        for (vcpus, devices) in [(1, 0), (2, 1), (8, 4)] {
            var seed = FuzzSeedWriter()
            seed.put(UInt16(vcpus + 8))
            seed.put(UInt32(devices))
            for index in 0..<devices {
                seed.put(UInt64(0xD000_0000 + UInt64(index) * 0x1000)); seed.put(UInt8(7))  // base, as is
                seed.put(UInt32(0x1000)); seed.put(UInt32(5 + index))
            }
            seed.put(UInt64(0xE0000)); seed.put(UInt8(7))  // the default table address, as is
            seeds.append(("fuzz-boot-tables", "vcpus-\(vcpus)-devices-\(devices)", seed.bytes))
        }
        return seeds
    }

    @Test func committedSeedsMatchTheUnitTestCases() throws {
        let update = getenv("HVKIT_UPDATE_FUZZ_SEEDS") != nil
        for seed in Self.seeds {
            let path = Self.corpus.appending("\(seed.target)/\(seed.name)")
            if update {
                try path.parent.createDirectories()
                try path.write(seed.bytes)
            }
            #expect(try HostFile.readAll(FilePath(path.string)) == seed.bytes, "\(seed.target)/\(seed.name) is stale: run with HVKIT_UPDATE_FUZZ_SEEDS=1")
        }
    }
}

/// Encodes values as FuzzInput (Fuzz/Sources/FuzzSupport) reads them: little-endian, in order.
struct FuzzSeedWriter {
    var bytes: [UInt8] = []
    mutating func put<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }
}

/// A file path with the few operations the corpus test needs (no Foundation in the tests of
/// a Foundation-free library).
struct URLPath {
    let string: String
    init(_ string: String) { self.string = string }
    var parent: URLPath {
        guard let slash = string.lastIndex(of: "/") else { return URLPath(".") }
        return URLPath(String(string[..<slash]))
    }
    func appending(_ component: String) -> URLPath { URLPath(string + "/" + component) }

    func createDirectories() throws {
        var current = ""
        for component in string.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0, errno != EEXIST { throw CorpusFileError(code: errno, path: string) }
        }
    }

    func write(_ bytes: [UInt8]) throws {
        let fd = open(string, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CorpusFileError(code: errno, path: string) }
        defer { close(fd) }
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else { throw CorpusFileError(code: errno, path: string) }
    }

}

/// A corpus file could not be read or written.
struct CorpusFileError: Error, CustomStringConvertible {
    let code: Int32
    let path: String
    var description: String { "\(path): errno \(code)" }
}
