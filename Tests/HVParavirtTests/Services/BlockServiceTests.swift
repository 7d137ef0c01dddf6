import HVCore
@testable import HVParavirt
import HVTestSupport
import Testing

@Suite struct BlockServiceTests {
    static let diskSize = 64 << 10

    func setUp(readOnly: Bool = false) throws -> (GuestMemoryMmap, HypercallDispatcher, TemporaryDisk) {
        let memory = try testMemory()
        let disk = try TemporaryDisk(size: Self.diskSize)
        let service = try BlockService(fileDescriptor: disk.descriptor, readOnly: readOnly)
        return (memory, try makeDispatcher(memory: memory, [service]), disk)
    }

    @Test func readWriteFlushRoundTrip() throws {
        let (memory, dispatcher, disk) = try setUp()
        #expect(dispatcher.info.blockCapacity == UInt64(Self.diskSize))
        #expect(dispatcher.info.features.contains(.block))
        #expect(dispatcher.call(.blockRead, 1024, 0x4000, 1024) == 1024)
        #expect(try memory.readBytes(at: GuestAddress(0x4000), count: 1024) == disk.read(at: 1024, count: 1024))
        try memory.write([UInt8](repeating: 0xAB, count: 512), to: GuestAddress(0x8000))
        #expect(dispatcher.call(.blockWrite, 4096, 0x8000, 512) == 512)
        #expect(dispatcher.call(.blockFlush) == 0)
        #expect(try disk.read(at: 4096, count: 512) == [UInt8](repeating: 0xAB, count: 512))
    }

    @Test func transfersSpanningTwoAdjacentRegionsWork() throws {
        let memory = try GuestMemoryMmap([
            MemoryRegionSpec(start: GuestAddress(0), size: 64 << 10),
            MemoryRegionSpec(start: GuestAddress(64 << 10), size: 64 << 10),
        ])
        let disk = try TemporaryDisk(size: Self.diskSize)
        let dispatcher = try makeDispatcher(memory: memory, [BlockService(fileDescriptor: disk.descriptor, readOnly: false)])
        #expect(dispatcher.call(.blockRead, 0, (64 << 10) - 512, 1024) == 1024)
        #expect(try memory.readBytes(at: GuestAddress((64 << 10) - 512), count: 1024) == disk.read(at: 0, count: 1024))
    }

    @Test(arguments: [
        (1, 0x4000, 512, HypercallErrno.invalid),                          // offset not a sector
        (0, 0x4000, 100, .invalid),                                         // length not a sector
        (0, 0x4000, 0, .invalid),                                           // empty
        (UInt64(diskSize), 0x4000, 512, .outOfRange),                      // just past the end
        (UInt64(diskSize) - 512, 0x4000, 1024, .outOfRange),               // runs past the end
        (UInt64.max - 511, 0x4000, 512, .outOfRange),                       // offset + length overflows
        (0, 0x4000, UInt64(HypercallABI.maximumBlockTransfer) + 512, .tooBig),
        (0, firstRegionEnd - 512, 1024, .fault),                            // buffer runs into the hole
        (0, readOnlyAddress.rawValue, 512, .fault),                         // a read needs writable RAM
        (0, UInt64.max - 511, 512, .fault),                                 // buffer address wraps
    ] as [(UInt64, UInt64, UInt64, HypercallErrno)])
    func refusesBadReads(offset: UInt64, buffer: UInt64, length: UInt64, code: HypercallErrno) throws {
        let (memory, dispatcher, _) = try setUp()
        #expect(dispatcher.call(.blockRead, offset, buffer, length) == failure(code))
        #expect(try memory.readBytes(at: GuestAddress(firstRegionEnd - 512), count: 512) == [UInt8](repeating: 0, count: 512))
    }

    @Test func writesToAReadOnlyDiskAreRefusedAndChangeNothing() throws {
        let (memory, dispatcher, disk) = try setUp(readOnly: true)
        #expect(dispatcher.info.features.contains(.blockReadOnly))
        let before = try disk.read(at: 0, count: 512)
        try memory.write([UInt8](repeating: 0xCD, count: 512), to: GuestAddress(0x8000))
        #expect(dispatcher.call(.blockWrite, 0, 0x8000, 512) == failure(.readOnly))
        #expect(try disk.read(at: 0, count: 512) == before)
        #expect(dispatcher.call(.blockRead, 0, 0x8000, 512) == 512)
        #expect(dispatcher.call(.blockFlush) == 0)
    }

    @Test func writesMayComeFromReadOnlyGuestMemory() throws {
        let (_, dispatcher, disk) = try setUp()
        #expect(dispatcher.call(.blockWrite, 0, readOnlyAddress.rawValue, 512) == 512)
        #expect(try disk.read(at: 0, count: 512) == [UInt8](repeating: 0, count: 512))
    }

    @Test func aMissingFileIsAClearError() {
        #expect(throws: BlockServiceError.open(path: "/nonexistent/disk.img", .noSuchFileOrDirectory)) {
            try BlockService(path: "/nonexistent/disk.img")
        }
    }
}
