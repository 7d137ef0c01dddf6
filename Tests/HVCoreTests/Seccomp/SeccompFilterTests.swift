import Glibc
import HVCore
import Synchronization
import Testing

/// What a thread needs to run a little Swift and end, once filtered.
private let threadBasics: [SystemCall] = [
    .exit, .exitGroup, .futex, .madvise, .munmap, .mmap, .mprotect, .brk, .rtSigprocmask, .gettid, .getpid,
    .rseq, .setRobustList, .write, .schedYield,
    // What AddressSanitizer does as each thread starts and ends: pthread_getattr_np, and
    // setting and removing the thread's alternate signal stack.
    .schedGetaffinity, .sigaltstack,
]

/// Runs `body` on a new thread after installing `filter` there, and returns what it stored
/// (nil if the thread was killed before storing anything).
private func runFiltered(_ filter: SeccompFilter, _ body: @escaping @Sendable () -> Int64) throws -> Int64? {
    let result = Locked<Int64?>(nil)
    let installed = Locked<SeccompError?>(nil)
    let thread = try HostThread(name: "seccomp-test") {
        do throws(SeccompError) {
            try filter.installOnCurrentThread()
        } catch {
            installed.withLock { $0 = error }
            return
        }
        let value = body()
        result.withLock { $0 = value }
    }
    thread.join()
    if let error = installed.withLock({ $0 }) { throw error }
    return result.withLock { $0 }
}

/// Whether the test binary runs under a sanitizer (make sanitize): its runtime is linked in.
private let runningUnderASanitizer = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil
    || dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__tsan_init") != nil

@Suite("SeccompFilter")
struct SeccompFilterTests {
    @Test func instructionsAreLaidOutAsTheKernelsSockFilter() {
        #expect(MemoryLayout<SeccompInstruction>.size == 8)
        #expect(MemoryLayout<SeccompInstruction>.stride == 8)
    }

    /// The program checks the architecture first (any other kills the process), refuses the
    /// x32 ABI, and ends with the mismatch action.
    @Test func theProgramChecksTheArchitectureFirstAndEndsWithTheMismatchAction() throws {
        let program = try SeccompFilter(allowing: [.read, .write], mismatchAction: .errno(EPERM)).program()
        #expect(program[0] == SeccompInstruction(code: 0x20, jumpTrue: 0, jumpFalse: 0, operand: 4))
        #expect(program[1].operand == 0xC000_003E)
        #expect(program[2] == SeccompInstruction(code: 0x06, jumpTrue: 0, jumpFalse: 0, operand: 0x8000_0000))
        #expect(program[4].operand == 0x4000_0000)
        #expect(program.last == SeccompInstruction(code: 0x06, jumpTrue: 0, jumpFalse: 0, operand: 0x0005_0000 | UInt32(EPERM)))
        // Two plain rules: a comparison and an allow each.
        #expect(program.count == 6 + 4 + 1)
    }

    @Test func badArgumentIndexesAndOversizedListsAreRefused() {
        #expect(throws: SeccompError.badArgumentIndex(6)) {
            try SeccompFilter(allowing: [SeccompRule(.ioctl, argument: 6, mask: 1, value: 1)]).program()
        }
        let many = (0..<3000).map { SeccompRule(.ioctl, argument: 1, mask: 0xFF, value: UInt32($0)) }
        #expect(throws: SeccompError.tooManyRules(3000)) { try SeccompFilter(allowing: many).program() }
    }

    @Test func allowsAnswersAsTheProgramDoes() {
        let filter = SeccompFilter(allowing: [SeccompRule(.read), .ioctl(type: 0xAE)])
        #expect(filter.allows(.read))
        #expect(!filter.allows(.openat))
        #expect(filter.allows(.ioctl, arguments: [3, 0xAE80]))  // KVM_RUN
        #expect(!filter.allows(.ioctl, arguments: [3, 0x5401]))  // TCGETS
    }

    /// The point of a filter: a thread under it that makes a call outside its list is killed
    /// by SIGSYS at that call, and never runs what follows; another thread under the same
    /// filter that stays inside it runs to the end.
    @Test(.disabled(if: runningUnderASanitizer,
                    "a thread killed by seccomp never tells AddressSanitizer or ThreadSanitizer it ended, which breaks their bookkeeping"))
    func aForbiddenCallKillsTheThreadAtThatCall() throws {
        let filter = SeccompFilter(allowing: threadBasics, mismatchAction: .killThread)
        #expect(try runFiltered(filter) { Int64(getpid()) } == Int64(getpid()))
        #expect(try runFiltered(filter) { Int64(getppid()) } == nil)
        // This thread (unfiltered) goes on.
        #expect(getppid() > 0)
    }

    /// With an errno action the forbidden call fails instead, which shows exactly which calls
    /// pass: the allowed one runs, the other gets EPERM.
    @Test func anErrnoActionFailsTheCallInstead() throws {
        let filter = SeccompFilter(allowing: threadBasics, mismatchAction: .errno(EPERM))
        let result = try runFiltered(filter) {
            let forbidden = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            return forbidden == -1 ? Int64(errno) : Int64(forbidden)
        }
        #expect(result == Int64(EPERM))
    }

    /// An argument rule: ioctl is allowed for one request type only (the terminal's here);
    /// another type fails with the mismatch errno before the kernel looks at the descriptor.
    @Test func anIoctlRuleChecksTheRequestType() throws {
        let filter = SeccompFilter(allowing: threadBasics.map { SeccompRule($0) } + [.ioctl(type: 0x54)],
                                   mismatchAction: .errno(EPERM))
        let fd = open("/dev/null", O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        let result = try runFiltered(filter) {
            // TCGETS on /dev/null reaches the kernel: ENOTTY. KVM_GET_API_VERSION does not: EPERM.
            let terminal = ioctl(fd, 0x5401, 0) == -1 ? Int64(errno) : 0
            let kvm = ioctl(fd, 0xAE00, 0) == -1 ? Int64(errno) : 0
            return terminal << 16 | kvm
        }
        #expect(result == Int64(ENOTTY) << 16 | Int64(EPERM))
    }

    /// clone3 can be made to fail with ENOSYS while clone with CLONE_THREAD stays allowed:
    /// glibc then creates threads with clone, whose flags the filter checks.
    @Test func threadsAreStillCreatedWhenClone3FailsWithENOSYS() throws {
        let filter = SeccompFilter(
            allowing: threadBasics.map { SeccompRule($0) } + [SeccompRule(.clone, argument: 0, mask: 0x1_0000, value: 0x1_0000),
                                                               SeccompRule(.prctl, argument: 0, mask: 0xFFFF_FFFF, value: 15),
                                                               SeccompRule(.sigaltstack), SeccompRule(.rtSigaction)],
            failing: [.clone3: ENOSYS], mismatchAction: .errno(EPERM))
        let result = try runFiltered(filter) {
            let inner = Atomic<Int64>(0)
            guard let thread = try? HostThread(name: "inner", { inner.store(42, ordering: .releasing) }) else { return -1 }
            thread.join()
            return inner.load(ordering: .acquiring)
        }
        #expect(result == 42)
    }
}
