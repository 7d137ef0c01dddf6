import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

/// A transport in front of an entropy device, with its memory, line and driver.
private struct Fixture {
    let memory: GuestMemoryMmap
    let line = CountingInterruptLine()
    let transport: VirtioMMIOTransport
    let driver: MMIODriver
    var queue: DriverQueue

    init(queueSize: UInt16 = 16) throws {
        memory = try testMemory()
        transport = VirtioMMIOTransport(device: EntropyDevice(queueSize: queueSize), memory: memory, interruptLine: line)
        driver = MMIODriver(transport: transport)
        queue = try DriverQueue(memory: memory, size: 8)
    }
}

@Suite("virtio-mmio transport")
struct VirtioMMIODeviceTests {
    @Test func identifiesItself() throws {
        let fixture = try Fixture()
        let driver = fixture.driver
        #expect(driver.read(.magicValue) == 0x7472_6976)
        #expect(driver.read(.version) == 2)
        #expect(driver.read(.deviceID) == 4)
        #expect(driver.offeredFeatures.contains([.version1, .eventIndex, .indirectDescriptors]))
        driver.write(.queueSelect, 0)
        #expect(driver.read(.queueSizeMax) == 16)
        #expect(driver.read(.configGeneration) == 0)
        #expect(driver.read(.sharedMemoryLengthLow) == .max)
    }

    @Test func initialisesServesAndInterrupts() throws {
        var fixture = try Fixture()
        let driver = fixture.driver
        driver.initialize(queues: [fixture.queue])
        #expect(fixture.transport.isActive)
        #expect(driver.status == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(fixture.transport.negotiatedFeatures.contains(.version1))
        try fixture.queue.addChain([(GuestAddress(0x8000), 64, true)])
        driver.notify(0)
        let used = try fixture.queue.takeUsed()
        #expect(used.count == 1 && used[0].length == 64)
        #expect(try fixture.memory.readBytes(at: GuestAddress(0x8000), count: 64).contains { $0 != 0 })
        #expect(fixture.line.count == 1)
        #expect(driver.acknowledgeInterrupts() == .usedBuffer)
        #expect(driver.read(.interruptStatus) == 0)
        #expect(fixture.transport.refusedAccessCount == 0)
    }

    @Test func resetReturnsToTheInitialState() throws {
        var fixture = try Fixture()
        let driver = fixture.driver
        driver.initialize(queues: [fixture.queue])
        try fixture.queue.addChain([(GuestAddress(0x8000), 8, true)])
        driver.notify(0)
        driver.setStatus([])
        #expect(driver.status == [])
        #expect(!fixture.transport.isActive)
        #expect(driver.read(.queueReady) == 0)
        #expect(driver.read(.interruptStatus) == 0)
        #expect(fixture.transport.negotiatedFeatures == [])
        // Notifications after a reset reach nothing.
        try fixture.queue.addChain([(GuestAddress(0x8000), 8, true)])
        driver.notify(0)
        #expect(try fixture.queue.takeUsed().count == 1)
        // And the device can be brought up again from scratch.
        fixture.queue = try DriverQueue(memory: fixture.memory, size: 8)
        driver.initialize(queues: [fixture.queue])
        try fixture.queue.addChain([(GuestAddress(0x8000), 8, true)])
        driver.notify(0)
        #expect(try fixture.queue.takeUsed().count == 1)
    }

    @Test func configurationChangesRaiseAnInterruptAndBumpTheGeneration() throws {
        let fixture = try Fixture()
        fixture.transport.interrupt.signalConfigurationChange()
        #expect(fixture.driver.read(.configGeneration) == 1)
        #expect(fixture.driver.acknowledgeInterrupts() == .configurationChange)
        #expect(fixture.line.count == 1)
    }
}

@Suite("virtio-mmio transport: hostile drivers")
struct VirtioMMIODeviceHostileTests {
    @Test(arguments: [AccessWidth.byte, .word, .quadWord])
    func registersRefuseOtherWidths(width: AccessWidth) throws {
        let fixture = try Fixture()
        #expect(fixture.transport.read(offset: 0, width: width) == 0)
        fixture.transport.write(offset: MMIORegister.status.rawValue, width: width, value: 1)
        #expect(fixture.driver.status == [])
        #expect(fixture.transport.refusedAccessCount == 2)
    }

    @Test(arguments: [0x002, 0x018, 0x0f0, 0x0fd] as [UInt64])
    func unknownOrMisalignedRegistersReadZero(offset: UInt64) throws {
        let fixture = try Fixture()
        #expect(fixture.transport.read(offset: offset, width: .doubleWord) == 0)
        fixture.transport.write(offset: offset, width: .doubleWord, value: .max)
        #expect(fixture.transport.refusedAccessCount == 2)
    }

    @Test func readOnlyRegistersIgnoreWrites() throws {
        let fixture = try Fixture()
        fixture.driver.write(.magicValue, 0)
        fixture.driver.write(.queueSizeMax, 1)
        #expect(fixture.driver.read(.magicValue) == MMIORegister.magic)
        #expect(fixture.transport.refusedAccessCount == 2)
    }

