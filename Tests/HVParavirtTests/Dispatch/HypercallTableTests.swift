import HVCore
import HVDevicesTesting
import HVParavirt
import Testing

@Suite struct HypercallTableTests {
    /// The essentials are the console, both clocks, randomness and the two ways to end: no
    /// block, network or poll call, which need a service the embedder chooses.
    @Test func theEssentialsAreConsoleClocksRandomAndLifecycle() throws {
        let table = try HypercallTable.essentials(console: CollectingSink())
        #expect(table.numbers == [.consoleWrite, .clockMonotonic, .clockWall, .random, .exit, .abort])
    }

    /// A service added to the essentials that claims one of their numbers is refused by name.
    @Test func aSecondConsoleOnTheEssentialsIsRefused() throws {
        var table = try HypercallTable.essentials(console: CollectingSink())
        #expect(throws: HypercallTableError.duplicate(.consoleWrite)) { try table.install(ConsoleService(output: CollectingSink())) }
        #expect(table.numbers.count == 6)
    }
}
