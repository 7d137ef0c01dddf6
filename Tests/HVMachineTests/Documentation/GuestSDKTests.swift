import Glibc
import HVDevicesTesting
import HVMachine
import Testing

/// Guests/sdk/build-guest.sh builds a guest from outside the repository's own build, and the
/// result runs on a Machine: the path a downstream package takes.
@Suite("Guest SDK", .requiresKVM)
struct GuestSDKTests {
    static let sdk = ReadmeTests.root + "/Guests/sdk"

    /// Why the toolchain cannot build guests here, or nil.
    static let toolchainMissing: String? = {
        for tool in ["clang", "ld.lld", "swiftc"] where system("command -v \(tool) >/dev/null 2>&1") != 0 {
            return "needs \(tool) on PATH (the Swift toolchain for Linux ships it)"
        }
        return nil
    }()

    @Test(.enabled(if: toolchainMissing == nil, Comment(rawValue: toolchainMissing ?? "")),
          arguments: [("hello.c", "hello from a C guest"), ("hello.swift", "hello from an Embedded Swift guest")])
    func aGuestBuiltWithTheSDKRuns(source: String, greeting: String) throws {
        let directory = try ScratchDirectory()
        let output = directory.path + "/guest.elf"
        let command = "HVKIT_GUEST_WORK='\(directory.path)/work' sh '\(Self.sdk)/build-guest.sh' '\(Self.sdk)/examples/\(source)' -o '\(output)' >/dev/null"
        #expect(system(command) == 0, "build-guest.sh failed for \(source)")

        let console = CollectingSink()
        var services = HypercallTable()
        try services.install(ConsoleService(output: console))
        try services.install(LifecycleService())
        var configuration = MachineConfiguration(memorySize: 4 << 20)
        configuration.interruptControllers = false
        let result = try Machine(configuration).run(.unikernel(path: output, hypercalls: services, argument: 7))
        #expect(result.stopReason == .guestRequested(.exit(status: 7), vcpu: 0))
        #expect(console.text.contains(greeting))
    }
}

/// A directory under /var/tmp, removed with its contents when the value goes away.
final class ScratchDirectory: Sendable {
    let path: String

    init() throws {
        var template = Array("/var/tmp/hvkit-test-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw Errno(rawValue: errno) }
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { _ = system("rm -rf '\(path)'") }
}
