import Glibc
import HVCore
import HVDevicesTesting
@testable import HVParavirt
import HVTestSupport
import Synchronization
import SystemPackage

/// Where the first region of ``testMemory()`` ends (the hole begins).
let firstRegionEnd: UInt64 = holeAddress.rawValue

/// A dispatcher over `memory` with `services` installed.
func makeDispatcher(memory: any GuestMemory, _ services: [any ParavirtService]) throws -> HypercallDispatcher {
    var table = HypercallTable()
    for service in services { try table.install(service) }
    return HypercallDispatcher(memory: memory, table: table)
}

extension HypercallDispatcher {
    /// Runs a call as if vCPU 0 trapped, and returns RAX as a signed value.
    /// Makes a trapped call from vCPU 0 and returns RAX, waiting on this thread as a thread
    /// per vCPU would when the call waits (a poll).
    func call(_ number: HypercallNumber, _ a0: UInt64 = 0, _ a1: UInt64 = 0, _ a2: UInt64 = 0) -> Int64 {
        while true {
            switch dispatch(number, HypercallArguments(a0, a1, a2), origin: .trap(vcpu: 0)) {
            case let .value(value): return Int64(bitPattern: value)
            case .stop: return Int64.min
            case let .wait(wait): _ = wait.block()
            }
        }
    }
}

/// The value a failed call returns.
func failure(_ code: HypercallErrno) -> Int64 { -code.rawValue }

/// A temporary file of `size` bytes (pattern-filled), unlinked when the test process ends.
final class TemporaryDisk {
    let path: String
    let descriptor: FileDescriptor

    init(size: Int, pattern: (Int) -> UInt8 = { UInt8(truncatingIfNeeded: $0 / 512 + 1) }) throws {
        var template = Array("/tmp/hvparavirt-test-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        descriptor = FileDescriptor(rawValue: fd)
        let bytes = (0..<size).map(pattern)
        _ = try bytes.withUnsafeBytes { try descriptor.writeAll(toAbsoluteOffset: 0, $0) }
    }

    func read(at offset: Int, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        _ = try bytes.withUnsafeMutableBytes { try descriptor.read(fromAbsoluteOffset: Int64(offset), into: $0) }
        return bytes
    }

    deinit {
        try? descriptor.close()
        unlink(path)
    }
}

/// A thread-safe counter.
final class Counter: Sendable {
    private let storage = Atomic<Int>(0)
    func increment() { storage.add(1, ordering: .relaxed) }
    var value: Int { storage.load(ordering: .relaxed) }
}
