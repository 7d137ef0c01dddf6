// swift-tools-version: 6.0
// libFuzzer targets for HVKit's guest- and image-facing parsers. Built apart from the main
// package because every module must be compiled with -sanitize=fuzzer,address and each
// target with -parse-as-library (libFuzzer supplies main): `make fuzz` in the repository root.
import PackageDescription

let targets = [
    "fuzz-split-queue", "fuzz-mmio-transport", "fuzz-block-request", "fuzz-console-rng",
    "fuzz-hypercall", "fuzz-elf", "fuzz-bzimage", "fuzz-boot-tables",
]

let package = Package(
    name: "HVKitFuzz",
    dependencies: [.package(name: "HVKit", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [
            .product(name: "HVCore", package: "HVKit"),
            .product(name: "HVDevices", package: "HVKit"),
            .product(name: "HVDevicesTesting", package: "HVKit"),
        ]),
    ] + targets.map { name in
        .executableTarget(name: name, dependencies: [
            "FuzzSupport",
            .product(name: "HVCore", package: "HVKit"),
            .product(name: "HVBoot", package: "HVKit"),
            .product(name: "HVDevices", package: "HVKit"),
            .product(name: "HVDevicesTesting", package: "HVKit"),
            .product(name: "HVParavirt", package: "HVKit"),
        ])
    }
)
