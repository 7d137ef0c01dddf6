import Glibc
import HVCore
import HVKVM
import HVMachine
import SystemPackage

// The Linux test guest's figures (Guests/linux, built by `make artifacts`): the same kernel and
// initramfs under minivmm and under QEMU's microvm machine, in alternating rounds.

let linuxGuestDirectory: String = {
    if let path = getenv("HVKIT_ARTIFACTS") { return String(cString: path) + "/linux" }
    return "/var/tmp/hvkit-artifacts/linux"
}()

/// The Linux test guest's command line for this host (what an emulating host needs included),
/// without earlyprintk so that both VMMs print the same lines.
func linuxTestCommandLine(tests: String) -> String {
    (["console=ttyS0", "reboot=k", "panic=-1"] + BootSource.emulatedHostParameters + ["hvkit.tests=\(tests)"])
        .joined(separator: " ")
}

/// QEMU with the CPU restrictions this host needs: no CMPXCHG16B (refused by the emulator), and
/// XSAVEERPTR, without which qemu64 makes the kernel take an FXSAVE-leak workaround made of
/// MMX instructions the emulator refuses.
func qemuMicroVM(memory: Int, machineOptions: String = "", extra: [String]) throws -> [String] {
    let qemu = "/usr/bin/qemu-system-x86_64"
    guard access(qemu, X_OK) == 0 else {
        throw BenchError.unexpected("needs \(qemu): apt-get install qemu-system-x86 (`make bench` does)")
    }
    return [qemu, "-M", "microvm" + machineOptions, "-accel", "kvm", "-cpu", "qemu64,-cx16,+xsaveerptr", "-m", "\(memory)", "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio"] + extra
}

/// Spawn to the init's first line (HVKIT-INIT): minivmm against QEMU microvm, the same
/// vmlinux (by PVH), initramfs, command line, 128 MiB and one vCPU. Seconds, median of `rounds`.
func linuxBootToInitFigure(rounds: Int) throws -> Figure {
    let minivmm = try executableBesideBench("minivmm")
    let vmlinux = linuxGuestDirectory + "/vmlinux", initramfs = linuxGuestDirectory + "/initramfs.cpio"
    for path in [vmlinux, initramfs] where access(path, R_OK) != 0 {
        throw BenchError.unexpected("needs \(path): run `make artifacts`")
    }
    let commandLine = linuxTestCommandLine(tests: "")
    let ours = [minivmm, "--kernel", vmlinux, "--initrd", initramfs, "--cmdline", commandLine, "--memory", "128", "--cpus", "1"]
    let theirs = try qemuMicroVM(memory: 128, extra: ["-kernel", vmlinux, "-initrd", initramfs, "-append", commandLine])
    let (oursNs, theirsNs) = try alternatingTimesToOutput(ours, theirs, marker: "HVKIT-INIT", rounds: rounds, limit: 600)
    return Figure(name: "linux_boot_to_init", value: oursNs / 1e9, baseline: theirsNs / 1e9, unit: "s",
                  note: "spawn to the init's first line, Linux test guest by PVH, 128 MiB, 1 vCPU, median of \(rounds) alternating; baseline: qemu-system-x86_64 -M microvm, same kernel, initramfs and command line; goal ratio ≤ 1.0")
}

/// The guest's `dd` of 1 MiB with O_DIRECT, written then read back (hvkit-test blk-dd) through
/// virtio-blk on a 4 MiB file: minivmm (HVKit's device, AIO backend, page cache) against QEMU
/// microvm (virtio-blk-device, its default thread-pool AIO, page cache) in alternating boots. Timed on the host
/// from the guest's start line to its result line, ms, median of `rounds`; the guest's own
/// figures are in the note of the last round.
func linuxBlockDDFigure(rounds: Int) throws -> Figure {
    let minivmm = try executableBesideBench("minivmm")
    let vmlinux = linuxGuestDirectory + "/vmlinux", initramfs = linuxGuestDirectory + "/initramfs.cpio"
    for path in [vmlinux, initramfs] where access(path, R_OK) != 0 {
        throw BenchError.unexpected("needs \(path): run `make artifacts`")
    }
    let disk = "/var/tmp/hv-bench-dd-\(getpid()).img"
    defer { unlink(disk) }
    let created = open(disk, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
    guard created >= 0, ftruncate(created, 4 << 20) == 0 else { throw BenchError.unexpected("cannot make \(disk): errno \(errno)") }
    close(created)
    let commandLine = linuxTestCommandLine(tests: "blk-dd")
    let ours = [minivmm, "--kernel", vmlinux, "--initrd", initramfs, "--cmdline", commandLine, "--memory", "128", "--cpus", "1",
                "--disk", disk]
    // acpi=off: QEMU then announces its virtio-mmio transports on the command line itself.
    let theirs = try qemuMicroVM(memory: 128, machineOptions: ",acpi=off", extra: ["-kernel", vmlinux, "-initrd", initramfs, "-append", commandLine,
                                                      "-drive", "id=d0,file=\(disk),format=raw,if=none,cache=writeback",
                                                      "-device", "virtio-blk-device,drive=d0"])
    let markers = ["HVKIT-DD-START", "HVKIT-TEST blk-dd ok"]
    var oursMs: [Double] = []
    var theirsMs: [Double] = []
    for _ in 0..<rounds {
        let mine = try timesToOutputs(ours, markers: markers, limit: 600)
        oursMs.append((mine[1] - mine[0]) / 1e6)
        let qemu = try timesToOutputs(theirs, markers: markers, limit: 600)
        theirsMs.append((qemu[1] - qemu[0]) / 1e6)
    }
    return Figure(name: "linux_blk_dd", value: median(oursMs), baseline: median(theirsMs), unit: "ms",
                  note: "the Linux test guest's 1 MiB O_DIRECT write and read-back through virtio-blk, host-timed between its lines, median of \(rounds) alternating boots; baseline: QEMU microvm virtio-blk-device (cache=writeback); goal ratio ≤ 1.0")
}
