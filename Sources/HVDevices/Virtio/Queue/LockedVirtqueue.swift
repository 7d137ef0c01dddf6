import HVCore
import Logging
import Synchronization

/// What a device did with one chain that ``LockedVirtqueue/processAvailable(budget:resumingWhenExhausted:malformed:_:)``
/// handed it.
public enum ChainDisposition: Sendable, Hashable {
    /// Finished: return the chain to the driver saying `length` bytes were written into it.
    case used(length: UInt32)
    /// Kept in flight; the device completes it later with ``LockedVirtqueue/complete(head:length:)``.
    case pending
    /// The request cannot be answered in a way the driver would read as a failure (a virtio-blk
    /// request without a writable status byte): the queue breaks and the device sets
    /// DEVICE_NEEDS_RESET rather than return something that could pass for success.
    case unanswerable(reason: String)
}

/// How much work one notification of a queue may do before the rest is resumed behind other
/// work (see ``LockedVirtqueue``).
public struct NotificationBudget: Sendable, Hashable {
    /// The most chains one call takes; nil means the queue's size.
    public var chains: Int?
    /// How long one call may keep taking chains (checked after each one); nil: no time limit.
    public var timeSlice: Duration?

    /// A budget of `chains` chains (nil: the queue's size) and `timeSlice`.
    public init(chains: Int? = nil, timeSlice: Duration? = .microseconds(250)) {
        self.chains = chains
        self.timeSlice = timeSlice
    }

    /// A queue's worth of chains and 0.25 ms: with the work under way when the slice runs out
    /// (a virtio-blk round of 16 requests), a notification holds its thread for about a
    /// millisecond at most (`blk_notify_budget_latency` in hv-bench).
    public static let `default` = NotificationBudget()
    /// No bound at all: a driver that keeps posting keeps the call going. For measurements.
    public static let unlimited = NotificationBudget(chains: .max, timeSlice: nil)
}

/// What one call of ``LockedVirtqueue/processAvailable(budget:resumingWhenExhausted:malformed:_:)`` did.
public struct QueueProgress: Sendable, Hashable {
    /// Chains taken (served, kept in flight or refused).
    public var chainsTaken: Int
    /// Whether the budget ran out with chains still available.
    public var workLeft: Bool
}

/// A ready queue handed to a device at activation: the ``SplitQueue`` under a lock, the guest
/// memory it lives in, and the interrupt that tells the driver about used buffers.
///
/// A device usually calls ``processAvailable(budget:resumingWhenExhausted:malformed:_:)`` when notified; a device that
/// completes requests later (asynchronous I/O) returns ``ChainDisposition/pending`` from the
/// handler and calls ``complete(head:length:)`` from wherever the completion arrives.
///
/// Work per notification is bounded: one call takes at most a budget of chains (by default the
/// queue's size) and stops early once its time slice is spent, then asks for a resumption,
/// which the transport schedules on its event loop behind whatever else is waiting there. So a
/// driver that keeps re-posting requests can hold neither the notified thread nor the queue's
/// lock for much longer than one slice.
public final class LockedVirtqueue: Sendable {
    /// The queue's index in its device.
    public let index: Int
    /// The guest memory the rings and buffers live in.
    public let memory: any GuestMemory
    /// `memory` as HVKit's own mapping, when it is one.
    private let mappedMemory: GuestMemoryMmap?
    /// The device's interrupt, raised when used entries need the driver's attention.
    public let interrupt: VirtioInterrupt
    private let queue: Locked<SplitQueue>
    private let rejectedChains = Atomic<UInt64>(0)
    private let completedChains = Atomic<UInt64>(0)
    private let resumptions = Atomic<UInt64>(0)
    /// Where refused chains are logged, rate-limited, and counted.
    private let events: GuestEventLog
    /// Asks for the device to be notified again later (budget exhausted).
    private let resume: @Sendable () -> Void

    /// Queue `index` of a device: `queue`'s rings in `memory`, signalling through `interrupt`.
    /// - Parameters:
    ///   - index: the queue's index in its device.
    ///   - queue: the rings, as the driver set them up.
    ///   - memory: the guest memory they live in.
    ///   - interrupt: the device's interrupt.
    ///   - logger: where refused chains are logged when `events` is nil.
    ///   - events: the device's log of guest-caused events (a new one over `logger` when nil),
    ///     so that a flood of malformed chains logs a bounded number of lines.
    ///   - resume: called (outside the lock) when a call of ``processAvailable(budget:resumingWhenExhausted:malformed:_:)``
    ///     used up its budget with chains still available; it must arrange for the device to be
    ///     notified again soon, on a thread of its choosing. The transport provides it.
    public init(index: Int, queue: SplitQueue, memory: any GuestMemory, interrupt: VirtioInterrupt,
                logger: Logger = Logger(label: "hvkit.virtqueue"), events: GuestEventLog? = nil,
                resume: @escaping @Sendable () -> Void = {}) {
        self.index = index
        self.queue = Locked(queue)
        self.memory = memory
        mappedMemory = memory as? GuestMemoryMmap
        self.interrupt = interrupt
        self.events = events ?? GuestEventLog(logger: logger)
        self.resume = resume
    }

