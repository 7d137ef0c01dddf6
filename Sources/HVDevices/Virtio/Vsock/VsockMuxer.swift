import Glibc
import HVCore
import Logging
import SystemPackage

/// The host side of a vsock device: its connections, the host sockets behind them, and the
/// packets that move between those and the device's queues.
///
/// Everything is served from the caller's thread under one lock (a queue notification, or the
/// event loop's call for a ready socket, a timer or the Unix listener): no thread per
/// connection. Lock order: the muxer, then a queue's lock; the queues' handlers only collect.
@safe final class VsockMuxer: Sendable {
    /// A connection's ports, which name it (the CIDs are fixed: the host's and the guest's).
    struct Key: Hashable {
        var hostPort: UInt32
        var guestPort: UInt32
    }

    /// What an in-process `connect` waits for.
    typealias ConnectCompletion = @Sendable (Result<FileDescriptor, VsockConnectError>) -> Void

    struct Entry {
        var connection: VsockConnection
        /// Tells a deadline that fires late whether it is still about this connection.
        let serial: UInt64
        /// The host socket's endpoint; nil once the host side is gone.
        var endpoint: UInt64?
        /// An in-process connect's completion and the caller's end of the socket pair,
        /// until the guest answers.
        var waiting: (completion: ConnectCompletion, callerEnd: FileDescriptor)?
    }

    enum Role {
        /// A client of the Unix socket that has not sent its `CONNECT` line yet.
        case awaitingConnectLine
        /// The host end of a connection.
        case connection(Key)
        /// A closed connection's socket that still has guest bytes to hand over.
        case lingering
    }

    struct Slot {
        var endpoint: VsockHostEndpoint
        var role: Role
        /// Whether it is in the ready list.
        var listed = false
    }

    struct State {
        var receive: LockedVirtqueue?
        var transmit: LockedVirtqueue?
        var events: LockedVirtqueue?
        var heldReceive: [DescriptorChain] = []
        var heldEvents: [DescriptorChain] = []
        /// Control packets for the guest, oldest first (they go before any data).
        var control: [VsockHeader] = []
        var connections: [Key: Entry] = [:]
        var slots: [UInt64: Slot] = [:]
        /// Endpoints that may have bytes for the guest, served in turn.
        var ready: [UInt64] = []
        var listeners: [UInt32: @Sendable (FileDescriptor) -> Void] = [:]
        var nextSerial: UInt64 = 1
        var nextHostPort: UInt32 = 1 << 30
        var transportResetPending = false
        var resumeScheduled = false
        var closed = false
        /// Endpoints whose readiness interest may have changed during this call.
        var touched: [UInt64] = []
    }

    /// The most one read from a host socket takes: the credit Linux and the device advertise.
    static let largestRead: UInt32 = 64 << 10

    let guestCID: UInt64
    let socketPath: String?
    let limits: VsockLimits
    private let eventLoop: EventLoop
    private let guestEvents: GuestEventLog
    private let logger: Logger
    private let state = Locked(State())
    private let listener: (descriptor: FileDescriptor, registration: EventLoop.Registration)?

    init(guestCID: UInt64, socketPath: String?, limits: VsockLimits, eventLoop: EventLoop,
         guestEvents: GuestEventLog, logger: Logger) throws(VsockError) {
        self.guestCID = guestCID
        self.socketPath = socketPath
        self.limits = limits
        self.eventLoop = eventLoop
        self.guestEvents = guestEvents
        self.logger = logger
        guard let socketPath else {
            listener = nil
            return
        }
        let descriptor: FileDescriptor
        do {
            descriptor = try UnixSocket.listen(at: socketPath)
        } catch {
            throw .socket(path: socketPath, step: "listen", error)
        }
        let handler = Locked<(@Sendable () -> Void)?>(nil)
        do {
            let registration = try eventLoop.register(descriptor) { handler.withLock { $0 }?() }
            listener = (descriptor, registration)
        } catch {
            close(descriptor.rawValue)
            unsafe unlink(socketPath)
            throw .socket(path: socketPath, step: "watching it (epoll_ctl)", error)
        }
        handler.withLock { $0 = { [weak self] in self?.acceptClients() } }
    }

    deinit {
        shutdown()
    }

