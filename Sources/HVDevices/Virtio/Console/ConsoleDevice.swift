import HVCore
import Logging
import SystemPackage

extension VirtioFeatures {
    /// VIRTIO_CONSOLE_F_SIZE: cols and rows are valid.
    public static let consoleSize = bit(0)
    /// VIRTIO_CONSOLE_F_EMERG_WRITE: the driver may write characters to emerg_wr.
    public static let consoleEmergencyWrite = bit(2)
}

/// virtio-console (virtio 1.2, section 5.3) with a single port: guest output goes to a
/// `ByteSink` and host input (an ``InputPump`` over a descriptor, or ``receive(_:)``) goes to
/// the guest's receive buffers.
///
/// Receive buffers are held until input arrives, so an idle console costs nothing; input that
/// arrives while the guest offers no buffer waits in the pump's bounded buffer.
public final class ConsoleDevice: VirtioDevice {
    static let receiveQueue = 0
    static let transmitQueue = 1
    /// The emerg_wr field's offset in the configuration space.
    static let emergencyWriteOffset = 8

    /// receiveq and transmitq, of this size each.
    public let queueMaxSizes: [UInt16]
    /// SIZE and EMERG_WRITE, and the transport's.
    public let offeredFeatures: VirtioFeatures = VirtioFeatures.transportDefaults.union([.consoleSize, .consoleEmergencyWrite])
    private let output: any ByteSink
    private let size: (columns: UInt16, rows: UInt16)

    private struct State {
        var receive: LockedVirtqueue?
        var transmit: LockedVirtqueue?
        /// Receive chains taken from the guest and not yet filled, oldest first.
        var receiveBuffers: [DescriptorChain] = []
        /// Input given with receive(_:) and not yet delivered.
        var pendingInput: [UInt8] = []
        var pump: InputPump?
    }

    private let state = Locked(State())
    private let logger: Logger
    /// Guest-caused events, logged rate-limited and counted.
    public let guestEvents: GuestEventLog

    /// - Parameters:
    ///   - output: where guest output goes.
    ///   - columns: the width reported to the guest.
    ///   - rows: the height reported to the guest.
    ///   - queueSize: each queue's maximum size.
    ///   - logger: where the device logs refused buffers.
    public init(output: any ByteSink, columns: UInt16 = 80, rows: UInt16 = 25, queueSize: UInt16 = 256,
                logger: Logger = Logger(label: "hvkit.virtio-console")) {
        self.output = output
        self.logger = logger
        guestEvents = GuestEventLog(logger: logger)
        size = (columns, rows)
        let maxSize = SplitQueue(maxSize: queueSize).maxSize
        queueMaxSizes = [maxSize, maxSize]
    }

    /// Feeds `input` (a terminal, pipe or socket) to the guest, read on `eventLoop`.
    public func attachInput(_ input: FileDescriptor, eventLoop: EventLoop) throws(Errno) {
        let pump = try InputPump(fileDescriptor: input, eventLoop: eventLoop, logger: logger) { [weak self] in
            self?.deliverInput()
        }
        let previous = state.withLock { state in
            defer { state.pump = pump }
            return state.pump
        }
        previous?.stop()
    }

    /// Queues bytes for the guest (in addition to an attached input), for programs that
    /// generate input themselves.
    public func receive(_ bytes: [UInt8]) {
        state.withLock { $0.pendingInput += bytes }
        deliverInput()
    }

    /// ``VirtioDeviceType/console`` (3).
    public var deviceType: VirtioDeviceType { .console }

    /// cols, rows, max_nr_ports (1) and emerg_wr.
    public var configuration: [UInt8] {
        // cols, rows, max_nr_ports, emerg_wr.
        var bytes = [UInt8](repeating: 0, count: 12)
        bytes[0] = UInt8(truncatingIfNeeded: size.columns)
        bytes[1] = UInt8(truncatingIfNeeded: size.columns >> 8)
        bytes[2] = UInt8(truncatingIfNeeded: size.rows)
        bytes[3] = UInt8(truncatingIfNeeded: size.rows >> 8)
        bytes[4] = 1
        return bytes
    }

