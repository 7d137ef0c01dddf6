import HVDevices
import HVKVM
import HVParavirt
import Metrics

/// Publishes a machine's statistics through swift-metrics (``Machine/publishMetrics()``).
final class MachineMetrics: Sendable {
    private let factory: (any MetricsFactory)?
    private let vm: String
    /// Each counter and the value it last published, by label and dimensions.
    private let published = Locked<[String: (counter: Counter, value: UInt64)]>([:])

    init(vm: String, factory: (any MetricsFactory)?) {
        self.vm = vm
        self.factory = factory
    }

    /// Brings `label` with `dimensions` up to `value` (a running total).
    private func report(_ label: String, _ dimensions: [(String, String)], _ value: UInt64) {
        let all = [("vm", vm)] + dimensions
        let key = label + all.map { "|\($0.0)=\($0.1)" }.joined()
        published.withLock { published in
            let entry = published[key] ?? (counter: makeCounter(label, all), value: 0)
            if value > entry.value { entry.counter.increment(by: value - entry.value) }
            published[key] = (entry.counter, max(value, entry.value))
        }
    }

    private func makeCounter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        if let factory { return Counter(label: label, dimensions: dimensions, factory: factory) }
        return Counter(label: label, dimensions: dimensions)
    }

    /// Reads every statistic of `machine` and publishes what changed.
    func publish(_ machine: Machine) {
        for (id, statistics) in machine.statistics() {
            let vcpu = String(id)
            for (kind, value) in [("pio", statistics.portIOExits), ("mmio", statistics.mmioExits), ("trap", statistics.trapExits),
                                  ("interrupted", statistics.interruptions), ("other", statistics.otherExits)] {
                report("hvkit_vcpu_exits_total", [("vcpu", vcpu), ("kind", kind)], value)
            }
            report("hvkit_vcpu_slices_total", [("vcpu", vcpu)], statistics.slices)
            report("hvkit_vcpu_parks_total", [("vcpu", vcpu)], statistics.parks)
        }
        for slot in machine.virtioDevices {
            let device = [("device", slot.name)]
            let queues = slot.transport.queueCounts
            report("hvkit_virtio_notifications_total", device, slot.transport.notificationCount)
            report("hvkit_virtio_requests_total", device, queues.completedChains)
            report("hvkit_virtio_rejected_requests_total", device, queues.rejectedChains)
            report("hvkit_virtio_queue_breaks_total", device, queues.brokenQueues)
            report("hvkit_virtio_refused_accesses_total", device, slot.transport.refusedAccessCount)
            // Guest-caused events (malformed chains, refused accesses and requests), by kind.
            var events = slot.transport.guestEvents.counts
            let deviceEvents = (slot.device as? BlockDevice)?.guestEvents ?? (slot.device as? EntropyDevice)?.guestEvents
                ?? (slot.device as? ConsoleDevice)?.guestEvents
            events.merge(deviceEvents?.counts ?? [:], uniquingKeysWith: +)
            for (kind, count) in events { report("hvkit_guest_events_total", device + [("kind", kind)], count) }
            if let block = slot.device as? BlockDevice {
                let counts = block.counts
                report("hvkit_block_bytes_total", device + [("direction", "read")], counts.bytesRead)
                report("hvkit_block_bytes_total", device + [("direction", "write")], counts.bytesWritten)
                report("hvkit_block_errors_total", device, counts.failedRequests)
            }
        }
        for call in machine.hypercallDispatcher?.statistics() ?? [] where call.calls > 0 {
            report("hvkit_hypercalls_total", [("call", call.name)], call.calls)
            report("hvkit_hypercall_errors_total", [("call", call.name)], call.errors)
        }
    }
}
