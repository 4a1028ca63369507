#!/usr/bin/env python3
"""RUN for a foreign platform under user-mode emulation (qemu-user-static through binfmt_misc),
with a real kbuildd on a private socket and store (test_registry.Daemon): an arm64 step runs the
arm64 busybox under qemu, with the seccomp profile and capabilities of a native step;
`kbuildctl info` lists the platforms the host's handlers make runnable; a program the host
cannot run (its handler disabled, removed, or without the F flag) fails with `exec format error`
or `no such file or directory` and a hint; kbuildd registers qemu-user-static itself when
daemon.json's features.binfmt-install allows it, and never touches a registration that is there.
Run as root:

    python3 tests/integration/test_emulation.py [--build-dir build] [-k PATTERN]

The last line is `emulation: N passed, M failed, K skipped` (scripts/test.sh sums it).

binfmt_misc is the kernel's, not the test's: the tests that disable or remove a handler do it
to qemu-s390x, which no other suite uses, and put it back as it was in a `finally`.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_registry as harness  # noqa: E402  -- Daemon and its helpers
from mounts import unmount_all_under  # noqa: E402
from test_registry import write  # noqa: E402

BINFMT = "/proc/sys/fs/binfmt_misc"
NATIVE = base_image.DEFAULT_TAG
ARM64 = "kbuild-busybox-arm64"
S390X = "kbuild-busybox-s390x"
# qemu-user's names of the platforms kbuild lists, as Debian's qemu-user-static registers them.
QEMU_PLATFORMS = {"aarch64": ["linux/arm64"], "riscv64": ["linux/riscv64"], "ppc64": ["linux/ppc64"],
                  "ppc64le": ["linux/ppc64le"], "s390x": ["linux/s390x"], "mips64el": ["linux/mips64le"],
                  "mips64": ["linux/mips64"], "loongarch64": ["linux/loong64"],
                  "arm": ["linux/arm/v7", "linux/arm/v6"]}

# Handlers a test changed, by name, with their text before (None: there was none): put back
# when the test ends, and by main() when the suite is interrupted.
SAVED = {}

# What a step tries that Docker's default profile or capabilities forbid (and two it allows),
# each on a line of its own: "<probe>: ok" or "<probe>: refused".
PROBES = ["unshare -U true", "mount -t tmpfs none /mnt", "hostname emulated", "nice -n -5 true",
          "adjtimex -o 5", "nsenter -t 1 -m true", "chroot / true", "mknod /tmp/null c 1 3"]
REFUSED = PROBES[:6]
PROBE_SCRIPT = ("for p in " + " ".join(f"'{p}'" for p in PROBES) + "; do "
                "if $p >/dev/null 2>&1; then echo \"$p: ok\"; else echo \"$p: refused\"; fi; done > /probes && "
                "grep -E '^(Cap|Seccomp|NoNewPrivs)' /proc/self/status >> /probes")


def read(path):
    with open(path) as f:
        return f.read()


def poke(name, text):
    """One write to binfmt_misc's file `name` ("register", "status" or a handler), which is
    what the kernel takes as one command."""
    fd = os.open(os.path.join(BINFMT, name), os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def handler(name):
    """The text of binfmt_misc's handler `name`, or None when there is none."""
    try:
        return read(os.path.join(BINFMT, name))
    except FileNotFoundError:
        return None


def handler_fields(text):
    lines = text.splitlines()
    fields = {"enabled": lines[0] == "enabled"}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value
    return fields


def registration(name, text):
    """The register line that makes handler `name` again as `text` (its file) shows it."""
    f = handler_fields(text)
    esc = lambda hexed: "".join(f"\\x{hexed[i:i + 2]}" for i in range(0, len(hexed), 2))  # noqa: E731
    return f":{name}:M:{f['offset']}:{esc(f['magic'])}:{esc(f['mask'])}:{f['interpreter']}:{f.get('flags', '')}"


