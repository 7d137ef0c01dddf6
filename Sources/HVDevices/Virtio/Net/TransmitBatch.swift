import Glibc

/// Frames a transmit call has checked and gathered but not yet written: each one's checked
/// header and the iovecs of its bytes in guest memory.
///
/// The transmitter gathers a notification's frames first and then writes them back to back,
/// rather than walking a chain between every two writes. The host kernel's write path then
/// stays warm in the CPU's caches from one frame to the next: in a profile of 64 KiB frames
/// on a tap, the kernel spent 15% more time in the device's writes than in a plain C loop's
/// when the device's work came between them, and about 5% more once they were batched. The
/// chains go back to the driver only after their frames are written, since the iovecs point
/// into the guest's buffers.
///
/// Used only under the transmitter's lock.
@safe final class TransmitBatch {
    /// The most frames gathered before they are written. The notification budget's time
    /// slice is checked between chains, so it can be overrun by one batch's writes: about
    /// 100 µs with 64 KiB frames on a tap.
    static let capacity = 32

    /// The checked headers, one slot per frame: the frames' first iovecs point here.
    private let headers: UnsafeMutableRawBufferPointer
    // Both arrays are used only under the transmitter's lock, one access at a time, so the
    // run-time exclusivity checks (a few percent of the device's time per frame) are off.
    /// Every gathered frame's iovecs, header first, one frame after another.
    @exclusivity(unchecked) private var vectors: [iovec]
    /// Each frame's chain, where its iovecs end in `vectors`, and its length without the header.
    @exclusivity(unchecked) private var frames: [(head: UInt16, vectorsEnd: Int, length: Int)] = []

    init() {
        // SAFETY: freed in deinit; iovecs into it live only until the batch is written.
        unsafe headers = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.capacity * NetHeader.size, alignment: 8)
        unsafe vectors = []
        unsafe vectors.reserveCapacity(Self.capacity * 20)
        unsafe frames.reserveCapacity(Self.capacity)
    }

    deinit { unsafe headers.deallocate() }

    var isEmpty: Bool { unsafe frames.isEmpty }
    var isFull: Bool { unsafe frames.count == Self.capacity }

    /// Gathers the frame of chain `head`, `length` bytes without the header: `fill` stores its
    /// checked header into the slot it is given and appends the frame's iovecs. If `fill`
    /// throws, nothing of the frame stays.
    func add<E: Error>(
        head: UInt16, length: Int, _ fill: (_ header: UnsafeMutableRawBufferPointer, _ vectors: inout [iovec]) throws(E) -> Void
    ) throws(E) {
        precondition(!isFull, "a full transmit batch must be written before another frame is added")
        let start = unsafe vectors.count
        // SAFETY: the slot is inside `headers`, since frames.count < capacity.
        let header = unsafe UnsafeMutableRawBufferPointer(rebasing: headers[(frames.count * NetHeader.size)...].prefix(NetHeader.size))
        unsafe vectors.append(unsafe iovec(iov_base: header.baseAddress, iov_len: NetHeader.size))
        do throws(E) {
            try unsafe fill(header, &vectors)
        } catch {
            unsafe vectors.removeSubrange(start...)
            throw error
        }
        unsafe frames.append((head, vectors.count, length))
    }

    /// Writes the gathered frames in order, telling `written` each one's chain, length and
    /// what became of it, and empties the batch.
    func write(
        to backend: any NetBackend, _ written: (_ head: UInt16, _ length: Int, _ result: Result<Bool, NetBackendError>) -> Void
    ) {
        var start = 0
        unsafe vectors.withUnsafeBufferPointer { all in
            for (head, end, length) in unsafe frames {
                let frame = unsafe UnsafeBufferPointer(rebasing: all[start..<end])
                written(head, length, Result { () throws(NetBackendError) in unsafe try backend.transmit(frame) })
                start = end
            }
        }
        unsafe vectors.removeAll(keepingCapacity: true)
        unsafe frames.removeAll(keepingCapacity: true)
    }
}
