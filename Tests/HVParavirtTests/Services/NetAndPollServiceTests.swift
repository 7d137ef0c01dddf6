import Glibc
import HVCore
@testable import HVParavirt
import HVTestSupport
import Testing

@Suite struct NetServiceTests {
    func setUp() throws -> (GuestMemoryMmap, HypercallDispatcher, InProcessNetwork, NetService) {
        let memory = try testMemory()
        let network = try InProcessNetwork(capacity: 4)
        let net = NetService(backend: network.guestSide, mtu: 1500)
        return (memory, try makeDispatcher(memory: memory, [net]), network, net)
    }

    @Test func framesGoBothWays() throws {
        let (memory, dispatcher, network, _) = try setUp()
        let frame = (0..<60).map { UInt8($0) }
        try memory.write(frame, to: GuestAddress(0x1000))
        #expect(dispatcher.call(.netSend, 0x1000, 60) == 60)
        #expect(network.hostSide.receive() == frame)
        #expect(network.hostSide.send(Array(frame.reversed())))
        #expect(dispatcher.call(.netReceive, 0x2000, 1514) == 60)
        #expect(try memory.readBytes(at: GuestAddress(0x2000), count: 60) == Array(frame.reversed()))
        #expect(dispatcher.call(.netReceive, 0x2000, 1514) == failure(.again))
        #expect(dispatcher.info.mtu == 1500)
        #expect(dispatcher.info.mac.count == 6)
    }

    @Test(arguments: [(0x1000, 13, HypercallErrno.invalid), (0x1000, 1515, .messageSize), (holeAddress.rawValue, 60, .fault),
                      (UInt64.max - 10, 60, .fault)] as [(UInt64, UInt64, HypercallErrno)])
    func refusesBadFrames(address: UInt64, length: UInt64, code: HypercallErrno) throws {
        let (_, dispatcher, network, _) = try setUp()
        #expect(dispatcher.call(.netSend, address, length) == failure(code))
        #expect(network.hostSide.receive() == nil)
    }

    @Test func aFrameTooBigForTheBufferStaysQueued() throws {
        let (memory, dispatcher, network, net) = try setUp()
        #expect(network.hostSide.send([UInt8](repeating: 7, count: 100)))
        #expect(dispatcher.call(.netReceive, 0x2000, 50) == failure(.messageSize))
        #expect(dispatcher.call(.netReceive, holeAddress.rawValue, 200) == failure(.fault))
        #expect(net.pollSource.isReady())
        #expect(dispatcher.call(.netReceive, 0x2000, 200) == 100)
        #expect(try memory.readBytes(at: GuestAddress(0x2000), count: 100) == [UInt8](repeating: 7, count: 100))
    }

    @Test func aFullBackendDropsAndSaysSo() throws {
        let (memory, dispatcher, network, _) = try setUp()
        try memory.write([UInt8](repeating: 1, count: 60), to: GuestAddress(0x1000))
        for _ in 0..<4 { #expect(dispatcher.call(.netSend, 0x1000, 60) == 60) }
        #expect(dispatcher.call(.netSend, 0x1000, 60) == failure(.again))
        #expect(network.hostSide.dropped == 1)
    }
}

@Suite struct PollServiceTests {
    @Test func zeroTimeoutOnlyChecks() throws {
        let network = try InProcessNetwork()
        let net = NetService(backend: network.guestSide)
        let dispatcher = try makeDispatcher(memory: testMemory(), [net, PollService(sources: [net.pollSource])])
        #expect(dispatcher.call(.poll, 0) == 0)
        #expect(network.hostSide.send([UInt8](repeating: 0, count: 60)))
        #expect(dispatcher.call(.poll, 0) == Int64(PollEvents.netReceive.rawValue))
        #expect(dispatcher.call(.poll, UInt64.max) == Int64(PollEvents.netReceive.rawValue))
    }

