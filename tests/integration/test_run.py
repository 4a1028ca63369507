#!/usr/bin/env python3
"""End-to-end tests of Dockerfile RUN: a real kbuildd on a private socket and store, builds FROM
the busybox base of base_image.py (loaded into the daemon, no network), and what each step did
read back from its progress output or from the exported rootfs. The expected behaviour is
BuildKit's (checked against Docker 20.10's BuildKit where its frontend has the feature). Run as
root:

    python3 tests/integration/test_run.py [--build-dir build] [-k PATTERN]
    python3 tests/integration/test_run.py --buildkit    # the same tests against Docker 20.10's BuildKit

--buildkit checks the tests themselves: a private dockerd stands in for kbuildd, and the tests
for what 20.10's BuildKit lacks (heredocs, RUN --network/--security, limits) or that the tests'
dockerd cannot show (it has no bridge, so its builds use the host's network) are skipped with
the reason.

The network tests send nothing outside the machine but for one: `apt-get update` on the default
network, to the apt mirror this machine's sources name, FROM a Debian base that
debian_image.py makes once with debootstrap (cached in /var/cache/kbuild-tests; the test is
skipped where debootstrap is missing). The others use the host's loopback, or a kbuildd whose
"host" is a pair of network namespaces the test makes (IsolatedHost). They need pasta (Debian's
passt) and slirp4netns. The last result line is `run: N passed, M failed, K skipped` (scripts/test.sh sums it).
Needs gcc with a static libc for the confinement probe (tests that COPY it are skipped
without); everything else is on every machine the project's setup script prepares.
"""
import argparse
import functools
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import base_image  # noqa: E402
import debian_image  # noqa: E402
from daemon_process import terminate, wait_listening  # noqa: E402
from mounts import mount_points_under, unmount_all_under  # noqa: E402

BUILD_DIR = "build"
BASE = "kbuild-busybox"
BUILDKIT_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's default capability set (CAP_CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
# SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
DEFAULT_CAPS = "00000000a80425fb"
# One line of a step's output in plain progress: "#7 0.345 hi".
CACHED_RUN = re.compile(r"#\d+ \[2/2\] RUN echo \S+ > /v.*\n(#\d+ sha256:\w+\n)?#\d+ CACHED")
OUTPUT_LINE = re.compile(r"^#(\d+) (\d+\.\d+) (.*)$")

# A static program for what busybox cannot do: keyctl, init_module, setns, ptrace, and a list of
# the fds left open. Prints NAME=ok or NAME=<errno name>.
PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *result(long rc) {
  if (rc >= 0) return "ok";
  switch (errno) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ESRCH: return "ESRCH";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    default: return strerror(errno);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *what = argv[1];
  long rc;
  if (!strcmp(what, "keyctl")) {
    rc = syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "probe");
  } else if (!strcmp(what, "add_key")) {
    rc = syscall(SYS_add_key, "user", "probe", "x", 1, -2 /* KEY_SPEC_PROCESS_KEYRING */);
  } else if (!strcmp(what, "ptrace") && argc > 2) {
    rc = ptrace(PTRACE_ATTACH, (pid_t)atoi(argv[2]), 0, 0);
  } else if (!strcmp(what, "init_module")) {
    static char image[64];
    rc = syscall(SYS_init_module, image, sizeof image, "");
  } else if (!strcmp(what, "setns") && argc > 2) {
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    rc = fd < 0 ? -1 : setns(fd, 0);
  } else if (!strcmp(what, "unshare-user")) {
    rc = unshare(CLONE_NEWUSER);
  } else if (!strcmp(what, "fds")) {
    int n = 0;
    for (int fd = 3; fd < 65536; fd++)
      if (fcntl(fd, F_GETFD) >= 0) { printf("open fd %d\n", fd); n++; }
    printf("fds=%d\n", n);
    return 0;
  } else {
    return 2;
  }
  printf("%s=%s\n", what, result(rc));
  return 0;
}
"""


def run(cmd, check=True, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                             f"stderr:\n{result.stderr[-6000:]}")
    return result


def kbuildctl_path():
    return os.path.join(BUILD_DIR, "cli/kbuildctl")




def processes_matching(predicate):
    """(pid, cmdline) of every host process for which predicate(pid, cmdline, root) holds."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            root = os.readlink(f"/proc/{name}/root")
        except OSError:
            continue
        if predicate(int(name), cmdline, root):
            found.append((int(name), cmdline))
    return found


def parent_pid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def netns_holders(inode):
    """Host processes that hold the network namespace with this inode: as their own, or through
    an open fd."""
    wanted = f"net:[{inode}]"
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        links = [f"/proc/{pid}/ns/net"]
        try:
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass
        for link in links:
            try:
                if os.readlink(link) == wanted:
                    found.append(link)
            except OSError:
                pass
    return found


# A TCP service answering every connection with an HTTP response whose body is argv[2], on
# address:port argv[1]; prints "ready" once it listens. Run in whatever network namespace.
HTTP_SERVICE = r"""
import socket, sys, threading
host, port = sys.argv[1].rsplit(":", 1)
body = sys.argv[2].encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port)))
s.listen(16)
print(s.getsockname()[1], flush=True)
def serve(c):
    with c:
        c.settimeout(5)
        try:
            c.recv(4096)
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# A DNS server on argv[1]:53 answering every query with one A record, argv[2].
FAKE_RESOLVER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(2048)
    if len(q) < 12:
        continue
    a = q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + q[12:]
    a += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(sys.argv[2])
    s.sendto(a, peer)
"""


# A shell function for steps: `get ADDRESS PORT WORD` prints what HTTP_SERVICE there answers,
# or WORD when nothing does. busybox nc, not wget: Debian's static busybox wget crashes here.
HTTP_GET = ("get() { printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc -w 3 \"$1\" \"$2\" && echo || echo \"$3\"; }")


def start_service(prefix, code, *args):
    """A Python service (above) run under `prefix` (nsenter ...); waits for its first line."""
    process = subprocess.Popen(prefix + [sys.executable, "-c", code] + list(args), stdout=subprocess.PIPE, text=True)
    first = process.stdout.readline().strip()
    if not first:
        process.kill()
        process.wait()
        raise AssertionError(f"service {args} did not start")
    return process, first


def http_get(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


class LoopbackHttp:
    """HTTP_SERVICE on the host's 127.0.0.1, on a free port."""

    def __init__(self, marker):
        self.marker = marker

    def __enter__(self):
        self.process, port = start_service([], HTTP_SERVICE, "127.0.0.1:0", self.marker)
        self.port = int(port)
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


class IsolatedHost:
    """A stand-in for the host and the world, made of two network namespaces of the test's,
    joined by a veth pair: "host" (eth0 10.213.0.2/24, default route via the gateway; a service
    on its 127.0.0.1 and a fake resolver on 127.83.0.1, named by the resolv.conf its daemon
    sees) and "gateway" (10.213.0.1, a service on SERVICE_PORT). A kbuildd run with
    daemon_wrapper() takes "host" for the host: what its steps send never leaves the machine."""

    GATEWAY, HOST = "10.213.0.1", "10.213.0.2"
    LOOPBACK_PORT, SERVICE_PORT = 18181, 18182
    LOOPBACK_MARKER, SERVICE_MARKER = "host-loopback-service", "gateway-service"
    RESOLVER, FAKE_ANSWER = "127.83.0.1", "192.0.2.77"

    def __init__(self, workdir):
        self.workdir = workdir
        self.processes = []

    def _holder(self):
        process = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.processes.append(process)
        path = f"/proc/{process.pid}/ns/net"
        for _ in range(100):
            if os.readlink(path) != os.readlink("/proc/self/ns/net"):
                return process.pid
            time.sleep(0.02)
        raise AssertionError("unshare --net did not make a namespace")

    def enter(self, pid):
        return ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]

    def __enter__(self):
        try:
            self.host, self.gateway = self._holder(), self._holder()
            run(["ip", "link", "add", "eth0", "netns", str(self.host), "type", "veth",
                 "peer", "name", "eth0", "netns", str(self.gateway)])
            for pid, address in ((self.host, self.HOST), (self.gateway, self.GATEWAY)):
                for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "address", "add", address + "/24", "dev", "eth0"],
                            ["ip", "link", "set", "eth0", "up"]):
                    run(self.enter(pid) + cmd)
            run(self.enter(self.host) + ["ip", "route", "add", "default", "via", self.GATEWAY])
            for prefix, code, args in (
                    (self.enter(self.host), HTTP_SERVICE, (f"127.0.0.1:{self.LOOPBACK_PORT}", self.LOOPBACK_MARKER)),
                    (self.enter(self.gateway), HTTP_SERVICE, (f"{self.GATEWAY}:{self.SERVICE_PORT}", self.SERVICE_MARKER)),
                    (self.enter(self.host), FAKE_RESOLVER, (self.RESOLVER, self.FAKE_ANSWER))):
                self.processes.append(start_service(prefix, code, *args)[0])
            self.resolv_conf = os.path.join(self.workdir, "isolated-resolv.conf")
            write(self.resolv_conf, f"search kbuild.test\nnameserver {self.RESOLVER}\n")
        except BaseException:
            self.__exit__()
            raise
        return self

    def daemon_wrapper(self):
        """Runs a command in "host", in a mount namespace where /etc/resolv.conf is ours."""
        return self.enter(self.host) + ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                        'mount --bind "$0" /etc/resolv.conf && exec "$@"', self.resolv_conf]

    def __exit__(self, *exc):
        for process in reversed(self.processes):
            process.kill()
            process.wait()
        self.processes = []


