"""Multi-platform cases (platform_cases/): one Dockerfile built for several platforms at once,
e.g. `--platform linux/amd64,linux/arm64`, the foreign one's RUN steps executed by qemu through
the kernel's binfmt_misc.

Docker 20.10's `docker build` takes one platform per build (its API parses `platform` as one
platform), and no `type=oci` output. BuildKit builds a multi-platform request as one solve per
platform (its Dockerfile frontend converts the Dockerfile once for each, with that platform as
TARGETPLATFORM and the worker's as BUILDPLATFORM) and then exports the results side by side;
so the reference for each platform is `docker build --platform P`: its image (`-t`, `docker
save`), and its `-o type=local` export, read only for what the steps wrote (expect.json) and for
/bin/busybox's machine, since Docker 20.10's client, which writes that export, loses some of the
image's metadata (see README.md).

kbuild builds the same case once for all its platforms, twice. `-o type=local` must lay out what
BuildKit's local exporter writes for several platforms, one directory per platform named by the
platform with "/" replaced by "_" (linux_arm64, linux_arm_v7; exporter/local/export.go), or the
output directory itself for one platform; each directory's tree is compared with BuildKit's
image of that platform, flattened. `-o type=oci` must be what BuildKit's OCI exporter writes:
index.json naming one image index (one manifest for a single platform), which lists one
manifest per platform in the order asked, each with its `platform`, and skopeo must read it;
each image is compared with BuildKit's image of that platform as run.py compares images (config,
history, layers, flattened tree). In every rootfs, /bin/busybox must be an ELF binary of the platform's machine, and each
side's config must name the platform.

FROM images come from a registry, as they must for Docker 20.10 (its image store holds one
platform per name): Debian's docker-registry on 127.0.0.1 holds an image index of the busybox
base (tests/integration/base_image.py) for linux/amd64 and linux/arm64, pushed by skopeo under a
repository of each case's own, so that what one case pulls into a builder's store cannot be
what another case's FROM finds. A case's Dockerfile names it `${BUSYBOX}` (`ARG BUSYBOX` before
its first FROM); both builders reach a loopback registry over plain HTTP without configuration.

A case directory holds its Dockerfile and context, `platforms` (one line, comma-separated, as
given to --platform), and optionally `args` (as run.py's cases) and `expect.json`
({"linux/arm64": {"/arch": "aarch64\\n"}}: files whose content each side's local export of
that platform must have, so that the reference is known to have run each step where it should).
"""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile

import image_tree
from daemons import BuildFailed, HarnessError

HERE = os.path.dirname(os.path.abspath(__file__))
PLATFORM_CASES_DIR = os.path.join(HERE, "platform_cases")
CASE_FILES = ("platforms", "expect.json")
BASE_ARCHES = ("amd64", "arm64")  # the platforms of the registry's busybox index
# ELF e_machine of each architecture's binaries (elf.h: EM_X86_64, EM_AARCH64).
E_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}
# binfmt_misc entry that runs each foreign architecture (Debian's qemu-user-static).
BINFMT_ENTRY = {"arm64": "qemu-aarch64"}
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
INDEX_TAG = "multi"


class Platform:
    """os/arch[/variant], as --platform takes it."""

    def __init__(self, text):
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise HarnessError(f"not a platform: {text!r}")
        self.os, self.arch = parts[0], parts[1]
        self.variant = parts[2] if len(parts) == 3 else ""

    def __str__(self):
        return "/".join(p for p in (self.os, self.arch, self.variant) if p)

    def __eq__(self, other):
        return isinstance(other, Platform) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))

    @property
    def dirname(self):
        """The directory BuildKit's local exporter writes this platform's rootfs to."""
        return str(self).replace("/", "_")

    def matches(self, config):
        """Whether an image config (or an index descriptor's `platform`) names this platform."""
        return ((config.get("os"), config.get("architecture"), config.get("variant") or "")
                == (self.os, self.arch, self.variant))


class PlatformCase:
    def __init__(self, name, source, read_args):
        self.name, self.source = name, source
        with open(os.path.join(source, "platforms")) as listed:
            self.platforms = [Platform(p) for p in listed.read().strip().split(",")]
        if len(set(self.platforms)) != len(self.platforms):
            raise HarnessError(f"{source}/platforms lists a platform twice")
        foreign = [str(p) for p in self.platforms if p.arch not in BASE_ARCHES]
        if foreign:
            raise HarnessError(f"{source}/platforms: the busybox index has no {', '.join(foreign)}")
        self.args = read_args(os.path.join(source, "args"))
        self.expect = {}
        if os.path.exists(os.path.join(source, "expect.json")):
            with open(os.path.join(source, "expect.json")) as expected:
                self.expect = {Platform(p): files for p, files in json.load(expected).items()}
        self.pre = []  # run.py's pre-images: none here

    @property
    def multi(self):
        return len(self.platforms) > 1


