import SystemPackage
import Testing
@testable import HVCore

@Suite("EventFD")
struct EventFDTests {
    @Test func countsAccumulateUntilConsumed() throws {
        let eventfd = try EventFD(nonBlocking: true)
        #expect(try eventfd.consume() == nil)
        try eventfd.signal()
        try eventfd.signal(4)
        #expect(try eventfd.consume() == 5)
        #expect(try eventfd.consume() == nil)
    }

    @Test func semaphoreTakesOneAtATime() throws {
        let eventfd = try EventFD(initialValue: 2, nonBlocking: true, semaphore: true)
        #expect(try eventfd.consume() == 1)
        #expect(try eventfd.consume() == 1)
        #expect(try eventfd.consume() == nil)
    }

    @Test func refusesAnOverflowingSignal() throws {
        let eventfd = try EventFD(nonBlocking: true)
        // The counter tops out at 2^64 - 2; the kernel refuses more instead of wrapping.
        #expect(throws: Errno.self) { try eventfd.signal(UInt64.max) }
    }
}
