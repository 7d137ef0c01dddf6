import Glibc
import GuestImages
import HVMachine

/// The command line, checked and with the files it names read.
struct VMOptions {
    struct Disk { var path: String; var readOnly: Bool; var rateLimit: RateLimit?; var engine: DiskEngine = .aio }
    struct Network { var tap: String?; var stream: String?; var mac: MACAddress?; var receiveRate: RateLimit?; var transmitRate: RateLimit? }

    var kernel: [UInt8]?
    var initrd: [UInt8]?
    var commandLine: String
    var memoryBytes: UInt64
    var cpus: Int
    var disks: [Disk]
    var networks: [Network]
    /// The vsock device's guest CID and socket path, if there is one.
    var vsock: (cid: UInt64, path: String)?
    var console: any ByteSink
    var rng: Bool
    /// Where a virtio console's output goes, if there is one.
    var virtioConsole: (any ByteSink)?
    var bootTimer: Bool
    var extract: Bool
    /// nil: PVH when the kernel has the note, else the 64-bit protocol.
    var bootProtocol: LinuxBootProtocol?
    /// Whether each thread runs under its seccomp allow list (MachineSystemCalls).
    var seccomp: Bool
    /// The signal that saves a snapshot, and the directory it goes to.
    var snapshotOnSignal: (signal: Int32, directory: String)?
    /// The snapshot to resume instead of booting.
    var restore: String?

    init(_ command: Options) throws(UsageError) {
        if let path = command.kernel {
            guard let bytes = try? HostFile.readAll(FilePath(path)) else { throw UsageError("cannot read the kernel \(path)") }
            kernel = bytes
        }
        if let path = command.initrd {
            guard let bytes = try? HostFile.readAll(FilePath(path)) else { throw UsageError("cannot read the initrd \(path)") }
            initrd = bytes
        }
        commandLine = command.cmdline
        guard (16...65536).contains(command.memory) else { throw UsageError("--memory \(command.memory): 16 to 65536 MiB") }
        memoryBytes = command.memory << 20
        guard (1...254).contains(command.cpus) else { throw UsageError("--cpus \(command.cpus): 1 to 254") }
        cpus = command.cpus
        disks = try command.disk.map { value throws(UsageError) in
            let parts = value.split(separator: ",").map(String.init)
            guard let path = parts.first, !path.isEmpty else { throw UsageError("--disk \(value): PATH[,readonly][,engine=ENGINE][,rate=LIMIT]") }
            var disk = Disk(path: path, readOnly: false, rateLimit: nil)
            for part in parts.dropFirst() {
                if part == "readonly" {
                    disk.readOnly = true
                } else if part.hasPrefix("engine=") {
                    guard let engine = DiskEngine(rawValue: String(part.dropFirst(7))) else {
                        throw UsageError("--disk \(value): engine is one of \(DiskEngine.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    disk.engine = engine
                } else if part.hasPrefix("rate=") {
                    do { disk.rateLimit = try RateLimit(parsing: String(part.dropFirst(5))) } catch {
                        throw UsageError("--disk \(value): \(error) (rate=bw=BYTES/MS[+BURST];ops=COUNT/MS[+BURST])")
                    }
                } else {
                    throw UsageError("--disk \(value): unknown part '\(part)' (PATH[,readonly][,engine=ENGINE][,rate=LIMIT])")
                }
            }
            return disk
        }
        if let value = command.vsock {
            let parts = value.split(separator: ",", maxSplits: 1).map(String.init)
            guard parts.count == 2, let cid = UInt64(parts[0]), cid >= 3, cid < 0xFFFF_FFFF, !parts[1].isEmpty else {
                throw UsageError("--vsock \(value): CID,PATH with CID from 3 to 4294967294")
            }
            vsock = (cid, parts[1])
        }
        networks = try command.net.map { value throws(UsageError) in
            let usage = "tap=NAME or stream=PATH, then [,mac=52:54:00:xx:xx:xx][,rx-rate=LIMIT][,tx-rate=LIMIT]"
            var network = Network(tap: nil, stream: nil, mac: nil, receiveRate: nil, transmitRate: nil)
            for part in value.split(separator: ",").map(String.init) {
                if part.hasPrefix("tap=") {
                    network.tap = String(part.dropFirst(4))
                } else if part.hasPrefix("stream=") {
                    network.stream = String(part.dropFirst(7))
                } else if part.hasPrefix("mac=") {
                    guard let mac = MACAddress(String(part.dropFirst(4))) else { throw UsageError("--net \(value): bad MAC address '\(part.dropFirst(4))'") }
                    network.mac = mac
                } else if part.hasPrefix("rx-rate=") || part.hasPrefix("tx-rate=") {
                    let limit: RateLimit
                    do { limit = try RateLimit(parsing: String(part.dropFirst(8))) } catch {
                        throw UsageError("--net \(value): \(error) (rate=bw=BYTES/MS[+BURST];ops=COUNT/MS[+BURST])")
                    }
                    if part.hasPrefix("rx") { network.receiveRate = limit } else { network.transmitRate = limit }
                } else {
                    throw UsageError("--net \(value): unknown part '\(part)' (\(usage))")
                }
            }
            guard (network.tap ?? "").isEmpty != (network.stream ?? "").isEmpty else {
                throw UsageError("--net \(value): one backend, a tap or a stream socket (\(usage))")
            }
            return network
        }
        console = try Self.sink(command.console, option: "--console")
        rng = command.rng
        virtioConsole = try command.virtioConsole.map { value throws(UsageError) in try Self.sink(value, option: "--virtio-console") }
        bootTimer = command.bootTimer
        extract = !command.noExtract
        seccomp = !command.noSeccomp
        if let value = command.snapshotOnSignal {
            let parts = value.split(separator: ",", maxSplits: 1).map(String.init)
            let signals: [String: Int32] = ["SIGUSR1": SIGUSR1, "USR1": SIGUSR1, "SIGUSR2": SIGUSR2, "USR2": SIGUSR2]
            guard parts.count == 2, let signal = signals[parts[0].uppercased()], !parts[1].isEmpty else {
                throw UsageError("--snapshot-on-signal \(value): SIGNAL,DIR with SIGNAL SIGUSR1 or SIGUSR2")
            }
            snapshotOnSignal = (signal, parts[1])
        }
        restore = command.restore
        if restore != nil, command.kernel != nil || command.initrd != nil {
            throw UsageError("--restore resumes a saved machine: --kernel and --initrd are not used with it")
        }
        switch command.boot {
        case "auto": bootProtocol = nil
        case "linux64": bootProtocol = .linux64
        case "pvh": bootProtocol = .pvh
        default: throw UsageError("--boot \(command.boot): auto, linux64 or pvh")
        }
    }

    /// stdio, or file:PATH (created or truncated).
    static func sink(_ value: String, option: String) throws(UsageError) -> any ByteSink {
        if value == "stdio" { return FileDescriptorSink(.standardOutput) }
        guard value.hasPrefix("file:") else { throw UsageError("\(option) \(value): stdio or file:PATH") }
        let path = String(value.dropFirst(5))
        do {
            return FileDescriptorSink(try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .truncate],
                                                              permissions: [.ownerReadWrite, .groupRead, .otherRead]))
        } catch { throw UsageError("\(option) \(value): \(error)") }
    }
}

