import HVCore

/// One entry of an ELF note segment (PT_NOTE): an owner name, a type the owner defines, and
/// a descriptor. Boot protocols use them to say how an image wants to be entered (Xen's PVH
/// entry point, for one).
public struct ELFNote: Sendable, Hashable {
    /// The owner, without its terminating NUL ("Xen", "GNU", "Linux").
    public let name: String
    /// The note's type, in the owner's numbering.
    public let type: UInt32
    /// The descriptor (the note's payload).
    public let descriptor: [UInt8]

    /// A note owned by `name`.
    public init(name: String, type: UInt32, descriptor: [UInt8]) {
        self.name = name
        self.type = type
        self.descriptor = descriptor
    }
}

extension ELF64Image {
    static let typeNote: UInt32 = 4
    static let noteHeaderSize: UInt64 = 12
    /// More notes than this in one image is not a kernel or a guest (Linux has about 20): the
    /// image is refused before it can make the parser allocate millions of them.
    public static let maximumNotes = 4096
    /// The most note bytes (names and descriptors) one image may hold: Linux's are a few
    /// hundred. Together with the refusal of overlapping PT_NOTE segments, this bounds what
    /// parsing the notes allocates, whatever the program headers say.
    public static let maximumNoteBytes = 1 << 20

    /// The notes of every PT_NOTE segment, in file order. A note whose sizes reach past its
    /// segment (or past the file) is refused with ``ELFError/badNote(segment:offset:)``; more
    /// than ``maximumNotes`` notes with ``ELFError/tooManyNotes``; more than
    /// ``maximumNoteBytes`` of them with ``ELFError/tooManyNoteBytes``; PT_NOTE segments that
    /// share file bytes (the same note read many times over) with
    /// ``ELFError/overlappingNotes(segment:other:)``. The parse reads nothing outside the
    /// segments.
    public func notes() throws(ELFError) -> [ELFNote] {
        let reader = ByteReader(bytes: bytes)
        var notes: [ELFNote] = []
        var noteBytes: UInt64 = 0
        let noteSegments = programHeaders.enumerated().filter { $0.element.type == Self.typeNote && $0.element.fileSize > 0 }
        // Sorted by offset, each must end before the next begins.
        let byOffset = noteSegments.sorted { $0.element.fileOffset < $1.element.fileOffset }
        for (first, second) in zip(byOffset, byOffset.dropFirst()) {
            let (end, overflow) = first.element.fileOffset.addingReportingOverflow(first.element.fileSize)
            if overflow || end > second.element.fileOffset { throw .overlappingNotes(segment: first.offset, other: second.offset) }
        }
        for (index, header) in noteSegments {
            let (end, overflow) = header.fileOffset.addingReportingOverflow(header.fileSize)
            guard !overflow, end <= UInt64(bytes.count) else {
                throw .truncated(what: "program header \(index)'s notes", needed: overflow ? .max : end, fileSize: UInt64(bytes.count))
            }
            // Name and descriptor are padded to the segment's alignment: 4, or 8 for notes
            // laid out as 64-bit (GNU property notes).
            let alignment: UInt64 = header.alignment == 8 ? 8 : 4
            var offset: UInt64 = 0
            while header.fileSize - offset >= Self.noteHeaderSize {
                let base = Int(header.fileOffset + offset)
                let nameSize = UInt64(reader.u32(base))
                let descriptorSize = UInt64(reader.u32(base + 4))
                let type = reader.u32(base + 8)
                // Each size is at most 2^32 - 1, so these sums cannot overflow a UInt64.
                let nameStart = offset + Self.noteHeaderSize
                let descriptorStart = nameStart + (nameSize + alignment - 1) / alignment * alignment
                let next = descriptorStart + (descriptorSize + alignment - 1) / alignment * alignment
                // The last note may omit its final padding.
                guard descriptorStart + descriptorSize <= header.fileSize else { throw .badNote(segment: index, offset: offset) }
                guard notes.count < Self.maximumNotes else { throw .tooManyNotes }
                noteBytes += nameSize + descriptorSize
                guard noteBytes <= UInt64(Self.maximumNoteBytes) else { throw .tooManyNoteBytes }
                let nameBytes = bytes[Int(header.fileOffset + nameStart)..<Int(header.fileOffset + nameStart + nameSize)]
                let descriptor = bytes[Int(header.fileOffset + descriptorStart)..<Int(header.fileOffset + descriptorStart + descriptorSize)]
                notes.append(ELFNote(name: String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self), type: type,
                                     descriptor: Array(descriptor)))
                offset = min(next, header.fileSize)
            }
        }
        return notes
    }
}
