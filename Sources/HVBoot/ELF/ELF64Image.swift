import HVCore
import SystemPackage

/// A parsed, validated 64-bit little-endian ELF executable, ready to load into guest memory.
///
/// Every header field is checked before use; a truncated or hostile image is refused with an
/// ``ELFError`` that names the field. Segments load at their physical address (`p_paddr`),
/// which is what a guest that starts with paging off or identity-mapped expects (Linux's
/// vmlinux, unikernels, HVKit's test guests).
public struct ELF64Image: Sendable {
    /// A PT_LOAD segment.
    public struct Segment: Sendable, Hashable {
        /// Index of the program header, for error messages.
        public let index: Int
        /// Where the segment's bytes start in the file.
        public let fileOffset: UInt64
        /// How many bytes the file holds for it.
        public let fileSize: UInt64
        /// Its size in memory; the bytes past ``fileSize`` are zeroed (bss).
        public let memorySize: UInt64
        /// Where it is loaded (p_paddr).
        public let physicalAddress: GuestAddress
        /// Where the image expects it (p_vaddr), for images that map themselves.
        public let virtualAddress: UInt64
        /// PF_X, PF_W, PF_R bits.
        public let flags: UInt32

        /// Whether the segment is executable (PF_X).
        public var isExecutable: Bool { flags & 1 != 0 }
        /// Whether guest-physical `address` lies inside the segment's memory.
        public func containsPhysical(_ address: UInt64) -> Bool {
            address >= physicalAddress.rawValue && address - physicalAddress.rawValue < memorySize
        }
        /// The guest-physical range the segment occupies.
        public var range: GuestAddressRange? { try? GuestAddressRange(start: physicalAddress, length: memorySize) }
    }

    /// A program header of any type (PT_NOTE, PT_DYNAMIC, ...), for callers that look further.
    public struct ProgramHeader: Sendable, Hashable {
        /// p_type (1 PT_LOAD, 4 PT_NOTE, ...).
        public let type: UInt32
        /// p_flags (PF_X 1, PF_W 2, PF_R 4).
        public let flags: UInt32
        /// p_offset.
        public let fileOffset: UInt64
        /// p_vaddr.
        public let virtualAddress: UInt64
        /// p_paddr.
        public let physicalAddress: UInt64
        /// p_filesz.
        public let fileSize: UInt64
        /// p_memsz.
        public let memorySize: UInt64
        /// p_align.
        public let alignment: UInt64
    }

    /// EM_X86_64.
    public static let machineX86_64: UInt16 = 62
    /// More program headers than this is not a kernel or a guest; refuse it.
    public static let maximumProgramHeaders: UInt16 = 256
    static let headerSize: UInt64 = 64
    static let programHeaderSize: UInt64 = 56
    static let typeLoad: UInt32 = 1

    /// The entry point (`e_entry`), inside an executable segment.
    public let entry: GuestAddress
    /// e_machine, checked against the expected machine.
    public let machine: UInt16
    /// The PT_LOAD segments with a non-zero memory size, in file order.
    public let segments: [Segment]
    /// All program headers.
    public let programHeaders: [ProgramHeader]
    /// The file's bytes.
    public let bytes: [UInt8]

