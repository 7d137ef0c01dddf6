import HVCore
import Logging

/// The few parts of an i8042 keyboard controller a guest needs: the status and data ports, the
/// controller configuration byte, the self-test, and above all the reset line. Writing 0xFE
/// to the command port is how Linux (`reboot=k`) and many small kernels reset the machine;
/// here it calls `onReset`, which the VMM maps to its reset policy.
///
/// Register it on the PIO bus at 0x60 with ``portCount`` ports: offset 0 is the data port
/// (0x60), offset 4 the command and status port (0x64); 0x61–0x63 read as all ones.
public final class I8042Controller: BusDevice {
    /// Ports 0x60 to 0x64.
    public static let portCount: UInt64 = 5
    static let dataPort: UInt64 = 0
    static let commandPort: UInt64 = 4

    private enum Command {
        static let readConfiguration: UInt8 = 0x20
        static let writeConfiguration: UInt8 = 0x60
        static let disableAuxiliary: UInt8 = 0xA7
        static let enableAuxiliary: UInt8 = 0xA8
        static let selfTest: UInt8 = 0xAA
        static let disableKeyboard: UInt8 = 0xAD
        static let enableKeyboard: UInt8 = 0xAE
        static let readOutputPort: UInt8 = 0xD0
        static let writeOutputPort: UInt8 = 0xD1
        static let pulseReset: UInt8 = 0xFE
    }

    private enum Status {
        static let outputFull: UInt8 = 0x01
        static let systemFlag: UInt8 = 0x04
        static let lastWasCommand: UInt8 = 0x08
    }

    private struct State {
        var configuration: UInt8 = 0x45  // keyboard interrupt, system flag, translation
        var output: UInt8?
        var awaitingData: UInt8?
        var lastWasCommand = false
    }

    private let state = Locked(State())
    private let resetRequests = Locked(0)
    private let onReset: @Sendable () -> Void
    private let logger: Logger

    /// `onReset` runs on the vCPU thread that asked for the reset.
    public init(logger: Logger = Logger(label: "hvkit.i8042"), onReset: @escaping @Sendable () -> Void) {
        self.onReset = onReset
        self.logger = logger
    }

    /// How many times the guest asked for a reset.
    public var resetRequestCount: Int { resetRequests.withLock { $0 } }

    /// Data and status reads: no keyboard, an empty output buffer.
    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .byte else { return 0xFF }
        return UInt64(read(port: offset))
    }

    /// Commands; 0xFE (pulse the reset line) calls the reset handler.
    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard width == .byte else { return }
        write(port: offset, value: UInt8(truncatingIfNeeded: value))
    }

    func read(port: UInt64) -> UInt8 {
        state.withLock { state in
            switch port {
            case Self.commandPort:
                var status = Status.systemFlag
                if state.output != nil { status |= Status.outputFull }
                if state.lastWasCommand { status |= Status.lastWasCommand }
                return status
            case Self.dataPort:
                defer { state.output = nil }
                return state.output ?? 0
            default:
                return 0xFF
            }
        }
    }

    func write(port: UInt64, value: UInt8) {
        let reset: Bool = state.withLock { state in
            switch port {
            case Self.commandPort:
                state.lastWasCommand = true
                switch value {
                case Command.readConfiguration: state.output = state.configuration
                case Command.writeConfiguration, Command.writeOutputPort: state.awaitingData = value
                case Command.selfTest: state.output = 0x55
                case Command.readOutputPort: state.output = 0x01  // A20 on, not in reset
                case Command.pulseReset: return true
                case Command.disableAuxiliary, Command.enableAuxiliary, Command.disableKeyboard, Command.enableKeyboard: break
                default: break  // Unknown commands are ignored, as on real controllers.
                }
            case Self.dataPort:
                state.lastWasCommand = false
                switch state.awaitingData.take() {
                case Command.writeConfiguration: state.configuration = value
                case Command.writeOutputPort:
                    // Bit 0 low on the output port holds the CPU in reset.
                    if value & 1 == 0 { return true }
                default: break  // Bytes for the keyboard itself: there is no keyboard.
                }
            default:
                break
            }
            return false
        }
        if reset {
            resetRequests.withLock { $0 += 1 }
            logger.info("guest requested a reset through the i8042")
            onReset()
        }
    }
}

extension I8042Controller: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {
        let saved = state.withLock { $0 }
        encoder.append(saved.configuration)
        encoder.append(saved.output != nil)
        encoder.append(saved.output ?? 0)
        encoder.append(saved.awaitingData != nil)
        encoder.append(saved.awaitingData ?? 0)
        encoder.append(saved.lastWasCommand)
    }

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        var restored = State()
        restored.configuration = try decoder.read()
        let hasOutput = try decoder.read(Bool.self)
        let output = try decoder.read(UInt8.self)
        restored.output = hasOutput ? output : nil
        let awaiting = try decoder.read(Bool.self)
        let command = try decoder.read(UInt8.self)
        guard !awaiting || command == Command.writeConfiguration || command == Command.writeOutputPort else {
            throw .malformed(what: decoder.context, reason: "the i8042 waits for data of command 0x\(String(command, radix: 16)), which takes none")
        }
        restored.awaitingData = awaiting ? command : nil
        restored.lastWasCommand = try decoder.read()
        try decoder.expectEnd()
        state.withLock { $0 = restored }
    }
}

