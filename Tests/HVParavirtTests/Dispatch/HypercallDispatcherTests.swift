import HVCore
import HVDevicesTesting
@testable import HVParavirt
import HVTestSupport
import Testing

@Suite struct HypercallDispatcherTests {
    @Test(arguments: [UInt32(16), 0x0FFF, 0x1000, 0x7FFF_FFFF, 0xFFFF_FFFF] as [UInt32])
    func unknownNumbersReturnENOSYS(number: UInt32) throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [])
        #expect(dispatcher.call(HypercallNumber(number)) == failure(.notImplemented))
        #expect(dispatcher.unknownCalls == 1)
    }

    @Test func nullReturnsZeroAndIsCounted() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [])
        for _ in 0..<5 { #expect(dispatcher.call(.null) == 0) }
        let statistics = try #require(dispatcher.statistics(for: .null))
        #expect(statistics.calls == 5)
        #expect(statistics.errors == 0)
        #expect(statistics.histogram.reduce(0, +) == 5)
        #expect(statistics.quantileUpperBound(0.5) > 0)
    }

    @Test func infoReportsVersionFeaturesAndMemory() throws {
        let memory = try testMemory()
        let dispatcher = try makeDispatcher(memory: memory, [ConsoleService(output: CollectingSink()), ClockService()])
        #expect(dispatcher.call(.info) == Int64(HypercallABI.version))
        #expect(dispatcher.call(.info, 0x1000) == Int64(HypercallABI.version))
        let bytes = try memory.readBytes(at: GuestAddress(0x1000), count: ParavirtInfo.size)
        #expect(bytes == dispatcher.info.encoded)
        #expect(dispatcher.info.features.isSuperset(of: [.console, .clock, .channel]))
        #expect(!dispatcher.info.features.contains(.block))
        #expect(dispatcher.info.memorySize == memory.ramSize)
    }

    @Test(arguments: [firstRegionEnd - 32, holeAddress.rawValue, readOnlyAddress.rawValue, UInt64.max - 16] as [UInt64])
    func infoIntoBadMemoryFaults(address: UInt64) throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [])
        #expect(dispatcher.call(.info, address) == failure(.fault))
        #expect(dispatcher.statistics(for: .info)?.errors == 1)
    }

    @Test func trapReadsArgumentRegistersAndWritesRAX() throws {
        var table = HypercallTable()
        try table.register(HypercallNumber(0x1234), name: "sum") { call throws(HypercallError) in
            let a = call.arguments
            return .value(a.a0 &+ a.a1 &+ a.a2 &+ a.a3 &+ a.a4 &+ a.a5)
        }
        let dispatcher = HypercallDispatcher(memory: try testMemory(), table: table)
        var registers = GuestRegisterFile([.rax: 0x1234, .rdi: 1, .rsi: 2, .rdx: 4, .r10: 8, .r8: 16, .r9: 32, .rcx: 1000, .rbx: 1000])
        let outcome = dispatcher.trap(at: .port(HypercallABI.doorbellPort), value: 0x1234, vcpu: 0, registers: &registers)
        #expect(outcome == .resume)
        #expect(registers[.rax] == 63)
        #expect(registers[.rcx] == 1000)
        #expect(dispatcher.statistics(for: HypercallNumber(0x1234))?.name == "sum")
    }

    @Test func doorbellValueIsTheNumberAndOnlyItsLow32BitsCount() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [])
        var registers = GuestRegisterFile([.rax: 0xDEAD])
        // A doorbell's value wins over RAX (they are equal for `outl %eax`).
        _ = dispatcher.trap(at: .port(0xE0), value: 0xFFFF_FFFF_0000_000F, vcpu: 0, registers: &registers)
        #expect(registers[.rax] == 0)  // null
        // vmcall takes RAX.
        registers[.rax] = UInt64(HypercallNumber.info.rawValue)
        _ = dispatcher.trap(at: .vmcall, value: 0, vcpu: 0, registers: &registers)
        #expect(registers[.rax] == UInt64(HypercallABI.version))
    }

    @Test func embeddersAddTheirOwnHypercallsButNotTwiceOrOnReservedNumbers() throws {
        var table = HypercallTable()
        try table.register(HypercallNumber.userBase, name: "mine") { _ throws(HypercallError) in .value(7) }
        #expect(throws: HypercallTableError.duplicate(.userBase)) {
            try table.register(HypercallNumber.userBase, name: "again") { _ throws(HypercallError) in .zero }
        }
        #expect(throws: HypercallTableError.reserved(.channelNotify)) {
            try table.register(.channelNotify, name: "mine") { _ throws(HypercallError) in .zero }
        }
        let dispatcher = HypercallDispatcher(memory: try testMemory(), table: table)
        #expect(dispatcher.call(.userBase) == 7)
    }

    @Test func handlerErrorsBecomeNegativeCodesAndAreCounted() throws {
        var table = HypercallTable()
        try table.register(HypercallNumber.userBase, name: "fails") { _ throws(HypercallError) in
            throw HypercallError(.io, "disk on fire")
        }
        let dispatcher = HypercallDispatcher(memory: try testMemory(), table: table)
        #expect(dispatcher.call(.userBase) == failure(.io))
        #expect(dispatcher.statistics(for: .userBase)?.errors == 1)
    }

    @Test func doorbellsAppearInFeaturesAndTrapSites() throws {
        let memory = try testMemory()
        let dispatcher = HypercallDispatcher(memory: memory, table: HypercallTable(),
                                             doorbells: [.port(0xE0), .mmio(HypercallABI.defaultMMIODoorbell), .vmcall])
        #expect(dispatcher.info.features.isSuperset(of: [.mmioDoorbell, .vmcall]))
        #expect(Set(dispatcher.trapSites.keys) == [.port(0xE0), .mmio(HypercallABI.defaultMMIODoorbell), .vmcall])
    }

    @Test func vmStoppingRunsObserversOnce() throws {
        let count = Counter()
        var table = HypercallTable()
        table.onVMStopping { [count] in count.increment() }
        let dispatcher = HypercallDispatcher(memory: try testMemory(), table: table)
        dispatcher.vmStopping()
        dispatcher.vmStopping()
        #expect(count.value == 1)
    }
}

/// The argument-block convention: a user hypercall that takes the address of a struct.
@Suite struct ArgumentBlockTests {
    struct Rectangle: BitwiseCopyable { var width: UInt32; var height: UInt32 }

    func dispatcher(_ memory: GuestMemoryMmap) throws -> HypercallDispatcher {
        var table = HypercallTable()
        try table.register(.userBase, name: "area") { call throws(HypercallError) in
            let block = try call.readBlock(Rectangle.self, at: call.address(0))
            return .value(UInt64(block.width) * UInt64(block.height))
        }
        return HypercallDispatcher(memory: memory, table: table)
    }

    @Test func theBlockIsReadFromGuestMemory() throws {
        let memory = try testMemory()
        try memory.write(Rectangle(width: 7, height: 6), at: GuestAddress(0x500))
        #expect(try dispatcher(memory).call(.userBase, 0x500) == 42)
    }

    @Test(arguments: [firstRegionEnd - 4, holeAddress.rawValue, UInt64.max - 2] as [UInt64])
    func aBlockOutsideRAMFaults(address: UInt64) throws {
        #expect(try dispatcher(testMemory()).call(.userBase, address) == failure(.fault))
    }
}
