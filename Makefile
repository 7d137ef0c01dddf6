# HVKit: the two commands a fresh machine needs are `make demo` and `make test`.
# Both install what the build needs first: libaio-dev (the virtio-blk AIO backend), and zlib,
# liblzma, liblz4 and libzstd (host-side extraction of a bzImage's compressed kernel).

SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-deps bench deps guests artifacts lint docs fuzz sanitize sanitize-ci clean

## Installs the system packages HVKit builds against, where they are missing.
DEB_PACKAGES := libaio-dev linux-libc-dev zlib1g-dev liblzma-dev liblz4-dev libzstd-dev

deps:
	@if ! dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then \
		echo "installing $(DEB_PACKAGES)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(DEB_PACKAGES); \
	fi

## Runs the demo VMM on its built-in default guest: minivmm boots the Embedded Swift guest
## through the Linux 64-bit boot protocol, with HVKit's hypercall services.
demo: deps
	$(SWIFT) build --product minivmm
	./.build/debug/minivmm

## Runs the whole test suite (KVM tests are skipped, with the reason, where /dev/kvm is absent):
## first everything but the Linux boots, in parallel; then the tests that boot Linux (the test
## guest where `make artifacts` built it, Debian's kernel), one at a time, since each keeps a
## core busy for tens of seconds when kernel code is emulated.
LINUX_BOOTS := LinuxGuestTests|LinuxSnapshotTests|DebianKernelTests|theComposeSnippetBootsLinux
## What the tests use besides the build: passt (virtio-net's stream backend, end to end),
## iproute2 (addresses on the taps the network tests make) and socat (a host program nobody
## here wrote, speaking vsock's CONNECT protocol).
TEST_PACKAGES := passt iproute2 socat

test-deps: deps
	@if ! dpkg -s $(TEST_PACKAGES) >/dev/null 2>&1; then \
		echo "installing $(TEST_PACKAGES)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(TEST_PACKAGES); \
	fi

test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip '$(LINUX_BOOTS)'
	$(SWIFT) test --skip-build --filter '$(LINUX_BOOTS)' --no-parallel

## Checks that public declarations are documented (Scripts/lint-docs.sh); CI runs it.
lint:
	sh Scripts/lint-docs.sh

## Builds the DocC documentation of the library modules into .build/docs, failing on any
## warning (a broken symbol link, a topic that names nothing): Scripts/build-docs.sh.
docs: deps
	sh Scripts/build-docs.sh

## Runs the whole suite (but the Linux boots) under AddressSanitizer (with LeakSanitizer),
## then under ThreadSanitizer, each in its own build directory; a report fails the run. Locks
## are HVCore's Locked, which tells ThreadSanitizer about each critical section (it cannot see
## Synchronization.Mutex's futex). CI runs sanitize-ci: ASan on the device and queue suites,
## and TSan on the concurrency-heavy ones (vCPU runner, scheduler, SMP, event loop, AIO,
## composed machines).
LSAN := LSAN_OPTIONS=suppressions=$(CURDIR)/Scripts/lsan.supp
TSAN := TSAN_OPTIONS=halt_on_error=1
TSAN_SUITES := HVKVMTests|EventLoopTests|LockedVirtqueueTests|BlockBackendTests|MachineTests|VsockDeviceTests|VsockHostileGuestTests
sanitize: deps
	$(SWIFT) build --build-tests --build-path .build-asan --sanitize=address
	$(LSAN) $(SWIFT) test --skip-build --build-path .build-asan --sanitize=address --skip '$(LINUX_BOOTS)'
	$(SWIFT) build --build-tests --build-path .build-tsan --sanitize=thread
	$(TSAN) $(SWIFT) test --skip-build --build-path .build-tsan --sanitize=thread --skip '$(LINUX_BOOTS)'

sanitize-ci: deps
	$(SWIFT) build --build-tests --build-path .build-asan --sanitize=address
	$(LSAN) $(SWIFT) test --skip-build --build-path .build-asan --sanitize=address --filter HVDevicesTests
	$(SWIFT) build --build-tests --build-path .build-tsan --sanitize=thread
	$(TSAN) $(SWIFT) test --skip-build --build-path .build-tsan --sanitize=thread --filter '$(TSAN_SUITES)' --skip '$(LINUX_BOOTS)'

## Builds the libFuzzer targets (Fuzz/) with AddressSanitizer and runs each for FUZZ_SECONDS
## (default 60) after its regression inputs: Scripts/fuzz.sh. CI runs it for 10 s a target.
FUZZ_SECONDS ?= 60
fuzz: deps
	sh Scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## How a start-up-sensitive VMM is built: release, the Swift runtime linked in, and generic type
## metadata reached through the compiler's direct accessors instead of mangled names. A
## mangled name is resolved at run time, and resolving a Dictionary or Set type checks its key's
## Hashable conformance by scanning every conformance record of the executable (about 2,400 here)
## the first time each key type is seen: 0.6 ms of minivmm's start-up went there. Any program
## that builds on HVKit can pass the same flags to `swift build`.
RELEASE_BUILD := -c release --static-swift-stdlib -Xswiftc -Xfrontend -Xswiftc -disable-concrete-type-metadata-mangled-name-accessors

## Builds hv-bench (and minivmm, which three figures run) as release binaries with the Swift
## runtime linked in, and runs it. banner_vs_qemu's baseline is QEMU, installed here.
## Pass figures with NAMES="pio_exit vm_create"; JSON=1 for one JSON object per line.
bench: deps
	@dpkg -s qemu-system-x86 >/dev/null 2>&1 || { echo "installing qemu-system-x86 (banner_vs_qemu's baseline)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends qemu-system-x86; }
	$(SWIFT) build $(RELEASE_BUILD) --product hv-bench
	$(SWIFT) build $(RELEASE_BUILD) --product minivmm
	$(SWIFT) build $(RELEASE_BUILD) --product hv-empty
	./.build/release/hv-bench $(if $(JSON),--json) $(NAMES)

## Rebuilds the guests (Guests/asm, and the SDK guests in Guests/tender and Guests/bench) into
## the committed Swift byte arrays.
guests:
	sh Guests/assemble.sh
	sh Guests/build-guests.sh

## Builds the Linux test guest (Guests/linux: a small kernel from Debian's linux-source-6.1 with
## HVKit's configuration and patch, and an initramfs with busybox and hvkit-test) and fetches
## Debian's cloud kernel, all cached in /var/tmp/hvkit-artifacts (HVKIT_ARTIFACTS), never
## committed, rebuilt only when their sources change. The first kernel build takes 4 to 6
## minutes on 2 cores. The Linux guest tests run where these exist and are skipped otherwise.
artifacts:
	sh Guests/linux/build-kernel.sh
	sh Guests/linux/build-initramfs.sh
	sh Guests/linux/fetch-artifacts.sh

clean:
	rm -rf .build
