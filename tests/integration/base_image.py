#!/usr/bin/env python3
"""An offline base image for tests that RUN something: Debian's static busybox plus a minimal
/etc, written as a docker-archive (what `docker save` writes) that both `docker load -i` and
`kbuildctl load -i` take. No registry, no network.

    python3 tests/integration/base_image.py OUT.tar [--tag NAME] [--busybox PATH] [--arch ARCH]

--arch arm64 (any Debian architecture that is also an OCI one) makes the same image for that
architecture from Debian's busybox-static of that architecture, downloaded once with apt
(`dpkg --add-architecture`, `apt-get download`) and cached under FOREIGN_CACHE. Nothing of it
runs on the host: the applet list is the host busybox's, from the same Debian release.

or, from Python, `base_image.write_base_image(out, tag)`.

The rootfs: /bin/busybox and one symlink to it per applet (`busybox --list-full`), /etc/passwd
(root, builder 1000:1000, nobody), /etc/group, /tmp 1777, /root 0700, /home/builder owned by
1000:1000, and empty /dev, /mnt, /opt, /proc, /sys, /var. The config has PATH (BuildKit's default value) in Env
and Cmd ["sh"]. The archive is deterministic: fixed mtimes, sorted entries, no user names, a
fixed creation date, so the same busybox gives the same image ID on every machine and both
builders start from the same bytes.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

DEFAULT_TAG = "kbuild-busybox"
BUSYBOX = "/bin/busybox"
FOREIGN_CACHE = "/var/cache/kbuild-tests/busybox-static"
NATIVE_ARCH = "amd64"
# 2020-01-01T00:00:00Z: before any build, so a builder's build-time stamps are told apart.
MTIME = 1577836800
CREATED = "2020-01-01T00:00:00Z"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "builder:x:1000:1000:builder:/home/builder:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nbuilder:x:1000:\nnogroup:x:65534:\n"

# (path, mode, uid, gid) of every directory, parents first.
DIRECTORIES = [
    ("bin", 0o755, 0, 0), ("dev", 0o755, 0, 0), ("etc", 0o755, 0, 0), ("home", 0o755, 0, 0),
    ("home/builder", 0o755, 1000, 1000), ("mnt", 0o755, 0, 0), ("opt", 0o755, 0, 0),
    ("proc", 0o555, 0, 0), ("root", 0o700, 0, 0),
    ("sbin", 0o755, 0, 0), ("sys", 0o555, 0, 0), ("tmp", 0o1777, 0, 0), ("usr", 0o755, 0, 0),
    ("usr/bin", 0o755, 0, 0), ("usr/sbin", 0o755, 0, 0), ("var", 0o755, 0, 0),
]


def ensure_busybox(path=BUSYBOX):
    """The static busybox, installing Debian's busybox-static when it is missing."""
    if not os.access(path, os.X_OK):
        if path != BUSYBOX or os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(f"{path} is missing (apt-get install busybox-static)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "busybox-static"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    return path


def foreign_busybox(arch):
    """Debian's static busybox for `arch` (a dpkg architecture: arm64, armhf, ...), fetched
    once into FOREIGN_CACHE/ARCH/busybox."""
    path = os.path.join(FOREIGN_CACHE, arch, "busybox")
    if os.access(path, os.R_OK):
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{path} is missing (run as root with apt-get to fetch busybox-static:{arch})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    known = subprocess.run(["dpkg", "--print-foreign-architectures"], check=True, capture_output=True,
                           text=True).stdout.split()
    if arch not in known:
        subprocess.run(["dpkg", "--add-architecture", arch], check=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    work = os.path.join(FOREIGN_CACHE, arch + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    # apt's sandbox user cannot write to root's directories; download as root, on purpose.
    subprocess.run(["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", f"busybox-static:{arch}"],
                   check=True, cwd=work, env=env, stdout=subprocess.DEVNULL)
    debs = [n for n in os.listdir(work) if n.endswith(".deb")]
    subprocess.run(["dpkg-deb", "-x", os.path.join(work, debs[0]), os.path.join(work, "root")], check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy2(os.path.join(work, "root/bin/busybox"), path + ".tmp")
    os.replace(path + ".tmp", path)
    shutil.rmtree(work)
    return path


def applets(busybox):
    """Paths (relative, e.g. "usr/bin/env") of busybox's applets, without busybox itself."""
    listed = subprocess.run([busybox, "--list-full"], check=True, capture_output=True,
                            text=True).stdout.split()
    return sorted({p.strip("/") for p in listed} - {"bin/busybox"})


def _info(name, kind, mode, uid=0, gid=0, size=0, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.size, info.linkname, info.mtime = size, target, MTIME
    info.uname = info.gname = ""
    return info


def layer_tar(busybox, applet_source=None):
    """The rootfs as an uncompressed tar (bytes); the applet list is `applet_source`'s (a
    busybox this host runs), `busybox`'s by default."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []  # (name, TarInfo, data)
        dirs = {d for d, _, _, _ in DIRECTORIES}
        for name, mode, uid, gid in DIRECTORIES:
            entries.append((name, _info(name + "/", tarfile.DIRTYPE, mode, uid, gid), None))
        with open(busybox, "rb") as f:
            binary = f.read()
        entries.append(("bin/busybox", _info("bin/busybox", tarfile.REGTYPE, 0o755,
                                             size=len(binary)), binary))
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            data = text.encode()
            entries.append((name, _info(name, tarfile.REGTYPE, 0o644, size=len(data)), data))
        for name in applets(applet_source or busybox):
            parent = os.path.dirname(name)
            if parent and parent not in dirs:
                raise RuntimeError(f"busybox applet {name} is in an unexpected directory")
            entries.append((name, _info(name, tarfile.SYMTYPE, 0o777, target="/bin/busybox"),
                            None))
        # Parents before children: a directory sorts before "dir/..." because "/" < any
        # character that follows it in these names.
        for _, info, data in sorted(entries, key=lambda e: e[0].split("/")):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def image_config(diff_id, arch=NATIVE_ARCH):
    return {
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {"Env": ["PATH=" + PATH], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "tests/integration/base_image.py: busybox",
                     "comment": "kbuild test base"}],
    }


def _add(tar, name, data):
    info = _info(name, tarfile.REGTYPE, 0o644, size=len(data))
    tar.addfile(info, io.BytesIO(data))


def write_base_image(out, tag=DEFAULT_TAG, busybox=BUSYBOX, arch=NATIVE_ARCH):
    """Writes the docker-archive to `out`; returns the image ID ("sha256:...")."""
    if arch == NATIVE_ARCH:
        layer = layer_tar(ensure_busybox(busybox))
    else:
        layer = layer_tar(foreign_busybox(arch), applet_source=ensure_busybox())
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps(image_config("sha256:" + layer_digest, arch), sort_keys=True,
                        separators=(",", ":")).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    repo_tag = tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"
    manifest = [{"Config": config_digest + ".json", "RepoTags": [repo_tag],
                 "Layers": [layer_digest + "/layer.tar"]}]
    repo, _, version = repo_tag.rpartition(":")
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(layer_digest + "/", tarfile.DIRTYPE, 0o755))
        _add(tar, layer_digest + "/VERSION", b"1.0")
        _add(tar, layer_digest + "/layer.tar", layer)
        _add(tar, config_digest + ".json", config)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
        _add(tar, "repositories", json.dumps({repo: {version: layer_digest}}).encode())
    os.replace(tmp, out)
    return "sha256:" + config_digest


def main():
    parser = argparse.ArgumentParser(description="Write the busybox test base image as a "
                                     "docker-archive.")
    parser.add_argument("out", help="the archive to write")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image name (default: {DEFAULT_TAG})")
    parser.add_argument("--busybox", default=BUSYBOX, help=f"static busybox (default: {BUSYBOX})")
    parser.add_argument("--arch", default=NATIVE_ARCH,
                        help=f"the image's architecture; another than {NATIVE_ARCH} uses Debian's "
                        "busybox-static of it (default: %(default)s)")
    args = parser.parse_args()
    print(write_base_image(args.out, args.tag, args.busybox, args.arch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