    /// Closes the Unix socket (and removes its file) and every connection.
    func shutdown() {
        let finished = state.withLock { state -> Bool in
            defer { state.closed = true }
            return state.closed
        }
        guard !finished else { return }
        if let listener, let socketPath {
            eventLoop.unregister(listener.registration)
            close(listener.descriptor.rawValue)
            unsafe unlink(socketPath)
        }
        dropAll(failing: .closed)
    }

    // MARK: Queues

    func start(receive: LockedVirtqueue, transmit: LockedVirtqueue, events: LockedVirtqueue) {
        state.withLock { state in
            state.receive = receive
            state.transmit = transmit
            state.events = events
        }
        serve { state, _ in
            takeEventBuffers(&state)
        }
    }

    /// The driver's reset: every connection goes (their host sockets closed), and the queues.
    func reset() {
        state.withLock { state in
            state.receive = nil
            state.transmit = nil
            state.events = nil
            state.heldReceive = []
            state.heldEvents = []
            state.control = []
            state.transportResetPending = false
        }
        dropAll(failing: .reset)
    }

    /// The driver posted receive buffers.
    func receiveNotified() {
        serve { _, _ in }
    }

    /// The driver queued packets.
    func transmitNotified() {
        serve { state, after in
            guard let queue = state.transmit else { return }
            var batch = DataBatch()
            queue.processAvailable { chain in
                do {
                    let packet = try VsockTransmitPacket(chain, in: queue.memory)
                    if guestSent(packet, head: chain.head, batch: &batch, &state, &after) { return .pending }
                } catch {
                    guestEvents.record("malformed-packet", "vsock: refused a transmitted packet",
                                       metadata: ["head": "\(chain.head)", "error": "\(error)"])
                }
                // The data went to the host socket or was copied aside: the chain is done.
                return .used(length: 0)
            }
            // Out of the queue's lock: the batched chains' data is out, so they are done.
            flush(&batch, &state, &after)
            if !batch.heads.isEmpty { queue.complete(batch.heads.map { ($0, 0) }) }
        }
    }

    /// Consecutive data packets of one connection, sent to its host socket with one sendmsg.
    @safe struct DataBatch {
        var key: Key?
        var data: [UnsafeMutableRawBufferPointer] = unsafe []
        var bytes: UInt32 = 0
        /// Their chains, kept in flight until the data is out.
        var heads: [UInt16] = []
    }

    /// Sends a batch's data, if any.
    private func flush(_ batch: inout DataBatch, _ state: inout State, _ after: inout [@Sendable () -> Void]) {
        guard let key = batch.key else { return }
        unsafe deliverToHost(batch.data, bytes: batch.bytes, key, &state, &after)
        settle(key, &state, &after)
        batch.key = nil
        unsafe batch.data = []
        batch.bytes = 0
    }

    /// Before a snapshot: gives the receive and event buffers held back to their queues;
    /// false if a queue would not take them. ``retakeBuffers()`` takes them again.
    func giveBackBuffers() -> Bool {
        state.withLock { state in
            if let queue = state.receive, !state.heldReceive.isEmpty {
                guard queue.giveBack(state.heldReceive) else { return false }
                state.heldReceive = []
            }
            if let queue = state.events, !state.heldEvents.isEmpty {
                guard queue.giveBack(state.heldEvents) else { return false }
                state.heldEvents = []
            }
            return true
        }
    }

    /// Takes again what ``giveBackBuffers()`` gave back, and delivers what waits.
    func retakeBuffers() {
        serve { state, _ in takeEventBuffers(&state) }
    }

    /// The driver posted event buffers.
    func eventNotified() {
        serve { state, _ in takeEventBuffers(&state) }
    }

    /// Ends every connection and tells the driver with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    /// (after a restore: the host sockets behind them are gone). Listeners stay.
    func resetTransport() {
        dropAll(failing: .reset)
        serve { state, _ in
            state.transportResetPending = true
            takeEventBuffers(&state)
        }
    }

    // MARK: In-process endpoints

    func listen(port: UInt32, accept: @escaping @Sendable (FileDescriptor) -> Void) {
        state.withLock { $0.listeners[port] = accept }
    }

    func stopListening(port: UInt32) {
        _ = state.withLock { $0.listeners.removeValue(forKey: port) }
    }

