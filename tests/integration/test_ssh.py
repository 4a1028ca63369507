#!/usr/bin/env python3
"""End-to-end tests of SSH agent forwarding (`kbuildctl build --ssh`, `RUN --mount=type=ssh`), as
current BuildKit gives it, against real OpenSSH programs: the user's agent is an `ssh-agent` the
test starts with keys made by `ssh-keygen -t ed25519`, and the programs a step runs (ssh-add,
ssh, git) are the host's own, copied with the libraries `ldd` names into a busybox image.

What is checked: `ssh-add -l` in a step lists the user's key (several connections at once, two
steps at once); `--ssh ID=KEYFILE` (kbuildctl's own agent) works and leaves no ssh-agent nor its
directory behind, even when kbuildctl is killed; the mount's default target, mode and owner and
custom ones, SSH_AUTH_SOCK (the first mount's target, unless the image sets it); a required
agent that is missing fails with BuildKit's two messages, an optional one runs the step without
a socket; a step without the mount sees no socket; the socket leaves no entry in the image's
layers nor an `ssh-*` directory under the daemon's `mounts/`; the step cannot delete, add or
lock keys of the user's agent; and `git clone ssh://` from an sshd the test runs on 127.0.0.1
(Debian's openssh-server, its own host key, config and authorized_keys) works through the
forwarded agent and only through it. Each test runs a kbuildd of its own; everything lives in
one temp dir, removed at the end, and nothing the test started is left running. Run as root:

    python3 tests/integration/test_ssh.py [--build-dir build] [-k PATTERN]

The last line is `ssh: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_registry as harness  # noqa: E402  -- Daemon and its helpers
from daemon_process import terminate  # noqa: E402
from mounts import mount_points_under, unmount_all_under  # noqa: E402
from test_cache import processes_under, session_members  # noqa: E402
from test_registry import free_port, run, wait_until, write  # noqa: E402
from test_secrets import image_files, layer_entries  # noqa: E402

BASE = base_image.DEFAULT_TAG
TOOLS = "kbuild-ssh-tools"
# The programs the steps run, copied from the host with their libraries.
TOOL_PROGRAMS = ["/usr/bin/ssh-add", "/usr/bin/ssh", "/usr/bin/git"]
SSH_OPTIONS = "-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"


# -- the programs a step runs -------------------------------------------------------------------

def shared_libraries(program):
    """The absolute paths `ldd` names for `program` (the loader included, no vdso)."""
    out = run(["ldd", program]).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                found.append(target)
        elif parts and parts[0].startswith("/"):
            found.append(parts[0])
    return found


def copy_tools(root):
    """The host's TOOL_PROGRAMS and their libraries under `root` at their own paths (symlinks
    followed, so each is a file), for `COPY root/ /` onto the busybox base."""
    for program in TOOL_PROGRAMS:
        for path in [program] + shared_libraries(program):
            dest = os.path.join(root, path.lstrip("/"))
            if not os.path.exists(dest):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy(os.path.realpath(path), dest)
    # git looks for its helpers here; clone over ssh:// runs only git itself and ssh, but an
    # exec path that does not exist is warned about.
    os.makedirs(os.path.join(root, "usr/lib/git-core"), exist_ok=True)


# -- the user's side: keys, an agent, an sshd ----------------------------------------------------

def make_key(path, comment):
    """An ed25519 key without a passphrase; its fingerprint line as `ssh-add -l` prints it."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return run(["ssh-keygen", "-l", "-f", path + ".pub"]).stdout.strip()


