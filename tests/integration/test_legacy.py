#!/usr/bin/env python3
"""End-to-end tests of the classic (legacy) builder: DOCKER_BUILDKIT=0 from the caller, or
daemon.json's features.buildkit=false. A real kbuildd on a private socket and store, builds FROM
the busybox base of base_image.py (no network); what is checked is the classic text on stdout
(as Docker 20.10's `DOCKER_BUILDKIT=0 docker build` prints it), the refusals of BuildKit-only
features in the classic builder's words, and the images. Run as root:

    python3 tests/integration/test_legacy.py [--build-dir build] [-k PATTERN]

The last result line is `legacy: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import json
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_run  # noqa: E402
from mounts import unmount_all_under  # noqa: E402

BASE = "kbuild-busybox"
REFER = (" option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build "
         "images with BuildKit enabled")
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
ID_LINE = re.compile(r"^ ---> ([0-9a-f]{12})$")


def steps(stdout):
    """The classic text as (step text, [lines after it]) in order."""
    out = []
    for line in stdout.splitlines():
        match = STEP.match(line)
        if match:
            out.append((match.group(3), []))
        elif out:
            out[-1][1].append(line)
    return out


class LegacyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-legacy-")
        os.chmod(cls.workdir, 0o755)
        archive = os.path.join(cls.workdir, "base.tar")
        base_image.write_base_image(archive, BASE)
        cls.daemon = test_run.Daemon(os.path.join(cls.workdir, "buildkit"))
        cls.classic = test_run.Daemon(os.path.join(cls.workdir, "classic"), config={"features": {"buildkit": False}})
        for daemon in (cls.daemon, cls.classic):
            daemon.client("load", "-i", archive)
            daemon.mark_idle(BASE)

    @classmethod
    def tearDownClass(cls):
        for daemon in (getattr(cls, "daemon", None), getattr(cls, "classic", None)):
            if daemon is not None:
                daemon.stop()
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.left_before = {daemon: set(daemon.leftovers()) for daemon in (self.daemon, self.classic)}

    def tearDown(self):
        # After every build, pass or fail, the classic way too: no mount, step process or temp
        # file is left.
        for daemon, before in self.left_before.items():
            self.assertEqual(daemon.wait_clean(before=before), [], "left behind after the test's builds")

    def context(self, dockerfile, files=None):
        path = os.path.join(self.workdir, "contexts", self.id().rsplit(".", 1)[-1])
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        test_run.write(os.path.join(path, "Dockerfile"), dockerfile)
        for rel, content in (files or {}).items():
            test_run.write(os.path.join(path, rel), content)
        return path

    def build(self, ctx, *args, buildkit="0", daemon=None, check=True):
        env = dict(os.environ)
        env.pop("DOCKER_BUILDKIT", None)
        if buildkit is not None:
            env["DOCKER_BUILDKIT"] = buildkit
        return test_run.run([test_run.kbuildctl_path(), "--host", "unix://" + (daemon or self.daemon).socket, "build"]
                            + list(args) + ["."], cwd=ctx, env=env, check=check)

    def test_classic_output_step_by_step(self):
        ctx = self.context("FROM kbuild-busybox\nENV A=step-by-step\nWORKDIR /app\nCOPY a.txt .\nRUN echo hi && cat a.txt\n"
                           "CMD [\"sh\"]\n", {"a.txt": "hello\n"})
        result = self.build(ctx, "-t", "app", "--build-arg", "UNUSED=1")
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "Sending build context to Docker daemon  3.072kB")
        got = steps(result.stdout)
        self.assertEqual([text for text, _ in got], ["FROM kbuild-busybox", "ENV A=step-by-step", "WORKDIR /app", "COPY a.txt .",
                                                      "RUN echo hi && cat a.txt", "CMD [\"sh\"]"])
        self.assertIn("Step 1/6 : FROM kbuild-busybox", lines)
        self.assertRegex(got[1][1][0], r"^ ---> Running in [0-9a-f]{12}$")
        self.assertRegex(got[1][1][1], r"^Removing intermediate container [0-9a-f]{12}$")
        self.assertEqual(len(got[3][1]), 1)  # COPY runs in no container
        self.assertEqual(got[4][1][1:3], ["hi", "hello"])
        self.assertEqual(lines[-3], "[Warning] One or more build-args [UNUSED] were not consumed")
        built = re.match(r"^Successfully built ([0-9a-f]{12})$", lines[-2]).group(1)
        self.assertEqual(lines[-4], " ---> " + built)
        self.assertEqual(lines[-1], "Successfully tagged app:latest")
        self.assertNotIn("#1", result.stdout + result.stderr)

    def test_a_classic_build_is_logged_like_any_other(self):
        if os.path.exists("/run/systemd/journal/socket"):
            self.skipTest("a journal runs here: kbuildd logs builds there, not on stderr")
        ctx = self.context("FROM kbuild-busybox\nRUN echo logged-step\n")
        built = self.build(ctx, "--no-cache").stdout.splitlines()[-1].split()[-1]
        log = self.daemon.log_text()
        summary = re.findall(r"^kbuildd: build ([0-9a-f]{12}) by uid 0: success in \S+, image sha256:([0-9a-f]+)", log, re.M)
        self.assertIn(built, [image[:12] for _, image in summary], log[-3000:])
        build_id = next(b for b, image in summary if image.startswith(built))
        self.assertRegex(log, rf"(?m)^kbuildd: build {build_id} step done in \S+: .*RUN echo logged-step$")

    def test_rebuild_uses_cache_for_every_step_with_the_same_ids(self):
        ctx = self.context("FROM kbuild-busybox AS a\nRUN echo one > /one\nFROM kbuild-busybox\nENV B=2\n"
                           "COPY f /f\nRUN cat /f\nLABEL l=v\n", {"f": "content\n"})
        first = self.build(ctx, "-t", "cached").stdout
        second = self.build(ctx, "-t", "cached").stdout
        for text, after in steps(second):
            if text.startswith("FROM"):
                continue
            self.assertEqual(after[0], " ---> Using cache", text)
        ids = lambda out: [line for line in out.splitlines() if ID_LINE.match(line)]  # noqa: E731
        self.assertEqual(ids(first), ids(second))
        self.assertEqual(first.splitlines()[-2], second.splitlines()[-2])

    def test_a_changed_context_file_runs_again_from_its_copy(self):
        ctx = self.context("FROM kbuild-busybox\nENV A=1\nCOPY f /f\nRUN cat /f\nENV B=2\n", {"f": "one\n"})
        self.build(ctx)
        test_run.write(os.path.join(ctx, "f"), "two\n")
        got = steps(self.build(ctx).stdout)
        self.assertEqual(got[1][1][0], " ---> Using cache")
        for text, after in got[2:]:
            self.assertNotEqual(after[0], " ---> Using cache", text)
        self.assertIn("two", got[3][1])

    def test_target_builds_every_stage_up_to_it(self):
        ctx = self.context("FROM kbuild-busybox AS unused\nRUN echo marker-of-unused\n"
                           "FROM kbuild-busybox AS wanted\nRUN echo marker-of-wanted\n"
                           "FROM kbuild-busybox AS after\nRUN echo marker-of-after\n")
        out = self.build(ctx, "--no-cache", "--target", "wanted").stdout
        self.assertIn("marker-of-unused", out.splitlines())
        self.assertIn("marker-of-wanted", out.splitlines())
        self.assertNotIn("marker-of-after", out)
        self.assertIn("Step 4/4 : RUN echo marker-of-wanted", out.splitlines())
        self.assertLess(out.index("marker-of-unused"), out.index("Step 3/4"))

    def test_global_args_are_numbered_steps(self):
        ctx = self.context("ARG BASE=kbuild-busybox\nFROM $BASE\nRUN true\n")
        out = self.build(ctx).stdout.splitlines()
        self.assertIn("Step 1/3 : ARG BASE=kbuild-busybox", out)
        self.assertEqual(out[out.index("Step 1/3 : ARG BASE=kbuild-busybox") + 1], "Step 2/3 : FROM $BASE")

    def test_daemon_config_buildkit_false_gives_classic_output(self):
        ctx = self.context("FROM kbuild-busybox\nRUN echo via-config\n")
        result = self.build(ctx, buildkit=None, daemon=self.classic)
        self.assertIn("Step 2/2 : RUN echo via-config", result.stdout)
        self.assertIn("via-config", result.stdout.splitlines())

    def test_a_reload_switches_the_daemons_builder(self):
        daemon = test_run.Daemon(os.path.join(self.workdir, "reloaded"))
        try:
            daemon.client("load", "-i", os.path.join(self.workdir, "base.tar"))
            ctx = self.context("FROM kbuild-busybox\nRUN true\n")
            self.assertNotIn("Step 1/2", self.build(ctx, buildkit=None, daemon=daemon).stdout)
            with open(daemon.config, "w") as config:
                json.dump({"features": {"buildkit": False}}, config)
            daemon.client("reload")
            self.assertIn("Step 1/2 : FROM kbuild-busybox", self.build(ctx, buildkit=None, daemon=daemon).stdout)
        finally:
            daemon.stop()

    def test_docker_buildkit_1_forces_buildkit_on_a_classic_daemon(self):
        ctx = self.context("FROM kbuild-busybox\nRUN echo forced\n")
        result = self.build(ctx, "--progress", "plain", buildkit="1", daemon=self.classic)
        self.assertNotIn("Step 1/", result.stdout)
        self.assertRegex(result.stderr, r"#\d+ \[2/2\] RUN echo forced")

    def test_buildkit_daemon_without_the_variable_builds_with_buildkit(self):
        ctx = self.context("FROM kbuild-busybox\nRUN true\n")
        result = self.build(ctx, "--progress", "plain", buildkit=None)
        self.assertNotIn("Step 1/", result.stdout)

    def test_quiet_prints_only_the_image_id(self):
        ctx = self.context("FROM kbuild-busybox\nRUN echo quiet\n")
        result = self.build(ctx, "-q")
        self.assertRegex(result.stdout, r"^sha256:[0-9a-f]{64}\n$")

    def test_a_failing_run_reads_as_the_classic_builders(self):
        ctx = self.context("FROM kbuild-busybox\nRUN echo before-fail && false\n")
        result = self.build(ctx, check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("before-fail", result.stdout.splitlines())
        self.assertEqual(result.stderr.strip().splitlines()[-1],
                         "The command '/bin/sh -c echo before-fail && false' returned a non-zero code: 1")

    def test_onbuild_triggers_run_as_part_of_from(self):
        parent = self.context("FROM kbuild-busybox\nONBUILD RUN echo trigger-ran > /trigger\n")
        self.build(parent, "-t", "with-trigger")
        ctx = self.context("FROM with-trigger\nRUN cat /trigger\n")
        out = self.build(ctx, "--no-cache").stdout.splitlines()
        at = out.index("Step 1/2 : FROM with-trigger")
        self.assertEqual(out[at + 1], "# Executing 1 build trigger")
        self.assertRegex(out[at + 2], r"^ ---> Running in [0-9a-f]{12}$")
        self.assertRegex(out[at + 3], r"^Removing intermediate container [0-9a-f]{12}$")
        self.assertRegex(out[at + 4], ID_LINE)
        self.assertEqual(out[at + 5], "Step 2/2 : RUN cat /trigger")
        self.assertIn("trigger-ran", out)

    def test_labels_are_label_steps_at_the_end(self):
        ctx = self.context("FROM kbuild-busybox\nRUN true\n")
        out = self.build(ctx, "--label", "zeta=last", "--label", "alpha=first").stdout.splitlines()
        self.assertIn("Step 3/4 : LABEL alpha=first", out)
        self.assertIn("Step 4/4 : LABEL zeta=last", out)

    def test_copy_makes_the_classic_builders_checks(self):
        ctx = self.context("FROM kbuild-busybox\nCOPY a b /dest\n", {"a": "a\n", "b": "b\n"})
        result = self.build(ctx, check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("When using COPY with more than one source file, the destination must be a directory and end "
                      "with a /", result.stderr)

    def test_docker_buildkit_must_be_a_boolean(self):
        ctx = self.context("FROM kbuild-busybox\n")
        result = self.build(ctx, buildkit="maybe", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('DOCKER_BUILDKIT environment variable expects boolean value: strconv.ParseBool: parsing "maybe": '
                      'invalid syntax', result.stderr)
        self.assertIn("Step 1/1 : FROM kbuild-busybox", self.build(ctx, buildkit="False").stdout)

    def test_refusals(self):
        cases = [
            ("FROM kbuild-busybox\nRUN --mount=type=cache,target=/c true\n", (), "the --mount" + REFER),
            ("FROM kbuild-busybox\nCOPY --chmod=644 f /f\n", (), "the --chmod" + REFER),
            ("FROM kbuild-busybox\nADD --chmod=644 f /f\n", (), "the --chmod" + REFER),
            ("FROM kbuild-busybox\nCOPY --link f /f\n", (), "dockerfile parse error line 2: Unknown flag: link"),
            ("FROM kbuild-busybox\nRUN --network=none true\n", (), "dockerfile parse error line 2: Unknown flag: network"),
            ("FROM kbuild-busybox\nRUN <<EOF\ntrue\nEOF\n", (), "dockerfile parse error line 3: unknown instruction: TRUE"),
            ("FROM kbuild-busybox\nRUN true\n", ("--secret", "id=s,src=f"), "the --secret" + REFER),
            ("FROM kbuild-busybox\nRUN true\n", ("--ssh", "default=" + os.path.join(self.workdir, "no-agent")),
             None),
            ("FROM kbuild-busybox\nRUN true\n", ("--output", "type=tar,dest=out.tar"), "the --output" + REFER),
            ("FROM kbuild-busybox\nRUN true\n", ("--cache-to", "type=inline"), "the --cache-to" + REFER),
            ("FROM kbuild-busybox AS a\nRUN true\n", ("--target", "nowhere"),
             "failed to reach build target nowhere in Dockerfile"),
        ]
        for dockerfile, args, message in cases:
            with self.subTest(dockerfile=dockerfile, args=args):
                ctx = self.context(dockerfile, {"f": "x\n"})
                result = self.build(ctx, *args, check=False)
                self.assertEqual(result.returncode, 1, result.stdout)
                self.assertNotIn("Step ", result.stdout)  # refused before any step ran
                if message is not None:
                    self.assertEqual(result.stderr.strip().splitlines()[-1], message)


def main():
    return suite.main("legacy", LegacyTest, needs_root="they run a root daemon", harness=test_run)


if __name__ == "__main__":
    sys.exit(main())
