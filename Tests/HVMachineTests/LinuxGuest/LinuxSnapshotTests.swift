import Glibc
import HVDevicesTesting
import HVMachine
import HVTestSupport
import Testing

/// The Linux test guest saved while its init waits on a console read, and restored into a new
/// machine: the kernel goes on there (its timers, clock, interrupt controllers, the virtio
/// queues its drivers left mid-use), takes the answer, and runs the disk check. One boot.
@Suite("Linux test guest snapshots", .serialized, .enabled(if: LinuxTestGuest.unavailableReason == nil,
                                                             Comment(rawValue: LinuxTestGuest.unavailableReason ?? "")))
struct LinuxSnapshotTests {
    /// The machine both runs are made of, in the same order: the legacy set, the disk, rng and
    /// a virtio console whose output goes to `consoleOutput`.
    static func compose(_ machine: Machine, serial: CollectingSink, disk: String, consoleOutput: CollectingSink) throws -> ConsoleDevice {
        try machine.addLegacyDevices(console: serial)
        try machine.addDisk(path: disk)
        try machine.addEntropy()
        return try machine.addConsole(output: consoleOutput)
    }

    @Test func aGuestWaitingOnItsConsoleGoesOnAfterRestore() throws {
        let marker = "HVKIT-MARKER-" + String(UInt64.random(in: 1...UInt64.max), radix: 16)
        let disk = try ScratchFile(size: LinuxGuestTests.diskSize, contents: [
            (0, Array(marker.utf8) + [0]),
            (LinuxGuestTests.discardOffset, [UInt8](repeating: 0xA5, count: LinuxGuestTests.discardBytes)),
        ])
        let directory = "/tmp/hvkit-linux-snapshot-\(getpid())"
        defer {
            for file in [MachineSnapshot.stateFileName, MachineSnapshot.memoryFileName] { unlink(directory + "/" + file) }
            rmdir(directory)
        }
        let configuration = MachineConfiguration(memorySize: 128 << 20, vcpuCount: 2)
        let original = try Machine(configuration)
        let serial = CollectingSink()
        let ready = CollectingSink()
        _ = try Self.compose(original, serial: serial, disk: disk.path, consoleOutput: ready)
        try original.load(.linux(kernel: LinuxTestGuest.vmlinux, initrd: LinuxTestGuest.initramfs,
                                 commandLine: LinuxTestGuest.commandLine(tests: ["console", "blk"])))
        let watchdog = Watchdog(original, seconds: 400)
        try original.start()
        defer {
            original.stop()
            _ = original.wait()
            watchdog.cancel()
        }
        try #require(waitUntil(seconds: 400) { ready.text.contains("HVKIT-CONSOLE-READY") },
                     "the guest never waited on its console:\n\(serial.text.suffix(2000))")
        let report = try original.snapshot(to: directory, leavePaused: true)
        print("Linux snapshot: \(report)")
        original.stop()
        let first = original.wait()
        #expect(first.shutdown.isClean, "\(first.shutdown)")

        // A new machine from the snapshot: the same devices, then the answer on its console.
        let snapshot = try MachineSnapshot(directory: directory)
        let restored = try Machine(restoring: snapshot, configuration)
        let restoredSerial = CollectingSink()
        let console = try Self.compose(restored, serial: restoredSerial, disk: disk.path, consoleOutput: CollectingSink())
        try restored.restore()
        let restoredWatchdog = Watchdog(restored, seconds: 400)
        try restored.start()
        defer { restoredWatchdog.cancel() }
        let answer = "hello-after-restore-" + String(UInt32.random(in: 1...UInt32.max), radix: 16)
        console.receive(Array((answer + "\n").utf8))
        let result = restored.wait()
        let run = GuestRun(serial: restoredSerial.text, result: result, watchdogFired: restoredWatchdog.didFire)
        #expect(!run.watchdogFired, "the restored guest did not finish:\n\(run.tail)")
        #expect(run.finished, "no HVKIT-DONE after the restore:\n\(run.tail)")
        #expect(!serial.text.contains("HVKIT-DONE"), "the first run finished before its snapshot")
        #expect(run.checks["console"]?["received"] == answer, "\(run.checks["console"]?.line ?? run.tail)")
        #expect(run.checks["blk"]?.passed == true, "\(run.checks["blk"]?.line ?? run.tail)")
        #expect(run.checks["blk"]?["marker"] == marker)
        #expect(try disk.read(at: LinuxGuestTests.fsyncOffset, count: LinuxGuestTests.fsyncBytes)
            == guestPattern(seed: 1, count: LinuxGuestTests.fsyncBytes))
        #expect(!restoredSerial.text.contains("Linux version"), "the restored guest booted again")
    }
}
