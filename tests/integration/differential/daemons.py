"""The two builders under test, each a private root daemon on a unix socket in the harness's
temp dir: Docker 20.10's dockerd (BuildKit, the reference) and kbuild's kbuildd.

Everything a daemon leaves behind (processes, mounts, files) is released by `stop()` and by
`Workspace.close()`, on any exit of the harness.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from mounts import unmount_all_under  # tests/integration: run.py puts it on the path

# Debian's docker.io 20.10 client: it has the classic `docker build` with DOCKER_BUILDKIT=1.
# (/usr/local/bin/docker may be a newer client without buildx, which refuses to build.)
DOCKER_CLIENT = "/usr/bin/docker"
DOCKERD = "dockerd"

# Both daemons grant RUN --security=insecure (a build still has to ask for it with
# `--allow security.insecure`); daemon.json's builder.entitlements is read by Docker 20.10's
# dockerd and by kbuildd alike. network.host is granted by default on both.
DAEMON_CONFIG = {"builder": {"entitlements": {"security-insecure": True}}}


def write_daemon_config(directory):
    path = os.path.join(directory, "daemon.json")
    with open(path, "w") as out:
        json.dump(DAEMON_CONFIG, out)
    return path


class HarnessError(Exception):
    """Something the harness needs that does not work (not a difference between builders)."""


class Workspace:
    """The harness's temp dir. close() unmounts what is left under it and removes it, unless
    the caller asked to keep it."""

    def __init__(self, keep):
        self.path = tempfile.mkdtemp(prefix="kbuild-diff.")
        self.keep = keep

    def sub(self, *names):
        path = os.path.join(self.path, *names)
        os.makedirs(path, exist_ok=True)
        return path

    def close(self):
        unmount_all_under(self.path)
        if self.keep:
            print(f"kept {self.path}")
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if os.path.exists(self.path):  # read-only leftovers: one more try after chmod
            subprocess.run(["chmod", "-R", "u+rwX", self.path], stderr=subprocess.DEVNULL)
            shutil.rmtree(self.path, ignore_errors=True)


class Daemon:
    """A background daemon in its own session (so a Ctrl-C at the terminal reaches only the
    harness, which then stops the daemon in order), logging to a file."""

    name = "daemon"

    def __init__(self, log_path):
        self.log_path = log_path
        self.process = None

    def _spawn(self, argv, env=None):
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env)
        finally:
            log.close()

    def log_tail(self, lines=25):
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def _wait_until(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"{self.name} exited with status {self.process.returncode} "
                                   f"before {what}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise HarnessError(f"{self.name} did not get to {what} within {timeout}s:\n"
                           f"{self.log_tail()}")

    def stop(self, timeout=30):
        """SIGTERM, then wait; SIGKILL to the daemon's own process group only if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _connectable(path):
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
            return True
        except OSError:
            return False


class Dockerd(Daemon):
    """A private dockerd (and the containerd it starts) with its own data root, exec root and
    socket; no bridge, no iptables: builds use the host network, which they never need."""

    name = "dockerd"

    def __init__(self, workspace):
        self.root = workspace.sub("dockerd")
        super().__init__(os.path.join(self.root, "dockerd.log"))
        self.socket = os.path.join(self.root, "docker.sock")
        self.config_dir = os.path.join(self.root, "client-config")
        os.makedirs(self.config_dir, exist_ok=True)

    def start(self):
        if shutil.which(DOCKERD) is None or not os.access(DOCKER_CLIENT, os.X_OK):
            raise HarnessError(f"needs {DOCKERD} and {DOCKER_CLIENT} (Debian's docker.io)")
        self._spawn([DOCKERD, "--bridge=none", "--iptables=false", "--ip6tables=false",
                     "--data-root", os.path.join(self.root, "data"),
                     "--exec-root", os.path.join(self.root, "exec"),
                     "-H", "unix://" + self.socket,
                     "--config-file", write_daemon_config(self.root),
                     "--pidfile", os.path.join(self.root, "dockerd.pid")])
        self._wait_until(lambda: self.client(["version"], check=False).returncode == 0,
                         60, "answering `docker version`")

    def client_env(self, extra=None):
        unwanted = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
        env = {k: v for k, v in os.environ.items() if k not in unwanted}
        env["DOCKER_BUILDKIT"] = "1"
        env["DOCKER_CONFIG"] = self.config_dir  # not the caller's ~/.docker
        env.update(extra or {})
        return env

    def client(self, args, cwd=None, check=True, timeout=180, env=None):
        """`env`: variables added to the client's environment."""
        result = subprocess.run([DOCKER_CLIENT, "-H", "unix://" + self.socket] + args, cwd=cwd,
                                env=self.client_env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=timeout)
        if check and result.returncode != 0:
            raise BuildFailed(f"docker {' '.join(args)}", result)
        return result


