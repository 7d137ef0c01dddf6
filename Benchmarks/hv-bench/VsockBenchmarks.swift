import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import SystemPackage

// virtio-vsock through the device's whole stream path: the test kit's driver plays the guest
// in this process (receive buffers of 4 KiB as Linux posts them, 4 KiB packets out, a 256 KiB
// receive buffer with credit updates as Linux's transport sends them, the data taken in place),
// the host end is a real socket served by the device's event loop. Baselines: the same bytes
// through a Unix socket pair in 4 KiB reads and writes, and the same one-line exchange over a
// plain Unix socket, in the same run.

/// A vsock device, its driver, and one connection the driver opened to an in-process
/// listener, whose host end this rig holds.
private final class VsockBenchRig {
    static let chunk = 4096
    /// The guest's receive buffer for the connection (its buf_alloc), and how little of it may
    /// be left unannounced before the driver sends a credit update: Linux's transport's values
    /// (VIRTIO_VSOCK_DEFAULT_BUF_SIZE, and an update once the free space it last announced
    /// falls under VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
    static let bufferAllocation: UInt32 = 256 << 10
    static let creditUpdateThreshold = Int(bufferAllocation) - (64 << 10)
    let memory: GuestMemoryMmap
    let loop: EventLoop
    let device: VsockDevice
    let driver: VsockDriver
    let host: FileDescriptor
    let guestPort: UInt32 = 5000
    let hostPort: UInt32 = 6000
    /// Bytes the driver has consumed from the device (its fwd_cnt).
    var consumed: UInt32 = 0
    /// Bytes the driver has sent on the connection (its tx_cnt), and the device's fwd_cnt as
    /// last heard: the driver's credit is 64 KiB less their difference.
    var sentTotal: UInt32 = 0
    var deviceForwarded: UInt32 = 0

    init(socketPath: String? = nil) throws {
        memory = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: 4 << 20)])
        loop = try EventLoop(name: "vsock-bench")
        device = try VsockDevice(guestCID: 3, socketPath: socketPath, eventLoop: loop, queueSize: 64)
        driver = try VsockDriver(device: device, memory: memory, interruptLine: NoInterrupt())
        let accepted = Locked<FileDescriptor?>(nil)
        device.listen(port: hostPort) { descriptor in accepted.withLock { $0 = descriptor } }
        try driver.send(driver.header(.request, from: guestPort, to: hostPort, bufferAllocation: Self.bufferAllocation))
        let answer = try driver.receive(for: 5) { !$0.isEmpty }
        guard answer.first?.header.operation == .response, let descriptor = accepted.withLock({ $0 }) else {
            throw BenchError.unexpected("the vsock connection did not open")
        }
        host = descriptor
    }

    deinit {
        close(host.rawValue)
        device.close()
        loop.shutdown()
    }

    /// Host to guest: a thread writes `bytes` into the host end; the driver takes them from
    /// its receive buffers, telling the device what it consumed as Linux's transport does
    /// (``creditUpdateThreshold``). Seconds.
    func hostToGuest(_ bytes: Int) throws -> Double {
        let host = self.host
        let start = nowNanoseconds()
        let writer = try HostThread(name: "vsock-writer") { writeStream(host, bytes) }
        var received = 0
        var unacknowledged = 0
        while received < bytes {
            let headers = try driver.receiveHeaders()
            if headers.isEmpty {
                sched_yield()
                continue
            }
            for header in headers {
                // Every header carries the device's fwd_cnt, data ones included.
                deviceForwarded = header.forwardCount
                guard header.operation == .readWrite else { continue }
                received += Int(header.length)
                unacknowledged += Int(header.length)
            }
            if unacknowledged >= Self.creditUpdateThreshold {
                consumed &+= UInt32(unacknowledged)
                unacknowledged = 0
                try driver.send(driver.header(.creditUpdate, from: guestPort, to: hostPort, bufferAllocation: Self.bufferAllocation,
                                              forwardCount: consumed))
            }
        }
        let seconds = (nowNanoseconds() - start) / 1e9
        writer.join()
        consumed &+= UInt32(unacknowledged)
        try driver.send(driver.header(.creditUpdate, from: guestPort, to: hostPort, bufferAllocation: Self.bufferAllocation,
                                      forwardCount: consumed))
        return seconds
    }

    /// Guest to host: the driver sends `bytes` in 4 KiB packets within the device's credit
    /// (following its credit updates); a thread reads them from the host end. Seconds.
    func guestToHost(_ bytes: Int) throws -> Double {
        let host = self.host
        let start = nowNanoseconds()
        let reader = try HostThread(name: "vsock-reader") { readStream(host, bytes) }
        let payload = [UInt8](repeating: 0xA5, count: Self.chunk)
        let tail = Array(payload.prefix(bytes % Self.chunk))
        var sent = 0
        let allocation = 64 << 10
        while sent < bytes {
            for header in try driver.receiveHeaders() where header.destinationPort == guestPort {
                deviceForwarded = header.forwardCount
            }
            let inFlight = Int(sentTotal &- deviceForwarded)
            // As a driver with much to send: every packet the credit allows, one notification.
            var batch: [(header: VsockHeader, data: [UInt8])] = []
            var room = allocation - inFlight
            while room >= Self.chunk, sent < bytes, batch.count < 16 {
                let count = min(Self.chunk, bytes - sent)
                batch.append((driver.header(.readWrite, from: guestPort, to: hostPort, bufferAllocation: Self.bufferAllocation,
                                            forwardCount: consumed), count == Self.chunk ? payload : tail))
                sent += count
                sentTotal &+= UInt32(count)
                room -= count
            }
            guard !batch.isEmpty else {
                sched_yield()
                continue
            }
            try driver.send(batch: batch)
        }
        reader.join()
        return (nowNanoseconds() - start) / 1e9
    }
}

