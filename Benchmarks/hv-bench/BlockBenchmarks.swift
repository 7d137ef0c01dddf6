import CHVDevicesShims
import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import SystemPackage

// virtio-blk through the device's whole request path: a driver-side writer in this process
// lays out chains in guest memory, kicks the virtio-mmio transport, and reaps the used ring,
// exactly as a guest driver would but without guest instructions (which this machine
// emulates). The baseline is the host doing pread/pwrite of the same sizes at the same offsets
// on the same file, in the same run.

enum BlockBackendKind: String {
    case sync, aio, uring
}

struct BlockWorkload {
    var write: Bool
    var requestSize: Int
    var depth: Int
    var requests: Int
    /// O_DIRECT on both sides: the disk, not the page cache.
    var direct = false
}

/// A scratch disk file, removed on deinit.
final class ScratchDisk {
    static let size = 64 << 20
    let path: String

    init() throws {
        var template = Array("/var/tmp/hv-bench-disk-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw BenchError.unexpected("mkstemp: errno \(errno)") }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { close(fd) }
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        for index in chunk.indices { chunk[index] = UInt8(truncatingIfNeeded: index &* 31) }
        for _ in 0..<(Self.size >> 20) {
            guard chunk.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == chunk.count else {
                throw BenchError.unexpected("writing the scratch disk: errno \(errno)")
            }
        }
        fsync(fd)
    }

    deinit { unlink(path) }
}

/// A virtio-blk device on the scratch disk behind the MMIO transport, and its driver.
final class BlockBenchRig {
    static let headers: UInt64 = 0x10000
    static let statuses: UInt64 = 0x11000
    static let data: UInt64 = 0x100000

    let memory: GuestMemoryMmap
    let loop: EventLoop
    let device: BlockDevice
    let mmio: MMIODriver
    var queue: DriverQueue

    init(disk: ScratchDisk, backend kind: BlockBackendKind, direct: Bool = false, rateLimit: RateLimit? = nil) throws {
        memory = try GuestMemoryMmap(size: 8 << 20)
        loop = try EventLoop(name: "bench-blk")
        let image = try DiskImage(path: disk.path, direct: direct)
        let backend: any BlockBackend = switch kind {
        case .sync: SyncBlockBackend(disk: image)
        case .aio: try AIOBlockBackend(disk: image, eventLoop: loop, depth: 256)
        case .uring: try UringBlockBackend(disk: image, eventLoop: loop, depth: 256)
        }
        device = BlockDevice(backend: backend, queueSize: 256, rateLimiter: rateLimit.map { RateLimiter($0) }, eventLoop: loop)
        let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: NoInterrupt())
        mmio = MMIODriver(transport: transport)
        queue = try DriverQueue(memory: memory, size: 256)
        mmio.initialize(queues: [queue])
    }

    deinit { loop.shutdown() }

    /// Adds the request for `slot` at `sector`; returns its head.
    func add(slot: Int, sector: UInt64, type: UInt32, size: Int) throws -> UInt16 {
        let header = GuestAddress(Self.headers + UInt64(slot) * 16)
        try memory.write(type, at: header)
        try memory.write(sector, at: GuestAddress(header.rawValue + 8))
        let data = GuestAddress(Self.data + UInt64(slot * size))
        let status = GuestAddress(Self.statuses + UInt64(slot))
        // Each slot has three descriptors of its own: requests complete out of order (io_uring
        // hands buffered writes to its workers), so a table taken in turn would overwrite a
        // chain still in flight, and reuse its head.
        let first = UInt16(slot * 3)
        if type == 4 {
            return try queue.addChain([(header, 16, false), (status, 1, true)], at: first)
        }
        return try queue.addChain([(header, 16, false), (data, UInt32(size), type == 0), (status, 1, true)], at: first)
    }

    /// Runs `workload` with `depth` requests outstanding; returns wall and CPU seconds.
    func run(_ workload: BlockWorkload) throws -> (wall: Double, cpu: Double) {
        let type: UInt32 = workload.write ? 1 : 0
        let sectorsPerRequest = UInt64(workload.requestSize / 512)
        let diskSectors = UInt64(ScratchDisk.size / 512)
        // The driver's own bookkeeping, as a guest's would be: an array by head (the queue has 256).
        var slotOfHead = [Int?](repeating: nil, count: 256)
        var issued = 0
        var completed = 0
        func issue(_ slot: Int) throws {
            let sector = (UInt64(issued) * sectorsPerRequest) % diskSectors
            slotOfHead[Int(try add(slot: slot, sector: sector, type: type, size: workload.requestSize))] = slot
            issued += 1
        }
        let cpuStart = cpuSeconds()
        let start = nowNanoseconds()
        for slot in 0..<min(workload.depth, workload.requests) { try issue(slot) }
        mmio.notify(0)
        var lastProgress = nowNanoseconds()
        while completed < workload.requests {
            let used = try queue.takeUsed()
            if used.isEmpty {
                // A device that stopped (a broken queue) must end the figure, not spin forever.
                guard nowNanoseconds() - lastProgress < 10e9 else {
                    throw BenchError.unexpected("no request completed for 10 s (\(completed) of \(workload.requests) done)")
                }
                sched_yield()
                continue
            }
            lastProgress = nowNanoseconds()
            for element in used {
                guard element.id < slotOfHead.count, let slot = slotOfHead[Int(element.id)] else {
                    throw BenchError.unexpected("the device used head \(element.id), which is not in flight")
                }
                slotOfHead[Int(element.id)] = nil
                guard try memory.read(UInt8.self, at: GuestAddress(Self.statuses + UInt64(slot))) == 0 else {
                    throw BenchError.unexpected("a request failed with status \(try memory.read(UInt8.self, at: GuestAddress(Self.statuses + UInt64(slot))))")
                }
                completed += 1
                if issued < workload.requests { try issue(slot) }
            }
            mmio.notify(0)
        }
        return ((nowNanoseconds() - start) / 1e9, cpuSeconds() - cpuStart)
    }

