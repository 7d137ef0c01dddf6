#!/bin/sh
# Builds HVKit's Linux test kernel from Debian's linux-source-6.1: `make tinyconfig`, the
# fragment kernel/hvkit.config merged on top, kernel/emulated-host.patch applied. Writes
#   $out/linux/vmlinux   the ELF kernel, with the PVH note (stripped of symbols)
#   $out/linux/bzImage   the same kernel as a bzImage
#   $out/linux/config    the full configuration it was built with
# Cached: rebuilt only when the fragment, the patch or this script change (their hash is in
# $out/linux/key). Takes 3 to 5 minutes on 2 cores; 6 to 11 s after a patch change.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${HVKIT_ARTIFACTS:-/var/tmp/hvkit-artifacts}
dest="$out/linux"
key=$(cat "$here/kernel/hvkit.config" "$here/kernel/emulated-host.patch" "$0" | sha256sum | cut -c1-16)
if [ -f "$dest/key" ] && [ "$(cat "$dest/key")" = "$key" ] && [ -f "$dest/vmlinux" ] && [ -f "$dest/bzImage" ]; then
  echo "kernel ready in $dest ($key)"; exit 0
fi

need="linux-source-6.1 flex bison bc libelf-dev libssl-dev make gcc"
if ! dpkg -s $need >/dev/null 2>&1; then
  echo "installing $need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

work="$out/kernel-build"
source="$work/linux-source-6.1"
mkdir -p "$work"
# A fresh tree whenever the patch changed (the patch is applied once per tree).
patchkey=$(sha256sum < "$here/kernel/emulated-host.patch" | cut -c1-16)
if [ ! -f "$source/.hvkit-patch" ] || [ "$(cat "$source/.hvkit-patch")" != "$patchkey" ]; then
  rm -rf "$source"
  tar -C "$work" -xf /usr/src/linux-source-6.1.tar.xz
  patch -d "$source" -p1 --quiet < "$here/kernel/emulated-host.patch"
  echo "$patchkey" > "$source/.hvkit-patch"
fi

cd "$source"
make -s ARCH=x86_64 tinyconfig >/dev/null 2>&1
./scripts/kconfig/merge_config.sh -m -O . .config "$here/kernel/hvkit.config" >/dev/null 2>&1
make -s ARCH=x86_64 olddefconfig 2>/dev/null
# Every option the fragment turns on must have survived (a misspelt option, or one whose
# dependency is missing, is dropped without a word), and none it turns off may be on.
grep -E '^CONFIG_' "$here/kernel/hvkit.config" | while read -r line; do
  grep -qxF "$line" .config || { echo "kernel configuration: '$line' did not take (a dependency is missing)" >&2; exit 1; }
done
sed -n 's/^# \(CONFIG_[A-Z0-9_]*\) is not set$/\1/p' "$here/kernel/hvkit.config" | while read -r name; do
  if grep -q "^$name=" .config; then echo "kernel configuration: $name is still on" >&2; exit 1; fi
done
make -s ARCH=x86_64 -j"$(nproc)" vmlinux bzImage

mkdir -p "$dest"
strip --strip-all -o "$dest/vmlinux" vmlinux
cp arch/x86/boot/bzImage "$dest/bzImage"
cp .config "$dest/config"
echo "$key" > "$dest/key"
echo "kernel ready in $dest ($key): vmlinux $(wc -c < "$dest/vmlinux") bytes, bzImage $(wc -c < "$dest/bzImage") bytes"
