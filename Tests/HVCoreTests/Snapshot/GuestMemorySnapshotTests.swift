import Glibc
import SystemPackage
import Testing
@testable import HVCore

@Suite("Guest memory snapshots")
struct GuestMemorySnapshotTests {
    static func temporaryFile(_ name: String) throws -> (FileDescriptor, String) {
        let path = "/tmp/hvkit-memory-\(name)-\(getpid())"
        let file = try FileDescriptor.open(path, .readWrite, options: [.create, .truncate], permissions: [.ownerReadWrite])
        return (file, path)
    }

    /// Two regions with a hole between them, some pages written: the file holds every region
    /// at its layout offset, zero pages as holes, and maps back private with the same bytes.
    @Test func memoryIsSavedSparseAndMapsBackPrivate() throws {
        let memory = try GuestMemoryMmap([
            MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
            MemoryRegionSpec(start: GuestAddress(4 << 20), size: 2 << 20, backing: .memfd(name: "hvkit-snapshot-test")),
        ])
        try memory.write([UInt8](repeating: 0x5A, count: 3 * 4096 + 7), to: GuestAddress(0x3000))
        try memory.write(UInt64(0xFEED_F00D), at: GuestAddress(0xFFFF8))
        try memory.write([UInt8](repeating: 0xC3, count: 4096), to: GuestAddress((4 << 20) + 0x10_0000))
        let (file, path) = try Self.temporaryFile("sparse")
        defer {
            try? file.close()
            unlink(path)
        }
        let written = try memory.writeSnapshot(to: file, path: path)
        // Five pages of the first region, one of the second; everything else is a hole.
        #expect(written == 6 * 4096)
        var status = stat()
        #expect(fstat(file.rawValue, &status) == 0)
        #expect(status.st_size == 3 << 20)
        #expect(UInt64(status.st_blocks) * 512 < 1 << 20, "the file is not sparse: \(status.st_blocks) blocks")
        #expect(memory.snapshotLayout.map(\.fileOffset) == [0, 1 << 20])

        let restored = try GuestMemoryMmap(GuestMemoryMmap.restoredLayout(memory.snapshotLayout, file: file, path: path))
        for region in memory.regions {
            let original = try memory.readBytes(at: region.range.start, count: Int(region.size))
            #expect(try restored.readBytes(at: region.range.start, count: Int(region.size)) == original)
        }
        // Copied in instead of mapped: the same bytes.
        let copied = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
                                          MemoryRegionSpec(start: GuestAddress(4 << 20), size: 2 << 20)])
        try copied.readSnapshot(from: file, path: path, layout: memory.snapshotLayout)
        for region in memory.regions {
            let original = try memory.readBytes(at: region.range.start, count: Int(region.size))
            #expect(try copied.readBytes(at: region.range.start, count: Int(region.size)) == original)
        }
        #expect(throws: SnapshotError.self) { try copied.readSnapshot(from: file, path: path, layout: Array(memory.snapshotLayout.prefix(1))) }

        // Writes to the restored memory stay in this process: the file keeps the saved bytes.
        try restored.write(UInt64(0x1111), at: GuestAddress(0xFFFF8))
        try restored.fill(0, at: GuestAddress(0), length: 1 << 20)
        var saved = [UInt8](repeating: 0, count: 8)
        _ = try saved.withUnsafeMutableBytes { try file.read(fromAbsoluteOffset: 0xFFFF8, into: $0) }
        #expect(saved == withUnsafeBytes(of: UInt64(0xFEED_F00D).littleEndian) { Array($0) })
        #expect(try restored.read(UInt64.self, at: GuestAddress(0x3000)) == 0)
    }

    @Test func aMemoryFileShorterThanItsLayoutIsRefused() throws {
        let (file, path) = try Self.temporaryFile("short")
        defer {
            try? file.close()
            unlink(path)
        }
        #expect(ftruncate(file.rawValue, 4096) == 0)
        let layout = [SnapshotMemoryRegion(start: GuestAddress(0), size: 8192, fileOffset: 0)]
        #expect(throws: SnapshotError.self) { try GuestMemoryMmap.restoredLayout(layout, file: file, path: path) }
        let overflowing = [SnapshotMemoryRegion(start: GuestAddress(0), size: 4096, fileOffset: .max - 100)]
        #expect(throws: SnapshotError.self) { try GuestMemoryMmap.restoredLayout(overflowing, file: file, path: path) }
    }
}
