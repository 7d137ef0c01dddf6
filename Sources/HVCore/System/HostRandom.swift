import CHVCoreShims
import Glibc
import SystemPackage

/// The host's random bytes (getrandom(2), the kernel's CSPRNG), for services that hand
/// entropy to guests.
public enum HostRandom {
    /// Fills `buffer` completely, retrying interrupted and short calls.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(Errno) {
        guard let base = buffer.baseAddress else { return }
        var filled = 0
        while filled < buffer.count {
            let got = unsafe hv_getrandom(base + filled, buffer.count - filled, 0)
            if got < 0 {
                if errno == EINTR { continue }
                throw Errno(rawValue: errno)
            }
            filled += got
        }
    }
}
