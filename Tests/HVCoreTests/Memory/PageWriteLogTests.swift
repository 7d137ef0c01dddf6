import Testing
@testable import HVCore

@Suite("Page write log")
struct PageWriteLogTests {
    @Test func everyPageTouchedForWritingIsLoggedOnce() throws {
        let memory = try GuestMemoryMmap([
            MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20, options: [.logWrites]),
            MemoryRegionSpec(start: GuestAddress(2 << 20), size: 1 << 20),
        ])
        try memory.write(UInt32(1), at: GuestAddress(0x1FFE))  // pages 1 and 2
        try memory.write([UInt8](repeating: 1, count: 64 * 4096 + 1), to: GuestAddress(63 * 4096))  // 63...127
        try memory.fill(0, at: GuestAddress(200 * 4096), length: 8 * 4096)  // 200...207
        _ = try memory.read(UInt64.self, at: GuestAddress(250 * 4096))  // a read logs nothing
        try memory.write(UInt64(1), at: GuestAddress((2 << 20) + 4096))  // a region that does not log
        let pages = memory.takeWrittenPages()
        #expect(pages[0] == [1, 2] + Array(63...127) + Array(200...207))
        #expect(pages[1].isEmpty)
        #expect(memory.takeWrittenPages()[0].isEmpty, "taking the pages clears them")
        try memory.write(UInt8(1), at: GuestAddress((1 << 20) - 1))  // the last page
        #expect(memory.takeWrittenPages()[0] == [255])
    }

    @Test func pagesBecomeRuns() {
        #expect(GuestMemoryMmap.runs([1, 2, 3, 7, 9, 10]).map { [$0.start, $0.count] } == [[1, 3], [7, 1], [9, 2]])
        #expect(GuestMemoryMmap.runs([]).isEmpty)
    }
}
