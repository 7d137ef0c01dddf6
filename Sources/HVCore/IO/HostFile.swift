import SystemPackage

/// Whole-file reads of host files: kernels, initrds, guest images.
public enum HostFile {
    /// The whole of the file at `path`, read in 1 MiB chunks.
    public static func readAll(_ path: FilePath) throws(Errno) -> [UInt8] {
        let descriptor: FileDescriptor
        do { descriptor = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) } catch { throw Errno(converting: error) }
        defer { try? descriptor.close() }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count: Int
            do {
                count = unsafe try chunk.withUnsafeMutableBytes { buffer in unsafe try descriptor.read(into: buffer, retryOnInterrupt: true) }
            } catch {
                throw Errno(converting: error)
            }
            if count == 0 { return result }
            result.append(contentsOf: chunk[0..<count])
        }
    }
}

extension Errno {
    /// swift-system's calls throw untyped errors that are always `Errno`; this keeps the type
    /// without a forced cast.
    init(converting error: any Error) {
        self = (error as? Errno) ?? .ioError
    }
}
