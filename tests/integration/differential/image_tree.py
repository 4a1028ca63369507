"""Images as comparable values: the flattened filesystem of a docker-archive (or of a rootfs tar)
and the parts of its config that a Dockerfile decides, plus readable differences between two.

Standard library only, so the harness runs on any machine with Python 3.
"""

import ast
import bz2
import dataclasses
import grp
import gzip
import hashlib
import json
import lzma
import os
import posixpath
import pwd
import re
import stat
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
    """One path of a filesystem (flattened, or one layer's): everything but its name that an
    image fixes, and the tar entry's uname/gname (compared per layer only: unpackers own files
    by the numeric ids, but the names are part of the layer's bytes). Not kept: the atime/ctime
    PAX records (no unpacker restores them). A layer's whiteouts are entries of kind "whiteout"
    (and "opaque" for `.wh..wh..opq`) under their own `.wh.` names."""
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
    uname: str = ""
    gname: str = ""

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
        uname=member.uname,
        gname=member.gname,
    )


# What a layer's whiteouts are compared by: their names. Their mode, owner and mtime mean
# nothing to an unpacker (BuildKit writes 0600 and a time, others 0 and the epoch).
_WHITEOUT = Entry("whiteout", 0, 0, 0, 0, "", "", (), 0, ())
_OPAQUE = Entry("opaque", 0, 0, 0, 0, "", "", (), 0, ())


@dataclasses.dataclass
class Layer:
    """One layer tar as written: path -> Entry (hardlinks as files equal to their target,
    whiteouts as "whiteout"/"opaque" entries) and its hardlinks, as the sets of names that
    share one inode in it."""
    tree: dict
    links: list  # sorted tuples of paths, one per group of hardlinked names


def apply_layer(tree, tar, whiteouts=True):
    """Applies one layer tar (an open tarfile) on top of `tree` (path -> Entry), as an
    overlay-style unpacker does, and returns the Layer as written. With whiteouts=False (a
    flattened rootfs tar) '.wh.' names are ordinary files, so a stray whiteout in a rootfs
    export shows up as a difference."""
    added = set()  # paths this layer wrote: an opaque marker hides only lower layers
    layer = Layer(tree={}, links=[])
    link_root = {}  # hardlink name -> the first name of its inode in this layer
    for member in tar:
        path = normalize_path(member.name)
        if path == "/":
            continue  # the root's own metadata is not part of what a layer decides
        parent, base = posixpath.split(path)
        if whiteouts and base == OPAQUE_MARKER:
            layer.tree[path] = _OPAQUE
            for p in _descendants(tree, parent):
                if p not in added:
                    del tree[p]
            continue
        if whiteouts and base.startswith(WHITEOUT_PREFIX):
            layer.tree[path] = _WHITEOUT
            hidden = posixpath.join(parent, base[len(WHITEOUT_PREFIX):])
            for p in _descendants(tree, hidden) + [hidden]:
                tree.pop(p, None)
            continue
        if member.islnk():
            # A hardlink is compared as what it is to a reader: a file equal to its target.
            # That it is a link (within its layer) is compared per layer, in Layer.links.
            target = normalize_path(member.linkname)
            source = layer.tree.get(target) or tree.get(target)
            if source is None or source.kind != "file":
                raise ArchiveError(f"{member.name}: hardlink to missing {member.linkname}")
            entry = source
            link_root[path] = link_root.get(target, target)
        else:
            entry = _entry(tar, member)
        old = tree.get(path)
        if old is not None and old.kind == "dir" and entry.kind != "dir":
            for p in _descendants(tree, path):
                del tree[p]
        tree[path] = entry
        layer.tree[path] = entry
        added.add(path)
    groups = {}
    for name, root in link_root.items():
        groups.setdefault(root, {root}).add(name)
    layer.links = sorted(tuple(sorted(group)) for group in groups.values())
    return layer


def read_rootfs_tar(path):
    """path -> Entry for a flattened rootfs tar (BuildKit's and kbuild's type=tar output)."""
    tree = {}
    with tarfile.open(path, "r:*") as tar:
        apply_layer(tree, tar, whiteouts=False)
    return tree


