import Glibc
import HVCore
import Synchronization
import SystemPackage
import Testing

@Suite struct HostFileTests {
    /// Scratch files made so far: each test case, run in parallel with the others, has its own.
    private static let made = Atomic<Int>(0)

    /// A scratch file of `count` bytes (0, 7, 14, ... wrapping), removed by the caller.
    private func scratch(_ count: Int) throws -> (path: FilePath, bytes: [UInt8]) {
        let path = FilePath("/tmp/hvkit-hostfile-\(getpid())-\(Self.made.wrappingAdd(1, ordering: .relaxed).oldValue)")
        let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let descriptor = try FileDescriptor.open(path, .writeOnly, options: [.create, .truncate], permissions: .ownerReadWrite)
        defer { try? descriptor.close() }
        _ = try descriptor.writeAll(bytes)
        return (path, bytes)
    }

    @Test("a whole file comes back intact across 1 MiB chunks", arguments: [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 3, 3 << 20])
    func readAllAcrossChunks(count: Int) throws {
        let file = try scratch(count)
        defer { _ = unlink(file.path.string) }
        let read = try HostFile.readAll(file.path)
        #expect(read.count == count)
        #expect(read == file.bytes, "contents differ")
    }

    @Test("a prefix stops at the limit, or at the end of a shorter file", arguments: [(5000, 16 << 10), (40_000, 16 << 10), (40_000, 0), (3 << 20, (1 << 20) + 1)])
    func readPrefix(count: Int, limit: Int) throws {
        let file = try scratch(count)
        defer { _ = unlink(file.path.string) }
        let read = try HostFile.read(file.path, upTo: limit)
        #expect(read.count == min(count, limit))
        #expect(read == Array(file.bytes.prefix(limit)), "contents differ")
    }

    @Test func procfsFilesWithoutASizeAreReadToTheLimit() throws {
        let whole = try HostFile.readAll("/proc/self/maps")
        #expect(!whole.isEmpty)
        let prefix = try HostFile.read("/proc/cpuinfo", upTo: 100)
        #expect(prefix.count == 100)
        #expect(String(decoding: prefix, as: UTF8.self).hasPrefix("processor"))
    }

    @Test func aMissingFileThrowsItsErrno() {
        #expect(throws: Errno.noSuchFileOrDirectory) { try HostFile.read("/nonexistent/hvkit", upTo: 10) }
    }
}
