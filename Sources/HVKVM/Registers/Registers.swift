import CKVM
import HVCore

/// The general-purpose registers, RIP and RFLAGS (struct kvm_regs).
public struct Registers: Hashable, Sendable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    /// The instruction pointer.
    public var rip: UInt64 = 0
    /// Bit 1 is reserved and always set on x86; the default value respects that.
    public var rflags: UInt64 = 0x2

    /// All registers zero, RFLAGS at its reserved bit.
    public init() {}

    init(_ raw: kvm_regs) {
        rax = raw.rax; rbx = raw.rbx; rcx = raw.rcx; rdx = raw.rdx
        rsi = raw.rsi; rdi = raw.rdi; rsp = raw.rsp; rbp = raw.rbp
        r8 = raw.r8; r9 = raw.r9; r10 = raw.r10; r11 = raw.r11
        r12 = raw.r12; r13 = raw.r13; r14 = raw.r14; r15 = raw.r15
        rip = raw.rip; rflags = raw.rflags
    }

    var raw: kvm_regs {
        kvm_regs(rax: rax, rbx: rbx, rcx: rcx, rdx: rdx, rsi: rsi, rdi: rdi, rsp: rsp, rbp: rbp,
                 r8: r8, r9: r9, r10: r10, r11: r11, r12: r12, r13: r13, r14: r14, r15: r15,
                 rip: rip, rflags: rflags)
    }
}

/// A segment register as KVM describes it (struct kvm_segment): the hidden part included.
public struct Segment: Hashable, Sendable {
    /// The segment's base address.
    public var base: UInt64 = 0
    /// The limit in bytes (KVM expands the descriptor's 4 KiB units when `g` is set).
    public var limit: UInt32 = 0xFFFF
    /// The selector loaded.
    public var selector: UInt16 = 0
    /// The descriptor type field (for example 0xB: execute/read code, accessed).
    public var type: UInt8 = 0
    /// Whether the segment is present.
    public var present: Bool = true
    /// The descriptor privilege level.
    public var dpl: UInt8 = 0
    /// Default operation size (1: 32-bit segment).
    public var db: Bool = false
    /// Code or data (true) versus system segment (false).
    public var s: Bool = true
    /// 64-bit code segment.
    public var l: Bool = false
    /// Granularity: the limit counts 4 KiB units.
    public var g: Bool = false
    /// The available-for-software bit.
    public var avl: Bool = false
    /// Whether the segment register holds no usable segment.
    public var unusable: Bool = false

    /// A present segment at 0 with a 64 KiB limit, every other field zero.
    public init() {}

    /// A segment with these fields.
    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool = true, dpl: UInt8 = 0,
                db: Bool = false, s: Bool = true, l: Bool = false, g: Bool = false) {
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.db = db
        self.s = s
        self.l = l
        self.g = g
    }

    init(_ raw: kvm_segment) {
        base = raw.base; limit = raw.limit; selector = raw.selector; type = raw.type
        present = raw.present != 0; dpl = raw.dpl; db = raw.db != 0; s = raw.s != 0
        l = raw.l != 0; g = raw.g != 0; avl = raw.avl != 0; unusable = raw.unusable != 0
    }

    var raw: kvm_segment {
        var segment = kvm_segment()
        segment.base = base; segment.limit = limit; segment.selector = selector; segment.type = type
        segment.present = present ? 1 : 0; segment.dpl = dpl; segment.db = db ? 1 : 0; segment.s = s ? 1 : 0
        segment.l = l ? 1 : 0; segment.g = g ? 1 : 0; segment.avl = avl ? 1 : 0; segment.unusable = unusable ? 1 : 0
        return segment
    }

    /// The 8-byte GDT descriptor that loads as this segment (for code and data segments).
    /// `limit` here is in bytes, as KVM wants it; with `g` set the descriptor stores it in
    /// 4 KiB units.
    public var gdtEntry: UInt64 {
        let limit = g ? self.limit >> 12 : self.limit
        let flags = (UInt64(g ? 1 : 0) << 3) | (UInt64(db ? 1 : 0) << 2) | (UInt64(l ? 1 : 0) << 1) | UInt64(avl ? 1 : 0)
        let access = (UInt64(present ? 1 : 0) << 7) | (UInt64(dpl & 3) << 5) | (UInt64(s ? 1 : 0) << 4) | UInt64(type & 0xF)
        return (base & 0xFF00_0000) << 32 | flags << 52 | (UInt64(limit) & 0xF_0000) << 32
            | access << 40 | (base & 0xFF_FFFF) << 16 | UInt64(limit) & 0xFFFF
    }
}

/// The GDT or IDT register.
public struct DescriptorTable: Hashable, Sendable {
    /// The table's linear address.
    public var base: UInt64 = 0
    /// The table's limit (size in bytes minus one).
    public var limit: UInt16 = 0xFFFF

    /// A table at `base` with `limit`.
    public init(base: UInt64 = 0, limit: UInt16 = 0xFFFF) {
        self.base = base
        self.limit = limit
    }
}

