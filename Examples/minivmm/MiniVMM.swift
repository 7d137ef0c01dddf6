// minivmm: a minimal microVM monitor composed from HVKit's modules. It boots a Linux kernel
// (bzImage, extracted on the host, or an ELF vmlinux) or any ELF that follows the Linux 64-bit
// boot protocol or carries a PVH note, with a 16550 serial console, virtio-mmio block, rng and console devices,
// the i8042 (reset) and the CMOS clock; with no kernel it runs HVKit's built-in Embedded Swift guest. The machine
// itself is HVMachine's: minivmm keeps only its command line, configuration file and reporting.
//
//   minivmm                                             the built-in guest
//   minivmm --kernel vmlinuz --cmdline "console=ttyS0" --disk root.img,readonly --rng
//   minivmm --kernel vmlinuz --net tap=hv0,mac=52:54:00:12:34:56   a network interface on tap hv0
//   minivmm --kernel vmlinuz --net stream=/tmp/passt.socket        the same through passt, unprivileged
//   minivmm --config vm.conf                            the same options, one per line
import ArgumentParser
import Glibc
import HVMachine

@main
struct MiniVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "minivmm",
        abstract: "Boot a Linux kernel (or HVKit's built-in guest) in a microVM on /dev/kvm.")

    @Option(help: "A bzImage or ELF kernel. Default: the built-in Embedded Swift guest.")
    var kernel: String?

    @Option(help: "An initrd (initramfs) to load for the kernel.")
    var initrd: String?

    @Option(help: "The kernel command line; the virtio-mmio devices are appended to it.")
    var cmdline = "console=ttyS0 earlyprintk=serial,ttyS0 reboot=k panic=1"

    @Option(help: "Guest RAM in MiB.")
    var memory: UInt64 = 256

    @Option(help: "vCPUs.")
    var cpus = 1

    @Option(help: "A virtio block device: PATH[,readonly][,rate=bw=BYTES/MS[+BURST];ops=COUNT/MS[+BURST]] (token buckets: BYTES refill every MS ms). Repeatable.")
    var disk: [String] = []

    @Option(help: "A virtio network interface: tap=NAME (a host tap, created if missing; needs CAP_NET_ADMIN or a tap you own) or stream=PATH (a Unix socket in QEMU's stream framing, as `passt --socket PATH` makes: no privileges needed), then [,mac=52:54:00:xx:xx:xx][,rx-rate=LIMIT][,tx-rate=LIMIT] (token buckets as for --disk, each direction its own). Repeatable.")
    var net: [String] = []

    @Option(help: "Where the serial console goes: stdio, or file:PATH.")
    var console = "stdio"

    @Flag(help: "A virtio entropy device.")
    var rng = false

    @Option(help: "A virtio console (hvc0): where its output goes, stdio or file:PATH.")
    var virtioConsole: String?

    @Flag(help: "Print the time from start to the guest's boot-done write: 123 to the page announced as hvkit.boot_timer= (for devmem), or to port 0x3F0.")
    var bootTimer = false

    @Option(help: "How to enter an ELF kernel: auto (PVH when it has the note), linux64 (64-bit protocol, zero page) or pvh.")
    var boot = "auto"


    @Flag(help: "Enter a bzImage through its own decompressor instead of extracting it on the host.")
    var noExtract = false

    @Flag(help: "Run without the seccomp filters that otherwise restrict each thread (vCPUs, the event loop, the main thread) to the system calls it needs; a call outside them kills minivmm.")
    var noSeccomp = false

    @Option(help: "A file of options, one per line (kernel=PATH, disk=PATH,readonly, rng, ...); '#' starts a comment.")
    var config: String?

    mutating func run() throws {
        // Before any thread exists (see SignalWatcher).
        let signals = SignalWatcher(blocking: [SIGINT, SIGTERM])
        if let config { try apply(configFile: config) }
        let options = try VMOptions(command: self)
        let vm = try MicroVM(options)
        print("minivmm: \(vm.summary)")
        if options.kernel != nil, HostVirtualization.current.isEmulated {
            print("minivmm: warning: this host has no VMX or SVM, so its KVM emulates guest kernel code (about 1 µs an instruction):"
                + " Linux boots slowly, and stops on instructions the emulator refuses unless the kernel avoids them (see Guests/linux)")
        }
        // The guest's console writes to the descriptor directly: keep the order in a pipe.
        // (fflush(nil) flushes every stream; Swift 6 does not let code name stdout.)
        fflush(nil)
        let outcome = vm.run(signals: signals)
        print("minivmm: \(outcome.message)")
        throw ExitCode(outcome.status)
    }

    /// Reads `key=value` lines into the options not given on the command line.
    mutating func apply(configFile path: String) throws {
        guard let text = readTextFile(path) else { throw ValidationError("cannot read the config file \(path)") }
        for (lineIndex, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first?
                .trimmingCharacters(in: " \t\r") ?? ""
            guard !line.isEmpty else { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            let key = parts[0].trimmingCharacters(in: " \t"), value = parts.count > 1 ? parts[1].trimmingCharacters(in: " \t") : ""
            func number<T: FixedWidthInteger>(_: T.Type) throws -> T {
                guard let parsed = T(value, radix: 10) else { throw ValidationError("\(path):\(lineIndex + 1): \(key) wants a number, not '\(value)'") }
                return parsed
            }
            switch key {
            case "kernel": kernel = kernel ?? value
            case "initrd": initrd = initrd ?? value
            case "cmdline": cmdline = value
            case "memory": memory = try number(UInt64.self)
            case "cpus": cpus = try number(Int.self)
            case "disk": disk.append(value)
            case "net": net.append(value)
            case "console": console = value
            case "rng": rng = true
            case "virtio-console": virtioConsole = value
            case "boot-timer": bootTimer = true
            case "no-extract": noExtract = true
            case "no-seccomp": noSeccomp = true
            case "boot": boot = value
            default: throw ValidationError("\(path):\(lineIndex + 1): unknown option '\(key)'")
            }
        }
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        return String(drop { characters.contains($0) }.reversed().drop { characters.contains($0) }.reversed())
    }
}

/// The whole of a text file, or nil.
func readTextFile(_ path: String) -> String? {
    guard let bytes = readBinaryFile(path) else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

func readBinaryFile(_ path: String) -> [UInt8]? {
    try? HostFile.readAll(FilePath(path))
}
