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
    var console = "stdio"
    var rng = false
    var virtioConsole: String?
    var bootTimer = false
    var boot = "auto"
    var noExtract = false
    var noSeccomp = false
    var config: String?
    /// `--help` was asked for.
    var help = false

    /// One option: its name, the name of its value (nil for a flag) and its help.
    struct Spec {
        let name: String
        let value: String?
        let help: String
    }

    static let specs: [Spec] = [
        Spec(name: "kernel", value: "PATH", help: "A bzImage or ELF kernel. Default: the built-in Embedded Swift guest."),
        Spec(name: "initrd", value: "PATH", help: "An initrd (initramfs) to load for the kernel."),
        Spec(name: "cmdline", value: "TEXT", help: "The kernel command line; the virtio-mmio devices are appended to it."),
        Spec(name: "memory", value: "MIB", help: "Guest RAM in MiB (default 256)."),
        Spec(name: "cpus", value: "COUNT", help: "vCPUs (default 1)."),
        Spec(name: "disk", value: "PATH[,readonly][,rate=LIMIT]",
             help: "A virtio block device; LIMIT is bw=BYTES/MS[+BURST];ops=COUNT/MS[+BURST] (token buckets: BYTES refill every MS ms). Repeatable."),
        Spec(name: "net", value: "tap=NAME|stream=PATH[,mac=MAC][,rx-rate=LIMIT][,tx-rate=LIMIT]",
             help: "A virtio network interface: a host tap (created if missing; needs CAP_NET_ADMIN or a tap you own) or a Unix socket in QEMU's stream framing, as `passt --socket PATH` makes (no privileges needed); limits as for --disk, each direction its own. Repeatable."),
        Spec(name: "console", value: "stdio|file:PATH", help: "Where the serial console goes (default stdio)."),
        Spec(name: "rng", value: nil, help: "A virtio entropy device."),
        Spec(name: "virtio-console", value: "stdio|file:PATH", help: "A virtio console (hvc0) and where its output goes."),
        Spec(name: "boot-timer", value: nil,
             help: "Print the time from start to the guest's boot-done write: 123 to the page announced as hvkit.boot_timer= (for devmem), or to port 0x3F0."),
        Spec(name: "boot", value: "auto|linux64|pvh",
             help: "How to enter an ELF kernel: PVH when it has the note (auto, the default), the 64-bit protocol with a zero page, or PVH."),
        Spec(name: "no-extract", value: nil, help: "Enter a bzImage through its own decompressor instead of extracting it on the host."),
        Spec(name: "no-seccomp", value: nil,
             help: "Run without the seccomp filters that otherwise restrict each thread (vCPUs, the event loop, the main thread) to the system calls it needs; a call outside them kills minivmm."),
        Spec(name: "config", value: "PATH", help: "A file of options, one per line (kernel=PATH, disk=PATH,readonly, rng, ...); '#' starts a comment."),
        Spec(name: "help", value: nil, help: "Show this help."),
    ]

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
            guard let spec = Self.specs.first(where: { $0.name == name }), name != "config", name != "help" else {
                throw UsageError("\(place): unknown option '\(name)'")
            }
            guard spec.value == nil || value != nil else { throw UsageError("\(place): \(name) needs a value: \(spec.value ?? "")") }
            if given.contains(name), name != "disk", name != "net" { continue }
            try set(spec, value, where: "\(place): \(name)")
        }
    }

    /// Sets the option `spec` names from `value` (nil for a flag); `place` says where it was
    /// given, for errors.
    private mutating func set(_ spec: Spec, _ value: String?, where place: String) throws(UsageError) {
        guard spec.value != nil || value == nil else { throw UsageError("\(place) takes no value") }
        let text = value ?? ""
        func number<T: FixedWidthInteger>(_: T.Type) throws(UsageError) -> T {
            guard let parsed = T(text, radix: 10) else { throw UsageError("\(place) wants a number, not '\(text)'") }
            return parsed
        }
        switch spec.name {
        case "kernel": kernel = text
        case "initrd": initrd = text
        case "cmdline": cmdline = text
        case "memory": memory = try number(UInt64.self)
        case "cpus": cpus = try number(Int.self)
        case "disk": disk.append(text)
        case "net": net.append(text)
        case "console": console = text
        case "rng": rng = true
        case "virtio-console": virtioConsole = text
        case "boot-timer": bootTimer = true
        case "boot": boot = text
        case "no-extract": noExtract = true
        case "no-seccomp": noSeccomp = true
        case "config": config = text
        case "help": help = true
        default: throw UsageError("\(place): option without a handler")  // A spec the switch misses.
        }
    }

    /// The help text: usage, then each option with its value and help, wrapped to 100 columns.
    static var helpText: String {
        var lines = [
            "OVERVIEW: Boot a Linux kernel (or HVKit's built-in guest) in a microVM on /dev/kvm.",
            "",
            "USAGE: minivmm [--kernel PATH] [--initrd PATH] [--cmdline TEXT] [--disk ...] [--net ...] [--rng] ...",
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