/// Writes `bytes` to a blocking socket, 4 KiB at a time (the host end of both paths).
private func writeStream(_ descriptor: FileDescriptor, _ bytes: Int) {
    let block = [UInt8](repeating: 0x5A, count: VsockBenchRig.chunk)
    var left = bytes
    while left > 0 {
        let written = block.withUnsafeBytes { write(descriptor.rawValue, $0.baseAddress, min($0.count, left)) }
        guard written > 0 else { return }
        left -= written
    }
}

/// Reads `bytes` from a blocking socket, 4 KiB at a time.
private func readStream(_ descriptor: FileDescriptor, _ bytes: Int) {
    var buffer = [UInt8](repeating: 0, count: VsockBenchRig.chunk)
    var left = bytes
    while left > 0 {
        let got = read(descriptor.rawValue, &buffer, min(buffer.count, left))
        guard got > 0 else { return }
        left -= got
    }
}

/// The same bytes through a Unix socket pair: a thread writes 4 KiB at a time, this one reads
/// 4 KiB at a time. Seconds.
private func socketPairTransfer(_ bytes: Int) throws -> Double {
    let (ours, theirs) = try UnixSocket.pair()
    defer { close(ours.rawValue); close(theirs.rawValue) }
    _ = fcntl(ours.rawValue, F_SETFL, fcntl(ours.rawValue, F_GETFL) & ~O_NONBLOCK)
    let start = nowNanoseconds()
    let writer = try HostThread(name: "pair-writer") { writeStream(theirs, bytes) }
    readStream(ours, bytes)
    let seconds = (nowNanoseconds() - start) / 1e9
    writer.join()
    return seconds
}

