import HVBoot
import HVCore
import HVKVM
import HVParavirt
import SystemPackage

/// What a ``Machine`` boots: a Linux kernel (or any guest that follows the Linux boot
/// protocols), or a unikernel ELF entered in 64-bit long mode. Either may call the host through
/// HVParavirt's hypercalls when given a table of services.
///
/// Files named by path are read when the machine loads them, so an unreadable file is reported
/// by ``Machine/load(_:)`` as a ``MachineError`` of step ``MachineError/Step/readImage``.
public struct BootSource: Sendable {
    enum Image: Sendable {
        case bytes([UInt8])
        case path(String)

        func read(what: String) throws(MachineError) -> [UInt8] {
            switch self {
            case let .bytes(bytes): return bytes
            case let .path(path):
                do { return try HostFile.readAll(FilePath(path)) } catch {
                    throw MachineError(.readImage, reason: "cannot read the \(what) \(path): \(error)")
                }
            }
        }
    }

    enum Kind: Sendable {
        case linux(kernel: Image, initrd: Image?, commandLine: String, bootProtocol: LinuxBootProtocol?, extractOnHost: Bool)
        case unikernel(Image, argument: UInt64)
    }

    let kind: Kind
    /// The hypercall services the guest may call, or nil for none.
    public var hypercalls: HypercallTable?

    /// The command line a Linux guest gets when none is given: the 16550 console of
    /// ``Machine/addLegacyDevices(console:input:)`` from the first instruction, an i8042 reset
    /// for `reboot`, and on an emulating host ``emulatedHostParameters``. The machine appends
    /// its devices' announcements.
    public static let defaultCommandLine = (["console=ttyS0", "earlyprintk=serial,ttyS0", "reboot=k", "panic=-1"]
        + emulatedHostParameters).joined(separator: " ")

    /// On a host whose KVM emulates guest kernel code (no VMX or SVM, see
    /// `HostVirtualization`), the kernel parameters that keep Linux away from what the emulator
    /// refuses: `noxsave` (XSAVE, XRSTOR), `clearcpuid=smap,popcnt` (SMAP's stac/clac, POPCNT),
    /// and `tsc_early_khz=` with the host's TSC rate, since calibrating the TSC against the PIT
    /// fails there. Together with the kernel patch in Guests/linux they let a 6.1 kernel reach
    /// userspace on such a host. Empty on hardware-virtualized hosts.
    public static let emulatedHostParameters: [String] = {
        guard HostVirtualization.current.isEmulated else { return [] }
        var parameters = ["noxsave", "clearcpuid=smap,popcnt"]
        if let kilohertz = HostVirtualization.current.tscKilohertz { parameters.append("tsc_early_khz=\(kilohertz)") }
        return parameters
    }()

    /// A Linux kernel read from `kernel` (a bzImage or an ELF vmlinux) with an optional
    /// initramfs.
    /// - Parameters:
    ///   - kernel: the kernel's path.
    ///   - initrd: the initramfs's path, if any.
    ///   - commandLine: the command line; the machine appends its devices' announcements.
    ///   - bootProtocol: nil chooses PVH for an ELF kernel with the PVH note, else the 64-bit
    ///     protocol.
    ///   - extractOnHost: decompress a bzImage's kernel on the host and load the ELF inside
    ///     (much faster than the bzImage's own decompressor under emulation).
    ///   - hypercalls: services the guest may call, if any.
    public static func linux(
        kernel: String, initrd: String? = nil, commandLine: String = defaultCommandLine,
        bootProtocol: LinuxBootProtocol? = nil, extractOnHost: Bool = true, hypercalls: HypercallTable? = nil
    ) -> BootSource {
        BootSource(kind: .linux(kernel: .path(kernel), initrd: initrd.map { .path($0) }, commandLine: commandLine,
                                bootProtocol: bootProtocol, extractOnHost: extractOnHost),
                   hypercalls: hypercalls)
    }

    /// A Linux kernel (or protocol-following guest) given as bytes.
    public static func linux(
        kernelImage: [UInt8], initrdImage: [UInt8]? = nil, commandLine: String = defaultCommandLine,
        bootProtocol: LinuxBootProtocol? = nil, extractOnHost: Bool = true, hypercalls: HypercallTable? = nil
    ) -> BootSource {
        BootSource(kind: .linux(kernel: .bytes(kernelImage), initrd: initrdImage.map { .bytes($0) }, commandLine: commandLine,
                                bootProtocol: bootProtocol, extractOnHost: extractOnHost),
                   hypercalls: hypercalls)
    }

    /// A unikernel ELF read from `path`, loaded at its physical addresses and entered in 64-bit
    /// long mode at its entry with `argument` in RDI (HVKit's guest SDK passes it to `hv_main`).
    public static func unikernel(path: String, hypercalls: HypercallTable, argument: UInt64 = 0) -> BootSource {
        BootSource(kind: .unikernel(.path(path), argument: argument), hypercalls: hypercalls)
    }

    /// A unikernel ELF given as bytes (for example one of `GuestImages`).
    public static func unikernel(image: [UInt8], hypercalls: HypercallTable, argument: UInt64 = 0) -> BootSource {
        BootSource(kind: .unikernel(.bytes(image), argument: argument), hypercalls: hypercalls)
    }
}

/// What loading a ``BootSource`` left for the vCPUs' setup.
enum LoadedBoot: Sendable {
    case linux(LinuxBootPlan)
    case unikernel(entry: GuestAddress, argument: UInt64)
    /// A snapshot's vCPUs, by id: each is put back as it was instead of booted.
    case restored([UInt32: VCPUState])
}
