// swift-tools-version: 6.2
import PackageDescription

/// The library modules are checked for strict memory safety (SE-0458): every use of an unsafe
/// construct is marked `unsafe`, so what touches raw memory (guest RAM, kvm_run, iovecs, C
/// buffers) is visible and audited, and a new unmarked use fails the build.
let librarySettings: [SwiftSetting] = [
    .strictMemorySafety(),
    .treatWarning("StrictMemorySafety", as: .error),
]

/// How the stand-alone VMM (and the empty program that is its start-up floor) are linked:
/// lld with packed relative relocations (DT_RELR: the 28,000 relocations a position-independent
/// Swift executable carries shrink from 680 KiB of table the loader reads at every start to a
/// few KiB), and without exporting every Swift symbol to the dynamic symbol table (the Swift
/// driver's static-stdlib link exports them; nothing here looks them up, and the loader would
/// page the 650 KiB of tables in). Together about 1 MiB less resident memory per VMM process;
/// see `minivmm_rss` in README.md. These are linker flags of executables only: a package that
/// depends on HVKit's libraries never sees them. Release builds only: the sanitizer builds bring
/// runtimes that export their interceptors, and debug builds are not what anyone measures.
let leanExecutableLinking: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic"],
                 .when(platforms: [.linux], configuration: .release)),
]