    /// An emergency write: one character straight to the output.
    public func writeConfiguration(at offset: Int, bytes: [UInt8]) {
        // An emergency write: one character, before the queues work (early boot, panics).
        guard offset == Self.emergencyWriteOffset, let character = bytes.first else { return }
        unsafe withUnsafeBytes(of: character) { unsafe output.write($0) }
    }

    /// Takes both queues.
    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let receive = try activation.queue(Self.receiveQueue)
        let transmit = try activation.queue(Self.transmitQueue)
        state.withLock { state in
            state.receive = receive
            state.transmit = transmit
        }
    }

    /// Transmits output, or takes new receive buffers and fills them with waiting input.
    public func queueNotified(_ index: Int) {
        switch index {
        case Self.transmitQueue: transmitOutput()
        case Self.receiveQueue: takeReceiveBuffers()
        default: break
        }
    }

    /// Drops the queues and the receive buffers held.
    public func reset() {
        state.withLock { state in
            state.receive = nil
            state.transmit = nil
            state.receiveBuffers = []
        }
    }

    /// Writes every byte the guest queued for output. The sink is called without the device's
    /// lock held (only the transmit queue's), so it may feed input back with ``receive(_:)``.
    private func transmitOutput() {
        guard let queue = state.withLock({ $0.transmit }) else { return }
        queue.processAvailable { chain in
            var reader = chain.reader(in: queue.memory)
            do {
                for unsafe buffer in unsafe try reader.hostBuffers(reader.remaining) {
                    unsafe output.write(UnsafeRawBufferPointer(buffer))
                }
            } catch {
                guestEvents.record("refused-output", "virtio-console output refused", metadata: ["error": "\(error)"])
            }
            return .used(length: 0)
        }
    }

    /// Holds the guest's new receive buffers and fills them if input is waiting.
    private func takeReceiveBuffers() {
        state.withLock { state in
            guard let queue = state.receive else { return }
            var taken: [DescriptorChain] = []
            queue.processAvailable { chain in
                guard chain.writableLength > 0 else { return .used(length: 0) }
                taken.append(chain)
                return .pending
            }
            state.receiveBuffers += taken
        }
        deliverInput()
    }

    /// Moves waiting input into held receive buffers, one chain per burst of input.
    private func deliverInput() {
        state.withLock { state in
            guard let queue = state.receive else { return }
            var completions: [(head: UInt16, length: UInt32)] = []
            while !state.receiveBuffers.isEmpty {
                let chain = state.receiveBuffers[0]
                let room = Int(min(chain.writableLength, 1 << 16))
                var bytes = Array(state.pendingInput.prefix(room))
                state.pendingInput.removeFirst(bytes.count)
                if bytes.count < room, let pump = state.pump {
                    bytes += pump.take(room - bytes.count)
                }
                guard !bytes.isEmpty else { break }
                state.receiveBuffers.removeFirst()
                var writer = chain.writer(in: queue.memory)
                do {
                    try writer.write(bytes)
                } catch {
                    guestEvents.record("dropped-input", "virtio-console input dropped", metadata: ["error": "\(error)"])
                }
                completions.append((chain.head, UInt32(writer.bytesWritten)))
            }
            if !completions.isEmpty { queue.complete(completions) }
        }
    }
}

/// A console saves the input the guest has not received yet. The receive buffers it holds
/// are given back to the queue before the save and taken again after it (or by the restored
/// device at its first kick), so none is lost.
extension ConsoleDevice: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Brings the device to rest for a snapshot: nothing in flight, nothing held.
    public func prepareSnapshot() throws(SnapshotError) {
        try state.withLock { state throws(SnapshotError) in
            guard let queue = state.receive, !state.receiveBuffers.isEmpty else { return }
            guard queue.giveBack(state.receiveBuffers) else {
                throw .incompatible("the virtio console's receive buffers could not be given back to their queue")
            }
            state.receiveBuffers = []
        }
    }

    /// Takes back, after the snapshot, what ``prepareSnapshot()`` gave up.
    public func snapshotFinished() {
        takeReceiveBuffers()
    }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {
        encoder.append(bytes: state.withLock { $0.pendingInput })
    }

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let input = try decoder.readBytes(limit: 1 << 20)
        try decoder.expectEnd()
        state.withLock { $0.pendingInput = input + $0.pendingInput }
    }
}