    func connect(toGuestPort port: UInt32, completion: @escaping ConnectCompletion) {
        let pair: (FileDescriptor, FileDescriptor)
        do {
            pair = try UnixSocket.pair()
        } catch {
            completion(.failure(.system(error)))
            return
        }
        serve { state, after in
            let refusal: VsockConnectError? = state.closed ? .closed
                : state.connections.count >= limits.maximumConnections ? .connectionLimit(limits.maximumConnections) : nil
            if let refusal {
                close(pair.0.rawValue)
                close(pair.1.rawValue)
                after.append { completion(.failure(refusal)) }
                return
            }
            guard let id = register(pair.0, role: .awaitingConnectLine, &state) else {
                close(pair.1.rawValue)
                after.append { completion(.failure(.closed)) }
                return
            }
            let key = openHostInitiated(guestPort: port, endpoint: id, &state)
            state.connections[key]?.waiting = (completion, pair.1)
        }
    }

    // MARK: Serving

    /// Runs `body` under the lock, then moves packets to the guest; calls what `body` left
    /// for after the lock (in-process callbacks, which may call back in).
    private func serve(_ body: (inout State, inout [@Sendable () -> Void]) -> Void) {
        let after = state.withLock { state -> [@Sendable () -> Void] in
            var after: [@Sendable () -> Void] = []
            body(&state, &after)
            if !state.closed { deliverToGuest(&state, &after) }
            for id in state.touched { updateInterest(id, &state) }
            state.touched = []
            return after
        }
        for work in after { work() }
    }

    /// Fills the guest's receive buffers: control packets first, then data from the ready
    /// host sockets in turn, at most a queue's worth per call (the rest on the event loop).
    private func deliverToGuest(_ state: inout State, _ after: inout [@Sendable () -> Void]) {
        guard let queue = state.receive else { return }
        var completions: [(head: UInt16, length: UInt32)] = []
        defer { if !completions.isEmpty { queue.complete(completions) } }
        var budget = Int(max(queue.size, 1))
        if !state.control.isEmpty || !state.ready.isEmpty { takeReceiveBuffers(queue, &state) }
        while budget > 0 {
            guard !state.control.isEmpty || !state.ready.isEmpty else { return }
            if state.heldReceive.isEmpty { takeReceiveBuffers(queue, &state) }
            guard let chain = state.heldReceive.first else { return }
            if !state.control.isEmpty {
                let header = state.control.removeFirst()
                do {
                    let length = unsafe try VsockReceivePacket.write(header, into: chain, in: queue.memory)
                    completions.append((chain.head, length))
                } catch {
                    refuseReceiveBuffer(chain, error, queue)
                }
                state.heldReceive.removeFirst()
                budget -= 1
                continue
            }
            let id = state.ready.removeFirst()
            guard var slot = state.slots[id], case let .connection(key) = slot.role, var entry = state.connections[key] else {
                state.slots[id]?.listed = false
                continue
            }
            // As much as the guest's credit allows, over as many held buffers as it takes, in
            // one readv.
            let allowed = entry.connection.sendable(UInt32.max)
            guard allowed > 0, slot.endpoint.mayRead, !slot.endpoint.endOfFile else {
                // Back on the list when credit comes or the socket has more.
                slot.listed = false
                state.slots[id] = slot
                continue
            }
            var outcome = VsockHostEndpoint.ReadResult.wouldBlock
            do {
                let used = unsafe try VsockReceivePacket.write(
                    into: state.heldReceive.prefix(budget), in: queue.memory, dataLimit: min(allowed, Self.largestRead),
                    fill: { buffers in
                        outcome = unsafe slot.endpoint.receive(into: buffers)
                        if case let .read(count) = outcome { return UInt32(count) }
                        return 0
                    },
                    header: { count in entry.connection.dataPacket(length: count) })
                completions += used
                state.heldReceive.removeFirst(used.count)
                budget -= used.count
            } catch {
                refuseReceiveBuffer(chain, error, queue)
                state.heldReceive.removeFirst()
            }
            state.connections[key] = entry
            state.slots[id] = slot
            state.touched.append(id)
            switch outcome {
            case .read:
                state.ready.append(id)
            case .wouldBlock:
                state.slots[id]?.listed = false
            case .endOfFile:
                state.slots[id]?.listed = false
                let reaction = entry.connection.hostFinishedSending()
                state.connections[key] = entry
                react(reaction, key, &state, &after)
            case let .failed(error):
                state.slots[id]?.listed = false
                logger.debug("vsock: host socket failed", metadata: ["port": "\(key.hostPort)", "error": "\(error)"])
                hostGone(key, &state, &after)
            }
            settle(key, &state, &after)
        }
        // Out of budget with work left: the event loop comes back for it.
        guard !state.control.isEmpty || !state.ready.isEmpty, !state.resumeScheduled else { return }
        state.resumeScheduled = true
        eventLoop.schedule(after: .zero) { [weak self] in
            self?.serve { state, _ in state.resumeScheduled = false }
        }
    }

