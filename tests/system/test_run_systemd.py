#!/usr/bin/env python3
"""End-to-end test of RUN under the systemd sandbox backend, inside a booted systemd: a real
kbuildd (`--sandbox-backend systemd`) on a private socket and store, builds FROM the busybox base
of tests/integration/base_image.py, and what systemd shows while and after the steps run
(`systemctl list-units`, `systemctl show`, /proc/PID/cgroup). Runs as root inside the
systemd-nspawn container of tests/system/nspawn.sh:

    tests/system/nspawn.sh --bind=BUILD -- python3 tests/system/test_run_systemd.py --build-dir BUILD

(or `meson test -C BUILD --suite system`). The store lives on /var/lib/kbuild, which nspawn.sh
mounts as a tmpfs (overlayfs upper dirs cannot live on the container's overlayfs /var).

Cases: the build's slice and step scope with the build's limits, their descriptions, and the
step's process in the scope's cgroup; a failing step and an OOM-killed one; the journal's entries
of a build and its steps (and no secret in the journal); cancel on a killed client and on the
daemon's SIGTERM; the step's capabilities and hostname; the time per step of a cold build of
20 RUN steps (printed, not checked); and the installed kbuild.socket starting kbuild.service,
which builds a RUN step and then shows its counts in StatusText. The last line is `system-run: N passed, M failed`.
"""
import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(PROJECT, "tests", "integration"))
from daemon_process import terminate, wait_listening  # noqa: E402
from mounts import unmount_all_under  # noqa: E402
BASE = "busybox-base"
# Docker's default capability set (CAP_CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
# SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
DEFAULT_CAPS = "00000000a80425fb"
# One line of a step's output in plain progress: "#7 0.345 hi".
OUTPUT_LINE = re.compile(r"^#(\d+) (\d+\.\d+) (.*)$")
# kbuild-<build>.slice and kbuild-<build>-<step>.scope; systemd escapes the '-' of "step-N" in a
# unit name as \x2d (a '-' separates slice levels), so `systemctl` lists kbuild-<build>-step\x2dN.
SLICE = re.compile(r"^kbuild-([0-9a-f]+)\.slice$")
SCOPE = re.compile(r"^kbuild-([0-9a-f]+)-step(?:\\x2d|-)(\d+)\.scope$")

BUILD_DIR = "build"


def log(*args):
    print(*args, flush=True)


def run(cmd, check=True, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
                             f"stderr:\n{result.stderr[-3000:]}")
    return result


def step_output(stderr):
    """The text lines the steps printed, from plain progress."""
    return [m.group(3) for m in map(OUTPUT_LINE.match, stderr.splitlines()) if m]


def timestamp(text):
    """Seconds since the epoch of an RFC 3339 time as Go writes it (nanoseconds, Z or an offset)."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    whole = datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()
    return whole + float("0." + (m.group(2) or "0"))


def fs_type(path):
    return run(["stat", "-f", "-c", "%T", path]).stdout.strip()


# -- systemd ------------------------------------------------------------------------------------

def kbuild_units():
    """Names of every kbuild-* slice and scope systemd has loaded, in any state (not the
    kbuild-system-test.* units nspawn.sh runs this test with)."""
    out = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
               "kbuild-*.slice", "kbuild-*.scope"]).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def show(unit, *props):
    out = run(["systemctl", "show", "--no-pager", "-p", ",".join(props), unit]).stdout
    values = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def wait_for(predicate, timeout, interval=0.05):
    """predicate()'s first true value within timeout seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_no_units(timeout=10):
    """[] once no kbuild-* unit is loaded, else what is still there after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        units = kbuild_units()
        if not units or time.monotonic() > deadline:
            return units
        time.sleep(0.1)


# -- the journal ----------------------------------------------------------------------------------

def journal_cursor():
    """Where the journal ends now (the cursor of its last entry): entries after it are this case's."""
    out = run(["journalctl", "-n", "1", "-o", "json", "--no-pager"]).stdout.strip()
    assert out, "the journal is empty: is systemd-journald running?"
    return json.loads(out.splitlines()[-1])["__CURSOR"]


def journal(since, *matches):
    """The journal's entries after cursor `since` that have every FIELD=VALUE of `matches`.
    (Matched here: systemd 252's journalctl finds nothing when --after-cursor and matches meet.)"""
    out = run(["journalctl", "-o", "json", "--no-pager", "--after-cursor", since]).stdout
    wanted = [match.split("=", 1) for match in matches]
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in entries if all(e.get(name) == value for name, value in wanted)]