    @Test(arguments: [
        (0x100 as UInt64, AccessWidth.byte),  // entropy has no configuration space at all
        (0x100, .doubleWord),
        (0xFFF, .byte),  // last byte of the window
        (0x1_0000_0000, .doubleWord),  // far past the window
    ])
    func configurationAccessesOutsideTheSpaceAreRefused(offset: UInt64, width: AccessWidth) throws {
        let fixture = try Fixture()
        #expect(fixture.transport.read(offset: offset, width: width) == 0)
        fixture.transport.write(offset: offset, width: width, value: .max)
        #expect(fixture.transport.refusedAccessCount == 2)
    }

    @Test func driverFeaturesOnlyBetweenDriverAndFeaturesOK() throws {
        let fixture = try Fixture()
        let driver = fixture.driver
        driver.write(.driverFeaturesSelect, 1)
        driver.write(.driverFeatures, 1)  // before DRIVER
        #expect(fixture.transport.negotiatedFeatures == [])
        #expect(fixture.transport.refusedAccessCount == 1)
        driver.negotiate()
        let negotiated = fixture.transport.negotiatedFeatures
        driver.write(.driverFeaturesSelect, 0)
        driver.write(.driverFeatures, 0xFFFF_FFFF)  // after FEATURES_OK
        #expect(fixture.transport.negotiatedFeatures == negotiated)
    }

    @Test func featuresWithoutVersion1AreRefused() throws {
        let fixture = try Fixture()
        #expect(!fixture.driver.negotiate(features: [.eventIndex]))
        #expect(!fixture.driver.status.contains(.featuresOK))
    }

    @Test func featuresNotOfferedAreRefused() throws {
        let fixture = try Fixture()
        #expect(!fixture.driver.negotiate(features: [.version1, .ringPacked]))
        #expect(!fixture.driver.negotiate(features: [.version1, .bit(0)]))
    }

    @Test(arguments: [
        ([], [.driver]),  // DRIVER without ACKNOWLEDGE
        ([.acknowledge], [.acknowledge, .featuresOK]),  // FEATURES_OK without DRIVER
        ([.acknowledge, .driver], [.acknowledge, .driver, .driverOK]),  // DRIVER_OK without FEATURES_OK
        ([.acknowledge, .driver], [.acknowledge]),  // clearing a bit
        ([.acknowledge], [.acknowledge, DeviceStatus(rawValue: 16)]),  // a reserved bit
    ] as [(DeviceStatus, DeviceStatus)])
    func illegalStatusTransitionsAreIgnored(from: DeviceStatus, to: DeviceStatus) throws {
        let fixture = try Fixture()
        if !from.isEmpty {
            fixture.driver.setStatus(.acknowledge)
            if from.contains(.driver) { fixture.driver.setStatus([.acknowledge, .driver]) }
        }
        #expect(fixture.driver.status == from)
        fixture.driver.setStatus(to)
        #expect(fixture.driver.status == from)
        #expect(fixture.transport.refusedAccessCount == 1)
    }

    @Test func statusValuesAboveEightBitsAreIgnored() throws {
        let fixture = try Fixture()
        fixture.driver.write(.status, 0x101)
        #expect(fixture.driver.status == [])
    }

    @Test func queueRegistersBeforeFeaturesOKAreIgnored() throws {
        let fixture = try Fixture()
        fixture.driver.setStatus(.acknowledge)
        fixture.driver.setUpQueue(0, fixture.queue)
        #expect(fixture.driver.read(.queueReady) == 0)
        // QueueSel is always allowed; the size, six address words and QueueReady are not.
        #expect(fixture.transport.refusedAccessCount == 8)
    }

    @Test func queueRegistersAfterDriverOKAreIgnored() throws {
        let fixture = try Fixture()
        fixture.driver.initialize(queues: [fixture.queue])
        fixture.driver.write(.queueDescriptorLow, 0x5000)
        fixture.driver.write(.queueSize, 2)
        fixture.driver.write(.queueReady, 0)
        #expect(fixture.transport.refusedAccessCount == 3)
        #expect(fixture.driver.read(.queueReady) == 1)
    }

    @Test func aReadyQueueCannotBeMoved() throws {
        let fixture = try Fixture()
        fixture.driver.negotiate()
        fixture.driver.setUpQueue(0, fixture.queue)
        fixture.driver.write(.queueDescriptorLow, 0x5000)
        #expect(fixture.transport.refusedAccessCount == 1)
    }

    @Test func queueSizeAboveSixteenBitsIsRefused() throws {
        let fixture = try Fixture()
        fixture.driver.negotiate()
        fixture.driver.write(.queueSelect, 0)
        fixture.driver.write(.queueSize, 0x1_0008)
        #expect(fixture.transport.refusedAccessCount == 1)
    }