    private func takeReceiveBuffers(_ queue: LockedVirtqueue, _ state: inout State) {
        state.heldReceive += Self.holdPosted(from: queue, atLeast: UInt64(VsockHeader.size), kind: "receive")
    }

    /// Takes every chain the driver posted on `queue` and keeps it in flight; a chain that is
    /// not a device-writable buffer of at least `atLeast` bytes breaks the queue.
    private static func holdPosted(from queue: LockedVirtqueue, atLeast size: UInt64, kind: String) -> [DescriptorChain] {
        var taken: [DescriptorChain] = []
        queue.processAvailable(budget: NotificationBudget(chains: nil, timeSlice: nil), resumingWhenExhausted: false) { chain in
            guard chain.readableLength == 0, chain.writableLength >= size else {
                return .unanswerable(reason: "\(kind) buffer \(chain.head) is not a device-writable buffer of at least \(size) bytes")
            }
            taken.append(chain)
            return .pending
        }
        return taken
    }

    private func refuseReceiveBuffer(_ chain: DescriptorChain, _ error: VsockPacketError, _ queue: LockedVirtqueue) {
        // Its checks passed when it was taken; only unreachable memory gets here.
        guestEvents.record("malformed-receive-buffer", "vsock: a receive buffer could not be written",
                           metadata: ["head": "\(chain.head)", "error": "\(error)"])
        queue.interrupt.setNeedsReset(because: "vsock receive buffer \(chain.head): \(error)")
    }

    /// Holds the driver's event buffers and sends a pending TRANSPORT_RESET.
    private func takeEventBuffers(_ state: inout State) {
        guard let queue = state.events else { return }
        state.heldEvents += Self.holdPosted(from: queue, atLeast: 4, kind: "event")
        guard state.transportResetPending, let chain = state.heldEvents.first else { return }
        state.heldEvents.removeFirst()
        state.transportResetPending = false
        var writer = chain.writer(in: queue.memory)
        do {
            // struct virtio_vsock_event: le32 id, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (0).
            try writer.write([0, 0, 0, 0])
            queue.complete(head: chain.head, length: 4)
        } catch {
            queue.interrupt.setNeedsReset(because: "vsock event buffer \(chain.head): \(error)")
        }
    }

    // MARK: Packets from the guest

    /// Handles one packet from the guest. Data for the connection of `batch` (or any, when it
    /// is empty) joins the batch, and the chain stays in flight (true); anything else sends the
    /// batch first, so the host sees everything in the guest's order.
    private func guestSent(_ packet: VsockTransmitPacket, head: UInt16, batch: inout DataBatch, _ state: inout State,
                           _ after: inout [@Sendable () -> Void]) -> Bool {
        let header = packet.header
        guard header.sourceCID == guestCID, header.destinationCID == VsockConnection.hostCID else {
            guestEvents.record("wrong-cid", "vsock: dropped a packet with the wrong addresses",
                               metadata: ["from": "\(header.sourceCID)", "to": "\(header.destinationCID)"])
            return false
        }
        let key = Key(hostPort: header.destinationPort, guestPort: header.sourcePort)
        if batch.key != nil, header.operation != .readWrite || batch.key != key { flush(&batch, &state, &after) }
        guard let index = state.connections.index(forKey: key) else {
            if header.operation == .request, header.type == VsockHeader.streamType {
                openGuestInitiated(header, key, &state, &after)
            } else if header.operation != .reset {
                // Nothing here by that name: RST, as the specification says, so the guest
                // forgets it too. A flood of these is bounded with the control list.
                refuse(header, reason: "a packet for no connection", &state)
            }
            return false
        }
        // The entry is changed where it is: one hash of the key per packet, not three.
        let reaction = state.connections.values[index].connection.guestSent(header)
        if let id = state.connections.values[index].endpoint { markReady(id, &state) }
        if case let .deliver(bytes) = reaction {
            batch.key = key
            unsafe batch.data += packet.data
            batch.bytes += bytes
            batch.heads.append(head)
            return true
        }
        // Data batched before a packet that ends the connection still goes to the host first.
        flush(&batch, &state, &after)
        react(reaction, key, &state, &after)
        settle(key, &state, &after)
        return false
    }