/// How the VM ended, as minivmm reports it.
struct Outcome {
    var status: Int32
    var message: String
}

/// The machine as minivmm composes it on HVMachine: the legacy PC devices, virtio-mmio disks,
/// rng and console (each with its irqfd and ioeventfds), the boot timer, and the kernel or the
/// built-in guest with its hypercall services.
final class MicroVM {
    static let bootTimerPort: IOPort = 0x3F0

    let machine: Machine
    /// What was booted; nil for a restored machine.
    let loaded: LoadedGuest?
    /// The signal that saves a snapshot, and where.
    let snapshotOnSignal: (signal: Int32, directory: String)?
    /// One line on what is booted and how, for the user.
    let summary: String

    init(_ options: VMOptions) throws {
        var configuration = MachineConfiguration(memorySize: options.memoryBytes, vcpuCount: options.cpus)
        configuration.name = "minivmm"
        // A system call outside a thread's list kills the process: a compromised device model
        // cannot open files, start programs or reach the network.
        configuration.systemCallFilter = options.seccomp ? .killProcess : nil
        let snapshot = try options.restore.map { try MachineSnapshot(directory: $0) }
        machine = try snapshot.map { try Machine(restoring: $0, configuration) } ?? Machine(configuration)
        try machine.addLegacyDevices(console: options.console)
        if options.bootTimer {
            let started = HostClock.monotonicNanoseconds()
            let timer = BootTimer(start: started) { elapsed in
                print("minivmm: guest boot done after \(Int(elapsed / .milliseconds(1))) ms")
                fflush(nil)
            }
            try machine.add(pio: timer, port: Self.bootTimerPort, count: 1, name: "boot timer")
            // The page the init's `devmem` writes, announced as hvkit.boot_timer=.
            let page = try machine.add(mmio: timer, size: BootTimer.windowSize, name: "boot timer")
            try machine.announce("hvkit.boot_timer=0x\(String(page.start.rawValue, radix: 16))")
        }
        for disk in options.disks {
            try machine.addDisk(path: disk.path, readOnly: disk.readOnly, engine: disk.engine, rateLimit: disk.rateLimit)
        }
        for network in options.networks {
            if let tap = network.tap {
                try machine.addNetwork(tap: tap, mac: network.mac ?? .random(), receiveRateLimit: network.receiveRate,
                                       transmitRateLimit: network.transmitRate)
            } else if let stream = network.stream {
                try machine.addNetwork(stream: stream, mac: network.mac ?? .random(), receiveRateLimit: network.receiveRate,
                                       transmitRateLimit: network.transmitRate)
            }
        }
        if let vsock = options.vsock { try machine.addVsock(guestCID: vsock.cid, socketPath: vsock.path) }
        if options.rng { try machine.addEntropy() }
        if let output = options.virtioConsole { try machine.addConsole(output: output) }

        // The built-in guest's hypercall services; a restored one gets them again (a Linux
        // guest makes no hypercalls, and they are not in its way).
        let table = try HypercallTable.essentials(console: options.console)
        let kind: String
        if let snapshot {
            try machine.restore(hypercalls: options.kernel == nil ? table : nil)
            loaded = nil
            kind = "the machine saved in \(snapshot.directory)"
        } else if let kernel = options.kernel {
            let guest = try machine.load(.linux(kernelImage: kernel, initrdImage: options.initrd, commandLine: options.commandLine,
                                                bootProtocol: options.bootProtocol, extractOnHost: options.extract))
            loaded = guest
            kind = guest.kind
        } else {
            loaded = try machine.load(.linux(kernelImage: GuestImages.hello, commandLine: options.commandLine, hypercalls: table))
            kind = "the built-in guest"
        }
        snapshotOnSignal = options.snapshotOnSignal
        let devices = (options.disks.isEmpty ? [] : ["\(options.disks.count) disk(s)"])
            + machine.networks.map { "\($0.backendName) (guest MAC \(MACAddress(bytes: $0.mac).map(String.init(describing:)) ?? "?"))" }
            + (options.vsock.map { ["vsock CID \($0.cid) at \($0.path)"] } ?? [])
            + (options.rng ? ["rng"] : [])
            + (options.virtioConsole == nil ? [] : ["virtio console"])
        let how = loaded.map { "\(kind) by \($0.linuxPlan?.bootProtocol == .pvh ? "PVH" : "the 64-bit boot protocol") at \($0.entry)" }
            ?? "\(kind), restored"
        summary = ([how, "\(machine.configuration.vcpuCount) vCPU(s)", "\(machine.configuration.memorySize >> 20) MiB"]
            + devices).joined(separator: ", ")
    }

