import HVCore
import SystemPackage

/// Why an ELF image was refused. Each case names the field that is wrong.
public enum ELFError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file is shorter than the structure that had to be read.
    case truncated(what: String, needed: UInt64, fileSize: UInt64)
    /// `e_ident` does not start with 0x7F 'E' 'L' 'F'.
    case badMagic
    /// `e_ident[EI_CLASS]` is not ELFCLASS64.
    case notELF64(classByte: UInt8)
    /// `e_ident[EI_DATA]` is not little-endian.
    case notLittleEndian(dataByte: UInt8)
    /// `e_ident[EI_VERSION]` or `e_version` is not 1.
    case badVersion(UInt32)
    /// `e_type` is not ET_EXEC.
    case notExecutable(type: UInt16)
    /// `e_machine` is not the one the loader was asked for.
    case wrongMachine(found: UInt16, expected: UInt16)
    /// `e_phentsize` is not the size of an Elf64_Phdr (56).
    case badProgramHeaderSize(UInt16)
    /// `e_phnum` is zero or more than the loader accepts.
    case badProgramHeaderCount(UInt16)
    /// Segment `index`: `p_filesz` is larger than `p_memsz`.
    case fileSizeExceedsMemorySize(segment: Int)
    /// Segment `index`: offset plus size, or address plus size, overflows.
    case segmentOverflows(segment: Int)
    /// Segments `first` and `second` load to overlapping guest addresses.
    case segmentsOverlap(first: Int, second: Int)
    /// No PT_LOAD segment with a non-zero size.
    case noLoadableSegment
    /// `e_entry` is not inside a loaded executable segment.
    case entryOutsideSegments(entry: UInt64)
    /// Segment `index` does not fit in guest RAM at its physical address.
    case segmentNotInRAM(segment: Int, GuestMemoryError)
    /// A note in PT_NOTE program header `segment`, `offset` bytes in, has a name or
    /// descriptor size that reaches past the segment.
    case badNote(segment: Int, offset: UInt64)
    /// The PT_NOTE segments hold more than ``ELF64Image/maximumNotes`` notes.
    case tooManyNotes
    /// The notes' names and descriptors add up to more than ``ELF64Image/maximumNoteBytes``.
    case tooManyNoteBytes
    /// Two PT_NOTE segments share file bytes (program headers `segment` and `other`).
    case overlappingNotes(segment: Int, other: Int)
    /// Reading the file failed.
    case io(path: String, Errno)

    /// What is wrong, naming the field.
    public var description: String {
        switch self {
        case let .truncated(what, needed, fileSize): return "ELF: \(what) needs \(needed) bytes but the file has \(fileSize)"
        case .badMagic: return "ELF: bad magic (e_ident does not start with 0x7F 'ELF')"
        case let .notELF64(byte): return "ELF: e_ident[EI_CLASS] is \(byte), not ELFCLASS64 (2)"
        case let .notLittleEndian(byte): return "ELF: e_ident[EI_DATA] is \(byte), not little-endian (1)"
        case let .badVersion(version): return "ELF: version \(version), expected 1"
        case let .notExecutable(type): return "ELF: e_type is \(type), not ET_EXEC (2)"
        case let .wrongMachine(found, expected): return "ELF: e_machine is \(found), expected \(expected)"
        case let .badProgramHeaderSize(size): return "ELF: e_phentsize is \(size), expected 56"
        case let .badProgramHeaderCount(count): return "ELF: e_phnum is \(count) (1 to \(ELF64Image.maximumProgramHeaders) accepted)"
        case let .fileSizeExceedsMemorySize(segment): return "ELF: program header \(segment) has p_filesz larger than p_memsz"
        case let .segmentOverflows(segment): return "ELF: program header \(segment) overflows (offset or address plus size)"
        case let .segmentsOverlap(first, second): return "ELF: program headers \(first) and \(second) load to overlapping addresses"
        case .noLoadableSegment: return "ELF: no PT_LOAD segment"
        case let .entryOutsideSegments(entry): return "ELF: e_entry 0x\(String(entry, radix: 16)) is not inside an executable PT_LOAD segment"
        case let .segmentNotInRAM(segment, error): return "ELF: program header \(segment) does not fit in guest RAM: \(error)"
        case let .badNote(segment, offset):
            return "ELF: the note at offset \(offset) of program header \(segment) reaches past the segment (n_namesz or n_descsz)"
        case .tooManyNotes: return "ELF: more than \(ELF64Image.maximumNotes) notes in the PT_NOTE segments"
        case .tooManyNoteBytes: return "ELF: the notes hold more than \(ELF64Image.maximumNoteBytes) bytes"
        case let .overlappingNotes(segment, other):
            return "ELF: the PT_NOTE segments of program headers \(segment) and \(other) overlap"
        case let .io(path, errno): return "ELF: cannot read \(path): \(errno)"
        }
    }
}