    /// Hands the guest's data to the host socket; what it does not take waits in the endpoint.
    private func deliverToHost(_ data: [UnsafeMutableRawBufferPointer], bytes: UInt32, _ key: Key, _ state: inout State,
                               _ after: inout [@Sendable () -> Void]) {
        guard let id = state.connections[key]?.endpoint, var slot = state.slots[id] else {
            // The host side is gone: the bytes are consumed unread, so the guest's credit holds.
            forwarded(bytes, key, &state, &after)
            return
        }
        let result = unsafe slot.endpoint.send(data)
        state.slots[id] = slot
        state.touched.append(id)
        wrote(result, key, &state, &after)
    }

    /// Counts what a host socket took, or lets the connection go if its host side is gone.
    private func wrote(_ result: VsockHostEndpoint.WriteResult, _ key: Key, _ state: inout State,
                       _ after: inout [@Sendable () -> Void]) {
        switch result {
        case let .wrote(count):
            forwarded(UInt32(count), key, &state, &after)
        case let .gone(error):
            logger.debug("vsock: host socket gone", metadata: ["port": "\(key.hostPort)", "error": "\(error)"])
            hostGone(key, &state, &after)
        }
    }

    private func forwarded(_ count: UInt32, _ key: Key, _ state: inout State, _ after: inout [@Sendable () -> Void]) {
        guard count > 0, var entry = state.connections[key] else { return }
        let reaction = entry.connection.forwarded(count)
        state.connections[key] = entry
        react(reaction, key, &state, &after)
    }

    /// The guest asked to connect to host port `key.hostPort`: an in-process listener takes
    /// it, else a Unix socket listening at `<path>_<port>`; RST when neither does or the
    /// connection limit is reached.
    private func openGuestInitiated(_ request: VsockHeader, _ key: Key, _ state: inout State,
                                    _ after: inout [@Sendable () -> Void]) {
        guard state.connections.count < limits.maximumConnections else {
            refuse(request, reason: "the connection limit (\(limits.maximumConnections)) is reached", &state)
            return
        }
        let descriptor: FileDescriptor
        if let accept = state.listeners[key.hostPort] {
            do {
                let (ours, theirs) = try UnixSocket.pair()
                descriptor = ours
                after.append { accept(theirs) }
            } catch {
                refuse(request, reason: "no socket pair: \(error)", &state)
                return
            }
        } else if let socketPath {
            do {
                descriptor = try UnixSocket.connect(to: "\(socketPath)_\(key.hostPort)")
            } catch {
                refuse(request, reason: "nothing listens at \(socketPath)_\(key.hostPort) (\(error))", &state, level: .debug)
                return
            }
        } else {
            refuse(request, reason: "nothing listens on host port \(key.hostPort)", &state, level: .debug)
            return
        }
        guard let id = register(descriptor, role: .connection(key), &state) else {
            refuse(request, reason: "the event loop did not take the socket", &state)
            return
        }
        var connection = VsockConnection(guestRequest: request, bufferAllocation: limits.bufferAllocation)
        let reaction = connection.hostAccepted()
        state.connections[key] = Entry(connection: connection, serial: nextSerial(&state), endpoint: id)
        react(reaction, key, &state, &after)
    }

    /// Opens a connection the host side asked for, from a new host port to `guestPort`:
    /// REQUEST sent, RST after the request timeout if the guest does not answer.
    private func openHostInitiated(guestPort: UInt32, endpoint id: UInt64, _ state: inout State) -> Key {
        var key = Key(hostPort: state.nextHostPort, guestPort: guestPort)
        while state.connections[key] != nil || key.hostPort < 1 << 30 {
            key.hostPort = max(key.hostPort &+ 1, 1 << 30)
        }
        state.nextHostPort = key.hostPort &+ 1
        var connection = VsockConnection(hostPort: key.hostPort, to: guestPort, guestCID: guestCID,
                                         bufferAllocation: limits.bufferAllocation)
        state.control.append(connection.makeHeader(.request))
        let serial = nextSerial(&state)
        state.connections[key] = Entry(connection: connection, serial: serial, endpoint: id)
        state.slots[id]?.role = .connection(key)
        armDeadline(key, serial: serial, after: limits.requestTimeout)
        return key
    }

    // MARK: Reactions