    @Test(arguments: [0, 3, 32] as [UInt32])
    func badQueueSizesNeverBecomeReady(size: UInt32) throws {
        let fixture = try Fixture()
        fixture.driver.negotiate()
        fixture.driver.setUpQueue(0, fixture.queue)
        fixture.driver.write(.queueReady, 0)
        fixture.driver.write(.queueSize, size)
        fixture.driver.writeAddress(.queueDescriptorLow, fixture.queue.descriptorTable)
        fixture.driver.writeAddress(.queueDriverLow, fixture.queue.availableRing)
        fixture.driver.writeAddress(.queueDeviceLow, fixture.queue.usedRing)
        fixture.driver.write(.queueReady, 1)
        #expect(fixture.driver.read(.queueReady) == 0)
    }

    @Test func ringsInTheHoleNeverBecomeReady() throws {
        let fixture = try Fixture()
        fixture.driver.negotiate()
        fixture.driver.write(.queueSelect, 0)
        fixture.driver.writeAddress(.queueDescriptorLow, holeAddress)
        fixture.driver.write(.queueReady, 1)
        #expect(fixture.driver.read(.queueReady) == 0)
        #expect(fixture.transport.refusedAccessCount == 1)
    }

    @Test func queueSelectPastTheLastQueue() throws {
        let fixture = try Fixture()
        fixture.driver.negotiate()
        fixture.driver.write(.queueSelect, 7)
        #expect(fixture.driver.read(.queueSizeMax) == 0)
        #expect(fixture.driver.read(.queueReady) == 0)
        fixture.driver.write(.queueSize, 8)
        fixture.driver.write(.queueReady, 1)
        #expect(fixture.transport.refusedAccessCount == 2)
    }

    @Test func notificationsBeforeActivationOrForMissingQueuesAreRefused() throws {
        let fixture = try Fixture()
        fixture.driver.notify(0)
        fixture.driver.initialize(queues: [fixture.queue])
        fixture.driver.notify(5)
        fixture.driver.notify(0xFFFF_FFFF)
        #expect(fixture.transport.refusedAccessCount == 3)
        #expect(fixture.transport.notificationCount == 0)
    }

    @Test func activationWithoutTheNeededQueueSetsNeedsReset() throws {
        let fixture = try Fixture()
        fixture.driver.negotiate()
        fixture.driver.driverOK()
        #expect(fixture.driver.status.contains(.needsReset))
        #expect(!fixture.transport.isActive)
        #expect(fixture.driver.acknowledgeInterrupts() == .configurationChange)
        fixture.driver.setStatus([])
        #expect(fixture.driver.status == [])
    }

    @Test func aBrokenRingSetsNeedsResetOnce() throws {
        var fixture = try Fixture()
        fixture.driver.initialize(queues: [fixture.queue])
        try fixture.queue.setAvailableIndex(100)
        fixture.driver.notify(0)
        fixture.driver.notify(0)
        #expect(fixture.driver.status.contains(.needsReset))
        #expect(fixture.driver.read(.configGeneration) == 1)
        #expect(fixture.line.count == 1)
        // The driver may acknowledge the failure by adding FAILED with the bit it read back.
        fixture.driver.write(.status, UInt32(fixture.driver.status.union(.failed).rawValue))
        #expect(fixture.driver.status.contains(.failed))
        fixture.driver.setStatus([])
        #expect(fixture.driver.status == [])
    }

    /// virtio-rng has no status byte to report a malformed chain in: the queue breaks, the
    /// device asks for a reset, and nothing is returned that could pass for a request served.
    @Test func aMalformedChainWithNowhereToReportItBreaksTheQueue() throws {
        var fixture = try Fixture()
        fixture.driver.initialize(queues: [fixture.queue])
        try fixture.queue.addChain([(holeAddress, 64, true)])
        try fixture.queue.addChain([(GuestAddress(0x8000), 16, true)])
        fixture.driver.notify(0)
        #expect(try fixture.queue.takeUsed().isEmpty)
        #expect(fixture.driver.status.contains(.needsReset))
        let counts = fixture.transport.queueCounts
        #expect(counts.rejectedChains == 1 && counts.brokenQueues == 1 && counts.completedChains == 0)
        // After the reset the driver asked for, the device serves again.
        fixture.driver.setStatus([])
        fixture.queue = try DriverQueue(memory: fixture.memory, size: 8)
        fixture.driver.initialize(queues: [fixture.queue])
        try fixture.queue.addChain([(GuestAddress(0x8000), 16, true)])
        fixture.driver.notify(0)
        #expect(try fixture.queue.takeUsed().map(\.length) == [16])
        #expect(!fixture.driver.status.contains(.needsReset))
    }

    /// Without a notifier to resume on, the notified thread serves the rest itself, one budget
    /// at a time: every chain is served and each round is counted as a resumption.
    @Test func workBeyondTheBudgetIsResumedOnTheNotifyingThread() throws {
        var fixture = try Fixture(queueSize: 8)
        fixture.driver.initialize(queues: [fixture.queue])
        for _ in 0..<8 { try fixture.queue.addChain([(GuestAddress(0x8000), 16, true)]) }
        fixture.driver.notify(0)
        #expect(try fixture.queue.takeUsed().count == 8)
    }
}