    /// Chains refused as malformed (reported through their status byte, or breaking the queue).
    public var rejectedChainCount: UInt64 { rejectedChains.load(ordering: .relaxed) }
    /// Chains completed (including rejected ones answered with an error).
    public var completedChainCount: UInt64 { completedChains.load(ordering: .relaxed) }
    /// Times a call used up its budget and asked to be resumed.
    public var resumptionCount: UInt64 { resumptions.load(ordering: .relaxed) }
    /// Why the queue broke, if it did.
    public var fault: QueueFault? { queue.withLock { $0.fault } }
    /// Chains taken and not yet completed.
    public var inFlightCount: Int { queue.withLock { $0.inFlightCount } }
    /// The size the driver chose.
    public var size: UInt16 { queue.withLock { $0.size } }

    /// Takes available chains, at most `budget` of them, and hands each to `handle`; then
    /// interrupts the driver if it wants to hear about the chains completed.
    ///
    /// `handle` says what became of each chain (``ChainDisposition``). A malformed chain goes to
    /// `malformed`, which may write the device's error code into the chain's
    /// ``MalformedChain/statusByte`` and return the used length to complete it with; returning
    /// nil (the default) breaks the queue and sets DEVICE_NEEDS_RESET, so that no malformed
    /// request is ever completed in a way a driver could read as success. Both run with the
    /// queue locked, so they must not call back into this queue.
    ///
    /// - Parameters:
    ///   - budget: how many chains this call may take, and for how long.
    ///   - resumingWhenExhausted: when the budget runs out with chains still available, ask to
    ///     be resumed (see ``init(index:queue:memory:interrupt:logger:events:resume:)``). A
    ///     device that works in several rounds per notification passes false and calls
    ///     ``scheduleResumption()`` itself when it stops.
    ///   - malformed: reports a malformed chain's error, or declines to (nil).
    ///   - handle: serves one well-formed chain.
    /// - Returns: how many chains were taken, and whether work was left.
    @discardableResult
    public func processAvailable(
        budget: NotificationBudget = .default,
        resumingWhenExhausted: Bool = true,
        malformed: (MalformedChain) -> UInt32? = { _ in nil },
        _ handle: (DescriptorChain) -> ChainDisposition
    ) -> QueueProgress {
        let progress = queue.withLock { queue -> QueueProgress in
            // Guest RAM mapped by HVKit, nearly always: the walk is then specialised for it, with
            // no existential box copied, retained and released for every guest memory access.
            if let mappedMemory {
                return serveAvailable(&queue, in: mappedMemory, budget: budget, malformed: malformed, handle)
            }
            return serveAvailable(&queue, in: memory, budget: budget, malformed: malformed, handle)
        }
        if progress.workLeft, resumingWhenExhausted { scheduleResumption() }
        return progress
    }

    /// The body of ``processAvailable(budget:resumingWhenExhausted:malformed:_:)``, with the
    /// queue locked, for one concrete kind of guest memory.
    private func serveAvailable<Memory: GuestMemory>(
        _ queue: inout SplitQueue, in memory: Memory, budget: NotificationBudget,
        malformed: (MalformedChain) -> UInt32?, _ handle: (DescriptorChain) -> ChainDisposition
    ) -> QueueProgress {
        let limit = max(budget.chains ?? Int(queue.size), 1)
        let deadline = budget.timeSlice.map(HostClock.monotonicDeadline(after:))
        var taken = 0
        var exhausted = false
        // Counted here and published once, rather than with a locked instruction per chain.
        var completed: UInt64 = 0
        defer { if completed > 0 { completedChains.add(completed, ordering: .relaxed) } }
        do throws(VirtqueueError) {
            serving: repeat {
                try queue.disableNotifications(in: memory)
                while true {
                    let outOfTime = taken > 0 && deadline.map { HostClock.monotonicNanoseconds() > $0 } ?? false
                    guard taken < limit, !outOfTime else {
                        // With chains left, notifications stay disabled: the resumption comes
                        // back for them. With none, ask for the next kick as an empty queue
                        // does (with EVENT_IDX a stale avail_event would silence the driver
                        // for good), and resume if chains arrived meanwhile.
                        exhausted = try queue.hasAvailable(in: memory)
                        if !exhausted { exhausted = try queue.enableNotifications(in: memory) }
                        break serving
                    }
                    let chain: DescriptorChain
                    do throws(VirtqueueError) {
                        guard let next = try queue.popChain(in: memory) else { break }
                        chain = next
                    } catch {
                        guard case let .invalidChain(refused) = error else { throw error }
                        taken += 1
                        try refuse(refused, reportingWith: malformed, in: &queue, memory: memory)
                        continue
                    }
                    taken += 1
                    switch handle(chain) {
                    case let .used(length):
                        try queue.addUsed(head: chain.head, length: length, in: memory)
                        completed += 1
                    case .pending:
                        break
                    case let .unanswerable(reason):
                        queue.markBroken(.unanswerableRequest(head: chain.head, reason: reason))
                        throw VirtqueueError.broken(.unanswerableRequest(head: chain.head, reason: reason))
                    }
                }
            } while try queue.enableNotifications(in: memory)
            if try queue.needsNotification(in: memory) { interrupt.signalUsedBuffers() }
        } catch {
            // A broken queue answers nothing more; DEVICE_NEEDS_RESET interrupts the driver.
            fail(error)
            return QueueProgress(chainsTaken: taken, workLeft: false)
        }
        return QueueProgress(chainsTaken: taken, workLeft: exhausted)
    }

