/// The operations a queueing backend has in the kernel, in a table as large as the kernel's
/// queue: an operation's index is what its completion carries back (io_uring's user_data, the
/// position of an AIO iocb in its array), so recording and finding one is an array access, and
/// a free list hands out the indices. (The dictionaries this replaced hashed twice per request.)
struct InFlightTable<Element> {
    private var slots: [Element?]
    private var free: [Int]

    /// A table of `capacity` entries (at least one).
    init(capacity: Int) {
        slots = Array(repeating: nil, count: max(capacity, 1))
        free = Array((0..<max(capacity, 1)).reversed())
    }

    /// Entries the table holds.
    var capacity: Int { slots.count }
    /// Entries in use.
    var count: Int { slots.count - free.count }
    /// Whether no entry is in use.
    var isEmpty: Bool { free.count == slots.count }
    /// The entries in use.
    var elements: [Element] { slots.compactMap { $0 } }

    /// Records `element` and returns its index; nil when every entry is in use.
    mutating func insert(_ element: Element) -> Int? {
        guard let index = free.popLast() else { return nil }
        slots[index] = element
        return index
    }

    /// Takes the element at `index`; nil for an index out of range or not in use (a
    /// completion the backend did not queue).
    mutating func remove(at index: Int) -> Element? {
        guard slots.indices.contains(index), let element = slots[index] else { return nil }
        slots[index] = nil
        free.append(index)
        return element
    }
}