class UserAgent:
    """The user's `ssh-agent`, in the foreground as the test's child, holding `keys`."""

    def __init__(self, directory, keys):
        os.makedirs(directory, exist_ok=True)
        self.socket = os.path.join(directory, "agent.sock")
        self.process = subprocess.Popen(["ssh-agent", "-D", "-a", self.socket], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: os.path.exists(self.socket) or self.process.poll() is not None, 10) or \
                self.process.poll() is not None:
            self.stop()
            raise AssertionError(f"ssh-agent did not listen on {self.socket}")
        for key in keys:
            run(["ssh-add", "-q", key], env=self.env())

    def env(self):
        return dict(os.environ, SSH_AUTH_SOCK=self.socket)

    def listed(self):
        """`ssh-add -l` of this agent: its keys' fingerprint lines."""
        result = run(["ssh-add", "-l"], env=self.env(), check=False)
        return result.stdout.strip().splitlines() if result.returncode == 0 else []

    def stop(self):
        terminate(self.process, 5)


class SshServer:
    """Debian's sshd on 127.0.0.1 and a free port, with a host key, a config and an
    authorized_keys of its own; root logs in with `authorized` keys only."""

    def __init__(self, directory, authorized):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.log_path = os.path.join(directory, "sshd.log")
        host_key = os.path.join(directory, "host_ed25519")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key])
        authorized_keys = os.path.join(directory, "authorized_keys")
        write(authorized_keys, "".join(open(key + ".pub").read() for key in authorized), 0o600)
        # sshd refuses to start without its privilege separation directory (made by the
        # packaged service, which does not run here).
        self.made_privsep_dir = not os.path.isdir("/run/sshd")
        if self.made_privsep_dir:
            os.makedirs("/run/sshd", 0o755)
        self.process = None
        for _ in range(5):  # another program may take the free port first
            self.port = free_port()
            config = os.path.join(directory, "sshd_config")
            write(config, f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers root
StrictModes no
UsePAM no
LogLevel VERBOSE
""")
            with open(self.log_path, "a") as log:
                self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", config], stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
            if wait_until(lambda: self.listening() or self.process.poll() is not None, 10) and \
                    self.process.poll() is None:
                return
            terminate(self.process, 5)
        raise AssertionError(f"sshd did not listen:\n{self.log()[-2000:]}")

    def listening(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.process is not None:
            terminate(self.process, 10)
            # Its sessions' processes are in sessions of their own: none may outlive the test.
            for pid in session_members(self.process.pid):
                os.kill(pid, signal.SIGKILL)
        if self.made_privsep_dir:
            shutil.rmtree("/run/sshd", ignore_errors=True)


# -- the tests ----------------------------------------------------------------------------------

class SshTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-ssh-")
        os.chmod(cls.workdir, 0o755)
        cls.all_daemons = []
        try:
            cls.base_archive = os.path.join(cls.workdir, "base.tar")
            base_image.write_base_image(cls.base_archive, BASE)
            keys = os.path.join(cls.workdir, "keys")
            os.makedirs(keys, 0o700)
            cls.key = os.path.join(keys, "user_ed25519")
            cls.fingerprint = make_key(cls.key, "kbuild-test-user-key")
            cls.other_key = os.path.join(keys, "other_ed25519")
            cls.other_fingerprint = make_key(cls.other_key, "kbuild-test-other-key")
            cls.tools_context = os.path.join(cls.workdir, "tools-ctx")
            copy_tools(os.path.join(cls.tools_context, "tools"))
            write(os.path.join(cls.tools_context, "Dockerfile"), f"FROM {BASE}\nCOPY tools/ /\n")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for daemon in getattr(cls, "all_daemons", []):
            daemon.stop()
        for pid, cmdline in processes_under(cls.workdir):
            print(f"cleanup: process {pid} still runs, killed: {cmdline[:200]}", file=sys.stderr)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.daemons = []
        self.addCleanup(self.check_nothing_left)

    # -- helpers --------------------------------------------------------------------------------

    def name(self):
        return self.id().rsplit(".", 1)[-1]

    def path(self, *parts):
        # Short: sockets live here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.name().removeprefix("test_")[:20], *parts)

    def daemon(self):
        """A kbuildd of the test's own with the base and the tools image."""
        daemon = harness.Daemon(self.path("d"))
        self.daemons.append(daemon)
        self.all_daemons.append(daemon)
        self.addCleanup(daemon.stop)
        daemon.client("load", "-i", self.base_archive)
        self.build(daemon, self.tools_context, "-t", TOOLS)
        return daemon

    def user_agent(self, keys=None):
        agent = UserAgent(self.path("agent"), [self.key] if keys is None else keys)
        self.addCleanup(agent.stop)
        return agent

    def check_nothing_left(self):
        problems = []
        for daemon in self.daemons:
            for pid in session_members(daemon.process.pid):
                problems.append(f"process {pid} of kbuildd {daemon.process.pid}'s session still runs")
            mounts_dir = os.path.join(daemon.root, "mounts")
            left = [n for n in os.listdir(mounts_dir) if n.startswith("ssh-")] if os.path.isdir(mounts_dir) else []
            if left:
                problems.append(f"agent socket directories left in {mounts_dir}: {left}")
        # Cleanups run last first: the daemons, agents and sshd the test started are stopped by now.
        for pid, cmdline in processes_under(self.path()):
            problems.append(f"process {pid} still runs: {cmdline[:200]}")
        mounts = mount_points_under(self.path())
        if mounts:
            problems.append(f"still mounted: {mounts}")
        if problems:
            unmount_all_under(self.path())
            self.fail("the test left:\n  " + "\n  ".join(problems))

    def context(self, dockerfile, name="ctx", files=None):
        path = self.path(name)
        shutil.rmtree(path, ignore_errors=True)
        write(os.path.join(path, "Dockerfile"), dockerfile)
        for file, content in (files or {}).items():
            write(os.path.join(path, file), content)
        return path

    def build(self, daemon, ctx, *args, check=True, env=None):
        """`kbuildctl build --progress plain ARGS CTX` in the context, with `env` as the client's
        whole environment (default: the daemon's, without SSH_AUTH_SOCK)."""
        client_env = env if env is not None else daemon.env()
        if env is None:
            client_env.pop("SSH_AUTH_SOCK", None)
        result = subprocess.run(daemon.argv("build", "--progress", "plain", *args, ctx), cwd=ctx, env=client_env,
                                capture_output=True, text=True, errors="replace", timeout=300)
        if check and result.returncode != 0:
            self.fail(f"kbuildctl build {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}\n"
                      f"kbuildd's log:\n{daemon.log()[-3000:]}")
        return result

    def agent_env(self, daemon, agent):
        return dict(daemon.env(), SSH_AUTH_SOCK=agent.socket)

    def saved(self, daemon, name):
        """({path: bytes} of the image's files, its config, [[entry names] per layer])."""
        archive = self.path(f"saved-{uuid.uuid4().hex[:8]}.tar")
        daemon.client("save", name, "-o", archive)
        try:
            files, config = image_files(archive)
            return files, config, layer_entries(archive)
        finally:
            os.unlink(archive)

    def text(self, files, path):
        self.assertIn(path, files, f"the step wrote no {path}: {sorted(p for p in files if p.startswith('out'))}")
        return files[path].decode()

    # -- 1. the user's agent reaches the step ---------------------------------------------------

    def test_ssh_add_lists_the_users_key_through_the_default_mount(self):
        d = self.daemon()
        agent = self.user_agent()
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
RUN --mount=type=ssh ssh-add -l > /out/listed && echo "$SSH_AUTH_SOCK" > /out/sock && \
    stat -c '%a %u %g %F' /run/buildkit/ssh_agent.0 > /out/stat
""")
        self.build(d, ctx, "-t", "listed", "--ssh", "default", env=self.agent_env(d, agent))
        files, config, _ = self.saved(d, "listed")
        self.assertEqual(self.text(files, "out/listed").strip(), self.fingerprint)
        self.assertEqual(self.text(files, "out/sock"), "/run/buildkit/ssh_agent.0\n")
        self.assertEqual(self.text(files, "out/stat"), "600 0 0 socket\n")
        self.assertNotIn("SSH_AUTH_SOCK", " ".join(config["config"].get("Env") or []),
                         "the step's SSH_AUTH_SOCK reached the image's config")

    def test_an_agent_socket_path_as_the_value_and_two_ids_give_two_sockets(self):
        d = self.daemon()
        agent = self.user_agent()
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
RUN --mount=type=ssh,id=mine --mount=type=ssh,id=other \
    sh -c 'echo "$SSH_AUTH_SOCK" > /out/sock; ssh-add -l > /out/first; \
           SSH_AUTH_SOCK=/run/buildkit/ssh_agent.1 ssh-add -l > /out/second'
""")
        # The agent named by path (no SSH_AUTH_SOCK in the client's environment); the second ID
        # is a key file, served by an agent of kbuildctl's own.
        self.build(d, ctx, "-t", "two", "--ssh", f"mine={agent.socket}", "--ssh", f"other={self.other_key}")
        files, _, _ = self.saved(d, "two")
        self.assertEqual(self.text(files, "out/sock"), "/run/buildkit/ssh_agent.0\n")
        self.assertEqual(self.text(files, "out/first").strip(), self.fingerprint)
        self.assertEqual(self.text(files, "out/second").strip(), self.other_fingerprint)

    def test_three_concurrent_connections_in_one_step_and_two_steps_at_once_all_list_the_key(self):
        d = self.daemon()
        agent = self.user_agent()
        one = "(ssh-add -l > /out/{n}; echo $? > /out/{n}.rc)"
        ctx = self.context(f"""\
FROM {TOOLS} AS a
RUN mkdir /out
RUN --mount=type=ssh sh -c '{one.format(n=1)} & {one.format(n=2)} & {one.format(n=3)} & wait'

FROM {TOOLS} AS b
RUN mkdir /out
RUN --mount=type=ssh sh -c 'for i in 1 2 3 4 5; do ssh-add -l || exit 1; done > /out/b'

FROM {TOOLS} AS c
RUN mkdir /out
RUN --mount=type=ssh sh -c 'for i in 1 2 3 4 5; do ssh-add -l || exit 1; done > /out/c'

FROM {BASE}
COPY --from=a /out/ /out/
COPY --from=b /out/ /out/
COPY --from=c /out/ /out/
""")
        self.build(d, ctx, "-t", "concurrent", "--ssh", "default", env=self.agent_env(d, agent))
        files, _, _ = self.saved(d, "concurrent")
        for n in "123":
            self.assertEqual(self.text(files, f"out/{n}.rc"), "0\n", f"connection {n}")
            self.assertEqual(self.text(files, f"out/{n}").strip(), self.fingerprint, f"connection {n}")
        for stage in "bc":
            self.assertEqual(self.text(files, f"out/{stage}").strip().splitlines(), [self.fingerprint] * 5, stage)

    # -- 2. key files: kbuildctl's own agent ----------------------------------------------------

    def kbuildctl_agents(self, runtime_dir):
        """ssh-agent processes serving a socket under `runtime_dir` (kbuildctl's, which makes
        its agent's directory in $XDG_RUNTIME_DIR)."""
        return [(pid, cmd) for pid, cmd in processes_under(runtime_dir) if "ssh-agent" in cmd]

    def kill_kbuildctl_agents(self, runtime_dir):
        for pid, _ in self.kbuildctl_agents(runtime_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def test_a_key_file_is_served_by_an_agent_of_kbuildctl_that_ends_with_it(self):
        d = self.daemon()
        runtime_dir = self.path("xdg-runtime")
        os.makedirs(runtime_dir, 0o700)
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
RUN --mount=type=ssh,id=deploy ssh-add -l > /out/listed
""")
        env = dict(d.env(), XDG_RUNTIME_DIR=runtime_dir)
        env.pop("SSH_AUTH_SOCK", None)
        process = subprocess.Popen(d.argv("build", "--progress", "plain", "-t", "keyfile", "--ssh",
                                          f"deploy={self.key},{self.other_key}", ctx),
                                   cwd=ctx, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        seen = []
        while process.poll() is None:
            seen.extend(self.kbuildctl_agents(runtime_dir))
            time.sleep(0.02)
        stdout, stderr = process.communicate()
        self.assertEqual(process.returncode, 0, stderr[-3000:])
        self.assertTrue(seen, "no ssh-agent with its socket in $XDG_RUNTIME_DIR ran during the build: "
                              "the check below would see nothing either")
        files, _, _ = self.saved(d, "keyfile")
        self.assertEqual(sorted(self.text(files, "out/listed").strip().splitlines()),
                         sorted([self.fingerprint, self.other_fingerprint]))
        self.assertEqual(self.kbuildctl_agents(runtime_dir), [], "kbuildctl's ssh-agent outlived it")
        self.assertEqual(session_members(process.pid), [], "a process of kbuildctl's session outlived it")
        self.assertEqual(os.listdir(runtime_dir), [], "kbuildctl's agent directory was left")

    def test_a_killed_kbuildctl_leaves_no_agent_behind(self):
        d = self.daemon()
        runtime_dir = self.path("xdg-runtime")
        os.makedirs(runtime_dir, 0o700)
        ctx = self.context(f"FROM {TOOLS}\nRUN --mount=type=ssh ssh-add -l && sleep 60\n")
        env = dict(d.env(), XDG_RUNTIME_DIR=runtime_dir)
        self.addCleanup(self.kill_kbuildctl_agents, runtime_dir)  # reported below, not again
        process = subprocess.Popen(d.argv("build", "--progress", "plain", "--ssh", f"default={self.key}", ctx),
                                   cwd=ctx, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            self.assertTrue(wait_until(lambda: self.kbuildctl_agents(runtime_dir), 60),
                            "kbuildctl's ssh-agent never ran")
            # The step has connected once its sleep runs: the forwarding is in use.
            time.sleep(1)
            process.kill()
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        # The daemon notices its client has gone and cancels the build; the step's sleep ends.
        self.assertTrue(wait_until(lambda: not session_members(d.process.pid), 60),
                        f"the build's processes outlived its killed client: {session_members(d.process.pid)}")
        # Debian's ssh-agent is setgid _ssh: its execve clears a PR_SET_PDEATHSIG set before it.
        self.assertTrue(wait_until(lambda: not self.kbuildctl_agents(runtime_dir), 10),
                        f"kbuildctl was killed and its agent still runs: {self.kbuildctl_agents(runtime_dir)}")
        # The agent's directory is left (nobody ran kbuildctl's destructors), but nothing listens.

    # -- 3. the mount: target, mode, uid, gid, SSH_AUTH_SOCK -----------------------------------

    def test_custom_target_mode_uid_gid_and_who_may_connect(self):
        d = self.daemon()
        agent = self.user_agent()
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir -m 777 /out
RUN --mount=type=ssh,target=/opt/agent.sock,mode=0660,uid=1000,gid=1001 \
    sh -c 'stat -c "%a %u %g %F" /opt/agent.sock > /out/custom; echo "$SSH_AUTH_SOCK" > /out/custom-sock; \
           ssh-add -l > /out/custom-listed'
WORKDIR /work
RUN --mount=type=ssh,target=relative/agent stat -c '%a %F' /work/relative/agent > /out/relative
USER builder
RUN --mount=type=ssh sh -c 'ssh-add -l >/dev/null 2>&1 && echo LISTED || echo DENIED' > /out/as-builder
RUN --mount=type=ssh,uid=1000 sh -c 'ssh-add -l >/dev/null 2>&1 && echo LISTED || echo DENIED' > /out/as-owner
RUN --mount=type=ssh,mode=0666 sh -c 'ssh-add -l >/dev/null 2>&1 && echo LISTED || echo DENIED' > /out/as-other
""")
        self.build(d, ctx, "-t", "custom", "--ssh", "default", env=self.agent_env(d, agent))
        files, _, layers = self.saved(d, "custom")
        self.assertEqual(self.text(files, "out/custom"), "660 1000 1001 socket\n")
        self.assertEqual(self.text(files, "out/custom-sock"), "/opt/agent.sock\n")
        self.assertEqual(self.text(files, "out/custom-listed").strip(), self.fingerprint)
        self.assertEqual(self.text(files, "out/relative"), "600 socket\n")
        self.assertEqual(self.text(files, "out/as-builder"), "DENIED\n", "a 0600 root socket used by uid 1000")
        self.assertEqual(self.text(files, "out/as-owner"), "LISTED\n")
        self.assertEqual(self.text(files, "out/as-other"), "LISTED\n")
        entries = {name for layer in layers for name in layer}
        for stub in ("opt/agent.sock", "work/relative", "work/relative/agent", "run", "run/buildkit"):
            self.assertNotIn(stub, entries, "a mount target the step did not write reached a layer")

    def test_ssh_auth_sock_set_by_the_image_is_kept(self):
        d = self.daemon()
        agent = self.user_agent()
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
ENV SSH_AUTH_SOCK=/opt/mine.sock
RUN --mount=type=ssh sh -c 'echo "$SSH_AUTH_SOCK" > /out/sock; \
    SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0 ssh-add -l > /out/listed'
