import Testing
@testable import HVCore

/// Records every access and answers reads with `offset + width`, so a test can check that the
/// bus passed the right offset and width.
final class RecordingDevice: BusDevice {
    struct Access: Equatable {
        var isWrite: Bool
        var offset: UInt64
        var width: Int
        var value: UInt64
    }

    let accesses = Locked<[Access]>([])

    func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        accesses.withLock { $0.append(Access(isWrite: false, offset: offset, width: width.byteCount, value: 0)) }
        return 0xAABB_CCDD_EEFF_0011 &+ offset
    }

    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        accesses.withLock { $0.append(Access(isWrite: true, offset: offset, width: width.byteCount, value: value)) }
    }
}

@Suite("Bus")
struct BusTests {
    @Test func dispatchesWithOffsetAndMasksToWidth() throws {
        let bus = Bus(space: .mmio)
        let device = RecordingDevice()
        try bus.register(device, at: GuestAddress(0xD000_0000), length: 0x100)
        #expect(bus.read(at: GuestAddress(0xD000_0010), width: .byte) == 0x21)
        #expect(bus.read(at: GuestAddress(0xD000_0010), width: .word) == 0x0021)
        #expect(bus.read(at: GuestAddress(0xD000_0000), width: .doubleWord) == 0xEEFF_0011)
        #expect(bus.read(at: GuestAddress(0xD000_00F8), width: .quadWord) == 0xAABB_CCDD_EEFF_0109)
        bus.write(at: GuestAddress(0xD000_0004), width: .word, value: 0x1234_5678)
        #expect(device.accesses.withLock { $0.last } == .init(isWrite: true, offset: 4, width: 2, value: 0x5678))
        #expect(bus.unhandledReads == 0 && bus.unhandledWrites == 0)
    }

    @Test func overlappingRegistrationIsRefused() throws {
        let bus = Bus(space: .pio)
        try bus.register(RecordingDevice(), at: GuestAddress(0x3F8), length: 8)
        #expect(throws: BusError.self) { try bus.register(RecordingDevice(), at: GuestAddress(0x3FF), length: 1) }
        #expect(throws: BusError.self) { try bus.register(RecordingDevice(), at: GuestAddress(0x3F0), length: 9) }
        try bus.register(RecordingDevice(), at: GuestAddress(0x400), length: 1)
        try bus.register(RecordingDevice(), at: GuestAddress(0x3F0), length: 8)
        #expect(bus.registeredRanges.map(\.start.rawValue) == [0x3F0, 0x3F8, 0x400])
    }

    @Test("ranges that do not fit the space are refused", arguments: [
        (Bus.Space.pio, UInt64(0xFFFF), UInt64(2)),
        (Bus.Space.pio, UInt64(0x1_0000), UInt64(1)),
        (Bus.Space.pio, UInt64(0), UInt64(0)),
        (Bus.Space.mmio, UInt64.max, UInt64(2)),
        (Bus.Space.mmio, UInt64(0x1000), UInt64(0)),
    ])
    func outOfSpace(space: Bus.Space, base: UInt64, length: UInt64) {
        let bus = Bus(space: space)
        #expect(throws: BusError.outOfSpace(base: GuestAddress(base), length: length, space: space)) {
            try bus.register(RecordingDevice(), at: GuestAddress(base), length: length)
        }
    }

    @Test func accessesToNothingAreCountedAndAnswered() throws {
        let pio = Bus(space: .pio)
        #expect(pio.read(at: GuestAddress(0x80), width: .byte) == 0xFF)
        #expect(pio.read(at: GuestAddress(0x80), width: .doubleWord) == 0xFFFF_FFFF)
        pio.write(at: GuestAddress(0x80), width: .byte, value: 1)
        #expect(pio.unhandledReads == 2 && pio.unhandledWrites == 1)

        let mmio = Bus(space: .mmio, unmappedReadValue: .zero)
        #expect(mmio.read(at: GuestAddress(0xE000_0000), width: .quadWord) == 0)
        #expect(mmio.unhandledReads == 1)
    }

    @Test("an access that straddles the end of a device reaches nothing")
    func straddlingAccess() throws {
        let bus = Bus(space: .mmio)
        let device = RecordingDevice()
        try bus.register(device, at: GuestAddress(0x1000), length: 0x10)
        #expect(bus.read(at: GuestAddress(0x100C), width: .quadWord) == UInt64.max)
        bus.write(at: GuestAddress(0x100F), width: .word, value: 0)
        #expect(bus.read(at: GuestAddress(UInt64.max - 3), width: .quadWord) == UInt64.max)
        #expect(device.accesses.withLock { $0.isEmpty })
        #expect(bus.unhandledReads == 2 && bus.unhandledWrites == 1)
    }

    @Test func unregisterRemovesTheDevice() throws {
        let bus = Bus(space: .pio)
        try bus.register(RecordingDevice(), at: GuestAddress(0x60), length: 1)
        try bus.unregister(at: GuestAddress(0x60))
        #expect(bus.read(at: GuestAddress(0x60), width: .byte) == 0xFF)
        #expect(throws: BusError.notRegistered(base: GuestAddress(0x60))) { try bus.unregister(at: GuestAddress(0x60)) }
    }

    @Test func portsAreRegisteredAsPortsAndOnlyOnAPortBus() throws {
        let pio = Bus(space: .pio)
        let device = RecordingDevice()
        try pio.register(device, port: 0x3F8, count: 8)
        _ = pio.read(at: GuestAddress(0x3FD), width: .byte)
        #expect(device.accesses.withLock { $0.map(\.offset) } == [5])
        #expect(throws: BusError.self) { try pio.register(RecordingDevice(), port: 0x3FF, count: 1) }
        // The last port fits; one past it does not.
        try pio.register(RecordingDevice(), port: 0xFFFF, count: 1)
        #expect(throws: BusError.outOfSpace(base: GuestAddress(0xFFFF), length: 2, space: .pio)) {
            try Bus(space: .pio).register(RecordingDevice(), port: 0xFFFF, count: 2)
        }
        #expect(throws: BusError.wrongSpace(expected: .pio, bus: .mmio)) {
            try Bus(space: .mmio).register(RecordingDevice(), port: 0x60, count: 1)
        }
        #expect(IOPort(0x3F8).description == "port 0x3f8")
    }

    @Test func accessWidths() {
        #expect(AccessWidth(byteCount: 3) == nil)
        #expect(AccessWidth(byteCount: 0) == nil)
        #expect(AccessWidth.allCases.map(\.mask) == [0xFF, 0xFFFF, 0xFFFF_FFFF, UInt64.max])
    }
}