def kbuild_cgroups():
    """Every cgroup directory whose name starts with "kbuild" under /sys/fs/cgroup (v2, or each
    v1 hierarchy), down to a depth of 6."""
    found = set()
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        depth = top.count("/") - "/sys/fs/cgroup".count("/")
        found.update(os.path.join(top, d) for d in dirs if d.startswith("kbuild"))
        if depth >= 6:
            dirs[:] = []
    return found


class Daemon:
    """kbuildd on a socket and store of its own (with a daemon.json of its own), stopped with
    SIGTERM."""

    def __init__(self, workdir, config=None, args=(), wrapper=(), env=None):
        """`args` go to kbuildd; `wrapper` is a command that runs it (nsenter ... --); `env`
        is added to its environment."""
        os.makedirs(workdir, exist_ok=True)
        self.args, self.wrapper, self.env = list(args), list(wrapper), env
        self.workdir = workdir
        self.socket = os.path.join(workdir, "kbuild.sock")
        self.root = os.path.join(workdir, "root")
        self.config = os.path.join(workdir, "daemon.json")
        with open(self.config, "w") as f:
            json.dump(config or {}, f)
        self.process = None
        self.cgroups_at_start = kbuild_cgroups()
        self.cgroup_parents = set()
        self.idle_cgroups = set()
        self.start()

    def start(self):
        kbuildd = os.path.join(BUILD_DIR, "service/kbuildd")
        argv = [kbuildd, "--listen", self.socket, "--root", self.root, "--config", self.config]
        helper = os.path.join(BUILD_DIR, "engine/kbuild-exec")
        if os.access(helper, os.X_OK) and "--exec-helper" in run([kbuildd, "--help"], check=False).stdout:
            argv += ["--exec-helper", helper]
        argv = self.wrapper + argv + self.args
        self.log = open(os.path.join(self.workdir, "kbuildd.log"), "a")
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env=dict(os.environ, **self.env) if self.env else None)
        if not wait_listening(self.process, self.socket, 10):
            raise AssertionError(f"kbuildd did not listen on {self.socket}:\n{self.log_tail()}")

    def log_tail(self):
        with open(os.path.join(self.workdir, "kbuildd.log"), errors="replace") as f:
            return "".join(f.readlines()[-30:])

    def log_text(self):
        """All kbuildd wrote to stdout and stderr so far."""
        with open(os.path.join(self.workdir, "kbuildd.log"), errors="replace") as f:
            return f.read()

    def stop(self):
        if self.process is not None:
            terminate(self.process)
        self.log.close()

    def client(self, *args, check=True, **kwargs):
        return run([kbuildctl_path(), "--host", "unix://" + self.socket] + list(args), check=check, **kwargs)

    def popen_build(self, ctx, *args):
        """A build in the background, its plain progress readable from .stderr."""
        return subprocess.Popen([kbuildctl_path(), "--host", "unix://" + self.socket, "build", "--progress", "plain"]
                                + list(args) + ["."], cwd=ctx, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    # Directories of the store that hold only what a build in progress uses (step mounts,
    # temp files): what is there when the daemon is idle stays. contexts/ is not one: it keeps
    # the last materialization of each context directory on purpose, so that the next build
    # links unchanged files from it instead of reading them again.
    TEMP_DIRS = ("tmp", "mounts", "sandbox")

    def temp_entries(self):
        entries = set()
        for top, dirs, files in os.walk(self.root):
            rel = os.path.relpath(top, self.root)
            if rel == ".":
                dirs[:] = [d for d in dirs if d in self.TEMP_DIRS or d not in ("blobs", "snapshots", "cache", "contexts")]
                entries.update(n for n in files if n.startswith("tmp-") or n.startswith(".tmp"))
                continue
            if rel.split("/")[0] in self.TEMP_DIRS:
                entries.update(os.path.join(rel, n) for n in dirs + files)
            else:
                entries.update(os.path.join(rel, n) for n in dirs + files
                               if n.startswith("tmp-") or n.startswith(".tmp"))
                if rel.count("/") >= 2:
                    dirs[:] = []
        return entries

    def mark_idle(self, base_tag, network=None):
        """Runs one RUN step, then remembers the store's temp dirs as they are with no build
        running (what the daemon keeps between builds, made at its first step)."""
        ctx = os.path.join(self.workdir, "warm-up")
        flag = f"--network={network} " if network else ""
        write(os.path.join(ctx, "Dockerfile"), f"FROM {base_tag}\nRUN {flag}true\n")
        self.client("build", ".", cwd=ctx)
        self.idle_entries = self.temp_entries()
        # This daemon's cgroup parents: the top-most kbuild* dirs that its first step made (other
        # daemons on the machine, a developer's say, have their own); without any (a parent
        # shared with a daemon started earlier), every dir named kbuild.
        new = kbuild_cgroups() - self.cgroups_at_start
        self.cgroup_parents = {d for d in new if os.path.dirname(d) not in new}
        if not self.cgroup_parents:
            self.cgroup_parents = {d for d in kbuild_cgroups() if os.path.basename(d) == "kbuild"}
        self.idle_cgroups = self.own_cgroups()

    def own_cgroups(self):
        """The kbuild-* cgroups under this daemon's parents: its builds' and steps'."""
        return {c for c in kbuild_cgroups() if os.path.basename(c).startswith("kbuild-")
                and any(c.startswith(p + "/") for p in self.cgroup_parents)}

    def leftovers(self, markers=()):
        """What a finished build must not leave: mounts under the root, step processes (those
        living in a root under the daemon's, or whose command line has a marker), entries in the
        root's temp dirs that were not there when the daemon was idle. Empty when clean."""
        found = [f"mount {p}" for p in mount_points_under(self.root)]
        found += [f"process {pid}: {cmd}" for pid, cmd in processes_matching(
            lambda pid, cmd, root: root.startswith(self.root + "/") or any(m in cmd for m in markers))]
        found += [f"temp entry {self.root}/{e}" for e in sorted(self.temp_entries() - getattr(self, "idle_entries", set()))]
        found += [f"network stack {pid}: {cmd}" for pid, cmd in self.network_stacks()]
        return found

    def network_stacks(self):
        """(pid, cmdline) of the user-mode network stacks (pasta, slirp4netns) this daemon runs."""
        if self.process is None or self.process.poll() is not None:
            return []
        return processes_matching(lambda pid, cmd, root: parent_pid(pid) == self.process.pid
                                  and os.path.basename(cmd.split(" ")[0]) in ("pasta", "slirp4netns"))

    def wait_clean(self, markers=(), timeout=15, before=frozenset()):
        """Waits until nothing but `before` (what an earlier test left) is left; returns the rest."""
        deadline = time.monotonic() + timeout
        while True:
            found = [item for item in self.leftovers(markers) if item not in before]
            found += [f"cgroup {c}" for c in sorted(self.own_cgroups() - self.idle_cgroups)]
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.25)


class Dockerd(Daemon):
    """--buildkit: Docker 20.10's dockerd in kbuildd's place, to check the expectations
    themselves. `client` maps the kbuildctl calls these tests make onto `docker`; the limits and
    entitlement flags, which `docker build` lacks or BuildKit ignores, are dropped (the tests
    that need them are skipped in this mode)."""

    DROPPED = {"--allow", "--memory", "--pids-limit", "--cpus"}

    def start(self):
        self.data = self.root = os.path.join(self.workdir, "data")
        self.log = open(os.path.join(self.workdir, "kbuildd.log"), "a")
        self.process = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", "--data-root", self.data,
             "--exec-root", os.path.join(self.workdir, "exec"), "-H", "unix://" + self.socket,
             "--pidfile", os.path.join(self.workdir, "dockerd.pid")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            if self.client("version", check=False).returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"dockerd did not start:\n{self.log_tail()}")

    def client_env(self):
        env = dict(os.environ, DOCKER_BUILDKIT="1", DOCKER_CONFIG=os.path.join(self.workdir, "client-config"))
        for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            env.pop(name, None)
        return env

    def popen_build(self, ctx, *args):
        return subprocess.Popen(["/usr/bin/docker", "-H", "unix://" + self.socket, "build", "--network", "host",
                                 "--progress", "plain"] + list(args) + ["."], cwd=ctx, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=self.client_env())

    def client(self, *args, check=True, **kwargs):
        args = list(args)
        if args[:1] == ["build"]:
            kept, i = ["build", "--network", "host"], 1
            while i < len(args):
                if args[i] in self.DROPPED:
                    i += 2
                    continue
                kept.append(args[i])
                i += 1
            args = kept
        env = self.client_env()
        return run(["/usr/bin/docker", "-H", "unix://" + self.socket] + args, check=check, env=env, **kwargs)

    def own_cgroups(self):
        return set()  # dockerd's are not kbuild-*

    def leftovers(self, markers=()):
        return [f"process {pid}: {cmd}" for pid, cmd in processes_matching(
            lambda pid, cmd, root: any(m in cmd for m in markers))]


# Set by --buildkit: the tests run against Docker 20.10's BuildKit instead of kbuild.
AGAINST_BUILDKIT = False


def kbuild_only(reason):
    """Skips a test in --buildkit mode, for `reason` (what 20.10's BuildKit lacks)."""
    def wrap(test):
        @functools.wraps(test)
        def run_test(self):
            if AGAINST_BUILDKIT:
                self.skipTest(f"--buildkit: {reason}")
            return test(self)
        return run_test
    return wrap


def write(path, content, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)


