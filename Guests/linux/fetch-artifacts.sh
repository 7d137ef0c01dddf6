#!/bin/sh
# Fetches Debian's cloud kernel and busybox-static with apt-get download, extracts them, and
# builds an initramfs whose init loads the virtio modules, lists the virtio devices, reads a
# marker from the first virtio disk, prints a result line and powers off. Cached in
# $HVKIT_ARTIFACTS (default /var/tmp/hvkit-artifacts); never committed.
#   vmlinuz          the bzImage (the tests and hv-bench look for it here)
#   initramfs.cpio.gz
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${HVKIT_ARTIFACTS:-/var/tmp/hvkit-artifacts}
mkdir -p "$out"
cd "$out"
# The downloads are kept; the initramfs is rebuilt whenever Guests/linux/init changes.
if [ -f initramfs.cpio.gz ] && [ -f vmlinuz ] && cmp -s "$here/init" initramfs.d/init; then
  echo "artifacts ready in $out"; exit 0
fi

if [ ! -f vmlinuz ] || [ ! -d tree/lib/modules ] || [ ! -f tree/bin/busybox ]; then
  apt-get update -qq
  # The metapackage names the versioned kernel package.
  kernel=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
  [ -n "$kernel" ] || { echo "no linux-image-cloud-amd64 in the package lists" >&2; exit 1; }
  # apt-get download runs as _apt where it can; a root-owned directory makes it warn and go on.
  apt-get download "$kernel" busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
  rm -rf tree && mkdir tree
  for deb in "$kernel"_*.deb busybox-static_*.deb; do dpkg-deb -x "$deb" tree; done
  cp tree/boot/vmlinuz-* vmlinuz
fi
kernel=$(ls tree/boot | sed -n 's/^vmlinuz-//p' | head -n 1)
release=$(ls tree/lib/modules | head -n 1)

# The initramfs tree.
root=initramfs.d
rm -rf "$root" && mkdir -p "$root/bin" "$root/lib/modules" "$root/proc" "$root/sys" "$root/dev"
cp tree/bin/busybox "$root/bin/busybox"
for module in virtio virtio_ring virtio_mmio virtio_blk virtio_console virtio-rng; do
  found=$(find "tree/lib/modules/$release" -name "$module.ko*" | head -n 1)
  [ -n "$found" ] && cp "$found" "$root/lib/modules/"
done
cp "$here/init" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"
python3 "$here/make-cpio.py" "$root" | gzip -9 -n > initramfs.cpio.gz
echo "artifacts ready in $out: vmlinuz ($kernel), initramfs.cpio.gz"
