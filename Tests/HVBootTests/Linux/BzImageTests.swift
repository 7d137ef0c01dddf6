import HVCore
import HVTestSupport
@testable import HVBoot
import Testing

/// The bzImage parser against well-formed and hostile images: every refusal names its field.
@Suite struct BzImageTests {
    @Test("a well-formed image parses; its kernel and payload are where the header says")
    func parses() throws {
        let synthetic = SyntheticBzImage()
        let image = try BzImage(bytes: synthetic.bytes)
        #expect(image.header.setupSectors == 4)
        #expect(image.header.setupBytes == 5 * 512)
        #expect(image.header.version == 0x020F)
        #expect(image.header.end == 0x26C)
        #expect(image.protectedModeKernel.count == synthetic.kernelSize)
        #expect(image.payload.count == 0x100)
        #expect(image.payload.first == 0x5A)
        #expect(Array(image.protectedModeKernel.dropFirst(0x200).prefix(4)) == Array(TestGuests.linuxEntry.prefix(4)))
    }

    @Test("setup_sects 0 means 4")
    func zeroSetupSectorsMeansFour() throws {
        var synthetic = SyntheticBzImage()
        synthetic.setupSectors = 0
        #expect(try BzImage(bytes: synthetic.bytes).header.setupSectors == 4)
    }

    static let hostile: [(String, @Sendable (inout SyntheticBzImage) -> Void, @Sendable (LinuxBootError) -> Bool)] = [
        ("bad magic", { $0.magic = 0x1234_5678 }, { $0 == .notAKernel }),
        ("bad boot flag", { $0.bootFlag = 0x55AA }, { $0 == .badBootFlag(0x55AA) }),
        ("protocol 2.11", { $0.version = 0x020B }, { $0 == .protocolTooOld(version: 0x020B) }),
        ("no 64-bit entry", { $0.xloadFlags = 0x0002 }, { $0 == .no64BitEntry(xloadflags: 2) }),
        ("a zImage", { $0.loadFlags = 0 }, { $0 == .notLoadedHigh(loadflags: 0) }),
        ("setup sectors beyond the file", { $0.declaredSetupSectors = 200 }, { if case .truncated = $0 { true } else { false } }),
        ("a header that ends too early", { $0.headerDisplacement = 0x10 }, { if case .badField = $0 { true } else { false } }),
        ("alignment not a power of two", { $0.kernelAlignment = 0x30_0000 }, { if case .badField(name: let name, _, _) = $0 { name.contains("kernel_alignment") } else { false } }),
        ("alignment 0", { $0.kernelAlignment = 0 }, { if case .badField = $0 { true } else { false } }),
        ("no command line", { $0.commandLineSize = 0 }, { if case .badField(name: let name, _, _) = $0 { name.contains("cmdline_size") } else { false } }),
        ("payload past the kernel", { $0.payloadOffset = 0x5FF }, { if case .badField(name: let name, _, _) = $0 { name.contains("payload") } else { false } }),
        ("payload overflowing", { $0.payloadOffset = .max; $0.payloadLength = .max }, { if case .badField = $0 { true } else { false } }),
        ("init_size below the kernel", { $0.initSize = 0x100 }, { if case .badField(name: let name, _, _) = $0 { name.contains("init_size") } else { false } }),
    ]

    @Test("hostile headers are refused with the field named", arguments: 0..<hostile.count)
    func refusesHostileHeaders(index: Int) {
        let (name, breakIt, expected) = Self.hostile[index]
        var synthetic = SyntheticBzImage()
        breakIt(&synthetic)
        do {
            _ = try BzImage(bytes: synthetic.bytes)
            Issue.record("\(name): accepted")
        } catch {
            #expect(expected(error), "\(name): \(error)")
            #expect(!error.description.isEmpty)
        }
    }

    @Test("truncated images are refused at every length")
    func refusesTruncations() {
        let bytes = SyntheticBzImage().bytes
        for length in [0, 1, 0x1F1, 0x202, 0x26B, 0x26C, 5 * 512, 5 * 512 + 0x200] {
            #expect(throws: LinuxBootError.self, "length \(length)") { try BzImage(bytes: Array(bytes.prefix(length))) }
        }
    }

    @Test("2000 randomly corrupted images never crash the parser")
    func randomCorruption() {
        var generator = SeededGenerator(seed: 0xB0B1)
        let original = SyntheticBzImage().bytes
        var accepted = 0
        for _ in 0..<2000 {
            var bytes = original
            for _ in 0..<Int(generator.next() % 8 + 1) {
                // Mostly inside the header, where the fields are.
                let offset = generator.next() % 4 == 0 ? Int(generator.next() % UInt64(bytes.count)) : 0x1F1 + Int(generator.next() % 0x80)
                bytes[offset] = UInt8(truncatingIfNeeded: generator.next())
            }
            if generator.next() % 5 == 0 { bytes.removeLast(Int(generator.next() % UInt64(bytes.count))) }
            if let image = try? BzImage(bytes: bytes) {
                accepted += 1
                // Whatever was accepted is self-consistent.
                #expect(image.header.setupBytes + 0x200 < bytes.count)
                #expect(image.payload.endIndex <= bytes.count)
            }
        }
        #expect(accepted < 2000)
    }
}
