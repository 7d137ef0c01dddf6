import Glibc
import SystemPackage

/// Whole-file reads of host files: kernels, initrds, guest images.
public enum HostFile {
    /// The whole of the file at `path`.
    public static func readAll(_ path: FilePath) throws(Errno) -> [UInt8] {
        try read(path, upTo: .max)
    }

    /// The first `limit` bytes of the file at `path` (all of it if shorter): for files of which
    /// only the start matters, such as /proc/cpuinfo's first processor on a host with hundreds.
    public static func read(_ path: FilePath, upTo limit: Int) throws(Errno) -> [UInt8] {
        let descriptor: FileDescriptor
        do { descriptor = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) } catch { throw Errno(converting: error) }
        defer { try? descriptor.close() }
        var result: [UInt8] = []
        // Large chunks for kernels and images; a small one when little is wanted or the file is
        // small (a snapshot's state), because the chunk is zeroed (and faulted in) before the
        // first read. One byte past the size, so that the first read already sees the end;
        // procfs files say 0 whatever they hold, so 0 tells nothing.
        var status = stat()
        let size = unsafe fstat(descriptor.rawValue, &status) == 0 && status.st_size > 0 ? Int(status.st_size) + 1 : Int.max
        var chunk = [UInt8](repeating: 0, count: min(1 << 20, max(limit, 0), size))
        while result.count < limit {
            let wanted = min(chunk.count, limit - result.count)
            let count: Int
            do {
                count = unsafe try chunk.withUnsafeMutableBytes { buffer in
                    unsafe try descriptor.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted]), retryOnInterrupt: true)
                }
            } catch {
                throw Errno(converting: error)
            }
            if count == 0 { break }
            result.append(contentsOf: chunk[0..<count])
        }
        return result
    }
}

extension Errno {
    /// swift-system's calls throw untyped errors that are always `Errno`; this keeps the type
    /// without a forced cast.
    init(converting error: any Error) {
        self = (error as? Errno) ?? .ioError
    }
}
