import HVCore
@testable import HVDevices
import Synchronization

/// A sink that keeps everything written to it.
final class CollectingSink: ByteSink {
    private let collected = Mutex<[UInt8]>([])
    var bytes: [UInt8] { collected.withLock { $0 } }
    var text: String { String(decoding: bytes, as: UTF8.self) }
    func write(_ bytes: UnsafeRawBufferPointer) { collected.withLock { $0 += bytes } }
}
