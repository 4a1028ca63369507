# Archives made here so their members' owners, modes and mtimes are fixed by this script.
from casegen import TarEntry, make_tar, pseudo_random

entries = [
    TarEntry("top/", kind="dir", mode=0o750, uid=1000, gid=1000, mtime=1300000000),
    TarEntry("top/file.txt", "in the archive\n", uid=1000, gid=50, mtime=1300000001),
    TarEntry("top/exec", "#!/bin/sh\n", mode=0o4755, mtime=1300000002),
    TarEntry("top/bin.dat", pseudo_random(70000, "archive"), mode=0o600, uid=123, gid=456),
    TarEntry("top/link", kind="symlink", target="file.txt", mtime=1300000003),
    TarEntry("top/hard", kind="hardlink", target="top/file.txt"),
    TarEntry("top/named-owner", "owner by name only\n", uid=0, gid=0, uname="app", gname="staff"),
    TarEntry("implicit/parent/child.txt", "parent dirs not in the archive\n"),
    TarEntry("./dot-prefixed.txt", "member named ./x\n"),
]
make_tar("plain.tar", entries)
make_tar("gzipped.tar.gz", entries, "gz")
make_tar("bzipped.tar.bz2", entries, "bz2")
make_tar("xzipped.tar.xz", entries, "xz")
make_tar("no-extension", entries, "gz")  # detected by content, not by name
with open("fake.tar.gz", "wb") as fake:
    fake.write(b"not an archive despite its name\n")
