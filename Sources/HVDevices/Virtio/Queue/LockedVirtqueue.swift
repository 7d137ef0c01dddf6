import HVCore
import Logging
import Synchronization

/// A ready queue handed to a device at activation: the ``SplitQueue`` under a lock, the guest
/// memory it lives in, and the interrupt that tells the driver about used buffers.
///
/// A device usually calls ``processAvailable(_:)`` when notified; a device that completes
/// requests later (asynchronous I/O) returns nil from the handler and calls
/// ``complete(head:length:)`` from wherever the completion arrives.
public final class LockedVirtqueue: Sendable {
    /// The queue's index in its device.
    public let index: Int
    /// The guest memory the rings and buffers live in.
    public let memory: any GuestMemory
    /// The device's interrupt, raised when used entries need the driver's attention.
    public let interrupt: VirtioInterrupt
    private let queue: Mutex<SplitQueue>
    private let rejectedChains = Atomic<UInt64>(0)
    private let completedChains = Atomic<UInt64>(0)
    /// Where refused chains are logged, rate-limited, and counted.
    private let events: GuestEventLog

    /// Queue `index` of a device: `queue`'s rings in `memory`, signalling through `interrupt`.
    /// - Parameters:
    ///   - index: the queue's index in its device.
    ///   - queue: the rings, as the driver set them up.
    ///   - memory: the guest memory they live in.
    ///   - interrupt: the device's interrupt.
    ///   - logger: where refused chains are logged when `events` is nil.
    ///   - events: the device's log of guest-caused events (a new one over `logger` when nil),
    ///     so that a flood of malformed chains logs a bounded number of lines.
    public init(index: Int, queue: SplitQueue, memory: any GuestMemory, interrupt: VirtioInterrupt,
                logger: Logger = Logger(label: "hvkit.virtqueue"), events: GuestEventLog? = nil) {
        self.index = index
        self.queue = Mutex(queue)
        self.memory = memory
        self.interrupt = interrupt
        self.events = events ?? GuestEventLog(logger: logger)
    }

    /// Chains refused as malformed (each completed with length zero).
    public var rejectedChainCount: UInt64 { rejectedChains.load(ordering: .relaxed) }
    /// Chains completed (including rejected ones).
    public var completedChainCount: UInt64 { completedChains.load(ordering: .relaxed) }
    /// Why the queue broke, if it did.
    public var fault: QueueFault? { queue.withLock { $0.fault } }
    /// Chains taken and not yet completed.
    public var inFlightCount: Int { queue.withLock { $0.inFlightCount } }

    /// Takes every available chain and hands it to `handle`, then interrupts the driver if it
    /// wants to hear about the chains completed.
    ///
    /// `handle` returns the number of bytes it wrote to complete the chain at once, or nil to
    /// keep it in flight and complete it later with ``complete(head:length:)``. It runs with the
    /// queue locked, so it must not call back into this queue. Malformed chains are completed
    /// with length zero, counted and logged; a broken queue sets DEVICE_NEEDS_RESET.
    public func processAvailable(_ handle: (DescriptorChain) -> UInt32?) {
        queue.withLock { queue in
            let memory = self.memory
            do throws(VirtqueueError) {
                repeat {
                    try queue.disableNotifications(in: memory)
                    while true {
                        let chain: DescriptorChain
                        do throws(VirtqueueError) {
                            guard let next = try queue.popChain(in: memory) else { break }
                            chain = next
                        } catch {
                            guard case .invalidChain = error else { throw error }
                            rejectedChains.add(1, ordering: .relaxed)
                            completedChains.add(1, ordering: .relaxed)
                            events.record("malformed-chain", "refused a malformed chain", metadata: ["queue": "\(index)", "error": "\(error)"])
                            continue
                        }
                        if let length = handle(chain) {
                            try queue.addUsed(head: chain.head, length: length, in: memory)
                            completedChains.add(1, ordering: .relaxed)
                        }
                    }
                } while try queue.enableNotifications(in: memory)
                if try queue.needsNotification(in: memory) { interrupt.signalUsedBuffers() }
            } catch {
                fail(error)
            }
        }
    }

    /// Completes a chain kept in flight by ``processAvailable(_:)``, and interrupts the driver
    /// if it wants to hear about it.
    public func complete(head: UInt16, length: UInt32) {
        complete([(head, length)])
    }

    /// Completes several chains with one interrupt at most.
    public func complete(_ completions: [(head: UInt16, length: UInt32)]) {
        queue.withLock { queue in
            do throws(VirtqueueError) {
                for (head, length) in completions {
                    try queue.addUsed(head: head, length: length, in: memory)
                    completedChains.add(1, ordering: .relaxed)
                }
                if try queue.needsNotification(in: memory) { interrupt.signalUsedBuffers() }
            } catch {
                fail(error)
            }
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
