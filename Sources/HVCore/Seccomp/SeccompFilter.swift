import CHVCoreShims
import Glibc
import SystemPackage

/// What the kernel does with a system call a ``SeccompFilter`` does not allow.
public enum SeccompAction: Sendable, Hashable {
    /// Kill the whole process with SIGSYS (the default: a VMM with one thread gone would hang).
    case killProcess
    /// Kill only the calling thread, as if by SIGSYS.
    case killThread
    /// Send the thread SIGSYS, which a handler may catch.
    case trap
    /// Fail the call with this errno.
    case errno(Int32)
    /// Allow the call but log it (the kernel's audit log): for finding what a profile misses.
    case log

    /// SECCOMP_RET_* with its data.
    var returnValue: UInt32 {
        switch self {
        case .killProcess: 0x8000_0000
        case .killThread: 0x0000_0000
        case .trap: 0x0003_0000
        case let .errno(code): 0x0005_0000 | (UInt32(truncatingIfNeeded: code) & 0xFFFF)
        case .log: 0x7FFC_0000
        }
    }
}

/// One allowed system call, optionally only when an argument matches: `(argument & mask) == value`
/// on the argument's low 32 bits (an ioctl's request, say).
public struct SeccompRule: Hashable, Sendable {
    /// The call allowed.
    public var call: SystemCall
    /// The argument checked (0...5), its mask and the value it must have; nil: any arguments.
    public var argument: (index: Int, mask: UInt32, value: UInt32)?

    /// Allows `call` with any arguments.
    public init(_ call: SystemCall) {
        self.call = call
        argument = nil
    }

    /// Allows `call` when `(argument[index] & mask) == value` (low 32 bits).
    public init(_ call: SystemCall, argument index: Int, mask: UInt32, value: UInt32) {
        self.call = call
        argument = (index, mask, value)
    }

    /// Equal when the call and the argument check are.
    public static func == (lhs: SeccompRule, rhs: SeccompRule) -> Bool {
        lhs.call == rhs.call && lhs.argument?.index == rhs.argument?.index
            && lhs.argument?.mask == rhs.argument?.mask && lhs.argument?.value == rhs.argument?.value
    }

    /// Hashes the call and the argument check.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(call)
        hasher.combine(argument?.index)
        hasher.combine(argument?.mask)
        hasher.combine(argument?.value)
    }

    /// An ioctl whose request's type byte is `type` (0xAE for KVM's): the request encodes its
    /// type in bits 8 to 15.
    public static func ioctl(type: UInt8) -> SeccompRule {
        SeccompRule(.ioctl, argument: 1, mask: 0xFF00, value: UInt32(type) << 8)
    }
}

/// Why a seccomp filter could not be installed.
public enum SeccompError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The program would exceed the kernel's 4096 instructions.
    case tooManyRules(Int)
    /// An argument index outside 0...5.
    case badArgumentIndex(Int)
    /// prctl(PR_SET_NO_NEW_PRIVS) or seccomp(SECCOMP_SET_MODE_FILTER) failed.
    case install(Errno)

    /// What went wrong.
    public var description: String {
        switch self {
        case let .tooManyRules(count): "a seccomp filter of \(count) rules is larger than the kernel's 4096 instructions"
        case let .badArgumentIndex(index): "system call argument \(index) does not exist (0...5)"
        case let .install(errno): "installing the seccomp filter failed: \(errno)"
        }
    }
}

/// An allow list of system calls for one kind of thread, compiled to a classic BPF program and
/// installed with seccomp on the calling thread (Firecracker installs one per thread kind the
/// same way): a call not on the list meets ``mismatchAction``; a call from any architecture
/// but x86-64 (the x32 ABI included) kills the process.
///
/// A filter applies to the thread that installs it and to threads it creates afterwards; it
/// cannot be removed. Build the list from what the thread really does (strace -f shows it),
/// and test it in a real run: a missing call kills the VMM at the worst moment.
public struct SeccompFilter: Sendable, Hashable {
    /// The calls allowed.
    public var rules: [SeccompRule]
    /// Calls that fail with an errno instead of running (clone3 with ENOSYS, so that glibc
    /// falls back to clone, whose flags a filter can check).
    public var failing: [SystemCall: Int32]
    /// What happens to any other call.
    public var mismatchAction: SeccompAction

    /// A filter allowing `rules`, failing `failing` with their errno, and meeting anything else
    /// with `mismatchAction`.
    public init(allowing rules: [SeccompRule], failing: [SystemCall: Int32] = [:], mismatchAction: SeccompAction = .killProcess) {
        self.rules = rules
        self.failing = failing
        self.mismatchAction = mismatchAction
    }

    /// A filter allowing `calls` with any arguments.
    public init(allowing calls: [SystemCall], mismatchAction: SeccompAction = .killProcess) {
        self.init(allowing: calls.map { SeccompRule($0) }, mismatchAction: mismatchAction)
    }

