import HVCore

/// ``HypercallNumber/consoleWrite``: the guest's text goes to a `ByteSink` (stdout, a file,
/// a test's collector). At most ``HypercallABI/maximumSmallTransfer`` bytes per call (E2BIG
/// beyond); the bytes are copied out of guest memory once, then written.
public struct ConsoleService: ParavirtService {
    /// Where the guest's output goes.
    public let output: any ByteSink

    /// A console writing to `output`.
    public init(output: any ByteSink) {
        self.output = output
    }

    /// Adds console_write.
    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.console)
        let output = self.output
        try table.register(.consoleWrite, name: "console_write") { call throws(HypercallError) in
            let length = try call.length(1, maximum: HypercallABI.maximumSmallTransfer, allowZero: true)
            guard length > 0 else { return .zero }
            let bytes = try call.readBytes(at: call.address(0), count: length)
            unsafe bytes.withUnsafeBytes { unsafe output.write($0) }
            return .count(length)
        }
    }
}
