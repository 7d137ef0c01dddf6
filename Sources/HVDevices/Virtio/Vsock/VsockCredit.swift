/// Credit-based flow control of one vsock stream connection, both ways (virtio 1.2 section
/// 5.10.6.3): the sender never sends more than the receiver's free buffer, which each side
/// advertises in every header as `buf_alloc` and `fwd_cnt`.
///
/// Counts wrap at 2^32 as the specification's do, so differences are taken with wrapping
/// arithmetic. A peer that sends beyond the credit it was given is refused with
/// ``VsockCreditError/peerExceededCredit(bytes:free:)``: the device resets such a connection
/// instead of buffering without bound.
public struct VsockCredit: Hashable, Sendable {
    /// Our receive buffer for this connection (the `buf_alloc` we advertise).
    public let bufferAllocation: UInt32
    /// Bytes received from the peer (rx_cnt).
    public private(set) var receivedCount: UInt32 = 0
    /// Bytes of those consumed by our side (the `fwd_cnt` we advertise).
    public private(set) var forwardCount: UInt32 = 0
    /// The `fwd_cnt` we last told the peer.
    public private(set) var advertisedForwardCount: UInt32 = 0
    /// The peer's receive buffer, as it last advertised.
    public private(set) var peerBufferAllocation: UInt32 = 0
    /// The bytes the peer has consumed, as it last advertised.
    public private(set) var peerForwardCount: UInt32 = 0
    /// Bytes sent to the peer (tx_cnt).
    public private(set) var sentCount: UInt32 = 0

    /// Flow control for a connection with a receive buffer of `bufferAllocation` bytes.
    public init(bufferAllocation: UInt32) {
        self.bufferAllocation = bufferAllocation
    }

    /// Received bytes not yet consumed by our side.
    public var buffered: UInt32 { receivedCount &- forwardCount }

    /// What the peer may still send us: our buffer less what waits in it.
    public var freeForPeer: UInt32 { bufferAllocation &- min(buffered, bufferAllocation) }

    /// What we may still send: the peer's buffer less what it has not consumed, 0 if the peer's
    /// figures say it consumed more than we sent (a confused or hostile peer gets nothing).
    public var peerFree: UInt32 {
        let inFlight = sentCount &- peerForwardCount
        guard inFlight <= peerBufferAllocation else { return 0 }
        return peerBufferAllocation - inFlight
    }

    /// Takes the credit fields of a header the peer sent.
    public mutating func peerAdvertised(bufferAllocation: UInt32, forwardCount: UInt32) {
        peerBufferAllocation = bufferAllocation
        peerForwardCount = forwardCount
    }

    /// Counts `bytes` received from the peer; refuses them if they exceed the credit we gave.
    public mutating func received(_ bytes: UInt32) throws(VsockCreditError) {
        guard bytes <= freeForPeer else { throw .peerExceededCredit(bytes: bytes, free: freeForPeer) }
        receivedCount &+= bytes
    }

    /// Counts `bytes` our side consumed from the receive buffer (written to the host socket).
    public mutating func forwarded(_ bytes: UInt32) throws(VsockCreditError) {
        guard bytes <= buffered else { throw .forwardedMoreThanReceived(bytes: bytes, buffered: buffered) }
        forwardCount &+= bytes
    }

    /// Counts `bytes` sent to the peer; refuses more than ``peerFree``.
    public mutating func sent(_ bytes: UInt32) throws(VsockCreditError) {
        guard bytes <= peerFree else { throw .exceedsPeerCredit(bytes: bytes, free: peerFree) }
        sentCount &+= bytes
    }

    /// Records that our current ``forwardCount`` went to the peer (in any header we send).
    public mutating func advertised() {
        advertisedForwardCount = forwardCount
    }

    /// Whether the peer should hear of freed space now, in a credit update: once at least
    /// `threshold` bytes were consumed since we last advertised, so that a peer that ran out of
    /// credit learns of it without an update per byte.
    public func needsUpdate(threshold: UInt32) -> Bool {
        forwardCount &- advertisedForwardCount >= max(threshold, 1)
    }
}

/// A flow-control rule a connection's traffic broke.
public enum VsockCreditError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The peer sent `bytes` with only `free` bytes of credit: it ignores flow control.
    case peerExceededCredit(bytes: UInt32, free: UInt32)
    /// Our side tried to send `bytes` with only `free` bytes of the peer's credit.
    case exceedsPeerCredit(bytes: UInt32, free: UInt32)
    /// Our side consumed `bytes` with only `buffered` received.
    case forwardedMoreThanReceived(bytes: UInt32, buffered: UInt32)

    /// What went wrong.
    public var description: String {
        switch self {
        case let .peerExceededCredit(bytes, free): "the peer sent \(bytes) bytes with \(free) bytes of credit"
        case let .exceedsPeerCredit(bytes, free): "\(bytes) bytes to send with \(free) bytes of the peer's credit"
        case let .forwardedMoreThanReceived(bytes, buffered): "\(bytes) bytes consumed with \(buffered) received"
        }
    }
}
