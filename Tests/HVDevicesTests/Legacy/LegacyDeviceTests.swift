import HVCore
import HVDevicesTesting
@testable import HVDevices
import Testing

@Suite("16550A UART")
struct Serial16550Tests {
    @Test func transmitsBytesWrittenToTHR() {
        let sink = CollectingSink()
        let uart = Serial16550(output: sink)
        for byte in "ok\n".utf8 { uart.write(offset: 0, width: .byte, value: UInt64(byte)) }
        #expect(sink.text == "ok\n")
        #expect(uart.read(offset: 5, width: .byte) & 0x60 == 0x60)  // transmitter always empty
    }

    @Test func receivesIntoABoundedFIFOAndInterrupts() {
        let line = CountingInterruptLine()
        let uart = Serial16550(output: CollectingSink(), interrupt: line)
        uart.write(offset: 1, width: .byte, value: 0x01)  // IER: received data
        #expect(uart.receive(Array(repeating: 0x41, count: 100)) == Serial16550.fifoCapacity)
        #expect(line.count == 1)
        #expect(uart.read(offset: 5, width: .byte) & 1 == 1)  // LSR data ready
        #expect(uart.read(offset: 2, width: .byte) & 0x0F == 0x04)  // IIR: received data
        for _ in 0..<Serial16550.fifoCapacity { #expect(uart.read(offset: 0, width: .byte) == 0x41) }
        #expect(uart.read(offset: 5, width: .byte) & 1 == 0)
        #expect(uart.read(offset: 2, width: .byte) & 0x0F == 0x01)  // nothing pending
        #expect(uart.read(offset: 0, width: .byte) == 0)  // an empty FIFO reads zero
    }

    @Test func transmitterEmptyInterruptIsRaisedAndAcknowledged() {
        let line = CountingInterruptLine()
        let uart = Serial16550(output: CollectingSink(), interrupt: line)
        uart.write(offset: 1, width: .byte, value: 0x02)  // IER: THR empty
        #expect(line.count == 1)
        #expect(uart.read(offset: 2, width: .byte) & 0x0F == 0x02)
        #expect(uart.read(offset: 2, width: .byte) & 0x0F == 0x01)  // reading IIR acknowledged it
        uart.write(offset: 0, width: .byte, value: 0x41)
        #expect(line.count == 2)
    }

    @Test func loopbackReturnsWrittenBytes() {
        let sink = CollectingSink()
        let uart = Serial16550(output: sink)
        uart.write(offset: 4, width: .byte, value: 0x10 | 0x0B)  // MCR: loopback, DTR, RTS, OUT2
        uart.write(offset: 0, width: .byte, value: 0x5A)
        #expect(sink.bytes.isEmpty)
        #expect(uart.read(offset: 0, width: .byte) == 0x5A)
        #expect(uart.read(offset: 6, width: .byte) == 0xB0)  // DCD, DSR, CTS from OUT2, DTR, RTS
    }

    @Test func divisorLatchSharesTheDataPorts() {
        let sink = CollectingSink()
        let uart = Serial16550(output: sink)
        uart.write(offset: 3, width: .byte, value: 0x83)  // DLAB
        uart.write(offset: 0, width: .byte, value: 0x01)
        uart.write(offset: 1, width: .byte, value: 0x00)
        #expect(uart.read(offset: 0, width: .byte) == 0x01)
        uart.write(offset: 3, width: .byte, value: 0x03)
        #expect(sink.bytes.isEmpty)
        #expect(uart.read(offset: 1, width: .byte) == 0)  // IER untouched
    }

    @Test(arguments: [AccessWidth.word, .doubleWord])
    func widerAccessesAreIgnored(width: AccessWidth) {
        let sink = CollectingSink()
        let uart = Serial16550(output: sink)
        uart.write(offset: 0, width: width, value: 0x4141)
        #expect(sink.bytes.isEmpty)
        #expect(uart.read(offset: 5, width: width) == 0xFF)
    }

    @Test func offsetsPastTheRegistersAreHarmless() {
        let uart = Serial16550(output: CollectingSink())
        uart.write(offset: 9, width: .byte, value: 1)
        #expect(uart.read(offset: 200, width: .byte) == 0xFF)
    }
}

@Suite("i8042")
struct I8042ControllerTests {
    @Test func resetCommandCallsTheResetHandler() {
        let resets = Locked(0)
        let controller = I8042Controller { resets.withLock { $0 += 1 } }
        controller.write(offset: 4, width: .byte, value: 0xFE)
        #expect(resets.withLock { $0 } == 1)
        #expect(controller.resetRequestCount == 1)
    }

