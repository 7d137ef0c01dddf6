/// The register state a virtio-mmio transport keeps between accesses.
struct MMIOTransportState {
    var status: DeviceStatus = []
    var deviceFeaturesSelect: UInt32 = 0
    var driverFeaturesSelect: UInt32 = 0
    var driverFeatures: VirtioFeatures = []
    var queueSelect: UInt32 = 0
    var queues: [SplitQueue]

    init(queueMaxSizes: [UInt16]) {
        queues = queueMaxSizes.map { SplitQueue(maxSize: $0) }
    }

    var selectedQueueIndex: Int? {
        let index = Int(queueSelect)
        return queues.indices.contains(index) ? index : nil
    }

    /// Queue registers may be written only between FEATURES_OK and DRIVER_OK, and only while
    /// the selected queue is not ready (virtio 1.2, 4.2.3.2).
    var selectedQueueIsConfigurable: Bool {
        guard let index = selectedQueueIndex else { return false }
        return status.contains(.featuresOK) && !status.contains(.driverOK) && !queues[index].isReady
    }

    mutating func reset() {
        self = MMIOTransportState(queueMaxSizes: queues.map(\.maxSize))
    }
}
