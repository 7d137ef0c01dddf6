@testable import HVBoot
import HVCore
import HVTestSupport
import Testing

/// An image whose payload is 16 bytes of code, then `notes` in a PT_NOTE segment.
private func image(notes: [UInt8], alignment: UInt64 = 4, declaredSize: UInt64? = nil) throws -> ELF64Image {
    var builder = ELFBuilder()
    builder.payload = Array(1...16) + notes
    builder.segments.append(.init(type: 4, flags: 4, offset: 0x110, address: 0, fileSize: declaredSize ?? UInt64(notes.count),
                                  memorySize: 0, alignment: alignment))
    return try ELF64Image(bytes: builder.bytes)
}

@Suite struct ELFNoteTests {
    @Test func readsEveryNoteWithItsPadding() throws {
        let notes = elfNote(name: "Xen", type: 18, descriptor: [0x50, 0x08, 0, 1, 0, 0, 0, 0])
            + elfNote(name: "GNU", type: 3, descriptor: [1, 2, 3, 4, 5])
            + elfNote(name: "Linux", type: 6, descriptor: [])
        #expect(try image(notes: notes).notes() == [
            ELFNote(name: "Xen", type: 18, descriptor: [0x50, 0x08, 0, 1, 0, 0, 0, 0]),
            ELFNote(name: "GNU", type: 3, descriptor: [1, 2, 3, 4, 5]),
            ELFNote(name: "Linux", type: 6, descriptor: []),
        ])
    }

    @Test func eightByteAlignedNotesArePaddedToEight() throws {
        let notes = elfNote(name: "GNU", type: 5, descriptor: [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9], alignment: 8)
            + elfNote(name: "Go", type: 4, descriptor: [7], alignment: 8)
        #expect(try image(notes: notes, alignment: 8).notes().map(\.descriptor) == [[UInt8](repeating: 9, count: 12), [7]])
    }

    @Test func anImageWithoutNotesHasNone() throws {
        #expect(try ELF64Image(bytes: ELFBuilder().bytes).notes().isEmpty)
    }

    @Test("a note whose sizes reach past its segment is refused", arguments: [
        elfNote(name: "Xen", type: 18, descriptor: [1, 2, 3, 4], descriptorSize: 8),
        elfNote(name: "Xen", type: 18, descriptor: [1, 2, 3, 4], nameSize: 0xFFFF_FFFF),
        elfNote(name: "Xen", type: 18, descriptor: [1, 2, 3, 4], descriptorSize: 0xFFFF_FFFF),
        elfNote(name: "Xen", type: 18, descriptor: [1, 2, 3, 4], nameSize: 0xFFFF_FFFF, descriptorSize: 0xFFFF_FFFF),
    ])
    func lyingSizes(notes: [UInt8]) throws {
        #expect(throws: ELFError.badNote(segment: 1, offset: 0)) { try image(notes: notes).notes() }
    }

    @Test func aNoteSegmentPastTheFileIsRefused() throws {
        let notes = elfNote(name: "Xen", type: 18, descriptor: [1, 2, 3, 4])
        #expect(throws: ELFError.self) { try image(notes: notes, declaredSize: 0x1_0000).notes() }
        #expect(throws: ELFError.self) { try image(notes: notes, declaredSize: .max).notes() }
    }

    @Test func tooManyNotesAreRefused() throws {
        let empty = elfNote(name: "", type: 1, descriptor: [])
        let atLimit = [[UInt8]](repeating: empty, count: ELF64Image.maximumNotes).flatMap { $0 }
        #expect(try image(notes: atLimit).notes().count == ELF64Image.maximumNotes)
        #expect(throws: ELFError.tooManyNotes) { try image(notes: atLimit + empty).notes() }
    }

    /// Many PT_NOTE headers over one large note once made the parser copy the note once per
    /// header (4.1 GiB for a 16 MiB image): overlapping note segments are refused before any
    /// note is read.
    @Test func manyNoteSegmentsOverOneNoteAreRefused() throws {
        let note = elfNote(name: "Xen", type: 18, descriptor: [UInt8](repeating: 7, count: 64 << 10))
        var builder = ELFBuilder()
        builder.headerArea = 64 + 256 * 56
        let payloadOffset = UInt64(builder.headerArea)
        builder.payload = note
        builder.segments = [.init(offset: payloadOffset, address: 0x100000, fileSize: 16, memorySize: 16)]
            + (0..<255).map { _ in .init(type: 4, flags: 4, offset: payloadOffset, address: 0, fileSize: UInt64(note.count), memorySize: 0, alignment: 4) }
        let image = try ELF64Image(bytes: builder.bytes)
        #expect(throws: ELFError.overlappingNotes(segment: 1, other: 2)) { try image.notes() }
        // One segment with the same note is fine.
        builder.segments = Array(builder.segments.prefix(2))
        #expect(try ELF64Image(bytes: builder.bytes).notes().map(\.descriptor.count) == [64 << 10])
    }

    @Test func notesLargerThanTheCapAreRefused() throws {
        let big = elfNote(name: "X", type: 1, descriptor: [UInt8](repeating: 1, count: ELF64Image.maximumNoteBytes))
        #expect(throws: ELFError.tooManyNoteBytes) { try image(notes: big).notes() }
        let fits = elfNote(name: "", type: 1, descriptor: [UInt8](repeating: 1, count: ELF64Image.maximumNoteBytes - 8))
        #expect(try image(notes: fits).notes().count == 1)
    }

    @Test func trailingBytesShorterThanANoteHeaderAreIgnored() throws {
        let notes = elfNote(name: "Xen", type: 18, descriptor: [1, 2, 3, 4]) + [0, 0, 0, 0]
        #expect(try image(notes: notes).notes().count == 1)
    }

    @Test func randomNoteBytesNeverCrashTheParser() throws {
        var generator = SystemRandomNumberGenerator()
        let valid = elfNote(name: "Xen", type: 18, descriptor: [1, 2, 3, 4, 5, 6, 7, 8])
            + elfNote(name: "GNU", type: 3, descriptor: [1, 2, 3])
        for _ in 0..<2000 {
            var notes = valid
            for _ in 0..<3 { notes[Int.random(in: 0..<notes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            if let parsed = try? image(notes: notes).notes() {
                #expect(parsed.allSatisfy { $0.descriptor.count <= notes.count })
            }
        }
    }
}
