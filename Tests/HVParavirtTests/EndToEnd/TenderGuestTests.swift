import GuestImages
import Glibc
import HVCore
import HVKVM
import HVParavirt
import Testing

/// Guests built by Guests/build-guests.sh, run on real KVM through the port (and MMIO)
/// doorbell, with the dispatcher as the vCPU runner's trap.
@Suite(.requiresKVM) struct TenderGuestTests {
    @Test func theEmbeddedSwiftGuestRunsEveryServiceAndExitsZero() throws {
        let disk = try TemporaryDisk(size: 64 << 10)
        let before = try disk.read(at: (64 << 10) - 512, count: 512)
        let run = try runTenderGuest(GuestImages.hello, services: [
            ClockService(), RandomService(), BlockService(fileDescriptor: disk.descriptor, readOnly: false), PollService(),
        ])
        #expect(run.reason == .guestRequested(.exit(status: 0), vcpu: 0), "\(run.console)")
        #expect(run.console.contains("Hello from Embedded Swift on HVKit!"))
        #expect(run.console.contains("ABI 1.0, 8 MiB of RAM"))
        #expect(run.console.contains("random: ok"))
        #expect(run.console.contains("read back sector 127: match"))
        // The guest put the sector back as it found it.
        #expect(try disk.read(at: (64 << 10) - 512, count: 512) == before)
        #expect(run.dispatcher.statistics(for: .blockWrite)?.calls == 2)
        #expect(run.dispatcher.statistics(for: .blockFlush)?.calls == 2)
        #expect(run.dispatcher.statistics(for: .random)?.errors == 0)
    }

    @Test func theEmbeddedSwiftGuestWithoutADiskSaysSo() throws {
        let run = try runTenderGuest(GuestImages.hello, services: [ClockService(), RandomService()])
        #expect(run.reason == .guestRequested(.exit(status: 0), vcpu: 0), "\(run.console)")
        #expect(run.console.contains("no disk"))
    }

    @Test func theCGuestRunsAndWritesTheDisk() throws {
        let disk = try TemporaryDisk(size: 4096)
        let run = try runTenderGuest(GuestImages.cHello, services: [
            ClockService(), RandomService(), BlockService(fileDescriptor: disk.descriptor, readOnly: false),
        ])
        #expect(run.reason == .guestRequested(.exit(status: 0), vcpu: 0), "\(run.console)")
        #expect(run.console == "Hello from C on HVKit!\nblock: sector 0 written and read back\ngoodbye\n")
        #expect(try disk.read(at: 0, count: 4) == [1, 4, 7, 10])
    }

    @Test func aGuestAbortStopsTheVMWithItsMessage() throws {
        let run = try runTenderGuest(GuestImages.cHello, argument: 0xAB0)
        #expect(run.reason == .guestRequested(.abort(message: "aborting as asked"), vcpu: 0))
    }

    @Test func theHostileGuestGetsAnErrorForEveryBadCall() throws {
        let memorySize: UInt64 = 8 << 20
        let run = try runTenderGuest(GuestImages.hostile, memorySize: memorySize, services: [RandomService(), PollService()],
                                     argument: memorySize)
        #expect(run.reason == .guestRequested(.exit(status: 0), vcpu: 0), "\(run.console)")
        #expect(run.dispatcher.unknownCalls == 3)  // two unknown numbers, and block_read with no disk
        #expect(run.dispatcher.statistics(for: .channelNotify)?.calls == 4)
    }

    @Test func theMMIODoorbellWorksLikeThePort() throws {
        let doorbell = HypercallABI.defaultMMIODoorbell
        let run = try runTenderGuest(GuestImages.mmioDoorbell, argument: doorbell.rawValue,
                                     doorbells: [.port(HypercallABI.doorbellPort), .mmio(doorbell)])
        #expect(run.reason == .guestRequested(.exit(status: 0), vcpu: 0), "\(run.console)")
        #expect(run.console == "hello through the MMIO doorbell\n")
        #expect(run.dispatcher.info.features.contains(.mmioDoorbell))
    }

    @Test func vmcallForwardingIsDetected() throws {
        // Mainline KVM forwards only KVM_HC_MAP_GPA_RANGE (bit 12) to userspace; HVKit's ABI
        // therefore uses the doorbells, and offers vmcall only where a host forwards more.
        let vm = try KVM().createVM()
        let mask = vm.forwardableHypercalls
        #expect(mask & ~(UInt64(1) << 12) == 0, "this host forwards more hypercalls: 0x\(String(mask, radix: 16))")
        #expect(throws: KVMError.self) { try vm.enableHypercallExits(1 << 0) }
        if mask != 0 { try vm.enableHypercallExits(mask) }
    }
}

