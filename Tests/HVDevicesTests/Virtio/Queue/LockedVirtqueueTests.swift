import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

/// A device that serves at most `budget` chains per call and records, per call, how many it
/// served and on which thread.
private final class BudgetedDevice: VirtioDevice {
    let budget: Int
    let calls = Locked<[(served: Int, thread: pthread_t)]>([])
    private let queue = Locked<LockedVirtqueue?>(nil)

    init(budget: Int) { self.budget = budget }

    var deviceType: VirtioDeviceType { .entropy }
    var offeredFeatures: VirtioFeatures { .transportDefaults }
    var queueMaxSizes: [UInt16] { [8] }
    var configuration: [UInt8] { [] }
    func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let ready = try activation.queue(0)
        queue.withLock { $0 = ready }
    }
    func reset() { queue.withLock { $0 = nil } }

    func queueNotified(_ index: Int) {
        guard let queue = queue.withLock({ $0 }) else { return }
        var served = 0
        // No time slice: the counts stay deterministic on a loaded machine.
        queue.processAvailable(budget: NotificationBudget(chains: budget, timeSlice: nil)) { chain in
            served += 1
            return .used(length: UInt32(chain.writableLength))
        }
        calls.withLock { $0.append((served, pthread_self())) }
    }
}

@Suite("LockedVirtqueue: bounded work per notification")
struct LockedVirtqueueTests {
    /// Without a notifier to resume on, the notified thread serves everything, one budget per
    /// round with the queue's lock released in between.
    @Test func withoutANotifierTheNotifyingThreadServesTheRestInBudgets() throws {
        let memory = try testMemory()
        let device = BudgetedDevice(budget: 2)
        let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
        let driver = MMIODriver(transport: transport)
        var queue = try DriverQueue(memory: memory, size: 8)
        driver.initialize(queues: [queue])
        for _ in 0..<7 { try queue.addChain([(GuestAddress(0x8000), 16, true)]) }
        driver.notify(0)
        #expect(try queue.takeUsed().count == 7)
        #expect(device.calls.withLock { $0.map(\.served) } == [2, 2, 2, 1])
    }

    /// A budget that runs out on the last available chain still asks for the next kick: with
    /// EVENT_IDX, avail_event moves past what was served, or the driver would never notify
    /// again (a Linux virtio-net guest stopped transmitting after its first frame when one
    /// slow frame used up the time slice).
    @Test(arguments: [4, 5])
    func aBudgetSpentOnTheLastChainStillAsksForTheNextKick(chains: Int) throws {
        let memory = try testMemory()
        let device = BudgetedDevice(budget: 4)
        let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
        let driver = MMIODriver(transport: transport)
        var queue = try DriverQueue(memory: memory, size: 8)
        driver.initialize(queues: [queue])
        #expect(transport.negotiatedFeatures.contains(.eventIndex))
        for _ in 0..<chains { try queue.addChain([(GuestAddress(0x8000), 16, true)]) }
        driver.notify(0)
        #expect(try queue.takeUsed().count == chains)
        #expect(try queue.availEvent == queue.availableIndex)
    }

    /// With notifiers on an event loop, a notification by MMIO exit serves one budget on the
    /// vCPU's thread and leaves the rest to the loop.
    @Test func withANotifierTheRestIsServedOnTheEventLoop() throws {
        let memory = try testMemory()
        let loop = try EventLoop(name: "budget-test")
        defer { loop.shutdown() }
        let device = BudgetedDevice(budget: 2)
        let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
        let notifiers = try transport.attachNotifiers(on: loop)
        defer { transport.detachNotifiers(notifiers, from: loop) }
        let driver = MMIODriver(transport: transport)
        var queue = try DriverQueue(memory: memory, size: 8)
        driver.initialize(queues: [queue])
        for _ in 0..<8 { try queue.addChain([(GuestAddress(0x8000), 16, true)]) }
        driver.notify(0)
        let me = pthread_self()
        #expect(device.calls.withLock { calls in calls.filter { pthread_equal($0.thread, me) != 0 }.map(\.served) } == [2])
        var used = 0
        #expect(waitUntil { used += (try? queue.takeUsed().count) ?? 0; return used == 8 })
        // The device records a call after its chains are in the used ring, so the last record
        // may trail the last used entry: wait for it rather than read it at once.
        #expect(waitUntil { device.calls.withLock { $0.map(\.served).reduce(0, +) } == 8 })
        let calls = device.calls.withLock { $0 }
        #expect(calls.map(\.served).reduce(0, +) == 8 && calls.allSatisfy { $0.served <= 2 })
    }