class BuildFailed(Exception):
    """A builder's client exited non-zero."""

    def __init__(self, command, result):
        output = result.stdout.decode(errors="replace").rstrip()
        tail = "\n".join(output.splitlines()[-20:])
        super().__init__(f"`{command}` exited with status {result.returncode}:\n{tail}")


class Kbuildd(Daemon):
    """kbuildd run by hand: `kbuildd --listen SOCK --root ROOT`, driven with
    `kbuildctl --host unix://SOCK ...`."""

    name = "kbuildd"

    def __init__(self, workspace, kbuildd, kbuildctl):
        self.root = workspace.sub("kbuildd")
        super().__init__(os.path.join(self.root, "kbuildd.log"))
        self.kbuildd, self.kbuildctl = kbuildd, kbuildctl
        self.socket = os.path.join(self.root, "kbuild.sock")

    def start(self):
        argv = [self.kbuildd, "--listen", self.socket, "--root", os.path.join(self.root, "store")]
        help_text = subprocess.run([self.kbuildd, "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT).stdout.decode(errors="replace")
        if "--config" in help_text:  # not the host's /etc/docker/daemon.json
            argv += ["--config", write_daemon_config(self.root)]
        # RUN needs the kbuild-exec helper: the build dir's, where kbuildd takes the option
        # (an installed kbuildd finds its own).
        helper = os.path.join(os.path.dirname(os.path.dirname(self.kbuildd)), "engine", "kbuild-exec")
        if os.access(helper, os.X_OK) and "--exec-helper" in help_text:
            argv += ["--exec-helper", helper]
        self._spawn(argv)
        self._wait_until(lambda: _connectable(self.socket), 60, f"listening on {self.socket}")

    def client(self, args, cwd=None, check=True, timeout=180, env=None):
        """`env`: variables added to the client's environment."""
        result = subprocess.run([self.kbuildctl, "--host", "unix://" + self.socket] + args,
                                cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                timeout=timeout, env=dict(os.environ, **env) if env else None)
        if check and result.returncode != 0:
            raise BuildFailed(f"kbuildctl {' '.join(args)}", result)
        return result


def kbuild_unavailable(kbuildd, kbuildctl):
    """Why kbuild cannot be driven yet (a sentence), or None when its binaries are built and
    offer the interface the harness uses: `kbuildctl build`, `kbuildctl load`, and
    `kbuildd --listen --root`. Once this returns None, every kbuild error is a failure."""
    for path in (kbuildctl, kbuildd):
        if not os.access(path, os.X_OK):
            return f"{path} is not built"
    # `kbuildctl NAME --help` is no probe: CLI11 prints the top-level help for an unknown
    # NAME and exits 0. The top-level help lists the subcommands, one per line.
    probe = subprocess.run([kbuildctl, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    words = {line.split()[0] for line in probe.stdout.decode(errors="replace").splitlines()
             if line.startswith("  ") and line.split()}
    for sub in ("build", "load"):
        if sub not in words:
            return f"`kbuildctl {sub}` does not exist yet"
    build_help = subprocess.run([kbuildctl, "build", "--help"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT).stdout.decode(errors="replace")
    if "--output" not in build_help:
        return "`kbuildctl build --output` does not exist yet"
    probe = subprocess.run([kbuildd, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = probe.stdout.decode(errors="replace")
    if probe.returncode != 0 or "--listen" not in text or "--root" not in text:
        return "`kbuildd --listen SOCK --root DIR` does not exist yet"
    return None
