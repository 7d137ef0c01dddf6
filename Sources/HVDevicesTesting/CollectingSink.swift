import HVCore

/// A ``ByteSink`` that keeps everything written to it, for tests of consoles and guests. It can
/// also call back for each complete line, to answer a guest as a host program would.
public final class CollectingSink: ByteSink {
    private let collected = Locked<[UInt8]>([])
    private let onLine: (@Sendable (String) -> Void)?

    /// A sink that keeps bytes; `onLine`, if given, sees each complete line (without its
    /// line end) on the writing thread, after the sink's lock is released.
    public init(onLine: (@Sendable (String) -> Void)? = nil) {
        self.onLine = onLine
    }

    /// Everything written so far.
    public var bytes: [UInt8] { collected.withLock { $0 } }
    /// Everything written so far, as UTF-8 text.
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Keeps `buffer`, then reports the lines it completed.
    public func write(_ buffer: UnsafeRawBufferPointer) {
        let newline = UInt8(ascii: "\n")
        let lines: [String] = collected.withLock { bytes in
            let start = bytes.count
            unsafe bytes.append(contentsOf: buffer)
            guard onLine != nil, unsafe buffer.contains(newline) else { return [] }
            let lineStart = bytes[..<start].lastIndex(of: newline).map { $0 + 1 } ?? 0
            let end = bytes.lastIndex(of: newline) ?? lineStart
            return bytes[lineStart..<end].split(separator: newline, omittingEmptySubsequences: false).map { line in
                String(decoding: line.last == UInt8(ascii: "\r") ? line.dropLast() : line, as: UTF8.self)
            }
        }
        for line in lines { onLine?(line) }
    }
}
