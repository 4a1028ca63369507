"""Images as comparable values: the flattened filesystem of a docker-archive (or of a rootfs tar)
and the parts of its config that a Dockerfile decides, plus readable differences between two.

Standard library only, so the harness runs on any machine with Python 3.
"""

import dataclasses
import hashlib
import json
import posixpath
import tarfile

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# The config fields a Dockerfile sets (under "config" in the image config JSON).
CONFIG_FIELDS = (
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
    "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped",
)
# Top-level image config fields a build decides (MAINTAINER sets "author").
TOP_FIELDS = ("architecture", "os", "variant", "author")

_KINDS = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One path of a flattened filesystem: everything but its name that an image fixes. Not
    kept: tar's uname/gname (unpackers, docker's and containerd's, own files by the numeric
    ids) and the atime/ctime PAX records (no unpacker restores them)."""
    kind: str            # file, dir, symlink, char, block, fifo
    mode: int            # permission bits with setuid/setgid/sticky (mode & 0o7777)
    uid: int
    gid: int
    size: int
    digest: str          # sha256 of the content of a file, "" otherwise
    target: str          # symlink target, "" otherwise
    device: tuple        # (major, minor) of a device node, () otherwise
    mtime: float
    xattrs: tuple        # sorted (name, value) pairs from PAX SCHILY.xattr.* records

    def describe(self):
        what = {"file": f"file {self.size} bytes", "symlink": f"symlink -> {self.target}"}
        return f"{what.get(self.kind, self.kind)} {self.mode:04o} {self.uid}:{self.gid}"


class ArchiveError(Exception):
    """An archive that cannot be read as what it claims to be."""


def shown(path):
    """A path as printed in reports: control characters escaped, everything else as is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def normalize_path(name):
    """'./a//b/' and 'a/b' and '/a/b' all name '/a/b'; the root is '/'."""
    path = posixpath.normpath("/" + name)
    return "/" if path == "//" else path


def _descendants(tree, path):
    prefix = path.rstrip("/") + "/"
    return [p for p in tree if p.startswith(prefix)]


def _hash_member(tar, member):
    digest = hashlib.sha256()
    stream = tar.extractfile(member)
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
    return digest.hexdigest()


def _entry(tar, member):
    kind = _KINDS.get(member.type)
    if kind is None:
        raise ArchiveError(f"{member.name}: unsupported tar entry type {member.type!r}")
    xattrs = tuple(sorted((k[len("SCHILY.xattr."):], v) for k, v in member.pax_headers.items()
                          if k.startswith("SCHILY.xattr.")))
    return Entry(
        kind=kind,
        mode=member.mode & 0o7777,
        uid=member.uid,
        gid=member.gid,
        size=member.size if kind == "file" else 0,
        digest=_hash_member(tar, member) if kind == "file" else "",
        target=member.linkname if kind == "symlink" else "",
        device=(member.devmajor, member.devminor) if kind in ("char", "block") else (),
        mtime=member.mtime,
        xattrs=xattrs,
    )


def apply_layer(tree, tar, whiteouts=True):
    """Applies one layer tar (an open tarfile) on top of `tree` (path -> Entry), as an
    overlay-style unpacker does. With whiteouts=False (a flattened rootfs tar) '.wh.' names
    are ordinary files, so a stray whiteout in a rootfs export shows up as a difference."""
    added = set()  # paths this layer wrote: an opaque marker hides only lower layers
    for member in tar:
        path = normalize_path(member.name)
        if path == "/":
            continue  # the root's own metadata is not part of what a layer decides
        parent, base = posixpath.split(path)
        if whiteouts and base == OPAQUE_MARKER:
            for p in _descendants(tree, parent):
                if p not in added:
                    del tree[p]
            continue
        if whiteouts and base.startswith(WHITEOUT_PREFIX):
            hidden = posixpath.join(parent, base[len(WHITEOUT_PREFIX):])
            for p in _descendants(tree, hidden) + [hidden]:
                tree.pop(p, None)
            continue
        if member.islnk():
            # A hardlink is compared as what it is to a reader: a file equal to its target.
            source = tree.get(normalize_path(member.linkname))
            if source is None or source.kind != "file":
                raise ArchiveError(f"{member.name}: hardlink to missing {member.linkname}")
            entry = source
        else:
            entry = _entry(tar, member)
        old = tree.get(path)
        if old is not None and old.kind == "dir" and entry.kind != "dir":
            for p in _descendants(tree, path):
                del tree[p]
        tree[path] = entry
        added.add(path)


