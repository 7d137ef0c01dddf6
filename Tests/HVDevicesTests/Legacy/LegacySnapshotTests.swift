import HVCore
import HVDevicesTesting
@testable import HVDevices
import Testing

/// The legacy devices' saved state: what a restored device reads back, and the refusal of
/// state no device could have held.
@Suite("Legacy device snapshots")
struct LegacySnapshotTests {
    static func saved(_ device: any SnapshotStateful) -> [UInt8] {
        var encoder = SnapshotEncoder()
        device.saveState(to: &encoder)
        return encoder.bytes
    }

    static func restore(_ device: any SnapshotStateful, _ bytes: [UInt8]) throws(SnapshotError) {
        var decoder = SnapshotDecoder(bytes, context: "device")
        try device.restoreState(from: &decoder, version: device.snapshotVersion)
    }

    /// Every cut of a saved state is refused, and so is a byte too many.
    static func expectEveryTruncationRefused(_ bytes: [UInt8], into device: any SnapshotStateful) {
        for length in 0..<bytes.count {
            #expect(throws: SnapshotError.self, "\(length) of \(bytes.count) bytes accepted") { try restore(device, Array(bytes.prefix(length))) }
        }
        #expect(throws: SnapshotError.self) { try restore(device, bytes + [0]) }
    }

    @Test func theUARTComesBackWithItsRegistersAndFIFO() throws {
        let uart = Serial16550(output: CollectingSink())
        uart.write(offset: 3, width: .byte, value: 0x80)  // DLAB
        uart.write(offset: 0, width: .byte, value: 0x01)  // divisor 115200
        uart.write(offset: 3, width: .byte, value: 0x1B)  // 8E1, DLAB off
        uart.write(offset: 1, width: .byte, value: 0x01)  // IER: received data
        uart.write(offset: 7, width: .byte, value: 0x5A)
        uart.receive(Array("abc".utf8))
        let bytes = Self.saved(uart)

        let restored = Serial16550(output: CollectingSink())
        try Self.restore(restored, bytes)
        #expect(restored.read(offset: 3, width: .byte) == 0x1B)
        #expect(restored.read(offset: 1, width: .byte) == 0x01)
        #expect(restored.read(offset: 7, width: .byte) == 0x5A)
        #expect(restored.read(offset: 2, width: .byte) & 0x0F == 0x04, "the received-data interrupt is still identified")
        #expect([0, 0, 0].map { _ in UInt8(restored.read(offset: 0, width: .byte)) } == Array("abc".utf8))
        restored.write(offset: 3, width: .byte, value: 0x80)
        #expect(restored.read(offset: 0, width: .byte) == 0x01, "the divisor came back")
        Self.expectEveryTruncationRefused(bytes, into: Serial16550(output: CollectingSink()))
    }

    @Test func aUARTStateWithAnOverfullFIFOIsRefused() {
        var encoder = SnapshotEncoder()
        for _ in 0..<7 { encoder.append(UInt8(0)) }
        encoder.append(bytes: [UInt8](repeating: 0x41, count: Serial16550.fifoCapacity + 1))
        encoder.append(false)
        #expect(throws: SnapshotError.self) { try Self.restore(Serial16550(output: CollectingSink()), encoder.bytes) }
    }

    @Test func theI8042ComesBackMidCommand() throws {
        let controller = I8042Controller {}
        controller.write(port: I8042Controller.commandPort, value: 0x20)  // read configuration: output full
        controller.write(port: I8042Controller.commandPort, value: 0x60)  // write configuration: awaits data
        let bytes = Self.saved(controller)
        let resets = Locked(0)
        let restored = I8042Controller { resets.withLock { $0 += 1 } }
        try Self.restore(restored, bytes)
        #expect(restored.read(port: I8042Controller.commandPort) & 0x01 == 0x01, "the output byte is still there")
        #expect(restored.read(port: I8042Controller.dataPort) == 0x45)
        restored.write(port: I8042Controller.dataPort, value: 0x47)  // the awaited configuration byte
        restored.write(port: I8042Controller.commandPort, value: 0x20)
        #expect(restored.read(port: I8042Controller.dataPort) == 0x47)
        Self.expectEveryTruncationRefused(bytes, into: I8042Controller {})

        // Waiting for the data of a command that takes none cannot happen.
        var hostile = SnapshotEncoder()
        hostile.append(UInt8(0x45))
        hostile.append(false)
        hostile.append(UInt8(0))
        hostile.append(true)
        hostile.append(UInt8(0xFE))
        hostile.append(false)
        #expect(throws: SnapshotError.self) { try Self.restore(I8042Controller {}, hostile.bytes) }
        #expect(resets.withLock { $0 } == 0)
    }

    @Test func theCMOSComesBackWithItsRAMAndIndex() throws {
        let cmos = CMOSClock(now: { 0 })
        cmos.write(offset: 0, width: .byte, value: 0x40)
        cmos.write(offset: 1, width: .byte, value: 0x99)
        cmos.write(offset: 0, width: .byte, value: 0x41)
        let bytes = Self.saved(cmos)
        let restored = CMOSClock(now: { 0 })
        try Self.restore(restored, bytes)
        #expect(restored.read(offset: 1, width: .byte) == 0, "the index (0x41) came back")
        restored.write(offset: 0, width: .byte, value: 0x40)
        #expect(restored.read(offset: 1, width: .byte) == 0x99)
        Self.expectEveryTruncationRefused(bytes, into: CMOSClock())
        var short = SnapshotEncoder()
        short.append(UInt8(0))
        short.append(bytes: [UInt8](repeating: 0, count: 64))
        #expect(throws: SnapshotError.self) { try Self.restore(CMOSClock(), short.bytes) }
    }
}