    /// The re-posting attack of the hardening review, made deterministic: the console's output
    /// sink plays the second vCPU and re-posts every used chain while the device is still
    /// working, so the avail ring never runs dry. Before the budget, one notification served
    /// the whole attack; now the notified thread serves one queue's worth, and another device
    /// on the same event loop thread is served while the attack goes on.
    @Test func aDriverThatNeverStopsPostingCannotHoldTheNotifiedThread() throws {
        let memory = try testMemory()
        let loop = try EventLoop(name: "attack-test")
        defer { loop.shutdown() }
        let attacker = RepostingSink(limit: 200_000)
        let console = VirtioMMIOTransport(device: ConsoleDevice(output: attacker, queueSize: 16), memory: memory,
                                          interruptLine: CountingInterruptLine())
        let consoleNotifiers = try console.attachNotifiers(on: loop)
        defer { console.detachNotifiers(consoleNotifiers, from: loop) }
        let entropy = VirtioMMIOTransport(device: EntropyDevice(queueSize: 8), memory: memory, interruptLine: CountingInterruptLine())
        let entropyNotifiers = try entropy.attachNotifiers(on: loop)
        defer { entropy.detachNotifiers(entropyNotifiers, from: loop) }

        // Console: receive queue unused, transmit queue under attack.
        let receive = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x1000))
        var transmit = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x3000))
        var entropyQueue = try DriverQueue(memory: memory, size: 8, base: GuestAddress(0x20000))
        for _ in 0..<16 { try transmit.addChain([(GuestAddress(0x8000), 1, false)]) }
        attacker.queue.withLock { $0 = transmit }
        MMIODriver(transport: console).initialize(queues: [receive, transmit])
        MMIODriver(transport: entropy).initialize(queues: [entropyQueue])
        defer { attacker.stop() }

        let consoleDriver = MMIODriver(transport: console)
        consoleDriver.notify(1)
        // The MMIO notification returned after at most a queue's worth (less if its time slice
        // ran out first); the loop has the rest.
        let me = pthread_self()
        #expect((1...16).contains(attacker.writes(on: me)))

        // The entropy device, on the loop's thread, is served while the attack goes on.
        try entropyQueue.addChain([(GuestAddress(0x30000), 32, true)])
        try entropyNotifiers[0].eventFD.signal()
        #expect(waitUntil { (try? entropyQueue.takeUsed().count) == 1 }, "the other device starved")
        #expect(attacker.total < 200_000, "the attack ended before the other device was served")
        #expect(console.notificationCount > 1)
    }
}

/// Plays a second vCPU that re-posts every chain the console returns, from inside the
/// device's output path (so the device always finds more), up to `limit` writes.
private final class RepostingSink: ByteSink {
    let queue = Locked<DriverQueue?>(nil)
    private let counts = Locked<(total: Int, byThread: [(pthread_t, Int)])>((0, []))
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    var total: Int { counts.withLock { $0.total } }

    func writes(on thread: pthread_t) -> Int {
        counts.withLock { $0.byThread.first { pthread_equal($0.0, thread) != 0 }?.1 ?? 0 }
    }

    func stop() { queue.withLock { $0 = nil } }

    func write(_ bytes: UnsafeRawBufferPointer) {
        let more = counts.withLock { counts -> Bool in
            counts.total += 1
            let me = pthread_self()
            if let index = counts.byThread.firstIndex(where: { pthread_equal($0.0, me) != 0 }) {
                counts.byThread[index].1 += 1
            } else {
                counts.byThread.append((me, 1))
            }
            return counts.total < limit
        }
        guard more else { return }
        queue.withLock { queue in
            guard var driver = queue else { return }
            for _ in (try? driver.takeUsed()) ?? [] { _ = try? driver.addChain([(GuestAddress(0x8000), 1, false)]) }
            queue = driver
        }
    }
}
