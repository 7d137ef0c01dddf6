import FuzzSupport
import Glibc
import HVCore
import HVParavirt
import SystemPackage

// The hypercall dispatcher with the standard services and the shared-memory channel: any
// call number (built-in, user range or unknown) with hostile arguments, over guest memory
// whose bytes (channel rings included) also come from the input. A call that would wait is
// not waited for.

private let memory = fuzzMemory()
private let network = try? InProcessNetwork()
private let dispatcher: HypercallDispatcher = {
    var table = HypercallTable()
    try? table.install(ConsoleService(output: DiscardingSink()))
    try? table.install(ClockService())
    try? table.install(RandomService())
    try? table.install(LifecycleService())
    if let descriptor = scratchDescriptor(), let block = try? BlockService(fileDescriptor: descriptor, readOnly: false, ownsDescriptor: true) {
        try? table.install(block)
    }
    if let network { try? table.install(NetService(backend: network.guestSide)) }
    return HypercallDispatcher(memory: memory, table: table)
}()

private func scratchDescriptor() -> FileDescriptor? {
    var template = Array("/tmp/hvkit-fuzz-block-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    guard fd >= 0, ftruncate(fd, 64 * 512) == 0 else { return nil }
    unlink(String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    return FileDescriptor(rawValue: fd)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHypercall(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    // Guest memory contents: a few pages the calls and the channel will read.
    for _ in 0..<input.next(below: 4) {
        let page = GuestAddress(UInt64(input.next(below: 16)) * 0x1000)
        try? memory.write(input.bytes(input.next(below: 512)), to: page)
    }
    for _ in 0..<16 where !input.isAtEnd {
        let number: HypercallNumber = switch input.next(UInt8.self) % 4 {
        case 0, 1: HypercallNumber(UInt32(input.next(below: 17)))
        case 2: HypercallNumber(0x1000 + UInt32(input.next(below: 4)))
        default: HypercallNumber(input.next(UInt32.self))
        }
        let arguments = HypercallArguments(argument(&input), argument(&input), argument(&input))
        _ = dispatcher.dispatch(number, arguments, origin: .trap(vcpu: UInt32(input.next(below: 3))))
    }
    return 0
}

private func argument(_ input: inout FuzzInput) -> UInt64 {
    switch input.next(UInt8.self) % 3 {
    case 0: hostileAddress(&input)
    case 1: UInt64(input.next(UInt16.self))
    default: input.next(UInt64.self)
    }
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_hypercall_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzHypercall)
}
