import HVCore
import HVKVM
import Testing

@Suite struct RegistersTests {
    @Test func theRegisterAccessSubscriptNamesEachField() {
        var registers = Registers()
        for (index, register) in GeneralRegister.allCases.enumerated() {
            registers[register] = UInt64(index + 1) * 0x1111
        }
        #expect(registers.rax == 0x1111)
        #expect(registers.rdi == 6 * 0x1111)
        #expect(registers.r10 == 11 * 0x1111)
        #expect(registers.r15 == 16 * 0x1111)
        #expect(registers.rip == 17 * 0x1111)
        #expect(registers.rflags == 18 * 0x1111)
        // Every register is its own field: reading back gives what was written.
        for (index, register) in GeneralRegister.allCases.enumerated() {
            #expect(registers[register] == UInt64(index + 1) * 0x1111, "\(register)")
        }
    }
}