def add_member(tar, name, kind, data=b"", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    info.mtime = base_image.MTIME
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def add_link(tar, name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mtime = base_image.MTIME
    tar.addfile(info)


class Rootfs:
    """An exported rootfs tar (--output type=tar), read by member name without a leading /."""

    def __init__(self, path):
        self.members, self.data = {}, {}
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                name = m.name.lstrip("./").rstrip("/") if m.name not in (".", "./") else ""
                self.members[name] = m
                if m.isfile():
                    self.data[name] = tar.extractfile(m).read()

    def __contains__(self, name):
        return name in self.members

    def text(self, name):
        if name not in self.data:
            raise AssertionError(f"/{name} is not a regular file in the image "
                                 f"(have: {sorted(self.members)[:40]})")
        return self.data[name].decode()

    def under(self, prefix):
        return sorted(n for n in self.members if n.startswith(prefix.rstrip("/") + "/"))


def step_output(stderr):
    """The text lines the steps printed, from plain progress."""
    return [m.group(3) for m in map(OUTPUT_LINE.match, stderr.splitlines()) if m]


def interfaces(proc_net_dev_lines):
    """Interface names from /proc/net/dev's lines (header lines skipped)."""
    names = []
    for line in proc_net_dev_lines:
        if ":" in line and "|" not in line:
            names.append(line.split(":")[0].strip())
    return sorted(names)


def full_capability_set():
    """Every capability root has here (the daemon's own set): what an insecure step gets. A
    container may run root without some of the kernel's capabilities."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    with open("/proc/self/status") as f:
        permitted = next(int(line.split()[1], 16) for line in f if line.startswith("CapPrm:"))
    return f"{permitted & ((1 << (last + 1)) - 1):016x}"


class RunTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-run-")
        os.chmod(cls.workdir, 0o755)
        cls.base_archive = os.path.join(cls.workdir, "base.tar")
        base_image.write_base_image(cls.base_archive, BASE)
        cls.daemon = (Dockerd if AGAINST_BUILDKIT else Daemon)(os.path.join(cls.workdir, "daemon"))
        cls.extra_daemons = []
        cls.daemon.client("load", "-i", cls.base_archive)
        cls.daemon.mark_idle(BASE)
        cls.probe = None
        cls.probe_error = "gcc is not installed"
        if shutil.which("gcc"):
            source = os.path.join(cls.workdir, "probe.c")
            write(source, PROBE_C)
            built = run(["gcc", "-static", "-O2", "-o", os.path.join(cls.workdir, "probe"), source], check=False)
            if built.returncode == 0:
                cls.probe = os.path.join(cls.workdir, "probe")
            else:
                cls.probe_error = "gcc -static failed (no static libc?): " + built.stderr[-300:]

    @classmethod
    def tearDownClass(cls):
        for daemon in [getattr(cls, "daemon", None)] + getattr(cls, "extra_daemons", []):
            if daemon is not None:
                daemon.stop()
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        # What an earlier test left is that test's failure, not this one's.
        self.left_before = set(self.daemon.leftovers())

    def tearDown(self):
        # After every build, pass or fail: no mount, step process or temp file is left.
        if AGAINST_BUILDKIT:
            return
        deadline = time.monotonic() + 10
        while True:
            left = sorted(set(self.daemon.leftovers()) - self.left_before)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        self.assertEqual(left, [], "left behind after the test's builds")

    # -- helpers --------------------------------------------------------------------------------

    def context(self, dockerfile, files=None, name=None):
        path = os.path.join(self.workdir, "contexts", name or self.id().rsplit(".", 1)[-1])
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        os.chmod(path, 0o755)
        write(os.path.join(path, "Dockerfile"), dockerfile)
        for rel, content in (files or {}).items():
            write(os.path.join(path, rel), content)
        return path

    def build(self, ctx, *args, check=True, daemon=None, timeout=300):
        return (daemon or self.daemon).client("build", "--progress", "plain", *args, ".", cwd=ctx, check=check,
                                              timeout=timeout)

    def rootfs(self, ctx, *args, daemon=None):
        """Builds and returns (the exported Rootfs, the build's result)."""
        out = os.path.join(self.workdir, "rootfs-" + uuid.uuid4().hex[:8] + ".tar")
        result = self.build(ctx, "-o", f"type=tar,dest={out}", *args, daemon=daemon)
        try:
            return Rootfs(out), result
        finally:
            os.unlink(out)

    def outputs(self, dockerfile, *args, files=None, daemon=None):
        """Builds (without cache) and returns what the RUN steps printed."""
        ctx = self.context(dockerfile, files)
        return step_output(self.build(ctx, "--no-cache", *args, daemon=daemon).stderr)

    def with_probe(self, body, *args, daemon=None):
        """Runs `body` (RUN lines) in an image with /probe; returns the steps' output."""
        if self.probe is None:
            self.skipTest(self.probe_error)
        with open(self.probe, "rb") as f:
            probe = f.read()
        ctx = self.context(f"FROM {BASE}\nCOPY probe /probe\n{body}\n", {})
        write(os.path.join(ctx, "probe"), probe, 0o755)
        return step_output(self.build(ctx, "--no-cache", *args, daemon=daemon).stderr)

    def failing(self, ctx, *args, daemon=None):
        result = self.build(ctx, *args, check=False, daemon=daemon)
        self.assertNotEqual(result.returncode, 0, result.stderr[-3000:])
        return result

    def image_id(self, ctx, *args):
        iid = os.path.join(self.workdir, "iid-" + uuid.uuid4().hex[:8])
        result = self.build(ctx, "--iidfile", iid, *args)
        with open(iid) as f:
            return f.read().strip(), result

    def second_daemon(self, name, config, args=(), wrapper=(), network=None):
        """Another daemon; `network` is the --network of its warm-up step (None: the default)."""
        if AGAINST_BUILDKIT:
            daemon = Dockerd(os.path.join(self.workdir, name), config)
        else:
            daemon = Daemon(os.path.join(self.workdir, name), config, args=args, wrapper=wrapper)
        type(self).extra_daemons.append(daemon)
        daemon.client("load", "-i", self.base_archive)
        daemon.mark_idle(BASE, network)
        return daemon

    # -- RUN forms ------------------------------------------------------------------------------

    def test_shell_form_writes_a_file_into_the_image(self):
        fs, _ = self.rootfs(self.context(f"FROM {BASE}\nRUN echo hi > /f\n"))
        self.assertEqual(fs.text("f"), "hi\n")
        self.assertEqual((fs.members["f"].uid, fs.members["f"].mode & 0o7777), (0, 0o644))

    def test_exec_form_passes_arguments_without_a_shell(self):
        fs, _ = self.rootfs(self.context(
            f'FROM {BASE}\nRUN ["/bin/sh","-c","echo $0 > /zero","x"]\nRUN ["/bin/echo","$HOME"]\n'))
        self.assertEqual(fs.text("zero"), "x\n")
        out = self.outputs(f'FROM {BASE}\nRUN ["/bin/echo","$HOME", "a  b"]\n')
        self.assertIn("$HOME a  b", out)

    def test_shell_instruction_changes_the_shell_of_later_runs(self):
        fs, _ = self.rootfs(self.context(
            f'FROM {BASE}\nRUN echo "[$X_SHELL]" > /before\n'
            f'SHELL ["/usr/bin/env", "X_SHELL=changed", "/bin/sh", "-c"]\nRUN echo "[$X_SHELL]" > /after\n'))
        self.assertEqual(fs.text("before"), "[]\n")
        self.assertEqual(fs.text("after"), "[changed]\n")

    @kbuild_only("20.10's frontend has no heredocs")
    def test_heredoc_runs_its_lines_as_one_script(self):
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE}\nRUN <<EOF\necho one > /h\necho two >> /h\nEOF\n"))
        self.assertEqual(fs.text("h"), "one\ntwo\n")

    @kbuild_only("20.10's frontend has no heredocs")
    def test_heredoc_with_a_shebang_runs_with_its_interpreter(self):
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE}\nRUN <<EOF\n#!/bin/sh -e\necho script > /s\nls /proc/self/ > /dev/null\n"
            f"echo \"$(cat /s) done\" > /s2\nEOF\n"))
        self.assertEqual(fs.text("s"), "script\n")
        self.assertEqual(fs.text("s2"), "script done\n")

    def test_env_and_arg_are_in_the_environment_only_where_declared(self):
        fs, _ = self.rootfs(self.context(
            "ARG GLOBAL=g\n"
            f"FROM {BASE}\nRUN echo \"[$GLOBAL] [$LOCAL] [$E]\" > /before\n"
            "ARG LOCAL=l\nENV E=e\nRUN echo \"[$GLOBAL] [$LOCAL] [$E]\" > /after\n"
            "ARG GLOBAL\nRUN echo \"[$GLOBAL] [$FROMCLI]\" > /redeclared && env | sort > /env\n"),
            "--build-arg", "FROMCLI=never-declared", "--build-arg", "LOCAL=from-cli")
        self.assertEqual(fs.text("before"), "[] [] []\n")
        self.assertEqual(fs.text("after"), "[] [from-cli] [e]\n")
        self.assertEqual(fs.text("redeclared"), "[g] []\n")
        env = fs.text("env").splitlines()
        self.assertIn(f"PATH={BUILDKIT_DEFAULT_PATH}", env)
        self.assertIn("HOME=/root", env)
        self.assertNotIn("FROMCLI=never-declared", env)

    def test_workdir_is_created_and_is_the_cwd(self):
        fs, _ = self.rootfs(self.context(f"FROM {BASE}\nWORKDIR /a/b/c\nRUN pwd > /pwd && touch rel\n"))
        self.assertEqual(fs.text("pwd"), "/a/b/c\n")
        self.assertTrue(fs.members["a/b/c"].isdir())
        self.assertIn("a/b/c/rel", fs)

    def test_user_by_name_gets_its_uid_gid_and_home(self):
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE}\nUSER builder\nRUN id -u > /tmp/u && id -g > /tmp/g && echo $HOME > /tmp/home "
            "&& touch /tmp/mine && grep CapEff /proc/self/status > /tmp/caps\n"))
        self.assertEqual(fs.text("tmp/u"), "1000\n")
        self.assertEqual(fs.text("tmp/g"), "1000\n")
        self.assertEqual(fs.text("tmp/home"), "/home/builder\n")
        self.assertEqual((fs.members["tmp/mine"].uid, fs.members["tmp/mine"].gid), (1000, 1000))
        self.assertEqual(fs.text("tmp/caps").split(), ["CapEff:", "0000000000000000"])

    def test_numeric_user_and_group(self):
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE}\nUSER 1000:1000\nRUN id > /tmp/id && echo $HOME > /tmp/home\n"
            "USER 4321:4322\nRUN id -u > /tmp/u2 && id -g > /tmp/g2 && echo $HOME > /tmp/home2\n"))
        self.assertEqual(fs.text("tmp/id"), "uid=1000(builder) gid=1000(builder)\n")
        self.assertEqual(fs.text("tmp/home"), "/home/builder\n")
        self.assertEqual((fs.text("tmp/u2"), fs.text("tmp/g2"), fs.text("tmp/home2")), ("4321\n", "4322\n", "/\n"))

    def test_default_path_when_the_image_has_none(self):
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE} AS b\nFROM scratch\nCOPY --from=b / /\nRUN echo \"$PATH\" > /path\n"))
        self.assertEqual(fs.text("path"), BUILDKIT_DEFAULT_PATH + "\n")

    # -- what a step leaves in the image ---------------------------------------------------------

    def test_removed_file_and_replaced_dir_are_whiteouts(self):
        ctx = self.context(f"FROM {BASE}\nRUN rm /etc/group && rm -r /home && mkdir -p /home/other\n")
        fs, _ = self.rootfs(ctx)
        self.assertNotIn("etc/group", fs)
        self.assertIn("etc/passwd", fs)
        self.assertEqual(fs.under("home"), ["home/other"])
        archive = os.path.join(self.workdir, "whiteouts.tar")
        self.build(ctx, "-t", "it-run-whiteouts")
        self.daemon.client("save", "-o", archive, "it-run-whiteouts")
        with tarfile.open(archive) as t:
            manifest = json.load(t.extractfile("manifest.json"))[0]
            last = t.extractfile(manifest["Layers"][-1]).read()
        import gzip
        if last[:2] == b"\x1f\x8b":
            last = gzip.decompress(last)
        with tarfile.open(fileobj=io.BytesIO(last)) as layer:
            names = {m.name.lstrip("./").rstrip("/") for m in layer.getmembers()}
        self.assertIn("etc/.wh.group", names)
        self.assertIn("home/.wh..wh..opq", names)
        self.assertNotIn("home/builder", names)

    # -- output ---------------------------------------------------------------------------------

    def test_plain_progress_shows_stdout_and_stderr_with_timestamps(self):
        result = self.build(self.context(f"FROM {BASE}\nRUN echo hi && echo oops >&2\n"))
        lines = result.stderr.splitlines()
        self.assertTrue(any(re.fullmatch(r"#\d+ \d+\.\d{3} hi", line) for line in lines), result.stderr)
        self.assertTrue(any(re.fullmatch(r"#\d+ \d+\.\d{3} oops", line) for line in lines), result.stderr)

    @kbuild_only('20.10 words it `executor failed running [/bin/sh -c exit 3]: exit code: 3`; newer BuildKit as checked here')
    def test_failing_step_names_the_process_and_exit_code(self):
        result = self.failing(self.context(f"FROM {BASE}\nRUN true\n\nRUN exit 3\n"), "-t", "it-run-fails")
        self.assertIn('process "/bin/sh -c exit 3" did not complete successfully: exit code: 3', result.stderr)
        self.assertIn(">>> RUN exit 3", result.stderr)
        self.assertRegex(result.stderr, r"ERROR: (failed to build: )?failed to solve: process \"/bin/sh -c exit 3\"")
        self.assertNotIn("it-run-fails", self.daemon.client("images").stdout)

    @kbuild_only("kbuildd's own log of builds")
    def test_each_build_leaves_a_summary_line_in_the_log_and_no_secret_does(self):
        if os.path.exists("/run/systemd/journal/socket"):
            self.skipTest("a journal runs here: kbuildd logs builds there, not on stderr")
        secret = "it-run-secret-" + uuid.uuid4().hex[:12]
        env = dict(os.environ, IT_TOKEN=secret)
        summary = re.compile(r"^kbuildd: build ([0-9a-f]{12}) by uid 0: (success|failure) in \d+\.\d\ds(.*)$", re.M)
        # The Dockerfile names the value too: the step's name is logged, the value taken out.
        ctx = self.context(f'FROM {BASE}\nRUN --mount=type=secret,id=tok,env=TOK test "$TOK" = "{secret}"\n')
        iid = os.path.join(self.workdir, "iid-" + uuid.uuid4().hex[:8])
        self.daemon.client("build", "--progress", "plain", "--no-cache", "--secret", "id=tok,env=IT_TOKEN",
                           "--iidfile", iid, ".", cwd=ctx, env=env)
        with open(iid) as f:
            image = f.read().strip()
        failing = self.context(f"FROM {BASE}\nRUN --mount=type=secret,id=tok,env=TOK echo \"$TOK\" >&2; exit 4\n",
                               name="summary-failing")
        result = self.daemon.client("build", "--progress", "plain", "--no-cache", "--secret", "id=tok,env=IT_TOKEN",
                                    ".", cwd=failing, env=env, check=False)
        self.assertNotEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn(secret, result.stderr, "the failing step's output is the client's to see")

        log = self.daemon.log_text()
        found = {m.group(2): m for m in summary.finditer(log)}
        self.assertIn("success", found, log[-3000:])
        self.assertTrue(found["success"].group(3).startswith(f", image {image}"), found["success"].group(0))
        self.assertIn("failure", found, log[-3000:])
        self.assertIn("exit code: 4", found["failure"].group(3))
        build_id = found["success"].group(1)
        self.assertRegex(log, rf"kbuildd: build {build_id} step started: \[2/2\] RUN --mount=type=secret,id=tok,"
                              rf"env=TOK test .*\*\*\*\*")
        self.assertNotIn(secret, log, "kbuildd's log")

    @kbuild_only("20.10's client spins after the clipped log (checked by hand: the same marker after 11 s)")
    def test_log_is_clipped_at_two_mebibytes_per_step(self):
        # BuildKit also limits the rate (200 KiB/s since the step started): after 11 s the size
        # limit (2 MiB) is the lower one, which is the one this test is about.
        line = "0123456789" * 9 + "abcdefghi"
        result = self.build(self.context(
            f"FROM {BASE}\nRUN sleep 11; yes {line} | head -c 3000000; echo after-the-limit >&2\n"))
        out = step_output(result.stderr)
        self.assertIn("[output clipped, log limit 2MiB reached]", out)
        printed = sum(len(text) + 1 for text in out if text == line)
        self.assertLess(printed, 2 * 1024 * 1024 + 1)
        self.assertGreater(printed, 2 * 1024 * 1024 - 1000)

    # -- cache ----------------------------------------------------------------------------------

    # The RUN's vertex, then (Docker 20.10: after a digest line) CACHED. 20.10 names the vertex
    # with $V expanded.
    def test_identical_build_is_cached_and_a_used_arg_busts_it(self):
        ctx = self.context(f"FROM {BASE}\nARG V=1\nRUN echo $V > /v && date +%s%N > /stamp\n")
        first, _ = self.image_id(ctx)
        second, result = self.image_id(ctx)
        self.assertEqual(first, second)
        self.assertRegex(result.stderr, CACHED_RUN)
        third, result = self.image_id(ctx, "--build-arg", "V=2")
        self.assertNotEqual(first, third)
        self.assertNotRegex(result.stderr, CACHED_RUN)
        fs, _ = self.rootfs(ctx, "--build-arg", "V=2")
        self.assertEqual(fs.text("v"), "2\n")

    # -- network --------------------------------------------------------------------------------

    @kbuild_only("20.10's frontend has no RUN --network")
    def test_network_none_has_only_loopback(self):
        out = self.outputs(f"FROM {BASE}\nRUN --network=none cat /proc/net/dev\n")
        self.assertEqual(interfaces(out), ["lo"])

    @kbuild_only("the tests' dockerd has no bridge: its builds run with --network host")
    def test_default_network_has_only_loopback_and_the_stacks_interface(self):
        out = self.outputs(f"FROM {BASE}\nRUN cat /proc/net/dev; echo mac=$(cat /sys/class/net/eth0/address)\n")
        self.assertEqual(interfaces([line for line in out if not line.startswith("mac=")]), ["eth0", "lo"])
        # The step's eth0 is the stack's tap device, not the host's interface of that name.
        host_macs = set()
        for name in os.listdir("/sys/class/net"):
            with open(f"/sys/class/net/{name}/address") as f:
                host_macs.add(f.read().strip())
        macs = [line[4:] for line in out if re.fullmatch(r"mac=[0-9a-f]{2}(:[0-9a-f]{2}){5}", line)]
        self.assertEqual(len(macs), 1, out)
        self.assertNotIn(macs[0], host_macs - {"00:00:00:00:00:00"})

    @kbuild_only("the tests' dockerd has no bridge: its builds run with --network host")
    def test_default_network_cannot_reach_the_hosts_loopback(self):
        with LoopbackHttp("host-loopback-service") as service:
            self.assertEqual(http_get(f"http://127.0.0.1:{service.port}/"), "host-loopback-service")
            out = self.outputs(f"FROM {BASE}\nRUN {HTTP_GET}; get 127.0.0.1 {service.port} unreachable\n")
        self.assertIn("unreachable", out)
        self.assertNotIn("host-loopback-service", "\n".join(out))

    @kbuild_only("the tests' dockerd has no bridge: its builds run with --network host")
    def test_steps_of_a_build_share_its_namespace_and_builds_do_not(self):
        ctx = self.context(f"FROM {BASE}\nRUN readlink /proc/self/ns/net > /ns1\n"
                           "RUN readlink /proc/self/ns/net > /ns2\n"
                           f"FROM {BASE} AS other\nRUN readlink /proc/self/ns/net > /ns3\n"
                           "FROM scratch\nCOPY --from=0 /ns1 /ns2 /\nCOPY --from=other /ns3 /\n")
        first, _ = self.rootfs(ctx, "--no-cache")
        second, _ = self.rootfs(ctx, "--no-cache")
        namespaces = {first.text(n) for n in ("ns1", "ns2", "ns3")}
        self.assertEqual(len(namespaces), 1, "the steps of one build ran in different namespaces")
        self.assertRegex(first.text("ns1"), r"^net:\[\d+\]\n$")
        self.assertNotEqual(first.text("ns1"), second.text("ns1"))
        self.assertNotEqual(first.text("ns1").strip(), os.readlink("/proc/self/ns/net"))

    @kbuild_only("checks kbuild's processes")
    def test_nothing_of_the_network_is_left_after_a_build(self):
        for name, tail in (("net-ok", "true"), ("net-fails", "exit 1")):
            ctx = self.context(f"FROM {BASE}\nRUN readlink /proc/self/ns/net; {tail}\n", name=name)
            result = self.build(ctx, "--no-cache", check=False)
            inode = re.search(r"net:\[(\d+)\]", result.stderr).group(1)
            self.assertEqual(self.daemon.network_stacks(), [])
            deadline = time.monotonic() + 10
            while netns_holders(inode) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(netns_holders(inode), [], f"{name}: namespace net:[{inode}] is still held")
        # Canceled: the client killed while a step runs.
        ctx = self.context(f"FROM {BASE}\nRUN readlink /proc/self/ns/net; echo started; sleep 3033\n", name="net-cancel")
        client = self.daemon.popen_build(ctx, "--no-cache")
        inode = None
        try:
            for line in client.stderr:
                found = re.search(r"net:\[(\d+)\]", line)
                inode = inode or (found and found.group(1))
                if OUTPUT_LINE.match(line) and line.rstrip().endswith(" started"):
                    break
            self.assertTrue(self.daemon.network_stacks(), "no network stack runs during the step")
        finally:
            client.kill()
            client.wait()
        self.assertIsNotNone(inode)
        self.assertEqual(self.daemon.wait_clean(("sleep 3033",), before=self.left_before), [])
        self.assertEqual(netns_holders(inode), [])

    @kbuild_only("20.10's frontend has no RUN --network")
    def test_default_network_without_a_stack_fails_naming_the_package(self):
        daemon = self.second_daemon("no-stack", {}, args=["--pasta", "/nonexistent/pasta", "--slirp4netns", ""],
                                    network="none")
        result = self.failing(self.context(f"FROM {BASE}\nRUN echo must-not-run\n"), daemon=daemon)
        self.assertIn("RUN --network=default needs pasta (Debian package passt) or slirp4netns", result.stderr)
        self.assertNotIn("must-not-run", step_output(result.stderr))
        # --network=none needs no stack.
        out = step_output(self.build(self.context(f"FROM {BASE}\nRUN --network=none echo ran\n", name="none-ok"),
                                     daemon=daemon).stderr)
        self.assertIn("ran", out)

    def check_isolated_stack(self, stack, args):
        """A kbuildd whose host is a network namespace of the test's (see IsolatedHost): its
        steps reach the gateway's service and resolve names through the stack's forwarder, and
        reach nothing on the host's loopback, not even through the gateway's address."""
        with IsolatedHost(self.workdir) as host:
            daemon = self.second_daemon(f"isolated-{stack}", {}, args=args, wrapper=host.daemon_wrapper(),
                                        network="none")
            out = self.outputs(
                f"FROM {BASE}\nRUN cat /etc/resolv.conf; nslookup probe.kbuild.test 2>&1 | grep -E '^Address' ; "
                f"{HTTP_GET}; get 127.0.0.1 {host.LOOPBACK_PORT} loopback-unreachable; "
                "gw=$(ip route | awk '/^default/ {print $3}'); echo gw=$gw; "
                f"get $gw {host.LOOPBACK_PORT} gateway-port-unreachable; "
                f"get {host.GATEWAY} {host.SERVICE_PORT} service-unreachable\n",
                daemon=daemon)
            self.assertEqual([p for p, cmd in daemon.network_stacks()], [])
            daemon.stop()
        forwarder = {"pasta": "169.254.1.1", "slirp4netns": "10.0.2.3"}[stack]
        self.assertIn(f"nameserver {forwarder}", out)
        self.assertIn("search kbuild.test", out)
        self.assertTrue(any(host.FAKE_ANSWER in line for line in out if line.startswith("Address")), out)
        # Substrings: a reply without a final newline shares its line with what comes next.
        text = "\n".join(out)
        self.assertNotIn(host.LOOPBACK_MARKER, text)
        self.assertIn("loopback-unreachable", text)
        self.assertIn("gateway-port-unreachable", text)
        self.assertIn(host.SERVICE_MARKER, text)

    @kbuild_only("runs kbuildd in a network namespace of the test's")
    def test_pasta_reaches_out_but_not_the_hosts_loopback(self):
        if shutil.which("pasta") is None:
            self.skipTest("pasta is not installed (apt-get install passt)")
        self.check_isolated_stack("pasta", [])

    @kbuild_only("runs kbuildd in a network namespace of the test's")
    def test_slirp4netns_reaches_out_but_not_the_hosts_loopback(self):
        if shutil.which("slirp4netns") is None:
            self.skipTest("slirp4netns is not installed")
        self.check_isolated_stack("slirp4netns", ["--pasta", ""])

    def test_apt_get_update_works_on_the_default_network(self):
        # The one test that leaves the machine: to the apt mirror this machine's sources name.
        try:
            archive = debian_image.cached_archive()
        except RuntimeError as e:
            self.skipTest(str(e))
        self.daemon.client("load", "-i", archive, timeout=600)
        out = self.outputs(f"FROM {debian_image.DEFAULT_TAG}\n"
                           "RUN apt-get update && echo apt-update-ok; readlink /proc/self/ns/net\n")
        self.assertIn("apt-update-ok", out)
        self.assertTrue(any(line.startswith("Get:") or line.startswith("Hit:") for line in out), out)
        if not AGAINST_BUILDKIT:  # the tests' dockerd runs its builds on the host's network
            self.assertNotIn(os.readlink("/proc/self/ns/net"), out, "the step ran on the host's network")

    @kbuild_only("20.10's frontend has no RUN --network")
    def test_network_host_needs_the_entitlement(self):
        ctx = self.context(f"FROM {BASE}\nRUN --network=host cat /proc/net/dev\n")
        result = self.failing(ctx)
        self.assertIn("network.host", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        allowed = step_output(self.build(ctx, "--allow", "network.host", "--no-cache").stderr)
        with open("/proc/net/dev") as f:
            self.assertEqual(interfaces(allowed), interfaces(f.read().splitlines()))

    # -- mounts ---------------------------------------------------------------------------------

    def test_cache_mount_persists_between_builds_and_stays_out_of_the_image(self):
        ctx = self.context(f"FROM {BASE}\nARG N\n"
                           "RUN --mount=type=cache,target=/c echo $N >> /c/count && wc -l < /c/count > /count\n")
        fs1, _ = self.rootfs(ctx, "--build-arg", "N=1")
        fs2, _ = self.rootfs(ctx, "--build-arg", "N=2")
        self.assertEqual(fs1.text("count").strip(), "1")
        self.assertEqual(fs2.text("count").strip(), "2")
        self.assertEqual(fs2.under("c"), [])

    def test_cache_mount_id_is_shared_across_targets(self):
        tag = uuid.uuid4().hex[:8]
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=cache,id=shared-{tag},target=/one echo {tag} > /one/f\n"
                           f"RUN --mount=type=cache,id=shared-{tag},target=/two cat /two/f > /seen\n"
                           f"RUN --mount=type=cache,target=/one ls -A /one > /other\n")
        fs, _ = self.rootfs(ctx)
        self.assertEqual(fs.text("seen"), tag + "\n")
        self.assertEqual(fs.text("other"), "")

    def test_cache_mount_owner_and_mode(self):
        tag = uuid.uuid4().hex[:8]
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE}\nRUN --mount=type=cache,id=own-{tag},target=/c,uid=1000,gid=1000,mode=0700 "
            "stat -c '%u %g %a' /c > /st\n"))
        self.assertEqual(fs.text("st"), "1000 1000 700\n")

    def test_locked_cache_mount_serializes_parallel_stages(self):
        tag = uuid.uuid4().hex[:8]
        mount = f"--mount=type=cache,id=locked-{tag},target=/c,sharing=locked"
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE} AS a\nRUN {mount} echo start-a >> /c/log && sleep 1 && echo end-a >> /c/log && touch /a\n"
            f"FROM {BASE} AS b\nRUN {mount} echo start-b >> /c/log && sleep 1 && echo end-b >> /c/log && touch /b\n"
            f"FROM {BASE}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nRUN {mount} cp /c/log /log\n"))
        log = fs.text("log").split()
        self.assertEqual(sorted(log), ["end-a", "end-b", "start-a", "start-b"])
        self.assertIn(log, (["start-a", "end-a", "start-b", "end-b"], ["start-b", "end-b", "start-a", "end-a"]))

    def test_bind_mount_from_context_is_read_only_by_default(self):
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=bind,source=d,target=/m cat /m/x > /seen; "
                           "touch /m/new 2> /dev/null && echo writable > /rw || echo read-only > /rw\n",
                           {"d/x": "from context\n"})
        fs, _ = self.rootfs(ctx)
        self.assertEqual(fs.text("seen"), "from context\n")
        self.assertEqual(fs.text("rw"), "read-only\n")
        self.assertEqual(fs.under("m"), [])

    # BuildKit's client resets the context's owners to 0 (resetUIDAndGID): whoever owns the
    # files, a bind mount of the context shows them as root's.
    def test_bind_mount_of_the_context_shows_its_files_owned_by_root(self):
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=bind,target=/ctx ls -ln /ctx > /listing\n",
                           {"d/x": "x\n", "f": "f\n"})
        os.symlink("f", os.path.join(ctx, "link"))
        for rel, uid in (("Dockerfile", 1000), ("d", 1000), ("d/x", 2000), ("f", 2000), ("link", 1000)):
            os.lchown(os.path.join(ctx, rel), uid, uid + 1)
        fs, _ = self.rootfs(ctx)
        owners = {}
        for line in fs.text("listing").splitlines():
            fields = line.split()  # mode links uid gid size month day time|year name [-> target]
            if fields[0] != "total":
                owners[fields[fields.index("->") - 1] if "->" in fields else fields[-1]] = fields[2:4]
        self.assertEqual(owners, {name: ["0", "0"] for name in ("Dockerfile", "d", "f", "link")},
                         fs.text("listing"))

    def test_rw_bind_mount_changes_are_discarded(self):
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=bind,target=/m,rw echo changed > /m/x && touch /m/new "
                           "&& cat /m/x > /seen\n"
                           "RUN --mount=type=bind,target=/m cat /m/x > /after && ls /m > /listing\n",
                           {"x": "original\n"})
        fs, _ = self.rootfs(ctx)
        self.assertEqual(fs.text("seen"), "changed\n")
        self.assertEqual(fs.text("after"), "original\n")
        self.assertNotIn("new", fs.text("listing").split())
        with open(os.path.join(ctx, "x")) as f:
            self.assertEqual(f.read(), "original\n")
        self.assertFalse(os.path.exists(os.path.join(ctx, "new")))
        self.assertEqual(fs.under("m"), [])

    def test_bind_mount_from_a_stage(self):
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE} AS s\nRUN mkdir /data && echo staged > /data/f\n"
            f"FROM {BASE}\nRUN --mount=type=bind,from=s,source=/data,target=/d cat /d/f > /seen\n"))
        self.assertEqual(fs.text("seen"), "staged\n")
        self.assertNotIn("data", fs)
        self.assertEqual(fs.under("d"), [])

    def test_tmpfs_mount(self):
        fs, _ = self.rootfs(self.context(
            f"FROM {BASE}\nRUN --mount=type=tmpfs,target=/t echo x > /t/x && grep ' /t ' /proc/mounts "
            "| cut -d' ' -f3 > /fstype\n"))
        self.assertEqual(fs.text("fstype"), "tmpfs\n")
        self.assertEqual(fs.under("t"), [])

    # -- confinement ----------------------------------------------------------------------------

    def test_privileged_operations_fail(self):
        out = self.outputs(
            f"FROM {BASE}\nRUN unshare -U true; echo unshare=$?; mount -t tmpfs none /mnt; echo mount=$?; "
            "reboot -f; echo reboot=$?; echo x > /m.ko; insmod /m.ko; echo insmod=$?; "
            "nsenter -t 1 -n true; echo nsenter=$?; echo 1 > /sys/kernel/profiling; echo sys=$?; "
            "grep ' /sys ' /proc/mounts | cut -d' ' -f4\n")
        values = dict(line.split("=", 1) for line in out if re.fullmatch(r"[a-z]+=\d+", line))
        for op in ("unshare", "mount", "reboot", "insmod", "nsenter", "sys"):
            self.assertIn(op, values, out)
            self.assertNotEqual(values[op], "0", f"{op} succeeded: {out}")
        self.assertTrue(any(line.startswith("ro,") or line == "ro" for line in out), out)

    def test_syscalls_outside_the_profile_fail(self):
        out = self.with_probe(
            f"ARG DAEMON_PID\nRUN /probe keyctl; /probe add_key; /probe init_module; /probe setns /proc/1/ns/net; "
            "/probe unshare-user; /probe ptrace $DAEMON_PID", "--build-arg", f"DAEMON_PID={self.daemon.process.pid}")
        self.assertGreater(self.daemon.process.pid, 100)
        for expected in ("keyctl=EPERM", "add_key=EPERM", "init_module=EPERM", "setns=EPERM",
                         "unshare-user=EPERM", "ptrace=ESRCH"):
            self.assertIn(expected, out)

    def test_step_sees_only_its_own_processes_and_fds(self):
        out = self.with_probe("RUN echo pid=$$; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; /probe fds; "
                              "ls /proc/self/fd | tr '\\n' ' '; echo")
        self.assertIn("pid=1", out)
        pids = next(line for line in out if re.fullmatch(r"[\d ]+", line)).split()
        self.assertLessEqual(len(pids), 4, pids)
        self.assertTrue(all(int(p) < 20 for p in pids), pids)
        self.assertIn("fds=0", out)
        fds = next(line for line in out if line.startswith("0 1 2")).split()
        self.assertLessEqual(set(fds), {"0", "1", "2", "3"})

    def test_capabilities_hostname_and_hosts(self):
        out = self.outputs(f"FROM {BASE}\nRUN grep CapEff /proc/self/status; hostname; cat /etc/hosts\n")
        self.assertIn(f"CapEff:\t{DEFAULT_CAPS}", out)
        self.assertIn("buildkitsandbox", out)
        self.assertTrue(any("buildkitsandbox" in line and line.startswith("127.0.0.1") for line in out), out)

    def test_workdir_through_proc_self_fd_does_not_escape(self):
        # runc CVE-2024-21626: a cwd of /proc/self/fd/N reached a host directory through an fd
        # leaked into the container. Failing the step is fine; seeing outside the rootfs is not.
        for n in range(3, 21):
            ctx = self.context(f"FROM {BASE}\nWORKDIR /proc/self/fd/{n}\n"
                               "RUN pwd -P; cd ../../../../../../../.. && test -e linuxrc && echo INSIDE || echo ESCAPED\n",
                               name=f"fd-{n}")
            result = self.build(ctx, "--no-cache", check=False)
            out = step_output(result.stderr)
            self.assertNotIn("ESCAPED", out, f"fd {n}: {result.stderr[-2000:]}")
            self.assertFalse(any("unreachable" in line for line in out), f"fd {n}: {out}")

    # -- BuildKit's CVEs ------------------------------------------------------------------------

    def host_marker_dir(self):
        """A host directory the builds must neither see nor touch: holds host-marker and t/keep."""
        path = os.path.join(self.workdir, "host-" + uuid.uuid4().hex[:8])
        write(os.path.join(path, "host-marker"), "host\n")
        write(os.path.join(path, "t", "keep"), "keep\n")
        return path

    def assert_host_untouched(self, host):
        self.assertEqual(sorted(os.listdir(host)), ["host-marker", "t"])
        self.assertEqual(os.listdir(os.path.join(host, "t")), ["keep"])

    def test_cache_mount_source_through_a_symlink_stays_in_the_stage(self):
        # CVE-2024-23651: the cache mount's source resolved on the host through a symlink.
        host = self.host_marker_dir()
        result = self.build(self.context(
            f"FROM {BASE} AS s\nRUN ln -s {host} /link\n"
            f"FROM {BASE}\nRUN --mount=type=cache,from=s,source=/link,target=/c ls -A /c; "
            "touch /c/written-23651 || true\n"), "--no-cache", check=False)
        self.assertNotIn("host-marker", step_output(result.stderr))
        self.assert_host_untouched(host)

    def test_tmpfs_target_under_a_symlinked_parent_touches_nothing_outside(self):
        # CVE-2024-23652: a mount stub under a symlink to a host path was removed on the host.
        host = self.host_marker_dir()
        result = self.build(self.context(
            f"FROM {BASE}\nRUN mkdir -p /x && ln -s {host} /x/p\n"
            "RUN --mount=type=tmpfs,target=/x/p/t ls -A /x/p/t; touch /x/p/t/new-23652\n"
            "RUN ls -A /x/p/ > /listing || true\n"), "--no-cache", check=False)
        self.assertNotIn("keep", step_output(result.stderr))
        self.assert_host_untouched(host)

    def test_bind_from_stage_through_a_root_symlink_stays_in_the_stage(self):
        # CVE-2024-1753 (buildah): a bind source symlinked to / mounted the host's root.
        host = self.host_marker_dir()
        name = "kbuild-pwned-" + uuid.uuid4().hex[:8]
        try:
            result = self.build(self.context(
                f"FROM {BASE} AS s\nRUN ln -s / /x && ln -s {host} /h\n"
                f"FROM {BASE}\nRUN --mount=type=bind,from=s,source=/x,target=/m,rw ls -A /m; "
                f"touch /m/{name} || true\n"
                f"RUN --mount=type=bind,from=s,source=/h,target=/m ls -A /m || true\n"), "--no-cache", check=False)
            out = step_output(result.stderr)
            self.assertFalse(os.path.exists("/" + name), "the build wrote into the host's /")
            self.assertNotIn("host-marker", out)
            if result.returncode == 0:
                self.assertIn("linuxrc", out)  # the stage's own root
            self.assert_host_untouched(host)
        finally:
            if os.path.exists("/" + name):
                os.unlink("/" + name)

    def test_cache_id_with_dot_dot_stays_in_the_daemons_cache(self):
        # CVE-2024-9675 (buildah): a cache id with ../ chose a host directory.
        host = self.host_marker_dir()
        name = "escaped-" + uuid.uuid4().hex[:8]
        climb = "../" * 12
        result = self.build(self.context(
            f"FROM {BASE}\nRUN --mount=type=cache,id={climb}{host.lstrip('/')},target=/c ls -A /c; "
            f"touch /c/{name}\n"), "--no-cache", check=False)
        self.assertNotIn("host-marker", step_output(result.stderr))
        self.assert_host_untouched(host)
        if result.returncode == 0:
            found = [os.path.join(top, name) for top, _, files in os.walk(self.daemon.root) if name in files]
            self.assertEqual(len(found), 1, f"{name} should be in one cache dir under {self.daemon.root}")

    # -- the image never shapes the sandbox ----------------------------------------------------

    # How an image can hold a path where the sandbox needs a directory or a file: (label,
    # maker(tar, name, dest)); the links lead to /dest, a real entry of the image.
    SHAPES = [
        ("relative symlink", lambda t, name, dest: add_link(t, name, os.path.relpath("/" + dest,
                                                                                     os.path.dirname("/" + name)))),
        ("absolute symlink", lambda t, name, dest: add_link(t, name, "/" + dest)),
        ("symlink climbing above the root", lambda t, name, dest: add_link(t, name, "../../../../" + dest)),
        ("chained symlinks", lambda t, name, dest: (add_link(t, name, os.path.basename(name) + "-chain"),
                                                    add_link(t, name + "-chain", "/" + dest))),
        ("dangling symlink", lambda t, name, dest: add_link(t, name, "/nowhere")),
        ("file", lambda t, name, dest: add_member(t, name, tarfile.REGTYPE, b"IMAGE\n")),
        ("fifo", lambda t, name, dest: add_member(t, name, tarfile.FIFOTYPE)),
    ]

    def shaped_image(self, name, shape, extra_dirs=(), dest="p"):
        """A context whose rootfs.tar is busybox plus `name` in the given shape, leading to /dest."""
        ctx = os.path.join(self.workdir, "contexts", f"shape-{uuid.uuid4().hex[:8]}")
        os.makedirs(ctx)
        with tarfile.open(os.path.join(ctx, "rootfs.tar"), "w") as t:
            for d in ("bin", "p", "tmp") + tuple(extra_dirs):
                add_member(t, d, tarfile.DIRTYPE)
            with open(base_image.ensure_busybox(), "rb") as f:
                add_member(t, "bin/busybox", tarfile.REGTYPE, f.read(), 0o755)
            for applet in ("sh", "cat", "echo", "ls", "grep", "readlink", "test"):
                add_link(t, f"bin/{applet}", "busybox")
            add_member(t, "target", tarfile.REGTYPE, b"TARGET\n")
            shape(t, name, dest)
        return ctx

    def test_an_image_cannot_move_or_replace_proc_sys_or_dev(self):
        # The attack: /proc a symlink to /p put procfs at /p and skipped every mask, so
        # /proc/sys was writable (kernel.core_pattern: host root). Refused, whatever the shape.
        for path in ("proc", "sys", "dev"):
            for label, shape in self.SHAPES:
                with self.subTest(path=path, shape=label):
                    ctx = self.shaped_image(path, shape)
                    write(os.path.join(ctx, "Dockerfile"),
                          "FROM scratch\nADD rootfs.tar /\n"
                          "RUN echo x > /proc/sys/kernel/domainname && echo WRITABLE; "
                          "echo x > /p/sys/kernel/domainname && echo WRITABLE; "
                          "test -e /proc/kcore && echo KCORE; test -e /p/kcore && echo KCORE; echo RAN\n")
                    result = self.build(ctx, "--no-cache", check=False)
                    out = step_output(result.stderr)
                    self.assertNotIn("WRITABLE", out, result.stderr[-2000:])
                    self.assertNotIn("KCORE", [line.strip() for line in out])
                    if not AGAINST_BUILDKIT:
                        kind = "a file" if label == "file" else "a named pipe" if label == "fifo" else \
                            "a symbolic link"
                        self.assertNotEqual(result.returncode, 0, result.stderr[-2000:])
                        self.assertIn(f"the image's /{path} is {kind}: a RUN step needs a directory there",
                                      result.stderr)
                        self.assertNotIn("RAN", out)

    @kbuild_only("BuildKit's runc follows the image's symlink and mounts the file over its target")
    def test_hosts_and_resolv_conf_land_at_their_own_paths_whatever_the_image_holds(self):
        files = ["etc/hosts"] + (["etc/resolv.conf"] if os.access("/etc/resolv.conf", os.R_OK) else [])
        for path in files:
            for label, shape in self.SHAPES:
                with self.subTest(path=path, shape=label):
                    ctx = self.shaped_image(path, shape, extra_dirs=("etc",), dest="target")
                    out_tar = os.path.join(self.workdir, f"shaped-{uuid.uuid4().hex[:8]}.tar")
                    write(os.path.join(ctx, "Dockerfile"),
                          f"FROM scratch\nADD rootfs.tar /\nRUN cat /{path}; echo ---; cat /target; "
                          "ls /p | grep . || echo P-EMPTY; test -e /nowhere || echo NOWHERE-ABSENT\n")
                    result = self.build(ctx, "--no-cache", "-o", f"type=tar,dest={out_tar}")
                    out = step_output(result.stderr)
                    shown = out[:out.index("---")]
                    if path == "etc/hosts":
                        self.assertTrue(any("buildkitsandbox" in line for line in shown), out)
                    self.assertNotIn("IMAGE", shown)
                    self.assertEqual(out[out.index("---") + 1], "TARGET", out)
                    self.assertIn("P-EMPTY", out)
                    self.assertIn("NOWHERE-ABSENT", out)
                    # The image keeps what it had there: the same link, file or fifo.
                    image = Rootfs(out_tar)
                    os.unlink(out_tar)
                    member = image.members[path]
                    if "symlink" in label:
                        self.assertTrue(member.issym(), label)
                    elif label == "file":
                        self.assertEqual(image.text(path), "IMAGE\n")
                    else:
                        self.assertTrue(member.isfifo(), label)
                    self.assertEqual(image.text("target"), "TARGET\n")
                    self.assertNotIn("nowhere", image)

    @kbuild_only("runc follows the image's /etc symlink and mounts /etc/hosts under its target")
    def test_an_image_with_a_symlinked_etc_gets_no_hosts_file_elsewhere(self):
        ctx = self.shaped_image("etc", lambda t, name, dest: add_link(t, name, dest))
        write(os.path.join(ctx, "Dockerfile"), "FROM scratch\nADD rootfs.tar /\nRUN ls /p; echo RAN\n")
        result = self.failing(ctx, "--no-cache")
        out = step_output(result.stderr)
        self.assertIn("the image's /etc is a symbolic link: a RUN step needs a directory there", result.stderr)
        self.assertNotIn("RAN", out)

    @kbuild_only("runc lets a tmpfs cover /proc/sys/kernel (writes land in the tmpfs); kbuild refuses the mount")
    def test_run_mounts_cannot_cover_proc_or_sys(self):
        for target in ("/proc/sys", "/sys/kernel", "/via-link/kernel"):
            with self.subTest(target=target):
                ctx = self.context(f"FROM {BASE}\nRUN ln -s /proc/sys /via-link\n"
                                   f"RUN --mount=type=tmpfs,target={target} echo x > /proc/sys/kernel/domainname "
                                   "&& echo WRITABLE; echo RAN\n", name="cover-" + target.strip("/").replace("/", "-"))
                result = self.failing(ctx, "--no-cache")
                self.assertNotIn("WRITABLE", step_output(result.stderr))
                self.assertIn(f"mount target {target} cannot be mounted: it is inside", result.stderr)

    def test_writable_bind_sources_named_with_mount_option_syntax_are_themselves(self):
        # The writable bind's overlay named its source in the options, where ':' and ','
        # are syntax: "x:/etc" made the host's /etc a lower layer. Both mount APIs are tried:
        # KBUILD_OVERLAY_API=legacy takes the option string, as on a kernel before 6.8.
        daemons = [self.daemon]
        if not AGAINST_BUILDKIT:
            daemons.append(self.legacy_overlay_daemon())
        files = {"x:/etc/only-in-context": "ctx\n", "a,upperdir=/tmp/only-here": "ctx\n"}
        for daemon in daemons:
            # A name with ',' is reached through a link: the mount flag itself is CSV.
            for source, real in (("x:/etc", "x:/etc"), ("comma-link", "a,upperdir=/tmp")):
                with self.subTest(source=real, legacy=daemon is not self.daemon):
                    ctx = self.context(f"FROM {BASE}\nRUN --mount=type=bind,source={source},target=/m,rw "
                                       "ls -A /m; touch /m/written\n", files, name="optsyntax")
                    os.symlink("a,upperdir=/tmp", os.path.join(ctx, "comma-link"))
                    out = step_output(self.build(ctx, "--no-cache", daemon=daemon).stderr)
                    self.assertNotIn("passwd", out)
                    self.assertNotIn("written", out)
                    self.assertTrue(any(line.startswith("only-") for line in out), out)
                    self.assertFalse(os.path.exists(os.path.join(ctx, real, "written")))

    def legacy_overlay_daemon(self):
        if getattr(type(self), "legacy_daemon", None) is None:
            daemon = Daemon(os.path.join(self.workdir, "legacy-overlay"), env={"KBUILD_OVERLAY_API": "legacy"})
            type(self).extra_daemons.append(daemon)
            daemon.client("load", "-i", self.base_archive)
            daemon.mark_idle(BASE)
            type(self).legacy_daemon = daemon
        return type(self).legacy_daemon

    # -- entitlements ---------------------------------------------------------------------------

    @kbuild_only("20.10's frontend has no RUN --security")
    def test_security_insecure_needs_both_the_flag_and_the_daemon_entitlement(self):
        dockerfile = f"FROM {BASE}\nRUN --security=insecure grep CapEff /proc/self/status\n"
        ctx = self.context(dockerfile)
        self.assertIn("security.insecure", self.failing(ctx).stderr)
        self.assertIn("security.insecure", self.failing(ctx, "--allow", "security.insecure").stderr)
        daemon = self.second_daemon("insecure", {"builder": {"entitlements": {"security-insecure": True}}})
        self.assertIn("security.insecure", self.failing(ctx, daemon=daemon).stderr)
        out = step_output(self.build(ctx, "--allow", "security.insecure", daemon=daemon).stderr)
        self.assertIn(f"CapEff:\t{full_capability_set()}", out)

    # -- limits ---------------------------------------------------------------------------------

    @kbuild_only("BuildKit ignores docker build's limits")
    def test_memory_limit_kills_the_step_with_a_clear_message(self):
        result = self.failing(self.context(f"FROM {BASE}\nRUN head -c 300m /dev/zero | tail > /dev/null\n"),
                              "--memory", "64m")
        self.assertIn("step killed: out of memory (limit 64MiB)", result.stderr)

    @kbuild_only("BuildKit ignores docker build's limits")
    def test_pids_limit_stops_a_fork_loop(self):
        result = self.failing(self.context(
            f"FROM {BASE}\nRUN i=0; while [ $i -lt 64 ]; do sleep 3 & i=$((i+1)); done; wait\n"),
            "--pids-limit", "16")
        self.assertRegex(result.stderr.lower(), r"(pids|process) limit")

    @kbuild_only('docker build has no --cpus')
    def test_cpu_limit_is_accepted(self):
        out = self.outputs(f"FROM {BASE}\nRUN echo limited\n", "--cpus", "0.5", "--memory", "512m",
                           "--pids-limit", "256")
        self.assertIn("limited", out)

    # -- cleanup --------------------------------------------------------------------------------

    @kbuild_only("checks kbuild's store and cgroups")
    def test_nothing_is_left_after_success_and_failure(self):
        ok = self.context(f"FROM {BASE}\nRUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/c "
                          "sleep 1 & echo done\n", name="clean-ok")
        self.build(ok, "--no-cache")
        self.assertEqual(self.daemon.wait_clean(before=self.left_before), [])
        bad = self.context(f"FROM {BASE}\nRUN --mount=type=tmpfs,target=/t (sleep 2017 &) ; exit 1\n", name="clean-bad")
        self.failing(bad, "--no-cache")
        self.assertEqual(self.daemon.wait_clean(("sleep 2017",), before=self.left_before), [])

    def test_killed_client_cancels_the_running_step(self):
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=tmpfs,target=/t echo started; sleep 3031\n")
        client = self.daemon.popen_build(ctx, "--no-cache", "-t", "it-run-killed")
        try:
            for line in client.stderr:
                if OUTPUT_LINE.match(line) and line.rstrip().endswith(" started"):
                    break
            time.sleep(0.5)
            self.assertTrue(processes_matching(lambda pid, cmd, root: cmd == "sleep 3031"), "the step never ran")
        finally:
            client.kill()
            client.wait()
        self.assertEqual(self.daemon.wait_clean(("sleep 3031",), before=self.left_before), [])
        self.assertNotIn("it-run-killed", self.daemon.client("images").stdout)

    @kbuild_only("dockerd 20.10 stopped by SIGTERM leaves the running step's processes behind")
    def test_daemon_sigterm_during_a_step_leaves_nothing(self):
        daemon = self.second_daemon("sigterm", {})
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=cache,target=/c echo started; sleep 3032\n")
        client = daemon.popen_build(ctx, "--no-cache")
        try:
            for line in client.stderr:
                if OUTPUT_LINE.match(line) and line.rstrip().endswith(" started"):
                    break
            time.sleep(0.5)
            daemon.process.send_signal(signal.SIGTERM)
            daemon.process.wait(timeout=30)
            client.wait(timeout=30)
            self.assertNotEqual(client.returncode, 0)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        self.assertEqual(daemon.wait_clean(("sleep 3032",)), [])
        daemon.log.close()
        daemon.start()  # the same root serves again
        self.assertIn("again", step_output(self.build(self.context(f"FROM {BASE}\nRUN echo again\n",
                                                                   name="after-sigterm"), daemon=daemon).stderr))

    def test_stopping_another_daemon_leaves_this_one_working(self):
        # Two kbuildd on one machine (a test's and the system's, say) each make their cgroups
        # under their own parent; one stopping must not remove what the other builds in.
        other = self.second_daemon("other", {})
        other.stop()
        out = self.outputs(f"FROM {BASE}\nRUN echo still-working\n")
        self.assertIn("still-working", out)


    def shared_step_builds(self, marker, seconds):
        """Two clients building the same RUN step (one cache key, two contexts): the second joins
        the step the first started. Returns both, the second's progress read up to the step."""
        dockerfile = f"FROM {BASE}\nRUN echo started; sleep {seconds}; echo {marker} > /x\n"
        first = self.daemon.popen_build(self.context(dockerfile, name=f"{marker}-1"))
        second = None
        try:
            for line in first.stderr:
                if OUTPUT_LINE.match(line) and line.rstrip().endswith(" started"):
                    break
            out = os.path.join(self.workdir, f"{marker}.tar")
            second = self.daemon.popen_build(self.context(dockerfile, name=f"{marker}-2"), "-o", f"type=tar,dest={out}")
            for line in second.stderr:
                if "[2/2] RUN" in line:
                    break
            time.sleep(0.5)
        except BaseException:
            for client in (first, second):
                if client is not None:
                    client.kill()
                    client.wait()
            raise
        return first, second, out

    def test_shared_step_keeps_running_for_the_build_that_still_waits(self):
        marker = "shared-" + uuid.uuid4().hex[:8]
        first, second, out = self.shared_step_builds(marker, 4)
        try:
            first.kill()
            first.wait()
            second.wait(timeout=120)
            self.assertEqual(second.returncode, 0, second.stderr.read()[-3000:])
        finally:
            for client in (first, second):
                if client.poll() is None:
                    client.kill()
                    client.wait()
        self.assertEqual(Rootfs(out).text("x"), marker + "\n")
        os.unlink(out)

    def test_shared_step_stops_when_its_last_build_leaves(self):
        marker = "shared-" + uuid.uuid4().hex[:8]
        first, second, _ = self.shared_step_builds(marker, 3034)
        try:
            second.kill()
            second.wait()
            time.sleep(0.5)
            self.assertTrue(processes_matching(lambda pid, cmd, root: cmd == "sleep 3034"),
                            "the step stopped while a build still waited for it")
        finally:
            first.kill()
            first.wait()
            if second.poll() is None:
                second.kill()
                second.wait()
        self.assertEqual(self.daemon.wait_clean(("sleep 3034",), before=self.left_before), [])

