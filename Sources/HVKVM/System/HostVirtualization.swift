import Glibc
import HVCore
import SystemPackage

/// How this host's processors support virtualization, as /proc/cpuinfo tells.
///
/// On a host without VMX or SVM (a VM without nested virtualization), /dev/kvm may still work
/// through a software hypervisor such as PVM, which emulates guest kernel code: roughly 1 µs an
/// instruction, and some instructions (cmpxchg16b, xsave, int3 at CPL0, ...) refused. VMMs use
/// this to warn, and to hide what such a host cannot run.
public struct HostVirtualization: Sendable, Hashable {
    /// The processor has Intel VMX.
    public let hasVMX: Bool
    /// The processor has AMD SVM.
    public let hasSVM: Bool

    /// Whether guest code runs on hardware virtualization. When false, KVM (if present)
    /// emulates guest kernel code.
    public var isHardwareAssisted: Bool { hasVMX || hasSVM }
    /// Whether KVM here emulates guest kernel code (no VMX or SVM).
    public var isEmulated: Bool { !isHardwareAssisted }

    /// The first processor's clock in kHz ("cpu MHz" × 1000), which is the TSC's rate on hosts
    /// with a constant TSC; nil when /proc/cpuinfo does not say. Emulating hosts need it on
    /// the guest's command line (`tsc_early_khz=`), since calibrating against the PIT fails.
    public let tscKilohertz: Int?

    /// Reads the flags and clock of the first processor in `cpuinfo` (the text of /proc/cpuinfo).
    public init(cpuinfo: String) {
        self.init(cpuinfo: Array(cpuinfo.utf8))
    }

    /// Reads the flags and clock of the first processor from the bytes of /proc/cpuinfo: a
    /// byte scan of its block only, because this runs at every VMM's start, where splitting
    /// the whole file into strings cost a tenth of a millisecond or more.
    init(cpuinfo bytes: [UInt8]) {
        var flags: ArraySlice<UInt8>?
        var clock: ArraySlice<UInt8>?
        var start = 0
        // The first processor's block ends at the first empty line.
        while start < bytes.count, bytes[start] != UInt8(ascii: "\n"), flags == nil || clock == nil {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            let line = bytes[start..<end]
            if flags == nil { flags = Self.value(of: "flags", in: line) }
            if clock == nil { clock = Self.value(of: "cpu MHz", in: line) }
            start = end + 1
        }
        var hasVMX = false, hasSVM = false
        for word in (flags ?? []).split(separator: UInt8(ascii: " ")) {
            if word.elementsEqual("vmx".utf8) { hasVMX = true }
            if word.elementsEqual("svm".utf8) { hasSVM = true }
        }
        self.hasVMX = hasVMX
        self.hasSVM = hasSVM
        tscKilohertz = clock.flatMap { Double(String(decoding: $0, as: UTF8.self)) }.map { Int($0 * 1000) }
    }

    /// What follows the colon of `line` when it is the field `name` ("flags\t\t: fpu vme"),
    /// without the blanks around it; nil for another field.
    private static func value(of name: String, in line: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard line.starts(with: name.utf8), let colon = line.firstIndex(of: UInt8(ascii: ":")),
              line[(line.startIndex + name.utf8.count)..<colon].allSatisfy(isBlank)
        else { return nil }
        let rest = line[(colon + 1)...].drop(while: isBlank)
        return rest[..<(rest.lastIndex { !isBlank($0) }.map { $0 + 1 } ?? rest.startIndex)]
    }

    /// This host, read once from /proc/cpuinfo (no flags when it cannot be read). Only the
    /// first processor's block is needed, so only the file's first 16 KiB are read: the whole
    /// file of a large host is hundreds of KiB, read on every VMM's start.
    public static let current: HostVirtualization = {
        HostVirtualization(cpuinfo: (try? HostFile.read(FilePath("/proc/cpuinfo"), upTo: 16 << 10)) ?? [])
    }()
}
