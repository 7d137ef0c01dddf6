/// The x86-64 general registers a trap handler can read and write.
public enum GeneralRegister: Int, CaseIterable, Sendable {
    case rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp
    case r8, r9, r10, r11, r12, r13, r14, r15
    case rip, rflags
}

/// Read and write access to the general registers of the vCPU that trapped.
///
/// HVKVM's `Registers` conforms; a backend without KVM (or a test) supplies its own. The
/// values are the guest's: hostile, and only as meaningful as the guest made them.
public protocol GuestRegisterAccess {
    subscript(register: GeneralRegister) -> UInt64 { get set }
}

/// A plain register file, for tests and for backends that hold registers themselves.
public struct GuestRegisterFile: GuestRegisterAccess, Sendable, Hashable {
    private var values = [UInt64](repeating: 0, count: GeneralRegister.allCases.count)

    /// A register file with every register zero.
    public init() {}

    /// A register file with `values` set and the rest zero.
    public init(_ values: [GeneralRegister: UInt64]) {
        for (register, value) in values { self[register] = value }
    }

    /// The value of `register`.
    public subscript(register: GeneralRegister) -> UInt64 {
        get { values[register.rawValue] }
        set { values[register.rawValue] = newValue }
    }
}
