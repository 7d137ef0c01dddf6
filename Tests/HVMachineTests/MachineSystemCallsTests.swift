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

    /// vsock's host sockets are Unix-domain ones: an IP socket stays out of reach.
    @Test(arguments: ["vcpu", "eventLoop", "waiter"])
    func vsockGetsUnixSocketsOnly(thread: String) {
        let filter = switch thread {
        case "vcpu": MachineSystemCalls.vcpu()
        case "eventLoop": MachineSystemCalls.eventLoop()
        default: MachineSystemCalls.waiter()
        }
        for call: SystemCall in [.connect, .accept4, .shutdown] { #expect(filter.allows(call), "\(call.name)") }
        #expect(filter.allows(.socket, arguments: [1, 0x80801, 0]) && filter.allows(.socketpair, arguments: [1, 0x80001, 0]))
        #expect(!filter.allows(.socket, arguments: [2, 1, 0]) && !filter.allows(.socket, arguments: [16, 3, 0]))
        #expect(!filter.allows(.socketpair, arguments: [2, 1, 0]))
        #expect(filter.allows(.unlink) == (thread == "waiter"))
    }
}
