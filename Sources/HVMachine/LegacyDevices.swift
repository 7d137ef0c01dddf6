import HVCore
import HVDevices
import SystemPackage

/// The legacy PC devices every x86 guest expects, as ``Machine/addLegacyDevices(console:input:)``
/// placed them.
public struct LegacyDevices: Sendable {
    /// The 16550A UART at port 0x3F8, IRQ 4 (Linux's ttyS0).
    public let serial: Serial16550
    /// The i8042 at ports 0x60 to 0x64: its reset line resets the machine (Linux's `reboot=k`).
    public let i8042: I8042Controller
    /// The CMOS real-time clock at ports 0x70 and 0x71.
    public let cmos: CMOSClock

    /// The serial port's first I/O port.
    public static let serialPort: IOPort = 0x3F8
    /// The serial port's interrupt (ISA IRQ 4, GSI 4).
    public static let serialInterrupt: UInt32 = 4
}

extension Machine {
    /// Adds the standard legacy set: a 16550A UART on 0x3F8/IRQ 4 writing to `console` (and
    /// reading `input`, if given, on the event loop), the i8042 whose reset line goes to
    /// ``requestReset()`` (so the `ResetPolicy` decides), and the CMOS clock. Only before
    /// ``load(_:)``.
    @discardableResult
    public func addLegacyDevices(console: any ByteSink, input: FileDescriptor? = nil) throws(MachineError) -> LegacyDevices {
        // Without the interrupt controllers the UART works polled, as guests' early consoles do.
        let interrupt: IRQFDLine? = configuration.interruptControllers
            ? try during(.wireInterrupt, device: "16550 serial") { try vm.makeInterruptLine(gsi: LegacyDevices.serialInterrupt) }
            : nil
        let serial = Serial16550(output: console, interrupt: interrupt)
        let reset = resetLine
        let i8042 = I8042Controller { reset.pull() }
        let cmos = CMOSClock()
        try add(pio: serial, port: LegacyDevices.serialPort, count: UInt16(Serial16550.portCount), name: "16550 serial")
        try add(pio: i8042, port: 0x60, count: UInt16(I8042Controller.portCount), name: "i8042")
        try add(pio: cmos, port: 0x70, count: UInt16(CMOSClock.portCount), name: "CMOS clock")
        if let input {
            try during(.addDevice, device: "16550 serial") { try serial.attachInput(input, eventLoop: events) }
        }
        return LegacyDevices(serial: serial, i8042: i8042, cmos: cmos)
    }
}