/// Segment registers, descriptor tables, control registers, EFER and the APIC base
/// (struct kvm_sregs).
public struct SpecialRegisters: Hashable, Sendable {
    public var cs = Segment(), ds = Segment(), es = Segment(), fs = Segment()
    public var gs = Segment(), ss = Segment(), tr = Segment(), ldt = Segment()
    public var gdt = DescriptorTable(), idt = DescriptorTable()
    public var cr0: UInt64 = 0, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, cr8: UInt64 = 0
    /// The extended feature enable register (long mode, NX, SYSCALL).
    public var efer: UInt64 = 0
    /// IA32_APIC_BASE.
    public var apicBase: UInt64 = 0
    /// Pending external interrupts, one bit per vector (256 bits).
    public var interruptBitmap: [UInt64] = [0, 0, 0, 0]

    /// Everything zero.
    public init() {}

    init(_ raw: kvm_sregs) {
        cs = Segment(raw.cs); ds = Segment(raw.ds); es = Segment(raw.es); fs = Segment(raw.fs)
        gs = Segment(raw.gs); ss = Segment(raw.ss); tr = Segment(raw.tr); ldt = Segment(raw.ldt)
        gdt = DescriptorTable(base: raw.gdt.base, limit: raw.gdt.limit)
        idt = DescriptorTable(base: raw.idt.base, limit: raw.idt.limit)
        cr0 = raw.cr0; cr2 = raw.cr2; cr3 = raw.cr3; cr4 = raw.cr4; cr8 = raw.cr8
        efer = raw.efer; apicBase = raw.apic_base
        let bitmap = raw.interrupt_bitmap
        interruptBitmap = [bitmap.0, bitmap.1, bitmap.2, bitmap.3]
    }

    var raw: kvm_sregs {
        var sregs = kvm_sregs()
        sregs.cs = cs.raw; sregs.ds = ds.raw; sregs.es = es.raw; sregs.fs = fs.raw
        sregs.gs = gs.raw; sregs.ss = ss.raw; sregs.tr = tr.raw; sregs.ldt = ldt.raw
        sregs.gdt.base = gdt.base; sregs.gdt.limit = gdt.limit
        sregs.idt.base = idt.base; sregs.idt.limit = idt.limit
        sregs.cr0 = cr0; sregs.cr2 = cr2; sregs.cr3 = cr3; sregs.cr4 = cr4; sregs.cr8 = cr8
        sregs.efer = efer; sregs.apic_base = apicBase
        let bitmap = interruptBitmap + [0, 0, 0, 0]
        sregs.interrupt_bitmap = (bitmap[0], bitmap[1], bitmap[2], bitmap[3])
        return sregs
    }
}

/// The x87 and SSE state (struct kvm_fpu).
public struct FPURegisters: Hashable, Sendable {
    /// ST0..ST7, each an 80-bit value in the low bytes of 16.
    public var x87: [UInt128] = Array(repeating: 0, count: 8)
    /// The x87 control word.
    public var fcw: UInt16 = 0x37F
    /// The x87 status word.
    public var fsw: UInt16 = 0
    /// The abridged tag word (one bit per register).
    public var ftwx: UInt8 = 0
    /// The last x87 opcode.
    public var lastOpcode: UInt16 = 0
    /// The last x87 instruction pointer.
    public var lastIP: UInt64 = 0
    /// The last x87 data pointer.
    public var lastDP: UInt64 = 0
    /// XMM0..XMM15.
    public var xmm: [UInt128] = Array(repeating: 0, count: 16)
    /// The SSE control and status register.
    public var mxcsr: UInt32 = 0x1F80

    /// The state after FNINIT, with MXCSR at its reset value.
    public init() {}

    init(_ raw: kvm_fpu) {
        var copy = raw
        x87 = unsafe withUnsafeBytes(of: &copy.fpr) { bytes in (0..<8).map { unsafe bytes.loadUnaligned(fromByteOffset: $0 * 16, as: UInt128.self) } }
        xmm = unsafe withUnsafeBytes(of: &copy.xmm) { bytes in (0..<16).map { unsafe bytes.loadUnaligned(fromByteOffset: $0 * 16, as: UInt128.self) } }
        fcw = raw.fcw; fsw = raw.fsw; ftwx = raw.ftwx; lastOpcode = raw.last_opcode
        lastIP = raw.last_ip; lastDP = raw.last_dp; mxcsr = raw.mxcsr
    }

    var raw: kvm_fpu {
        var fpu = kvm_fpu()
        unsafe withUnsafeMutableBytes(of: &fpu.fpr) { bytes in
            for (index, value) in x87.prefix(8).enumerated() { unsafe bytes.storeBytes(of: value, toByteOffset: index * 16, as: UInt128.self) }
        }
        unsafe withUnsafeMutableBytes(of: &fpu.xmm) { bytes in
            for (index, value) in xmm.prefix(16).enumerated() { unsafe bytes.storeBytes(of: value, toByteOffset: index * 16, as: UInt128.self) }
        }
        fpu.fcw = fcw; fpu.fsw = fsw; fpu.ftwx = ftwx; fpu.last_opcode = lastOpcode
        fpu.last_ip = lastIP; fpu.last_dp = lastDP; fpu.mxcsr = mxcsr
        return fpu
    }
}

