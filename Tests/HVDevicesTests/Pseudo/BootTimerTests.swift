import HVCore
import HVDevices
import Testing

/// What a boot timer reported.
final class BootReports: Sendable {
    private let list = Locked<[Duration]>([])
    func append(_ elapsed: Duration) { list.withLock { $0.append(elapsed) } }
    var all: [Duration] { list.withLock { $0 } }
}

@Suite struct BootTimerTests {
    /// A timer started `ago` nanoseconds back, and the times it reports.
    func timer(startedAgo ago: UInt64 = 5_000_000) -> (BootTimer, BootReports) {
        let reports = BootReports()
        let start = HostClock.monotonicNanoseconds() - ago
        return (BootTimer(start: start) { reports.append($0) }, reports)
    }

    @Test func theMagicReportsTheTimeSinceStart() {
        let (timer, reports) = timer()
        timer.write(offset: 0, width: .byte, value: 123)
        let reported = reports.all
        #expect(reported.count == 1)
        #expect(reported.allSatisfy { $0 >= .milliseconds(5) && $0 < .seconds(60) })
    }

    @Test func anyWidthCarriesTheMagicInItsLowByte() {
        let (timer, reports) = timer()
        timer.write(offset: 0, width: .doubleWord, value: 0xFFFF_FF7B)
        timer.write(offset: 0, width: .quadWord, value: 123)
        #expect(reports.all.count == 2)
    }

    @Test("other values, other offsets and reads report nothing", arguments: [
        (UInt64(0), UInt64(122)), (0, 0), (0, 0x7C), (1, 123), (0xFFF, 123), (.max, 123),
    ] as [(UInt64, UInt64)])
    func ignored(offset: UInt64, value: UInt64) {
        let (timer, reports) = timer()
        timer.write(offset: offset, width: .byte, value: value)
        #expect(timer.read(offset: offset, width: .byte) == 0)
        #expect(reports.all.isEmpty)
    }

    @Test func everyMagicWriteReportsAgain() {
        let (timer, reports) = timer()
        for _ in 0..<3 { timer.write(offset: 0, width: .byte, value: 123) }
        let reported = reports.all
        #expect(reported.count == 3)
        #expect(reported == reported.sorted())
    }

    @Test func aStartInTheFutureReportsZero() {
        let reports = BootReports()
        let timer = BootTimer(start: HostClock.monotonicNanoseconds() + 60_000_000_000) { reports.append($0) }
        timer.write(offset: 0, width: .byte, value: 123)
        #expect(reports.all == [.zero])
    }

    @Test func aGuestReachesItThroughTheMMIOBus() throws {
        let (timer, reports) = timer()
        let bus = Bus(space: .mmio)
        try bus.register(timer, at: GuestAddress(0xD100_0000), length: BootTimer.windowSize)
        bus.write(at: GuestAddress(0xD100_0000), width: .byte, value: 123)
        bus.write(at: GuestAddress(0xD100_0004), width: .byte, value: 123)
        #expect(reports.all.count == 1)
    }
}
