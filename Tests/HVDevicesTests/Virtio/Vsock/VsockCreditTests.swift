import HVDevices
import Testing

@Suite struct VsockCreditTests {
    @Test func thePeerMaySendUpToOurBufferAndNoMore() throws {
        var credit = VsockCredit(bufferAllocation: 1000)
        #expect(credit.freeForPeer == 1000)
        try credit.received(600)
        #expect(credit.buffered == 600 && credit.freeForPeer == 400)
        #expect(throws: VsockCreditError.peerExceededCredit(bytes: 401, free: 400)) { try credit.received(401) }
        try credit.received(400)
        #expect(credit.freeForPeer == 0)
        #expect(throws: VsockCreditError.peerExceededCredit(bytes: 1, free: 0)) { try credit.received(1) }
        try credit.forwarded(250)
        #expect(credit.freeForPeer == 250 && credit.forwardCount == 250)
        #expect(throws: VsockCreditError.forwardedMoreThanReceived(bytes: 751, buffered: 750)) { try credit.forwarded(751) }
    }

    @Test func weSendUpToThePeersFreeSpace() throws {
        var credit = VsockCredit(bufferAllocation: 4096)
        #expect(credit.peerFree == 0, "no credit before the peer advertises any")
        #expect(throws: VsockCreditError.exceedsPeerCredit(bytes: 1, free: 0)) { try credit.sent(1) }
        credit.peerAdvertised(bufferAllocation: 100, forwardCount: 0)
        try credit.sent(70)
        #expect(credit.peerFree == 30)
        #expect(throws: VsockCreditError.exceedsPeerCredit(bytes: 31, free: 30)) { try credit.sent(31) }
        credit.peerAdvertised(bufferAllocation: 100, forwardCount: 50)
        #expect(credit.peerFree == 80)
        // A peer that shrinks its buffer below what is in flight gets nothing more.
        credit.peerAdvertised(bufferAllocation: 10, forwardCount: 50)
        #expect(credit.peerFree == 0)
    }

    @Test func aPeerClaimingToHaveConsumedMoreThanWeSentGetsNothing() throws {
        var credit = VsockCredit(bufferAllocation: 4096)
        credit.peerAdvertised(bufferAllocation: 1000, forwardCount: 0)
        try credit.sent(10)
        credit.peerAdvertised(bufferAllocation: 1000, forwardCount: 500)
        #expect(credit.peerFree == 0)
    }

    @Test func countsWrapAt2To32() throws {
        var credit = VsockCredit(bufferAllocation: 0x1000)
        credit.peerAdvertised(bufferAllocation: 0x1000, forwardCount: 0)
        // Run both counts up to just below 2^32 in buffer-sized steps, then across it.
        var moved: UInt64 = 0
        while moved < 0xFFFF_F000 {
            try credit.received(0x1000)
            try credit.forwarded(0x1000)
            try credit.sent(0x1000)
            credit.peerAdvertised(bufferAllocation: 0x1000, forwardCount: credit.sentCount)
            moved += 0x1000
        }
        try credit.received(0x800)
        try credit.forwarded(0x800)
        try credit.received(0x1000)
        #expect(credit.receivedCount == 0x800 && credit.buffered == 0x1000 && credit.freeForPeer == 0)
        try credit.sent(0x1000)
        #expect(credit.sentCount == 0 && credit.peerFree == 0)
        credit.peerAdvertised(bufferAllocation: 0x1000, forwardCount: 0xFFFF_F800)
        #expect(credit.peerFree == 0x800)
    }

    @Test func anUpdateIsDueOnceEnoughWasConsumedSinceTheLastAdvertisement() throws {
        var credit = VsockCredit(bufferAllocation: 65536)
        try credit.received(40000)
        #expect(!credit.needsUpdate(threshold: 16384))
        try credit.forwarded(16383)
        #expect(!credit.needsUpdate(threshold: 16384))
        try credit.forwarded(1)
        #expect(credit.needsUpdate(threshold: 16384))
        credit.advertised()
        #expect(!credit.needsUpdate(threshold: 16384) && credit.advertisedForwardCount == 16384)
        #expect(!credit.needsUpdate(threshold: 0), "a zero threshold still needs one consumed byte")
        try credit.forwarded(1)
        #expect(credit.needsUpdate(threshold: 0))
    }
}
