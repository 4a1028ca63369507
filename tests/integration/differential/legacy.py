"""The classic builder's differential cases (run.py --legacy): each case in legacy_cases/ is
built by Docker 20.10's legacy builder (`DOCKER_BUILDKIT=0 docker build`) and by kbuild with
DOCKER_BUILDKIT=0, twice (the second build from cache), and compared:

1. the flattened filesystem of each image (`docker save` / `kbuildctl save`), path by path, with
   run.py's mtime policy;
2. the output lines of both builds, stdout and stderr as the client printed them, with the parts
   that are random in Docker normalized: the 12-hex ids of images and containers (` ---> ID`,
   `Running in ID`, `Removing intermediate container ID`, `Successfully built ID`). A FROM's id
   is a base image's id, the same on both sides (both daemons hold the same archive), so it is
   compared as is; so is the context size (`Sending build context to Docker daemon  2.048kB`),
   which kbuild counts as docker's client does.

The classic builder writes other layers and config history than BuildKit (a layer per RUN,
COPY, ADD; no `# buildkit` history comments): those are not compared, as the issue asks
for rootfs and output.
"""

import difflib
import os
import re

import image_tree

HERE = os.path.dirname(os.path.abspath(__file__))
LEGACY_CASES_DIR = os.path.join(HERE, "legacy_cases")
CLASSIC_ENV = {"DOCKER_BUILDKIT": "0"}
RANDOM_IDS = [
    (re.compile(r"^ ---> [0-9a-f]{12}$"), " ---> <id>"),
    (re.compile(r"^ ---> Running in [0-9a-f]{12}$"), " ---> Running in <container>"),
    (re.compile(r"^Removing intermediate container [0-9a-f]{12}$"), "Removing intermediate container <container>"),
    (re.compile(r"^Successfully built [0-9a-f]{12}$"), "Successfully built <id>"),
]


def normalize_output(text, base_ids):
    """The lines of a build's output with random ids replaced; `base_ids` (the FROM lines' base
    image ids) are kept, since both sides must print them alike."""
    lines = []
    for line in text.splitlines():
        if not (line.startswith(" ---> ") and line[6:] in base_ids):
            for pattern, replacement in RANDOM_IDS:
                if pattern.match(line):
                    line = replacement
                    break
        lines.append(line)
    return lines


def diff_lines(reference, other):
    """A unified diff of two outputs (docker's first), or [] when they are equal."""
    return [line.rstrip("\n") for line in difflib.unified_diff(reference, other, "docker", "kbuild", n=1, lineterm="")]


def base_image_ids(dockerd):
    """The short ids of the base images every case builds on (the same in both daemons)."""
    inspected = dockerd.client(["image", "inspect", "--format", "{{.Id}}", "kbuild-diff-busybox", "kbuild-diff-base"])
    return {line.split(":")[-1][:12] for line in inspected.stdout.decode().split()}


def build_twice(client, tag, context, args, save, archive):
    """Two builds with the classic builder (the second from cache), then the image saved;
    returns both outputs."""
    outputs = []
    for _ in range(2):
        result = client(["build", "-t", tag] + args + ["."], cwd=context, env=CLASSIC_ENV)
        outputs.append(result.stdout.decode(errors="replace"))
    client(save + [tag, "-o", archive])
    return outputs


def run_legacy_case(session, case, report, prepare_context):
    root = session.workspace.sub("legacy", case.name)
    context = prepare_context(case.source, os.path.join(root, "context"))
    tag = "kbdiff-legacy/" + case.name
    docker_archive = os.path.join(session.workspace.sub("legacy-out", case.name, "docker"), "image.tar")
    docker_out = build_twice(session.dockerd.client, tag, context, ["--network", "host"] + case.args, ["save"],
                             docker_archive)
    if session.kbuild is None:
        return
    kbuild_archive = os.path.join(session.workspace.sub("legacy-out", case.name, "kbuild"), "image.tar")
    kbuild_out = build_twice(session.kbuildd.client, tag, context, list(case.args), ["save"], kbuild_archive)
    docker_image = image_tree.read_docker_archive(docker_archive)
    kbuild_image = image_tree.read_docker_archive(kbuild_archive)
    report.add("filesystem (flattened)",
               image_tree.diff_trees(docker_image.tree, kbuild_image.tree, "docker", "kbuild", session.mtimes))
    base_ids = base_image_ids(session.dockerd)
    for label, a, b in (("first build", docker_out[0], kbuild_out[0]), ("rebuild", docker_out[1], kbuild_out[1])):
        report.add(f"output of the {label} (normalized)",
                   diff_lines(normalize_output(a, base_ids), normalize_output(b, base_ids)))
