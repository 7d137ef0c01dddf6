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
        let lines = cpuinfo.split(separator: "\n")
        func field(_ name: String) -> Substring? {
            lines.first { $0.hasPrefix(name) }?.split(separator: ":", maxSplits: 1).last
        }
        let flags = field("flags")?.split(separator: " ") ?? []
        hasVMX = flags.contains("vmx")
        hasSVM = flags.contains("svm")
        tscKilohertz = field("cpu MHz").flatMap { Double($0.drop { $0 == " " || $0 == "\t" }) }.map { Int($0 * 1000) }
    }

    /// This host, read once from /proc/cpuinfo (no flags when it cannot be read). Only the
    /// first processor's block is needed, so only the file's first 16 KiB are read: the whole
    /// file of a large host is hundreds of KiB, read on every VMM's start.
    public static let current: HostVirtualization = {
        let bytes = (try? HostFile.read(FilePath("/proc/cpuinfo"), upTo: 16 << 10)) ?? []
        return HostVirtualization(cpuinfo: String(decoding: bytes, as: UTF8.self))
    }()
}
