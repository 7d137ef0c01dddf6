#!/bin/sh
# Packs the initramfs of HVKit's Linux test guest: tests/init as /init, busybox-static, and
# hvkit-test built from tests/hvkit-test.c (static; musl-gcc where Debian's musl-tools is there,
# which makes it 55 KB instead of 780). Uncompressed, so the guest has no decompressor to
# emulate. Writes $out/linux/initramfs.cpio; rebuilt when the init, the test program or this
# script change.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${HVKIT_ARTIFACTS:-/var/tmp/hvkit-artifacts}
dest="$out/linux"
key=$(cat "$here/tests/init" "$here/tests/hvkit-test.c" "$0" | sha256sum | cut -c1-16)
if [ -f "$dest/initramfs.key" ] && [ "$(cat "$dest/initramfs.key")" = "$key" ] && [ -f "$dest/initramfs.cpio" ]; then
  echo "initramfs ready in $dest ($key)"; exit 0
fi

need="busybox-static musl-tools gcc"
if ! dpkg -s $need >/dev/null 2>&1; then
  echo "installing $need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
compiler=gcc
command -v musl-gcc >/dev/null && compiler=musl-gcc

root="$out/linux/initramfs.d"
rm -rf "$root" && mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
cp /bin/busybox "$root/bin/busybox"
$compiler -static -Os -Wall -Wextra -Werror -o "$root/bin/hvkit-test" "$here/tests/hvkit-test.c"
strip "$root/bin/hvkit-test"
cp "$here/tests/init" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox" "$root/bin/hvkit-test"
python3 "$here/make-cpio.py" "$root" > "$dest/initramfs.cpio"
echo "$key" > "$dest/initramfs.key"
echo "initramfs ready in $dest: $(wc -c < "$dest/initramfs.cpio") bytes"
