import Glibc
import HVCore

/// The MC146818 CMOS real-time clock at ports 0x70 (index) and 0x71 (data): the wall-clock
/// time Linux reads at boot, in BCD and 24-hour mode, plus 128 bytes of CMOS RAM.
///
/// Register it on the PIO bus at 0x70 with 2 ports. The clock never reports an update in
/// progress, so a guest's read loop ends at once. Time comes from `now` (seconds since the
/// epoch, UTC); the default is the host's CLOCK_REALTIME.
public final class CMOSClock: BusDevice {
    /// The index and data ports (0x70, 0x71).
    public static let portCount: UInt64 = 2

    private struct State {
        var index: UInt8 = 0
        var ram = [UInt8](repeating: 0, count: 128)
    }

    private let state = Locked(State())
    private let now: @Sendable () -> Int

    /// A clock that reads `now` (seconds since 1970) for the time registers.
    public init(now: @escaping @Sendable () -> Int = CMOSClock.hostTime) {
        self.now = now
    }

    /// Seconds since the epoch from the host's real-time clock.
    @Sendable public static func hostTime() -> Int {
        var time = timespec()
        unsafe clock_gettime(CLOCK_REALTIME, &time)
        return time.tv_sec
    }

    /// Reads the selected register: the host time (BCD) in the time registers, status A to D,
    /// and the CMOS RAM.
    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .byte else { return 0xFF }
        switch offset {
        case 0: return 0xFF  // The index port reads back nothing useful on real hardware.
        case 1:
            let index = state.withLock { $0.index }
            return UInt64(register(index))
        default: return 0xFF
        }
    }

    /// Selects a register, or writes the selected one: status A and B and the CMOS RAM keep what
    /// is written; the time registers and status C and D are read-only.
    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        state.withLock { state in
            switch offset {
            // Bit 7 of the index masks NMIs; only the low 7 bits choose a register.
            case 0: state.index = byte & 0x7F
            case 1:
                // The time registers and status C/D are read-only here; the rest is RAM.
                if state.index > 0x0D || state.index == 0x0A || state.index == 0x0B { state.ram[Int(state.index)] = byte }
            default: break
            }
        }
    }

    private func register(_ index: UInt8) -> UInt8 {
        var seconds = now()
        var broken = unsafe tm()
        unsafe gmtime_r(&seconds, &broken)
        func bcd(_ value: Int32) -> UInt8 { UInt8(truncatingIfNeeded: (value / 10) << 4 | (value % 10)) }
        let year = unsafe Int(broken.tm_year) + 1900
        switch index {
        case 0x00: return unsafe bcd(broken.tm_sec)
        case 0x02: return unsafe bcd(broken.tm_min)
        case 0x04: return unsafe bcd(broken.tm_hour)
        case 0x06: return unsafe bcd(broken.tm_wday + 1)
        case 0x07: return unsafe bcd(broken.tm_mday)
        case 0x08: return unsafe bcd(broken.tm_mon + 1)
        case 0x09: return bcd(Int32(year % 100))
        case 0x32: return bcd(Int32(year / 100))
        case 0x0A: return 0x26  // Status A: 32.768 kHz base, 1024 Hz rate, no update in progress.
        case 0x0B: return 0x02  // Status B: 24-hour mode, BCD, no interrupts.
        case 0x0C: return 0x00  // Status C: no interrupt flags.
        case 0x0D: return 0x80  // Status D: the battery is good (valid RAM and time).
        case 0x01, 0x03, 0x05: return 0  // Alarms.
        default: return state.withLock { $0.ram[Int(index & 0x7F)] }
        }
    }
}

extension CMOSClock: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// The index and the RAM; the time registers are read from the host clock, so a restored
    /// guest sees the time of its restore, as after any pause.
    public func saveState(to encoder: inout SnapshotEncoder) {
        let saved = state.withLock { $0 }
        encoder.append(saved.index)
        encoder.append(bytes: saved.ram)
    }

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        var restored = State()
        restored.index = try decoder.read(UInt8.self) & 0x7F
        restored.ram = try decoder.readBytes(limit: 128)
        guard restored.ram.count == 128 else {
            throw .malformed(what: decoder.context, reason: "CMOS RAM of \(restored.ram.count) bytes, not 128")
        }
        try decoder.expectEnd()
        state.withLock { $0 = restored }
    }
}

