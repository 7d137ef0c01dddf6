import CKVM
import HVCore

// How each register set writes itself into a snapshot. Fields go in the order of their
// declarations; a change of order or meaning is a new section version (see VCPUState).

extension Registers: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        for value in [rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags] {
            encoder.append(value)
        }
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        self.init()
        rax = try decoder.read(); rbx = try decoder.read(); rcx = try decoder.read(); rdx = try decoder.read()
        rsi = try decoder.read(); rdi = try decoder.read(); rsp = try decoder.read(); rbp = try decoder.read()
        r8 = try decoder.read(); r9 = try decoder.read(); r10 = try decoder.read(); r11 = try decoder.read()
        r12 = try decoder.read(); r13 = try decoder.read(); r14 = try decoder.read(); r15 = try decoder.read()
        rip = try decoder.read(); rflags = try decoder.read()
    }
}

extension Segment: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(base)
        encoder.append(limit)
        encoder.append(selector)
        encoder.append(type)
        encoder.append(dpl)
        for flag in [present, db, s, l, g, avl, unusable] { encoder.append(flag) }
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        self.init()
        base = try decoder.read(); limit = try decoder.read(); selector = try decoder.read()
        type = try decoder.read(); dpl = try decoder.read()
        present = try decoder.read(); db = try decoder.read(); s = try decoder.read(); l = try decoder.read()
        g = try decoder.read(); avl = try decoder.read(); unusable = try decoder.read()
    }
}

extension DescriptorTable: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(base)
        encoder.append(limit)
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        self.init(base: try decoder.read(), limit: try decoder.read())
    }
}

extension SpecialRegisters: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        for segment in [cs, ds, es, fs, gs, ss, tr, ldt] { encoder.append(segment) }
        encoder.append(gdt)
        encoder.append(idt)
        for value in [cr0, cr2, cr3, cr4, cr8, efer, apicBase] { encoder.append(value) }
        for index in 0..<4 { encoder.append(index < interruptBitmap.count ? interruptBitmap[index] : 0) }
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        self.init()
        cs = try decoder.read(); ds = try decoder.read(); es = try decoder.read(); fs = try decoder.read()
        gs = try decoder.read(); ss = try decoder.read(); tr = try decoder.read(); ldt = try decoder.read()
        gdt = try decoder.read(); idt = try decoder.read()
        cr0 = try decoder.read(); cr2 = try decoder.read(); cr3 = try decoder.read(); cr4 = try decoder.read()
        cr8 = try decoder.read(); efer = try decoder.read(); apicBase = try decoder.read()
        interruptBitmap = [try decoder.read(), try decoder.read(), try decoder.read(), try decoder.read()]
    }
}

extension DebugRegisters: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        for index in 0..<4 { encoder.append(index < db.count ? db[index] : 0) }
        encoder.append(dr6)
        encoder.append(dr7)
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        self.init()
        db = [try decoder.read(), try decoder.read(), try decoder.read(), try decoder.read()]
        dr6 = try decoder.read()
        dr7 = try decoder.read()
    }
}

extension CPUIDEntry: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        for value in [function, index, flags, eax, ebx, ecx, edx] { encoder.append(value) }
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        self.init(function: try decoder.read(), index: try decoder.read(), flags: try decoder.read(),
                  eax: try decoder.read(), ebx: try decoder.read(), ecx: try decoder.read(), edx: try decoder.read())
    }
}

extension MPState: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(raw)
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        self.init(try decoder.read(UInt32.self))
    }
}

/// A kernel struct's bytes, for state KVM defines as a fixed C layout (the vCPU events, the
/// PIT, the interrupt controllers): saved as KVM hands them out, checked for size on restore.
func rawBytes<T>(of value: T) -> [UInt8] {
    var copy = value
    // SAFETY: reads the bytes of a local copy of a plain C struct.
    return unsafe withUnsafeBytes(of: &copy) { unsafe Array($0) }
}

/// The C struct whose bytes `bytes` are; refuses a size that is not the struct's.
func loadRaw<T>(_ bytes: [UInt8], into value: inout T, what: String) throws(SnapshotError) {
    guard bytes.count == MemoryLayout<T>.size else {
        throw .malformed(what: what, reason: "\(bytes.count) bytes where KVM's structure has \(MemoryLayout<T>.size)")
    }
    // SAFETY: exactly MemoryLayout<T>.size bytes are copied over a plain C struct (integers
    // only), for which any bit pattern is a value; KVM checks the fields when they are set.
    unsafe withUnsafeMutableBytes(of: &value) { destination in
        unsafe bytes.withUnsafeBytes { unsafe destination.copyMemory(from: $0) }
    }
}
