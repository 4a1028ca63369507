"""Helpers for cases' prepare.py scripts, which make in a copy of the context what git cannot
hold or should not: empty directories, special modes, hardlinks, archives, large files.
Paths are relative to the current directory (the context copy)."""

import hashlib
import io
import os
import tarfile


def write(path, content=b"", mode=None):
    """A regular file with `content` (str or bytes), parents created."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as out:
        out.write(content.encode() if isinstance(content, str) else content)
    if mode is not None:
        os.chmod(path, mode)


def mkdir(path, mode=None):
    os.makedirs(path, exist_ok=True)
    if mode is not None:
        os.chmod(path, mode)


def symlink(target, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    os.symlink(target, path)


def hardlink(existing, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    os.link(existing, path)


def pseudo_random(size, seed):
    """`size` bytes that look random but are the same on every run (a sha256 chain)."""
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64  # 2 KiB per hash: fast enough for megabytes, still incompressible-ish
    return bytes(out[:size])


class TarEntry:
    """One member of an archive made by make_tar."""

    def __init__(self, name, content=None, kind="file", mode=None, uid=0, gid=0,
                 mtime=1262304000, target="", uname="", gname=""):
        self.name, self.content, self.kind, self.target = name, content, kind, target
        self.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
        self.uid, self.gid, self.mtime, self.uname, self.gname = uid, gid, mtime, uname, gname


def make_tar(path, entries, compression=""):
    """An archive at `path`; compression is "", "gz", "bz2" or "xz"."""
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE}
    with tarfile.open(path, "w:" + compression, format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = kinds[entry.kind]
            info.mode, info.mtime = entry.mode, entry.mtime
            info.uid, info.gid = entry.uid, entry.gid
            info.uname, info.gname = entry.uname, entry.gname
            info.linkname = entry.target
            data = None
            if entry.kind == "file":
                data = entry.content.encode() if isinstance(entry.content, str) else entry.content
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
