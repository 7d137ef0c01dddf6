// The default guest of hv-tender: a unikernel-style program in Embedded Swift that greets,
// reports what the host offers, reads the clock and random bytes, writes and reads back a
// block when there is a disk, and exits with status 0.
import HVKitGuest

@_cdecl("hv_main")
public func main() -> Int32 {
    print("Hello from Embedded Swift on HVKit!")
    let info = Hypervisor.info()
    print("ABI \(info.majorVersion).\(info.minorVersion), \(info.memorySize >> 20) MiB of RAM")

    let start = Hypervisor.monotonicNanoseconds
    let wall = Hypervisor.wallClockNanoseconds
    print("wall clock: \(wall / 1_000_000_000) s since 1970")

    var random: UInt64 = 0
    do throws(HypervisorError) {
        try withUnsafeMutableBytes(of: &random) { buffer throws(HypervisorError) in try Hypervisor.fillRandom(buffer) }
    } catch {
        print("random failed: \(error.code)")
        return 1
    }
    print("random: \(random != 0 ? "ok" : "all zero?")")

    if info.hasBlock {
        if !checkBlock(capacity: info.blockCapacity) { return 2 }
    } else {
        print("no disk")
    }
    let elapsed = Hypervisor.monotonicNanoseconds &- start
    print("done in \(elapsed / 1000) us of guest time; goodbye")
    return 0
}

/// Writes a sector with a pattern at the end of the disk, flushes, reads it back, compares.
func checkBlock(capacity: UInt64) -> Bool {
    let size = BlockStorage.sectorSize
    guard capacity >= UInt64(size) else {
        print("disk too small")
        return false
    }
    let offset = capacity - UInt64(size)
    let output = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    let input = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    let original = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    for index in 0..<size { output[index] = UInt8(truncatingIfNeeded: index &* 7 &+ 1) }
    do throws(HypervisorError) {
        try BlockStorage.read(at: offset, into: original)
        try BlockStorage.write(at: offset, from: UnsafeRawBufferPointer(output))
        try BlockStorage.flush()
        try BlockStorage.read(at: offset, into: input)
        let same = (0..<size).allSatisfy { input[$0] == output[$0] }
        // Put the sector back as it was.
        try BlockStorage.write(at: offset, from: UnsafeRawBufferPointer(original))
        try BlockStorage.flush()
        print("block: wrote, flushed and read back sector \(offset / UInt64(size)): \(same ? "match" : "MISMATCH")")
        return same
    } catch {
        print("block failed: error \(error.code)")
        return false
    }
}