    private func react(_ reaction: VsockConnection.Reaction, _ key: Key, _ state: inout State,
                       _ after: inout [@Sendable () -> Void]) {
        switch reaction {
        case .none, .creditChanged:
            break
        case .deliver:
            // Only for data, which guestSent hands over itself.
            break
        case let .reply(header):
            state.control.append(header)
            if header.operation == .shutdown, let serial = state.connections[key]?.serial,
               state.connections[key]?.connection.state == .localClosed {
                armDeadline(key, serial: serial, after: limits.shutdownTimeout)
            }
        case .connected:
            guard var entry = state.connections[key] else { return }
            if let waiting = entry.waiting {
                entry.waiting = nil
                state.connections[key] = entry
                after.append { waiting.completion(.success(waiting.callerEnd)) }
            } else if let id = entry.endpoint {
                let answer = VsockConnectLine.accepted(hostPort: key.hostPort)
                state.slots[id]?.endpoint.toHost = answer
                state.slots[id]?.endpoint.preamble = answer.count
                flushToHost(id, key, &state, &after)
            }
            if let id = state.connections[key]?.endpoint { markReady(id, &state) }
        case .closed:
            finish(key, failing: .refused, &state, &after)
        case let .reset(header, reason):
            // A REQUEST the guest never received (its driver not up yet) is taken back
            // instead: the guest has nothing to forget.
            if let waiting = state.control.firstIndex(where: {
                $0.operation == .request && $0.sourcePort == key.hostPort && $0.destinationPort == key.guestPort
            }) {
                state.control.remove(at: waiting)
            } else {
                state.control.append(header)
            }
            logger.debug("vsock: connection reset", metadata: ["guest port": "\(key.guestPort)", "host port": "\(key.hostPort)",
                                                               "reason": "\(reason)"])
            finish(key, failing: .refused, &state, &after)
        }
    }

    /// What a connection's halves allow now: the host socket's write half shut once the guest
    /// sends no more and its bytes are out; the connection ended once neither side sends.
    private func settle(_ key: Key, _ state: inout State, _ after: inout [@Sendable () -> Void]) {
        guard let entry = state.connections[key], let id = entry.endpoint, let slot = state.slots[id] else { return }
        guard case let .remoteClosed(halves) = entry.connection.state, halves.contains(.send),
              slot.endpoint.toHost.isEmpty else { return }
        state.slots[id]?.endpoint.shutWrite()
        if entry.connection.hostSendingShut {
            var connection = entry.connection
            let reaction = connection.reset(reason: "both sides finished sending")
            state.connections[key]?.connection = connection
            react(reaction, key, &state, &after)
        }
    }

    /// The host socket failed or its peer closed it: the connection goes as
    /// ``VsockConnection/hostClosed()`` says, without the socket.
    private func hostGone(_ key: Key, _ state: inout State, _ after: inout [@Sendable () -> Void]) {
        if let id = state.connections[key]?.endpoint {
            closeEndpoint(id, &state)
            state.connections[key]?.endpoint = nil
        }
        guard var entry = state.connections[key] else { return }
        let reaction = entry.connection.hostClosed()
        state.connections[key] = entry
        react(reaction, key, &state, &after)
    }

    /// Forgets a connection: its host socket closes (after handing over the guest's last
    /// bytes, within the shutdown timeout), and an in-process connect still waiting fails.
    private func finish(_ key: Key, failing error: VsockConnectError, _ state: inout State,
                        _ after: inout [@Sendable () -> Void]) {
        guard let entry = state.connections.removeValue(forKey: key) else { return }
        failWaiting(entry, error, &after)
        guard let id = entry.endpoint, let slot = state.slots[id] else { return }
        if slot.endpoint.toHost.isEmpty {
            closeEndpoint(id, &state)
        } else {
            state.slots[id]?.role = .lingering
            eventLoop.schedule(after: limits.shutdownTimeout) { [weak self] in
                self?.serve { state, _ in
                    if case .lingering = state.slots[id]?.role { self?.closeEndpoint(id, &state) }
                }
            }
        }
    }

    /// Fails an in-process connect still waiting on `entry`, closing the caller's end.
    private func failWaiting(_ entry: Entry, _ error: VsockConnectError, _ after: inout [@Sendable () -> Void]) {
        guard let waiting = entry.waiting else { return }
        close(waiting.callerEnd.rawValue)
        after.append { waiting.completion(.failure(error)) }
    }

