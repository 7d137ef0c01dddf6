import HVCore

/// HVKit's hypercall ABI, version 1.0: the host half of what docs/ABI.md specifies and
/// Guests/sdk/include/hvkit_guest.h gives guests. A test checks the two agree.
///
/// A guest traps with the hypercall number in EAX and writes it to a doorbell:
/// `outl %eax, $0xE0` (port I/O) or a 32-bit store to the MMIO doorbell. Arguments are in
/// RDI, RSI, RDX, R10, R8, R9 (the Linux system-call order); the result comes back in RAX:
/// a non-negative value, or a negative errno-style code (``HypercallErrno``). Hypercalls that
/// take many values take the guest-physical address of an argument block instead.
public enum HypercallABI {
    /// The ABI's major version: a guest built for another major version must not run.
    public static let majorVersion: UInt32 = 1
    /// The ABI's minor version: additions a guest may check for.
    public static let minorVersion: UInt32 = 0
    /// `major << 16 | minor`, as ``HypercallNumber/info`` returns it.
    public static let version: UInt32 = majorVersion << 16 | minorVersion

    /// The port-I/O doorbell: `outl %eax, $0xE0`. An 8-bit port, so the instruction takes it
    /// as an immediate and no argument register is used for the port.
    public static let doorbellPort: UInt16 = 0xE0
    /// The default MMIO doorbell (for architectures without port I/O): a 32-bit store of the
    /// number. An embedding program may place it elsewhere.
    public static let defaultMMIODoorbell = GuestAddress(0xFEF0_0000)

    /// Argument registers, in order.
    public static let argumentRegisters: [GeneralRegister] = [.rdi, .rsi, .rdx, .r10, .r8, .r9]
    /// The register that carries the number in and the result out.
    public static let resultRegister: GeneralRegister = .rax

    /// The most bytes one console write, random request or abort message may carry.
    public static let maximumSmallTransfer = 4096
    /// The most bytes one block read or write may carry.
    public static let maximumBlockTransfer = 1 << 20
    /// The sector size of the block service: offsets and lengths are multiples of it.
    public static let blockSectorSize = 512
    /// The longest a poll waits in one call; longer timeouts are clamped (the guest polls again).
    public static let maximumPollNanoseconds: UInt64 = 10_000_000_000
}

/// A hypercall number. 0 to 0x0FFF are HVKit's; embedding programs use ``userBase`` and up.
public struct HypercallNumber: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The number.
    public let rawValue: UInt32
    /// Hypercall `rawValue`.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Hypercall `rawValue`.
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Returns the ABI version; fills a ``ParavirtInfo`` block at arg0 unless arg0 is 0.
    public static let info = HypercallNumber(0)
    /// Writes arg1 bytes at arg0 to the console. Returns the count.
    public static let consoleWrite = HypercallNumber(1)
    /// Returns the monotonic clock in nanoseconds.
    public static let clockMonotonic = HypercallNumber(2)
    /// Returns the wall clock in nanoseconds since the Unix epoch.
    public static let clockWall = HypercallNumber(3)
    /// Fills arg1 bytes at arg0 with random bytes. Returns the count.
    public static let random = HypercallNumber(4)
    /// Reads arg2 bytes at disk offset arg0 into guest memory at arg1. Returns the count.
    public static let blockRead = HypercallNumber(5)
    /// Writes arg2 bytes from guest memory at arg1 to disk offset arg0. Returns the count.
    public static let blockWrite = HypercallNumber(6)
    /// Makes completed writes durable. Returns 0.
    public static let blockFlush = HypercallNumber(7)
    /// Sends the frame of arg1 bytes at arg0. Returns the count.
    public static let netSend = HypercallNumber(8)
    /// Receives a frame into arg1 bytes at arg0. Returns its length, or -EAGAIN.
    public static let netReceive = HypercallNumber(9)
    /// Waits up to arg0 nanoseconds for an event. Returns the ready set (``PollEvents``), 0 on timeout.
    public static let poll = HypercallNumber(10)
    /// Ends the VM with status arg0 (as an Int32). Does not return.
    public static let exit = HypercallNumber(11)
    /// Ends the VM with the message of arg1 bytes at arg0. Does not return.
    public static let abort = HypercallNumber(12)
    /// Sets up the shared-memory channel: ring at arg0 with arg1 slots. Returns 0.
    public static let channelSetup = HypercallNumber(13)
    /// Runs every request the guest queued on the channel. Returns how many ran.
    public static let channelNotify = HypercallNumber(14)
    /// Does nothing and returns 0: the cost of a round trip.
    public static let null = HypercallNumber(15)

    /// The first number for an embedding program's own hypercalls.
    public static let userBase = HypercallNumber(0x1000)

    /// The names of HVKit's own hypercalls, by number, for statistics and logs.
    public static let builtinNames: [UInt32: String] = [
        0: "info", 1: "console_write", 2: "clock_monotonic", 3: "clock_wall", 4: "random",
        5: "block_read", 6: "block_write", 7: "block_flush", 8: "net_send", 9: "net_receive",
        10: "poll", 11: "exit", 12: "abort", 13: "channel_setup", 14: "channel_notify", 15: "null",
    ]

    /// The hypercall's name, or its number in hexadecimal.
    public var description: String {
        Self.builtinNames[rawValue] ?? "hypercall 0x" + String(rawValue, radix: 16)
    }
}

