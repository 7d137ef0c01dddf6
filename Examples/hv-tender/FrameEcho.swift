import HVCore
import HVParavirt

/// The far end of `--net-echo`: an event loop that sends every frame it receives straight
/// back, with source and destination MAC addresses swapped.
final class FrameEcho {
    private let loop: EventLoop

    init(port: InProcessPort) throws {
        loop = try EventLoop(name: "net-echo")
        _ = try loop.register(port.readiness) {
            while var frame = port.receive() {
                if frame.count >= 12 {
                    let destination = Array(frame[0..<6])
                    frame.replaceSubrange(0..<6, with: frame[6..<12])
                    frame.replaceSubrange(6..<12, with: destination)
                }
                _ = port.send(frame)
            }
        }
    }

    func stop() { loop.shutdown() }
}
