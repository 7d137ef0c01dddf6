import HVCore
import HVMachine
import Testing

@Suite("MachineSystemCalls")
struct MachineSystemCallsTests {
    /// The network devices' calls are allowed where devices are served, and only the two
    /// ioctls they need: a device model cannot attach its tap elsewhere (TUNSETIFF) or open sockets.
    @Test(arguments: ["vcpu", "eventLoop"])
    func networkDevicesGetTheirCallsAndNoMore(thread: String) {
        let filter = thread == "vcpu" ? MachineSystemCalls.vcpu() : MachineSystemCalls.eventLoop()
        for call: SystemCall in [.sendmsg, .recvfrom, .epollCtl, .readv, .writev] {
            #expect(filter.allows(call), "\(call.name)")
        }
        #expect(filter.allows(.ioctl, arguments: [9, 0x4004_54D0]), "TUNSETOFFLOAD")
        #expect(filter.allows(.ioctl, arguments: [9, 0x541B]), "FIONREAD")
        #expect(!filter.allows(.ioctl, arguments: [9, 0x4004_54CA]), "TUNSETIFF")
        #expect(!filter.allows(.socket) && !filter.allows(.openat))
    }
}