@Suite(.requiresKVM) struct IdleGuestTests {
    func start() throws -> (RunningTender, InProcessNetwork) {
        let network = try InProcessNetwork()
        let net = NetService(backend: network.guestSide)
        let tender = try startTenderGuest(GuestImages.netEcho, services: [net, PollService(sources: [net.pollSource])])
        return (tender, network)
    }

    /// Waits (bounded) for a frame on the host side.
    func receive(_ port: InProcessPort) -> [UInt8]? {
        for _ in 0..<2000 {
            if let frame = port.receive() { return frame }
            usleep(1000)
        }
        return nil
    }

    @Test func aPollingGuestWakesForFramesAndEchoesThem() throws {
        let (tender, network) = try start()
        for index in 0..<5 {
            let frame = [UInt8(index)] + [UInt8](repeating: 0xAB, count: 59)
            #expect(network.hostSide.send(frame))
            #expect(receive(network.hostSide) == frame)
        }
        #expect(network.hostSide.send([0xFF] + [UInt8](repeating: 0, count: 59)))
        let run = try tender.finish()
        #expect(run.reason == .guestRequested(.exit(status: 0), vcpu: 0))
        #expect(run.dispatcher.statistics(for: .netSend)?.calls == 5)
    }

    @Test func anIdleGuestBlocksInsteadOfSpinningAndStopsPromptly() throws {
        let (tender, _) = try start()
        usleep(300_000)
        // One poll (up to 10 s) is under way; a spinning guest would have made thousands.
        let polls = tender.dispatcher.statistics(for: .poll)?.calls ?? 0
        #expect(polls == 0)  // Counted when a call returns; the first is still waiting.
        tender.runner.stop()
        let run = try tender.finish(timeout: 5)
        #expect(run.reason == .stopRequested)
        // The stop ended the wait; the call never completed, so it was never counted.
        #expect(tender.dispatcher.statistics(for: .poll)?.calls == 0)
        #expect((tender.runner.statistics()[0]?.parks ?? 0) >= 1)
    }

    @Test("pause takes a guest out of its poll at once; after resume the poll goes on")
    func pauseReachesAGuestWaitingInPoll() throws {
        let (tender, network) = try start()
        usleep(100_000)
        let start = HostClock.monotonicNanoseconds()
        #expect(tender.runner.pause())
        let took = HostClock.monotonicNanoseconds() - start
        // The poll's timeout is 10 s: a pause that waited for it would take that long.
        #expect(took < 5_000_000_000, "pause took \(took / 1_000_000) ms")
        tender.runner.resume()
        let frame = [UInt8](repeating: 0x5A, count: 60)
        #expect(network.hostSide.send(frame))
        #expect(receive(network.hostSide) == frame)
        #expect(network.hostSide.send([0xFF] + [UInt8](repeating: 0, count: 59)))
        #expect(try tender.finish().reason == .guestRequested(.exit(status: 0), vcpu: 0))
    }

    @Test("under the M:N scheduler a guest waiting in poll leaves its worker to others")
    func pollingGuestsShareOneWorker() async throws {
        let scheduler = try VCPUScheduler(workers: 1, timeSlice: .milliseconds(2))
        defer { scheduler.shutdown() }
        var guests: [(ScheduledVM, InProcessNetwork)] = []
        for _ in 0..<2 {
            let network = try InProcessNetwork()
            let net = NetService(backend: network.guestSide)
            let prepared = try prepareTenderGuest(GuestImages.netEcho, services: [net, PollService(sources: [net.pollSource])])
            let vm = try scheduler.add(prepared.vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio),
                                       traps: prepared.dispatcher.trapSites, setup: prepared.setup)
            guests.append((vm, network))
        }
        usleep(200_000)
        // Both wait in poll: neither holds the single worker, and neither is scheduled.
        let idle = guests.map { $0.0.statistics()[0]?.slices ?? 0 }
        usleep(100_000)
        #expect(guests.map { $0.0.statistics()[0]?.slices ?? 0 } == idle, "a waiting guest was scheduled")
        for (index, (_, network)) in guests.enumerated() {
            let frame = [UInt8(index)] + [UInt8](repeating: 0x33, count: 59)
            #expect(network.hostSide.send(frame))
            #expect(receive(network.hostSide) == frame)
        }
        for (vm, network) in guests {
            #expect(network.hostSide.send([0xFF] + [UInt8](repeating: 0, count: 59)))
            #expect(await vm.wait() == .guestRequested(.exit(status: 0), vcpu: 0))
        }
    }
}
