import Glibc
import HVMachine
import HVTestSupport
import HVDevicesTesting
import Testing

/// Real Linux drivers against HVKit's devices: the Linux test guest (Guests/linux) boots on a
/// ``Machine`` and runs hvkit-test's checks; the host checks its side. Each test is one boot
/// (about 30 to 60 s on an emulating host), so the checks are grouped into few boots.
@Suite("Linux test guest", .serialized, .enabled(if: LinuxTestGuest.unavailableReason == nil,
                                                   Comment(rawValue: LinuxTestGuest.unavailableReason ?? "")))
struct LinuxGuestTests {
    // The writable disk's layout, shared with tests/hvkit-test.c.
    static let diskSize = 4 << 20
    static let fsyncOffset = 64 << 10, fsyncBytes = 4 << 10
    static let directOffset = 1 << 20, directBytes = 1 << 20
    static let discardOffset = 2 << 20, discardBytes = 256 << 10
    /// The net check's TCP transfer each way (NET_TRANSFER_BYTES in tests/hvkit-test.c).
    static let netTransferBytes = 2 << 20
    /// The net-passt check's (NET_PASST_TRANSFER_BYTES).
    static let netPasstTransferBytes = 1 << 20
    /// The vsock check's transfer each way, in both connections.
    static let vsockTransferBytes = 1 << 20

