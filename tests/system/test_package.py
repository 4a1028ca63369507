#!/usr/bin/env python3
"""The Debian package as a user gets it, inside a booted systemd: installs the .deb
(`apt-get install ./kbuild_*.deb`), `systemctl enable --now kbuild.socket`, then uses the service
the package runs (/usr/sbin/kbuildd, socket-activated, the systemd sandbox backend) and purges it.
Runs as root inside the systemd-nspawn container of tests/system/nspawn.sh:

    tests/system/package_test.sh              (builds the .deb, or takes it from the cache)
    tests/system/nspawn.sh --bind=DIR -- python3 tests/system/test_package.py --deb DIR/kbuild.deb

Cases, in this order (each builds on the state the previous ones left): install; a build as root
and one as a member of group kbuild, each with its step as a scope in the build's slice while a
slow RUN runs; a user outside the group refused; the journal fields of those builds; `systemctl
reload kbuild` turning on an entitlement; the legacy builder's output; idle exit and socket
activation by the next call; `systemctl stop kbuild.service` during a build; `apt-get purge`.
The last line is `system-package: N passed, M failed`.

check_journal_fields (the journal fields of the builds) and check_legacy_builder
(`features.buildkit: false`) are kept apart from the rest: `-k check_` runs them alone.
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(PROJECT, "tests", "integration"))
sys.path.insert(0, os.path.join(PROJECT, "tests", "system"))
from base_image import write_base_image  # noqa: E402
from test_run_systemd import SCOPE, SLICE, processes_with, run, show, wait_for  # noqa: E402

# What the package installs; a `meson install` under /usr/local would come first in PATH, so the
# test names the package's files.
KBUILDCTL = "/usr/bin/kbuildctl"
KBUILDD = "/usr/sbin/kbuildd"
CONFIG = "/etc/docker/daemon.json"
STATE = "/var/lib/kbuild"
SOCKET = "/run/kbuild/kbuild.sock"
DROP_IN = "/etc/systemd/system/kbuild.service.d/test-idle.conf"
BASE = "busybox-base"
MEMBER = "kbuild-member"
OUTSIDER = "kbuild-outsider"
IDLE_SECONDS = 2


def log(*args):
    print(*args, flush=True)


def kbuild_units():
    """The build slices and step scopes systemd has loaded (`systemctl list-units 'kbuild-*'`)."""
    out = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager", "kbuild-*"]).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if SLICE.match(n) or SCOPE.match(n))


def store_mounts(pids=None):
    """Mounts of the store, in the mount namespaces of pids (default: every process's): mount
    points below /var/lib/kbuild, and mounts made of it (a step's rootfs is an overlay of the
    store's snapshots, mounted in the step's own namespace)."""
    found = set()
    for pid in pids or [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                for line in f:
                    fields = line.split()
                    if fields[4].startswith(STATE + "/") or STATE + "/" in fields[-1]:
                        found.add(f"{pid}: {fields[4]} {fields[-1]}")
        except OSError:
            continue  # it exited
    return sorted(found)


def write_config(settings):
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(CONFIG, "w") as f:
        json.dump(settings, f)


def info():
    """`kbuildctl info` as {setting: value}, from its "key: value" lines."""
    out = run([KBUILDCTL, "info"]).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if _}


def user_argv(user, argv):
    """argv run as user with the user's supplementary groups (runuser calls initgroups) and HOME."""
    return ["runuser", "-u", user, "--", "env", f"HOME=/home/{user}"] + argv


def purge():
    """`apt-get purge kbuild`, its units stopped first. nspawn.sh mounts a tmpfs on
    /var/lib/kbuild (the store's overlayfs cannot live on the container's overlayfs /var), and
    postrm's `rm -rf /var/lib/kbuild` must meet a plain directory, as on a real machine: the
    tmpfs goes, and a file of the store's stands for what the store held."""
    run(["systemctl", "stop", "kbuild.socket", "kbuild.service"], check=False)
    if run(["mountpoint", "-q", STATE], check=False).returncode == 0:
        run(["umount", STATE])
    os.makedirs(STATE + "/blobs", exist_ok=True)
    with open(STATE + "/metadata.db", "w") as f:
        f.write("stands for the store\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "purge", "-y", "-qq", "kbuild"], env=env)


class Build:
    """What a finished build left for the journal checks."""

    def __init__(self, build_id, uid, tag, dockerfile, seconds):
        self.build_id, self.uid, self.tag = build_id, uid, tag
        self.dockerfile, self.seconds = dockerfile, seconds


class PackageTest:
    def __init__(self, deb):
        self.deb = deb
        self.results = []
        self.builds = []  # Build of every successful build with a known ID, for the journal
        self.workdir = tempfile.mkdtemp(prefix="kbuild-package-test-")
        os.chmod(self.workdir, 0o755)
        self.package_files = []

    def context(self, dockerfile):
        """A build context readable by every user (kbuild-context-reader reads as the caller)."""
        ctx = tempfile.mkdtemp(prefix="ctx-", dir=self.workdir)
        os.chmod(ctx, 0o755)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(dockerfile)
        os.chmod(os.path.join(ctx, "Dockerfile"), 0o644)
        return ctx

    def build_argv(self, ctx, *args):
        return [KBUILDCTL, "build", "--progress", "plain", *args, ctx]

    # -- cases ------------------------------------------------------------------------------------

    def test_install_enables_the_socket(self):
        # A machine where kbuild is installed already (its root is this container's) starts from
        # a purged one; a `meson install` under /usr/local would shadow the package's units
        # (/usr/local/lib/systemd/system comes before /lib/systemd/system).
        if run(["dpkg-query", "-W", "-f=${Status}", "kbuild"], check=False).stdout.startswith("install"):
            log("  kbuild is installed on this root already: purged first")
            purge()
            # The store on a tmpfs again, as nspawn.sh made it.
            os.makedirs(STATE, exist_ok=True)
            run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", STATE])
        for unit in ("kbuild.service", "kbuild.socket"):
            shadow = os.path.join("/usr/local/lib/systemd/system", unit)
            if os.path.exists(shadow):
                log(f"  removing {shadow} (an earlier meson install) in the container")
                os.unlink(shadow)
        # The entitlement that test_reload_turns_on_an_entitlement turns on, off from the start.
        write_config({"builder": {"entitlements": {"network-host": False}}})

        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", os.path.abspath(self.deb)], env=env)
        self.package_files = [p for p in run(["dpkg", "-L", "kbuild"]).stdout.splitlines()
                              if p and not os.path.isdir(p)]
        for path in ("/lib/systemd/system/kbuild.service", "/lib/systemd/system/kbuild.socket", KBUILDD, KBUILDCTL):
            assert path in self.package_files, f"{path} is not in the package: {self.package_files}"
        run(["systemctl", "enable", "--now", "kbuild.socket"])

        assert run(["systemctl", "is-enabled", "kbuild.socket"], check=False).stdout.strip() == "enabled"
        assert show("kbuild.socket", "ActiveState")["ActiveState"] == "active"
        assert show("kbuild.service", "ActiveState")["ActiveState"] == "inactive", "kbuild.service runs before any call"
        st = os.stat(SOCKET)
        group = run(["getent", "group", "kbuild"]).stdout.split(":")
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o660, 0, int(group[2])), \
            f"{SOCKET}: mode {st.st_mode & 0o777:o}, owner {st.st_uid}:{st.st_gid}, group kbuild is {group[2]}"

        tar = os.path.join(self.workdir, "base.tar")
        write_base_image(tar, BASE)
        run([KBUILDCTL, "load", "-i", tar])
        assert show("kbuild.service", "ActiveState")["ActiveState"] == "active", "the first call did not start it"

        run(["useradd", "--create-home", "--groups", "kbuild", MEMBER])
        run(["useradd", "--create-home", OUTSIDER])

    def slow_build(self, name, argv_of):
        """Runs a build whose RUN sleeps; returns the Build once its step was seen as a scope of
        the build's slice and the build succeeded."""
        dockerfile = f"FROM {BASE}\nRUN sleep 3 && echo {name}-done\n"
        ctx = self.context(dockerfile)
        tag = f"pkgtest-{name}"
        started = time.monotonic()
        process = subprocess.Popen(argv_of(self.build_argv(ctx, "--no-cache", "-t", tag)),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            def units():
                found = kbuild_units()
                slices = [u for u in found if SLICE.match(u)]
                scopes = [u for u in found if SCOPE.match(u)]
                return (slices, scopes) if slices and scopes else None
            seen = wait_for(lambda: units() or process.poll() is not None, 20)
            assert seen and process.poll() is None, \
                f"no kbuild-* slice and scope while the step ran; the build: {process.communicate()[0][-3000:]}"
            slices, scopes = seen
            assert len(slices) == 1 and len(scopes) == 1, f"one build, one step: {slices} {scopes}"
            build_id = SLICE.match(slices[0]).group(1)
            assert SCOPE.match(scopes[0]).group(1) == build_id, f"{scopes[0]} is not of {slices[0]}"
            assert show(scopes[0], "Slice")["Slice"] == slices[0], show(scopes[0], "Slice")
            out, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, f"the build exited {process.returncode}:\n{out[-3000:]}"
        assert f"{name}-done" in out, f"no step output in:\n{out[-3000:]}"
        assert wait_for(lambda: not kbuild_units(), 10), f"units left after the build: {kbuild_units()}"
        return Build(build_id, None, tag, dockerfile, time.monotonic() - started)

    def test_build_as_root(self):
        build = self.slow_build("root", lambda argv: argv)
        build.uid = 0
        self.builds.append(build)
        images = run([KBUILDCTL, "images"]).stdout
        assert any(line.split()[:2] == [build.tag, "latest"] for line in images.splitlines()), images

    def test_build_as_member_of_group_kbuild(self):
        build = self.slow_build("member", lambda argv: user_argv(MEMBER, argv))
        build.uid = int(run(["id", "-u", MEMBER]).stdout)
        self.builds.append(build)

    def test_user_outside_the_group_is_refused(self):
        ctx = self.context(f"FROM {BASE}\n")
        result = run(user_argv(OUTSIDER, self.build_argv(ctx)), check=False, timeout=60)
        assert result.returncode != 0, f"a user outside group kbuild built:\n{result.stdout}{result.stderr}"
        err = result.stderr.strip()
        assert SOCKET in err and "ermission denied" in err, f"not a clear refusal: {err!r}"
        assert len(err.splitlines()) <= 2, f"one clear error, not:\n{err}"
        log(f"  {OUTSIDER}: {err}")

    def check_journal_fields(self):
        """Every build logs its steps with KBUILD_BUILD_ID (the ID in its slice's name),
        KBUILD_CALLER_UID and KBUILD_STEP (the step's name), and one summary entry with
        KBUILD_RESULT=success, KBUILD_DOCKERFILE_DIGEST ("sha256:" and the hex sha256 of the
        Dockerfile), KBUILD_DURATION_USEC and KBUILD_IMAGE (the ID of the image it made)."""
        assert len(self.builds) == 2, f"the builds as root and as a member did not both run: {len(self.builds)}"
        out = run(["journalctl", "--no-pager", "-o", "json"]).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        images = run([KBUILDCTL, "images"]).stdout.splitlines()
        for build in self.builds:
            mine = [e for e in entries if e.get("KBUILD_BUILD_ID") == build.build_id]
            assert mine, f"no journal entry with KBUILD_BUILD_ID={build.build_id}"
            for entry in mine:
                assert entry.get("KBUILD_CALLER_UID") == str(build.uid), \
                    f"KBUILD_CALLER_UID {entry.get('KBUILD_CALLER_UID')!r}, caller {build.uid}: {entry}"
            steps = [e["KBUILD_STEP"] for e in mine if e.get("KBUILD_STEP")]
            assert any("RUN sleep 3" in step for step in steps), f"no KBUILD_STEP names the RUN step: {steps}"
            summaries = [e for e in mine if "KBUILD_RESULT" in e]
            assert len(summaries) == 1, f"{len(summaries)} summary entries of build {build.build_id}: {summaries}"
            summary = summaries[0]
            assert summary["KBUILD_RESULT"] == "success", summary
            digest = "sha256:" + hashlib.sha256(build.dockerfile.encode()).hexdigest()
            assert summary.get("KBUILD_DOCKERFILE_DIGEST") == digest, f"want {digest}: {summary}"
            duration = int(summary.get("KBUILD_DURATION_USEC", "-1"))
            assert 3_000_000 <= duration <= build.seconds * 1_000_000, \
                f"KBUILD_DURATION_USEC {duration}: the build took {build.seconds:.2f}s and slept 3s"
            image = summary.get("KBUILD_IMAGE", "")
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", image), f"KBUILD_IMAGE is not an image ID: {summary}"
            listed = [line.split() for line in images if line.split()[:2] == [build.tag, "latest"]]
            assert listed and listed[0][2] == image[len("sha256:"):][:12], \
                f"KBUILD_IMAGE {image} is not the ID of {build.tag}: {images}"

    def test_reload_turns_on_an_entitlement(self):
        ctx = self.context(f"FROM {BASE}\nRUN --network=host echo host-network\n")
        argv = self.build_argv(ctx, "--no-cache", "--allow", "network.host")
        refused = run(argv, check=False, timeout=120)
        assert refused.returncode != 0, "RUN --network=host built while daemon.json turns network-host off"
        assert "granting entitlement network.host is not allowed by build daemon configuration" in refused.stderr, \
            refused.stderr[-2000:]

        run([KBUILDCTL, "info"])  # kbuildd runs: a reload reaches it, not a start
        pid = show("kbuild.service", "MainPID")["MainPID"]
        write_config({"builder": {"entitlements": {"network-host": True}}})
        run(["systemctl", "reload", "kbuild"])
        assert show("kbuild.service", "MainPID")["MainPID"] == pid, "the reload restarted kbuildd"
        shown = info()["builder.entitlements.network-host"]
        assert shown == f"true (from {CONFIG})", shown
        accepted = run(argv, check=False, timeout=120)
        assert accepted.returncode == 0, f"refused after the reload:\n{accepted.stderr[-2000:]}"
        assert "host-network" in accepted.stderr, accepted.stderr[-2000:]

    def check_legacy_builder(self):
        """features.buildkit: false gives the legacy builder's output, as `DOCKER_BUILDKIT=0
        docker build` prints it."""
        write_config({"features": {"buildkit": False}})
        try:
            run(["systemctl", "reload", "kbuild"])
            ctx = self.context(f"FROM {BASE}\nRUN echo legacy-step\n")
            result = run([KBUILDCTL, "build", "-t", "pkgtest-legacy", ctx], check=False, timeout=120)
            out = result.stdout + result.stderr
            assert result.returncode == 0, f"the legacy build exited {result.returncode}:\n{out[-3000:]}"
            lines = out.splitlines()
            assert f"Step 1/2 : FROM {BASE}" in lines, out[-3000:]
            assert "Step 2/2 : RUN echo legacy-step" in lines, out[-3000:]
            assert "legacy-step" in lines, out[-3000:]
            assert any(re.fullmatch(r"Successfully built [0-9a-f]{12}", line) for line in lines), out[-3000:]
            assert "Successfully tagged pkgtest-legacy:latest" in lines, out[-3000:]
        finally:
            write_config({})
            run(["systemctl", "reload", "kbuild"], check=False)

    def test_idle_exit_and_socket_activation(self):
        os.makedirs(os.path.dirname(DROP_IN), exist_ok=True)
        with open(DROP_IN, "w") as f:
            f.write(f"[Service]\nExecStart=\nExecStart={KBUILDD} --idle-timeout {IDLE_SECONDS}\n")
        try:
            run(["systemctl", "daemon-reload"])
            run(["systemctl", "stop", "kbuild.service"])
            run([KBUILDCTL, "info"])
            first = show("kbuild.service", "ActiveState", "MainPID")
            assert first["ActiveState"] == "active", first
            stopped = wait_for(lambda: show("kbuild.service", "ActiveState")["ActiveState"] == "inactive",
                               IDLE_SECONDS + 10)
            assert stopped, f"kbuildd still runs {IDLE_SECONDS + 10}s after its last call (--idle-timeout {IDLE_SECONDS})"
            state = show("kbuild.service", "Result", "ExecMainStatus")
            assert state == {"Result": "success", "ExecMainStatus": "0"}, state
            assert show("kbuild.socket", "ActiveState")["ActiveState"] == "active", "the socket stopped with kbuildd"
            run([KBUILDCTL, "info"])
            second = show("kbuild.service", "ActiveState", "MainPID")
            assert second["ActiveState"] == "active" and second["MainPID"] != first["MainPID"], (first, second)
        finally:
            os.unlink(DROP_IN)
            run(["systemctl", "daemon-reload"])
            run(["systemctl", "stop", "kbuild.service"], check=False)

    def test_stop_during_a_build_leaves_nothing(self):
        ctx = self.context(f"FROM {BASE}\nRUN sleep 61\n")
        process = subprocess.Popen(self.build_argv(ctx, "--no-cache"), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            running = wait_for(lambda: any(SCOPE.match(u) for u in kbuild_units()) or process.poll() is not None, 20)
            assert running and process.poll() is None, f"no step scope: {process.communicate()[0][-3000:]}"
            assert wait_for(lambda: processes_with("sleep 61"), 10), "no `sleep 61` while the step runs"
            assert store_mounts(), f"no mount of {STATE} seen during the step: the check below would see none"
            run(["systemctl", "stop", "kbuild.service"], timeout=120)
            out, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode != 0, f"the build succeeded although its daemon was stopped:\n{out[-2000:]}"
        assert show("kbuild.service", "ActiveState")["ActiveState"] == "inactive"
        left = wait_for(lambda: not kbuild_units(), 10) or kbuild_units()
        assert left is True, f"units left after the stop: {left}"
        for text in ("sleep 61", KBUILDD, "kbuild-exec"):
            procs = processes_with(text)
            assert not procs, f"processes left after the stop: {procs}"
        assert not store_mounts(["self", "1"]), f"mounts left under {STATE}: {store_mounts(['self', '1'])}"
        assert not store_mounts(), f"mounts of {STATE} left: {store_mounts()}"

    def test_purge_removes_the_package_and_its_state(self):
        assert self.package_files, "the install case did not run"
        purge()

        status = run(["dpkg-query", "-W", "-f=${Status}", "kbuild"], check=False)
        assert status.returncode != 0 or "not-installed" in status.stdout, f"still known to dpkg: {status.stdout}"
        left = [p for p in self.package_files if os.path.lexists(p)]
        assert not left, f"files of the package left after purge: {left}"
        for path in ("/etc/systemd/system/sockets.target.wants/kbuild.socket",
                     "/var/lib/systemd/deb-systemd-helper-enabled/kbuild.socket.dsh-also",
                     "/var/lib/systemd/deb-systemd-helper-enabled/sockets.target.wants/kbuild.socket",
                     STATE, "/run/kbuild"):
            assert not os.path.lexists(path), f"{path} is left after purge"
        for unit in ("kbuild.socket", "kbuild.service"):
            state = show(unit, "LoadState", "ActiveState")
            assert state == {"LoadState": "not-found", "ActiveState": "inactive"}, f"{unit} after purge: {state}"
        # postrm keeps the system group, as Debian keeps system users and groups.
        assert run(["getent", "group", "kbuild"], check=False).returncode == 0, "purge removed group kbuild"

    # -- running ----------------------------------------------------------------------------------

    def run_case(self, case):
        name = case.__name__
        log(f"== {name}")
        started = time.monotonic()
        try:
            case()
            log(f"PASS {name} ({time.monotonic() - started:.1f}s)")
            self.results.append((name, None))
        except Exception as error:  # noqa: BLE001 -- every failure is reported the same way
            log(f"FAIL {name}: {error}")
            if not isinstance(error, AssertionError):
                traceback.print_exc(file=sys.stdout)
            journal = run(["journalctl", "--no-pager", "-n", "30", "-u", "kbuild.service"], check=False).stdout
            log("  kbuild.service's journal (tail):\n" + journal)
            self.results.append((name, str(error)))

    def main(self, pattern):
        cases = [
            self.test_install_enables_the_socket,
            self.test_build_as_root,
            self.test_build_as_member_of_group_kbuild,
            self.test_user_outside_the_group_is_refused,
            self.check_journal_fields,
            self.test_reload_turns_on_an_entitlement,
            self.check_legacy_builder,
            self.test_idle_exit_and_socket_activation,
            self.test_stop_during_a_build_leaves_nothing,
            self.test_purge_removes_the_package_and_its_state,
        ]
        # The install case runs always: every other case needs the package.
        self.run_case(cases[0])
        for case in cases[1:]:
            if pattern is not None and pattern not in case.__name__:
                continue
            if self.results[0][1] is not None:
                log(f"FAIL {case.__name__}: not run, the package did not install")
                self.results.append((case.__name__, "not run"))
                continue
            self.run_case(case)
        failed = [name for name, error in self.results if error is not None]
        log(f"system-package: {len(self.results) - len(failed)} passed, {len(failed)} failed")
        return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deb", required=True, help="the kbuild .deb to install")
    parser.add_argument("-k", dest="pattern", help="run only the cases whose name contains this (and install)")
    args = parser.parse_args()
    if os.geteuid() != 0 or os.environ.get("KBUILD_SYSTEM_TEST") != "1":
        print("test_package.py installs and purges a package: it runs only inside tests/system/nspawn.sh",
              file=sys.stderr)
        return 2
    return PackageTest(args.deb).main(args.pattern)


if __name__ == "__main__":
    sys.exit(main())
