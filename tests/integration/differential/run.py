#!/usr/bin/env python3
"""Differential test: kbuild must build the same images as BuildKit (Docker 20.10's).

    python3 tests/integration/differential/run.py [--case NAME]... [--keep] [--dump]

Needs root (it starts a private dockerd and kbuildd on unix sockets in a temp dir, and stops
them and removes everything on any exit, Ctrl-C included). Each case in cases/<name>/ is a
Dockerfile plus its context; it may also have:

  args        extra build flags for both builders, shell-quoted, '#' comments
              (e.g. `--build-arg X=1 --target t`); `-f FILE` replaces `-f Dockerfile`
  prepare.py  run in a copy of the context before the builds (python3, cwd = the copy, with
              this directory on PYTHONPATH for `import casegen`) to make what git cannot
              hold or should not: empty dirs, special modes, hardlinks, archives, big files
  args.kbuild extra flags for kbuild only (`--allow security.insecure`: Docker 20.10's
              `docker build` has no --allow)
  Dockerfile.buildkit
              what BuildKit builds instead of Dockerfile, for a feature Docker 20.10's frontend
              lacks: the same image written without it (see README.md)
  created_by.json
              with Dockerfile.buildkit: the history's created_by strings current BuildKit
              writes for Dockerfile, compared with kbuild's instead of BuildKit's
  pre/<tag>/  images built first, in name order, by each builder and tagged <tag>, for the
              case's Dockerfile to use in FROM (ONBUILD); they are compared too
  ssh-agent   (any content) the builds need an SSH agent: the harness starts an `ssh-agent`
              holding a new ed25519 key for the case and gives both clients its socket as
              SSH_AUTH_SOCK (the case's `args` say `--ssh default`)

Every case is built FROM scratch, FROM kbuild-diff-base, built from base/ by dockerd first
and handed to kbuild with `kbuildctl load`, or FROM kbuild-diff-busybox (for RUN: Debian's
static busybox, written by tests/integration/base_image.py and loaded into both daemons), so
no case needs a network.

For each image the harness compares BuildKit's with kbuild's: the flattened filesystem of the
docker-archive (whiteouts applied) path by path, each layer as written (whiteouts, hardlinks,
uname/gname), the image config fields a Dockerfile decides, the history, the number of layers
and each side's diff_ids against its layers; then that kbuild's rootfs tar export holds the
same tree, and that docker loads kbuild's archive. With --self-check it also checks itself: BuildKit's own rootfs
export must equal its flattened archive. Until kbuild's binaries offer the interface used here
(see daemons.kbuild_unavailable), only the BuildKit side runs and kbuild is reported skipped.

The multi-platform cases in platform_cases/ (built with --platform A,B, the foreign platform
under qemu, bases from a loopback registry) are run and compared by multiplatform.py.

fake_kbuild/ holds stand-ins that make "kbuild" a second dockerd: with them every case must
pass, which shows the comparison reports no difference between two BuildKit builds.
"""

import argparse
import concurrent.futures
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import image_tree  # noqa: E402
import legacy  # noqa: E402
sys.path.insert(0, os.path.dirname(HERE))
import base_image  # noqa: E402
from daemons import (BuildFailed, Dockerd, HarnessError, Kbuildd, Workspace,  # noqa: E402
                     kbuild_unavailable)
import multiplatform  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CASES_DIR = os.path.join(HERE, "cases")
BASE_DIR = os.path.join(HERE, "base")
BASE_TAG = "kbuild-diff-base"
BASE_CASE = "base-image"  # the base itself, built by both builders, is a case too
BUSYBOX_TAG = "kbuild-diff-busybox"  # what RUN cases build FROM: the same archive for both

# Context mtimes are set to fixed, distinct values in 2020 (see fix_mtimes), far before any
# build, so that a builder's build-time stamps are told apart from preserved mtimes.
CONTEXT_EPOCH = 1577836800  # 2020-01-01T00:00:00Z
MAX_DIFF_LINES = 40


