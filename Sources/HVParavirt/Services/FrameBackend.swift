import HVCore
import Synchronization
import SystemPackage

/// Where the network service's frames go and come from: an in-process pair (``InProcessNetwork``)
/// for tests and host-side programs, a tap device later.
public protocol FrameBackend: Sendable {
    /// Sends one Ethernet frame. Returns false if the backend dropped it (full, closed).
    func send(_ frame: [UInt8]) -> Bool
    /// Takes the next frame if there is one.
    func receive() -> [UInt8]?
    /// A descriptor that is readable while a frame is waiting (for ``PollService``).
    var readiness: FileDescriptor { get }
}

/// Two connected ports: what one sends, the other receives. Each port queues at most
/// `capacity` frames; more are dropped (as a full NIC would) and counted.
public final class InProcessNetwork: Sendable {
    /// The end a guest's network service uses.
    public let guestSide: InProcessPort
    /// The end the host program uses.
    public let hostSide: InProcessPort

    /// A connected pair whose ports queue at most `capacity` frames each.
    public init(capacity: Int = 256) throws(Errno) {
        let toGuest = try FrameInbox(capacity: capacity)
        let toHost = try FrameInbox(capacity: capacity)
        guestSide = InProcessPort(inbox: toGuest, peer: toHost)
        hostSide = InProcessPort(inbox: toHost, peer: toGuest)
    }
}

/// One end of an ``InProcessNetwork``.
public final class InProcessPort: FrameBackend {
    let inbox: FrameInbox
    let peer: FrameInbox

    init(inbox: FrameInbox, peer: FrameInbox) {
        self.inbox = inbox
        self.peer = peer
    }

    /// Sends a frame to the other end; false if its queue was full.
    public func send(_ frame: [UInt8]) -> Bool { peer.push(frame) }
    /// The next frame the other end sent, if any.
    public func receive() -> [UInt8]? { inbox.pop() }
    /// Readable while a frame is waiting.
    public var readiness: FileDescriptor { inbox.signal.fileDescriptor }
    /// Frames dropped because this port's inbox was full.
    public var dropped: UInt64 { inbox.dropped.load(ordering: .relaxed) }
}

/// A bounded frame queue with an eventfd (semaphore mode) that counts the frames in it, so
/// the descriptor is readable exactly while the queue is not empty.
final class FrameInbox: Sendable {
    let signal: EventFD
    let dropped = Atomic<UInt64>(0)
    private let capacity: Int
    private let frames = Locked<(items: [[UInt8]], head: Int)>(([], 0))

    init(capacity: Int) throws(Errno) {
        self.capacity = max(1, capacity)
        signal = try EventFD(nonBlocking: true, semaphore: true)
    }

    func push(_ frame: [UInt8]) -> Bool {
        // The count changes under the lock, so it always equals the queue's length.
        let accepted = frames.withLock { queue in
            guard queue.items.count - queue.head < capacity else { return false }
            queue.items.append(frame)
            try? signal.signal(1)
            return true
        }
        if !accepted { dropped.add(1, ordering: .relaxed) }
        return accepted
    }

    func pop() -> [UInt8]? {
        frames.withLock { queue in
            guard queue.head < queue.items.count else { return nil }
            let frame = queue.items[queue.head]
            queue.head += 1
            _ = try? signal.consume()
            // Compact once the consumed prefix dominates, so the array does not grow forever.
            if queue.head > 64, queue.head * 2 > queue.items.count {
                queue.items.removeFirst(queue.head)
                queue.head = 0
            }
            return frame
        }
    }
}
