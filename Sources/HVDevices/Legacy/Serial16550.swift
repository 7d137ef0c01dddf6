import HVCore
import Logging
import SystemPackage

/// A 16550A UART: what Linux's early console (`earlyprintk=serial`, `console=ttyS0`) and most
/// small guests print through. Register it on the PIO bus at 0x3F8 (COM1) with 8 ports.
///
/// Transmission is immediate (the transmitter is always empty). Received bytes come from an
/// attached descriptor or ``receive(_:)`` and wait in a 64-byte FIFO. Interrupts (received
/// data, transmitter empty) follow IER and go out on the line as edges. Loopback mode (MCR bit
/// 4) sends written bytes back to the receiver, which is how Linux probes the port.
public final class Serial16550: BusDevice {
    /// The ports a UART occupies.
    public static let portCount: UInt64 = 8
    /// Bytes the receive FIFO holds.
    public static let fifoCapacity = 64

    private enum Register {
        static let data: UInt64 = 0  // RBR / THR, or DLL with DLAB
        static let interruptEnable: UInt64 = 1  // IER, or DLM with DLAB
        static let interruptIdentification: UInt64 = 2  // IIR on read, FCR on write
        static let lineControl: UInt64 = 3
        static let modemControl: UInt64 = 4
        static let lineStatus: UInt64 = 5
        static let modemStatus: UInt64 = 6
        static let scratch: UInt64 = 7
    }

    private enum Bits {
        static let divisorLatchAccess: UInt8 = 0x80  // LCR
        static let receivedDataInterrupt: UInt8 = 0x01  // IER
        static let transmitterEmptyInterrupt: UInt8 = 0x02  // IER
        static let noInterruptPending: UInt8 = 0x01  // IIR
        static let transmitterEmptyIdentification: UInt8 = 0x02  // IIR
        static let receivedDataIdentification: UInt8 = 0x04  // IIR
        static let fifosEnabled: UInt8 = 0xC0  // IIR
        static let dataReady: UInt8 = 0x01  // LSR
        static let transmitterEmpty: UInt8 = 0x60  // LSR: THRE | TEMT
        static let loopback: UInt8 = 0x10  // MCR
        static let idleModemStatus: UInt8 = 0xB0  // MSR: DCD | DSR | CTS
    }

    private struct State {
        var divisorLow: UInt8 = 0x0C  // 9600 baud
        var divisorHigh: UInt8 = 0
        var interruptEnable: UInt8 = 0
        var lineControl: UInt8 = 0x03  // 8N1
        var modemControl: UInt8 = 0x08  // OUT2
        var scratch: UInt8 = 0
        var fifoControl: UInt8 = 0
        var receive: [UInt8] = []
        /// A transmitter-empty interrupt is pending until IIR reports it or THR is written.
        var transmitterEmptyPending = false

        var identification: UInt8 {
            let fifo = fifoControl & 1 != 0 ? Bits.fifosEnabled : 0
            if interruptEnable & Bits.receivedDataInterrupt != 0, !receive.isEmpty {
                return fifo | Bits.receivedDataIdentification
            }
            if interruptEnable & Bits.transmitterEmptyInterrupt != 0, transmitterEmptyPending {
                return fifo | Bits.transmitterEmptyIdentification
            }
            return fifo | Bits.noInterruptPending
        }
    }

    private let output: any ByteSink
    private let interrupt: (any InterruptLine)?
    private let state = Locked(State())
    private let pump = Locked<InputPump?>(nil)
    private let logger: Logger

    /// - Parameters:
    ///   - output: where transmitted bytes go.
    ///   - interrupt: the UART's interrupt line (IRQ 4 for COM1), or nil for a polled UART.
    ///   - logger: where the UART logs what it refuses.
    public init(output: any ByteSink, interrupt: (any InterruptLine)? = nil, logger: Logger = Logger(label: "hvkit.uart")) {
        self.output = output
        self.interrupt = interrupt
        self.logger = logger
    }

    /// Feeds `input` to the receiver, read on `eventLoop` as the guest makes room.
    public func attachInput(_ input: FileDescriptor, eventLoop: EventLoop) throws(Errno) {
        let newPump = try InputPump(fileDescriptor: input, eventLoop: eventLoop, capacity: 4096, logger: logger) { [weak self] in
            self?.refill()
        }
        pump.withLock { $0 = newPump }
        refill()
    }

    /// Offers bytes to the receiver; returns how many fitted in the FIFO.
    @discardableResult
    public func receive(_ bytes: [UInt8]) -> Int {
        let (accepted, raise) = state.withLock { state -> (Int, Bool) in
            let room = Self.fifoCapacity - state.receive.count
            let taken = bytes.prefix(room)
            let wasEmpty = state.receive.isEmpty
            state.receive += taken
            return (taken.count, wasEmpty && !taken.isEmpty && state.interruptEnable & Bits.receivedDataInterrupt != 0)
        }
        if raise { trigger() }
        return accepted
    }

