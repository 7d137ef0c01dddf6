import HVCore
import HVDevices
import HVKVM

/// How a machine ended: why its vCPUs stopped, and what the orderly shutdown after it did.
public struct MachineResult: Sendable, CustomStringConvertible {
    /// Why the vCPUs stopped (the first vCPU's own reason).
    public let stopReason: StopReason
    /// What happened after: devices quiesced, disks flushed, anything that failed.
    public let shutdown: ShutdownReport

    /// The stop reason, then what the shutdown did.
    public var description: String {
        "\(stopReason); \(shutdown)"
    }
}

/// What `wait()` did after the vCPUs stopped, in this order: every virtio device
/// reset (a disk first finishes every request in flight, so nothing writes guest memory or the
/// file afterwards), every writable disk flushed to stable storage, the machine's own event
/// loop stopped (a shared one is left running).
public struct ShutdownReport: Sendable, CustomStringConvertible {
    /// Whether the machine ran at all.
    public var ran: Bool
    /// The virtio devices quiesced.
    public var devicesQuiesced: Int = 0
    /// The disks flushed (by name).
    public var disksFlushed: [String] = []
    /// What failed; empty when nothing was lost.
    public var failures: [MachineError] = []

    /// Whether everything the guest wrote reached its disks.
    public var isClean: Bool { failures.isEmpty }

    /// What the shutdown did, in words.
    public var description: String {
        guard ran else { return "the machine never ran" }
        var parts = ["\(devicesQuiesced) device(s) quiesced", "\(disksFlushed.count) disk(s) flushed"]
        if !failures.isEmpty { parts.append("failures: " + failures.map(\.description).joined(separator: "; ")) }
        return parts.joined(separator: ", ")
    }
}

extension Machine {
    /// The shutdown after the vCPUs stopped; the first caller does it, later ones get its result.
    func finish(_ reason: StopReason) -> MachineResult {
        shutdownResult.withLock { done in
            if let done { return done }
            let slots = state.withLock { state in
                state.phase = .stopped
                return state.virtio
            }
            var report = ShutdownReport(ran: true)
            for slot in slots {
                // No kick may reach a device being reset.
                let notifiers = slot.notifiers.withLock { notifiers in
                    defer { notifiers = [] }
                    return notifiers
                }
                unwire(notifiers, from: slot.transport)
                slot.device.reset()
                report.devicesQuiesced += 1
            }
            // Host programs see their vsock connections close, and the socket file goes.
            state.withLock { $0.vsock }?.close()
            // The vCPUs and devices are done: their last counts.
            metrics.publish(self)
            for disk in disks where !disk.image.isReadOnly {
                do throws(Errno) {
                    try disk.flush()
                    report.disksFlushed.append(disk.name)
                } catch {
                    report.failures.append(MachineError(.shutdown, device: disk.name, reason: "flushing \(disk.image.path): \(error)"))
                }
            }
            if ownsEventLoop { events.shutdown() }
            let result = MachineResult(stopReason: reason, shutdown: report)
            state.withLock { $0.result = result }
            done = result
            if report.isClean {
                logger.debug("machine stopped: \(result)")
            } else {
                logger.error("machine stopped, shutdown incomplete: \(result)")
            }
            return result
        }
    }
}