# Tests that start a second kbuildd run last: stopping one must not disturb the other, and
# when it does (the last test checks that), only the tests after it would fail for it.
LAST = ["test_security_insecure_needs_both_the_flag_and_the_daemon_entitlement",
        "test_default_network_without_a_stack_fails_naming_the_package",
        "test_pasta_reaches_out_but_not_the_hosts_loopback",
        "test_slirp4netns_reaches_out_but_not_the_hosts_loopback",
        "test_daemon_sigterm_during_a_step_leaves_nothing",
        "test_stopping_another_daemon_leaves_this_one_working"]


def test_order(a, b):
    key = lambda name: (LAST.index(name) if name in LAST else -1, name)  # noqa: E731
    return (key(a) > key(b)) - (key(a) < key(b))


def main():
    global BUILD_DIR, AGAINST_BUILDKIT
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=os.environ.get("KBUILD_BUILD_DIR", "build"))
    parser.add_argument("-k", dest="pattern")
    parser.add_argument("--buildkit", action="store_true",
                        help="run against Docker 20.10's BuildKit (a private dockerd) to check the tests themselves")
    args = parser.parse_args()
    BUILD_DIR = os.path.abspath(args.build_dir)
    AGAINST_BUILDKIT = args.buildkit
    if os.geteuid() != 0:
        print("RUN tests need root (they run a root daemon)", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {s}")))
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    if args.pattern:
        loader.testNamePatterns = [f"*{args.pattern}*"]
    suite = loader.loadTestsFromTestCase(RunTest)
    try:
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    except KeyboardInterrupt:
        print("run: interrupted", file=sys.stderr)
        if getattr(RunTest, "workdir", None) and os.path.exists(RunTest.workdir):
            RunTest.tearDownClass()  # daemons stopped, mounts and the temp dir removed
        return 130
    failed = len(result.failures) + len(result.errors)
    print(f"run: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed, "
          f"{len(result.skipped)} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