    private func refuse(_ packet: VsockHeader, reason: String, _ state: inout State, level: Logger.Level = .info) {
        guestEvents.record("refused-connection", level: level, "vsock: refused a packet",
                           metadata: ["guest port": "\(packet.sourcePort)", "host port": "\(packet.destinationPort)",
                                      "reason": "\(reason)"])
        // Unsolicited answers are bounded, so a guest that floods cannot grow the list.
        guard state.control.count < limits.maximumConnections * 2 + 64 else { return }
        state.control.append(VsockHeader(from: (VsockConnection.hostCID, packet.destinationPort), to: (guestCID, packet.sourcePort),
                                         operation: .reset))
    }

    private func armDeadline(_ key: Key, serial: UInt64, after delay: Duration) {
        eventLoop.schedule(after: delay) { [weak self] in
            self?.serve { state, after in
                guard let self, var entry = state.connections[key], entry.serial == serial else { return }
                let reaction = entry.connection.deadlinePassed()
                state.connections[key] = entry
                if case .reset = reaction {
                    self.react(reaction, key, &state, &after)
                    // A host client of the Unix socket learns by the socket closing.
                }
            }
        }
    }

    // MARK: Host sockets

    /// Registers a host socket with the event loop, one-shot: the loop calls only when the
    /// device has run out of what it knew (a read found nothing, a write was taken in part),
    /// so a busy host program does not wake it for every write (see ``updateInterest(_:_:)``).
    private func register(_ descriptor: FileDescriptor, role: Role, _ state: inout State) -> UInt64? {
        let id = nextSerial(&state)
        do {
            let registration = try eventLoop.register(descriptor, for: .readable, trigger: .oneShot) { [weak self] in
                self?.endpointReady(id)
            }
            var endpoint = VsockHostEndpoint(descriptor)
            endpoint.registration = registration
            endpoint.armed = .readable
            state.slots[id] = Slot(endpoint: endpoint, role: role)
            return id
        } catch {
            logger.warning("vsock: could not watch a host socket", metadata: ["error": "\(error)"])
            close(descriptor.rawValue)
            return nil
        }
    }

    private func closeEndpoint(_ id: UInt64, _ state: inout State) {
        guard let slot = state.slots.removeValue(forKey: id) else { return }
        if let registration = slot.endpoint.registration { eventLoop.unregister(registration) }
        slot.endpoint.close()
    }

    /// Arms the endpoint's registration for what the device needs to hear about now: readable
    /// once a read found nothing (or while a client's line is awaited), writable while bytes
    /// wait for the socket; nothing otherwise.
    private func updateInterest(_ id: UInt64, _ state: inout State) {
        guard let slot = state.slots[id], let registration = slot.endpoint.registration else { return }
        var wanted: EventLoop.Readiness = []
        switch slot.role {
        case .awaitingConnectLine:
            wanted = .readable
        case .lingering:
            if !slot.endpoint.toHost.isEmpty { wanted = .writable }
        case .connection:
            if !slot.endpoint.mayRead, !slot.endpoint.endOfFile { wanted.insert(.readable) }
            if !slot.endpoint.toHost.isEmpty { wanted.insert(.writable) }
        }
        guard wanted != slot.endpoint.armed else { return }
        do {
            try eventLoop.rearm(registration, for: wanted)
            state.slots[id]?.endpoint.armed = wanted
        } catch {
            logger.warning("vsock: could not watch a host socket", metadata: ["error": "\(error)"])
        }
    }

    private func markReady(_ id: UInt64, _ state: inout State) {
        // Looked at in place, once per guest packet: no copy of the slot, one hash.
        guard let index = state.slots.index(forKey: id), !state.slots.values[index].listed,
              state.slots.values[index].endpoint.mayRead, !state.slots.values[index].endpoint.endOfFile else { return }
        state.slots.values[index].listed = true
        state.ready.append(id)
    }

    /// A host socket became readable or writable (or both; the handler is not told).
    private func endpointReady(_ id: UInt64) {
        serve { state, after in
            guard let slot = state.slots[id] else { return }
            // One-shot: the registration sleeps until armed again.
            state.slots[id]?.endpoint.armed = []
            state.touched.append(id)
            switch slot.role {
            case .awaitingConnectLine:
                readConnectLine(id, &state)
            case .lingering:
                var endpoint = slot.endpoint
                let result = endpoint.flush()
                state.slots[id]?.endpoint = endpoint
                // Done once the last bytes are out, or the host side is gone.
                if endpoint.toHost.isEmpty {
                    closeEndpoint(id, &state)
                } else if case .gone = result {
                    closeEndpoint(id, &state)
                }
            case let .connection(key):
                state.slots[id]?.endpoint.mayRead = true
                flushToHost(id, key, &state, &after)
                markReady(id, &state)
                settle(key, &state, &after)
            }
        }
    }