    @Test func aFrameArrivingWakesThePoll() throws {
        let network = try InProcessNetwork()
        let net = NetService(backend: network.guestSide)
        let dispatcher = try makeDispatcher(memory: testMemory(), [net, PollService(sources: [net.pollSource])])
        let sender = try HostThread(name: "sender") {
            usleep(20_000)
            _ = network.hostSide.send([UInt8](repeating: 0, count: 60))
        }
        #expect(dispatcher.call(.poll, 5_000_000_000) == Int64(PollEvents.netReceive.rawValue))
        sender.join()
    }

    @Test func aShortTimeoutExpires() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [PollService()])
        #expect(dispatcher.call(.poll, 1_000_000) == 0)
    }

    @Test func anAbsurdTimeoutEndsWhenTheVMStops() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [PollService()])
        let stopper = try HostThread(name: "stopper") {
            usleep(20_000)
            dispatcher.vmStopping()
        }
        #expect(dispatcher.call(.poll, UInt64.max) == 0)
        stopper.join()
        // After a stop, polls return at once.
        #expect(dispatcher.call(.poll, UInt64.max) == 0)
    }

    @Test("a poll with nothing ready hands back a wait; calling again is the same poll, to the same deadline")
    func aWaitingPollKeepsItsDeadline() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [PollService()])
        let before = HostClock.monotonicNanoseconds()
        guard case let .wait(first) = dispatcher.dispatch(.poll, HypercallArguments(2_000_000_000), origin: .trap(vcpu: 3)) else {
            Issue.record("no wait")
            return
        }
        #expect(first.deadline >= before + 2_000_000_000 && first.deadline < before + 3_000_000_000)
        #expect(!first.readable.isEmpty)
        // The repeat after a wake-up keeps the deadline, whatever its argument says now.
        guard case let .wait(second) = dispatcher.dispatch(.poll, HypercallArguments(1), origin: .trap(vcpu: 3)) else {
            Issue.record("no second wait")
            return
        }
        #expect(second.deadline == first.deadline)
        // Another vCPU's poll is its own.
        guard case let .wait(other) = dispatcher.dispatch(.poll, HypercallArguments(HypercallABI.maximumPollNanoseconds), origin: .trap(vcpu: 4)) else {
            Issue.record("no wait for vCPU 4")
            return
        }
        #expect(other.deadline > first.deadline)
        #expect(dispatcher.statistics(for: .poll)?.calls == 0, "waits are not completed calls")
        // The stop ends both: their descriptors turn readable and the next attempt answers 0.
        dispatcher.vmStopping()
        #expect(first.block() == .ready)
        #expect(dispatcher.dispatch(.poll, HypercallArguments(1), origin: .trap(vcpu: 3)) == .value(0))
        #expect(dispatcher.statistics(for: .poll)?.calls == 1)
    }

    @Test("TrapWait.block ends at its deadline, or early for its waker")
    func trapWaitEnds() throws {
        let source = try EventFD(nonBlocking: true)
        let waker = try EventFD(nonBlocking: true)
        let soon = TrapWait(readable: [source.fileDescriptor], deadline: HostClock.monotonicNanoseconds() + 5_000_000)
        #expect(soon.block(alsoWakingOn: waker.fileDescriptor) == .deadline)
        let later = TrapWait(readable: [source.fileDescriptor], deadline: .max)
        try waker.signal()
        #expect(later.block(alsoWakingOn: waker.fileDescriptor) == .woken)
        _ = try waker.consume()
        try source.signal()
        #expect(later.block(alsoWakingOn: waker.fileDescriptor) == .ready)
        #expect(TrapWait(readable: [], deadline: 0).block() == .deadline)
    }

    @Test func pollMayNotRunOnTheChannel() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [PollService()])
        let result = dispatcher.dispatch(.poll, HypercallArguments(UInt64.max), origin: .channel(vcpu: 0))
        #expect(result == .value(HypercallErrno.invalid.returnValue))
    }
}