    /// A register read: received data, interrupt identification, line and modem status, the scratch register.
    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .byte else { return 0xFF }
        var refillNeeded = false
        let value: UInt8 = state.withLock { state in
            let latch = state.lineControl & Bits.divisorLatchAccess != 0
            switch offset {
            case Register.data:
                if latch { return state.divisorLow }
                guard !state.receive.isEmpty else { return 0 }
                refillNeeded = true
                return state.receive.removeFirst()
            case Register.interruptEnable:
                return latch ? state.divisorHigh : state.interruptEnable
            case Register.interruptIdentification:
                let identification = state.identification
                // Reading IIR acknowledges a transmitter-empty interrupt.
                if identification & 0x0F == Bits.transmitterEmptyIdentification { state.transmitterEmptyPending = false }
                return identification
            case Register.lineControl: return state.lineControl
            case Register.modemControl: return state.modemControl
            case Register.lineStatus:
                return Bits.transmitterEmpty | (state.receive.isEmpty ? 0 : Bits.dataReady)
            case Register.modemStatus:
                if state.modemControl & Bits.loopback != 0 {
                    // Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                    let control = state.modemControl
                    return (control & 0x01) << 5 | (control & 0x02) << 3 | (control & 0x04) << 4 | (control & 0x08) << 4
                }
                return Bits.idleModemStatus
            case Register.scratch: return state.scratch
            default: return 0xFF
            }
        }
        if refillNeeded { refill() }
        return UInt64(value)
    }

    /// A register write: transmitted data to the output, control registers and the divisor latch.
    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        enum Effect { case none, transmit, loopback, interrupt }
        let effect: Effect = state.withLock { state in
            let latch = state.lineControl & Bits.divisorLatchAccess != 0
            switch offset {
            case Register.data:
                if latch {
                    state.divisorLow = byte
                    return .none
                }
                state.transmitterEmptyPending = true
                if state.modemControl & Bits.loopback != 0 { return .loopback }
                return .transmit
            case Register.interruptEnable:
                if latch {
                    state.divisorHigh = byte
                    return .none
                }
                let before = state.identification
                state.interruptEnable = byte & 0x0F
                // Enabling THRE interrupts with the transmitter empty raises one at once.
                if byte & Bits.transmitterEmptyInterrupt != 0 { state.transmitterEmptyPending = true }
                return state.identification != before && state.identification & Bits.noInterruptPending == 0 ? .interrupt : .none
            case Register.interruptIdentification:
                state.fifoControl = byte
                if byte & 0x02 != 0 { state.receive.removeAll() }  // clear the receive FIFO
                return .none
            case Register.lineControl: state.lineControl = byte
            case Register.modemControl: state.modemControl = byte & 0x1F
            case Register.scratch: state.scratch = byte
            default: break  // LSR and MSR are read-only.
            }
            return .none
        }
        switch effect {
        case .none:
            break
        case .transmit:
            unsafe withUnsafeBytes(of: byte) { unsafe output.write($0) }
            raiseIfEnabled()
        case .loopback:
            receive([byte])
            raiseIfEnabled()
        case .interrupt:
            trigger()
        }
    }

    private func raiseIfEnabled() {
        let raise = state.withLock { $0.identification & Bits.noInterruptPending == 0 }
        if raise { trigger() }
    }

    /// Moves input from the pump into the FIFO as room appears.
    private func refill() {
        guard let pump = pump.withLock({ $0 }) else { return }
        let room = state.withLock { Self.fifoCapacity - $0.receive.count }
        guard room > 0 else { return }
        let bytes = pump.take(room)
        if !bytes.isEmpty { receive(bytes) }
    }

    private func trigger() {
        do {
            try interrupt?.trigger()
        } catch {
            logger.error("raising the UART interrupt failed", metadata: ["errno": "\(error)"])
        }
    }
}

extension Serial16550: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {
        let saved = state.withLock { $0 }
        for register in [saved.divisorLow, saved.divisorHigh, saved.interruptEnable, saved.lineControl,
                         saved.modemControl, saved.scratch, saved.fifoControl] {
            encoder.append(register)
        }
        encoder.append(bytes: saved.receive)
        encoder.append(saved.transmitterEmptyPending)
    }

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        var restored = State()
        restored.divisorLow = try decoder.read()
        restored.divisorHigh = try decoder.read()
        restored.interruptEnable = try decoder.read(UInt8.self) & 0x0F
        restored.lineControl = try decoder.read()
        restored.modemControl = try decoder.read(UInt8.self) & 0x1F
        restored.scratch = try decoder.read()
        restored.fifoControl = try decoder.read()
        restored.receive = try decoder.readBytes(limit: Self.fifoCapacity)
        restored.transmitterEmptyPending = try decoder.read()
        try decoder.expectEnd()
        state.withLock { $0 = restored }
    }
}

