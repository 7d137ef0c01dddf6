import HVDevices
import HVTestSupport
import Testing

@Suite struct VsockConnectionTests {
    static let guestCID: UInt64 = 3
    static let buffer: UInt32 = 65536

    /// A packet from the guest's port 1024 to host port 5000.
    func fromGuest(_ operation: VsockHeader.Operation, length: UInt32 = 0, flags: VsockHeader.ShutdownFlags = [],
                   bufferAllocation: UInt32 = 65536, forwardCount: UInt32 = 0) -> VsockHeader {
        VsockHeader(from: (Self.guestCID, 1024), to: (VsockConnection.hostCID, 5000), operation: operation, length: length,
                    flags: flags.rawValue, bufferAllocation: bufferAllocation, forwardCount: forwardCount)
    }

    func guestInitiated() -> VsockConnection {
        VsockConnection(guestRequest: fromGuest(.request), bufferAllocation: Self.buffer)
    }

    func established() -> VsockConnection {
        var connection = guestInitiated()
        _ = connection.hostAccepted()
        return connection
    }

    func isReset(_ reaction: VsockConnection.Reaction) -> Bool {
        if case let .reset(header, _) = reaction { return header.operation == .reset }
        return false
    }

    @Test func aGuestRequestIsAnsweredOnceTheHostAccepts() throws {
        var connection = guestInitiated()
        #expect(connection.state == .peerInit)
        #expect(connection.guestPort == 1024 && connection.hostPort == 5000 && connection.guestCID == 3)
        guard case let .reply(response) = connection.hostAccepted() else {
            Issue.record("no RESPONSE")
            return
        }
        #expect(response.operation == .response && response.type == VsockHeader.streamType)
        #expect(response.sourceCID == 2 && response.sourcePort == 5000 && response.destinationCID == 3 && response.destinationPort == 1024)
        #expect(response.bufferAllocation == Self.buffer && response.forwardCount == 0)
        #expect(connection.state == .established)
        #expect(connection.hostAccepted() == .none, "accepting twice does nothing")
    }

    @Test func aHostRequestIsOpenOnceTheGuestResponds() {
        var connection = VsockConnection(hostPort: 7000, to: 52, guestCID: 3, bufferAllocation: Self.buffer)
        let request = connection.requestPacket
        #expect(request.operation == .request && request.sourcePort == 7000 && request.destinationPort == 52 && request.destinationCID == 3)
        #expect(connection.state == .localInit)
        #expect(connection.sendable(100) == 0, "nothing is sent before the connection is open")
        let response = VsockHeader(from: (3, 52), to: (2, 7000), operation: .response, bufferAllocation: 4096)
        #expect(connection.guestSent(response) == .connected)
        #expect(connection.state == .established && connection.sendable(10000) == 4096)
    }

    @Test func anUnansweredHostRequestTimesOut() {
        var connection = VsockConnection(hostPort: 7000, to: 52, guestCID: 3, bufferAllocation: Self.buffer)
        #expect(isReset(connection.deadlinePassed()))
        #expect(connection.state == .killed)
    }

    @Test func dataFlowsWithinCreditBothWays() throws {
        var connection = established()
        #expect(connection.guestSent(fromGuest(.readWrite, length: 1000)) == .deliver(bytes: 1000))
        #expect(connection.credit.buffered == 1000)
        #expect(connection.forwarded(1000) == .none, "too little freed for an update")
        // The host side sends what the guest's credit allows.
        #expect(connection.sendable(100_000) == 65536)
        let packet = connection.dataPacket(length: 60000)
        let data = try #require(packet)
        #expect(data.operation == .readWrite && data.length == 60000 && data.forwardCount == 1000)
        #expect(connection.sendable(100_000) == 5536)
        #expect(connection.dataPacket(length: 5537) == nil)
        // The guest consumed some: it says so in any header.
        #expect(connection.guestSent(fromGuest(.creditUpdate, forwardCount: 30000)) == .creditChanged)
        #expect(connection.sendable(100_000) == 35536)
    }

    @Test func freedSpaceIsAdvertisedOnceAQuarterOfTheBufferWasConsumed() {
        var connection = established()
        #expect(connection.guestSent(fromGuest(.readWrite, length: 65536)) == .deliver(bytes: 65536))
        #expect(connection.forwarded(16383) == .none)
        guard case let .reply(update) = connection.forwarded(1) else {
            Issue.record("no CREDIT_UPDATE after a quarter of the buffer")
            return
        }
        #expect(update.operation == .creditUpdate && update.forwardCount == 16384)
        #expect(connection.forwarded(1) == .none, "advertised: the next update waits for another quarter")
    }

