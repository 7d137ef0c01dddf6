// HVKitGuest: the Embedded Swift side of HVKit's hypercall ABI, for guests that run on HVKit
// with no operating system. Build with Guests/build-guests.sh (swiftc -enable-experimental-
// feature Embedded -target x86_64-unknown-none-elf). The trap itself is in the C header's
// inline functions, because Swift has no inline assembly; everything else is Swift.
import CHVKitGuest

/// A hypercall's failure: the HV_E* code the host returned.
public struct HypervisorError: Error, Equatable {
    public let code: Int64

    public static let io = HypervisorError(code: 5)
    public static let tooBig = HypervisorError(code: 7)
    public static let again = HypervisorError(code: 11)
    public static let fault = HypervisorError(code: 14)
    public static let invalid = HypervisorError(code: 22)
    public static let readOnly = HypervisorError(code: 30)
    public static let outOfRange = HypervisorError(code: 34)
    public static let notImplemented = HypervisorError(code: 38)

    /// The result of a hypercall as a count, or the error it carries.
    static func check(_ result: Int64) throws(HypervisorError) -> Int {
        guard result >= 0 else { throw HypervisorError(code: -result) }
        return Int(result)
    }
}

/// What the host offers (HV_CALL_INFO).
public struct HypervisorInfo {
    public let abiVersion: UInt32
    public let features: UInt64
    public let memorySize: UInt64
    public let blockCapacity: UInt64
    public let sectorSize: UInt32
    public let mtu: UInt16

    public var majorVersion: UInt32 { abiVersion >> 16 }
    public var minorVersion: UInt32 { abiVersion & 0xFFFF }
    public var hasBlock: Bool { features & UInt64(HV_FEATURE_BLOCK) != 0 }
    public var hasNet: Bool { features & UInt64(HV_FEATURE_NET) != 0 }
}

/// The host's services, as static functions.
public enum Hypervisor {
    public static func info() -> HypervisorInfo {
        var raw = hv_info()
        _ = hv_get_info(&raw)
        return HypervisorInfo(abiVersion: raw.abi_version, features: raw.features, memorySize: raw.memory_size,
                              blockCapacity: raw.block_capacity, sectorSize: raw.sector_size, mtu: raw.mtu)
    }

    /// Writes text to the console (everything `print` buffered goes first).
    public static func write(_ text: StaticString) {
        hv_flush_console()
        _ = hv_console_write(text.utf8Start, text.utf8CodeUnitCount)
    }

    /// Writes bytes to the console.
    @discardableResult
    public static func write(_ bytes: UnsafeRawBufferPointer) -> Int64 {
        hv_flush_console()
        guard let base = bytes.baseAddress else { return 0 }
        return hv_console_write(base, bytes.count)
    }

    /// The host's monotonic clock, in nanoseconds.
    public static var monotonicNanoseconds: UInt64 { hv_clock_monotonic() }

    /// The host's wall clock, in nanoseconds since 1970.
    public static var wallClockNanoseconds: UInt64 { hv_clock_wall() }

    /// Fills `buffer` (at most 4 KiB) with random bytes from the host.
    public static func fillRandom(_ buffer: UnsafeMutableRawBufferPointer) throws(HypervisorError) {
        guard let base = buffer.baseAddress else { return }
        _ = try HypervisorError.check(hv_random(base, buffer.count))
    }

    /// Waits up to `nanoseconds` for an event; returns the HV_POLL_* bits that are ready.
    public static func poll(nanoseconds: UInt64) -> UInt64 {
        UInt64(bitPattern: hv_poll(nanoseconds))
    }

    /// Ends the VM with `status`.
    public static func exit(_ status: Int32) -> Never {
        hv_flush_console()
        hv_exit(status)
        while true {}
    }

    /// Ends the VM with a message.
    public static func abort(_ message: StaticString) -> Never {
        hv_flush_console()
        hv_abort(message.utf8Start, message.utf8CodeUnitCount)
        while true {}
    }
}

/// The host's disk (HV_CALL_BLOCK_*): whole 512-byte sectors, at most 1 MiB per call.
public enum BlockStorage {
    public static let sectorSize = Int(HV_BLOCK_SECTOR_SIZE)

    public static func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(HypervisorError) {
        guard let base = buffer.baseAddress else { return }
        _ = try HypervisorError.check(hv_block_read(offset, base, buffer.count))
    }

    public static func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(HypervisorError) {
        guard let base = buffer.baseAddress else { return }
        _ = try HypervisorError.check(hv_block_write(offset, base, buffer.count))
    }

    public static func flush() throws(HypervisorError) {
        _ = try HypervisorError.check(hv_block_flush())
    }
}

/// The host's network (HV_CALL_NET_*): whole Ethernet frames.
public enum Network {
    /// Sends one frame (14 bytes up to MTU + 14).
    public static func send(_ frame: UnsafeRawBufferPointer) throws(HypervisorError) {
        guard let base = frame.baseAddress else { return }
        _ = try HypervisorError.check(hv_net_send(base, frame.count))
    }

    /// Receives the next frame into `buffer`; returns its length, or nil when none is waiting.
    public static func receive(into buffer: UnsafeMutableRawBufferPointer) throws(HypervisorError) -> Int? {
        guard let base = buffer.baseAddress else { return nil }
        let result = hv_net_receive(base, buffer.count)
        if result == -Int64(HV_EAGAIN) { return nil }
        return try HypervisorError.check(result)
    }

    /// Sleeps until a frame is waiting or `nanoseconds` pass; true if a frame is waiting.
    public static func wait(nanoseconds: UInt64) -> Bool {
        Hypervisor.poll(nanoseconds: nanoseconds) & UInt64(HV_POLL_NET_RECEIVE) != 0
    }
}
