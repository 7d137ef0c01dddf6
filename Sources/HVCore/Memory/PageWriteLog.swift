import CHVCoreShims

/// The pages of one region of guest RAM that the VMM wrote: devices filling buffers, hypercall
/// services, the loader. A diff snapshot saves these besides the pages KVM's dirty log names,
/// because KVM sees only the guest's own writes. One bit per 4 KiB page, set with an atomic OR
/// by whichever thread writes, taken and cleared at once by ``takePages()``.
@safe final class PageWriteLog: Sendable {
    static let pageSize: UInt64 = 4096
    // SAFETY: allocated for `wordCount` words in init, freed in deinit, touched only through
    // the atomic shims.
    nonisolated(unsafe) private let words: UnsafeMutablePointer<UInt64>
    private let wordCount: Int
    /// The pages the region has.
    let pageCount: UInt64

    init(regionSize: UInt64) {
        pageCount = (regionSize + Self.pageSize - 1) / Self.pageSize
        wordCount = Int((pageCount + 63) / 64)
        unsafe words = .allocate(capacity: max(wordCount, 1))
        unsafe words.initialize(repeating: 0, count: max(wordCount, 1))
    }

    deinit {
        unsafe words.deallocate()
    }

    /// Marks the pages of `[offset, offset + length)` (relative to the region's start, already
    /// checked to lie inside it) as written.
    func mark(offset: UInt64, length: UInt64) {
        guard length > 0 else { return }
        var page = offset / Self.pageSize
        let last = min((offset + length - 1) / Self.pageSize, pageCount - 1)
        while page <= last {
            let word = Int(page / 64)
            // The bits of this word from `page` to `last`.
            let first = page % 64
            let end = min(last - page + first, 63)
            let bits: UInt64 = end == 63 ? ~UInt64(0) << first : ((UInt64(1) << (end + 1)) - 1) & (~UInt64(0) << first)
            // SAFETY: word < wordCount, since page <= last < pageCount.
            unsafe hv_atomic_or_u64(words + word, bits)
            page += end - first + 1
        }
    }

    /// The pages written since the last call, ascending, and clears them.
    func takePages() -> [UInt64] {
        var pages: [UInt64] = []
        for index in 0..<wordCount {
            // SAFETY: index < wordCount.
            var bits = unsafe hv_atomic_take_u64(words + index)
            while bits != 0 {
                pages.append(UInt64(index) * 64 + UInt64(bits.trailingZeroBitCount))
                bits &= bits - 1
            }
        }
        return pages
    }
}