/// The error codes a hypercall returns, negated, in RAX. They are Linux errno values, fixed by
/// the ABI (not taken from the host's headers).
public enum HypercallErrno: Int64, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The backend failed (the disk returned an error).
    case io = 5
    /// A length is larger than the call allows.
    case tooBig = 7
    /// Nothing to receive now.
    case again = 11
    /// A guest address is not RAM (outside memory, in a hole, or read-only for a write).
    case fault = 14
    /// An argument is invalid (unaligned, zero length, bad ring size).
    case invalid = 22
    /// A write to a read-only disk.
    case readOnly = 30
    /// An offset or range lies outside the disk.
    case outOfRange = 34
    /// No such hypercall.
    case notImplemented = 38
    /// The shared-memory channel is broken (the guest corrupted it); set it up again.
    case protocolError = 71
    /// A frame larger than the network allows, or a buffer too small for the next frame.
    case messageSize = 90

    /// The value RAX carries: the code negated, as two's complement.
    public var returnValue: UInt64 { UInt64(bitPattern: -rawValue) }

    /// The code's errno name (`EIO`).
    public var description: String {
        switch self {
        case .io: return "EIO"
        case .tooBig: return "E2BIG"
        case .again: return "EAGAIN"
        case .fault: return "EFAULT"
        case .invalid: return "EINVAL"
        case .readOnly: return "EROFS"
        case .outOfRange: return "ERANGE"
        case .notImplemented: return "ENOSYS"
        case .protocolError: return "EPROTO"
        case .messageSize: return "EMSGSIZE"
        }
    }
}

/// What ``HypercallNumber/info`` reports as present.
public struct ParavirtFeatures: OptionSet, Sendable, Hashable {
    /// The feature bits.
    public let rawValue: UInt64
    /// Features from their bits.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The console service is installed.
    public static let console = ParavirtFeatures(rawValue: 1 << 0)
    /// The clock service is installed.
    public static let clock = ParavirtFeatures(rawValue: 1 << 1)
    /// The random service is installed.
    public static let random = ParavirtFeatures(rawValue: 1 << 2)
    /// A block device is attached.
    public static let block = ParavirtFeatures(rawValue: 1 << 3)
    /// The block device is read-only.
    public static let blockReadOnly = ParavirtFeatures(rawValue: 1 << 4)
    /// A network is attached.
    public static let net = ParavirtFeatures(rawValue: 1 << 5)
    /// The poll service is installed.
    public static let poll = ParavirtFeatures(rawValue: 1 << 6)
    /// The shared-memory channel is available.
    public static let channel = ParavirtFeatures(rawValue: 1 << 7)
    /// The MMIO doorbell is served.
    public static let mmioDoorbell = ParavirtFeatures(rawValue: 1 << 8)
    /// `vmcall` is served.
    public static let vmcall = ParavirtFeatures(rawValue: 1 << 9)
}

/// Bits of the set ``HypercallNumber/poll`` returns.
public struct PollEvents: OptionSet, Sendable, Hashable {
    /// The event bits.
    public let rawValue: UInt64
    /// Events from their bits.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// A frame is waiting for ``HypercallNumber/netReceive``.
    public static let netReceive = PollEvents(rawValue: 1 << 0)
}