    /// Two vCPUs, two disks (one read-only; io_uring and AIO), rng, a virtio console and the boot timer, all
    /// through the kernel's own drivers, entered by PVH from the ELF vmlinux.
    @Test func devicesThroughLinuxDrivers() throws {
        let marker = "HVKIT-MARKER-" + String(UInt64.random(in: 1...UInt64.max), radix: 16)
        let disk = try ScratchFile(size: Self.diskSize, contents: [
            (0, Array(marker.utf8) + [0]),
            (Self.discardOffset, [UInt8](repeating: 0xA5, count: Self.discardBytes)),
        ])
        let readOnlyBytes = guestPattern(seed: 9, count: 64 << 10)
        let readOnly = try ScratchFile(size: 1 << 20, contents: [(0, readOnlyBytes)])

        var configuration = MachineConfiguration(memorySize: 128 << 20, vcpuCount: 2)
        // Every vCPU thread and the event loop run under their seccomp allow lists, as in
        // minivmm: a system call outside them kills this whole test process (SIGSYS).
        configuration.systemCallFilter = .killProcess
        let machine = try Machine(configuration)
        // The features each transport negotiated, read while the guest reports its own view
        // (Linux resets its devices on the way out).
        let negotiated = Locked<[UInt64]>([])
        let serial = CollectingSink { [weak machine] line in
            guard line.contains("HVKIT-TEST features"), let machine else { return }
            negotiated.withLock { $0 = machine.virtioDevices.map(\.transport.negotiatedFeatures.rawValue) }
        }
        try machine.addLegacyDevices(console: serial)
        let bootTime = Locked<Duration?>(nil)
        let timer = BootTimer { elapsed in bootTime.withLock { $0 = elapsed } }
        let page = try machine.add(mmio: timer, size: BootTimer.windowSize, name: "boot timer")
        try machine.announce("hvkit.boot_timer=0x" + String(page.start.rawValue, radix: 16))
        // The writable disk on io_uring (writes, flushes, discards and O_DIRECT I/O from Linux,
        // under the seccomp filters), the read-only one on Linux AIO.
        let writable = try machine.addDisk(path: disk.path, engine: .uring)
        try machine.addDisk(path: readOnly.path, readOnly: true, engine: .aio)
        try machine.addEntropy()
        // The guest says it is ready on hvc0; the host answers with one line.
        let answer = "hello-from-host-" + String(UInt32.random(in: 1...UInt32.max), radix: 16)
        let console = Locked<ConsoleDevice?>(nil)
        let consoleOutput = CollectingSink { line in
            if line.contains("HVKIT-CONSOLE-READY") { console.withLock { $0 }?.receive(Array((answer + "\n").utf8)) }
        }
        let consoleDevice = try machine.addConsole(output: consoleOutput)
        console.withLock { $0 = consoleDevice }

        // virtio-net on a tap where this host can make one: the guest pings the host and
        // moves 2 MiB each way over TCP through the real Linux driver.
        let tap = ConfiguredTap.unavailableReason == nil ? try ConfiguredTap() : nil
        var server: TransferServer?
        var extra: [String] = []
        if let tap {
            try machine.addNetwork(backend: tap.backend, mac: MACAddress("52:54:00:12:34:56") ?? .random())
            let started = try TransferServer(address: tap.hostAddress, bytes: Self.netTransferBytes, makeSocket: tap.socket)
            server = started
            extra.append("hvkit.net=\(ConfiguredTap.dotted(tap.guestAddress)),\(ConfiguredTap.dotted(tap.hostAddress)),\(started.port)")
        } else {
            print("virtio-net through Linux skipped: \(ConfiguredTap.unavailableReason ?? "")")
        }

        // A second interface on passt's socket, where passt is installed: the guest reaches the
        // host through passt's gateway address (which passt maps to the host's loopback).
        let passt = PasstProcess.unavailableReason == nil ? try PasstProcess(socketPath: "/tmp/hvkit-linux-passt-\(getpid()).socket") : nil
        var passtServer: TransferServer?
        if let passt, tap != nil {
            _ = waitUntil(seconds: 5) { access(passt.socketPath, F_OK) == 0 }
            try machine.addNetwork(stream: passt.socketPath, mac: MACAddress("52:54:00:12:34:57") ?? .random())
            let started = try TransferServer(address: [127, 0, 0, 1], bytes: Self.netPasstTransferBytes)
            passtServer = started
            extra.append("hvkit.net-passt=\(ConfiguredTap.dotted(passt.guestAddress)),\(ConfiguredTap.dotted(passt.gateway)),\(started.port)")
        } else {
            print("virtio-net through passt and Linux skipped: \(PasstProcess.unavailableReason ?? "no tap for eth0")")
        }

        // virtio-vsock through the kernel's AF_VSOCK, driven from the host through the Unix
        // socket as host programs do: the guest connects out to port 1024, is refused on 1025,
        // then echoes the host's `CONNECT 52`.
        let vsockPath = "/tmp/hvkit-linux-vsock-\(getpid()).sock"
        let vsock = try machine.addVsock(guestCID: 3, socketPath: vsockPath)
        let vsockPeers = try VsockPeers(socketPath: vsockPath, guestPort: 52, hostPort: 1024, bytes: Self.vsockTransferBytes)
        extra.append("hvkit.vsock=52,1024,1025,\(Self.vsockTransferBytes)")

        let tests = ["blk", "blk-ro", "rng", "console", "smp", "features"] + (tap == nil ? [] : ["net"]) + (passtServer == nil ? [] : ["net-passt"])
            + ["vsock"]
        let run = try machine.runTestGuest(
            .linux(kernel: LinuxTestGuest.vmlinux, initrd: LinuxTestGuest.initramfs,
                   commandLine: LinuxTestGuest.commandLine(tests: tests, extra: extra)),
            serial: serial)
        let checks = run.checks
        #expect(!run.watchdogFired, "the guest did not finish:\n\(run.tail)")
        #expect(run.finished, "no HVKIT-DONE:\n\(run.tail)")
        #expect(run.result.stopReason == .resetRequested)
        #expect(run.result.shutdown.isClean, "\(run.result.shutdown)")
        for name in tests {
            #expect(checks[name]?.passed == true, "\(checks[name]?.line ?? "no line for \(name)")")
        }

        // virtio-blk, from the host: the marker was read, both patterns reached the file (the
        // fsync'ed one and the O_DIRECT one), the discarded range reads as zeros and is a hole.
        #expect(checks["blk"]?["marker"] == marker)
        #expect(try disk.read(at: Self.fsyncOffset, count: Self.fsyncBytes) == guestPattern(seed: 1, count: Self.fsyncBytes))
        #expect(try disk.read(at: Self.directOffset, count: Self.directBytes) == guestPattern(seed: 2, count: Self.directBytes))
        #expect(try disk.read(at: Self.discardOffset, count: Self.discardBytes).allSatisfy { $0 == 0 })
        let hole = disk.firstHole(from: Self.discardOffset)
        #expect(hole >= Self.discardOffset && hole < Self.discardOffset + Self.discardBytes, "first hole at \(hole)")
        #expect(run.result.shutdown.disksFlushed.contains(writable.name))
        // The read-only disk refused the write and is unchanged.
        #expect(checks["blk-ro"]?["kernel-ro"] == "1")
        #expect(try readOnly.read(at: 0, count: readOnlyBytes.count) == readOnlyBytes)

        #expect(checks["rng"]?["source"] == "virtio_rng.0")
        #expect(consoleOutput.text.contains("HVKIT-CONSOLE-READY"))
        #expect(checks["console"]?["received"] == answer)
        #expect(checks["smp"]?["online"] == "2")
        #expect(checks["smp"]?["ran-on"] == "0,1")
        #expect(bootTime.withLock { $0 }.map { $0 > .zero } == true, "the boot timer was not written")

        // What each Linux driver accepted: exactly what its transport recorded as negotiated,
        // within what the device offered, and for the disk the features HVKit relies on.
        let slots = machine.virtioDevices
        let recorded = negotiated.withLock { $0 }
        #expect(recorded.count == slots.count)
        for (index, slot) in slots.enumerated() where index < recorded.count {
            let reported = checks["features"]?["virtio-mmio.\(index)"]
            let accepted = reported?.split(separator: ":").last.flatMap { UInt64($0, radix: 16) }
            #expect(accepted == recorded[index], "\(slot.name): guest says \(reported ?? "nothing")")
            #expect(slot.transport.offeredFeatures.isSuperset(of: VirtioFeatures(rawValue: recorded[index])))
        }
        // virtio-vsock: both megabytes each way intact, the refused port refused by RST
        // (ECONNRESET to the guest), and the socket file gone with the machine.
        let vsockOutcome = vsockPeers.wait()
        print("virtio-vsock through Linux: \(checks["vsock"]?.line ?? "no vsock line"); \(vsockOutcome.connectAttempts) CONNECT attempt(s)")
        #expect(vsockOutcome.sentOutbound)
        #expect(byteDifference(vsockOutcome.outbound, guestPattern(seed: 8, count: Self.vsockTransferBytes)) == nil)
        #expect(vsockOutcome.okLine.hasPrefix("OK "))
        #expect(vsockOutcome.sentInbound)
        #expect(byteDifference(vsockOutcome.echoed, guestPattern(seed: 9, count: Self.vsockTransferBytes)) == nil)
        #expect(checks["vsock"]?["refused"] == "ECONNRESET")
        #expect(vsock.connectionCount == 0)
        #expect(access(vsockPath, F_OK) != 0, "the socket file was removed")

        if let server, let network = machine.networks.first {
            // The guest's TCP stream arrived whole and in order, and ours reached it (its
            // pattern check); the offloads its driver negotiated are on record.
            let outcome = server.wait()
            print("virtio-net through Linux: \(checks["net"]?.line ?? "no net line"); host received \(outcome.received.count) bytes; \(network.device.counts)")
            #expect(outcome.sentAll, "the host could not send its \(Self.netTransferBytes) bytes")
            // Compared outside #expect, which would print two 2 MiB arrays on a mismatch.
            let intact = outcome.received == guestPattern(seed: 6, count: Self.netTransferBytes)
            #expect(intact, "received \(outcome.received.count) of \(Self.netTransferBytes) bytes, intact: \(intact)")
            #expect(checks["net"]?["ping"] == "10/10")
            let index = slots.firstIndex { $0.name == network.name } ?? 0
            let netFeatures = VirtioFeatures(rawValue: index < recorded.count ? recorded[index] : 0)
            print("virtio-net through Linux: negotiated \(netFeatures)")
            for feature: VirtioFeatures in [.version1, .netMAC, .netMergeableReceiveBuffers, .netChecksum, .netGuestChecksum, .netHostTSO4, .netGuestTSO4] {
                #expect(netFeatures.contains(feature), "virtio-net without \(feature)")
            }
            #expect(network.device.counts.droppedReceiveFrames == 0 && network.device.counts.droppedTransmitFrames == 0)
        }
        if let passtServer {
            // The same transfer through passt: frames in QEMU's stream framing, the guest's
            // connection to passt's gateway delivered to the host's loopback.
            let outcome = passtServer.wait()
            print("virtio-net through passt and Linux: \(checks["net-passt"]?.line ?? "no net-passt line"); host received \(outcome.received.count) bytes")
            let intact = outcome.received == guestPattern(seed: 6, count: Self.netPasstTransferBytes)
            #expect(outcome.sentAll && intact, "received \(outcome.received.count) of \(Self.netPasstTransferBytes) bytes, intact: \(intact)")
        }
        withExtendedLifetime(passt) {}
        let blockFeatures = VirtioFeatures(rawValue: recorded.first ?? 0)
        for feature: VirtioFeatures in [.version1, .blockFlush, .blockDiscard, .blockWriteZeroes, .blockSegmentMax, .blockSize] {
            #expect(blockFeatures.contains(feature), "virtio-blk without \(feature)")
        }
    }

    /// The bzImage, its kernel extracted on the host, entered by PVH and by the 64-bit
    /// protocol, one vCPU each.
    @Test(arguments: [LinuxBootProtocol.pvh, .linux64])
    func bzImageExtractedOnTheHost(bootProtocol: LinuxBootProtocol) throws {
        let machine = try Machine(memorySize: 128 << 20)
        let serial = CollectingSink()
        try machine.addLegacyDevices(console: serial)
        try machine.addEntropy()
        let run = try machine.runTestGuest(
            .linux(kernel: LinuxTestGuest.bzImage, initrd: LinuxTestGuest.initramfs,
                   commandLine: LinuxTestGuest.commandLine(tests: ["rng"]), bootProtocol: bootProtocol),
            serial: serial)
        #expect(!run.watchdogFired, "the guest did not finish:\n\(run.tail)")
        #expect(run.checks["rng"]?.passed == true, "\(run.tail)")
        #expect(run.result.stopReason == .resetRequested)
    }
}