    private func flushToHost(_ id: UInt64, _ key: Key, _ state: inout State, _ after: inout [@Sendable () -> Void]) {
        guard var endpoint = state.slots[id]?.endpoint, !endpoint.toHost.isEmpty else { return }
        let result = endpoint.flush()
        state.slots[id]?.endpoint = endpoint
        state.touched.append(id)
        wrote(result, key, &state, &after)
    }

    /// Reads a Unix-socket client's `CONNECT <port>` line, without taking any byte after it.
    private func readConnectLine(_ id: UInt64, _ state: inout State) {
        guard let descriptor = state.slots[id]?.endpoint.descriptor else { return }
        var line = [UInt8](repeating: 0, count: VsockConnectLine.maximumLength)
        let peeked = unsafe recv(descriptor.rawValue, &line, line.count, Int32(MSG_PEEK | MSG_DONTWAIT))
        if peeked < 0, errno == EAGAIN || errno == EINTR { return }
        guard peeked > 0 else {
            closeEndpoint(id, &state)
            return
        }
        switch VsockConnectLine.parse(line.prefix(peeked)) {
        case .incomplete:
            return
        case let .malformed(reason):
            logger.info("vsock: closed a client that did not send a CONNECT line", metadata: ["reason": "\(reason)"])
            closeEndpoint(id, &state)
        case let .connect(port, length):
            _ = unsafe recv(descriptor.rawValue, &line, length, Int32(MSG_DONTWAIT))
            // Bytes after the line may have come with it.
            state.slots[id]?.endpoint.mayRead = true
            guard state.connections.count < limits.maximumConnections else {
                logger.info("vsock: closed a client over the connection limit", metadata: ["limit": "\(limits.maximumConnections)"])
                closeEndpoint(id, &state)
                return
            }
            _ = openHostInitiated(guestPort: port, endpoint: id, &state)
        }
    }

    /// Takes the clients waiting on the Unix socket, a bounded number per call (the
    /// level-triggered loop calls again for more). A client must send its line within the
    /// request timeout.
    private func acceptClients() {
        guard let listener else { return }
        serve { state, _ in
            for _ in 0..<16 {
                let client: FileDescriptor?
                do {
                    client = try UnixSocket.accept(listener.descriptor)
                } catch {
                    logger.warning("vsock: accept failed", metadata: ["error": "\(error)"])
                    return
                }
                guard let client else { return }
                let awaiting = state.slots.values.count(where: { if case .awaitingConnectLine = $0.role { true } else { false } })
                guard awaiting < limits.maximumConnections, let id = register(client, role: .awaitingConnectLine, &state) else {
                    close(client.rawValue)
                    continue
                }
                eventLoop.schedule(after: limits.requestTimeout) { [weak self] in
                    self?.serve { state, _ in
                        if case .awaitingConnectLine = state.slots[id]?.role { self?.closeEndpoint(id, &state) }
                    }
                }
            }
        }
    }

    private func dropAll(failing error: VsockConnectError) {
        let after = state.withLock { state -> [@Sendable () -> Void] in
            var after: [@Sendable () -> Void] = []
            for entry in state.connections.values { failWaiting(entry, error, &after) }
            state.connections = [:]
            for id in Array(state.slots.keys) { closeEndpoint(id, &state) }
            state.ready = []
            return after
        }
        for work in after { work() }
    }

    private func nextSerial(_ state: inout State) -> UInt64 {
        defer { state.nextSerial += 1 }
        return state.nextSerial
    }

    /// Connections open now (any state), for tests and reports.
    var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Bytes from the guest waiting for each connection's host socket, by host port.
    var bufferedTowardsHost: [UInt32: Int] {
        state.withLock { state in
            var result: [UInt32: Int] = [:]
            for (key, entry) in state.connections {
                if let id = entry.endpoint, let slot = state.slots[id] { result[key.hostPort] = slot.endpoint.toHost.count }
            }
            return result
        }
    }
}
