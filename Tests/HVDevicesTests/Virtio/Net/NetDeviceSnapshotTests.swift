import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

/// A virtio-net device saved with receive buffers held: they go back to the ring, and a
/// device restored on another backend fills them and sends what the guest queues.
@Suite("virtio-net snapshots")
struct NetDeviceSnapshotTests {
    @Test func heldReceiveBuffersAreGivenBackAndFilledAfterRestore() throws {
        let rig = try NetRig()
        let heads = try rig.postReceiveBuffers(4)
        #expect(waitUntil { rig.device.isWatchingBackend }, "the device did not take the buffers")
        let bytes = try savedState(of: rig.transport, on: rig.loop)
        #expect(!bytes.isEmpty)
        #expect(!rig.device.isWatchingBackend, "the device still reads with no buffer held")

        // The restored device, on a new link.
        let (near, far) = try PairedNetBackend.makePair()
        let restored = try NetDevice(backend: near, mac: guestMAC, mtu: 1500, queueSize: 64, eventLoop: rig.loop)
        let transport = VirtioMMIOTransport(device: restored, memory: rig.memory, interruptLine: CountingInterruptLine())
        var decoder = SnapshotDecoder(bytes, context: "net")
        try transport.restoreState(from: &decoder, version: transport.snapshotVersion)
        #expect(waitUntil { restored.isWatchingBackend }, "the restored device did not take the buffers again")

        let frame = testFrame(length: 200, seed: 9)
        try rig.peerSend(frame, through: far)
        let used = try rig.waitForReceived(1)
        #expect(used.first.map { UInt16($0.id) } == heads.first)
        let received = try rig.contents(ofReceiveChain: try #require(used.first).id, length: try #require(used.first).length)
        #expect(Array(received.dropFirst(NetHeader.size)) == frame)

        // Transmit through the restored device reaches the new link's other end.
        let outgoing = testFrame(length: 100, seed: 3)
        try rig.memory.write(NetHeader().bytes + outgoing, to: GuestAddress(0x8_0000))
        try rig.transmitQueue.addChain([(GuestAddress(0x8_0000), UInt32(NetHeader.size + outgoing.count), false)])
        MMIODriver(transport: transport).notify(UInt32(NetDevice.transmitQueue))
        let sent = try #require(try rig.peerReceive(from: far))
        #expect(Array(sent.dropFirst(NetHeader.size)) == outgoing)
    }
}
