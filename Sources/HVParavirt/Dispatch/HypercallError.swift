import HVCore

/// Why a hypercall failed: the code the guest gets (negated in RAX) and, for the host's log,
/// what exactly was wrong.
public struct HypercallError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The code the guest receives (negated in RAX).
    public let code: HypercallErrno
    /// Why, for the host's logs.
    public let reason: String

    /// An error with `code` for the guest and `reason` for the host.
    public init(_ code: HypercallErrno, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// A guest buffer that is not usable RAM.
    public static func fault(_ error: GuestMemoryError) -> HypercallError {
        HypercallError(.fault, error.description)
    }

    /// The code and the reason.
    public var description: String { "\(code): \(reason)" }
}