""")
        self.build(d, ctx, "-t", "imageenv", "--ssh", "default", env=self.agent_env(d, agent))
        files, _, _ = self.saved(d, "imageenv")
        self.assertEqual(self.text(files, "out/sock"), "/opt/mine.sock\n")
        self.assertEqual(self.text(files, "out/listed").strip(), self.fingerprint)

    # -- 4. required and optional ---------------------------------------------------------------

    def test_a_missing_required_agent_fails_the_step_with_buildkits_messages(self):
        d = self.daemon()
        agent = self.user_agent()
        for n, mount in enumerate(["type=ssh,required", "type=ssh,required=true"]):
            # The marker is in the step's output only, not in its command.
            ctx = self.context(f"FROM {TOOLS}\nRUN --mount={mount} echo RAN-$((100+{n}))\n", name=f"ctx{n}")
            # No --ssh at all.
            result = self.build(d, ctx, check=False)
            self.assertNotEqual(result.returncode, 0, mount)
            self.assertIn('no SSH key "default" forwarded from the client', result.stderr, mount)
            self.assertNotIn(f"RAN-{100 + n}", result.stderr, mount)
            # --ssh for another ID only.
            result = self.build(d, ctx, "--ssh", f"other={agent.socket}", check=False)
            self.assertNotEqual(result.returncode, 0, mount)
            self.assertIn("unset ssh forward key default", result.stderr, mount)
            self.assertNotIn(f"RAN-{100 + n}", result.stderr, mount)
        ctx = self.context(f"FROM {TOOLS}\nRUN --mount=type=ssh,id=deploy,required echo RAN-$((6*7))\n", name="ctx-id")
        result = self.build(d, ctx, "--ssh", f"default={agent.socket}", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("unset ssh forward key deploy", result.stderr)
        # The same build with the ID forwarded runs: the failures above were the missing agent's.
        self.assertNotIn("RAN-42", result.stderr)
        result = self.build(d, ctx, "--ssh", f"deploy={agent.socket}")
        self.assertIn("RAN-42", result.stderr)

    def test_a_missing_optional_agent_runs_the_step_without_a_socket(self):
        d = self.daemon()
        agent = self.user_agent()
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
RUN --mount=type=ssh sh -c 'test -e /run/buildkit/ssh_agent.0 && echo EXISTS || echo ABSENT; \
    ssh-add -l >/dev/null 2>&1 && echo LISTED || echo NO-AGENT' > /out/default
RUN --mount=type=ssh,id=nope,target=/opt/nope.sock sh -c 'test -e /opt/nope.sock && echo EXISTS || echo ABSENT' \
    > /out/other
""")
        self.build(d, ctx, "-t", "optional-none")
        files, _, layers = self.saved(d, "optional-none")
        self.assertEqual(self.text(files, "out/default"), "ABSENT\nNO-AGENT\n")
        self.assertEqual(self.text(files, "out/other"), "ABSENT\n")
        # With another ID forwarded, the same.
        self.build(d, ctx, "-t", "optional-other", "--ssh", f"elsewhere={agent.socket}", "--no-cache")
        files, _, layers2 = self.saved(d, "optional-other")
        self.assertEqual(self.text(files, "out/default"), "ABSENT\nNO-AGENT\n")
        self.assertEqual(self.text(files, "out/other"), "ABSENT\n")
        entries = {name for layer in layers + layers2 for name in layer}
        self.assertFalse({"run", "run/buildkit", "opt/nope.sock"} & entries, sorted(entries))

    # -- 5. where the agent must not be ---------------------------------------------------------

    def test_a_step_without_the_mount_sees_no_agent(self):
        d = self.daemon()
        agent = self.user_agent()
        probe = ("sh -c 'ls -A /run/buildkit 2>&1; echo \"${SSH_AUTH_SOCK-unset}\"; "
                 "ssh-add -l >/dev/null 2>&1 && echo LISTED || echo NO-AGENT'")
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
RUN --mount=type=ssh ssh-add -l > /out/with
RUN {probe} > /out/without
RUN --mount=type=ssh,id=other true
RUN {probe} > /out/after-other
""")
        self.build(d, ctx, "-t", "without", "--ssh", "default", "--ssh", f"other={agent.socket}",
                   env=self.agent_env(d, agent))
        files, config, _ = self.saved(d, "without")
        self.assertEqual(self.text(files, "out/with").strip(), self.fingerprint)
        absent = "ls: /run/buildkit: No such file or directory\nunset\nNO-AGENT\n"
        self.assertEqual(self.text(files, "out/without"), absent)
        self.assertEqual(self.text(files, "out/after-other"), absent)

    def test_the_socket_leaves_nothing_in_the_image_nor_the_daemons_store(self):
        d = self.daemon()
        agent = self.user_agent()
        ctx = self.context(f"""\