# Files of a case that are not part of its context.
CASE_FILES = ("args", "args.kbuild", "created_by.json", "ssh-agent") + multiplatform.CASE_FILES
# A case's Dockerfile for BuildKit alone, for features Docker 20.10's frontend lacks.
BUILDKIT_DOCKERFILE = "Dockerfile.buildkit"


class Case:
    def __init__(self, name, source):
        self.name, self.source = name, source
        self.args = read_args(os.path.join(source, "args"))
        self.kbuild_args = read_args(os.path.join(source, "args.kbuild"))
        self.created_by = None
        if os.path.exists(os.path.join(source, "created_by.json")):
            with open(os.path.join(source, "created_by.json")) as expected:
                self.created_by = json.load(expected)
        self.ssh_agent = os.path.exists(os.path.join(source, "ssh-agent"))
        pre = os.path.join(source, "pre")
        self.pre = [(tag, os.path.join(pre, tag)) for tag in
                    (sorted(os.listdir(pre)) if os.path.isdir(pre) else [])]


def read_args(path):
    if not os.path.exists(path):
        return []
    with open(path) as args:
        return shlex.split(args.read(), comments=True)


def dockerfile_flags(args):
    names_a_file = any(a in ("-f", "--file") or a.startswith("--file=") for a in args)
    return args if names_a_file else ["-f", "Dockerfile"] + args


def fix_mtimes(root):
    """Gives every path of a context a fixed mtime derived from its name: the same on every
    run, distinct between files, and in 2020."""
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in dirs + files + ([""] if directory == root else []):
            path = os.path.join(directory, name) if name else directory
            rel = os.path.relpath(path, root).encode()
            stamp = CONTEXT_EPOCH + zlib.crc32(rel) % (365 * 86400)
            os.utime(path, (stamp, stamp), follow_symlinks=False)