def load_cases(read_args):
    if not os.path.isdir(PLATFORM_CASES_DIR):
        return {}
    return {name: PlatformCase(name, os.path.join(PLATFORM_CASES_DIR, name), read_args)
            for name in sorted(os.listdir(PLATFORM_CASES_DIR))
            if os.path.isfile(os.path.join(PLATFORM_CASES_DIR, name, "Dockerfile"))}


def emulation_missing():
    """Why the multi-platform cases cannot run here (a sentence), or None. Both builders run
    a foreign binary inside a container, where qemu's path does not exist: the kernel must have
    opened the interpreter when it was registered (binfmt_misc flag F, as Debian's
    qemu-user-static registers it). The registry needs docker-registry and skopeo."""
    for arch, entry in BINFMT_ENTRY.items():
        path = os.path.join(BINFMT_DIR, entry)
        try:
            with open(path) as registered:
                lines = registered.read().splitlines()
        except OSError:
            return f"no binfmt_misc handler for {arch} ({path}; apt-get install qemu-user-static)"
        flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
        if "enabled" not in lines[:1]:
            return f"the binfmt_misc handler {path} is disabled"
        if "F" not in flags:
            return f"the binfmt_misc handler {path} lacks flag F (fix-binary), needed in containers"
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian's docker-registry and skopeo)"
    return None