@dataclasses.dataclass
class Image:
    """A docker-archive read back: its config JSON, its layers as written and its flattened
    tree."""
    config: dict
    layer_count: int
    tree: dict
    problems: list  # inconsistencies inside the archive itself
    layers: list = dataclasses.field(default_factory=list)  # Layer, bottom first
    diff_ids: list = dataclasses.field(default_factory=list)  # each layer's, as computed


def _archive_members(archive, path):
    """A function opening a member of `archive` by name, following the links OCI-layout
    archives use for duplicate blobs."""
    members = {normalize_path(m.name): m for m in archive.getmembers()}

    def open_member(name):
        member = members.get(normalize_path(name))
        if member is None:
            raise ArchiveError(f"{path}: no {name} in the archive")
        while member.islnk() or member.issym():
            target = member.linkname
            if member.issym():
                target = posixpath.join(posixpath.dirname(member.name), target)
            member = members.get(normalize_path(target))
            if member is None:
                raise ArchiveError(f"{path}: {name} links to {target}, not in the archive")
        return archive.extractfile(member)
    return open_member


def _read_image(config, layers, open_layer, problems):
    """The Image of `config` whose layer blobs are `layers` (names `open_layer` opens, bottom
    first); adds to `problems` what does not match within it."""
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        problems.append(f"config lists {len(diff_ids)} diff_ids but the manifest "
                        f"{len(layers)} layers")
    tree, read_layers, computed = {}, [], []
    for index, layer in enumerate(layers):
        digest = hashlib.sha256()
        stream, compression = _uncompressed(open_layer(layer))
        if stream is None:
            problems.append(f"layer {index} ({layer}) is {compression}-compressed, which "
                            "the harness cannot read")
            read_layers.append(Layer(tree={}, links=[]))
            computed.append("")
            continue
        data = _HashingReader(stream, digest)
        with tarfile.open(fileobj=data, mode="r|") as tar:
            read_layers.append(apply_layer(tree, tar))
        data.drain()
        # The diff_id is the digest of the uncompressed tar, whatever the blob's compression.
        computed.append("sha256:" + digest.hexdigest())
        if index < len(diff_ids) and diff_ids[index] != computed[-1]:
            problems.append(f"layer {index} ({layer}, {compression or 'uncompressed'}) "
                            f"has uncompressed digest {computed[-1]} but config "
                            f"rootfs.diff_ids says {diff_ids[index]}")
    history = config.get("history") or []
    with_layers = [h for h in history if not h.get("empty_layer")]
    if history and len(with_layers) != len(layers):
        problems.append(f"config history has {len(with_layers)} entries with a layer but the "
                        f"image {len(layers)} layers")
    return Image(config=config, layer_count=len(layers), tree=tree, problems=problems,
                 layers=read_layers, diff_ids=computed)


def read_docker_archive(path):
    """Reads a `docker save`-style archive (manifest.json, config JSON, layer tars) with one image.
    Layer paths come from manifest.json, so both the classic <id>/layer.tar layout and the OCI
    blobs/sha256/<digest> layout of newer docker versions are read."""
    with tarfile.open(path, "r:*") as archive:
        open_member = _archive_members(archive, path)
        try:
            manifest = json.load(open_member("manifest.json"))
        except (KeyError, ValueError) as error:
            raise ArchiveError(f"{path}: unreadable manifest.json: {error}") from error
        if len(manifest) != 1:
            raise ArchiveError(f"{path}: manifest.json lists {len(manifest)} images, expected 1")
        config = json.load(open_member(manifest[0]["Config"]))
        return _read_image(config, manifest[0].get("Layers") or [], open_member, [])


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# BuildKit's attestation manifests (provenance, SBOM) sit in an index beside the images they
# describe, marked by this annotation; they are no platform's image.
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


@dataclasses.dataclass
class OciImage:
    """One image of an OCI layout: its descriptor in its index (with "platform"), its
    manifest and the Image read from its blobs."""
    descriptor: dict
    manifest: dict
    image: Image


@dataclasses.dataclass
class OciLayout:
    """An OCI image layout archive (`--output type=oci`) read back: the archive's index.json,
    the indexes under it (root first), its images in index order, and what does not match."""
    index: dict
    nested: list
    images: list
    problems: list