def put_back(name, saved):
    """Handler `name` as it was (`saved`: its text, or None for none)."""
    if handler(name) is not None:
        poke(name, "-1")
    if saved is not None:
        poke("register", registration(name, saved))
        if not handler_fields(saved)["enabled"]:
            poke(name, "0")
    SAVED.pop(name, None)


def runs_i386():
    """Whether the kernel runs a 32-bit x86 program (exit(0), 93 bytes), as kbuildd probes it."""
    code = bytes.fromhex("b801000000" "31db" "cd80")  # eax=1 (exit); ebx=0; int 0x80
    size = 52 + 32 + len(code)
    elf = (b"\x7fELF\x01\x01\x01" + b"\0" * 9 +
           struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x400054, 52, 0, 0, 52, 32, 1, 0, 0, 0) +
           struct.pack("<8I", 1, 0, 0x400000, 0x400000, size, size, 5, 0x1000) + code)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe")
        with open(path, "wb") as f:
            f.write(elf)
        os.chmod(path, 0o755)
        try:
            return subprocess.run([path]).returncode == 0
        except OSError:
            return False


class EmulationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-emu-")
        os.chmod(cls.workdir, 0o755)
        cls.archives = {}
        for tag, arch in ((NATIVE, "amd64"), (ARM64, "arm64"), (S390X, "s390x")):
            cls.archives[tag] = os.path.join(cls.workdir, tag + ".tar")
            base_image.write_base_image(cls.archives[tag], tag, arch=arch)

    @classmethod
    def tearDownClass(cls):
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        if not os.path.exists(os.path.join(BINFMT, "status")):
            self.skipTest(f"binfmt_misc is not mounted at {BINFMT}")
        for qemu in ("aarch64", "s390x"):
            if not os.access(f"/usr/bin/qemu-{qemu}-static", os.X_OK):
                self.skipTest(f"/usr/bin/qemu-{qemu}-static is missing (apt-get install qemu-user-static)")

    # -- helpers --------------------------------------------------------------------------------

    def path(self, *parts):
        # Short: a daemon's socket lives here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.id().rsplit(".", 1)[-1].removeprefix("test_")[:24], *parts)

    def daemon(self, config=None, name="d"):
        daemon = harness.Daemon(self.path(name), config)
        self.addCleanup(daemon.stop)
        for archive in self.archives.values():
            daemon.client("load", "-i", archive)
        return daemon

    def build(self, daemon, base, platform, script, check=True, name="ctx"):
        """Builds `RUN script` on `base` for `platform`; returns (the run, the output dir)."""
        ctx, out = self.path(name), self.path(name + "-out")
        shutil.rmtree(ctx, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        write(os.path.join(ctx, "Dockerfile"), f"FROM {base}\nRUN {script}\n")
        result = daemon.client("build", "--progress", "plain", "--platform", platform, "-o", f"type=local,dest={out}",
                               ctx, check=check, timeout=300)
        return result, out

    def info(self, daemon):
        return daemon.client("info").stdout

    def platforms(self, daemon):
        lines = [l for l in self.info(daemon).splitlines() if l.startswith("platforms: ")]
        self.assertEqual(len(lines), 1, self.info(daemon))
        return lines[0].removeprefix("platforms: ").split(", ")

    def keep_handler(self, name):
        """Puts handler `name` back as it is now when the test ends, whatever it does."""
        saved = handler(name)
        self.assertIsNotNone(saved, f"{BINFMT}/{name} is missing: qemu-user-static is not registered")
        SAVED[name] = saved
        self.addCleanup(lambda: self.assertEqual(handler(name), saved, f"{name} was not put back"))
        self.addCleanup(put_back, name, saved)
        return saved

    # -- tests ----------------------------------------------------------------------------------

    def test_an_arm64_step_runs_the_arm64_program_under_emulation(self):
        d = self.daemon()
        _, out = self.build(d, ARM64, "linux/arm64",
                            "uname -m > /arch && od -An -tx1 -j18 -N2 /proc/self/exe > /machine")
        self.assertEqual(read(os.path.join(out, "arch")), "aarch64\n")
        # e_machine of the program that ran: EM_AARCH64 (183), not x86-64's 62.
        self.assertEqual(read(os.path.join(out, "machine")).split(), ["b7", "00"])
        _, native = self.build(d, NATIVE, "linux/amd64", "od -An -tx1 -j18 -N2 /proc/self/exe > /machine",
                               name="native")
        self.assertEqual(read(os.path.join(native, "machine")).split(), ["3e", "00"])

    def test_an_emulated_step_has_the_seccomp_profile_and_capabilities_of_a_native_one(self):
        d = self.daemon()
        _, native = self.build(d, NATIVE, "linux/amd64", PROBE_SCRIPT, name="native")
        _, emulated = self.build(d, ARM64, "linux/arm64", PROBE_SCRIPT, name="arm64")
        native_probes, emulated_probes = read(os.path.join(native, "probes")), read(os.path.join(emulated, "probes"))
        self.assertEqual(emulated_probes, native_probes)
        for probe in REFUSED:
            self.assertIn(f"{probe}: refused\n", emulated_probes)
        self.assertIn("chroot / true: ok\n", emulated_probes)
        self.assertIn("CapEff:\t00000000a80425fb\n", emulated_probes)  # Docker's default set
        self.assertIn("Seccomp:\t2\n", emulated_probes)

    def test_info_lists_the_platforms_the_handlers_make_runnable(self):
        d = self.daemon()
        platforms = self.platforms(d)
        self.assertEqual(platforms[0], "linux/amd64")
        self.assertEqual("linux/386" in platforms, runs_i386())
        expected = set()
        for qemu, names in QEMU_PLATFORMS.items():
            text = handler(f"qemu-{qemu}") or handler(f"kbuild-qemu-{qemu}")
            if text and handler_fields(text)["enabled"] and "F" in handler_fields(text).get("flags", ""):
                expected.update(names)
        emulated = {p for p in platforms if p != "linux/386" and not p.startswith("linux/amd64")}
        self.assertEqual(emulated, expected)
        self.assertIn("linux/arm64", platforms)
        self.assertIn("features.binfmt-install: false (default)\n", self.info(d))

    def test_a_program_the_host_cannot_run_fails_with_a_hint(self):
        d = self.daemon()
        self.keep_handler("qemu-s390x")
        poke("qemu-s390x", "0")
        result, _ = self.build(d, S390X, "linux/s390x", "uname -m", check=False)
        self.assertNotEqual(result.returncode, 0)
        why = ("the binfmt_misc handler qemu-s390x is disabled: enable it with echo 1 > "
               "/proc/sys/fs/binfmt_misc/qemu-s390x")
        self.assertIn('ERROR: failed to build: failed to solve: process "/bin/sh -c uname -m" did not complete '
                      f"successfully: exec /bin/sh: exec format error (this host cannot run linux/s390x programs: "
                      f"{why})\n", result.stderr)
        self.assertNotIn("linux/s390x", self.platforms(d))
        self.assertIn(f"platform linux/s390x: not usable: {why}\n", self.info(d))
        # Enabled again, the same build runs.
        poke("qemu-s390x", "1")
        _, out = self.build(d, S390X, "linux/s390x", "uname -m > /arch")
        self.assertEqual(read(os.path.join(out, "arch")), "s390x\n")

    def test_a_handler_without_the_f_flag_serves_no_step_and_kbuildd_registers_one_beside_it(self):
        saved = self.keep_handler("qemu-s390x")
        SAVED["kbuild-qemu-s390x"] = None
        self.addCleanup(put_back, "kbuild-qemu-s390x", None)
        poke("qemu-s390x", "-1")
        poke("register", registration("qemu-s390x", saved).rsplit(":", 1)[0] + ":P")  # the same, without F
        d = self.daemon()
        # The kernel looks its interpreter up in the step's root, where there is none.
        result, _ = self.build(d, S390X, "linux/s390x", "uname -m", check=False)
        why = (f"the binfmt_misc handler qemu-s390x has no F (fix-binary) flag, so its interpreter "
               f"{handler_fields(saved)['interpreter']} would have to be inside the build's root: register it "
               "with the F flag, or let kbuildd register /usr/bin/qemu-s390x-static so with \"features\": "
               "{\"binfmt-install\": true} in daemon.json")
        self.assertIn(f"exec /bin/sh: no such file or directory (this host cannot run linux/s390x programs: {why})\n",
                      result.stderr)
        self.assertIn(f"platform linux/s390x: not usable: {why}\n", self.info(d))
        d.stop()
        allowed = self.daemon({"features": {"binfmt-install": True}}, name="allowed")
        self.assertEqual(handler_fields(handler("kbuild-qemu-s390x") or "disabled")["flags"], "F", allowed.log())
        self.assertEqual(handler_fields(handler("qemu-s390x"))["flags"], "P")  # left as it was
        _, out = self.build(allowed, S390X, "linux/s390x", "uname -m > /arch", name="again")
        self.assertEqual(read(os.path.join(out, "arch")), "s390x\n")

    def test_kbuildd_registers_qemu_where_nothing_handles_a_platform_when_allowed(self):
        before = sorted(os.listdir(BINFMT))
        # Every platform has a handler: a kbuildd allowed to register adds none and changes none.
        allowed = self.daemon({"features": {"binfmt-install": True}}, name="allowed")
        self.assertEqual(sorted(os.listdir(BINFMT)), before, allowed.log())
        self.assertIn("features.binfmt-install: true (from ", self.info(allowed))
        allowed.stop()

        self.keep_handler("qemu-s390x")
        SAVED["kbuild-qemu-s390x"] = None
        self.addCleanup(put_back, "kbuild-qemu-s390x", None)
        poke("qemu-s390x", "-1")
        d = self.daemon()
        result, _ = self.build(d, S390X, "linux/s390x", "uname -m", check=False)
        self.assertIn("exec /bin/sh: exec format error (this host cannot run linux/s390x programs: "
                      "/usr/bin/qemu-s390x-static is not registered with binfmt_misc: register it (update-binfmts "
                      "--enable qemu-s390x), or let kbuildd register it with \"features\": {\"binfmt-install\": "
                      "true} in daemon.json)\n", result.stderr)
        # Allowed on reload, kbuildd registers it, with the F flag.
        write(os.path.join(d.workdir, "daemon.json"), json.dumps({"features": {"binfmt-install": True}}))
        reloaded = d.client("reload").stdout
        self.assertIn("features.binfmt-install", reloaded)
        self.assertIn("kbuildd: registered /usr/bin/qemu-s390x-static for linux/s390x as binfmt_misc handler "
                      "kbuild-qemu-s390x\n", d.log())
        ours = handler("kbuild-qemu-s390x")
        self.assertIsNotNone(ours, d.log())
        fields = handler_fields(ours)
        self.assertTrue(fields["enabled"])
        self.assertEqual(fields["flags"], "F")
        self.assertEqual(fields["interpreter"], "/usr/bin/qemu-s390x-static")
        self.assertEqual(sorted(os.listdir(BINFMT)), sorted(set(before) - {"qemu-s390x"} | {"kbuild-qemu-s390x"}))
        self.assertIn("linux/s390x", self.platforms(d))
        _, out = self.build(d, S390X, "linux/s390x", "uname -m > /arch", name="again")
        self.assertEqual(read(os.path.join(out, "arch")), "s390x\n")


def interrupted():
    for name, saved in list(SAVED.items()):
        put_back(name, saved)
    EmulationTest.tearDownClass()


def main():
    return suite.main("emulation", EmulationTest, needs_root="they run root daemons and change binfmt_misc",
                      harness=harness, on_interrupt=interrupted)


if __name__ == "__main__":
    sys.exit(main())
