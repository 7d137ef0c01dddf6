import Glibc
import GuestImages
import HVDevicesTesting
import HVMachine
import Testing

/// README.md's Swift snippets are compiled code (ReadmeSnippets.swift), and those that can run
/// here do.
@Suite("README")
struct ReadmeTests {
    static let root: String = {
        // #filePath is .../Tests/HVMachineTests/Documentation/ReadmeTests.swift.
        String(#filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(4).joined(separator: "/"))
    }()

    static func text(_ relativePath: String) throws -> String {
        String(decoding: try HostFile.readAll(FilePath(root + "/" + relativePath)), as: UTF8.self)
    }

    /// A block's or a file's lines as compared: trimmed, without blank lines and imports.
    static func normalized(_ text: some StringProtocol) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: " \t") }
            .filter { !$0.isEmpty && !$0.hasPrefix("import ") }
    }

    static func swiftBlocks(of markdown: String) -> [String] {
        var blocks: [String] = []
        var current: [Substring]?
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line.hasPrefix("```swift") {
                current = []
            } else if current != nil, line.hasPrefix("```") {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else {
                current?.append(line)
            }
        }
        return blocks
    }

    @Test func everySwiftSnippetIsCodeTheBuildCompiles() throws {
        let readme = try Self.text("README.md")
        let blocks = Self.swiftBlocks(of: readme)
        #expect(blocks.count >= 5)
        let sources = try ["Tests/HVMachineTests/Documentation/ReadmeSnippets.swift", "Guests/tender/hello.swift"]
            .map { Self.normalized(try Self.text($0)) }
        for block in blocks {
            let lines = Self.normalized(block)
            let found = sources.contains { source in
                source.indices.contains { start in
                    start + lines.count <= source.count && Array(source[start..<(start + lines.count)]) == lines
                }
            }
            #expect(found, "README snippet not found verbatim in ReadmeSnippets.swift or the guest it quotes:\n\(block)")
        }
    }

    /// The network snippet against a real passt on /tmp/passt.socket and a new tap hv0.
    @Test(.requiresKVM, .enabled(if: PasstProcess.unavailableReason == nil && ConfiguredTap.unavailableReason == nil,
                                 "needs passt and a tap (root)"))
    func theNetworkSnippetRuns() throws {
        let passt = try PasstProcess(socketPath: "/tmp/passt.socket")
        defer { withExtendedLifetime(passt) {} }
        let machine = try Machine(memorySize: 32 << 20)
        try ReadmeSnippets.network(machine: machine)
        #expect(machine.networks.map(\.backendName) == ["tap hv0", "stream /tmp/passt.socket"])
        #expect(machine.virtioDevices.count == 2)
    }

    @Test(.requiresKVM) func theUnikernelSnippetRuns() throws {
        let guest = try ScratchFile(size: GuestImages.hello.count, contents: [(0, GuestImages.hello)])
        let disk = try ScratchFile(size: 1 << 20)
        let (result, statistics) = try ReadmeSnippets.unikernel(guestPath: guest.path, diskPath: disk.path)
        #expect(result.stopReason == .guestRequested(.exit(status: 0), vcpu: 0))
        #expect(statistics.contains { $0.calls > 0 })
    }

    @Test(.enabled(if: LinuxTestGuest.unavailableReason == nil, Comment(rawValue: LinuxTestGuest.unavailableReason ?? "")))
    func theComposeSnippetBootsLinux() throws {
        let disk = try ScratchFile(size: 1 << 20)
        let result = try ReadmeSnippets.composeAVM(kernelPath: LinuxTestGuest.vmlinux, initrdPath: LinuxTestGuest.initramfs,
                                                   diskPath: disk.path)
        #expect(result.stopReason == .resetRequested)
        #expect(result.shutdown.devicesQuiesced == 2)
        #expect(result.shutdown.disksFlushed.count == 1)
        #expect(result.shutdown.isClean)
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        return String(drop { characters.contains($0) }.reversed().drop { characters.contains($0) }.reversed())
    }
}