    /// Parses and validates `bytes` as an ELF64 executable for `machine`.
    public init(bytes: [UInt8], machine expectedMachine: UInt16 = ELF64Image.machineX86_64) throws(ELFError) {
        self.bytes = bytes
        let reader = ByteReader(bytes: bytes)
        let fileSize = UInt64(bytes.count)
        guard fileSize >= Self.headerSize else {
            throw .truncated(what: "the ELF header", needed: Self.headerSize, fileSize: fileSize)
        }
        guard bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else { throw .badMagic }
        guard bytes[4] == 2 else { throw .notELF64(classByte: bytes[4]) }
        guard bytes[5] == 1 else { throw .notLittleEndian(dataByte: bytes[5]) }
        guard bytes[6] == 1 else { throw .badVersion(UInt32(bytes[6])) }
        let type = reader.u16(16)
        guard type == 2 else { throw .notExecutable(type: type) }
        machine = reader.u16(18)
        guard machine == expectedMachine else { throw .wrongMachine(found: machine, expected: expectedMachine) }
        let version = reader.u32(20)
        guard version == 1 else { throw .badVersion(version) }
        let entryPoint = reader.u64(24)
        let tableOffset = reader.u64(32)
        let entrySize = reader.u16(54)
        let count = reader.u16(56)
        guard UInt64(entrySize) == Self.programHeaderSize else { throw .badProgramHeaderSize(entrySize) }
        guard count > 0, count <= Self.maximumProgramHeaders else { throw .badProgramHeaderCount(count) }
        let tableSize = UInt64(count) * Self.programHeaderSize
        let (tableEnd, tableOverflow) = tableOffset.addingReportingOverflow(tableSize)
        guard !tableOverflow, tableEnd <= fileSize else {
            throw .truncated(what: "the program header table (e_phoff 0x\(String(tableOffset, radix: 16)), \(count) entries)",
                             needed: tableOverflow ? UInt64.max : tableEnd, fileSize: fileSize)
        }

        var headers: [ProgramHeader] = []
        var loads: [Segment] = []
        for index in 0..<Int(count) {
            let base = Int(tableOffset) + index * Int(Self.programHeaderSize)
            let header = ProgramHeader(
                type: reader.u32(base), flags: reader.u32(base + 4), fileOffset: reader.u64(base + 8),
                virtualAddress: reader.u64(base + 16), physicalAddress: reader.u64(base + 24),
                fileSize: reader.u64(base + 32), memorySize: reader.u64(base + 40), alignment: reader.u64(base + 48))
            headers.append(header)
            guard header.type == Self.typeLoad, header.memorySize > 0 else { continue }
            guard header.fileSize <= header.memorySize else { throw .fileSizeExceedsMemorySize(segment: index) }
            let (fileEnd, fileOverflow) = header.fileOffset.addingReportingOverflow(header.fileSize)
            let (_, addressOverflow) = header.physicalAddress.addingReportingOverflow(header.memorySize)
            guard !fileOverflow, !addressOverflow else { throw .segmentOverflows(segment: index) }
            guard fileEnd <= fileSize else {
                throw .truncated(what: "program header \(index)'s contents", needed: fileEnd, fileSize: fileSize)
            }
            loads.append(Segment(index: index, fileOffset: header.fileOffset, fileSize: header.fileSize,
                                 memorySize: header.memorySize, physicalAddress: GuestAddress(header.physicalAddress),
                                 virtualAddress: header.virtualAddress, flags: header.flags))
        }
        guard !loads.isEmpty else { throw .noLoadableSegment }
        for first in loads.indices {
            for second in loads.indices where second > first {
                if let a = loads[first].range, let b = loads[second].range, a.overlaps(b) {
                    throw .segmentsOverlap(first: loads[first].index, second: loads[second].index)
                }
            }
        }
        // The entry is a virtual address; it must fall in an executable segment, and is
        // translated to that segment's physical address. Some kernels give a physical entry
        // instead (x86-64 vmlinux: phys_startup_64, with segments linked high): an entry
        // inside an executable segment's physical range is taken as it is.
        if let code = loads.first(where: { segment in
            segment.isExecutable && entryPoint >= segment.virtualAddress
                && entryPoint - segment.virtualAddress < segment.memorySize
        }) {
            entry = GuestAddress(code.physicalAddress.rawValue + (entryPoint - code.virtualAddress))
        } else if loads.contains(where: { $0.isExecutable && $0.containsPhysical(entryPoint) }) {
            entry = GuestAddress(entryPoint)
        } else {
            throw .entryOutsideSegments(entry: entryPoint)
        }
        segments = loads
        programHeaders = headers
    }

    /// Reads and parses the file at `path`.
    public init(contentsOf path: FilePath, machine: UInt16 = ELF64Image.machineX86_64) throws(ELFError) {
        let bytes: [UInt8]
        do {
            bytes = try HostFile.readAll(path)
        } catch {
            throw .io(path: path.string, error)
        }
        try self.init(bytes: bytes, machine: machine)
    }

    /// Reads and validates the ELF file at `path`, given as a `String`.
    public init(contentsOf path: String, machine: UInt16 = ELF64Image.machineX86_64) throws(ELFError) {
        try self.init(contentsOf: FilePath(path), machine: machine)
    }

    /// The lowest and highest guest-physical addresses the segments occupy.
    public var loadedRange: GuestAddressRange? {
        guard let low = segments.map(\.physicalAddress).min(),
              let high = segments.compactMap({ $0.range?.lastAddress }).max() else { return nil }
        return try? GuestAddressRange(start: low, length: high.rawValue - low.rawValue + 1)
    }

    /// Copies every segment into guest memory at its physical address and zeroes the part of
    /// each segment beyond its file contents (the .bss). Nothing is written unless every
    /// segment fits in writable RAM.
    public func load(into memory: some GuestMemory) throws(ELFError) {
        for segment in segments {
            do {
                try memory.validateRange(segment.physicalAddress, length: segment.memorySize, for: .write)
            } catch {
                throw .segmentNotInRAM(segment: segment.index, error)
            }
        }
        for segment in segments {
            do throws(GuestMemoryError) {
                if segment.fileSize > 0 {
                    let start = Int(segment.fileOffset)
                    let written: Result<Void, GuestMemoryError> = unsafe bytes.withUnsafeBytes { file in
                        // init checked fileOffset + fileSize <= bytes.count.
                        let contents = unsafe UnsafeRawBufferPointer(rebasing: file[start..<(start + Int(segment.fileSize))])
                        do throws(GuestMemoryError) {
                            unsafe try memory.write(contents, to: segment.physicalAddress)
                            return .success(())
                        } catch {
                            return .failure(error)
                        }
                    }
                    try written.get()
                }
                let bss = segment.memorySize - segment.fileSize
                if bss > 0 {
                    try memory.fill(0, at: try segment.physicalAddress.checkedAdd(segment.fileSize), length: bss)
                }
            } catch {
                throw .segmentNotInRAM(segment: segment.index, error)
            }
        }
    }
}

/// Little-endian field reads at offsets the caller has bounds-checked.
struct ByteReader {
    let bytes: [UInt8]

    func u16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
    func u32(_ offset: Int) -> UInt32 { UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16 }
    func u64(_ offset: Int) -> UInt64 { UInt64(u32(offset)) | UInt64(u32(offset + 4)) << 32 }
}