def read_rootfs_tar(path):
    """path -> Entry for a flattened rootfs tar (BuildKit's and kbuild's type=tar output)."""
    tree = {}
    with tarfile.open(path, "r:*") as tar:
        apply_layer(tree, tar, whiteouts=False)
    return tree


@dataclasses.dataclass
class Image:
    """A docker-archive read back: its config JSON, its layer count and its flattened tree."""
    config: dict
    layer_count: int
    tree: dict
    problems: list  # inconsistencies inside the archive itself


def read_docker_archive(path):
    """Reads a `docker save`-style archive (manifest.json, config JSON, layer tars) with one image.
    Layer paths come from manifest.json, so both the classic <id>/layer.tar layout and the OCI
    blobs/sha256/<digest> layout of newer docker versions are read."""
    problems = []
    with tarfile.open(path, "r:*") as archive:
        members = {normalize_path(m.name): m for m in archive.getmembers()}

        def open_member(name):
            member = members.get(normalize_path(name))
            if member is None:
                raise ArchiveError(f"{path}: manifest.json names {name}, not in the archive")
            while member.islnk() or member.issym():  # OCI-layout archives link duplicate blobs
                target = member.linkname
                if member.issym():
                    target = posixpath.join(posixpath.dirname(member.name), target)
                member = members[normalize_path(target)]
            return archive.extractfile(member)

        try:
            manifest = json.load(open_member("manifest.json"))
        except (KeyError, ValueError) as error:
            raise ArchiveError(f"{path}: unreadable manifest.json: {error}") from error
        if len(manifest) != 1:
            raise ArchiveError(f"{path}: manifest.json lists {len(manifest)} images, expected 1")
        config = json.load(open_member(manifest[0]["Config"]))
        layers = manifest[0].get("Layers") or []
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            problems.append(f"config lists {len(diff_ids)} diff_ids but manifest.json "
                            f"{len(layers)} layers")
        tree = {}
        for index, layer in enumerate(layers):
            digest = hashlib.sha256()
            stream = open_member(layer)
            data = _HashingReader(stream, digest)
            with tarfile.open(fileobj=data, mode="r|*") as tar:
                apply_layer(tree, tar)
            data.drain()
            if index < len(diff_ids) and data.compressed is False and \
                    diff_ids[index] != "sha256:" + digest.hexdigest():
                problems.append(f"layer {index} ({layer}) has digest sha256:{digest.hexdigest()} "
                                f"but config rootfs.diff_ids says {diff_ids[index]}")
    return Image(config=config, layer_count=len(layers), tree=tree, problems=problems)


class _HashingReader:
    """A read-only stream that hashes what passes through it (a layer's diff_id is the digest
    of its uncompressed tar)."""

    def __init__(self, stream, digest):
        self.stream, self.digest = stream, digest
        self.compressed = None

    def read(self, size=-1):
        chunk = self.stream.read(size)
        if self.compressed is None and chunk:
            # gzip, bzip2, xz, zstd magic: the digest of compressed bytes is not a diff_id.
            self.compressed = chunk[:2] in (b"\x1f\x8b", b"BZ") or \
                chunk[:6] == b"\xfd7zXZ\x00" or chunk[:4] == b"\x28\xb5\x2f\xfd"
        self.digest.update(chunk)
        return chunk

    def drain(self):
        # tarfile stops at the end-of-archive blocks; the digest covers the whole blob.
        while self.read(1 << 20):
            pass


def _omitempty(value):
    # Image configs are written by Go structs with `omitempty` (docker's, BuildKit's,
    # containerd's): absent, null, "", false, [] and {} decode to the same value everywhere.
    return None if value in (None, "", False, [], {}) else value


