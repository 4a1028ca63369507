#!/usr/bin/env python3
"""A Debian base image for the tests that need a real distribution (apt-get update on the
default network): a `debootstrap --variant=minbase` of this machine's own Debian suite from the
mirror its apt sources name, written as a docker-archive that `kbuildctl load -i` takes.

Made once and cached in /var/cache/kbuild-tests (debootstrap downloads about 40 MB and takes a
few minutes); later runs load the cached archive. Needs root, debootstrap and the mirror.

    python3 tests/integration/debian_image.py     # prints the archive's path; the image is kbuild-debian

or, from Python, `debian_image.cached_archive()`.
"""

import argparse
import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

CACHE_DIR = "/var/cache/kbuild-tests"
DEFAULT_TAG = "kbuild-debian"
CREATED = "2020-01-01T00:00:00Z"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def apt_mirror():
    """(mirror URL, suite) of the first Debian archive in this machine's apt sources: deb822
    .sources files and one-line .list files alike."""
    files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"] + \
        sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                uris, suites = fields.get("URIs", "").split(), fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and uris and suites and \
                        re.search(r"/debian/?$", uris[0]) and "-" not in suites[0]:
                    return uris[0], suites[0]
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian/?)\s+([a-z]+)\s", line)
                if m:
                    return m.group(1), m.group(2)
    raise RuntimeError("no Debian archive in /etc/apt/sources.list*")


def _layer(rootfs, out):
    """The rootfs as an uncompressed tar at `out`, without what a sandbox mounts itself
    (/dev, /proc, /sys contents) and apt's downloaded lists."""
    skip = {"dev", "proc", "sys"}

    def keep(info):
        parts = info.name.split("/")
        if len(parts) > 2 and parts[1] in skip:
            return None
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(rootfs, arcname=".", filter=keep)


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(rootfs, out, tag):
    """Writes the docker-archive of `rootfs` to `out` (through a temp file beside it)."""
    layer = out + ".layer"
    _layer(rootfs, layer)
    layer_digest = _digest(layer)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": CREATED,
        "config": {"Env": ["PATH=" + PATH], "Cmd": ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": CREATED, "created_by": "tests/integration/debian_image.py: debootstrap"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    repo_tag = tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"
    manifest = [{"Config": config_digest + ".json", "RepoTags": [repo_tag],
                 "Layers": [layer_digest + "/layer.tar"]}]
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(layer, arcname=layer_digest + "/layer.tar")
        _add(tar, config_digest + ".json", config)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    os.unlink(layer)
    os.replace(tmp, out)


def cached_archive(cache_dir=CACHE_DIR):
    """The path of the cached docker-archive (image DEFAULT_TAG), made with debootstrap when
    missing."""
    mirror, suite = apt_mirror()
    out = os.path.join(cache_dir, f"debian-{suite}-minbase.tar")
    if os.path.exists(out):
        return out
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    os.makedirs(cache_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="debootstrap-", dir=cache_dir)
    try:
        rootfs = os.path.join(work, "rootfs")
        result = subprocess.run(["debootstrap", "--variant=minbase", suite, rootfs, mirror],
                                capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap {suite} from {mirror} failed:\n{result.stdout[-3000:]}"
                               f"{result.stderr[-3000:]}")
        # Like Debian's own images: no downloaded package lists, so that apt-get update has work.
        for name in glob.glob(os.path.join(rootfs, "var/lib/apt/lists/*")):
            if os.path.isfile(name):
                os.unlink(name)
        write_archive(rootfs, out, DEFAULT_TAG)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main():
    argparse.ArgumentParser(description="Make (once) the Debian test base image.").parse_args()
    print(cached_archive())
    return 0


if __name__ == "__main__":
    sys.exit(main())
