import HVCore

/// A virtio-mmio transport saves its registers, its queues' layouts and ring positions, its
/// interrupt state, and its device's own state; a restore puts them back and, if the driver
/// had started the device, starts it again with the same queues, so the guest goes on without
/// renegotiating. Only devices that save their own state (`SnapshotStateful`) can be saved.
extension VirtioMMIOTransport: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// The device behind the transport, when it can be saved.
    var statefulDevice: (any SnapshotStateful)? { device.snapshotState }

    /// Lets the device finish or give back what it holds, then checks that no queue has a
    /// chain in flight: the rings in guest memory then say everything.
    public func prepareSnapshot() throws(SnapshotError) {
        guard let stateful = statefulDevice else {
            throw .incompatible("the virtio \(device.deviceType) device does not save its state")
        }
        guard isActive else { return }
        try stateful.prepareSnapshot()
        let busy = queueHistory.withLock { $0.active }.filter { $0.inFlightCount > 0 }
        if let queue = busy.first {
            throw .incompatible("the virtio \(device.deviceType) device still holds \(queue.inFlightCount) requests of queue \(queue.index)")
        }
    }

    /// Takes back, after the snapshot, what ``prepareSnapshot()`` gave up.
    public func snapshotFinished() {
        statefulDevice?.snapshotFinished()
    }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {
        let registers = state.withLock { $0 }
        let live = Dictionary(queueHistory.withLock { $0.active }.map { ($0.index, $0.savedState) }, uniquingKeysWith: { first, _ in first })
        encoder.append(registers.status.rawValue)
        encoder.append(registers.deviceFeaturesSelect)
        encoder.append(registers.driverFeaturesSelect)
        encoder.append(registers.driverFeatures.rawValue)
        encoder.append(registers.queueSelect)
        encoder.append(isActive)
        encoder.append(UInt64(registers.queues.count))
        for (index, queue) in registers.queues.enumerated() {
            encoder.append(isActive ? live[index] ?? queue.savedState : queue.savedState)
        }
        encoder.append(interrupt.status.rawValue)
        encoder.append(interrupt.configurationGeneration)
        encoder.append(interrupt.needsReset)
        var deviceState = SnapshotEncoder()
        statefulDevice?.saveState(to: &deviceState)
        encoder.append(statefulDevice?.snapshotVersion ?? 0)
        encoder.append(bytes: deviceState.bytes)
    }

    /// Puts the saved registers and queues back into this transport, which must be new (the
    /// guest has not touched it), and restarts the device if it was running. The layout of
    /// every ready queue is checked against guest memory again.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        guard let stateful = statefulDevice else {
            throw .incompatible("the virtio \(device.deviceType) device does not restore its state")
        }
        let status = DeviceStatus(rawValue: try decoder.read(UInt8.self))
        var restored = MMIOTransportState(queueMaxSizes: device.queueMaxSizes)
        restored.status = status.subtracting(.needsReset)
        restored.deviceFeaturesSelect = try decoder.read()
        restored.driverFeaturesSelect = try decoder.read()
        restored.driverFeatures = VirtioFeatures(rawValue: try decoder.read())
        restored.queueSelect = try decoder.read()
        let wasActive = try decoder.read(Bool.self)
        let count = try decoder.readCount(elementSize: 1, limit: 1024)
        guard count == restored.queues.count else {
            throw .incompatible("the saved virtio \(device.deviceType) device had \(count) queues; this one has \(restored.queues.count)")
        }
        for index in 0..<count {
            let saved = try decoder.read(SplitQueueState.self)
            do throws(QueueFault) {
                try restored.queues[index].restore(saved, in: memory)
            } catch {
                throw .malformed(what: decoder.context, reason: "queue \(index): \(error)")
            }
        }
        let pending = VirtioInterrupt.Status(rawValue: try decoder.read())
        let generation = try decoder.read(UInt32.self)
        let needsReset = try decoder.read(Bool.self)
        let deviceVersion = try decoder.read(UInt16.self)
        let deviceBytes = try decoder.readBytes(limit: 1 << 20)
        try decoder.expectEnd()
        guard !wasActive || restored.status.contains(.driverOK) else {
            throw .malformed(what: decoder.context, reason: "an active device without DRIVER_OK (status \(status))")
        }
        guard restored.driverFeatures.isSubset(of: offeredFeatures) else {
            throw .incompatible("the saved driver features \(restored.driverFeatures) are not all offered by this device (\(offeredFeatures))")
        }
        guard deviceVersion <= stateful.snapshotVersion else {
            throw .unsupportedSectionVersion(section: "virtio \(device.deviceType)", version: deviceVersion, newest: stateful.snapshotVersion)
        }

        var restartError: SnapshotError?
        lifecycle.withLock { _ in
            state.withLock { $0 = restored }
            interrupt.restore(status: pending, generation: generation, needsReset: needsReset)
            guard wasActive else { return }
            do throws(VirtioDeviceError) {
                try start(activation(queues: restored.queues, features: restored.driverFeatures))
            } catch {
                restartError = .incompatible("the virtio \(device.deviceType) device did not start again: \(error)")
            }
        }
        if let restartError { throw restartError }
        var deviceDecoder = SnapshotDecoder(deviceBytes, context: "virtio \(device.deviceType) device")
        try stateful.restoreState(from: &deviceDecoder, version: deviceVersion)
        kickReadyQueues()
    }

    /// Serves every ready queue once: a kick the guest gave just before the snapshot, still
    /// waiting in an ioeventfd of the saved machine, is not lost.
    func kickReadyQueues() {
        guard isActive else { return }
        for queue in queueHistory.withLock({ $0.active }) { notifyDevice(queue: queue.index) }
    }
}
