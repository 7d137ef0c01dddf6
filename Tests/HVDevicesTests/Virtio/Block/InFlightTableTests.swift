@testable import HVDevices
import Testing

/// The table the queueing backends find their operations in by the index a completion carries.
@Suite("InFlightTable")
struct InFlightTableTests {
    /// Every entry can be used, one more is refused, and an index comes back once freed.
    @Test func entriesAreHandedOutUntilFullAndReused() {
        var table = InFlightTable<String>(capacity: 3)
        let indices = ["a", "b", "c"].compactMap { table.insert($0) }
        #expect(Set(indices) == [0, 1, 2] && table.count == 3)
        #expect(table.insert("d") == nil)
        #expect(table.remove(at: indices[1]) == "b")
        #expect(table.insert("e") == indices[1])
        #expect(table.elements.sorted() == ["a", "c", "e"])
    }

    /// Completions that name nothing the table holds (out of range, negative, taken already)
    /// find nothing and change nothing.
    @Test func unknownIndicesFindNothing() {
        var table = InFlightTable<Int>(capacity: 2)
        let index = table.insert(7)
        #expect(table.remove(at: -1) == nil && table.remove(at: 2) == nil && table.remove(at: Int.max) == nil)
        #expect(index.flatMap { table.remove(at: $0) } == 7)
        #expect(index.flatMap { table.remove(at: $0) } == nil)
        #expect(table.isEmpty && table.count == 0)
        #expect(InFlightTable<Int>(capacity: 0).capacity == 1)
    }
}
