import Glibc

/// A file in /tmp that is removed when the value goes away.
final class TempFile {
    let path: String

    /// Creates a file of `size` bytes whose byte at offset i is `pattern(i)`.
    init(size: Int, pattern: (Int) -> UInt8 = { UInt8(truncatingIfNeeded: $0 / 512 &+ $0) }) throws {
        var template = Array("/tmp/hvkit-test-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw TempFileError.create(errno) }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let bytes = (0..<size).map(pattern)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == size else { throw TempFileError.write(errno) }
    }

    deinit { unlink(path) }

    /// The file's current contents.
    func contents() -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if got <= 0 { break }
            result += chunk[..<got]
        }
        return result
    }
}

enum TempFileError: Error {
    case create(Int32)
    case write(Int32)
}

/// Polls `condition` until it holds or about five seconds pass (a watchdog for work finishing
/// on another thread, not a timing assertion).
func waitUntil(_ condition: () throws -> Bool) rethrows -> Bool {
    for _ in 0..<5000 {
        if try condition() { return true }
        usleep(1000)
    }
    return try condition()
}