    /// Whether the filter lets `call` run when its arguments are `arguments` (what the BPF
    /// program decides, evaluated here: for tests and for explaining a kill).
    public func allows(_ call: SystemCall, arguments: [UInt64] = []) -> Bool {
        rules.contains { rule in
            guard rule.call.number == call.number else { return false }
            guard let check = rule.argument else { return true }
            let value = check.index < arguments.count ? UInt32(truncatingIfNeeded: arguments[check.index]) : 0
            return value & check.mask == check.value
        }
    }

    /// The BPF program: check the architecture, then each rule, then the mismatch action.
    public func program() throws(SeccompError) -> [SeccompInstruction] {
        let allow: UInt32 = 0x7FFF_0000
        let killProcess = SeccompAction.killProcess.returnValue
        let auditArchX86_64: UInt32 = 0xC000_003E
        let x32Bit: UInt32 = 0x4000_0000
        var program: [SeccompInstruction] = [
            .load(offset: 4),  // seccomp_data.arch
            .jumpIfEqual(auditArchX86_64, skipIfTrue: 1, skipIfFalse: 0),
            .return(killProcess),
            .load(offset: 0),  // seccomp_data.nr
            .jumpIfGreaterOrEqual(x32Bit, skipIfTrue: 0, skipIfFalse: 1),
            .return(killProcess),
        ]
        // Plain rules first: one comparison each against the number already loaded.
        var seen = Set<UInt32>()
        for rule in rules where rule.argument == nil && seen.insert(rule.call.number).inserted {
            program.append(.jumpIfEqual(rule.call.number, skipIfTrue: 0, skipIfFalse: 1))
            program.append(.return(allow))
        }
        for (call, code) in failing.sorted(by: { $0.key.number < $1.key.number }) {
            program.append(.jumpIfEqual(call.number, skipIfTrue: 0, skipIfFalse: 1))
            program.append(.return(SeccompAction.errno(code).returnValue))
        }
        // Rules with an argument check reload the number, since the check replaces it.
        for rule in rules {
            guard let argument = rule.argument else { continue }
            guard (0...5).contains(argument.index) else { throw .badArgumentIndex(argument.index) }
            program.append(.load(offset: 0))
            program.append(.jumpIfEqual(rule.call.number, skipIfTrue: 0, skipIfFalse: 4))
            // seccomp_data.args[index], low half (little-endian).
            program.append(.load(offset: 16 + 8 * UInt32(argument.index)))
            program.append(.and(argument.mask))
            program.append(.jumpIfEqual(argument.value, skipIfTrue: 0, skipIfFalse: 1))
            program.append(.return(allow))
        }
        program.append(.return(mismatchAction.returnValue))
        guard program.count <= 4096 else { throw .tooManyRules(rules.count) }
        return program
    }

    /// Installs the filter on the calling thread (and the threads it creates from now on).
    public func installOnCurrentThread() throws(SeccompError) {
        let program = try program()
        let result = unsafe program.withUnsafeBytes { bytes in
            // SAFETY: SeccompInstruction is laid out as struct sock_filter (u16, u8, u8, u32).
            unsafe hv_seccomp_install_filter(bytes.baseAddress, UInt16(program.count))
        }
        guard result == 0 else { throw .install(Errno(rawValue: Glibc.errno)) }
    }
}

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
public struct SeccompInstruction: Sendable, Hashable {
    /// The opcode.
    public var code: UInt16
    /// Instructions skipped when a jump's condition holds.
    public var jumpTrue: UInt8
    /// Instructions skipped when it does not.
    public var jumpFalse: UInt8
    /// The operand.
    public var operand: UInt32

    /// An instruction of opcode `code` with its jump offsets and operand.
    public init(code: UInt16, jumpTrue: UInt8, jumpFalse: UInt8, operand: UInt32) {
        self.code = code
        self.jumpTrue = jumpTrue
        self.jumpFalse = jumpFalse
        self.operand = operand
    }

    static func load(offset: UInt32) -> Self { Self(code: 0x20, jumpTrue: 0, jumpFalse: 0, operand: offset) }  // BPF_LD|BPF_W|BPF_ABS
    static func and(_ mask: UInt32) -> Self { Self(code: 0x54, jumpTrue: 0, jumpFalse: 0, operand: mask) }  // BPF_ALU|BPF_AND|BPF_K
    static func `return`(_ value: UInt32) -> Self { Self(code: 0x06, jumpTrue: 0, jumpFalse: 0, operand: value) }  // BPF_RET|BPF_K
    static func jumpIfEqual(_ value: UInt32, skipIfTrue: UInt8, skipIfFalse: UInt8) -> Self {
        Self(code: 0x15, jumpTrue: skipIfTrue, jumpFalse: skipIfFalse, operand: value)  // BPF_JMP|BPF_JEQ|BPF_K
    }
    static func jumpIfGreaterOrEqual(_ value: UInt32, skipIfTrue: UInt8, skipIfFalse: UInt8) -> Self {
        Self(code: 0x35, jumpTrue: skipIfTrue, jumpFalse: skipIfFalse, operand: value)  // BPF_JMP|BPF_JGE|BPF_K
    }
}
