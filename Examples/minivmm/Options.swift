import Glibc
import HVMachine

/// minivmm's options, one table for the command line (`--name VALUE`, `--name=VALUE`, `--flag`)
/// and the configuration file (`name=VALUE`, `flag`, one per line, `#` comments).
///
/// Parsed by hand rather than with swift-argument-parser: its reflection over the command's
/// properties cost about 3 ms of minivmm's start (spawn to first KVM_RUN was 10.5 ms), and it
/// links Foundation's essentials into a binary that otherwise needs none.
struct Options {
    var kernel: String?
    var initrd: String?
    var cmdline = "console=ttyS0 earlyprintk=serial,ttyS0 reboot=k panic=1"
    var memory: UInt64 = 256
    var cpus = 1
    var disk: [String] = []
    var net: [String] = []
    var vsock: String?
    var console = "stdio"
    var rng = false
    var virtioConsole: String?
    var bootTimer = false
    var boot = "auto"
    var noExtract = false
    var noSeccomp = false
    var snapshotOnSignal: String?
    var restore: String?
    var config: String?
    /// `--help` was asked for.
    var help = false

    /// One option: its name, the name of its value (nil for a flag), its help, and how it
    /// sets its field from the value ("" for a flag) given at `place` (for errors).
    struct Spec: Sendable {
        let name: String
        let value: String?
        let help: String
        /// Repeatable: a configuration file's values add to the command line's.
        var repeatable = false
        /// Allowed in a configuration file (not `config` or `help`).
        var inFile = true
        let set: @Sendable (inout Options, _ value: String, _ place: String) throws(UsageError) -> Void
    }

    static let specs: [Spec] = [
        Spec(name: "kernel", value: "PATH", help: "A bzImage or ELF kernel. Default: the built-in Embedded Swift guest.") { options, value, _ in options.kernel = value },
        Spec(name: "initrd", value: "PATH", help: "An initrd (initramfs) to load for the kernel.") { options, value, _ in options.initrd = value },
        Spec(name: "cmdline", value: "TEXT", help: "The kernel command line; the virtio-mmio devices are appended to it.") { options, value, _ in options.cmdline = value },
        Spec(name: "memory", value: "MIB", help: "Guest RAM in MiB (default 256).") { options, value, place throws(UsageError) in
            options.memory = try number(value, at: place)
        },
        Spec(name: "cpus", value: "COUNT", help: "vCPUs (default 1).") { options, value, place throws(UsageError) in
            options.cpus = try number(value, at: place)
        },
        Spec(name: "disk", value: "PATH[,readonly][,engine=ENGINE][,rate=LIMIT]",
             help: "A virtio block device; ENGINE is aio (Linux AIO, the default), uring (io_uring) or sync (one request at a time on the notified thread); LIMIT is bw=BYTES/MS[+BURST];ops=COUNT/MS[+BURST] (token buckets: BYTES refill every MS ms). Repeatable.",
             repeatable: true) { options, value, _ in options.disk.append(value) },
        Spec(name: "net", value: "tap=NAME|stream=PATH[,mac=MAC][,rx-rate=LIMIT][,tx-rate=LIMIT]",
             help: "A virtio network interface: a host tap (created if missing; needs CAP_NET_ADMIN or a tap you own) or a Unix socket in QEMU's stream framing, as `passt --socket PATH` makes (no privileges needed); limits as for --disk, each direction its own. Repeatable.",
             repeatable: true) { options, value, _ in options.net.append(value) },
        Spec(name: "vsock", value: "CID,PATH",
             help: "A virtio vsock device: the guest is CID (3 or more); host programs connect to the Unix socket PATH and write `CONNECT <port>` (answered `OK <host port>`), and guest connections to host port P reach a socket listening at PATH_P.") {
            options, value, _ in options.vsock = value
        },
        Spec(name: "console", value: "stdio|file:PATH", help: "Where the serial console goes (default stdio).") { options, value, _ in options.console = value },
        Spec(name: "rng", value: nil, help: "A virtio entropy device.") { options, _, _ in options.rng = true },
        Spec(name: "virtio-console", value: "stdio|file:PATH", help: "A virtio console (hvc0) and where its output goes.") { options, value, _ in options.virtioConsole = value },
        Spec(name: "boot-timer", value: nil,
             help: "Print the time from start to the guest's boot-done write: 123 to the page announced as hvkit.boot_timer= (for devmem), or to port 0x3F0.") {
            options, _, _ in options.bootTimer = true
        },
        Spec(name: "boot", value: "auto|linux64|pvh",
             help: "How to enter an ELF kernel: PVH when it has the note (auto, the default), the 64-bit protocol with a zero page, or PVH.") { options, value, _ in options.boot = value },
        Spec(name: "no-extract", value: nil, help: "Enter a bzImage through its own decompressor instead of extracting it on the host.") {
            options, _, _ in options.noExtract = true
        },
        Spec(name: "no-seccomp", value: nil,
             help: "Run without the seccomp filters that otherwise restrict each thread (vCPUs, the event loop, the main thread) to the system calls it needs; a call outside them kills minivmm.") {
            options, _, _ in options.noSeccomp = true
        },
        Spec(name: "snapshot-on-signal", value: "SIGNAL,DIR",
             help: "On SIGNAL (SIGUSR1 or SIGUSR2), save the running machine into the directory DIR (its state and sparse memory), replacing a snapshot there, and go on running. The devices must be ones that save their state; the waiting thread may then create files.") {
            options, value, _ in options.snapshotOnSignal = value
        },
        Spec(name: "restore", value: "DIR",
             help: "Resume the machine saved in DIR instead of booting: its RAM, vCPUs and CPUs come from the snapshot; give the same devices (--disk, --net, --vsock, --rng, --virtio-console, --boot-timer) in the same order as the saved machine had. Its memory is mapped copy-on-write, so restoring is quick and clones share it.") {
            options, value, _ in options.restore = value
        },
        Spec(name: "config", value: "PATH", help: "A file of options, one per line (kernel=PATH, disk=PATH,readonly, rng, ...); '#' starts a comment.",
             inFile: false) { options, value, _ in options.config = value },
        Spec(name: "help", value: nil, help: "Show this help.", inFile: false) { options, _, _ in options.help = true },
    ]