    /// Asks for the device to be notified again soon (on the transport's event loop when it has
    /// one), to serve chains left when a budget ran out.
    public func scheduleResumption() {
        resumptions.add(1, ordering: .relaxed)
        resume()
    }

    /// Counts and logs a malformed chain, then completes it if the device reported the error
    /// in its status byte, or breaks the queue.
    private func refuse(
        _ chain: MalformedChain, reportingWith report: (MalformedChain) -> UInt32?, in queue: inout SplitQueue,
        memory: some GuestMemory
    ) throws(VirtqueueError) {
        rejectedChains.add(1, ordering: .relaxed)
        events.record("malformed-chain", "refused a malformed chain", metadata: ["queue": "\(index)", "error": "\(chain)"])
        guard chain.statusByte != nil, let length = report(chain) else {
            queue.markBroken(.malformedChain(chain))
            throw .broken(.malformedChain(chain))
        }
        try queue.addUsed(head: chain.head, length: length, in: memory)
        completedChains.add(1, ordering: .relaxed)
    }

    /// Completes a chain kept in flight by ``processAvailable(budget:resumingWhenExhausted:malformed:_:)``, and interrupts the driver
    /// if it wants to hear about it.
    public func complete(head: UInt16, length: UInt32) {
        complete([(head, length)])
    }

    /// Completes several chains with one interrupt at most.
    public func complete(_ completions: [(head: UInt16, length: UInt32)]) {
        queue.withLock { queue in
            if let mappedMemory {
                addUsed(completions, to: &queue, in: mappedMemory)
            } else {
                addUsed(completions, to: &queue, in: memory)
            }
        }
    }

    private func addUsed(_ completions: [(head: UInt16, length: UInt32)], to queue: inout SplitQueue, in memory: some GuestMemory) {
        var completed: UInt64 = 0
        defer { if completed > 0 { completedChains.add(completed, ordering: .relaxed) } }
        do throws(VirtqueueError) {
            for (head, length) in completions {
                try queue.addUsed(head: head, length: length, in: memory)
                completed += 1
            }
            if try queue.needsNotification(in: memory) { interrupt.signalUsedBuffers() }
        } catch {
            fail(error)
        }
    }

    /// The queue's state for a snapshot (see ``SplitQueue/savedState``).
    public var savedState: SplitQueueState { queue.withLock { $0.savedState } }

    /// Gives back `chains`, the last ones taken and not used, in the order taken (see
    /// ``SplitQueue/giveBack(heads:in:)``). Returns false, giving nothing back, when they are
    /// not; a broken queue gives back nothing.
    public func giveBack(_ chains: [DescriptorChain]) -> Bool {
        giveBack(heads: chains.map(\.head))
    }

    /// Gives back the chains whose heads are `heads` (see ``giveBack(_:)``).
    public func giveBack(heads: [UInt16]) -> Bool {
        queue.withLock { queue in
            (try? queue.giveBack(heads: heads, in: memory)) ?? false
        }
    }

    private func fail(_ error: VirtqueueError) {
        if case .notReady = error { return }
        interrupt.setNeedsReset(because: "queue \(index): \(error)")
    }
}

/// What a device receives when the driver sets DRIVER_OK.
public struct VirtioActivation: Sendable {
    /// The guest memory the queues and buffers live in.
    public let memory: any GuestMemory
    /// The features both sides agreed on.
    public let features: VirtioFeatures
    /// One entry per queue the device declared; nil where the driver left a queue unready.
    public let queues: [LockedVirtqueue?]
    /// The device's interrupt (used buffers, configuration change, needs reset).
    public let interrupt: VirtioInterrupt

    /// What a device gets when the driver sets DRIVER_OK: the memory, the negotiated features, its queues (nil for one the driver did not enable) and its interrupt.
    public init(memory: any GuestMemory, features: VirtioFeatures, queues: [LockedVirtqueue?], interrupt: VirtioInterrupt) {
        self.memory = memory
        self.features = features
        self.queues = queues
        self.interrupt = interrupt
    }

    /// Queue `index`, or an error if the driver did not make it ready.
    public func queue(_ index: Int) throws(VirtioDeviceError) -> LockedVirtqueue {
        guard queues.indices.contains(index), let queue = queues[index] else { throw .queueNotReady(index: index) }
        return queue
    }
}