# -- processes ----------------------------------------------------------------------------------

def processes_with(text):
    """(pid, cmdline, comm) of every process whose command line contains text."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            with open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if argv and text in " ".join(argv) and argv[0] not in ("systemctl",) and "kbuildctl" not in argv[0]:
            found.append((int(name), " ".join(argv), comm))
    return found


def cgroups_of(pid):
    """/proc/PID/cgroup as {hierarchy: path} ("0" is the unified one, "name=systemd" systemd's)."""
    groups = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            groups[controllers or number] = path
    return groups


def in_cgroup(pid, control_group):
    """Whether the process's systemd-tracked cgroup is control_group (a path as systemd's
    ControlGroup property gives it)."""
    groups = cgroups_of(pid)
    tracked = [groups.get("name=systemd"), groups.get("0")]
    return any(p is not None and (p == control_group or p.endswith(control_group)) for p in tracked)


def cgroup_limit_files(control_group):
    """The kernel's memory and pids limits of a cgroup: {"memory": bytes or "max", "pids": n or "max"}."""
    limits = {}
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        base = "/sys/fs/cgroup" + control_group
        for key, name in (("memory", "memory.max"), ("pids", "pids.max")):
            try:
                with open(os.path.join(base, name)) as f:
                    limits[key] = f.read().strip()
            except OSError:
                pass
    else:
        for key, name in (("memory", "memory/{}/memory.limit_in_bytes"), ("pids", "pids/{}/pids.max")):
            try:
                with open("/sys/fs/cgroup/" + name.format(control_group.strip("/"))) as f:
                    limits[key] = f.read().strip()
            except OSError:
                pass
    return limits


# -- the daemon ---------------------------------------------------------------------------------

class Daemon:
    """kbuildd with the systemd backend on a socket and store of its own."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.socket = os.path.join(workdir, "kbuild.sock")
        self.root = os.path.join(workdir, "root")
        self.config = os.path.join(workdir, "daemon.json")
        self.log_path = os.path.join(workdir, "kbuildd.log")
        os.makedirs(workdir, exist_ok=True)
        with open(self.config, "w") as f:
            f.write("{}\n")
        self.process = None
        self.log = None

    def start(self):
        argv = [os.path.join(BUILD_DIR, "service/kbuildd"), "--listen", self.socket, "--root", self.root,
                "--config", self.config, "--exec-helper", os.path.join(BUILD_DIR, "engine/kbuild-exec"),
                "--sandbox-backend", "systemd"]
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_listening(self.process, self.socket, 20):
            raise AssertionError(f"kbuildd did not listen on {self.socket}:\n{self.log_tail()}")

    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL of its process group after timeout seconds; the exit status."""
        status = None
        if self.process is not None:
            status = terminate(self.process, timeout)
            self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None
        return status

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self.stop()

    def argv(self, *args):
        return [os.path.join(BUILD_DIR, "cli/kbuildctl"), "--host", "unix://" + self.socket] + list(args)

    def client(self, *args, check=True, timeout=300, **kwargs):
        return run(self.argv(*args), check=check, timeout=timeout, **kwargs)

    def build(self, ctx, *args, check=True, timeout=300):
        return self.client("build", "--progress", "plain", *args, ".", cwd=ctx, check=check, timeout=timeout)

    def popen_build(self, ctx, *args):
        """A build in the background; its plain progress goes to a file (.progress_path)."""
        path = os.path.join(self.workdir, "progress-" + uuid.uuid4().hex[:8])
        out = open(path, "w")
        process = subprocess.Popen(self.argv("build", "--progress", "plain", *args, "."), cwd=ctx,
                                   stdout=subprocess.DEVNULL, stderr=out, text=True)
        out.close()
        process.progress_path = path
        return process


def progress_of(process):
    with open(process.progress_path, errors="replace") as f:
        return f.read()


# -- the test -----------------------------------------------------------------------------------

class SystemRunTest:
    def __init__(self, keep=False):
        self.keep = keep
        self.results = []  # (name, error or None)
        self.workdir = None
        self.daemon = None
        self.background = []

    # helpers

    def context(self, dockerfile):
        ctx = tempfile.mkdtemp(prefix="ctx-", dir=self.workdir)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(dockerfile)
        return ctx

    def popen(self, ctx, *args):
        process = self.daemon.popen_build(ctx, *args)
        self.background.append(process)
        return process

    def wait_for_step(self, process, timeout=30):
        """(slice, scope) once a running build has both units, failing if the build ends first."""
        def found():
            units = kbuild_units()
            slices = [u for u in units if SLICE.match(u)]
            scopes = [u for u in units if SCOPE.match(u)]
            if slices and scopes:
                return slices, scopes
            if process.poll() is not None:
                raise AssertionError(f"the build ended (status {process.returncode}) before its step's "
                                     f"units showed up (units: {units}):\n{progress_of(process)[-3000:]}")
            return None
        units = wait_for(found, timeout)
        if not units:
            raise AssertionError(f"no kbuild slice and step scope within {timeout}s (units: {kbuild_units()}):\n"
                                 f"{progress_of(process)[-3000:]}")
        slices, scopes = units
        assert len(slices) == 1 and len(scopes) == 1, f"one build's units expected, have {slices + scopes}"
        return slices[0], scopes[0]

    def assert_no_units(self, after, timeout=10):
        left = wait_no_units(timeout)
        assert not left, f"kbuild units left {after} (after {timeout}s): {left}"

    def assert_no_process(self, text, after, timeout=10):
        left = wait_for(lambda: not processes_with(text), timeout) or processes_with(text)
        assert left is True, f"processes left {after} (after {timeout}s): {left}"

    # cases

    def test_step_runs_in_a_scope_of_the_builds_slice(self):
        ctx = self.context(f"FROM {BASE}\nRUN sleep 5\n")
        build = self.popen(ctx, "--no-cache", "--memory", "256m", "--pids-limit", "100")
        slice_unit, scope_unit = self.wait_for_step(build)
        build_name = SLICE.match(slice_unit).group(1)
        assert SCOPE.match(scope_unit).group(1) == build_name, f"{scope_unit} is not a step of {slice_unit}"
        listed = run(["systemctl", "list-units", "--all", "--no-pager", "kbuild-*.slice", "kbuild-*.scope"]).stdout
        log(listed.rstrip())

        sl = show(slice_unit, "ActiveState", "ControlGroup", "MemoryMax", "TasksMax", "Description")
        sc = show(scope_unit, "ActiveState", "Slice", "ControlGroup", "MemoryMax", "TasksMax", "Description")
        log(f"  {slice_unit}: {sl}")
        log(f"  {scope_unit}: {sc}")
        assert sl["ActiveState"] == "active", sl
        assert sc["ActiveState"] == "active", sc
        assert sc["Slice"] == slice_unit, f"the scope is in {sc['Slice']!r}, not {slice_unit}"
        # The list reads like the build's progress.
        assert sc["Description"] == "kbuild: [2/2] RUN sleep 5", sc["Description"]
        assert sl["Description"] == f"kbuild build {build_name} (uid 0)", sl["Description"]
        assert "kbuild: [2/2] RUN sleep 5" in listed, listed
        assert sl["MemoryMax"] == str(256 << 20), f"slice MemoryMax={sl['MemoryMax']}, want {256 << 20}"
        assert sl["TasksMax"] == "100", f"slice TasksMax={sl['TasksMax']}, want 100"
        assert sc["ControlGroup"].startswith(sl["ControlGroup"] + "/"), \
            f"scope cgroup {sc['ControlGroup']} is not below the slice's {sl['ControlGroup']}"
        kernel = cgroup_limit_files(sl["ControlGroup"])
        log(f"  the slice's cgroup limits in the kernel: {kernel}")
        assert kernel.get("memory") == str(256 << 20), f"the kernel's memory limit of the slice: {kernel}"
        assert kernel.get("pids") == "100", f"the kernel's pids limit of the slice: {kernel}"

        sleeps = wait_for(lambda: processes_with("sleep 5"), 10)
        assert sleeps, "no `sleep 5` process while the step runs"
        for pid, cmdline, comm in sleeps:
            groups = cgroups_of(pid)
            log(f"  pid {pid} ({comm}: {cmdline}): {groups}")
            assert in_cgroup(pid, sc["ControlGroup"]), \
                f"pid {pid} ({cmdline}) is in {groups}, not in the scope's {sc['ControlGroup']}"

        build.wait(timeout=60)
        assert build.returncode == 0, f"the build failed:\n{progress_of(build)[-3000:]}"
        self.assert_no_units("after the build")

    def test_failing_step_reports_its_exit_code(self):
        result = self.daemon.build(self.context(f"FROM {BASE}\nRUN exit 3\n"), "--no-cache", check=False)
        assert result.returncode != 0, "a RUN that exits 3 built"
        assert "exit code: 3" in result.stderr, f"no `exit code: 3` in:\n{result.stderr[-3000:]}"
        log("  " + [line for line in result.stderr.splitlines() if "exit code: 3" in line][-1])
        self.assert_no_units("after a failed step")

    def test_oom_kill_is_reported(self):
        ctx = self.context(f"FROM {BASE}\n"
                           "RUN --mount=type=tmpfs,target=/t dd if=/dev/zero of=/t/big bs=1M count=200\n")
        result = self.daemon.build(ctx, "--no-cache", "--memory", "64m", check=False)
        assert result.returncode != 0, f"filling 200 MiB of tmpfs under --memory 64m built:\n{result.stderr[-2000:]}"
        assert "out of memory" in result.stderr, f"no `out of memory` in:\n{result.stderr[-3000:]}"
        log("  " + [line for line in result.stderr.splitlines() if "out of memory" in line][-1])
        self.assert_no_units("after an OOM kill")

    def test_killed_client_cancels_the_build(self):
        build = self.popen(self.context(f"FROM {BASE}\nRUN sleep 30\n"), "--no-cache")
        self.wait_for_step(build)
        assert wait_for(lambda: processes_with("sleep 30"), 10), "no `sleep 30` process while the step runs"
        started = time.monotonic()
        build.send_signal(signal.SIGKILL)
        build.wait()
        self.assert_no_units("after the client was killed", timeout=5)
        self.assert_no_process("sleep 30", "after the client was killed", timeout=5)
        log(f"  units and processes gone {time.monotonic() - started:.2f}s after the client's SIGKILL")
        assert self.daemon.running(), f"kbuildd exited:\n{self.daemon.log_tail()}"

    def test_daemon_sigterm_stops_the_running_step(self):
        build = self.popen(self.context(f"FROM {BASE}\nRUN sleep 31\n"), "--no-cache")
        self.wait_for_step(build)
        assert wait_for(lambda: processes_with("sleep 31"), 10), "no `sleep 31` process while the step runs"
        started = time.monotonic()
        status = self.daemon.stop(timeout=25)
        log(f"  kbuildd exited with {status} {time.monotonic() - started:.2f}s after SIGTERM")
        try:
            build.wait(timeout=10)
        except subprocess.TimeoutExpired:
            build.kill()
            build.wait()
            raise AssertionError("the client did not end after the daemon exited")
        assert build.returncode != 0, "the build succeeded though its daemon was stopped"
        self.assert_no_units("after kbuildd exited", timeout=5)
        self.assert_no_process("sleep 31", "after kbuildd exited", timeout=5)
        assert status in (0, -signal.SIGTERM), f"kbuildd exited with {status} on SIGTERM:\n{self.daemon.log_tail()}"

    def test_a_killed_daemons_units_are_swept_at_its_next_start(self):
        build = self.popen(self.context(f"FROM {BASE}\nRUN sleep 32\n"), "--no-cache")
        slice_unit, _ = self.wait_for_step(build)
        assert wait_for(lambda: processes_with("sleep 32"), 10), "no `sleep 32` process while the step runs"
        # kill -9 of the daemon alone. The step may die with it (its helper does), and systemd
        # then drops the empty scope; the build's slice stays for the next start to stop.
        self.daemon.process.kill()
        self.daemon.stop()
        build.wait(timeout=30)
        left = kbuild_units()
        assert slice_unit in left, f"the killed daemon's slice is gone already: {left}"
        log(f"  left by the killed daemon: {left}")
        started = time.monotonic()
        self.daemon.start()
        self.daemon.client("du")  # answered once the start-up sweep is done
        self.assert_no_units("after kbuildd started again", timeout=2)
        self.assert_no_process("sleep 32", "after kbuildd started again", timeout=2)
        log(f"  swept {time.monotonic() - started:.2f}s after the restart")

    def test_builds_and_steps_are_in_the_journal_without_secrets(self):
        secret = "system-secret-" + uuid.uuid4().hex[:12]
        since = journal_cursor()
        ctx = self.context(f'FROM {BASE}\nRUN --mount=type=secret,id=tok,env=TOK test "$TOK" = "{secret}"\n')
        iid = os.path.join(self.workdir, "iid-journal")
        self.daemon.client("build", "--progress", "plain", "--no-cache", "--secret", "id=tok,env=SYSTEM_TOKEN",
                           "--iidfile", iid, ".", cwd=ctx, env=dict(os.environ, SYSTEM_TOKEN=secret))
        with open(iid) as f:
            image = f.read().strip()
        summaries = wait_for(lambda: journal(since, f"KBUILD_IMAGE={image}"), 10)
        assert len(summaries) == 1, f"one summary entry of the build expected, have {summaries}"
        summary = summaries[0]
        log(f"  {summary['MESSAGE']}")
        build_id = summary.get("KBUILD_BUILD_ID", "")
        assert re.fullmatch(r"[0-9a-f]{12}", build_id), summary
        with open(os.path.join(ctx, "Dockerfile"), "rb") as f:
            dockerfile_digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        want = {"KBUILD_CALLER_UID": "0", "KBUILD_RESULT": "success", "KBUILD_IMAGE": image,
                "KBUILD_DOCKERFILE_DIGEST": dockerfile_digest, "KBUILD_IMAGE_NAMES": ""}
        assert {k: summary.get(k) for k in want} == want, summary
        assert int(summary["KBUILD_DURATION_USEC"]) > 0, summary
        assert re.fullmatch(rf"build {build_id} by uid 0: success in \d+\.\d\ds, image {image}", summary["MESSAGE"]), \
            summary["MESSAGE"]
        entries = journal(since, f"KBUILD_BUILD_ID={build_id}")
        steps = [e for e in entries if e.get("KBUILD_STEP", "").startswith("[2/2] RUN ")]
        for entry in steps:
            log(f"  {entry['MESSAGE']}")
        assert any(e["MESSAGE"].startswith(f"build {build_id} step started: ") for e in steps), entries
        assert any(e["MESSAGE"].startswith(f"build {build_id} step done in ") for e in steps), entries
        assert len([e for e in entries if "KBUILD_RESULT" in e]) == 1, "more than one summary of the build"
        leaks = [e.get("MESSAGE") for e in journal(since) if secret in json.dumps(e)]
        assert not leaks, f"the --secret value is in the journal: {leaks}"

    def test_a_failed_build_leaves_a_failure_summary(self):
        since = journal_cursor()
        result = self.daemon.build(self.context(f"FROM {BASE}\nRUN exit 5\n"), "--no-cache", check=False)
        assert result.returncode != 0, "a RUN that exits 5 built"
        failed = wait_for(lambda: journal(since, "KBUILD_RESULT=failure"), 10)
        assert len(failed) == 1, f"one failure summary expected, have {failed}"
        log(f"  {failed[0]['MESSAGE']}")
        assert failed[0]["KBUILD_IMAGE"] == "" and "exit code: 5" in failed[0]["MESSAGE"], failed[0]
        steps = journal(since, f"KBUILD_BUILD_ID={failed[0]['KBUILD_BUILD_ID']}", "PRIORITY=5")
        assert any(e.get("KBUILD_STEP") == "[2/2] RUN exit 5" for e in steps), steps

    def test_default_capabilities_and_hostname(self):
        result = self.daemon.build(self.context(f"FROM {BASE}\nRUN grep CapEff /proc/self/status && hostname\n"),
                                   "--no-cache")
        out = step_output(result.stderr)
        log(f"  step output: {out}")
        caps = [line.split()[-1] for line in out if line.startswith("CapEff:")]
        assert caps == [DEFAULT_CAPS], f"CapEff {caps}, want {DEFAULT_CAPS}"
        assert "buildkitsandbox" in out, f"hostname: {out}"
        self.assert_no_units("after the build")

    def test_timing_of_a_cold_build(self):
        steps = 20
        lines = [f"FROM {BASE}"] + [f"RUN echo {i} > /f{i}" for i in range(1, steps + 1)]
        ctx = self.context("\n".join(lines) + "\n")
        started = time.monotonic()
        result = self.daemon.client("build", "--progress", "rawjson", "--no-cache", ".", cwd=ctx)
        total_ms = (time.monotonic() - started) * 1000
        # Each RUN vertex's started and completed times, from BuildKit's rawjson events.
        spans = {}
        for line in result.stderr.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            for vertex in event.get("vertexes") or []:
                if not re.match(r"^\[\s*\d+/\d+\] RUN echo \d+ > /f\d+$", vertex.get("name", "")):
                    continue
                span = spans.setdefault(vertex["digest"], {})
                for key in ("started", "completed"):
                    if vertex.get(key):
                        span[key] = timestamp(vertex[key])
        per_step = sorted((s["completed"] - s["started"]) * 1000 for s in spans.values()
                          if "started" in s and "completed" in s)
        log(f"  systemd backend, cold build of {steps} RUN steps: {total_ms:.0f} ms for the whole build "
            f"(client wall time), {total_ms / steps:.1f} ms per step")
        if per_step:
            log(f"  RUN vertex started..completed (ms): mean {sum(per_step) / len(per_step):.1f}, min {per_step[0]:.1f}, "
                f"median {per_step[len(per_step) // 2]:.1f}, max {per_step[-1]:.1f} over {len(per_step)} steps")
        assert len(per_step) == steps, f"timed {len(per_step)} RUN vertices of {steps}:\n{result.stderr[-2000:]}"
        self.assert_no_units("after the build")

    # running

    def setup(self):
        base = "/var/lib/kbuild"
        if not os.path.isdir(base) or fs_type(base) == "overlayfs":
            base = None
        self.workdir = tempfile.mkdtemp(prefix="kbuild-system-run-", dir=base)
        os.chmod(self.workdir, 0o755)
        log(f"workdir {self.workdir} ({fs_type(self.workdir)})")
        if fs_type(self.workdir) == "overlayfs":
            log("warning: the store is on overlayfs; kbuildd falls back to copying snapshots")
        archive = os.path.join(self.workdir, "base.tar")
        run([sys.executable, os.path.join(PROJECT, "tests/integration/base_image.py"), archive, "--tag", BASE])
        self.daemon = Daemon(os.path.join(self.workdir, "daemon"))
        stale = kbuild_units()
        assert not stale, f"kbuild units before the test started: {stale}"
        self.daemon.start()
        self.daemon.client("load", "-i", archive)

    def cleanup(self):
        for process in self.background:
            if process.poll() is None:
                process.kill()
                process.wait()
        if self.daemon is not None:
            self.daemon.stop()
        if self.workdir is not None:
            unmount_all_under(self.workdir)
            if self.keep:
                log(f"kept {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def test_socket_activation_starts_the_installed_service(self):
        # The product as a user gets it: `meson install` (into the container's throw-away /usr
        # and /etc), the sysusers and tmpfiles entries, then kbuild.socket; the first call
        # starts kbuild.service (Type=notify, PrivateMounts, Delegate), which runs a RUN step
        # with the installed kbuild-exec under the systemd backend.
        run(["meson", "install", "-C", BUILD_DIR, "--no-rebuild", "--quiet"])
        run(["systemd-sysusers"])
        run(["systemd-tmpfiles", "--create", "/usr/local/lib/tmpfiles.d/kbuild.conf"])
        run(["systemctl", "daemon-reload"])
        run(["systemctl", "start", "kbuild.socket"])
        since = journal_cursor()
        try:
            assert show("kbuild.service", "ActiveState")["ActiveState"] == "inactive", "started before any call"
            client = "/usr/local/bin/kbuildctl"
            info = run([client, "info"]).stdout
            assert "root: /var/lib/kbuild" in info, info
            assert "sandbox-backend: systemd" in info, info
            state = show("kbuild.service", "ActiveState", "Type", "MainPID")
            assert state["ActiveState"] == "active" and state["Type"] == "notify", state
            with open(f"/proc/{state['MainPID']}/cmdline", "rb") as f:
                assert f.read().split(b"\0")[0] == b"/usr/local/sbin/kbuildd"
            run([client, "load", "-i", os.path.join(self.workdir, "base.tar")])
            ctx = self.context(f"FROM {BASE}\nRUN echo from-the-service > /made\n")
            out = os.path.join(self.workdir, "service-out")
            built = run([client, "build", "--progress", "plain", "-o", f"type=local,dest={out}", "."], cwd=ctx,
                        timeout=300)
            with open(os.path.join(out, "made")) as f:
                assert f.read() == "from-the-service\n", built.stderr[-2000:]
            # STATUS= says what the service did (it may take a second: the line is rate-limited).
            status = re.compile(r"^0 builds running, [1-9]\d* steps? run, \d+ steps? cached, \d+(\.\d)? [kMGT]?B stored$")
            text = wait_for(lambda: status.match(show("kbuild.service", "StatusText")["StatusText"]), 5)
            assert text, f"StatusText={show('kbuild.service', 'StatusText')['StatusText']!r}"
            log(f"  StatusText={text.group(0)}")
            watchdog = show("kbuild.service", "WatchdogUSec")["WatchdogUSec"]
            assert watchdog == "1min", f"WatchdogUSec={watchdog}"
            entries = wait_for(lambda: journal(since, "_SYSTEMD_UNIT=kbuild.service", "KBUILD_RESULT=success"), 10)
            assert len(entries) == 1, f"one summary entry of the service's build expected, have {entries}"
            assert os.path.isdir("/var/lib/kbuild/snapshots"), "the service's store is not /var/lib/kbuild"
        finally:
            run(["systemctl", "stop", "kbuild.socket", "kbuild.service"], check=False)
        state = show("kbuild.service", "ActiveState", "Result")
        assert state == {"ActiveState": "inactive", "Result": "success"}, state
        self.assert_no_units("after kbuild.service stopped")

    def run_case(self, test):
        name = test.__name__[len("test_"):]
        log(f"== {name}")
        started = time.monotonic()
        try:
            if not self.daemon.running():
                self.daemon.start()
            test()
            log(f"PASS {name} ({time.monotonic() - started:.1f}s)")
            self.results.append((name, None))
        except Exception as error:  # noqa: BLE001 -- every failure is reported the same way
            log(f"FAIL {name}: {error}")
            if not isinstance(error, AssertionError):
                traceback.print_exc(file=sys.stdout)
            log("  kbuildd's log (tail):\n" + self.daemon.log_tail())
            self.results.append((name, str(error)))
        finally:
            for process in self.background:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            self.background = []

    def main(self, pattern):
        cases = [
            self.test_step_runs_in_a_scope_of_the_builds_slice,
            self.test_failing_step_reports_its_exit_code,
            self.test_oom_kill_is_reported,
            self.test_killed_client_cancels_the_build,
            self.test_daemon_sigterm_stops_the_running_step,
            self.test_a_killed_daemons_units_are_swept_at_its_next_start,
            self.test_builds_and_steps_are_in_the_journal_without_secrets,
            self.test_a_failed_build_leaves_a_failure_summary,
            self.test_default_capabilities_and_hostname,
            self.test_timing_of_a_cold_build,
            self.test_socket_activation_starts_the_installed_service,
        ]
        cases = [c for c in cases if pattern is None or pattern in c.__name__]
        try:
            try:
                self.setup()
            except Exception as error:  # noqa: BLE001
                log(f"FAIL setup: {error}")
                traceback.print_exc(file=sys.stdout)
                if self.daemon is not None:
                    log("  kbuildd's log (tail):\n" + self.daemon.log_tail())
                self.results.append(("setup", str(error)))
                cases = []
            for case in cases:
                self.run_case(case)
        finally:
            self.cleanup()
        left = kbuild_units()
        if left:
            self.results.append(("cleanup", f"units left: {left}"))
            log(f"FAIL cleanup: kbuild units left after kbuildd stopped: {left}")
        failed = [name for name, error in self.results if error is not None]
        log(f"system-run: {len(self.results) - len(failed)} passed, {len(failed)} failed")
        return 1 if failed else 0


def main():
    global BUILD_DIR
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("-k", dest="pattern", help="run only the cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    BUILD_DIR = os.path.abspath(args.build_dir)
    if os.geteuid() != 0:
        print("test_run_systemd.py: needs root", file=sys.stderr)
        return 2
    if not os.path.isdir("/run/systemd/system"):
        print("test_run_systemd.py: needs a booted systemd (run it through tests/system/nspawn.sh)", file=sys.stderr)
        return 2
    for path in ("service/kbuildd", "cli/kbuildctl", "engine/kbuild-exec"):
        if not os.access(os.path.join(BUILD_DIR, path), os.X_OK):
            print(f"test_run_systemd.py: {BUILD_DIR}/{path} is not built", file=sys.stderr)
            return 2
    return SystemRunTest(keep=args.keep).main(args.pattern)


if __name__ == "__main__":
    sys.exit(main())
