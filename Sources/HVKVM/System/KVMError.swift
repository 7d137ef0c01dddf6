import HVCore
import SystemPackage

/// What went wrong talking to KVM. Every case names the operation, so an error message is
/// enough to find the failing call.
public enum KVMError: Error, Hashable, Sendable, CustomStringConvertible {
    /// /dev/kvm could not be opened.
    case deviceUnavailable(path: String, errno: Errno)
    /// The kernel speaks a KVM API version other than 12.
    case unsupportedAPIVersion(Int32)
    /// A capability this operation needs is not reported by the host.
    case missingCapability(String)
    /// An ioctl failed.
    case ioctl(String, Errno)
    /// Another system call failed (mmap of kvm_run, thread creation, ...).
    case systemCall(String, Errno)
    /// Guest memory refused an access made on the VMM's behalf (page tables, GDT, ...).
    case guestMemory(GuestMemoryError)
    /// A caller passed a value KVM would reject or that makes no sense.
    case invalidArgument(String)

    /// What failed and why, naming the operation.
    public var description: String {
        switch self {
        case let .deviceUnavailable(path, errno):
            let hint: String
            switch errno {
            case .noSuchFileOrDirectory: hint = " (is the kvm module loaded, and is this a host with virtualization?)"
            case .permissionDenied: hint = " (add the user to the kvm group, or run as root)"
            default: hint = ""
            }
            return "cannot open \(path): \(errno)\(hint)"
        case let .unsupportedAPIVersion(version):
            return "KVM API version \(version) is not supported (HVKit needs 12)"
        case let .missingCapability(name):
            return "the host's KVM lacks \(name)"
        case let .ioctl(name, errno):
            return "\(name) failed: \(errno)"
        case let .systemCall(name, errno):
            return "\(name) failed: \(errno)"
        case let .guestMemory(error):
            return "guest memory: \(error)"
        case let .invalidArgument(what):
            return "invalid argument: \(what)"
        }
    }
}