def read_oci_archive(path):
    """Reads an OCI layout archive: index.json, every index and image manifest it reaches (an
    image index, as BuildKit writes for several platforms, or one manifest), each blob checked
    against its digest and size."""
    with tarfile.open(path, "r:*") as archive:
        open_member = _archive_members(archive, path)
        problems, nested, images = [], [], []

        def read_blob(descriptor):
            stream = open_member(_blob_name(path, descriptor))
            digest, size = hashlib.sha256(), 0
            parts = []
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                parts.append(chunk)
            if "sha256:" + digest.hexdigest() != descriptor["digest"]:
                problems.append(f"blob {descriptor['digest']} has digest sha256:{digest.hexdigest()}")
            if size != descriptor.get("size"):
                problems.append(f"blob {descriptor['digest']} has {size} bytes, its descriptor "
                                f"says {descriptor.get('size')}")
            return b"".join(parts)

        def walk(descriptors, depth):
            if depth > 4:
                raise ArchiveError(f"{path}: indexes nested deeper than 4")
            for descriptor in descriptors:
                kind = descriptor.get("mediaType")
                if kind in (OCI_INDEX, DOCKER_LIST):
                    index = json.loads(read_blob(descriptor))
                    nested.append(index)
                    walk(index.get("manifests") or [], depth + 1)
                elif kind in (OCI_MANIFEST, DOCKER_MANIFEST):
                    manifest = json.loads(read_blob(descriptor))
                    config = json.loads(read_blob(manifest["config"]))
                    layers = manifest.get("layers") or []
                    for layer in layers:
                        read_blob(layer)  # digest and size of the blob as stored
                    image = _read_image(config, [_blob_name(path, layer) for layer in layers],
                                        open_member, problems)
                    images.append(OciImage(descriptor, manifest, image))
                else:
                    problems.append(f"descriptor {descriptor.get('digest')} of media type {kind!r}")

        try:
            top = json.load(open_member("index.json"))
        except ValueError as error:
            raise ArchiveError(f"{path}: unreadable index.json: {error}") from error
        walk(top.get("manifests") or [], 0)
    return OciLayout(index=top, nested=nested, images=images, problems=problems)


def _blob_name(path, descriptor):
    algorithm, _, encoded = str(descriptor.get("digest", "")).partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", encoded):
        raise ArchiveError(f"{path}: descriptor with digest {descriptor.get('digest')!r}")
    return f"blobs/sha256/{encoded}"


def read_oci_file_head(path, oci_image, file_path, size):
    """The first `size` bytes of the regular file `file_path` in an image of the OCI archive
    `path` (as read_oci_archive found it), from the topmost layer that writes it; None when
    the image's rootfs has no such file."""
    entry = oci_image.image.tree.get(file_path)
    if entry is None or entry.kind != "file":
        return None
    with tarfile.open(path, "r:*") as archive:
        open_member = _archive_members(archive, path)
        for layer in reversed(oci_image.manifest.get("layers") or []):
            stream, _ = _uncompressed(open_member(_blob_name(path, layer)))
            if stream is None:
                continue
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if normalize_path(member.name) == file_path and member.isfile():
                        return tar.extractfile(member).read(size)
    return None


def is_attestation(oci_image):
    return ATTESTATION_ANNOTATION in (oci_image.descriptor.get("annotations") or {})


def read_directory(root):
    """path -> Entry for a directory tree as a `--output type=local` export writes it (read as
    root: owners are the image's); hardlinks are files like any other."""
    tree = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(directory, name)
            st = os.lstat(full)
            kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                    else "symlink" if stat.S_ISLNK(st.st_mode) else "char" if stat.S_ISCHR(st.st_mode)
                    else "block" if stat.S_ISBLK(st.st_mode) else "fifo" if stat.S_ISFIFO(st.st_mode)
                    else None)
            if kind is None:
                raise ArchiveError(f"{full}: unsupported file type {stat.S_IFMT(st.st_mode):o}")
            digest = ""
            if kind == "file":
                hashed = hashlib.sha256()
                with open(full, "rb") as f:
                    while chunk := f.read(1 << 20):
                        hashed.update(chunk)
                digest = hashed.hexdigest()
            xattrs = tuple(sorted((key, os.getxattr(full, key, follow_symlinks=False).decode(
                errors="surrogateescape")) for key in os.listxattr(full, follow_symlinks=False)))
            tree[normalize_path(os.path.relpath(full, root))] = Entry(
                kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                size=st.st_size if kind == "file" else 0, digest=digest,
                target=os.readlink(full) if kind == "symlink" else "",
                device=((os.major(st.st_rdev), os.minor(st.st_rdev))
                        if kind in ("char", "block") else ()),
                mtime=st.st_mtime, xattrs=xattrs)
    return tree