/// MiB/s through the device both ways (host to guest, then guest to host), vs a Unix socket pair.
func vsockThroughputFigure(rounds: Int) throws -> Figure {
    let rig = try VsockBenchRig()
    let bytes = 16 << 20
    let mebibytes = Double(bytes) / Double(1 << 20)
    _ = try rig.hostToGuest(1 << 20)
    _ = try rig.guestToHost(1 << 20)
    var inbound: [Double] = [], outbound: [Double] = [], pair: [Double] = []
    for _ in 0..<rounds {
        pair.append(mebibytes / (try socketPairTransfer(bytes)))
        inbound.append(mebibytes / (try rig.hostToGuest(bytes)))
        outbound.append(mebibytes / (try rig.guestToHost(bytes)))
    }
    let both = 2 / (1 / median(inbound) + 1 / median(outbound))
    return Figure(name: "vsock_stream_throughput", value: both, baseline: median(pair), unit: "MiB/s",
                  note: "16 MiB each way through one connection, driver side in process with 4 KiB buffers and packets and Linux's credit policy: host to guest \(Int(median(inbound))) MiB/s, guest to host \(Int(median(outbound))) MiB/s (their harmonic mean), vs a Unix socket pair in 4 KiB reads and writes")
}

/// Microseconds from a host program's `CONNECT` to its `OK`, the guest's driver answering in
/// process, vs the same line exchange with a thread serving a plain Unix socket.
func vsockConnectLatencyFigure(rounds: Int) throws -> Figure {
    let path = "/tmp/hvkit-bench-vsock-\(getpid()).sock"
    let rig = try VsockBenchRig(socketPath: path)
    let plainPath = path + ".plain"
    let listener = try UnixSocket.listen(at: plainPath)
    defer { close(listener.rawValue); unlink(plainPath) }
    let server = try HostThread(name: "plain-server") {
        _ = fcntl(listener.rawValue, F_SETFL, fcntl(listener.rawValue, F_GETFL) & ~O_NONBLOCK)
        while true {
            let connection = accept(listener.rawValue, nil, nil)
            guard connection >= 0 else { return }
            var line = [UInt8](repeating: 0, count: 32)
            let got = read(connection, &line, line.count)
            if got > 0 { _ = write(connection, "OK 1073741824\n", 14) }
            close(connection)
            if got <= 0 { return }
        }
    }
    var ours: [Double] = [], plain: [Double] = []
    var reply = [UInt8](repeating: 0, count: 32)
    for round in 0..<(rounds * 50 + 10) {
        var start = nowNanoseconds()
        let client = try UnixSocket.connect(to: plainPath, nonBlocking: false)
        _ = write(client.rawValue, "CONNECT 52\n", 11)
        _ = read(client.rawValue, &reply, reply.count)
        if round >= 10 { plain.append((nowNanoseconds() - start) / 1e3) }
        close(client.rawValue)

        start = nowNanoseconds()
        let vsock = try UnixSocket.connect(to: path, nonBlocking: false)
        _ = write(vsock.rawValue, "CONNECT 52\n", 11)
        var request: VsockHeader?
        while request == nil {
            request = try rig.driver.receive().first { $0.header.operation == .request }?.header
        }
        guard let request else { break }
        try rig.driver.send(rig.driver.header(.response, from: 52, to: request.sourcePort))
        let got = read(vsock.rawValue, &reply, reply.count)
        guard got > 3, reply[0] == UInt8(ascii: "O") else { throw BenchError.unexpected("no OK line") }
        if round >= 10 { ours.append((nowNanoseconds() - start) / 1e3) }
        close(vsock.rawValue)
        // The guest ends the connection when it sees the host's shutdown.
        _ = try rig.driver.receive(for: 1) { $0.contains { $0.header.operation == .shutdown } }
        try rig.driver.send(rig.driver.header(.reset, from: 52, to: request.sourcePort))
    }
    // Wakes the plain server out of accept, with nothing to read.
    if let last = try? UnixSocket.connect(to: plainPath, nonBlocking: false) { close(last.rawValue) }
    server.join()
    return Figure(name: "vsock_connect_latency", value: median(ours), baseline: median(plain), unit: "µs",
                  note: "a host program's CONNECT 52 to its OK through the device's Unix socket, the guest's driver answering in process, vs the same line exchange with a thread serving a plain Unix socket")
}
