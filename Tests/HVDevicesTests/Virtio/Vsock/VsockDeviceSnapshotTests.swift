import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import HVTestSupport
import SystemPackage
import Testing

/// A vsock device saved and restored: the device that goes on keeps its connections; the
/// restored one tells the guest its transport was reset, and serves new connections.
@Suite("virtio-vsock snapshots")
struct VsockDeviceSnapshotTests {
    @Test func theRunningDeviceKeepsItsConnectionAndTheRestoredOneResetsTheTransport() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<FileDescriptor?>(nil)
        rig.device.listen(port: 5000) { socket in accepted.withLock { $0 = socket } }
        #expect(try rig.guestConnects(from: 2000, to: 5000)?.operation == .response)
        let socket = try #require(waitUntil { accepted.withLock { $0 } != nil } ? accepted.withLock { $0 } : nil)
        defer { close(socket.rawValue) }

        // The save: every buffer the device held is back in its queue, nothing in flight.
        let transport = rig.driver.transport
        let bytes = try savedState(of: transport, on: rig.loop)
        #expect(!bytes.isEmpty)
        _ = rig.loop.perform { transport.snapshotFinished() }

        // The running device goes on with its connection.
        let message = Array("still here".utf8)
        #expect(write(socket.rawValue, message, message.count) == message.count)
        #expect(try rig.guestReceives(message.count, guestPort: 2000, hostPort: 5000) == message)

        // The restored device, on the rings as they were saved: TRANSPORT_RESET, and a new
        // connection works.
        let restoredLoop = try EventLoop(name: "vsock-restored")
        defer { restoredLoop.shutdown() }
        let restored = try VsockDevice(guestCID: VsockRig.cid, socketPath: nil, eventLoop: restoredLoop, queueSize: 64)
        defer { restored.close() }
        let restoredTransport = VirtioMMIOTransport(device: restored, memory: rig.memory, interruptLine: CountingInterruptLine())
        rig.device.close()
        var decoder = SnapshotDecoder(bytes, context: "vsock")
        try restoredTransport.restoreState(from: &decoder, version: restoredTransport.snapshotVersion)
        #expect(restoredTransport.isActive)
        let driver = VsockDriver(continuing: rig.driver, device: restored, transport: restoredTransport)
        #expect(waitUntil { ((try? driver.events()) ?? []).contains(0) }, "no TRANSPORT_RESET event")
        restored.listen(port: 5001) { close($0.rawValue) }
        try driver.send(driver.header(.request, from: 2001, to: 5001, bufferAllocation: 64 << 10))
        let answers = try driver.receive { $0.contains { $0.header.destinationPort == 2001 } }
        #expect(answers.contains { $0.header.destinationPort == 2001 && $0.header.operation == .response })
    }
}