def _uncompressed(stream):
    """(the layer blob's uncompressed stream, the name of its compression or ""); the stream is
    None for a compression the standard library cannot read."""
    magic = stream.read(6)
    stream.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=stream), "gzip"
    if magic[:3] == b"BZh":
        return bz2.BZ2File(stream), "bzip2"
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(stream), "xz"
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        return None, "zstd"
    return stream, ""


class _HashingReader:
    """A read-only stream that hashes what passes through it (a layer's diff_id is the digest
    of its uncompressed tar)."""

    def __init__(self, stream, digest):
        self.stream, self.digest = stream, digest

    def read(self, size=-1):
        chunk = self.stream.read(size)
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


def diff_trees(reference, other, ref_name, other_name, mtimes, names=False):
    """Readable differences between two trees (flattened, or two layers'), in path order.
    `reference` is the side whose behaviour is the specification (BuildKit). With names=True,
    tar's uname/gname are compared too (for layers: a rootfs export is another writer's)."""
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
        if names and (a.uname, a.gname) != (b.uname, b.gname):
            fields.append(f"uname/gname {a.uname!r}/{a.gname!r} != {b.uname!r}/{b.gname!r}")
        if mtimes.differs(a, b):
            fields.append(f"mtime {mtimes.stamp(a.mtime)} != {mtimes.stamp(b.mtime)}")
        if fields:
            lines.append(f"{shown(path)} ({a.kind}): " + "; ".join(fields)
                         + f"  [{ref_name} != {other_name}]")
    return lines


def _host_name(lookup, number):
    try:
        return lookup(number)[0]
    except (KeyError, OverflowError):
        return ""


def without_host_names(layer):
    """The layer with each uname/gname that is the name this machine's passwd/group gives its
    id replaced by "". Docker 20.10's BuildKit writes layers with Go's tar.FileInfoHeader, which
    looks the names up on the host; current BuildKit writes none (containerd's
    archive.ChangeWriter uses tarheader.FileInfoHeaderNoLookups since containerd 1.7, "to avoid
    propagating user names and group names from the host"), and kbuild follows current
    BuildKit. Only the reference's layers are normalised so: a name kbuild writes is compared."""
    tree = {path: dataclasses.replace(
                entry,
                uname="" if entry.uname == _host_name(pwd.getpwuid, entry.uid) else entry.uname,
                gname="" if entry.gname == _host_name(grp.getgrgid, entry.gid) else entry.gname)
            for path, entry in layer.tree.items()}
    return Layer(tree=tree, links=layer.links)


def diff_layers(reference, other, ref_name, other_name, mtimes, other_host_names=False):
    """Readable differences between two images' layers, layer by layer (when they have as many):
    each layer's entries with uname/gname and whiteouts, and which names are hardlinked together
    in it. Layers with the same diff_id are the same bytes and are not walked again.
    other_host_names: the other side is Docker 20.10 too (fake_kbuild), so its host-looked-up
    names are cleared as the reference's are."""
    if reference.layer_count != other.layer_count:
        return []  # reported as a count; layer i of one is not layer i of the other
    lines = []
    for index, (a, b) in enumerate(zip(reference.layers, other.layers)):
        if reference.diff_ids[index] and reference.diff_ids[index] == other.diff_ids[index]:
            continue
        if other_host_names:
            b = without_host_names(b)
        found = diff_trees(without_host_names(a).tree, b.tree, ref_name, other_name, mtimes,
                           names=True)
        for group in sorted(set(a.links) - set(b.links)):
            found.append(f"hardlinked in {ref_name}, not in {other_name}: {', '.join(group)}")
        for group in sorted(set(b.links) - set(a.links)):
            found.append(f"hardlinked in {other_name}, not in {ref_name}: {', '.join(group)}")
        lines += [f"layer {index}: {line}" for line in found]
    return lines