def config_values(config):
    """The compared fields of an image config, as (name, normalized value) pairs."""
    inner = config.get("config") or {}
    values = [(f"config.{name}", _omitempty(inner.get(name))) for name in CONFIG_FIELDS]
    values += [(name, _omitempty(config.get(name))) for name in TOP_FIELDS]
    return values


def diff_configs(left, right, left_name, right_name):
    lines = []
    for (name, a), (_, b) in zip(config_values(left), config_values(right)):
        if a != b:
            lines.append(f"{name}: {left_name} {json.dumps(a)} != {right_name} {json.dumps(b)}")
    return lines


class MtimePolicy:
    """Which modification times are compared, and how.

    The contexts' own mtimes are fixed (see run.py), so every mtime at or after `build_floor`
    (the harness's start) was stamped by a builder while it built. Such stamps cannot be equal
    between two builds, so a build-time stamp on one side must be matched by a build-time
    stamp on the other; any older mtime (from the context, a tar read by ADD, a base image)
    must be equal to the second.

    Exception, directories: when BuildKit's mtime of a directory is a build-time stamp, the
    other side's is not compared at all. Docker 20.10's BuildKit stamps every directory it
    writes into at build time: implicitly created parents, COPY destinations, WORKDIR
    directories, and copied non-empty directories (it sets a copied directory's times before
    writing its children, so the source's mtime survives only on empty directories), and newer
    BuildKit versions keep the source's mtime in some of these cases. Neither is a behaviour a
    user can rely on.
    """

    def __init__(self, build_floor):
        self.build_floor = build_floor

    def stamp(self, mtime):
        return "build time" if mtime >= self.build_floor else int(mtime)

    def differs(self, reference, other):
        if reference.kind == "dir" and self.stamp(reference.mtime) == "build time":
            return False
        return self.stamp(reference.mtime) != self.stamp(other.mtime)


def diff_trees(reference, other, ref_name, other_name, mtimes):
    """Readable differences between two flattened trees, in path order. `reference` is the side
    whose behaviour is the specification (BuildKit)."""
    lines = []
    for path in sorted(set(reference) | set(other)):
        a, b = reference.get(path), other.get(path)
        if b is None:
            lines.append(f"{shown(path)}: only in {ref_name} ({a.describe()})")
            continue
        if a is None:
            lines.append(f"{shown(path)}: only in {other_name} ({b.describe()})")
            continue
        if a.kind != b.kind:
            lines.append(f"{shown(path)}: {ref_name} has {a.describe()}, "
                         f"{other_name} has {b.describe()}")
            continue
        fields = []
        if a.mode != b.mode:
            fields.append(f"mode {a.mode:04o} != {b.mode:04o}")
        if (a.uid, a.gid) != (b.uid, b.gid):
            fields.append(f"owner {a.uid}:{a.gid} != {b.uid}:{b.gid}")
        if a.size != b.size:
            fields.append(f"size {a.size} != {b.size}")
        elif a.digest != b.digest:
            fields.append(f"content sha256:{a.digest[:12]} != sha256:{b.digest[:12]}")
        if a.target != b.target:
            fields.append(f"target {a.target!r} != {b.target!r}")
        if a.device != b.device:
            fields.append(f"device {a.device} != {b.device}")
        if a.xattrs != b.xattrs:
            fields.append(f"xattrs {dict(a.xattrs)} != {dict(b.xattrs)}")
        if mtimes.differs(a, b):
            fields.append(f"mtime {mtimes.stamp(a.mtime)} != {mtimes.stamp(b.mtime)}")
        if fields:
            lines.append(f"{shown(path)} ({a.kind}): " + "; ".join(fields)
                         + f"  [{ref_name} != {other_name}]")
    return lines


def describe_tree(tree, mtimes):
    """The tree as lines, for --dump."""
    return [f"{shown(path)}  {entry.describe()}  mtime {mtimes.stamp(entry.mtime)}"
            + (f"  sha256:{entry.digest[:12]}" if entry.digest else "")
            for path, entry in sorted(tree.items())]
