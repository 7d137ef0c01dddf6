/// The one-line handshake of the hybrid vsock protocol that Firecracker and Cloud Hypervisor
/// speak on a VM's Unix socket: a host program writes `CONNECT <port>\n` to reach guest port
/// `<port>`, and reads `OK <host port>\n` once the guest accepted (the socket is closed
/// instead when nothing listens there).
public enum VsockConnectLine {
    /// The longest line accepted, newline included: `CONNECT ` and ten digits with room for a
    /// carriage return. A client that sends more without a newline is not speaking the protocol.
    public static let maximumLength = 32

    /// What the first bytes a host client sent say.
    public enum Parse: Hashable, Sendable {
        /// No newline yet, and the bytes so far may still become a request.
        case incomplete
        /// `CONNECT <port>`, the line `length` bytes long (newline included); bytes after it
        /// are the connection's first data.
        case connect(port: UInt32, length: Int)
        /// Not the protocol: close the connection.
        case malformed(String)
    }

    /// Parses the start of what a host client sent.
    public static func parse(_ bytes: some Collection<UInt8>) -> Parse {
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            return bytes.count >= maximumLength ? .malformed("no newline in the first \(maximumLength) bytes") : .incomplete
        }
        var line = Array(bytes[..<newline])
        let length = line.count + 1
        guard length <= maximumLength else { return .malformed("a line of \(length) bytes") }
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        let command = Array("CONNECT ".utf8)
        guard line.starts(with: command) else { return .malformed("not a CONNECT line") }
        let digits = line.dropFirst(command.count)
        guard !digits.isEmpty, digits.count <= 10, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
            return .malformed("the port is not a decimal number")
        }
        let value = digits.reduce(UInt64(0)) { $0 * 10 + UInt64($1 - UInt8(ascii: "0")) }
        guard let port = UInt32(exactly: value) else { return .malformed("port \(value) is out of range") }
        return .connect(port: port, length: length)
    }

    /// The answer once the guest accepted: `OK <hostPort>\n`.
    public static func accepted(hostPort: UInt32) -> [UInt8] {
        Array("OK \(hostPort)\n".utf8)
    }
}
