import Glibc
import HVCore
import SystemPackage

/// ``HypercallNumber/poll``: waits until a source is ready, the timeout passes, or the VM
/// stops, without holding the vCPU's thread: when nothing is ready the call hands a
/// `TrapWait` on the sources' descriptors to the backend (a thread per vCPU blocks in
/// poll(2); a scheduler parks the vCPU), which calls again when the wait ends. An idle
/// guest costs no host CPU either way.
///
/// The timeout (arg0, nanoseconds) is clamped to ``HypercallABI/maximumPollNanoseconds``;
/// 0 only checks. Returns the ready set as ``PollEvents`` bits, 0 on timeout or stop.
public final class PollService: ParavirtService {
    /// Something the guest can wait for.
    public struct Source: Sendable {
        /// What the source reports when ready.
        public let events: PollEvents
        /// Readable while the source has something for the guest.
        public let descriptor: FileDescriptor
        /// Readiness the descriptor cannot show (a frame held back in host memory).
        public let isReady: @Sendable () -> Bool

        /// A source reporting `events`, ready while `descriptor` is readable or `isReady` says so.
        public init(events: PollEvents, descriptor: FileDescriptor, isReady: @escaping @Sendable () -> Bool = { false }) {
            self.events = events
            self.descriptor = descriptor
            self.isReady = isReady
        }
    }

    /// What the guest can wait for.
    public let sources: [Source]
    /// Signalled once when the VM stops, and never drained: every later poll returns at once.
    private let stopSignal: EventFD
    /// The deadline of each vCPU's poll that is waiting: its next call is the same poll
    /// again, not a new one (the guest has not run since).
    private let waiting = Locked<[UInt32: UInt64]>([:])

    /// A poll over `sources`.
    public init(sources: [Source] = []) throws(Errno) {
        self.sources = sources
        stopSignal = try EventFD(nonBlocking: true)
    }

    /// Adds poll.
    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.poll)
        table.onVMStopping { [self] in
            try? stopSignal.signal(1)
            waiting.withLock { $0.removeAll() }
        }
        try table.register(.poll, name: "poll", allowedOnChannel: false) { [self] call throws(HypercallError) in
            guard case let .trap(vcpu) = call.origin else { throw HypercallError(.invalid, "poll on the channel") }
            return attempt(vcpu: vcpu, nanoseconds: min(call.arguments.a0, HypercallABI.maximumPollNanoseconds))
        }
    }

    /// One attempt of vCPU `vcpu`'s poll: the ready set, or a wait until something may be.
    func attempt(vcpu: UInt32, nanoseconds: UInt64) -> HypercallResult {
        let now = HostClock.monotonicNanoseconds()
        let deadline = waiting.withLock { $0.removeValue(forKey: vcpu) } ?? now.addingReportingOverflow(nanoseconds).partialValue
        let (ready, stopped) = readyNow()
        if !ready.isEmpty || stopped || now >= deadline { return .value(ready.rawValue) }
        waiting.withLock { $0[vcpu] = deadline }
        return .wait(TrapWait(readable: [stopSignal.fileDescriptor] + sources.map(\.descriptor), deadline: deadline))
    }

    /// What is ready now, without waiting, and whether the VM is stopping.
    private func readyNow() -> (PollEvents, stopped: Bool) {
        var ready: PollEvents = []
        for source in sources where source.isReady() { ready.formUnion(source.events) }
        var descriptors = [pollfd(fd: stopSignal.fileDescriptor.rawValue, events: Int16(POLLIN), revents: 0)]
        for source in sources { descriptors.append(pollfd(fd: source.descriptor.rawValue, events: Int16(POLLIN), revents: 0)) }
        guard unsafe poll(&descriptors, nfds_t(descriptors.count), 0) > 0 else { return (ready, false) }
        for (index, source) in sources.enumerated() where descriptors[index + 1].revents & Int16(POLLIN) != 0 {
            ready.formUnion(source.events)
        }
        return (ready, descriptors[0].revents != 0)
    }
}