/// DR0-DR3, DR6 and DR7 (struct kvm_debugregs).
public struct DebugRegisters: Hashable, Sendable {
    /// DR0-DR3, the breakpoint addresses.
    public var db: [UInt64] = [0, 0, 0, 0]
    /// DR6, the debug status.
    public var dr6: UInt64 = 0xFFFF0FF0
    /// DR7, the debug control.
    public var dr7: UInt64 = 0x400

    /// The registers' reset values.
    public init() {}

    init(_ raw: kvm_debugregs) {
        db = [raw.db.0, raw.db.1, raw.db.2, raw.db.3]
        dr6 = raw.dr6
        dr7 = raw.dr7
    }

    var raw: kvm_debugregs {
        var regs = kvm_debugregs()
        let values = db + [0, 0, 0, 0]
        regs.db = (values[0], values[1], values[2], values[3])
        regs.dr6 = dr6
        regs.dr7 = dr7
        return regs
    }
}

/// The local APIC's register page (struct kvm_lapic_state, 1 KiB).
public struct LAPICState: Hashable, Sendable {
    /// Bytes in the page.
    public static let size = 1024
    /// The page, as KVM lays it out.
    public var bytes: [UInt8]

    /// A page from `bytes`, cut or zero-padded to ``size``.
    public init(bytes: [UInt8]) {
        self.bytes = Array(bytes.prefix(Self.size)) + Array(repeating: 0, count: max(0, Self.size - bytes.count))
    }

    /// The 32-bit register at byte `offset` (for example 0x20 for the APIC ID, 0x350 LINT0).
    public subscript(register offset: Int) -> UInt32 {
        get {
            guard offset >= 0, offset + 4 <= Self.size else { return 0 }
            return unsafe bytes.withUnsafeBytes { unsafe $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
        }
        set {
            guard offset >= 0, offset + 4 <= Self.size else { return }
            unsafe bytes.withUnsafeMutableBytes { unsafe $0.storeBytes(of: newValue, toByteOffset: offset, as: UInt32.self) }
        }
    }
}

/// The multiprocessing state of a vCPU (KVM_MP_STATE_*).
public enum MPState: Hashable, Sendable {
    case runnable
    case uninitialized
    case initReceived
    case halted
    case sipiReceived
    case other(UInt32)

    init(_ raw: UInt32) {
        switch Int32(raw) {
        case KVM_MP_STATE_RUNNABLE: self = .runnable
        case KVM_MP_STATE_UNINITIALIZED: self = .uninitialized
        case KVM_MP_STATE_INIT_RECEIVED: self = .initReceived
        case KVM_MP_STATE_HALTED: self = .halted
        case KVM_MP_STATE_SIPI_RECEIVED: self = .sipiReceived
        default: self = .other(raw)
        }
    }

    var raw: UInt32 {
        switch self {
        case .runnable: return UInt32(KVM_MP_STATE_RUNNABLE)
        case .uninitialized: return UInt32(KVM_MP_STATE_UNINITIALIZED)
        case .initReceived: return UInt32(KVM_MP_STATE_INIT_RECEIVED)
        case .halted: return UInt32(KVM_MP_STATE_HALTED)
        case .sipiReceived: return UInt32(KVM_MP_STATE_SIPI_RECEIVED)
        case let .other(value): return value
        }
    }
}

extension Registers: GuestRegisterAccess {
    /// The register named by HVCore's `GeneralRegister`, so trap handlers (hypercalls) can
    /// read and write registers without knowing KVM.
    public subscript(register: GeneralRegister) -> UInt64 {
        get {
            switch register {
            case .rax: return rax
            case .rbx: return rbx
            case .rcx: return rcx
            case .rdx: return rdx
            case .rsi: return rsi
            case .rdi: return rdi
            case .rsp: return rsp
            case .rbp: return rbp
            case .r8: return r8
            case .r9: return r9
            case .r10: return r10
            case .r11: return r11
            case .r12: return r12
            case .r13: return r13
            case .r14: return r14
            case .r15: return r15
            case .rip: return rip
            case .rflags: return rflags
            }
        }
        set {
            switch register {
            case .rax: rax = newValue
            case .rbx: rbx = newValue
            case .rcx: rcx = newValue
            case .rdx: rdx = newValue
            case .rsi: rsi = newValue
            case .rdi: rdi = newValue
            case .rsp: rsp = newValue
            case .rbp: rbp = newValue
            case .r8: r8 = newValue
            case .r9: r9 = newValue
            case .r10: r10 = newValue
            case .r11: r11 = newValue
            case .r12: r12 = newValue
            case .r13: r13 = newValue
            case .r14: r14 = newValue
            case .r15: r15 = newValue
            case .rip: rip = newValue
            case .rflags: rflags = newValue
            }
        }
    }
}