    @Test func outputPortWithResetBitLowResets() {
        let resets = Locked(0)
        let controller = I8042Controller { resets.withLock { $0 += 1 } }
        controller.write(offset: 4, width: .byte, value: 0xD1)
        controller.write(offset: 0, width: .byte, value: 0x00)
        #expect(resets.withLock { $0 } == 1)
    }

    @Test func selfTestAndConfigurationByte() {
        let controller = I8042Controller {}
        controller.write(offset: 4, width: .byte, value: 0xAA)
        #expect(controller.read(offset: 4, width: .byte) & 1 == 1)
        #expect(controller.read(offset: 0, width: .byte) == 0x55)
        #expect(controller.read(offset: 4, width: .byte) & 1 == 0)
        controller.write(offset: 4, width: .byte, value: 0x60)
        controller.write(offset: 0, width: .byte, value: 0x20)
        controller.write(offset: 4, width: .byte, value: 0x20)
        #expect(controller.read(offset: 0, width: .byte) == 0x20)
    }

    @Test func unknownCommandsAndPortsDoNothing() {
        let resets = Locked(0)
        let controller = I8042Controller { resets.withLock { $0 += 1 } }
        for value in [0x00, 0x13, 0xFF, 0xD4] as [UInt64] { controller.write(offset: 4, width: .byte, value: value) }
        controller.write(offset: 2, width: .byte, value: 0xFE)
        controller.write(offset: 4, width: .word, value: 0xFE)
        #expect(controller.read(offset: 1, width: .byte) == 0xFF)
        #expect(resets.withLock { $0 } == 0)
    }
}

@Suite("CMOS RTC")
struct CMOSClockTests {
    // 2026-11-23 10:20:30 UTC, a Monday.
    let clock = CMOSClock(now: { 1_795_429_230 })

    func read(_ index: UInt8) -> UInt8 {
        clock.write(offset: 0, width: .byte, value: UInt64(index))
        return UInt8(clock.read(offset: 1, width: .byte))
    }

    @Test func reportsTheTimeInBCD() {
        #expect(read(0x00) == 0x30)
        #expect(read(0x02) == 0x20)
        #expect(read(0x04) == 0x10)
        #expect(read(0x06) == 0x02)
        #expect(read(0x07) == 0x23)
        #expect(read(0x08) == 0x11)
        #expect(read(0x09) == 0x26)
        #expect(read(0x32) == 0x20)
    }

    @Test func statusRegistersSayNoUpdateAndValidTime() {
        #expect(read(0x0A) & 0x80 == 0)
        #expect(read(0x0B) == 0x02)
        #expect(read(0x0D) == 0x80)
    }

    @Test func ramKeepsWritesAndTheNMIBitIsIgnored() {
        clock.write(offset: 0, width: .byte, value: 0x80 | 0x40)
        clock.write(offset: 1, width: .byte, value: 0x99)
        #expect(read(0x40) == 0x99)
        // Time registers are not writable.
        clock.write(offset: 0, width: .byte, value: 0x00)
        clock.write(offset: 1, width: .byte, value: 0x59)
        #expect(read(0x00) == 0x30)
    }

    @Test func hostTimeIsNow() {
        let before = CMOSClock.hostTime()
        #expect(before > 1_700_000_000)
    }
}
