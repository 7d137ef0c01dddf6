import Glibc
import HVCore
import SystemPackage
import Testing

@Suite struct UnixSocketTests {
    private static let counter = Locked(0)

    func scratchPath() -> String {
        let number = Self.counter.withLock { value in
            value += 1
            return value
        }
        return "/tmp/hvkit-unix-\(getpid())-\(number).sock"
    }

    @Test func aListenerAcceptsAConnectionAndBytesFlowBothWays() throws {
        let path = scratchPath()
        let listener = try UnixSocket.listen(at: path)
        defer { close(listener.rawValue); unlink(path) }
        #expect(try UnixSocket.accept(listener) == nil, "nothing waits yet")
        let client = try UnixSocket.connect(to: path, nonBlocking: false)
        defer { close(client.rawValue) }
        let server = try #require(try UnixSocket.accept(listener))
        defer { close(server.rawValue) }
        #expect(fcntl(server.rawValue, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(server.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        #expect(write(client.rawValue, "ping", 4) == 4)
        var buffer = [UInt8](repeating: 0, count: 4)
        var waiter = pollfd(fd: server.rawValue, events: Int16(POLLIN), revents: 0)
        _ = poll(&waiter, 1, 1000)
        #expect(read(server.rawValue, &buffer, 4) == 4 && buffer == Array("ping".utf8))
    }

    @Test func aStaleSocketFileIsReplacedButNoOtherFile() throws {
        let path = scratchPath()
        let first = try UnixSocket.listen(at: path)
        close(first.rawValue)
        let second = try UnixSocket.listen(at: path)
        close(second.rawValue)
        unlink(path)
        let file = open(path, O_CREAT | O_WRONLY, 0o600)
        close(file)
        defer { unlink(path) }
        #expect(throws: Errno.addressInUse) { try UnixSocket.listen(at: path) }
        #expect(access(path, F_OK) == 0, "the user's file is still there")
    }

    @Test func connectingWhereNobodyListensSaysWhy() throws {
        let path = scratchPath()
        #expect(throws: Errno.noSuchFileOrDirectory) { try UnixSocket.connect(to: path) }
        let stale = try UnixSocket.listen(at: path)
        close(stale.rawValue)
        defer { unlink(path) }
        #expect(throws: Errno.connectionRefused) { try UnixSocket.connect(to: path) }
        #expect(throws: Errno.fileNameTooLong) { try UnixSocket.connect(to: "/tmp/" + String(repeating: "x", count: 200)) }
        #expect(throws: Errno.invalidArgument) { try UnixSocket.connect(to: "") }
    }

    @Test func aPairIsConnectedWithItsFirstEndNonBlocking() throws {
        let (ours, theirs) = try UnixSocket.pair()
        defer { close(ours.rawValue); close(theirs.rawValue) }
        #expect(fcntl(ours.rawValue, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(theirs.rawValue, F_GETFL) & O_NONBLOCK == 0)
        #expect(write(theirs.rawValue, "x", 1) == 1)
        var byte: UInt8 = 0
        #expect(read(ours.rawValue, &byte, 1) == 1 && byte == UInt8(ascii: "x"))
        #expect(read(ours.rawValue, &byte, 1) == -1 && errno == EAGAIN)
    }
}
