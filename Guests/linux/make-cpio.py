"""Writes a directory tree as a cpio archive in the "newc" format the kernel unpacks, to stdout.
Entries are sorted and owned by root with a fixed time, so the archive is reproducible."""
import os
import stat
import sys


def header(name, mode, size, inode, links=1):
    fields = [inode, mode, 0, 0, links, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % field for field in fields)


def pad(length):
    return b"\0" * ((4 - length % 4) % 4)


def main(root):
    out = sys.stdout.buffer
    inode = 1
    for directory, folders, files in sorted(os.walk(root)):
        folders.sort()
        for name in sorted(folders) + sorted(files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root).encode()
            info = os.lstat(path)
            data = b""
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    data = handle.read()
            elif stat.S_ISLNK(info.st_mode):
                data = os.readlink(path).encode()
            entry = header(relative, info.st_mode, len(data), inode) + relative + b"\0"
            out.write(entry + pad(len(entry)) + data + pad(len(data)))
            inode += 1
    trailer = header(b"TRAILER!!!", 0, 0, 0) + b"TRAILER!!!\0"
    out.write(trailer + pad(len(trailer)))


main(sys.argv[1])
