import HVCore
import Logging

/// virtio-net (virtio 1.2, section 5.1): a network interface for the guest, one receive and one
/// transmit queue served by a ``NetBackend``.
///
/// Offered: VERSION_1, MAC, MTU, STATUS (link up), MRG_RXBUF, EVENT_IDX and indirect
/// descriptors, and the checksum and segmentation offloads (CSUM, GUEST_CSUM, HOST_ and
/// GUEST_TSO4/TSO6/ECN, UFO) that the backend supports; after negotiation the backend is told
/// which ones the driver accepted (a tap's TUNSETOFFLOAD). Frames move between the backend and
/// guest memory with one `readv` or `writev` each and no copy in between (see the receive and
/// transmit paths). Hostile input is refused without a completion that could pass for a
/// delivered frame: a malformed receive buffer breaks the queue (DEVICE_NEEDS_RESET), a
/// malformed transmit frame is dropped and counted, and one notification or readable backend
/// does at most a budget of work.
///
/// The backend is served by `eventLoop`: it is read there as soon as a frame waits and the
/// guest has posted buffers. Queue notifications may come on any thread.
public final class NetDevice: VirtioDevice {
    /// The receive queue's index.
    public static let receiveQueue = 0
    /// The transmit queue's index.
    public static let transmitQueue = 1

    /// Where frames go and come from.
    public let backend: any NetBackend
    /// The receive and transmit queues' maximum sizes.
    public let queueMaxSizes: [UInt16]
    /// What the device offers (see the type's description).
    public let offeredFeatures: VirtioFeatures
    /// The guest's MAC address, MTU and link status.
    public let netConfiguration: NetConfiguration
    /// Guest-caused events (malformed frames) and backend failures, logged rate-limited and counted.
    public let guestEvents: GuestEventLog
    private let counters = NetCounters()
    private let receiver: NetReceiver
    private let transmitter: NetTransmitter

    /// - Parameters:
    ///   - backend: where frames go and come from.
    ///   - mac: the guest's MAC address (6 bytes).
    ///   - mtu: the largest payload above the Ethernet header the guest should send.
    ///   - queueSize: each queue's maximum size.
    ///   - eventLoop: where the backend is read.
    ///   - notificationBudget: how many chains a notification of the transmit queue takes, and
    ///     how many frames one readable backend delivers, before the rest waits its turn.
    ///   - receiveRateLimit: limits the frames handed to the guest (one operation each, and
    ///     their bytes): a frame without tokens waits in the guest's buffers, unannounced, and
    ///     nothing more is read meanwhile, so the backend holds the rest.
    ///   - transmitRateLimit: limits the frames the guest sends: a frame without tokens waits,
    ///     in order, and is never dropped.
    ///   - logger: where malformed frames and backend failures are logged.
    /// - Throws: when the backend cannot be registered with the event loop.
    public init(backend: any NetBackend, mac: [UInt8], mtu: UInt16 = 1500, queueSize: UInt16 = 256,
                eventLoop: EventLoop, notificationBudget: NotificationBudget = .default,
                receiveRateLimit: RateLimiter? = nil, transmitRateLimit: RateLimiter? = nil,
                logger: Logger = Logger(label: "hvkit.virtio-net")) throws(NetBackendError) {
        self.backend = backend
        queueMaxSizes = [queueSize, queueSize]
        netConfiguration = NetConfiguration(mac: mac, mtu: mtu)
        guestEvents = GuestEventLog(logger: logger)
        var features = VirtioFeatures.transportDefaults.union([.netMAC, .netMTU, .netStatus, .netMergeableReceiveBuffers])
        let offloads = backend.supportedOffloads
        if offloads.contains(.checksum) {
            features.formUnion([.netChecksum, .netGuestChecksum])
            if offloads.contains(.tso4) { features.formUnion([.netHostTSO4, .netGuestTSO4]) }
            if offloads.contains(.tso6) { features.formUnion([.netHostTSO6, .netGuestTSO6]) }
            if offloads.contains(.tsoECN) { features.formUnion([.netHostECN, .netGuestECN]) }
            if offloads.contains(.ufo) { features.formUnion([.netHostUFO, .netGuestUFO]) }
        }
        offeredFeatures = features
        receiver = try NetReceiver(backend: backend, eventLoop: eventLoop, counters: counters, events: guestEvents,
                                   budget: notificationBudget, rateLimiter: receiveRateLimit)
        transmitter = NetTransmitter(backend: backend, counters: counters, events: guestEvents, budget: notificationBudget,
                                     rateLimiter: transmitRateLimit, timers: eventLoop)
    }

    /// ``VirtioDeviceType/network`` (1).
    public var deviceType: VirtioDeviceType { .network }
    /// struct virtio_net_config: the MAC, link up, one queue pair, the MTU.
    public var configuration: [UInt8] { netConfiguration.bytes }
    /// Frames moved and dropped so far.
    public var counts: NetDeviceCounts { counters.snapshot }

    /// Whether the event loop reads the backend now: only while the guest has posted buffers
    /// for a frame.
    var isWatchingBackend: Bool { receiver.isWatching }

    /// Tells the backend which offloads the driver accepted and starts both queues.
    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let receive = try activation.queue(Self.receiveQueue)
        let transmit = try activation.queue(Self.transmitQueue)
        let features = activation.features
        let offloads = TapOffloads(negotiated: features).intersection(backend.supportedOffloads)
        do {
            try backend.enableOffloads(offloads)
        } catch {
            throw .backend("\(error)")
        }
        let mtu = netConfiguration.mtu
        let receivesSegments = !offloads.isDisjoint(with: [.tso4, .tso6, .ufo])
        let sendsSegments = !features.isDisjoint(with: [.netHostTSO4, .netHostTSO6, .netHostUFO])
        transmitter.start(transmit, features: features, frameLimit: netFrameLimit(mtu: mtu, segmentationOffload: sendsSegments))
        receiver.start(receive, mergeable: features.contains(.netMergeableReceiveBuffers),
                       frameLimit: netFrameLimit(mtu: mtu, segmentationOffload: receivesSegments))
    }

    /// The driver posted receive buffers (queue 0) or frames to send (queue 1).
    public func queueNotified(_ index: Int) {
        switch index {
        case Self.receiveQueue: receiver.deliverFrames()
        case Self.transmitQueue: transmitter.transmitQueued()
        default: break
        }
    }

    /// Stops both paths; held receive buffers go back with the driver's reset.
    public func reset() {
        receiver.stop()
        transmitter.stop()
        try? backend.enableOffloads([])
    }
}

/// A network device saves nothing of its own (its MAC, MTU and backend come from how it is
/// made again): before the save, the receive chains it holds and the transmit chains the
/// rate limiter holds back go back to their queues, and frames waiting in the guest's buffers
/// are announced, so the rings say everything. The backend is another host resource: a
/// restored device uses the one it is made with.
extension NetDevice: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Brings the device to rest for a snapshot: nothing in flight, nothing held.
    public func prepareSnapshot() throws(SnapshotError) {
        guard receiver.giveBackForSnapshot(), transmitter.giveBackForSnapshot() else {
            throw .incompatible("virtio-net's buffers could not be given back to their queues")
        }
    }

    /// Takes back, after the snapshot, what ``prepareSnapshot()`` gave up.
    public func snapshotFinished() {
        receiver.deliverFrames()
        transmitter.transmitQueued()
    }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {}

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        try decoder.expectEnd()
    }
}

