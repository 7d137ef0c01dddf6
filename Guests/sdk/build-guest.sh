#!/bin/sh
# Builds a unikernel guest for HVKit from C and/or Embedded Swift sources, with the HVKit guest
# SDK beside this script (include/, runtime/, swift/) and the Swift toolchain's clang, swiftc
# and ld.lld. Works from any directory, in or outside the HVKit repository:
#
#   build-guest.sh hello.swift -o hello.elf          one Embedded Swift module (all .swift files)
#   build-guest.sh main.c io.c -o guest.elf          C
#   build-guest.sh app.swift helpers.c -o app.elf    both
#
# The result is an ELF64 executable linked at 1 MiB whose entry calls `hv_main` (exported by
# your C or, with @_cdecl("hv_main"), your Swift) with RDI as its argument; run it with
# HVMachine (`BootSource.unikernel(path:hypercalls:)`) or hv-tender. Guests use general
# registers only: hosts whose KVM emulates guest code refuse SSE.
#
# HVKIT_GUEST_MODULE names the Swift module (default guest_OUTPUT). HVKIT_GUEST_WORK sets the
# work directory (default $TMPDIR/hvkit-guest-work); it is a fixed
# path because Embedded Swift records paths in the binary, and reproducible builds want the same
# bytes for the same sources. Two builds at once need two work directories.
set -eu
sdk=$(cd "$(dirname "$0")" && pwd)
output=""
sources=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) [ $# -ge 2 ] || { echo "build-guest.sh: -o needs a file" >&2; exit 2; }; output=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *.c|*.swift|*.S) [ -f "$1" ] || { echo "build-guest.sh: no such source: $1" >&2; exit 2; }
                     sources="$sources $(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; shift ;;
    *) echo "build-guest.sh: $1: sources are .c, .swift or .S files" >&2; exit 2 ;;
  esac
done
[ -n "$output" ] && [ -n "$sources" ] || { echo "usage: build-guest.sh SOURCE... -o OUTPUT.elf" >&2; exit 2; }
for tool in clang ld.lld; do
  command -v $tool >/dev/null || { echo "build-guest.sh: needs $tool (the Swift toolchain for Linux ships it)" >&2; exit 1; }
done

work="${HVKIT_GUEST_WORK:-${TMPDIR:-/tmp}/hvkit-guest-work}"
rm -rf "$work"
mkdir -p "$work/modules" "$work/objects"

# No SSE, MMX or AVX (see above); freestanding, not position-independent, no red zone.
cflags="--target=x86_64-unknown-none-elf -ffreestanding -fno-pic -fno-pie -fno-stack-protector -mno-red-zone -mgeneral-regs-only -Os -std=c11 -Wall -Werror -I $sdk/include"
swiftflags="-enable-experimental-feature Embedded -enable-experimental-feature Extern -target x86_64-unknown-none-elf -wmo -Osize -parse-as-library -Xcc -mno-red-zone -Xcc -mno-sse -Xcc -mno-sse2 -Xcc -mno-mmx -Xcc -mno-avx -I $work/modules"

# The runtime every guest links: entry point, memory functions, allocator, putchar.
clang $cflags -c "$sdk/runtime/start.S" -o "$work/start.o"
clang $cflags -c "$sdk/runtime/runtime.c" -o "$work/runtime.o"

objects=""
swift_sources=""
for source in $sources; do
  name=$(basename "$source")
  case "$source" in
    *.swift) swift_sources="$swift_sources $source" ;;
    *) clang $cflags -c "$source" -o "$work/objects/$name.o"; objects="$objects $work/objects/$name.o" ;;
  esac
done
if [ -n "$swift_sources" ]; then
  command -v swiftc >/dev/null || { echo "build-guest.sh: needs swiftc for Embedded Swift" >&2; exit 1; }
  # The SDK's Swift module, and its C header as a Clang module. The module map is made here,
  # not kept beside the header, so host code that includes the header finds no module.
  printf 'module CHVKitGuest {\n    header "%s"\n    export *\n}\n' "$sdk/include/hvkit_guest.h" > "$work/modules/module.modulemap"
  swiftc $swiftflags -module-name HVKitGuest -emit-module -emit-module-path "$work/modules/HVKitGuest.swiftmodule" \
      -c "$sdk/swift/HVKitGuest.swift" -o "$work/HVKitGuest.o"
  module=${HVKIT_GUEST_MODULE:-guest_$(basename "$output" .elf | tr -c 'A-Za-z0-9_\n' '_')}
  swiftc $swiftflags -module-name "$module" -c $swift_sources -o "$work/$module.o"
  objects="$objects $work/$module.o $work/HVKitGuest.o"
fi
ld.lld -T "$sdk/runtime/guest.ld" -nostdlib -static -s -z max-page-size=16 --no-dynamic-linker -z noexecstack \
    "$work/start.o" $objects "$work/runtime.o" -o "$output"
rm -rf "$work"
echo "built $output ($(wc -c < "$output" | tr -d ' ') bytes)"
