import Glibc
import HVCore
import SystemPackage

/// ``HypercallNumber/poll``: the calling vCPU's thread sleeps in poll(2) until a source is
/// ready, the timeout passes, or the VM stops, so an idle guest costs no host CPU.
///
/// The timeout (arg0, nanoseconds) is clamped to ``HypercallABI/maximumPollNanoseconds``;
/// 0 only checks. Returns the ready set as ``PollEvents`` bits, 0 on timeout or stop.
public final class PollService: ParavirtService {
    /// Something the guest can wait for.
    public struct Source: Sendable {
        public let events: PollEvents
        /// Readable while the source has something for the guest.
        public let descriptor: FileDescriptor
        /// Readiness the descriptor cannot show (a frame held back in host memory).
        public let isReady: @Sendable () -> Bool

        public init(events: PollEvents, descriptor: FileDescriptor, isReady: @escaping @Sendable () -> Bool = { false }) {
            self.events = events
            self.descriptor = descriptor
            self.isReady = isReady
        }
    }

    public let sources: [Source]
    /// Signalled once when the VM stops, and never drained: every later poll returns at once.
    private let stopSignal: EventFD

    public init(sources: [Source] = []) throws(Errno) {
        self.sources = sources
        stopSignal = try EventFD(nonBlocking: true)
    }

    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.poll)
        table.onVMStopping { [stopSignal] in try? stopSignal.signal(1) }
        try table.register(.poll, name: "poll", allowedOnChannel: false) { [self] call throws(HypercallError) in
            .value(wait(nanoseconds: min(call.arguments.a0, HypercallABI.maximumPollNanoseconds)).rawValue)
        }
    }

    /// Waits up to `nanoseconds` and returns what is ready.
    func wait(nanoseconds: UInt64) -> PollEvents {
        var descriptors = [pollfd(fd: stopSignal.fileDescriptor.rawValue, events: Int16(POLLIN), revents: 0)]
        for source in sources { descriptors.append(pollfd(fd: source.descriptor.rawValue, events: Int16(POLLIN), revents: 0)) }
        let deadline = HostClock.monotonicNanoseconds() &+ nanoseconds
        while true {
            var ready: PollEvents = []
            for source in sources where source.isReady() { ready.formUnion(source.events) }
            if !ready.isEmpty { return ready }
            let now = HostClock.monotonicNanoseconds()
            let remaining = deadline > now ? deadline - now : 0
            // Round up to whole milliseconds so a short timeout still sleeps rather than spins.
            let milliseconds = Int32((remaining + 999_999) / 1_000_000)
            let count = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
            if count < 0 {
                // EINTR: a kick (the VM may be stopping, which the stop signal shows) or
                // another signal; either way look again with the time left.
                if errno == EINTR { continue }
                return []
            }
            if descriptors[0].revents != 0 { return [] }
            for (index, source) in sources.enumerated() where descriptors[index + 1].revents & Int16(POLLIN) != 0 {
                ready.formUnion(source.events)
            }
            if !ready.isEmpty || remaining == 0 || count == 0 && HostClock.monotonicNanoseconds() >= deadline { return ready }
        }
    }
}
