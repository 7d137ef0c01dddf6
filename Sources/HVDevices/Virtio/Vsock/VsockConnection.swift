/// One stream connection between a guest port and a host endpoint, as the vsock device keeps
/// it: its state (the states Firecracker's and Cloud Hypervisor's connection state machines
/// use), its flow control, and what each packet from the guest or event on the host side
/// makes the device do. Pure logic: no queues, sockets or clocks, so every transition is
/// tested on its own and a hostile guest's packets can only move it to ``State/killed``.
///
/// The host side is CID 2 (VMADDR_CID_HOST); "local" below is the host side, "peer" the
/// guest.
public struct VsockConnection: Hashable, Sendable {
    /// VMADDR_CID_HOST.
    public static let hostCID: UInt64 = 2

    /// Where a connection is in its life.
    public enum State: Hashable, Sendable {
        /// The host side asked to connect (REQUEST sent); waiting for the guest's RESPONSE.
        case localInit
        /// The guest asked to connect (REQUEST received); waiting for the host side to accept.
        case peerInit
        /// Open both ways.
        case established
        /// The host side closed; SHUTDOWN (both halves) sent, waiting for the guest's RST.
        case localClosed
        /// The guest shut down these halves of its side: `.send` means it sends no more,
        /// `.receive` that it takes no more.
        case remoteClosed(VsockHeader.ShutdownFlags)
        /// Over: an RST went either way. Nothing more is sent or accepted.
        case killed
    }

    /// What the device does about a packet or an event.
    public enum Reaction: Hashable, Sendable {
        /// Nothing.
        case none
        /// `bytes` of data follow the guest's header: hand them to the host side, then call
        /// ``forwarded(_:)`` for what it took.
        case deliver(bytes: UInt32)
        /// Send this control packet to the guest.
        case reply(VsockHeader)
        /// A connection the host side asked for is open (tell it: `OK <port>`).
        case connected
        /// The guest gave more credit: the host side may send again.
        case creditChanged
        /// The guest ended the connection (its RST, or both halves shut): close the host side.
        case closed
        /// Send this RST to the guest and close the host side: the connection is killed, for
        /// the reason given (a protocol violation, a peer over its credit, a timeout).
        case reset(VsockHeader, reason: String)
    }

    /// The guest's CID.
    public let guestCID: UInt64
    /// The guest's port.
    public let guestPort: UInt32
    /// The host side's port.
    public let hostPort: UInt32
    /// Where the connection is.
    public private(set) var state: State
    /// Flow control both ways.
    public private(set) var credit: VsockCredit
    /// Whether the host side said it sends no more (``hostFinishedSending()``).
    public private(set) var hostSendingShut = false

    /// A connection the guest asked for with `request` (a REQUEST to the host), in
    /// ``State/peerInit`` until the host side accepts; the host side's receive buffer is
    /// `bufferAllocation` bytes.
    public init(guestRequest request: VsockHeader, bufferAllocation: UInt32) {
        guestCID = request.sourceCID
        guestPort = request.sourcePort
        hostPort = request.destinationPort
        state = .peerInit
        credit = VsockCredit(bufferAllocation: bufferAllocation)
        credit.peerAdvertised(bufferAllocation: request.bufferAllocation, forwardCount: request.forwardCount)
    }

    /// A connection the host side asks for, from `hostPort` to the guest's `guestPort`, in
    /// ``State/localInit``; send ``requestPacket`` to the guest.
    public init(hostPort: UInt32, to guestPort: UInt32, guestCID: UInt64, bufferAllocation: UInt32) {
        self.guestCID = guestCID
        self.guestPort = guestPort
        self.hostPort = hostPort
        state = .localInit
        credit = VsockCredit(bufferAllocation: bufferAllocation)
    }

    /// The REQUEST that opens a connection the host side asked for.
    public var requestPacket: VsockHeader { header(.request) }

    /// A header from the host side to the guest with the current credit, which counts as
    /// advertised.
    public mutating func makeHeader(_ operation: VsockHeader.Operation, length: UInt32 = 0, flags: UInt32 = 0) -> VsockHeader {
        credit.advertised()
        return header(operation, length: length, flags: flags)
    }

    private func header(_ operation: VsockHeader.Operation, length: UInt32 = 0, flags: UInt32 = 0) -> VsockHeader {
        VsockHeader(from: (Self.hostCID, hostPort), to: (guestCID, guestPort), operation: operation, length: length,
                    flags: flags, bufferAllocation: credit.bufferAllocation, forwardCount: credit.forwardCount)
    }

    // MARK: Packets from the guest