    /// Nanoseconds per flush request.
    func flushes(_ count: Int) throws -> Double {
        let start = nowNanoseconds()
        for _ in 0..<count {
            _ = try add(slot: 0, sector: 0, type: 4, size: 0)
            mmio.notify(0)
            while try queue.takeUsed().isEmpty { sched_yield() }
        }
        return (nowNanoseconds() - start) / Double(count)
    }
}

/// An interrupt line that goes nowhere: the benchmark's driver polls the used ring.
final class NoInterrupt: InterruptLine {
    func trigger() throws(Errno) {}
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
    let system = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    return user + system
}

/// The host doing the same transfers with pread/pwrite, one at a time, into and out of as
/// many buffers as the device has requests in flight (so both sides move the same memory: one
/// buffer reused would stay in cache and flatter the host).
func hostBaseline(_ workload: BlockWorkload, disk: ScratchDisk) throws -> (wall: Double, cpu: Double) {
    let fd = open(disk.path, O_RDWR | O_CLOEXEC | (workload.direct ? HVD_O_DIRECT : 0))
    guard fd >= 0 else { throw BenchError.unexpected("open: errno \(errno)") }
    defer { close(fd) }
    let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: workload.requestSize * workload.depth, alignment: 4096)
    defer { buffers.deallocate() }
    buffers.initializeMemory(as: UInt8.self, repeating: 0x5A)
    let cpuStart = cpuSeconds()
    let start = nowNanoseconds()
    for index in 0..<workload.requests {
        let offset = off_t((index * workload.requestSize) % ScratchDisk.size)
        let buffer = UnsafeMutableRawBufferPointer(rebasing: buffers[(index % workload.depth) * workload.requestSize..<(index % workload.depth + 1) * workload.requestSize])
        let done = workload.write
            ? pwrite(fd, buffer.baseAddress, workload.requestSize, offset)
            : pread(fd, buffer.baseAddress, workload.requestSize, offset)
        guard done == workload.requestSize else { throw BenchError.unexpected("host I/O: errno \(errno)") }
    }
    return ((nowNanoseconds() - start) / 1e9, cpuSeconds() - cpuStart)
}

/// MiB/s through the device vs the host, medians over interleaved rounds.
func blockThroughputFigure(
    name: String, _ workload: BlockWorkload, backend: BlockBackendKind, rounds: Int, disk: ScratchDisk
) throws -> Figure {
    let rig = try BlockBenchRig(disk: disk, backend: backend, direct: workload.direct)
    let mebibytes = Double(workload.requests * workload.requestSize) / Double(1 << 20)
    _ = try rig.run(workload)  // warm the page cache and the code paths
    var ours: [Double] = []
    var host: [Double] = []
    for _ in 0..<rounds {
        host.append(mebibytes / (try hostBaseline(workload, disk: disk).wall))
        ours.append(mebibytes / (try rig.run(workload).wall))
    }
    let kind = workload.write ? "write" : "read"
    return Figure(
        name: name, value: median(ours), baseline: median(host), unit: "MiB/s",
        note: "\(backend.rawValue) backend, \(workload.requestSize >> 10) KiB \(kind)s at queue depth \(workload.depth) through virtio-mmio vs host p\(kind) one at a time over as many buffers, \(workload.direct ? "O_DIRECT on both sides" : "page cache warm")"
    )
}

/// CPU microseconds per 4 KiB read request through the device (all threads) vs per host pread.
func blockCPUFigure(backend: BlockBackendKind, rounds: Int, disk: ScratchDisk) throws -> Figure {
    let workload = BlockWorkload(write: false, requestSize: 4096, depth: 1, requests: 4096)
    let rig = try BlockBenchRig(disk: disk, backend: backend)
    _ = try rig.run(workload)
    var ours: [Double] = []
    var host: [Double] = []
    for _ in 0..<rounds {
        host.append(try hostBaseline(workload, disk: disk).cpu / Double(workload.requests) * 1e6)
        ours.append(try rig.run(workload).cpu / Double(workload.requests) * 1e6)
    }
    return Figure(
        name: backend == .aio ? "blk_cpu_per_request" : "blk_cpu_per_request_\(backend.rawValue)", value: median(ours), baseline: median(host), unit: "us",
        note: "\(backend.rawValue) backend: host CPU per 4 KiB read request, driver side included, vs one host pread; overhead \(format(median(ours) - median(host))) us"
    )
}

/// Microseconds per flush request vs one fdatasync.
func blockFlushFigure(rounds: Int, disk: ScratchDisk) throws -> Figure {
    let rig = try BlockBenchRig(disk: disk, backend: .aio)
    let fd = open(disk.path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { throw BenchError.unexpected("open: errno \(errno)") }
    defer { close(fd) }
    let count = 100
    var ours: [Double] = []
    var host: [Double] = []
    for _ in 0..<rounds {
        let start = nowNanoseconds()
        for _ in 0..<count { fdatasync(fd) }
        host.append((nowNanoseconds() - start) / Double(count) / 1000)
        ours.append(try rig.flushes(count) / 1000)
    }
    return Figure(
        name: "blk_flush", value: median(ours), baseline: median(host), unit: "us",
        note: "aio backend: flush request with nothing dirty vs fdatasync"
    )
}
