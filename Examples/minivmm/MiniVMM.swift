// minivmm: a minimal microVM monitor composed from HVKit's modules. It boots a Linux kernel
// (bzImage, extracted on the host, or an ELF vmlinux) or any ELF that follows the Linux 64-bit
// boot protocol or carries a PVH note, with a 16550 serial console, virtio-mmio block, network, vsock, rng and console devices,
// the i8042 (reset) and the CMOS clock; with no kernel it runs HVKit's built-in Embedded Swift guest. The machine
// itself is HVMachine's: minivmm keeps only its command line, configuration file and reporting.
//
//   minivmm                                             the built-in guest
//   minivmm --kernel vmlinuz --cmdline "console=ttyS0" --disk root.img,readonly --rng
//   minivmm --kernel vmlinuz --net tap=hv0,mac=52:54:00:12:34:56   a network interface on tap hv0
//   minivmm --kernel vmlinuz --net stream=/tmp/passt.socket        the same through passt, unprivileged
//   minivmm --kernel vmlinuz --vsock 3,/tmp/vm.vsock                 vsock: host programs write "CONNECT <port>\n" to it
//   minivmm --kernel vmlinuz --snapshot-on-signal SIGUSR1,/var/lib/vm/snap   kill -USR1 saves the running machine
//   minivmm --restore /var/lib/vm/snap                    resumes it (give the same devices)
//   minivmm --config vm.conf                            the same options, one per line
import Glibc
import HVMachine

@main
enum MiniVMM {
    static func main() {
        let options: VMOptions
        do {
            let parsed = try Options(arguments: Array(CommandLine.arguments.dropFirst()))
            if parsed.help {
                print(Options.helpText)
                return
            }
            options = try VMOptions(parsed)
        } catch {
            fail("\(error)\nsee minivmm --help", status: 64)  // EX_USAGE
        }
        // Before any thread exists (see SignalWatcher).
        let signals = SignalWatcher(blocking: [SIGINT, SIGTERM] + (options.snapshotOnSignal.map { [$0.signal] } ?? []))
        let vm: MicroVM
        do { vm = try MicroVM(options) } catch { fail("\(error)", status: 1) }
        print("minivmm: \(vm.summary)")
        if options.kernel != nil, HostVirtualization.current.isEmulated {
            print("minivmm: warning: this host has no VMX or SVM, so its KVM emulates guest kernel code (about 1 µs an instruction):"
                + " Linux boots slowly, and stops on instructions the emulator refuses unless the kernel avoids them (see Guests/linux)")
        }
        // The guest's console writes to the descriptor directly: keep the order in a pipe.
        // (fflush(nil) flushes every stream; Swift 6 does not let code name stdout.)
        fflush(nil)
        let outcome = vm.run(signals: signals)
        print("minivmm: \(outcome.message)")
        fflush(nil)
        exit(outcome.status)
    }

    /// Says what went wrong on standard error and exits with `status`.
    static func fail(_ message: String, status: Int32) -> Never {
        fflush(nil)
        let line = Array("minivmm: error: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        exit(status)
    }
}