def prepare_context(source, destination):
    """Copies a case's directory (without pre/, args, prepare.py) to `destination` and runs its
    prepare.py there."""
    shutil.copytree(source, destination, symlinks=True,
                    ignore=lambda d, names: ["pre"] if d == source else [])
    script = os.path.join(destination, "prepare.py")
    if os.path.exists(script):
        env = dict(os.environ, PYTHONPATH=HERE, PYTHONDONTWRITEBYTECODE="1")
        result = subprocess.run([sys.executable, "prepare.py"], cwd=destination, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise HarnessError(f"{source}/prepare.py failed:\n"
                               + result.stdout.decode(errors="replace"))
        os.unlink(script)
    for name in CASE_FILES:
        if os.path.exists(os.path.join(destination, name)):
            os.unlink(os.path.join(destination, name))
    fix_mtimes(destination)
    return destination


def write_layerless_archive(inspected, history, tag, archive):
    """Docker 20.10 cannot `docker save` an image without layers ("empty export - not
    implemented"), e.g. FROM scratch with only metadata. Such an image's archive is written
    from its `docker image inspect` (which holds every compared field) and its `docker image
    history --format '{{json .}}'` lines (newest first; without layers, every entry is empty)."""
    entries = [json.loads(line) for line in reversed(history.splitlines()) if line.strip()]
    config = {"architecture": inspected.get("Architecture"), "os": inspected.get("Os"),
              "author": inspected.get("Author"), "config": inspected.get("Config"),
              "rootfs": {"type": "layers", "diff_ids": []},
              "history": [{"created_by": e.get("CreatedBy", ""), "comment": e.get("Comment", ""),
                           "empty_layer": True} for e in entries]}
    if inspected.get("Variant"):
        config["variant"] = inspected["Variant"]
    manifest = [{"Config": "config.json", "RepoTags": [tag + ":latest"], "Layers": []}]
    with tarfile.open(archive, "w") as tar:
        for name, value in (("config.json", config), ("manifest.json", manifest)):
            data = json.dumps(value).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class SshAgent:
    """A case's SSH agent: `ssh-agent -D` (the harness's child, killed by stop()) at a socket
    in `directory`, holding one ed25519 key made for it. Both builders reach the same agent, so
    what a step derives from its keys is the same on both sides."""

    def __init__(self, directory):
        self.socket = os.path.join(directory, "agent.sock")
        key = os.path.join(directory, "id_ed25519")
        self.process = None
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kbuild-diff", "-f", key],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.process = subprocess.Popen(["ssh-agent", "-D", "-a", self.socket], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not os.path.exists(self.socket):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise HarnessError(f"ssh-agent did not listen on {self.socket}")
                time.sleep(0.02)
            subprocess.run(["ssh-add", "-q", key], check=True, env=self.env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        except (OSError, subprocess.CalledProcessError) as error:
            self.stop()
            raise HarnessError(f"starting an ssh-agent (Debian's openssh-client): {error}") from error
        except BaseException:
            self.stop()
            raise

    def env(self):
        return {"SSH_AUTH_SOCK": self.socket}

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


class BuildKitBuilder:
    """The reference: `docker build` with BuildKit on the private dockerd."""

    name = "buildkit"

    def __init__(self, dockerd, rootfs_export):
        self.dockerd = dockerd
        self.rootfs_export = rootfs_export

    def build(self, tag, context, args, out, env=None):
        if os.path.exists(os.path.join(context, BUILDKIT_DOCKERFILE)):
            args = ["-f", BUILDKIT_DOCKERFILE] + args
        flags = dockerfile_flags(args)
        self.dockerd.client(["build", "--network", "host", "-t", tag] + flags + ["."], cwd=context, env=env)
        archive, rootfs = os.path.join(out, "image.tar"), None
        saved = self.dockerd.client(["save", tag, "-o", archive], check=False)
        if saved.returncode != 0:
            if b"empty export" not in saved.stdout:
                raise BuildFailed(f"docker save {tag}", saved)
            inspected = json.loads(self.dockerd.client(["image", "inspect", tag]).stdout)[0]
            history = self.dockerd.client(["image", "history", "--no-trunc", "--format",
                                           "{{json .}}", tag]).stdout.decode()
            write_layerless_archive(inspected, history, tag, archive)
        if self.rootfs_export:
            # The same build again (from cache) for BuildKit's own rootfs export.
            rootfs = os.path.join(out, "rootfs.tar")
            self.dockerd.client(["build", "--network", "host", "-o", f"type=tar,dest={rootfs}"]
                                + flags + ["."], cwd=context, env=env)
        return archive, rootfs

    def provide(self, tag, archive):
        pass  # `docker build -t` already made it an image dockerd resolves in FROM


class KbuildBuilder:
    """kbuild: `kbuildctl build` exporting a docker-archive, then (cached) a rootfs tar."""

    name = "kbuild"

    def __init__(self, kbuildd):
        self.kbuildd = kbuildd

    def build(self, tag, context, args, out, extra_args=(), env=None):
        archive, rootfs = os.path.join(out, "image.tar"), os.path.join(out, "rootfs.tar")
        flags = ["build", "-t", tag] + dockerfile_flags(args) + list(extra_args)
        self.kbuildd.client(flags + ["--output", f"type=docker,dest={archive}", "."], cwd=context, env=env)
        self.kbuildd.client(flags + ["--output", f"type=tar,dest={rootfs}", "."], cwd=context, env=env)
        return archive, rootfs

    def provide(self, tag, archive):
        self.kbuildd.client(["load", "-i", archive])


class Report:
    """What one case found: problems (any makes it fail) and, with --dump, notes."""

    def __init__(self):
        self.problems = []
        self.notes = []
        self.skipped = None  # why the case could not run here (a missing precondition)

    def add(self, title, lines):
        if not lines:
            return
        self.problems.append(f"{title}:")
        shown = lines[:MAX_DIFF_LINES]
        self.problems += ["  " + line for line in shown]
        if len(lines) > len(shown):
            self.problems.append(f"  ... and {len(lines) - len(shown)} more")


def expected_history(config, created_by):
    """BuildKit's config with the created_by of its history entries replaced by a case's
    created_by.json: for a case BuildKit builds from Dockerfile.buildkit, the history current
    BuildKit writes for the case's Dockerfile (empty_layer and comment stay BuildKit's)."""
    history = config.get("history") or []
    if len(created_by) != len(history):
        raise HarnessError(f"created_by.json lists {len(created_by)} entries, BuildKit's image "
                           f"has {len(history)}")
    return dict(config, history=[dict(entry, created_by=text)
                                 for entry, text in zip(history, created_by)])


def compare_images(report, label, bk, kb_archive, kb_rootfs, mtimes, created_by=None,
                   kbuild_host_names=False):
    """Adds to `report` every difference between BuildKit's image `bk` (read) and kbuild's
    outputs of the same image."""
    try:
        kb = image_tree.read_docker_archive(kb_archive)
    except (image_tree.ArchiveError, tarfile.TarError, KeyError, ValueError, OSError,
            EOFError) as error:
        report.add(f"{label}: kbuild's docker-archive", [str(error)])
        return
    report.add(f"{label}: kbuild's docker-archive is inconsistent", kb.problems)
    tree_diff = compare_image(report, label, bk, kb, mtimes, created_by, kbuild_host_names)
    try:
        kb_root = image_tree.read_rootfs_tar(kb_rootfs)
    except (image_tree.ArchiveError, tarfile.TarError, OSError, EOFError) as error:
        report.add(f"{label}: kbuild's rootfs tar (--output type=tar)", [str(error)])
        return
    # Against BuildKit's flattened archive: the same tree as its own rootfs export (which
    # --self-check verifies), without a second build.
    root_diff = image_tree.diff_trees(bk.tree, kb_root, "buildkit", "kbuild", mtimes)
    if root_diff and root_diff == tree_diff:
        root_diff = [f"the same {len(root_diff)} differences as the docker-archive's"]
    report.add(f"{label}: filesystem (kbuild's rootfs tar export)", root_diff)


def compare_image(report, label, bk, kb, mtimes, created_by=None, kbuild_host_names=False):
    """Adds to `report` every difference between two images read (BuildKit's `bk`, kbuild's
    `kb`): layer count, config, history, each layer, the flattened tree. Returns the tree's
    differences."""
    if bk.layer_count != kb.layer_count:
        report.add(f"{label}: layers", [f"buildkit has {bk.layer_count}, kbuild {kb.layer_count}"])
    report.add(f"{label}: image config",
               image_tree.diff_configs(bk.config, kb.config, "buildkit", "kbuild"))
    report.add(f"{label}: config history (created_by, empty_layer, comment)",
               image_tree.diff_history(expected_history(bk.config, created_by) if created_by
                                       else bk.config, kb.config, "buildkit", "kbuild"))
    report.add(f"{label}: layer contents (per layer, as written)",
               image_tree.diff_layers(bk, kb, "buildkit", "kbuild", mtimes, kbuild_host_names))
    tree_diff = image_tree.diff_trees(bk.tree, kb.tree, "buildkit", "kbuild", mtimes)
    report.add(f"{label}: filesystem (flattened layers)", tree_diff)
    return tree_diff


class Session:
    def __init__(self, options, workspace):
        self.options, self.workspace = options, workspace
        # Every mtime from here on is a build-time stamp (contexts are set to 2020).
        self.mtimes = image_tree.MtimePolicy(time.time() - 2)
        self.dockerd = Dockerd(workspace)
        self.buildkit = BuildKitBuilder(self.dockerd, rootfs_export=options.self_check)
        self.kbuildd = None
        self.kbuild = None
        self.skip_reason = None
        self.platform_base = None  # the registry of the multi-platform cases' busybox index
        self.platform_skip = None  # why the multi-platform cases cannot run here

    def start(self):
        self.dockerd.start()
        build_dir = self.options.build_dir
        # Absolute: the clients run in each case's context directory.
        kbuildd = os.path.abspath(self.options.kbuildd
                                  or os.path.join(build_dir, "service", "kbuildd"))
        kbuildctl = os.path.abspath(self.options.kbuildctl
                                    or os.path.join(build_dir, "cli", "kbuildctl"))
        self.skip_reason = ("--buildkit-only was given" if self.options.buildkit_only
                            else kbuild_unavailable(kbuildd, kbuildctl))
        if self.skip_reason is None:
            self.kbuildd = Kbuildd(self.workspace, kbuildd, kbuildctl)
            self.kbuildd.start()
            self.kbuild = KbuildBuilder(self.kbuildd)

    def stop(self):
        for daemon in (self.kbuildd, self.dockerd, self.platform_base):
            if daemon is not None:
                daemon.stop()

    def build_base(self, cases):
        """kbuild-diff-base, built by dockerd and loaded into kbuild from docker's archive;
        kbuild-diff-busybox loaded into both; for multi-platform `cases`, the registry holding
        their busybox index (unless emulation is missing: then they are skipped)."""
        context = prepare_context(BASE_DIR, os.path.join(self.workspace.sub("base"), "context"))
        archive = os.path.join(self.workspace.sub("base"), "base.tar")
        try:
            self.dockerd.client(["build", "--network", "host", "-t", BASE_TAG, "."], cwd=context)
            self.dockerd.client(["save", BASE_TAG, "-o", archive])
            if self.kbuild is not None:
                self.kbuild.provide(BASE_TAG, archive)
        except (BuildFailed, subprocess.TimeoutExpired) as error:
            raise HarnessError(f"making {BASE_TAG} for every case: {error}") from error
        busybox = os.path.join(self.workspace.sub("base"), "busybox.tar")
        try:
            base_image.write_base_image(busybox, BUSYBOX_TAG)
            self.dockerd.client(["load", "-i", busybox])
            if self.kbuild is not None:
                self.kbuild.provide(BUSYBOX_TAG, busybox)
        except (RuntimeError, OSError, subprocess.CalledProcessError, BuildFailed,
                subprocess.TimeoutExpired) as error:
            raise HarnessError(f"making {BUSYBOX_TAG} for the RUN cases: {error}") from error
        if any(isinstance(case, multiplatform.PlatformCase) for case in cases):
            self.platform_skip = multiplatform.emulation_missing()
            if self.platform_skip is None:
                self.platform_base = multiplatform.BusyboxRegistry(self.workspace)
                self.platform_base.start(base_image)

    def run_case(self, case):
        """Builds one case with each builder and compares; returns its Report."""
        report = Report()
        try:
            self._run_case(case, report)
        except (image_tree.ArchiveError, tarfile.TarError, OSError, ValueError, KeyError,
                EOFError, HarnessError, BuildFailed, subprocess.TimeoutExpired) as error:
            report.add("harness error", [f"{type(error).__name__}: {error}"])
        return report

    def _run_case(self, case, report):
        if self.options.legacy:
            legacy.run_legacy_case(self, case, report, prepare_context)
            return
        if isinstance(case, multiplatform.PlatformCase):
            if self.platform_skip:
                report.skipped = self.platform_skip
                return
            multiplatform.run_case(self, case, report, prepare_context, dockerfile_flags,
                                   self.compare_platform_image)
            return
        agent = SshAgent(self.workspace.sub("ssh-agents", case.name)) if case.ssh_agent else None
        try:
            self._build_and_compare(case, report, agent.env() if agent else None)
        finally:
            if agent is not None:
                agent.stop()

    def _build_and_compare(self, case, report, env):
        """`env`: what the clients' environment gets added (the case's SSH_AUTH_SOCK)."""
        root = self.workspace.sub("cases", case.name)
        contexts = [(tag, prepare_context(src, os.path.join(root, "pre", tag)),
                     read_args(os.path.join(src, "args"))) for tag, src in case.pre]
        contexts.append((None, prepare_context(case.source, os.path.join(root, "context")),
                         case.args))
        outputs = {}  # (builder name, tag) -> (archive, rootfs)
        for builder in [self.buildkit] + ([self.kbuild] if self.kbuild else []):
            for tag, context, args in contexts:
                image = tag or f"kbdiff/{builder.name}-{case.name}"
                out = self.workspace.sub("out", case.name, builder.name, tag or "main")
                try:
                    main_kbuild = builder is self.kbuild and tag is None
                    extra = {"extra_args": case.kbuild_args} if main_kbuild else {}
                    outputs[builder.name, tag] = builder.build(image, context, args, out, env=env, **extra)
                    if tag is not None:
                        builder.provide(tag, outputs[builder.name, tag][0])
                except (BuildFailed, subprocess.TimeoutExpired) as error:
                    report.add(f"{builder.name} build of {tag or case.name}",
                               str(error).splitlines())
                    break
        for tag, _, _ in contexts:
            label = f"pre-image {tag}" if tag else "image"
            if ("buildkit", tag) not in outputs:
                return
            bk_archive, bk_rootfs = outputs["buildkit", tag]
            bk = image_tree.read_docker_archive(bk_archive)
            # The same checks of the reference's own archive: a problem here is the harness's
            # (or docker save's), and would make every comparison below suspect.
            report.add(f"{label}: BuildKit's docker-archive is inconsistent", bk.problems)
            if bk_rootfs:
                # The harness's own check: a difference here is a flattening bug (or a BuildKit
                # quirk to document), not kbuild's.
                report.add(f"{label}: harness self-check (BuildKit's archive vs its rootfs tar)",
                           image_tree.diff_trees(bk.tree, image_tree.read_rootfs_tar(bk_rootfs),
                                                 "archive", "rootfs tar", self.mtimes))
            if self.options.dump:
                report.notes += self.describe(case, label, bk)
            if ("kbuild", tag) in outputs:
                compare_images(report, label, bk, *outputs["kbuild", tag], self.mtimes,
                               # fake_kbuild builds Dockerfile.buildkit too
                               case.created_by if tag is None and not
                               self.options.kbuild_is_docker else None,
                               self.options.kbuild_is_docker)
        if ("kbuild", None) in outputs:
            loaded = self.dockerd.client(["load", "-i", outputs["kbuild", None][0]], check=False)
            if loaded.returncode != 0:
                report.add("docker load of kbuild's archive",
                           loaded.stdout.decode(errors="replace").splitlines())

    def compare_platform_image(self, report, label, bk, kb):
        compare_image(report, label, bk, kb, self.mtimes,
                      kbuild_host_names=self.options.kbuild_is_docker)

    def describe(self, case, label, image):
        lines = [f"--- {case.name} {label} (buildkit): {image.layer_count} layers"]
        lines += [f"    {name} = {value}" for name, value in image_tree.config_values(image.config)
                  if value is not None]
        lines += [f"    history: {json.dumps(created_by)}" + (" (empty_layer)" if empty else "")
                  for created_by, empty, _ in image_tree.history_entries(image.config)]
        lines += ["    " + line for line in image_tree.describe_tree(image.tree, self.mtimes)]
        return lines


def select_cases(names, legacy_cases=False):
    cases_dir = legacy.LEGACY_CASES_DIR if legacy_cases else CASES_DIR
    available = {} if legacy_cases else {BASE_CASE: Case(BASE_CASE, BASE_DIR)}
    for name in sorted(os.listdir(cases_dir)):
        if os.path.isfile(os.path.join(cases_dir, name, "Dockerfile")):
            available[name] = Case(name, os.path.join(cases_dir, name))
    if not legacy_cases:
        platform_cases = multiplatform.load_cases(read_args)
        clashes = sorted(set(platform_cases) & set(available))
        if clashes:
            raise HarnessError(f"case names in both cases/ and platform_cases/: {', '.join(clashes)}")
        available.update(platform_cases)
    tags = [tag for case in available.values() for tag, _ in case.pre]
    duplicates = sorted({tag for tag in tags if tags.count(tag) > 1}
                        | ({BASE_TAG, BUSYBOX_TAG} & set(tags)))
    if duplicates:
        # Both daemons live for the whole run, so an image tag names one image for all cases.
        raise HarnessError(f"pre-image tags used twice: {', '.join(duplicates)}")
    if not names:
        return list(available.values())
    unknown = [n for n in names if n not in available]
    if unknown:
        raise HarnessError(f"no such case: {', '.join(unknown)} (see {cases_dir})")
    return [available[n] for n in names]


def parse_options():
    parser = argparse.ArgumentParser(description="Build each case with BuildKit (dockerd) and "
                                     "kbuild, and compare the images.")
    parser.add_argument("--case", action="append", default=[], metavar="NAME",
                        help="run only this case (repeatable)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (contexts, archives, daemon logs)")
    parser.add_argument("--dump", action="store_true",
                        help="print BuildKit's flattened tree and config of each image")
    parser.add_argument("--jobs", type=int, default=2,
                        help="cases built at the same time (default: 2)")
    parser.add_argument("--self-check", action="store_true",
                        help="also export BuildKit's rootfs tar and check that the harness "
                        "flattens BuildKit's archive to the same tree")
    parser.add_argument("--buildkit-only", action="store_true",
                        help="check only that BuildKit builds every case")
    parser.add_argument("--require-kbuild", action="store_true",
                        help="fail instead of skipping when kbuild is not usable")
    parser.add_argument("--build-dir", default=os.path.join(
        REPO, os.environ.get("KBUILD_BUILD_DIR", "build")),
        help="kbuild's build directory (default: build/ or $KBUILD_BUILD_DIR)")
    parser.add_argument("--kbuildd", help="kbuildd binary (default: BUILD_DIR/service/kbuildd)")
    parser.add_argument("--kbuildctl", help="kbuildctl binary (default: BUILD_DIR/cli/kbuildctl)")
    parser.add_argument("--legacy", action="store_true",
                        help="the classic builder's cases (legacy_cases/, see legacy.py): "
                        "DOCKER_BUILDKIT=0 docker build against kbuild with DOCKER_BUILDKIT=0")
    parser.add_argument("--kbuild-is-docker", action="store_true",
                        help="the kbuild binaries are fake_kbuild's (Docker 20.10): clear the "
                        "uname/gname it looks up on the host, as the reference's are")
    return parser.parse_args()


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    options = parse_options()
    sys.stdout.reconfigure(errors="backslashreplace")  # file names in reports, any locale
    if os.geteuid() != 0:
        print("differential: needs root (it runs dockerd and kbuildd)", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    started = time.monotonic()
    workspace = Workspace(options.keep)
    session = Session(options, workspace)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.jobs))
    counts = {"PASS": 0, "FAIL": 0, "ok": 0, "SKIP": 0}
    try:
        cases = select_cases(options.case, options.legacy)
        session.start()
        if session.skip_reason:
            print(f"kbuild: SKIPPED ({session.skip_reason}); building with BuildKit only")
            if options.require_kbuild:
                return 2
        session.build_base(cases)

        def timed(case):
            return time.monotonic(), session.run_case(case), time.monotonic()

        for case, (begun, report, ended) in zip(cases, pool.map(timed, cases)):
            outcome = ("FAIL" if report.problems else "SKIP" if report.skipped
                       else "PASS" if session.kbuild else "ok")
            counts[outcome] += 1
            note = ("BuildKit only, " if outcome == "ok"
                    else f"{report.skipped}, " if outcome == "SKIP" else "")
            print(f"{outcome:4} {case.name} ({note}{ended - begun:.1f}s)")
            for line in report.notes + report.problems:
                print("    " + line)
            sys.stdout.flush()
    except HarnessError as error:
        print(f"differential: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("differential: interrupted", file=sys.stderr)
        return 130
    finally:
        # No second Ctrl-C may leave a daemon or a mount behind. Cases not started are dropped;
        # running ones end quickly once their daemon is gone.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        pool.shutdown(wait=False, cancel_futures=True)
        session.stop()
        pool.shutdown(wait=True)
        workspace.close()
    summary = f"{'legacy_differential' if options.legacy else 'differential'}: {counts['PASS']} passed, {counts['FAIL']} failed"
    if counts["ok"] or counts["SKIP"]:
        reasons = ([f"kbuild: {session.skip_reason}"] if counts["ok"] else []) + \
                  ([f"multi-platform: {session.platform_skip}"] if counts["SKIP"] else [])
        summary += f", {counts['ok'] + counts['SKIP']} skipped ({'; '.join(reasons)})"
    print(f"({time.monotonic() - started:.0f}s)")
    print(summary)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
