import HVKVM
import Testing

@Suite struct HostVirtualizationTests {
    @Test func readsTheFirstProcessorsFlagsAndClock() {
        let cpuinfo = """
            processor\t: 0
            cpu MHz\t\t: 2445.424
            flags\t\t: fpu vme svm lm
            processor\t: 1
            cpu MHz\t\t: 1200.000
            flags\t\t: fpu vmx
            """
        let host = HostVirtualization(cpuinfo: cpuinfo)
        #expect(host.hasSVM && !host.hasVMX && host.isHardwareAssisted)
        #expect(host.tscKilohertz == 2_445_424)
    }

    @Test func aHostWithoutVMXOrSVMEmulatesAndMayNotSayItsClock() {
        let host = HostVirtualization(cpuinfo: "flags\t: fpu lm\n")
        #expect(host.isEmulated)
        #expect(host.tscKilohertz == nil)
        #expect(HostVirtualization(cpuinfo: "").isEmulated)
    }

    @Test func onlyTheFieldsNamedExactlyCount() {
        // "vmx flags" (newer kernels) is not "flags"; a field named like one but longer is not it.
        let host = HostVirtualization(cpuinfo: "vmx flags\t: vmx svm\nflagsx\t: vmx\ncpu MHz:abc\nflags:fpu  svm \n")
        #expect(host.hasSVM && !host.hasVMX)
        #expect(host.tscKilohertz == nil)
        // The second processor's block is not read.
        #expect(HostVirtualization(cpuinfo: "processor\t: 0\n\nflags\t: vmx\n").isEmulated)
    }
}
