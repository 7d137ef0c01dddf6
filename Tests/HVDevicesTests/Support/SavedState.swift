import HVCore
import HVDevices

/// What a machine does to save a device, on the event loop that serves it: prepare (requests
/// finished, held buffers given back), then save. The saved bytes, or what refused them; empty
/// if the loop has stopped.
func savedState(of device: any SnapshotStateful, on loop: EventLoop) throws -> [UInt8] {
    try loop.perform { () -> Result<[UInt8], SnapshotError> in
        do throws(SnapshotError) {
            try device.prepareSnapshot()
            var encoder = SnapshotEncoder()
            device.saveState(to: &encoder)
            return .success(encoder.bytes)
        } catch {
            return .failure(error)
        }
    }.map { try $0.get() } ?? []
}