    /// What a packet from the guest on this connection makes the device do. The caller has
    /// matched its CIDs and ports to the connection; anything else about it is checked here.
    public mutating func guestSent(_ packet: VsockHeader) -> Reaction {
        guard state != .killed else { return .none }
        guard packet.type == VsockHeader.streamType else { return kill("a packet of socket type \(packet.type)") }
        // Every header carries the sender's credit.
        credit.peerAdvertised(bufferAllocation: packet.bufferAllocation, forwardCount: packet.forwardCount)
        guard let operation = packet.operation else { return kill("unknown operation \(packet.operationCode)") }
        if operation != .readWrite, packet.length != 0 {
            return kill("a \(operation) packet with \(packet.length) bytes of data")
        }
        switch operation {
        case .response:
            guard state == .localInit else { return kill("a RESPONSE in state \(state)") }
            state = .established
            return .connected
        case .readWrite:
            guard canReceive else { return kill("data in state \(state)") }
            do throws(VsockCreditError) {
                try credit.received(packet.length)
                if state == .localClosed {
                    // Sent before the guest saw our SHUTDOWN: nobody takes it any more.
                    try credit.forwarded(packet.length)
                    return .none
                }
            } catch {
                return kill("\(error)")
            }
            return packet.length == 0 ? .none : .deliver(bytes: packet.length)
        case .creditUpdate:
            return state == .localInit || state == .peerInit ? kill("a CREDIT_UPDATE before the connection is open") : .creditChanged
        case .creditRequest:
            guard state != .localInit, state != .peerInit else { return kill("a CREDIT_REQUEST before the connection is open") }
            return .reply(makeHeader(.creditUpdate))
        case .shutdown:
            let flags = packet.shutdownFlags.intersection([.receive, .send])
            switch state {
            case .established:
                state = .remoteClosed(flags)
            case let .remoteClosed(earlier):
                state = .remoteClosed(earlier.union(flags))
            case .localClosed:
                break
            default:
                return kill("a SHUTDOWN in state \(state)")
            }
            if case let .remoteClosed(halves) = state, halves.isSuperset(of: [.receive, .send]) {
                // Both halves shut: the connection is over; the device confirms with RST.
                let confirmation = makeHeader(.reset)
                state = .killed
                return .reset(confirmation, reason: "the guest shut both halves")
            }
            return .none
        case .reset:
            state = .killed
            return .closed
        case .request, .invalid:
            return kill("a \(operation) on an open connection")
        }
    }

    /// Whether the guest may still send data: open, or shut down only for receiving.
    private var canReceive: Bool {
        switch state {
        case .established, .localClosed: true
        case let .remoteClosed(halves): !halves.contains(.send)
        default: false
        }
    }

    // MARK: Events on the host side

    /// The host side accepted a connection the guest asked for: the RESPONSE to send.
    public mutating func hostAccepted() -> Reaction {
        guard state == .peerInit else { return .none }
        state = .established
        return .reply(makeHeader(.response))
    }

    /// The host side refused or could not take a connection the guest asked for, or went
    /// away: RST if the connection was not open yet, else SHUTDOWN of both halves, after which
    /// the guest's RST (or ``deadlinePassed()``) ends it.
    public mutating func hostClosed() -> Reaction {
        switch state {
        case .localInit, .peerInit:
            return kill("the host side closed before the connection was open")
        case .established, .remoteClosed:
            state = .localClosed
            return .reply(makeHeader(.shutdown, flags: VsockHeader.ShutdownFlags([.receive, .send]).rawValue))
        case .localClosed, .killed:
            return .none
        }
    }

    /// The host side sends no more (its end of file) but still takes what the guest sends:
    /// SHUTDOWN with the send flag, once.
    public mutating func hostFinishedSending() -> Reaction {
        switch state {
        case .established, .remoteClosed:
            guard !hostSendingShut else { return .none }
            hostSendingShut = true
            return .reply(makeHeader(.shutdown, flags: VsockHeader.ShutdownFlags.send.rawValue))
        default:
            return .none
        }
    }

    /// The deadline of a state that waits for the guest (``State/localInit``, ``State/localClosed``)
    /// passed: RST.
    public mutating func deadlinePassed() -> Reaction {
        guard state == .localInit || state == .localClosed else { return .none }
        return kill(state == .localInit ? "the guest did not answer the connection request" : "the guest did not confirm the shutdown")
    }

    /// How many of `wanted` bytes the host side may send to the guest now: bounded by the
    /// guest's credit, 0 unless the connection is open and the guest still receives.
    public func sendable(_ wanted: UInt32) -> UInt32 {
        guard !hostSendingShut else { return 0 }
        switch state {
        case .established: break
        case let .remoteClosed(halves) where !halves.contains(.receive): break
        default: return 0
        }
        return min(wanted, credit.peerFree)
    }

    /// The header of a data packet of `length` bytes to the guest (at most ``sendable(_:)``),
    /// counted as sent; nil if the credit does not allow it.
    public mutating func dataPacket(length: UInt32) -> VsockHeader? {
        guard length > 0, sendable(length) == length else { return nil }
        do throws(VsockCreditError) { try credit.sent(length) } catch { return nil }
        return makeHeader(.readWrite, length: length)
    }

    /// The host side took `bytes` of the data the guest sent. Returns a CREDIT_UPDATE to send
    /// when enough was freed since the guest last heard (a quarter of the buffer), so that a
    /// guest that ran out of credit goes on.
    public mutating func forwarded(_ bytes: UInt32) -> Reaction {
        do throws(VsockCreditError) { try credit.forwarded(bytes) } catch { return kill("\(error)") }
        guard state != .killed, credit.needsUpdate(threshold: credit.bufferAllocation / 4) else { return .none }
        return .reply(makeHeader(.creditUpdate))
    }

    /// Ends the connection at once from the host side: RST, for `reason`.
    public mutating func reset(reason: String) -> Reaction {
        kill(reason)
    }

    private mutating func kill(_ reason: String) -> Reaction {
        let reset = makeHeader(.reset)
        state = .killed
        return .reset(reset, reason: reason)
    }
}
