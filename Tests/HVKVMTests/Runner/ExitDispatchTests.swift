import HVCore
@testable import HVKVM
import Logging
import Testing

/// A trap that does nothing (only its selection is under test).
private final class InertTrap: RegisterTrap {
    func trap(at site: TrapSite, value: UInt64, vcpu: UInt32, registers: inout some GuestRegisterAccess) -> TrapOutcome { .resume }
    func vmStopping() {}
}

/// Only the ABI's doorbell write is a hypercall: a 4-byte OUT to the doorbell port, or a 4-byte
/// store to an MMIO doorbell. Narrower, wider and string writes reach the bus instead, where
/// no device takes them.
@Suite struct ExitDispatchTests {
    static let port: UInt16 = 0xE0
    static let address = GuestAddress(0xFEE0_0000 - 0x1000)

    private func dispatch() -> ExitDispatch {
        ExitDispatch(pio: Bus(space: .pio), mmio: Bus(space: .mmio),
                     traps: [.port(Self.port): InertTrap(), .mmio(Self.address): InertTrap()],
                     exitHandler: nil, logger: Logger(label: "test"))
    }

    /// `body` gets an exit's data of `count` bytes holding 0x0F (the number of HV_CALL_NULL)
    /// in every byte.
    private func withData<T>(count: Int, _ body: (ExitData) -> T) -> T {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 8)
        defer { buffer.deallocate() }
        for index in 0..<count { buffer[index] = 0x0F }
        guard let base = buffer.baseAddress else { fatalError("allocation without an address") }
        return body(ExitData(base: base, count: count))
    }

    @Test(arguments: [(1, 1), (2, 2), (4, 8), (4, 16), (1, 4), (2, 8)])
    func portWritesOtherThanOneOutlAreNotHypercalls(size: Int, bytes: Int) {
        let dispatch = dispatch()
        let selected = withData(count: bytes) { dispatch.trap(for: .ioOut(port: Self.port, size: size, data: $0)) }
        #expect(selected == nil)
    }

    @Test func oneOutlIsAHypercall() {
        let dispatch = dispatch()
        let selected = withData(count: 4) { dispatch.trap(for: .ioOut(port: Self.port, size: 4, data: $0)) }
        #expect(selected?.site == .port(Self.port))
        #expect(selected?.value == 0x0F0F_0F0F)
    }

    @Test(arguments: [1, 2, 8])
    func mmioStoresOtherThanFourBytesAreNotHypercalls(bytes: Int) {
        let dispatch = dispatch()
        let selected = withData(count: bytes) { dispatch.trap(for: .mmioWrite(address: Self.address, data: $0)) }
        #expect(selected == nil)
    }

    @Test func aFourByteStoreIsAHypercall() {
        let dispatch = dispatch()
        let selected = withData(count: 4) { dispatch.trap(for: .mmioWrite(address: Self.address, data: $0)) }
        #expect(selected?.site == .mmio(Self.address))
    }
}