FROM {TOOLS}
RUN --mount=type=ssh --mount=type=ssh,id=x,target=/opt/x.sock sh -c 'ssh-add -l > /listed && sleep 3'
""")
        mounts_dir = os.path.join(d.root, "mounts")
        env = dict(self.agent_env(d, agent))
        process = subprocess.Popen(d.argv("build", "--progress", "plain", "-t", "clean", "--ssh", "default",
                                          "--ssh", f"x={agent.socket}", "--output",
                                          f"type=tar,dest={self.path('rootfs.tar')}", ctx),
                                   cwd=ctx, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = set()
        while process.poll() is None:
            if os.path.isdir(mounts_dir):
                seen.update(n for n in os.listdir(mounts_dir) if n.startswith("ssh-"))
            time.sleep(0.02)
        stderr = process.communicate()[1]
        self.assertEqual(process.returncode, 0, stderr[-3000:])
        self.assertEqual(len(seen), 2, f"the step's two agent sockets should have been under {mounts_dir}: {seen}")
        self.assertEqual([n for n in os.listdir(mounts_dir) if n.startswith("ssh-")], [],
                         "an agent socket directory outlived its step")
        with tarfile.open(self.path("rootfs.tar")) as tar:
            names = {m.name.removeprefix("./").rstrip("/") for m in tar}
        self.assertIn("listed", names)
        self.assertFalse({"run", "run/buildkit", "run/buildkit/ssh_agent.0", "opt/x.sock"} & names,
                         "a socket or its stub directory is in the exported rootfs")

    def test_the_step_cannot_change_the_users_agent(self):
        d = self.daemon()
        agent = self.user_agent()
        before = agent.listed()
        self.assertEqual(before, [self.fingerprint])
        shutil.copy(self.other_key, self.path("new_key"))
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
COPY new_key /new_key
RUN chmod 600 /new_key
RUN --mount=type=ssh sh -c 'ssh-add -D > /out/delete 2>&1; echo $? >> /out/delete; \
    ssh-add -d /new_key > /out/delete-one 2>&1; echo $? >> /out/delete-one; \
    ssh-add /new_key > /out/add 2>&1; echo $? >> /out/add; \
    echo password | ssh-add -x > /out/lock 2>&1; echo $? >> /out/lock; \
    ssh-add -l > /out/after'
""")
        shutil.copy(self.other_key, os.path.join(ctx, "new_key"))
        self.build(d, ctx, "-t", "readonly", "--ssh", "default", env=self.agent_env(d, agent))
        files, _, _ = self.saved(d, "readonly")
        for what in ("delete", "delete-one", "add", "lock"):
            rc = self.text(files, f"out/{what}").strip().splitlines()[-1]
            self.assertNotEqual(rc, "0", f"ssh-add {what} in the step succeeded: {self.text(files, 'out/' + what)}")
        self.assertEqual(self.text(files, "out/after").strip(), self.fingerprint, "the step changed what it sees")
        self.assertEqual(agent.listed(), before, "the step changed the user's agent")
        # The user's agent is not locked: it still signs.
        run(["ssh-keygen", "-Y", "sign", "-f", self.key + ".pub", "-n", "file", self.path("new_key")],
            env=agent.env())

    # -- 6. git clone over ssh from a real sshd -------------------------------------------------

    def git_repository(self, content):
        """A bare repository holding one commit with README = `content`."""
        work, bare = self.path("git-work"), self.path("repo.git")
        os.makedirs(work)
        git = ["git", "-c", "user.name=kbuild test", "-c", "user.email=test@kbuild.invalid", "-C", work]
        run(git + ["init", "-q", "-b", "main"])
        write(os.path.join(work, "README"), content)
        run(git + ["add", "README"])
        run(git + ["commit", "-q", "-m", "first"])
        run(["git", "clone", "-q", "--bare", work, bare])
        return bare

    def test_git_clone_over_ssh_from_an_sshd_through_the_forwarded_agent(self):
        d = self.daemon()
        agent = self.user_agent()
        content = f"cloned-{uuid.uuid4().hex}\n"
        repo = self.git_repository(content)
        server = SshServer(self.path("sshd"), [self.key])
        self.addCleanup(server.stop)
        url = f"ssh://root@127.0.0.1:{server.port}{repo}"
        # The server takes the key from the user's agent: the setup, before the build uses it.
        host_clone = self.path("host-clone")
        run(["git", "clone", "-q", url, host_clone], env=dict(agent.env(), GIT_SSH_COMMAND=f"ssh {SSH_OPTIONS}"))
        with open(os.path.join(host_clone, "README")) as f:
            self.assertEqual(f.read(), content)
        ctx = self.context(f"""\
FROM {TOOLS}
RUN mkdir /out
ENV GIT_SSH_COMMAND="ssh {SSH_OPTIONS}"
RUN --network=host --mount=type=ssh git clone -q {url} /out/clone
RUN --network=host sh -c 'git clone -q {url} /out/without > /out/without.log 2>&1; echo $? > /out/without.rc'
""")
        self.build(d, ctx, "-t", "cloned", "--ssh", "default", "--allow", "network.host",
                   env=self.agent_env(d, agent))
        files, _, _ = self.saved(d, "cloned")
        self.assertEqual(self.text(files, "out/clone/README"), content)
        self.assertIn("out/clone/.git/HEAD", files)
        self.assertNotEqual(self.text(files, "out/without.rc"), "0\n",
                            f"cloned without the agent: {self.text(files, 'out/without.log')}")
        self.assertIn("Permission denied", self.text(files, "out/without.log"))
        fingerprint = self.fingerprint.split()[1]
        accepted = [line for line in server.log().splitlines() if "Accepted publickey for root" in line]
        self.assertEqual(len(accepted), 2, f"the host's clone and the step's:\n{server.log()[-3000:]}")
        self.assertTrue(all(fingerprint in line for line in accepted), accepted)


def main():
    return suite.main("ssh", SshTest, needs_root="they run root daemons and an sshd", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
