import Glibc
import SystemPackage

/// A file for a test's disk, made in /var/tmp (a real file system, where holes and O_DIRECT
/// work; /tmp may be tmpfs) and removed when the value goes away.
public final class ScratchFile: Sendable {
    /// Where the file is.
    public let path: String

    /// A file of `size` bytes, zero except for `contents` (each an offset and its bytes).
    public init(size: Int, contents: [(offset: Int, bytes: [UInt8])] = []) throws(Errno) {
        var template = Array("/var/tmp/hvkit-test-XXXXXX".utf8CString)
        let descriptor = unsafe mkstemp(&template)
        guard descriptor >= 0 else { throw Errno(rawValue: errno) }
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { close(descriptor) }
        guard ftruncate(descriptor, off_t(size)) == 0 else { throw Errno(rawValue: errno) }
        for (offset, bytes) in contents where !bytes.isEmpty {
            let written = unsafe bytes.withUnsafeBytes { unsafe pwrite(descriptor, $0.baseAddress, $0.count, off_t(offset)) }
            guard written == bytes.count else { throw Errno(rawValue: errno) }
        }
    }

    /// A file of `size` bytes whose byte at offset i is `pattern(i)`.
    public convenience init(size: Int, pattern: (Int) -> UInt8) throws(Errno) {
        try self.init(size: size, contents: [(0, (0..<size).map(pattern))])
    }

    deinit { unsafe unlink(path) }

    /// `count` bytes at `offset`.
    public func read(at offset: Int, count: Int) throws(Errno) -> [UInt8] {
        let descriptor = unsafe open(path, O_RDONLY)
        guard descriptor >= 0 else { throw Errno(rawValue: errno) }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = unsafe bytes.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return unsafe pread(descriptor, base + done, count - done, off_t(offset + done))
            }
            guard got > 0 else { throw Errno(rawValue: got == 0 ? EIO : errno) }
            done += got
        }
        return bytes
    }

    /// The whole file.
    public func contents() throws(Errno) -> [UInt8] {
        var info = stat()
        guard unsafe stat(path, &info) == 0 else { throw Errno(rawValue: errno) }
        return info.st_size == 0 ? [] : try read(at: 0, count: Int(info.st_size))
    }

    /// Where the first hole at or after `offset` starts (lseek SEEK_HOLE; the file's end counts
    /// as a hole), or -1.
    public func firstHole(from offset: Int) -> Int {
        let descriptor = unsafe open(path, O_RDONLY)
        guard descriptor >= 0 else { return -1 }
        defer { close(descriptor) }
        // SEEK_HOLE is 4 on Linux; Glibc does not export it to Swift.
        return Int(lseek(descriptor, off_t(offset), 4))
    }
}
