// hv-tender: runs a unikernel-style guest (an ELF64 executable that calls the host through
// HVKit's hypercalls) with the services it asks for, like Solo5's hvt tender.
//
//   hv-tender                         the built-in Embedded Swift guest, with a scratch disk
//   hv-tender guest.elf --disk d.img  your guest, with a disk
//
// It exits with the guest's exit status (255 when the guest aborts).
import ArgumentParser
import Glibc
import GuestImages
import HVMachine

struct Tender: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hv-tender",
        abstract: "Run a unikernel-style guest on HVKit's hypercall ABI.")

    @Argument(help: "The guest: an x86-64 ELF executable. Default: the built-in Embedded Swift guest.")
    var guest: String?

    @Option(help: "Guest RAM in MiB.")
    var memory: UInt64 = 16

    @Option(help: "A file or block device to serve as the guest's disk. Default: a 1 MiB scratch file, deleted at exit.")
    var disk: String?

    @Flag(help: "Serve the disk read-only.")
    var readOnly = false

    @Flag(help: "No disk at all.")
    var noDisk = false

    @Flag(help: "Give the guest a network whose other end sends every frame straight back.")
    var netEcho = false

    @Option(help: "A value passed to the guest in RDI (its hv_main argument).")
    var argument: UInt64 = 0

    @Flag(help: "Print per-hypercall counts and latencies when the guest ends.")
    var stats = false

    func run() throws {
        guard memory >= 2, memory <= 64 * 1024 else { throw ValidationError("--memory must be 2 to 65536 MiB") }
        var services: [any ParavirtService] = [
            ConsoleService(output: FileDescriptorSink(.standardOutput)), ClockService(), RandomService(), LifecycleService(),
        ]
        var pollSources: [PollService.Source] = []
        if !noDisk {
            let service = try disk.map { try BlockService(path: FilePath($0), readOnly: readOnly) } ?? scratchDisk()
            services.append(service)
        }
        var echo: FrameEcho?
        if netEcho {
            let network = try InProcessNetwork()
            let net = NetService(backend: network.guestSide)
            services.append(net)
            pollSources.append(net.pollSource)
            echo = try FrameEcho(port: network.hostSide)
        }
        services.append(try PollService(sources: pollSources))

        // A unikernel: RAM and its hypercalls, no interrupt controllers (its HLT exits, as on
        // Solo5's hvt).
        var configuration = MachineConfiguration(memorySize: memory << 20)
        configuration.interruptControllers = false
        let machine = try Machine(configuration)
        var table = HypercallTable()
        for service in services { try table.install(service) }
        try machine.load(guest.map { .unikernel(path: $0, hypercalls: table, argument: argument) }
            ?? .unikernel(image: GuestImages.hello, hypercalls: table, argument: argument))
        try machine.start()
        let reason = machine.wait().stopReason
        echo?.stop()
        if stats {
            for statistics in machine.hypercallDispatcher?.statistics() ?? [] where statistics.calls > 0 { print("  \(statistics)") }
        }
        switch reason {
        case let .guestRequested(request, _):
            // A status that does not fit an exit status (256 would read as 0) becomes a failure.
            if case let .abort(message) = request { print("hv-tender: guest aborted: \(message)") }
            if case let .exit(status) = request, request.processExitCode != status {
                print("hv-tender: guest exited with status \(status), which no process exit status can carry")
            }
            throw ExitCode(request.processExitCode)
        default:
            print("hv-tender: guest stopped without exiting: \(reason)")
            throw ExitCode(254)
        }
    }

    /// A 1 MiB file in /tmp, unlinked at once so nothing is left behind.
    func scratchDisk() throws -> BlockService {
        var template = Array("/tmp/hv-tender-disk-XXXXXX".utf8CString)
        let descriptor = mkstemp(&template)
        guard descriptor >= 0 else { throw Errno(rawValue: errno) }
        unlink(template)
        guard ftruncate(descriptor, 1 << 20) == 0 else { throw Errno(rawValue: errno) }
        return try BlockService(fileDescriptor: FileDescriptor(rawValue: descriptor), readOnly: readOnly, ownsDescriptor: true)
    }
}

Tender.main()