# COPY and ADD flags that current BuildKit records in `created_by` and Docker 20.10's
# (BuildKit v0.8, frontend/dockerfile/dockerfile2llb/convert.go dispatchCopy) does not: since
# BuildKit v0.10 convert_copy.go writes "COPY --parents --chown=U --chmod=M src dest".
_COPY_FLAGS = re.compile(r"^((?:COPY|ADD)(?: --parents| --chown=\S+| --chmod=\S+)*)")


# EXPOSE: BuildKit v0.8 prints the nat.PortSet map ("EXPOSE map[443/tcp:{} 80/tcp:{}]", keys
# sorted), current BuildKit (convert_expose.go, since dockerfile 1.19) the list of "port/proto"
# in the order of the instruction's arguments as instructions/parse.go sorts them before
# expansion ("EXPOSE 80 443" -> "EXPOSE [443/tcp 80/tcp]"). Only the set can be compared.
_EXPOSE_V08 = re.compile(r"^EXPOSE map\[(.*)\]$")
_EXPOSE = re.compile(r"^EXPOSE \[(.*)\]$")
# HEALTHCHECK: both print the config's Healthcheck struct, BuildKit v0.8 with %v of a pointer to
# its own struct ("&{["CMD" "a"] "5s" "3s" "0s" '\x04'}"), current BuildKit with %+v of
# docker's ("{Test:[CMD a] Interval:5s Timeout:3s StartPeriod:0s StartInterval:0s Retries:4}").
# v0.8's form is rewritten to the current one (it has no StartInterval: 0s).
_HEALTHCHECK_V08 = re.compile(r'^HEALTHCHECK &\{\[(.*)\] "(.*?)" "(.*?)" "(.*?)" (\'.*\')\}$')


def _current_buildkit_created_by(created_by):
    match = _HEALTHCHECK_V08.match(created_by)
    if match:
        test = json.loads("[" + match[1].replace('" "', '", "') + "]")
        retries = ord(ast.literal_eval(match[5]))
        return (f"HEALTHCHECK {{Test:[{' '.join(test)}] Interval:{match[2]} Timeout:{match[3]} "
                f"StartPeriod:{match[4]} StartInterval:0s Retries:{retries}}}")
    match = _EXPOSE_V08.match(created_by) or _EXPOSE.match(created_by)
    if match:
        ports = [p[:-len(":{}")] if p.endswith(":{}") else p for p in match[1].split()]
        return f"EXPOSE (as a set) {sorted(set(ports))}"
    return created_by


def history_entries(config):
    """The compared part of a config's history: (created_by, empty_layer, comment) per entry,
    normalised where Docker 20.10's BuildKit and current BuildKit (which kbuild follows) write
    different histories for the same Dockerfile."""
    entries = []
    for item in config.get("history") or []:
        created_by, empty = item.get("created_by") or "", bool(item.get("empty_layer"))
        # ARG: current BuildKit commits an "ARG K=V" entry without a layer (dispatchArg calls
        # commitToHistory); BuildKit v0.8 records none.
        if empty and created_by.startswith("ARG "):
            continue
        match = _COPY_FLAGS.match(created_by)
        if match:
            created_by = created_by.split(" ", 1)[0] + created_by[match.end():]
        created_by = _current_buildkit_created_by(created_by)
        entries.append((created_by, empty, item.get("comment") or ""))
    return entries


def diff_history(left, right, left_name, right_name):
    """Readable differences between two configs' histories, entry by entry."""
    a, b = history_entries(left), history_entries(right)
    lines = []
    if len(a) != len(b):
        lines.append(f"{left_name} has {len(a)} entries, {right_name} {len(b)}")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == y:
            continue
        for label, value in ((left_name, x), (right_name, y)):
            shown_value = "(none)" if value is None else (
                f"{json.dumps(value[0])}" + (" empty_layer" if value[1] else "")
                + (f" comment {json.dumps(value[2])}" if value[2] else ""))
            lines.append(f"[{index}] {label}: {shown_value}")
    return lines


def describe_tree(tree, mtimes):
    """The tree as lines, for --dump."""
    return [f"{shown(path)}  {entry.describe()}  mtime {mtimes.stamp(entry.mtime)}"
            + (f"  sha256:{entry.digest[:12]}" if entry.digest else "")
            for path, entry in sorted(tree.items())]
