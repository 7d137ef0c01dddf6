import Glibc
import GuestImages
import HVDevicesTesting
import HVMachine
import HVTestSupport
import Testing

/// Snapshot and restore of whole machines on real KVM, with Guests/tender/timer_ticks.c: a
/// guest that counts the PIT's interrupts through the in-kernel PIC next to a random nonce.
@Suite("Machine snapshots", .serialized, .requiresKVM)
struct MachineSnapshotTests {
    /// Where the guest keeps its record: magic, nonce, ticks.
    static let record = GuestAddress(8 << 20)
    static let magic: UInt64 = 0x53_4B43_4954  // "TICKS"

    static func services(_ console: CollectingSink) throws -> HypercallTable {
        var table = HypercallTable()
        try table.install(ConsoleService(output: console))
        try table.install(RandomService())
        return table
    }

    static func directory(_ name: String) -> String {
        "/tmp/hvkit-snapshot-\(name)-\(getpid())"
    }

    static func removeSnapshot(_ directory: String) {
        for file in [MachineSnapshot.stateFileName, MachineSnapshot.memoryFileName] { unlink(directory + "/" + file) }
        rmdir(directory)
    }

    static func ticks(_ machine: Machine) throws -> UInt64 {
        try machine.memory.read(UInt64.self, at: GuestAddress(record.rawValue + 16))
    }

    /// A ticking guest, saved after some ticks and restored into a new machine, goes on from
    /// where it was: the same nonce (no reboot), at least as many ticks, and more coming (the
    /// PIT, the PICs, the vCPU's halt and its interrupt flag all came back).
    @Test func aTickingGuestGoesOnAfterRestore() throws {
        let directory = Self.directory("ticks")
        defer { Self.removeSnapshot(directory) }
        let console = CollectingSink()
        let original = try Machine(MachineConfiguration(memorySize: 16 << 20))
        try original.addLegacyDevices(console: CollectingSink())
        try original.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try Self.services(console), argument: Self.record.rawValue))
        let watchdog = Watchdog(original, seconds: 300)
        try original.start()
        defer {
            original.stop()
            _ = original.wait()
            watchdog.cancel()
        }
        try #require(waitUntil(seconds: 120) { try Self.ticks(original) >= 5 }, "the guest did not tick: \(console.text)")
        #expect(try original.memory.read(UInt64.self, at: Self.record) == Self.magic)
        let nonce = try original.memory.read(UInt64.self, at: GuestAddress(Self.record.rawValue + 8))

        let report = try original.snapshot(to: directory, leavePaused: true)
        let savedTicks = try Self.ticks(original)
        #expect(report.memorySize == 16 << 20)
        #expect(report.memoryBytesWritten > 0 && report.memoryBytesWritten < report.memorySize, "\(report)")
        original.stop()
        _ = original.wait()

        let snapshot = try MachineSnapshot(directory: directory)
        #expect(snapshot.machine.devices == ["16550 serial", "i8042", "CMOS clock"])
        let restored = try Machine(restoring: snapshot)
        try restored.addLegacyDevices(console: CollectingSink())
        // The guest's memory is the snapshot's, before anything runs.
        #expect(try restored.memory.read(UInt64.self, at: GuestAddress(Self.record.rawValue + 8)) == nonce)
        try restored.restore(hypercalls: try Self.services(console))
        let restoredWatchdog = Watchdog(restored, seconds: 300)
        try restored.start()
        defer {
            restored.stop()
            _ = restored.wait()
            restoredWatchdog.cancel()
        }
        #expect(try Self.ticks(restored) >= savedTicks)
        #expect(waitUntil(seconds: 120) { (try? Self.ticks(restored)) ?? 0 >= savedTicks + 5 }, "no ticks after the restore: \((try? Self.ticks(restored)) ?? 0) (saved \(savedTicks))")
        #expect(try restored.memory.read(UInt64.self, at: GuestAddress(Self.record.rawValue + 8)) == nonce)
        #expect(console.text == "ticking\n", "the guest started again: \(console.text)")
    }
}
