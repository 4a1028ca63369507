#!/usr/bin/env python3
"""Builds for other and several platforms: a real kbuildd on a private socket and store
(test_registry.Daemon), busybox bases for linux/amd64 and linux/arm64 (base_image.py --arch,
Debian's busybox-static of each). An image's config always says the platform of what it holds:
a stored base of another platform is refused, naming both; an arm64 step runs under the host's
binfmt_misc emulator; `--platform linux/amd64,linux/arm64` gives an OCI index whose images match
their platforms (config and ELF header), one directory per platform for `local`, and an image
that later builds take their platform's image from. Run as root:

    python3 tests/integration/test_platforms.py [--build-dir build] [-k PATTERN]

The tests that run arm64 programs skip, saying so, where the host has no binfmt_misc handler
for aarch64 (scripts/setup-test-deps.sh installs qemu-user-static). The last line is
`platforms: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import gzip
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
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_registry as harness  # noqa: E402  -- Daemon and its helpers
from mounts import unmount_all_under  # noqa: E402
from test_registry import wait_until, write  # noqa: E402

AMD64 = "kbuild-busybox"
ARM64 = "kbuild-busybox-arm64"
# ELF e_machine values.
EM_X86_64 = 0x3E
EM_AARCH64 = 0xB7
MACHINE_OF = {"amd64": EM_X86_64, "arm64": EM_AARCH64}

# A tool stage on the build's own platform, run once for every target, and a final stage on
# each target's own base.
TWO_PLATFORM_DOCKERFILE = """\
ARG TARGETARCH
FROM --platform=$BUILDPLATFORM kbuild-busybox AS tool
ARG BUILDPLATFORM
RUN echo "built on $BUILDPLATFORM" > /note && echo tool-ran-$(cat /proc/sys/kernel/random/uuid) > /ran
FROM kbuild-busybox-$TARGETARCH
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT
COPY --from=tool /note /ran /
COPY hello /hello
RUN uname -m > /arch && echo "$TARGETPLATFORM $TARGETOS/$TARGETARCH/$TARGETVARIANT" > /target
"""


def arm64_runs():
    """Whether this host runs aarch64 programs: an enabled binfmt_misc handler whose magic is
    aarch64's ELF header."""
    root = "/proc/sys/fs/binfmt_misc"
    if not os.path.isdir(root):
        return False
    for name in os.listdir(root):
        try:
            with open(os.path.join(root, name)) as f:
                text = f.read()
        except OSError:
            continue
        if text.startswith("enabled") and "magic 7f454c460201010000000000000000000200b700" in text:
            return True
    return False


def needs_arm64(test):
    def run_test(self):
        if not arm64_runs():
            self.skipTest("no binfmt_misc handler for aarch64 (apt-get install qemu-user-static)")
        return test(self)
    run_test.__name__ = test.__name__
    return run_test


def elf_machine(data):
    """e_machine of an ELF image (little-endian), or None."""
    if data[:4] != b"\x7fELF":
        return None
    return int.from_bytes(data[18:20], "little")


class OciArchive:
    """An OCI layout tar as a kbuild or BuildKit oci exporter writes it."""

    def __init__(self, path):
        with tarfile.open(path) as tar:
            self.files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    def json(self, digest):
        return json.loads(self.blob(digest))

    def blob(self, digest):
        return self.files["blobs/sha256/" + digest.split(":", 1)[1]]

    def top(self):
        return json.loads(self.files["index.json"])

    def rootfs_file(self, manifest, path):
        """`path`'s bytes from the image's layers (the topmost layer that has it)."""
        found = None
        for layer in manifest["layers"]:
            data = self.blob(layer["digest"])
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    if member.name.lstrip("./") == path and member.isfile():
                        found = tar.extractfile(member).read()
        return found


class PlatformsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-plat-")
        os.chmod(cls.workdir, 0o755)
        cls.amd64_archive = os.path.join(cls.workdir, "amd64.tar")
        base_image.write_base_image(cls.amd64_archive, AMD64)
        cls.arm64_archive = os.path.join(cls.workdir, "arm64.tar")
        base_image.write_base_image(cls.arm64_archive, ARM64, arch="arm64")

    @classmethod
    def tearDownClass(cls):
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------

    def path(self, *parts):
        # Short: a daemon's socket lives here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.id().rsplit(".", 1)[-1].removeprefix("test_")[:24], *parts)

    def daemon(self):
        daemon = harness.Daemon(self.path("d"))
        self.addCleanup(daemon.stop)
        daemon.client("load", "-i", self.amd64_archive)
        daemon.client("load", "-i", self.arm64_archive)
        daemon.client("tag", AMD64, AMD64 + "-amd64")
        return daemon

    def context(self, dockerfile, files=None):
        path = self.path("ctx")
        shutil.rmtree(path, ignore_errors=True)
        write(os.path.join(path, "Dockerfile"), dockerfile)
        for rel, data in (files or {}).items():
            write(os.path.join(path, rel), data)
        return path

    def build(self, daemon, ctx, *args, check=True):
        return daemon.client("build", "--progress", "plain", *args, ctx, check=check, timeout=600)

    def image_names(self, daemon):
        return daemon.client("images").stdout

    def assert_each_platform_builds_from(self, daemon, image):
        """Builds FROM `image` for arm64 and amd64 take that platform's image (its /arch, made
        when it was built) and run their step on it."""
        ctx = self.context(f"FROM {image}\nRUN uname -m > /now\n")
        for platform, arch in (("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")):
            out = self.path("out-" + platform.replace("/", "_"))
            self.build(daemon, ctx, "--platform", platform, "-o", f"type=local,dest={out}")
            for file in ("arch", "now"):
                with open(os.path.join(out, file)) as f:
                    self.assertEqual(f.read().strip(), arch, (platform, file))

    def store_temp_entries(self, daemon):
        """Temp files and view dirs a build may leave in the store."""
        found = []
        for top, dirs, files in os.walk(daemon.root):
            for name in dirs + files:
                if name.startswith((".tmp", "view-")) or "tmp-" in name:
                    found.append(os.path.join(top, name))
        return found

    # -- tests ----------------------------------------------------------------------------------

    def test_a_stored_base_of_another_platform_is_refused_naming_both(self):
        daemon = self.daemon()
        ctx = self.context("FROM kbuild-busybox\nRUN true\n")
        out = self.path("o.tar")
        result = self.build(daemon, ctx, "--platform", "linux/arm64", "-t", "mislabel", "-o",
                            f"type=oci,dest={out}", check=False)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        error = result.stderr
        self.assertIn("kbuild-busybox:latest in the store is for linux/amd64, not for linux/arm64", error)
        self.assertNotIn("mislabel", self.image_names(daemon))
        self.assertFalse(os.path.exists(out) and os.path.getsize(out) > 0, "an archive was written")
        self.assertEqual(self.store_temp_entries(daemon), [])
        # The legacy builder too, for a FROM --platform of its own.
        legacy = harness.run(daemon.argv("build", self.context("FROM --platform=linux/arm64 kbuild-busybox\nRUN true\n")),
                             check=False, env=dict(daemon.env(), DOCKER_BUILDKIT="0"))
        self.assertNotEqual(legacy.returncode, 0)
        self.assertIn("is for linux/amd64, not for linux/arm64", legacy.stdout + legacy.stderr)
        # The same for an arm64 base asked for as amd64 (the default platform here).
        result = self.build(daemon, self.context("FROM kbuild-busybox-arm64\n"), check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("is for linux/arm64, not for linux/amd64", result.stderr)

    def test_bad_platform_values_get_one_clear_error(self):
        daemon = self.daemon()
        ctx = self.context("FROM kbuild-busybox\n")
        for value in ("linux/nope", "linux/amd64,", "linux/amd64,,linux/arm64", "linux/amd64/v2/x", "*"):
            result = self.build(daemon, ctx, "--platform", value, "-t", "never", check=False)
            self.assertNotEqual(result.returncode, 0, value)
            self.assertIn("failed to parse platform", result.stderr, value)
            self.assertNotIn("never", self.image_names(daemon), value)

    @needs_arm64
    def test_an_arm64_build_runs_its_steps_emulated_and_says_arm64(self):
        daemon = self.daemon()
        ctx = self.context("FROM kbuild-busybox-arm64\nRUN uname -m > /arch && od -An -tx1 -j18 -N2 /bin/busybox > /machine\n")
        out = self.path("out")
        self.build(daemon, ctx, "--platform", "linux/arm64", "-o", f"type=local,dest={out}")
        with open(os.path.join(out, "arch")) as f:
            self.assertEqual(f.read().strip(), "aarch64")
        with open(os.path.join(out, "machine")) as f:
            self.assertEqual(f.read().split(), ["b7", "00"])
        archive = self.path("o.tar")
        self.build(daemon, ctx, "--platform", "linux/arm64", "-o", f"type=oci,dest={archive}")
        oci = OciArchive(archive)
        manifest = oci.json(oci.top()["manifests"][0]["digest"])
        config = oci.json(manifest["config"]["digest"])
        self.assertEqual((config["os"], config["architecture"]), ("linux", "arm64"))
        self.assertEqual(elf_machine(oci.rootfs_file(manifest, "bin/busybox")), EM_AARCH64)

    @needs_arm64
    def test_two_platforms_give_an_index_whose_images_match_their_platforms(self):
        daemon = self.daemon()
        ctx = self.context(TWO_PLATFORM_DOCKERFILE, {"hello": "hi\n"})
        archive = self.path("o.tar")
        result = self.build(daemon, ctx, "--platform", "linux/amd64,linux/arm64", "-t", "multi:1",
                            "-o", f"type=oci,dest={archive}")
        # The tool stage is the build platform's for both targets: one vertex, run once.
        self.assertEqual(result.stderr.count("[linux/amd64 tool 2/2] RUN"), 1, result.stderr)
        for platform in ("linux/amd64", "linux/arm64"):
            self.assertIn(f"[{platform} stage-1 4/4] RUN uname -m", result.stderr)
        raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}"], check=True,
                                        capture_output=True, text=True).stdout)
        self.assertEqual(raw["mediaType"], "application/vnd.oci.image.index.v1+json")
        platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in raw["manifests"]]
        self.assertEqual(platforms, [("linux", "amd64"), ("linux", "arm64")])
        oci = OciArchive(archive)
        tools = set()
        for entry in raw["manifests"]:
            manifest = oci.json(entry["digest"])
            config = oci.json(manifest["config"]["digest"])
            arch = entry["platform"]["architecture"]
            self.assertEqual((config["os"], config["architecture"]), ("linux", arch))
            self.assertEqual(elf_machine(oci.rootfs_file(manifest, "bin/busybox")), MACHINE_OF[arch])
            self.assertEqual(oci.rootfs_file(manifest, "arch").decode().strip(),
                             {"amd64": "x86_64", "arm64": "aarch64"}[arch])
            self.assertEqual(oci.rootfs_file(manifest, "note").decode().strip(), "built on linux/amd64")
            self.assertEqual(oci.rootfs_file(manifest, "target").decode().strip(), f"linux/{arch} linux/{arch}/")
            tools.add(oci.rootfs_file(manifest, "ran"))
        self.assertEqual(len(tools), 1, "the tool stage ran more than once")
        # skopeo copies the whole index, every blob checked.
        subprocess.run(["skopeo", "copy", "--all", "-q", f"oci-archive:{archive}", f"oci:{self.path('copy')}:x"],
                       check=True)
        # The stored index lists its platforms; its id is the index's digest.
        listing = daemon.client("images", "--tree").stdout
        self.assertRegex(listing, r"multi\s+1\s+[0-9a-f]{12}.*\n├─ linux/amd64\n└─ linux/arm64\n")
        stored = re.search(r"exporting manifest list sha256:([0-9a-f]{64})", result.stderr).group(1)
        self.assertIn(stored[:12], listing)

    @needs_arm64
    def test_local_output_gets_one_directory_per_platform(self):
        daemon = self.daemon()
        ctx = self.context(TWO_PLATFORM_DOCKERFILE, {"hello": "hi\n"})
        out = self.path("out", "made", "with-parents")  # made as buildx makes it, parents too
        self.build(daemon, ctx, "--platform", "linux/arm64,linux/amd64", "-o", f"type=local,dest={out}")
        self.assertEqual(sorted(os.listdir(out)), ["linux_amd64", "linux_arm64"])
        for arch, machine in MACHINE_OF.items():
            with open(os.path.join(out, f"linux_{arch}", "bin/busybox"), "rb") as f:
                self.assertEqual(elf_machine(f.read(64)), machine)
            with open(os.path.join(out, f"linux_{arch}", "hello")) as f:
                self.assertEqual(f.read(), "hi\n")
        self.assertEqual(self.store_temp_entries(daemon), [])

    def test_a_platforms_directory_stays_inside_dest_whatever_its_variant(self):
        # containerd's grammar lets a variant be "..": the directory is one name, never a way out.
        daemon = self.daemon()
        ctx = self.context("FROM scratch\nCOPY hello /hello\n", {"hello": "hi\n"})
        out = self.path("out", "dest")
        self.build(daemon, ctx, "--platform", "linux/amd64/..,linux/amd64/.", "-o", f"type=local,dest={out}")
        self.assertEqual(sorted(os.listdir(out)), ["linux_amd64_.", "linux_amd64_.."])
        self.assertEqual(sorted(os.listdir(self.path("out"))), ["dest"])
        for variant in (".", ".."):
            with open(os.path.join(out, "linux_amd64_" + variant, "hello")) as f:
                self.assertEqual(f.read(), "hi\n")

    @needs_arm64
    def test_later_builds_take_their_platforms_image_from_a_stored_index(self):
        daemon = self.daemon()
        self.build(daemon, self.context(TWO_PLATFORM_DOCKERFILE, {"hello": "hi\n"}),
                   "--platform", "linux/amd64,linux/arm64", "-t", "multi:1")
        ctx = self.context("FROM multi:1\nRUN cat /arch > /from-base && uname -m > /now\n")
        for platform, arch in ((None, "x86_64"), ("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")):
            out = self.path("out-" + (platform or "default").replace("/", "_"))
            self.build(daemon, ctx, *(["--platform", platform] if platform else []), "-o", f"type=local,dest={out}")
            for name in ("from-base", "now"):
                with open(os.path.join(out, name)) as f:
                    self.assertEqual(f.read().strip(), arch, (platform, name))
        result = self.build(daemon, ctx, "--platform", "linux/riscv64", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("is for linux/amd64, linux/arm64, not for linux/riscv64", result.stderr)
        # The index and what its images stand on are a tagged image's: prune -a keeps them.
        daemon.client("prune", "-a", "-f")
        self.build(daemon, ctx, "--platform", "linux/arm64", "-o", f"type=local,dest={self.path('again')}")

    @needs_arm64
    def test_an_oci_archive_of_two_platforms_loads_back_as_one_image_of_both(self):
        daemon = self.daemon()
        archive = self.path("o.tar")
        self.build(daemon, self.context(TWO_PLATFORM_DOCKERFILE, {"hello": "hi\n"}),
                   "--platform", "linux/amd64,linux/arm64", "-o", f"type=oci,dest={archive},name=loaded:2")
        other = harness.Daemon(self.path("d2"))
        self.addCleanup(other.stop)
        self.assertIn("Loaded image: loaded:2", other.client("load", "-i", archive).stdout)
        self.assertRegex(other.client("images", "--tree").stdout, r"loaded\s+2\s.*\n├─ linux/amd64\n└─ linux/arm64\n")
        self.assert_each_platform_builds_from(other, "loaded:2")

    @needs_arm64
    def test_a_push_sends_one_index_that_builds_pull_their_platform_from(self):
        registry = harness.DistributionRegistry(self.workdir, "push")
        self.addCleanup(registry.stop)
        daemon = self.daemon()
        name = f"{registry.host}/multi:1"
        self.build(daemon, self.context(TWO_PLATFORM_DOCKERFILE, {"hello": "hi\n"}),
                   "--platform", "linux/amd64,linux/arm64", "-t", name, "--push")
        raw_bytes = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"],
                                   check=True, capture_output=True).stdout
        raw = json.loads(raw_bytes)
        self.assertEqual(raw["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json")
        self.assertEqual([m["platform"]["architecture"] for m in raw["manifests"]], ["amd64", "arm64"])
        for entry in raw["manifests"]:
            self.assertEqual(entry["mediaType"], "application/vnd.docker.distribution.manifest.v2+json")
        # skopeo reads the whole index back, every blob checked.
        subprocess.run(["skopeo", "copy", "--all", "-q", "--src-tls-verify=false", f"docker://{name}",
                        f"oci:{self.path('copy')}:x"], check=True)
        # Another store pulls each platform's image from the index; the pull names the index.
        other = harness.Daemon(self.path("d2"))
        self.addCleanup(other.stop)
        pulled = other.client("pull", "--platform", "linux/arm64", name).stdout
        self.assertIn(f"Digest: sha256:{hashlib.sha256(raw_bytes).hexdigest()}\n", pulled)
        self.assert_each_platform_builds_from(other, name)

    @needs_arm64
    def test_a_cache_exported_by_a_build_of_two_platforms_serves_both(self):
        daemon = self.daemon()
        ctx = self.context(TWO_PLATFORM_DOCKERFILE, {"hello": "hi\n"})
        cache = self.path("cache")
        self.build(daemon, ctx, "--platform", "linux/amd64,linux/arm64", "--cache-to", f"type=local,dest={cache},mode=max")
        other = harness.Daemon(self.path("d2"))
        self.addCleanup(other.stop)
        other.client("load", "-i", self.amd64_archive)
        other.client("load", "-i", self.arm64_archive)
        other.client("tag", AMD64, AMD64 + "-amd64")
        out = self.path("out")
        result = other.client("build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64",
                              "--cache-from", f"type=local,src={cache}", "-o", f"type=local,dest={out}", ctx,
                              timeout=600)
        for platform in ("linux/amd64", "linux/arm64"):
            step = re.search(rf"#(\d+) \[{platform} stage-1 4/4\] RUN uname", result.stderr)
            self.assertIsNotNone(step, result.stderr)
            self.assertIn(f"#{step.group(1)} CACHED", result.stderr)
        with open(os.path.join(out, "linux_arm64", "arch")) as f:
            self.assertEqual(f.read().strip(), "aarch64")

    @needs_arm64
    def test_a_failing_platform_stops_the_others_and_its_error_is_the_one_told(self):
        daemon = self.daemon()
        ctx = self.context("ARG TARGETARCH\nFROM kbuild-busybox-$TARGETARCH\n"
                           "RUN if [ \"$(uname -m)\" = aarch64 ]; then echo arm64-breaks; exit 3; fi; sleep 127.25\n")
        started = time.monotonic()
        result = self.build(daemon, ctx, "--platform", "linux/amd64,linux/arm64", "-t", "never", check=False)
        self.assertLess(time.monotonic() - started, 90, "the amd64 step was not stopped")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("did not complete successfully: exit code: 3", result.stderr)
        self.assertNotIn("never", self.image_names(daemon))
        # Nothing of the stopped step is left running (its teardown may end just after the reply).
        gone = lambda: subprocess.run(["pgrep", "-f", "sleep 127.25"], capture_output=True).stdout == b""  # noqa: E731
        self.assertTrue(wait_until(gone, 15), "the stopped amd64 step is still running")

    def test_outputs_a_build_of_several_platforms_cannot_write_are_refused_first(self):
        daemon = self.daemon()
        ctx = self.context("FROM kbuild-busybox\nRUN echo never > /ran\n")
        result = self.build(daemon, ctx, "--platform", "linux/amd64,linux/arm64", "-t", "never", "-o",
                            f"type=docker,dest={self.path('d.tar')}", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("docker exporter does not currently support exporting manifest lists", result.stderr)
        self.assertNotIn("echo never", result.stderr)
        self.assertNotIn("never", self.image_names(daemon))


def main():
    return suite.main("platforms", PlatformsTest, needs_root="they run root daemons", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