    /// `value` as a decimal number; `place` says where it was given.
    private static func number<T: FixedWidthInteger>(_ value: String, at place: String) throws(UsageError) -> T {
        guard let parsed = T(value, radix: 10) else { throw UsageError("\(place) wants a number, not '\(value)'") }
        return parsed
    }

    /// Parses `arguments` (without the program name), then the configuration file if one is
    /// named: the file's options fill in what the command line left out, and its disks and
    /// networks come after the command line's.
    init(arguments: [String]) throws(UsageError) {
        var given: [String] = []  // An array: the first Set<String> costs more to set up than these few lookups.
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--") else {
                if argument == "-h" { help = true; continue }
                throw UsageError("unexpected argument '\(argument)'")
            }
            let text = argument.dropFirst(2)
            let name = String(text.prefix { $0 != "=" })
            guard let spec = Self.specs.first(where: { $0.name == name }) else { throw UsageError("unknown option '--\(name)'") }
            var value: String?
            if let equals = text.firstIndex(of: "=") {
                value = String(text[text.index(after: equals)...])
            } else if spec.value != nil {
                guard index < arguments.count else { throw UsageError("--\(name) needs a value: \(spec.value ?? "")") }
                value = arguments[index]
                index += 1
            }
            try set(spec, value, where: "--\(name)")
            given.append(name)
        }
        if let path = config, !help { try apply(configFile: path, skipping: given) }
    }

    /// Reads `name=value` lines into the options that `skipping` (those the command line gave)
    /// does not name; repeatable ones add to the command line's.
    private mutating func apply(configFile path: String, skipping given: [String]) throws(UsageError) {
        guard let bytes = try? HostFile.readAll(FilePath(path)) else { throw UsageError("cannot read the config file \(path)") }
        let text = String(decoding: bytes, as: UTF8.self)
        for (lineIndex, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = (rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "").trimmed
            guard !line.isEmpty else { continue }
            let name = String(line.prefix { $0 != "=" }).trimmed
            let value = line.firstIndex(of: "=").map { String(line[line.index(after: $0)...]).trimmed }
            let place = "\(path):\(lineIndex + 1)"
            guard let spec = Self.specs.first(where: { $0.name == name }), spec.inFile else {
                throw UsageError("\(place): unknown option '\(name)'")
            }
            guard spec.value == nil || value != nil else { throw UsageError("\(place): \(name) needs a value: \(spec.value ?? "")") }
            if given.contains(name), !spec.repeatable { continue }
            try set(spec, value, where: "\(place): \(name)")
        }
    }

    /// Sets the option `spec` names from `value` (nil for a flag); `place` says where it was
    /// given, for errors.
    private mutating func set(_ spec: Spec, _ value: String?, where place: String) throws(UsageError) {
        guard spec.value != nil || value == nil else { throw UsageError("\(place) takes no value") }
        try spec.set(&self, value ?? "", place)
    }

    /// The help text: usage, then each option with its value and help, wrapped to 100 columns.
    static var helpText: String {
        var lines = [
            "OVERVIEW: Boot a Linux kernel (or HVKit's built-in guest) in a microVM on /dev/kvm.",
            "",
            "USAGE: minivmm [--kernel PATH] [--initrd PATH] [--cmdline TEXT] [--disk ...] [--net ...] [--vsock CID,PATH] [--rng] ...",
            "       minivmm --restore DIR [the saved machine's devices] ...",
            "",
            "OPTIONS:",
        ]
        for spec in specs {
            lines.append("  --\(spec.name)" + (spec.value.map { " \($0)" } ?? ""))
            var line = "      "
            for word in spec.help.split(separator: " ") {
                if line.count + word.count > 100, line.count > 6 {
                    lines.append(line)
                    line = "      "
                }
                line += (line.count > 6 ? " " : "") + word
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}

/// A command line or configuration file minivmm cannot use, with what was wrong.
struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension StringProtocol {
    /// The text without leading and trailing spaces, tabs and carriage returns.
    var trimmed: String {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        return String(drop(while: blank).reversed().drop(while: blank).reversed())
    }
}