let package = Package(
    name: "HVKit",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "HVCore", targets: ["HVCore"]),
        .library(name: "HVBoot", targets: ["HVBoot"]),
        .library(name: "HVKVM", targets: ["HVKVM"]),
        .library(name: "HVParavirt", targets: ["HVParavirt"]),
        .library(name: "HVDevices", targets: ["HVDevices"]),
        .library(name: "HVDevicesTesting", targets: ["HVDevicesTesting"]),
        .library(name: "HVMachine", targets: ["HVMachine"]),
        .library(name: "GuestImages", targets: ["GuestImages"]),
        .executable(name: "hv-hello", targets: ["hv-hello"]),
        .executable(name: "hv-tender", targets: ["hv-tender"]),
        .executable(name: "hv-fleet", targets: ["hv-fleet"]),
        .executable(name: "minivmm", targets: ["minivmm"]),
        .executable(name: "hv-bench", targets: ["hv-bench"]),
        .executable(name: "hv-empty", targets: ["hv-empty"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // HVMachine reports through swift-metrics, so an embedder's exporter picks HVKit's
        // counters up with no HVKit code.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        // C shims: what Swift cannot import on its own.
        .target(name: "CKVM"),
        .target(name: "CHVCoreShims"),
        .target(name: "CHVDevicesShims"),
        // Host-side decompression of bzImage payloads: zlib, liblzma, liblz4 and libzstd,
        // opened with dlopen when a kernel is extracted (their headers are needed to build).
        .target(name: "CKernelDecompress"),
        .systemLibrary(
            name: "CLibAIO",
            providers: [.apt(["libaio-dev"])]
        ),

        // Libraries.
        .target(
            name: "HVCore",
            dependencies: [
                "CHVCoreShims",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: librarySettings
        ),
        // Guest images and boot data, hypervisor-agnostic (rust-vmm's linux-loader): ELF64 and its
        // notes, bzImage parsing and host-side extraction, zero page, e820, PVH start info, ACPI
        // and MP tables, the boot plan.
        .target(
            name: "HVBoot",
            dependencies: [
                "HVCore", "CKernelDecompress",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: librarySettings
        ),
        .target(
            name: "HVKVM",
            dependencies: [
                "HVCore", "HVBoot", "CKVM",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: librarySettings
        ),
        .target(
            name: "HVParavirt",
            dependencies: [
                "HVCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: librarySettings
        ),
        .target(
            name: "HVDevices",
            dependencies: [
                "HVCore", "CLibAIO", "CHVDevicesShims",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: librarySettings
        ),

        // Composition: the only library that imports HVKVM together with the device modules.
        .target(
            name: "HVMachine",
            dependencies: [
                "HVCore", "HVBoot", "HVKVM", "HVDevices", "HVParavirt",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: librarySettings
        ),

        .target(
            name: "HVDevicesTesting",
            dependencies: ["HVCore", "HVDevices", "CHVDevicesShims", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: librarySettings
        ),
        // The unikernel guests Guests/build-guests.sh builds, as byte arrays (generated).
        .target(name: "GuestImages", path: "Guests/Images"),

        // Examples and benchmarks.
        .executableTarget(
            name: "hv-hello",
            dependencies: ["HVCore", "HVKVM"],
            path: "Examples/hv-hello"
        ),
        .executableTarget(
            name: "hv-tender",
            dependencies: [
                "HVMachine", "GuestImages",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/hv-tender"
        ),
        .executableTarget(
            name: "hv-fleet",
            dependencies: [
                "HVMachine", "GuestImages",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/hv-fleet"
        ),
        // minivmm parses its options by hand: its start-up budget cannot afford the argument
        // parser's reflection (see Examples/minivmm/Options.swift).
        .executableTarget(
            name: "minivmm",
            dependencies: ["HVMachine", "GuestImages"],
            path: "Examples/minivmm",
            linkerSettings: leanExecutableLinking
        ),
        // The floor of compose_to_first_run: an empty Swift program, linked as minivmm is.
        .executableTarget(name: "hv-empty", path: "Benchmarks/hv-empty", linkerSettings: leanExecutableLinking),
        .target(
            name: "CBenchBaseline",
            dependencies: ["CKVM"],
            path: "Benchmarks/CBenchBaseline"
        ),
        .executableTarget(
            name: "hv-bench",
            dependencies: [
                "HVBoot", "HVMachine",
                "HVCore", "HVKVM", "HVDevices", "HVDevicesTesting", "HVParavirt", "GuestImages", "CBenchBaseline", "CHVDevicesShims",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Benchmarks/hv-bench"
        ),

        // Tests. HVTestSupport holds what several test targets share: a seeded generator, a
        // guest memory layout with a hole and a read-only region, and ELF note bytes.
        .target(name: "HVTestSupport", dependencies: ["HVCore"], path: "Tests/HVTestSupport"),
        .testTarget(
            name: "HVCoreTests",
            dependencies: ["HVCore", "HVTestSupport", .product(name: "Logging", package: "swift-log")],
            // Files older HVKit versions wrote, read by path from the tests.
            exclude: ["Snapshot/Fixtures"]
        ),
        .testTarget(name: "HVBootTests", dependencies: ["HVBoot", "HVCore", "HVTestSupport", .product(name: "SystemPackage", package: "swift-system")]),
        // HVKVMTests also run HVDevices' virtio-mmio transport under a real guest, end to end.
        .testTarget(
            name: "HVKVMTests",
            dependencies: ["HVKVM", "HVBoot", "HVCore", "HVDevices", "HVDevicesTesting", "HVTestSupport", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // The kernel's virtio headers, for a test that checks HVDevices' constants against them.
        .target(name: "CVirtioHeaders", path: "Tests/CVirtioHeaders"),
        .testTarget(
            name: "HVDevicesTests",
            dependencies: ["HVDevices", "HVDevicesTesting", "HVCore", "HVTestSupport", "CVirtioHeaders", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // HVMachineTests compose whole machines on real KVM, and boot the Linux test guest
        // (Guests/linux) where its artifacts exist.
        .testTarget(
            name: "HVMachineTests",
            dependencies: [
                "HVMachine", "HVDevicesTesting", "GuestImages", "HVTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        // The guest SDK's C header (Guests/sdk/include), for the test that checks it against HVParavirt.
        .target(name: "CHVKitGuestABI", path: "Tests/CHVKitGuestABI"),
        // HVParavirtTests also run guests end to end on real KVM.
        .testTarget(
            name: "HVParavirtTests",
            dependencies: ["HVParavirt", "HVCore", "HVBoot", "HVKVM", "HVDevicesTesting", "GuestImages", "CHVKitGuestABI", "HVTestSupport", .product(name: "SystemPackage", package: "swift-system")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
