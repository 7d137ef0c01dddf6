import HVCore

/// Why a hypercall failed: the code the guest gets (negated in RAX) and, for the host's log,
/// what exactly was wrong.
public struct HypercallError: Error, Hashable, Sendable, CustomStringConvertible {
    public let code: HypercallErrno
    public let reason: String

    public init(_ code: HypercallErrno, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// A guest buffer that is not usable RAM.
    public static func fault(_ error: GuestMemoryError) -> HypercallError {
        HypercallError(.fault, error.description)
    }

    public var description: String { "\(code): \(reason)" }
}