    /// Runs the guest until it ends or minivmm gets SIGINT or SIGTERM; the machine's shutdown
    /// finishes every request in flight and flushes the disks.
    func run(signals: SignalWatcher) -> Outcome {
        let report = Report.open()
        do {
            try machine.start()
            // From here this thread only waits, stops and shuts down; the signal thread made
            // next inherits its filter.
            try machine.restrictCallingThread(allowingSnapshots: snapshotOnSignal != nil)
        } catch {
            machine.stop()
            _ = machine.wait()
            return Outcome(status: 1, message: "the vCPUs could not start: \(error)")
        }
        let snapshotOnSignal = self.snapshotOnSignal
        signals.watch { [machine] signal in
            guard let snapshotOnSignal, signal == snapshotOnSignal.signal else {
                machine.stop()
                return true
            }
            do {
                print("minivmm: \(try machine.snapshot(to: snapshotOnSignal.directory))")
            } catch {
                print("minivmm: the snapshot failed: \(error)")
            }
            fflush(nil)
            return false
        }
        let result = machine.wait()
        report?.write(machine: machine)
        let lost = result.shutdown.isClean ? "" : " (\(result.shutdown))"
        switch result.stopReason {
        case let .guestRequested(request, _):
            // processExitCode: a status outside 0 to 255 fails instead of being cut to its low byte.
            let what: String
            switch request {
            case let .exit(status): what = "the guest exited with status \(status)"
            case let .abort(message): what = "the guest aborted: \(message)"
            }
            return Outcome(status: request.processExitCode, message: what + lost)
        case .resetRequested, .systemEvent(.reset, _): return Outcome(status: 0, message: "the guest asked for a reset; stopped\(lost)")
        case .systemEvent(.shutdown, _): return Outcome(status: 0, message: "the guest powered off\(lost)")
        case let .shutdown(vcpu): return Outcome(status: 2, message: "vCPU \(vcpu) triple-faulted; stopped\(lost)")
        case let .internalError(vcpu, suberror, data):
            return Outcome(status: 1, message: "vCPU \(vcpu): " + InternalErrorReport(suberror: suberror, data: data).description + lost)
        case .stopRequested where signals.fired: return Outcome(status: 130, message: "stopped by a signal; disks flushed\(lost)")
        default: return Outcome(status: 1, message: "stopped: \(result.stopReason)\(lost)")
        }
    }
}
