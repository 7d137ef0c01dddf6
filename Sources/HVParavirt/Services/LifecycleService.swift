import HVCore

/// ``HypercallNumber/exit`` and ``HypercallNumber/abort``: the guest ends the VM with a
/// status, or with a message (at most ``HypercallABI/maximumSmallTransfer`` bytes are kept;
/// an unreadable message still aborts, with a note instead of the text).
public struct LifecycleService: ParavirtService {
    /// The exit and abort hypercalls.
    public init() {}

    /// Adds exit and abort.
    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        try table.register(.exit, name: "exit", allowedOnChannel: false) { call throws(HypercallError) in
            .stop(.exit(status: Int32(truncatingIfNeeded: call.arguments.a0)))
        }
        try table.register(.abort, name: "abort", allowedOnChannel: false) { call throws(HypercallError) in
            let length = Int(min(call.arguments.a1, UInt64(HypercallABI.maximumSmallTransfer)))
            guard length > 0 else { return .stop(.abort(message: "")) }
            let message: String
            do throws(HypercallError) {
                message = Self.printable(try call.readBytes(at: call.address(0), count: length))
            } catch {
                message = "(message of \(call.arguments.a1) bytes at \(call.address(0)) unreadable: \(error.reason))"
            }
            return .stop(.abort(message: message))
        }
    }

    /// The message as text, with control characters other than newline and tab escaped so a
    /// guest cannot drive the host's terminal: C0 controls, DEL, and the C1 controls
    /// (U+0080 to U+009F, among them CSI U+009B and DCS U+0090, which terminals obey too).
    static func printable(_ bytes: [UInt8]) -> String {
        var text = ""
        for scalar in String(decoding: bytes, as: UTF8.self).unicodeScalars {
            let isControl = scalar.value < 0x20 && scalar != "\n" && scalar != "\t" || (0x7F...0x9F).contains(scalar.value)
            if isControl {
                text += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                text.unicodeScalars.append(scalar)
            }
        }
        return text
    }
}