def write_busybox_layout(layout, base_image):
    """An OCI layout at `layout` whose tag INDEX_TAG is an image index of base_image's busybox
    image for each of BASE_ARCHES (gzip layers, OCI media types)."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)

    def blob(data, media_type, **extra):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as out:
            out.write(data)
        return dict(mediaType=media_type, digest="sha256:" + digest, size=len(data), **extra)

    manifests = []
    for arch in BASE_ARCHES:
        if arch == "amd64":
            layer = base_image.layer_tar(base_image.ensure_busybox())
        else:
            layer = base_image.layer_tar(base_image.foreign_busybox(arch),
                                         applet_source=base_image.ensure_busybox())
        config = base_image.image_config("sha256:" + hashlib.sha256(layer).hexdigest(), arch)
        manifest = {"schemaVersion": 2, "mediaType": image_tree.OCI_MANIFEST,
                    "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
                    "layers": [blob(gzip.compress(layer, mtime=0),
                                    "application/vnd.oci.image.layer.v1.tar+gzip")]}
        manifests.append(blob(json.dumps(manifest).encode(), image_tree.OCI_MANIFEST,
                              platform={"architecture": arch, "os": "linux"}))
    index = {"schemaVersion": 2, "mediaType": image_tree.OCI_INDEX, "manifests": manifests}
    top = blob(json.dumps(index).encode(), image_tree.OCI_INDEX,
               annotations={"org.opencontainers.image.ref.name": INDEX_TAG})
    with open(os.path.join(layout, "index.json"), "w") as out:
        json.dump({"schemaVersion": 2, "manifests": [top]}, out)
    with open(os.path.join(layout, "oci-layout"), "w") as out:
        json.dump({"imageLayoutVersion": "1.0.0"}, out)


class BusyboxRegistry:
    """docker-registry on 127.0.0.1 (test_registry.py's), and the busybox index pushed to it
    once per case."""

    def __init__(self, workspace):
        self.workspace = workspace
        self.registry = None
        home = workspace.sub("platform-base")
        self.layout = os.path.join(home, "layout")
        # skopeo reads no credentials of the caller's: an empty auth file, an empty docker config.
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.env.update(REGISTRY_AUTH_FILE=os.path.join(home, "auth.json"),
                        DOCKER_CONFIG=workspace.sub("platform-base", "docker-config"))

    def start(self, base_image):
        from test_registry import DistributionRegistry  # tests/integration, as base_image
        try:
            with open(self.env["REGISTRY_AUTH_FILE"], "w") as auth:
                auth.write("{}")
            write_busybox_layout(self.layout, base_image)
            self.registry = DistributionRegistry(self.workspace.path, "platform-cases")
        except (RuntimeError, OSError, subprocess.CalledProcessError, AssertionError) as error:
            raise HarnessError(f"the busybox index for the multi-platform cases: {error}") from error

    def push(self, repository):
        """Pushes the index as HOST/repository:INDEX_TAG; returns that reference."""
        ref = f"{self.registry.host}/{repository}:{INDEX_TAG}"
        result = subprocess.run(["skopeo", "copy", "--all", "--dest-tls-verify=false",
                                 f"oci:{self.layout}:{INDEX_TAG}", "docker://" + ref],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                timeout=120)
        if result.returncode != 0:
            raise BuildFailed(f"skopeo copy --all to {ref}", result)
        return ref

    def stop(self):
        if self.registry is not None:
            self.registry.stop()


def elf_machine(head):
    """e_machine of an ELF file from its first bytes, or None when it is not ELF."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def check_platform_files(report, label, platform, config, directory, expect, oci_head=None):
    """What one side's result for `platform` must be whatever the other's: its config names
    the platform, /bin/busybox of its rootfs (the local export `directory`, or the first
    bytes `oci_head` read from an OCI image) is a binary of the platform's machine, and the
    expected files have their content."""
    lines = []
    if config is not None and not platform.matches(config):
        lines.append(f"config says {config.get('os')}/{config.get('architecture')}"
                     + (f"/{config['variant']}" if config.get("variant") else "") + f", not {platform}")
    if oci_head is None:
        try:
            with open(os.path.join(directory, "bin", "busybox"), "rb") as binary:
                head = binary.read(64)
        except OSError as error:
            head = b""
            lines.append(f"/bin/busybox: {error}")
    else:
        head = oci_head
    machine = elf_machine(head)
    if head and machine != E_MACHINE[platform.arch]:
        lines.append(f"/bin/busybox: ELF e_machine {machine if machine is None else hex(machine)}, "
                     f"expected {hex(E_MACHINE[platform.arch])} ({platform.arch})")
    for path, content in (expect or {}).items() if directory is not None else ():
        try:
            with open(os.path.join(directory, path.lstrip("/")), errors="replace") as f:
                found = f.read()
        except OSError as error:
            lines.append(f"{path}: {error}")
            continue
        if found != content:
            lines.append(f"{path}: {json.dumps(found)}, expected {json.dumps(content)}")
    report.add(label, lines)


class PlatformRun:
    """One multi-platform case: BuildKit one platform at a time, kbuild all at once; compared."""

    def __init__(self, session, case, report, prepare_context, dockerfile_flags, compare_image):
        self.session, self.case, self.report = session, case, report
        self.root = session.workspace.sub("cases", case.name)
        self.context = prepare_context(case.source, os.path.join(self.root, "context"))
        self.ref = session.platform_base.push(f"kbdiff/{case.name}/busybox")
        self.flags = dockerfile_flags(case.args) + ["--build-arg", f"BUSYBOX={self.ref}"]
        self.compare_image = compare_image

    def run(self):
        try:
            reference = {p: self.buildkit(p) for p in self.case.platforms}
        except (BuildFailed, subprocess.TimeoutExpired) as error:
            self.report.add("buildkit build", str(error).splitlines())
            return
        for platform, (image, local) in reference.items():
            self.report.add(f"{platform}: BuildKit's docker-archive is inconsistent", image.problems)
            check_platform_files(self.report, f"{platform}: BuildKit's own result (the reference)",
                                 platform, image.config, local, self.case.expect.get(platform))
            if self.session.options.dump:
                self.report.notes += self.session.describe(self.case, f"{platform} image", image)
        if self.session.kbuild is None:
            return
        try:
            local, oci = self.kbuild()
        except (BuildFailed, subprocess.TimeoutExpired) as error:
            self.report.add("kbuild build", str(error).splitlines())
            return
        self.compare_local(reference, local)
        self.compare_oci(reference, oci)

    def buildkit(self, platform):
        """BuildKit's image of `platform` (read) and its local export's directory."""
        dockerd = self.session.dockerd
        out = self.session.workspace.sub("out", self.case.name, "buildkit")
        tag = f"kbdiff/buildkit-{self.case.name}-{platform.dirname}"
        common = ["build", "--network", "host", "--platform", str(platform)]
        dockerd.client(common + ["-t", tag] + self.flags + ["."], cwd=self.context, timeout=300)
        archive = os.path.join(out, platform.dirname + ".tar")
        dockerd.client(["save", tag, "-o", archive])
        local = os.path.join(out, "local", platform.dirname if self.case.multi else "")
        dockerd.client(common + ["-o", f"type=local,dest={local}"] + self.flags + ["."],
                       cwd=self.context, timeout=300)
        return image_tree.read_docker_archive(archive), local

    def kbuild(self):
        out = self.session.workspace.sub("out", self.case.name, "kbuild")
        local, oci = os.path.join(out, "local"), os.path.join(out, "image.oci.tar")
        platforms = ",".join(str(p) for p in self.case.platforms)
        build = ["build", "--platform", platforms] + self.flags
        self.session.kbuildd.client(build + ["--output", f"type=local,dest={local}", "."],
                                    cwd=self.context, timeout=300)
        self.session.kbuildd.client(build + ["--output", f"type=oci,dest={oci}", "."],
                                    cwd=self.context, timeout=300)
        return local, oci

    def compare_local(self, reference, local):
        if self.case.multi:
            expected = sorted(p.dirname for p in self.case.platforms)
            found = sorted(os.listdir(local)) if os.path.isdir(local) else []
            if found != expected:
                self.report.add("kbuild's local export (one directory per platform, as BuildKit's)",
                                [f"has {found}, BuildKit's exporter writes {expected}"])
        for platform, (image, bk_local) in reference.items():
            kb_local = os.path.join(local, platform.dirname) if self.case.multi else local
            if not os.path.isdir(kb_local):
                continue  # reported above
            check_platform_files(self.report, f"{platform}: kbuild's local export", platform, None,
                                 kb_local, self.case.expect.get(platform))
            # Against BuildKit's image, not its local export: Docker 20.10's client writes
            # that export itself and loses some of the image's metadata (see README.md). Unless
            # "kbuild" is fake_kbuild, whose local export that same client writes.
            expected = (image_tree.read_directory(bk_local) if self.session.options.kbuild_is_docker
                        else image.tree)
            self.report.add(f"{platform}: filesystem (kbuild's local export)",
                            image_tree.diff_trees(expected, image_tree.read_directory(kb_local),
                                                  "buildkit", "kbuild", self.session.mtimes))

    def compare_oci(self, reference, path):
        try:
            layout = image_tree.read_oci_archive(path)
        except (image_tree.ArchiveError, tarfile.TarError, KeyError, ValueError, OSError,
                EOFError) as error:
            self.report.add("kbuild's OCI archive (--output type=oci)", [str(error)])
            return
        self.report.add("kbuild's OCI archive is inconsistent", layout.problems)
        self.report.add("kbuild's OCI index", self.index_problems(layout))
        self.report.add("skopeo's reading of kbuild's OCI archive", self.skopeo_problems(layout, path))
        images = {}
        for oci_image in layout.images:
            if image_tree.is_attestation(oci_image):
                continue
            listed = oci_image.descriptor.get("platform") or oci_image.image.config
            for platform in self.case.platforms:
                if platform.matches(listed):
                    images.setdefault(platform, oci_image)
        for platform, (image, _) in reference.items():
            oci_image = images.get(platform)
            if oci_image is None:
                continue  # reported by index_problems
            label = f"{platform}: OCI image"
            head = image_tree.read_oci_file_head(path, oci_image, "/bin/busybox", 64)
            check_platform_files(self.report, label, platform, oci_image.image.config, None, None,
                                 oci_head=head or b"")
            self.compare_image(self.report, label, image, oci_image.image)

    def skopeo_problems(self, layout, path):
        """What another reader makes of the archive: `skopeo inspect --raw` must read the
        document index.json names (as `docker load` must read a docker-archive)."""
        result = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{path}"],
                                env=self.session.platform_base.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=60)
        if result.returncode != 0:
            return result.stdout.decode(errors="replace").splitlines()[-5:]
        named = (layout.nested[0] if layout.nested
                 else layout.images[0].manifest if layout.images else None)
        if json.loads(result.stdout) != named:
            return ["skopeo inspect --raw gives another document than the one index.json names"]
        return []

    def index_problems(self, layout):
        """How the layout differs from what BuildKit's OCI exporter writes for this case."""
        lines = []
        top = layout.index.get("manifests") or []
        wanted = image_tree.OCI_INDEX if self.case.multi else image_tree.OCI_MANIFEST
        if [d.get("mediaType") for d in top] != [wanted]:
            lines.append(f"index.json lists {[d.get('mediaType') for d in top]}, BuildKit one {wanted}")
        images = [i for i in layout.images if not image_tree.is_attestation(i)]
        for oci_image in images:
            if oci_image.descriptor.get("mediaType") != image_tree.OCI_MANIFEST:
                lines.append(f"manifest {oci_image.descriptor.get('digest')} has media type "
                             f"{oci_image.descriptor.get('mediaType')}, not {image_tree.OCI_MANIFEST}")
        if self.case.multi:
            listed = [d.get("platform") or {} for d in (i.descriptor for i in images)]
            shown = ["/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
                     for p in listed]
            if shown != [str(p) for p in self.case.platforms]:
                lines.append(f"the image index lists platforms {shown}, asked for "
                             f"{[str(p) for p in self.case.platforms]} (one manifest each, in order)")
        elif len(images) != 1:
            lines.append(f"{len(images)} images for one platform")
        return lines


def run_case(session, case, report, prepare_context, dockerfile_flags, compare_image):
    PlatformRun(session, case, report, prepare_context, dockerfile_flags, compare_image).run()