    @Test func aGuestOverItsCreditIsReset() {
        var connection = established()
        #expect(connection.guestSent(fromGuest(.readWrite, length: 65536)) == .deliver(bytes: 65536))
        let reaction = connection.guestSent(fromGuest(.readWrite, length: 1))
        #expect(isReset(reaction))
        if case let .reset(_, reason) = reaction { #expect(reason.contains("credit")) }
        #expect(connection.state == .killed)
        #expect(connection.guestSent(fromGuest(.readWrite, length: 1)) == .none, "a killed connection takes nothing")
    }

    @Test func aCreditRequestIsAnswered() {
        var connection = established()
        guard case let .reply(update) = connection.guestSent(fromGuest(.creditRequest)) else {
            Issue.record("no CREDIT_UPDATE")
            return
        }
        #expect(update.operation == .creditUpdate && update.bufferAllocation == Self.buffer)
    }

    @Test func theGuestShutsItsHalvesOneAtATime() {
        var connection = established()
        #expect(connection.guestSent(fromGuest(.shutdown, flags: .send)) == .none)
        #expect(connection.state == .remoteClosed(.send))
        #expect(connection.sendable(10) == 10, "the guest still receives")
        #expect(isReset(connection.guestSent(fromGuest(.readWrite, length: 1))), "data after the guest said it sends no more")

        var other = established()
        _ = other.guestSent(fromGuest(.shutdown, flags: .receive))
        #expect(other.sendable(10) == 0, "the guest takes no more")
        #expect(other.guestSent(fromGuest(.readWrite, length: 5)) == .deliver(bytes: 5), "but may still send")
        let reaction = other.guestSent(fromGuest(.shutdown, flags: .send))
        #expect(isReset(reaction), "both halves shut: confirmed with RST")
        #expect(other.state == .killed)
    }

    @Test func theHostClosingShutsBothHalvesUntilTheGuestResets() {
        var connection = established()
        guard case let .reply(shutdown) = connection.hostClosed() else {
            Issue.record("no SHUTDOWN")
            return
        }
        #expect(shutdown.operation == .shutdown && shutdown.shutdownFlags == [.receive, .send])
        #expect(connection.state == .localClosed)
        #expect(connection.guestSent(fromGuest(.readWrite, length: 100)) == .none, "late data is dropped, not delivered")
        #expect(connection.credit.buffered == 0)
        #expect(connection.guestSent(fromGuest(.reset)) == .closed)
        #expect(connection.state == .killed)

        var silent = established()
        _ = silent.hostClosed()
        #expect(isReset(silent.deadlinePassed()))
    }

    @Test func theHostRefusingAGuestRequestResetsIt() {
        var connection = guestInitiated()
        #expect(isReset(connection.hostClosed()))
        #expect(connection.state == .killed)
    }

    @Test("protocol violations reset the connection", arguments: [
        ("a RESPONSE when open", VsockHeader.Operation.response, UInt32(0)),
        ("a REQUEST when open", .request, 0),
        ("an INVALID", .invalid, 0),
        ("a RST with data", .reset, 8),
        ("a credit update with data", .creditUpdate, 8),
    ])
    func violations(_ what: String, operation: VsockHeader.Operation, length: UInt32) {
        var connection = established()
        #expect(isReset(connection.guestSent(fromGuest(operation, length: length))), "\(what)")
        #expect(connection.state == .killed)
    }

    @Test func unknownOperationsAndSocketTypesReset() {
        var connection = established()
        var packet = fromGuest(.readWrite)
        packet.operationCode = 99
        #expect(isReset(connection.guestSent(packet)))
        var other = established()
        var datagram = fromGuest(.readWrite, length: 4)
        datagram.type = 2
        #expect(isReset(other.guestSent(datagram)))
        var early = guestInitiated()
        #expect(isReset(early.guestSent(fromGuest(.readWrite, length: 4))), "data before the host accepted")
    }

    /// Random packet sequences from a hostile guest: nothing traps, nothing beyond the credit
    /// is delivered, the host never sends beyond the guest's credit, and killed is final.
    @Test func randomGuestSequencesKeepTheInvariants() {
        var generator = SeededGenerator(seed: 17)
        for _ in 0..<300 {
            var connection = Bool.random(using: &generator) ? established()
                : VsockConnection(hostPort: 5000, to: 1024, guestCID: 3, bufferAllocation: 4096)
            var delivered: UInt64 = 0, forwarded: UInt64 = 0
            var wasKilled = false
            for _ in 0..<60 {
                var packet = fromGuest(VsockHeader.Operation.allCases.randomElement(using: &generator) ?? .readWrite,
                                       length: UInt32.random(in: 0...5000, using: &generator),
                                       bufferAllocation: UInt32.random(in: 0...70000, using: &generator),
                                       forwardCount: UInt32.random(in: 0...UInt32.max, using: &generator))
                if Int.random(in: 0..<10, using: &generator) == 0 { packet.operationCode = UInt16.random(in: 0...20, using: &generator) }
                if packet.operation != .readWrite, Bool.random(using: &generator) { packet.length = 0 }
                packet.flags = UInt32.random(in: 0...3, using: &generator)
                switch connection.guestSent(packet) {
                case let .deliver(bytes):
                    delivered += UInt64(bytes)
                    #expect(connection.credit.buffered <= connection.credit.bufferAllocation)
                    let take = UInt32.random(in: 0...bytes, using: &generator)
                    _ = connection.forwarded(take)
                    forwarded += UInt64(take)
                default: break
                }
                if let data = connection.dataPacket(length: UInt32.random(in: 1...3000, using: &generator)) {
                    #expect(data.length <= 3000)
                }
                #expect(connection.sendable(UInt32.max) <= connection.credit.peerBufferAllocation)
                if wasKilled { #expect(connection.state == .killed) }
                wasKilled = connection.state == .killed
            }
            #expect(delivered - forwarded <= UInt64(connection.credit.bufferAllocation))
        }
    }

    /// What a reaction is, without its details.
    static func kind(_ reaction: VsockConnection.Reaction) -> String {
        switch reaction {
        case .none: "none"
        case .deliver: "deliver"
        case let .reply(header): "reply:\(header.operation.map { "\($0)" } ?? "?")"
        case .connected: "connected"
        case .creditChanged: "credit"
        case .closed: "closed"
        case .reset: "reset"
        }
    }

    /// A connection in each state, made the way the device gets there.
    func connection(in state: String) -> VsockConnection {
        var connection = established()
        switch state {
        case "localInit": connection = VsockConnection(hostPort: 5000, to: 1024, guestCID: Self.guestCID, bufferAllocation: Self.buffer)
        case "peerInit": connection = guestInitiated()
        case "established": break
        case "localClosed": _ = connection.hostClosed()
        case "remoteClosed(send)": _ = connection.guestSent(fromGuest(.shutdown, flags: .send))
        case "remoteClosed(receive)": _ = connection.guestSent(fromGuest(.shutdown, flags: .receive))
        case "killed": _ = connection.guestSent(fromGuest(.reset))
        default: Issue.record("no state \(state)")
        }
        return connection
    }

    /// Every state against every packet the guest can send (a stream packet of each operation,
    /// SHUTDOWN with the send flag, RW with 100 bytes, and an operation the specification does
    /// not define): what the device does.
    @Test(arguments: [
        ("localInit", ["reset", "reset", "connected", "closed", "reset", "reset", "reset", "reset", "reset"]),
        ("peerInit", ["reset", "reset", "reset", "closed", "reset", "reset", "reset", "reset", "reset"]),
        ("established", ["reset", "reset", "reset", "closed", "none", "deliver", "credit", "reply:creditUpdate", "reset"]),
        ("localClosed", ["reset", "reset", "reset", "closed", "none", "none", "credit", "reply:creditUpdate", "reset"]),
        ("remoteClosed(send)", ["reset", "reset", "reset", "closed", "none", "reset", "credit", "reply:creditUpdate", "reset"]),
        ("remoteClosed(receive)", ["reset", "reset", "reset", "closed", "reset", "deliver", "credit", "reply:creditUpdate", "reset"]),
        ("killed", ["none", "none", "none", "none", "none", "none", "none", "none", "none"]),
    ])
    func everyStateAgainstEveryPacket(state: String, expected: [String]) {
        var packets: [VsockHeader] = [
            fromGuest(.invalid), fromGuest(.request), fromGuest(.response), fromGuest(.reset),
            fromGuest(.shutdown, flags: .send), fromGuest(.readWrite, length: 100), fromGuest(.creditUpdate),
            fromGuest(.creditRequest), fromGuest(.readWrite),
        ]
        packets[8].operationCode = 99
        for (packet, want) in zip(packets, expected) {
            var subject = connection(in: state)
            let got = Self.kind(subject.guestSent(packet))
            #expect(got == want, "\(state), op \(packet.operationCode): \(got)")
            if want == "reset" || want == "closed" { #expect(subject.state == .killed) }
        }
    }
}
