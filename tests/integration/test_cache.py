#!/usr/bin/env python3
"""End-to-end tests of build-cache export and import (`--cache-to`, `--cache-from`), as BuildKit's
registry, inline and local caches work: two kbuildd with stores of their own, host A that builds
and exports and host B that starts empty and imports, and Debian's docker-registry (distribution
2.8) on 127.0.0.1 between them. A multi-stage Dockerfile whose builder stage writes a random
file shows what ran where: if B's image holds A's random bytes, B did not run that step. The
cache documents are read back from the registry (docs/cache-format.md says what they hold), and
its access log says which blobs B fetched. Nothing listens beyond loopback, every process started
is stopped (each test checks that none of its processes or mounts is left), and everything lives
in one temp dir, removed at the end. Run as root:

    python3 tests/integration/test_cache.py [--build-dir build] [-k PATTERN]

The last line is `cache: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import base64
import gzip
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
import urllib.error
import urllib.request
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_registry as harness  # noqa: E402  -- Daemon, DistributionRegistry and their helpers
from mounts import mount_points_under, unmount_all_under  # noqa: E402
from test_registry import DistributionRegistry, digest_of, docker_config, run, write  # noqa: E402

BASE = base_image.DEFAULT_TAG
OCI_MANIFEST = harness.OCI_MANIFEST
OCI_INDEX = harness.OCI_INDEX
GZIP_LAYER = harness.GZIP_LAYER
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CACHE_CONFIG = "application/vnd.kbuild.cache.config.v1+json"
BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
# A build step's vertex: "[builder 2/2] RUN ...", "[final 3/4] COPY last.txt /last.txt".
STEP = re.compile(r"^\[(\S+) (\d+)/(\d+)\] ", re.S)

# The builder stage writes bytes no second run reproduces (busybox's date has no %N and prints
# it as it is: the kernel's UUID is the random part); only the final stage copies last.txt.
# Each RUN prints a marker, so a step's output says it ran.
DOCKERFILE = f"""\
FROM {BASE} AS builder
RUN mkdir /out && date +%N > /out/random && cat /proc/sys/kernel/random/uuid >> /out/random && echo RAN-builder

FROM {BASE} AS final
COPY --from=builder /out/random /random
COPY last.txt /last.txt
RUN cat /last.txt /random > /combined && echo RAN-final
"""
# Every step of DOCKERFILE, by "stage n" of its vertex name. Both stages' FROM are one op, so
# one vertex, named after the first stage (as BuildKit merges identical LLB ops).
BUILDER_FROM, BUILDER_RUN = "builder 1", "builder 2"
COPY_FROM_BUILDER, COPY_LAST, FINAL_RUN = "final 2", "final 3", "final 4"
ALL_STEPS = [BUILDER_FROM, BUILDER_RUN, COPY_FROM_BUILDER, COPY_LAST, FINAL_RUN]


def b64(text):
    return base64.b64decode(text or "").decode(errors="replace")


# -- what a build showed ------------------------------------------------------------------------

class Progress:
    """A build's `--progress rawjson` events, merged: each vertex's last state (cached once
    cached), its output, and the warnings."""

    def __init__(self, stderr):
        self.vertices, self.logs, self.warnings, self.other_lines = {}, {}, [], []
        for line in stderr.splitlines():
            try:
                event = json.loads(line) if line.startswith("{") else None
            except ValueError:
                event = None
            if not isinstance(event, dict):
                if line.strip():
                    self.other_lines.append(line)
                continue
            for vertex in event.get("vertexes") or []:
                merged = self.vertices.setdefault(vertex["digest"], {})
                cached = merged.get("cached", False) or vertex.get("cached", False)
                merged.update(vertex)
                merged["cached"] = cached
            for log in event.get("logs") or []:
                self.logs[log.get("vertex", "")] = self.logs.get(log.get("vertex", ""), "") + b64(log.get("data"))
            for warning in event.get("warnings") or []:
                text = " ".join([b64(warning.get("short"))] + [b64(d) for d in warning.get("detail") or []])
                self.warnings.append((warning.get("vertex", ""), text))

    def named(self, prefix):
        """Vertices whose name starts with `prefix`."""
        return [v for v in self.vertices.values() if v.get("name", "").startswith(prefix)]

    def steps(self):
        """{"stage n": vertex} of the Dockerfile's steps."""
        found = {}
        for vertex in self.vertices.values():
            match = STEP.match(vertex.get("name", ""))
            if match and match.group(1) != "internal":
                found[f"{match.group(1)} {match.group(2)}"] = vertex
        return found

    def cached(self, step):
        vertex = self.steps().get(step)
        return vertex is not None and vertex["cached"]

    def ran(self, step):
        """The step was done, not taken from a cache."""
        vertex = self.steps().get(step)
        return vertex is not None and not vertex["cached"] and "started" in vertex and not vertex.get("error")

    def output(self):
        return "".join(self.logs.values())

    def warnings_about(self, ref, vertex_prefix):
        """What the build warned about `ref`: warnings that name it, or that were given on a
        vertex whose name starts with `vertex_prefix` (and names it, for an import), and lines
        of that vertex's output that say "warn"."""
        digests = {d for d, v in self.vertices.items()
                   if v.get("name", "").startswith(vertex_prefix)
                   and (ref in v.get("name", "") or "import" not in vertex_prefix)}
        said = [text for vertex, text in self.warnings if vertex in digests or ref in text]
        said += [line for d in digests for line in self.logs.get(d, "").splitlines() if "warn" in line.lower()]
        return said

    def describe(self):
        """The steps and cache vertices, one a line, for a failure's message."""
        lines = []
        for vertex in self.vertices.values():
            name = vertex.get("name", "")
            if STEP.match(name) or "cache" in name:
                state = ("CACHED" if vertex["cached"] else "ERROR: " + vertex["error"] if vertex.get("error")
                         else "DONE" if "completed" in vertex else "started" if "started" in vertex else "not started")
                lines.append(f"  {name[:110]}: {state}")
        lines += [f"  warning: {text}" for _, text in self.warnings]
        lines += [f"  {line}" for line in self.other_lines[-10:]]
        return "\n".join(lines)


class Build:
    def __init__(self, result):
        self.result = result
        self.returncode = result.returncode
        self.progress = Progress(result.stderr)

    def message(self):
        """What the client printed that is not a progress event: the error, for a failed build."""
        errors = [f"{v.get('name', '')}: {v['error']}" for v in self.progress.vertices.values() if v.get("error")]
        return "\n".join(self.progress.other_lines + errors + [self.result.stdout])


class SavedImage:
    """An image as `kbuildctl save` writes it: its ID, config, and the files of its layers,
    merged ({path: bytes}, regular files only)."""

    def __init__(self, archive):
        with tarfile.open(archive) as tar:
            entry = json.load(tar.extractfile("manifest.json"))[0]
            config = tar.extractfile(entry["Config"]).read()
            self.files = {}
            for layer in entry["Layers"]:
                data = tar.extractfile(layer).read()
                if data.startswith(ZSTD_MAGIC):  # blobs are saved as stored; tarfile reads no zstd
                    data = subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True,
                                          check=True).stdout
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as layer_tar:
                    for member in layer_tar:
                        if member.isfile():
                            self.files[member.name.removeprefix("./")] = layer_tar.extractfile(member).read()
        self.id = digest_of(config)
        self.config = json.loads(config)
        self.diff_ids = self.config["rootfs"]["diff_ids"]


class RegistryHttp:
    """The distribution API of a plain-HTTP registry on loopback, as the tests read and write
    it by hand (no proxy: the environment's would not reach 127.0.0.1)."""

    def __init__(self, host):
        self.base = f"http://{host}/v2/"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method, path, data=None, headers=None):
        url = path if path.startswith("http") else self.base + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        with self.opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read()

    def manifest(self, repository, reference):
        _, headers, data = self.call("GET", f"{repository}/manifests/{reference}",
                                     headers={"Accept": ", ".join([OCI_MANIFEST, OCI_INDEX, harness.DOCKER_MANIFEST,
                                                                       DOCKER_MANIFEST_LIST])})
        return headers.get("Content-Type", ""), data

    def blob(self, repository, digest):
        return self.call("GET", f"{repository}/blobs/{digest}")[2]

    def push_blob(self, repository, data):
        """The blob's descriptor fields (digest, size)."""
        _, headers, _ = self.call("POST", f"{repository}/blobs/uploads/", data=b"")
        location = headers["Location"]
        if location.startswith("/"):
            location = self.base[:-len("/v2/")] + location
        digest = digest_of(data)
        separator = "&" if "?" in location else "?"
        self.call("PUT", f"{location}{separator}digest={digest}", data=data,
                  headers={"Content-Type": "application/octet-stream"})
        return {"digest": digest, "size": len(data)}

    def push_manifest(self, repository, tag, config_media_type, config):
        """An OCI image manifest with this config and one small layer, under `tag`."""
        layer = gzip.compress(bytes(1024), mtime=0)  # an empty tar
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": dict(mediaType=config_media_type, **self.push_blob(repository, config)),
                    "layers": [dict(mediaType=GZIP_LAYER, **self.push_blob(repository, layer),
                                    annotations={"containerd.io/uncompressed": digest_of(bytes(1024))})]}
        data = json.dumps(manifest, separators=(",", ":")).encode()
        self.call("PUT", f"{repository}/manifests/{tag}", data=data, headers={"Content-Type": OCI_MANIFEST})
        return digest_of(data)


def split_ref(ref):
    """(host, repository, tag) of HOST/REPO:TAG."""
    host, rest = ref.split("/", 1)
    repository, tag = rest.rsplit(":", 1)
    return host, repository, tag


# -- leaks --------------------------------------------------------------------------------------

def processes_under(path, spare=()):
    """(pid, command line) of every process whose command line names `path`, but `spare`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in spare or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmdline:
            found.append((int(pid), cmdline.strip()))
    return found


def session_members(sid):
    """pids of the processes in session `sid` (a daemon's: each starts a session of its own)."""
    members = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and int(pid) != sid:
            members.append(int(pid))
    return members


# -- the tests ----------------------------------------------------------------------------------

class CacheTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-cache-")
        os.chmod(cls.workdir, 0o755)
        cls.closers, cls.all_daemons = [], []
        try:
            cls.base_archive = os.path.join(cls.workdir, "base.tar")
            base_image.write_base_image(cls.base_archive, BASE)
            cls.registry = DistributionRegistry(cls.workdir, "shared")
            cls.closers.append(cls.registry.stop)
            cls.http = RegistryHttp(cls.registry.host)
        except BaseException:
            cls.tearDownClass()  # unittest does not when setUpClass fails
            raise

    @classmethod
    def tearDownClass(cls):
        for close in reversed(getattr(cls, "closers", [])):
            try:
                close()
            except Exception as e:  # noqa: BLE001 -- the rest must still be stopped
                print(f"cleanup: {e}", file=sys.stderr)
        for daemon in getattr(cls, "all_daemons", []):  # those an interrupted test did not stop
            daemon.stop()
        left = processes_under(cls.workdir)
        for pid, cmdline in left:  # ours: its command line names this suite's temp dir
            print(f"cleanup: process {pid} still runs, killed: {cmdline[:200]}", file=sys.stderr)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.daemons = []
        self.addCleanup(self.check_nothing_left)  # the first cleanup added runs last

    # -- helpers --------------------------------------------------------------------------------

    def name(self):
        return self.id().rsplit(".", 1)[-1]

    def path(self, *parts):
        # Short: a daemon's socket lives here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.name().removeprefix("test_")[:24], *parts)

    def host(self, name, config=None):
        """A kbuildd of its own (store, root, socket) with the base image loaded: host A or B."""
        daemon = harness.Daemon(self.path(name), config)
        self.daemons.append(daemon)
        self.all_daemons.append(daemon)
        self.addCleanup(daemon.stop)
        daemon.client("load", "-i", self.base_archive)
        return daemon

    def check_nothing_left(self):
        """Once the test's daemons and registries are stopped: none of their processes runs, and
        nothing is mounted under the test's dir. Whatever is left is taken down, and fails the test."""
        problems = []
        for daemon in self.daemons:
            if daemon.process.poll() is None:
                problems.append(f"kbuildd {daemon.process.pid} still runs")
            for pid in session_members(daemon.process.pid):
                problems.append(f"process {pid} of kbuildd {daemon.process.pid}'s session still runs")
        spare = {self.registry.process.pid}
        for pid, cmdline in processes_under(self.path(), spare) + processes_under(
                os.path.join(self.workdir, "registries", self.name() + "-"), spare):
            problems.append(f"process {pid} still runs: {cmdline[:200]}")
        mounts = mount_points_under(self.path())
        if mounts:
            problems.append(f"still mounted: {mounts}")
        if problems:
            for daemon in self.daemons:  # ours, started by this test: stopped by pid
                for pid in session_members(daemon.process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            unmount_all_under(self.path())
            self.fail("the test left:\n  " + "\n  ".join(problems))

    def context(self, last="the first last.txt\n", name="ctx"):
        path = self.path(name)
        shutil.rmtree(path, ignore_errors=True)
        write(os.path.join(path, "Dockerfile"), DOCKERFILE)
        write(os.path.join(path, "last.txt"), last)
        return path

    def build(self, daemon, ctx, *args, check=True, credentials=None):
        build = Build(daemon.client("build", "--progress", "rawjson", *args, ".", cwd=ctx, check=False,
                                    credentials=credentials, timeout=300))
        if check and build.returncode != 0:
            self.fail(f"kbuildctl build {' '.join(args)} exited {build.returncode}:\n{build.message()[-4000:]}\n"
                      f"{build.progress.describe()}\nkbuildd's log:\n{daemon.log()[-3000:]}")
        return build

    def saved(self, daemon, name):
        archive = self.path(f"saved-{uuid.uuid4().hex[:8]}.tar")
        daemon.client("save", name, "-o", archive)
        try:
            return SavedImage(archive)
        finally:
            os.unlink(archive)

    def ref(self, tag, registry=None):
        """HOST/t/<this test>:TAG."""
        short = re.sub(r"[^a-z0-9]+", "-", self.name().removeprefix("test_").lower())[:60].strip("-")
        return f"{(registry or self.registry).host}/t/{short}:{tag}"

    def cache_documents(self, ref):
        """(manifest, cache config) of the cache the registry holds at `ref`, both parsed."""
        _, repository, tag = split_ref(ref)
        media_type, data = self.http.manifest(repository, tag)
        manifest = json.loads(data)
        self.assertEqual(manifest.get("mediaType", media_type), OCI_MANIFEST, f"{ref}'s envelope: {manifest}")
        self.assertEqual(manifest["config"]["mediaType"], CACHE_CONFIG, f"{ref}'s envelope: {manifest}")
        config = json.loads(self.http.blob(repository, manifest["config"]["digest"]))
        return manifest, config

    def manifest_digest(self, ref):
        """The digest of the manifest at `ref`, from the bytes skopeo reads."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(DOCKER_CONFIG=self.path("skopeo-config"), REGISTRY_AUTH_FILE=self.path("skopeo-auth.json"))
        write(env["REGISTRY_AUTH_FILE"], "{}")
        docker_config(env["DOCKER_CONFIG"])
        raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://" + ref], env=env).stdout
        return digest_of(raw.encode())

    def assert_steps(self, build, cached, ran, what):
        """Each step of `cached` was taken from a cache, each of `ran` was done."""
        progress = build.progress
        wrong = [f"{step}: expected CACHED" for step in cached if not progress.cached(step)]
        wrong += [f"{step}: expected to run" for step in ran if not progress.ran(step)]
        self.assertFalse(wrong, f"{what}:\n  " + "\n  ".join(wrong) + f"\nthe build showed:\n{progress.describe()}")

    def assert_exported(self, build, ref):
        vertices = build.progress.named("exporting cache to registry")
        self.assertTrue(vertices, f"no 'exporting cache to registry' vertex for {ref}:\n{build.progress.describe()}")
        self.assertTrue(all("completed" in v and not v.get("error") for v in vertices), vertices)

    def assert_imported(self, build, ref):
        vertices = [v for v in build.progress.named("importing cache manifest from") if ref in v["name"]]
        self.assertTrue(vertices, f"no 'importing cache manifest from {ref}' vertex:\n{build.progress.describe()}")

    def assert_warned(self, build, ref, vertex_prefix, what):
        self.assertEqual(build.returncode, 0, f"{what}: the build failed:\n{build.message()[-3000:]}")
        said = build.progress.warnings_about(ref, vertex_prefix)
        self.assertTrue(said, f"{what}: no warning about {ref}:\n{build.progress.describe()}")
        return said

    def export_from_a(self, ref, *cache_attributes, last="the first last.txt\n", daemon=None):
        """Host A's build of DOCKERFILE exporting its cache to `ref`: (A, its Build, its image)."""
        a = daemon or self.host("a")
        to = ",".join([f"type=registry,ref={ref}"] + list(cache_attributes))
        built = self.build(a, self.context(last, name="ctx-a"), "-t", "app:a", "--cache-to", to)
        self.assert_exported(built, ref)
        return a, built, self.saved(a, "app:a")

    # -- 1. everything from a registry cache, mode=max ------------------------------------------

    def test_a_fresh_host_takes_every_step_from_a_max_cache_and_runs_nothing(self):
        image, cache = self.ref("latest"), self.ref("buildcache")
        a = self.host("a")
        exported = self.build(a, self.context(name="ctx-a"), "-t", image, "--push",
                              "--cache-to", f"type=registry,ref={cache},mode=max")
        self.assert_exported(exported, cache)
        self.assert_steps(exported, [], [BUILDER_RUN, COPY_FROM_BUILDER, COPY_LAST, FINAL_RUN], "host A's build")
        a_image = self.saved(a, image)
        self.cache_documents(cache)

        b = self.host("b")
        imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b",
                              "--cache-from", f"type=registry,ref={cache}")
        self.assert_imported(imported, cache)
        self.assert_steps(imported, ALL_STEPS, [], "host B's build from A's cache")
        self.assertNotIn("RAN-", imported.progress.output(), "a RUN step ran on host B")
        b_image = self.saved(b, "app:b")
        self.assertEqual(b_image.files["random"], a_image.files["random"], "B's /random is not A's")
        self.assertEqual(b_image.files["combined"], a_image.files["combined"])
        self.assertEqual(b_image.diff_ids, a_image.diff_ids, "B's layers are not A's")
        # docs/cache-format.md: the layers' `created` make the importer's image config the exporter's.
        self.assertEqual(b_image.config, a_image.config, "B's image config is not A's")
        self.assertEqual(b_image.id, a_image.id)

    # -- 2. a change in the last stage ----------------------------------------------------------

    def test_a_file_only_the_last_stage_copies_reruns_only_the_steps_from_its_copy(self):
        cache = self.ref("buildcache")
        _, _, a_image = self.export_from_a(cache, "mode=max")
        b = self.host("b")
        changed = "a changed last.txt\n"
        imported = self.build(b, self.context(changed, name="ctx-b"), "-t", "app:b",
                              "--cache-from", f"type=registry,ref={cache}")
        self.assert_imported(imported, cache)
        self.assert_steps(imported, [BUILDER_FROM, BUILDER_RUN, COPY_FROM_BUILDER], [COPY_LAST, FINAL_RUN],
                          "host B's build with last.txt changed")
        self.assertNotIn("RAN-builder", imported.progress.output())
        self.assertIn("RAN-final", imported.progress.output())
        b_image = self.saved(b, "app:b")
        self.assertEqual(b_image.files["random"], a_image.files["random"])
        self.assertEqual(b_image.files["combined"], changed.encode() + a_image.files["random"])
        self.assertEqual(b_image.diff_ids[:2], a_image.diff_ids[:2], "the base's and COPY --from's layers")
        self.assertNotEqual(b_image.diff_ids[2:], a_image.diff_ids[2:])

    # -- 3. mode=min, the default, exports the final image's chain only --------------------------

    def test_mode_min_is_the_default_and_exports_only_the_final_images_chain(self):
        refs = {mode: self.ref(f"cache-{mode}") for mode in ("min", "default", "max")}
        a, _, a_image = self.export_from_a(refs["min"], "mode=min")
        self.export_from_a(refs["default"], daemon=a)
        self.export_from_a(refs["max"], "mode=max", daemon=a)
        configs = {mode: self.cache_documents(ref)[1] for mode, ref in refs.items()}

        def layers(config):
            return {layer["diffID"] for layer in config.get("layers", [])}

        def keys(config):
            return {record["key"] for record in config.get("records", [])}
        self.assertEqual((layers(configs["default"]), keys(configs["default"])),
                         (layers(configs["min"]), keys(configs["min"])), "no mode is not mode=min")
        self.assertLessEqual(layers(configs["min"]), set(a_image.diff_ids),
                             "mode=min exported a layer that is not the final image's")
        builder_only = layers(configs["max"]) - set(a_image.diff_ids)
        self.assertTrue(builder_only, "mode=max did not export the builder stage's RUN layer")
        self.assertLess(len(keys(configs["min"])), len(keys(configs["max"])))
        self.assertLessEqual(keys(configs["min"]), keys(configs["max"]))

        # The builder stage alone: min has no result for its RUN, max has.
        b_min = self.host("b-min")
        under_min = self.build(b_min, self.context(name="ctx-b"), "--target", "builder",
                               "--cache-from", f"type=registry,ref={refs['min']}")
        self.assert_steps(under_min, [], [BUILDER_RUN], "the builder stage from a mode=min cache")
        self.assertIn("RAN-builder", under_min.progress.output())
        b_max = self.host("b-max")
        under_max = self.build(b_max, self.context(name="ctx-b"), "--target", "builder",
                               "--cache-from", f"type=registry,ref={refs['max']}")
        self.assert_steps(under_max, [BUILDER_RUN], [], "the builder stage from a mode=max cache")
        self.assertNotIn("RAN-builder", under_max.progress.output())

        # The final stage with last.txt changed: under min, COPY --from still hits (it is the
        # final image's) and only what follows last.txt runs.
        b_changed = self.host("b-changed")
        changed = self.build(b_changed, self.context("changed\n", name="ctx-b-changed"), "-t", "app:b",
                             "--cache-from", f"type=registry,ref={refs['min']}")
        self.assert_steps(changed, [BUILDER_FROM, COPY_FROM_BUILDER], [COPY_LAST, FINAL_RUN],
                          "the final stage with last.txt changed, from a mode=min cache")
        self.assertEqual(self.saved(b_changed, "app:b").files["random"], a_image.files["random"])
        print(f"\n  mode=min, last.txt changed: the builder's RUN "
              f"{'ran' if changed.progress.ran(BUILDER_RUN) else 'did not run'} on B "
              f"({len(keys(configs['min']))} records under min, {len(keys(configs['max']))} under max)",
              file=sys.stderr)

    # -- 4. an import fetches only the blobs a hit needs ----------------------------------------

    def blob_gets(self, mark, repository):
        """Digests of the blobs fetched (GET) since `mark`, once the import's manifest GET is logged."""
        def manifest_got(requests):
            return any(m == "GET" and p.startswith(f"/v2/{repository}/manifests/") for m, p, _ in requests)
        self.assertTrue(manifest_got(self.registry.requests(mark, until=manifest_got)),
                        f"the import is not in the registry's log: {self.registry.requests(mark)}")
        time.sleep(1)  # the registry logs a request just after answering it
        return [path.rsplit("/", 1)[1] for method, path, _ in self.registry.requests(mark)
                if method == "GET" and "/blobs/" in path]

    def test_a_final_step_hit_does_not_fetch_the_builder_stages_blobs(self):
        cache = self.ref("buildcache")
        _, _, a_image = self.export_from_a(cache, "mode=max")
        _, repository, _ = split_ref(cache)
        _, config = self.cache_documents(cache)
        builder_only = {layer["blob"] for layer in config.get("layers", []) if layer["diffID"] not in a_image.diff_ids}
        self.assertTrue(builder_only, f"the mode=max cache has no layer of the builder stage alone: {config}")

        b = self.host("b")
        mark = self.registry.mark()
        imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b",
                              "--cache-from", f"type=registry,ref={cache}")
        self.assert_steps(imported, ALL_STEPS, [], "host B's build from A's cache")
        blob_gets = self.blob_gets(mark, repository)
        fetched = builder_only & set(blob_gets)
        self.assertFalse(fetched, f"B fetched the builder stage's blobs {sorted(fetched)}; "
                                  f"all its blob GETs: {blob_gets}")

        # Nor when the final stage misses after COPY --from: what it copied is the hit, not the
        # builder's RUN.
        c = self.host("c")
        mark = self.registry.mark()
        changed = self.build(c, self.context("changed\n", name="ctx-c"), "-t", "app:c",
                             "--cache-from", f"type=registry,ref={cache}")
        self.assert_steps(changed, [BUILDER_RUN, COPY_FROM_BUILDER], [COPY_LAST, FINAL_RUN], "host C's build")
        changed_gets = self.blob_gets(mark, repository)
        fetched = builder_only & set(changed_gets)
        self.assertFalse(fetched, f"with last.txt changed, C fetched the builder stage's blobs {sorted(fetched)}; "
                                  f"all its blob GETs: {changed_gets}")
        print(f"\n  B fetched {len(blob_gets)} blobs, C (last.txt changed) {len(changed_gets)}, none of the "
              f"{len(builder_only)} of the builder stage alone", file=sys.stderr)

    def test_bases_in_a_registry_are_not_pulled_when_every_step_hits(self):
        # The stages' bases come from the registry: the builder's has a layer of its own. B has
        # neither; its build from A's cache resolves both (manifest and config) and pulls none:
        # the final stage's base layer is the busybox one B has, the rest comes from the cache.
        a = self.host("a")
        builder_base, final_base = self.ref("builder-base"), self.ref("final-base")
        base_ctx = self.path("ctx-bases")
        write(os.path.join(base_ctx, "Dockerfile"),
              f"FROM {BASE}\nRUN head -c 1048576 /dev/urandom > /only-in-the-builder-base\n")
        self.build(a, base_ctx, "-t", builder_base, "--push")
        write(os.path.join(base_ctx, "Dockerfile.final"), f"FROM {BASE}\nLABEL base=final\n")
        self.build(a, base_ctx, "-f", "Dockerfile.final", "-t", final_base, "--push")
        _, base_repository, _ = split_ref(builder_base)
        _, base_manifest = self.http.manifest(base_repository, "builder-base")
        base_only = json.loads(base_manifest)["layers"][-1]["digest"]

        ctx = self.context(name="ctx-a")
        dockerfile = open(os.path.join(ctx, "Dockerfile")).read()
        dockerfile = dockerfile.replace(f"FROM {BASE} AS builder", f"FROM {builder_base} AS builder", 1)
        dockerfile = dockerfile.replace(f"FROM {BASE} AS final", f"FROM {final_base} AS final", 1)
        self.assertIn(builder_base, dockerfile)
        self.assertIn(final_base, dockerfile)
        write(os.path.join(ctx, "Dockerfile"), dockerfile)
        cache = self.ref("buildcache")
        self.build(a, ctx, "-t", "app:a", "--cache-to", f"type=registry,ref={cache},mode=max")
        a_image = self.saved(a, "app:a")

        b = self.host("b")
        ctx_b = self.context(name="ctx-b")
        write(os.path.join(ctx_b, "Dockerfile"), dockerfile)
        mark = self.registry.mark()
        imported = self.build(b, ctx_b, "-t", "app:b", "--cache-from", f"type=registry,ref={cache}")
        self.assert_steps(imported, [BUILDER_RUN, COPY_FROM_BUILDER, COPY_LAST, FINAL_RUN], [],
                          "host B's build from A's cache")
        gets = self.blob_gets(mark, split_ref(cache)[1])
        gets += [path.rsplit("/", 1)[1] for method, path, _ in self.registry.requests(mark)
                 if method == "GET" and path.startswith(f"/v2/{base_repository}/blobs/")]
        self.assertNotIn(base_only, gets, f"B pulled the builder base's own layer; its blob GETs: {gets}")
        b_image = self.saved(b, "app:b")
        self.assertEqual(b_image.diff_ids, a_image.diff_ids)
        self.assertEqual(b_image.files["random"], a_image.files["random"])

        # Without a cache the same build pulls what it runs on, and works.
        c = self.host("c")
        ctx_c = self.context(name="ctx-c")
        write(os.path.join(ctx_c, "Dockerfile"), dockerfile)
        cold = self.build(c, ctx_c, "-t", "app:c")
        self.assert_steps(cold, [], [BUILDER_RUN, COPY_FROM_BUILDER, COPY_LAST, FINAL_RUN], "host C's cold build")
        self.assertEqual(self.saved(c, "app:c").diff_ids[:1], a_image.diff_ids[:1])

    def test_every_envelope_and_compression_round_trips(self):
        # docs/cache-format.md: image-manifest=false is an OCI index of the blobs and the config
        # (a Docker manifest list with oci-mediatypes=false); compression as for image exports.
        variants = {"image-manifest=false": ("image-manifest=false", OCI_INDEX),
                    "oci-mediatypes=false": ("oci-mediatypes=false", DOCKER_MANIFEST_LIST),
                    "compression=zstd": ("compression=zstd", OCI_MANIFEST)}
        a = self.host("a")
        problems = []
        for number, (what, (attribute, media_type)) in enumerate(variants.items()):
            cache = self.ref(f"cache-{number}")
            _, a_built, a_image = self.export_from_a(cache, "mode=max", attribute, daemon=a)
            _, repository, tag = split_ref(cache)
            got_type, data = self.http.manifest(repository, tag)
            envelope = json.loads(data)
            if envelope.get("mediaType", got_type) != media_type:
                problems.append(f"{what}: the envelope is {envelope.get('mediaType', got_type)}, not {media_type}")
            if what == "compression=zstd" and not all(layer["mediaType"].endswith("+zstd")
                                                      for layer in envelope.get("layers", [])):
                problems.append(f"{what}: layers {[layer['mediaType'] for layer in envelope.get('layers', [])]}")
            b = self.host(f"b{number}")
            imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b",
                                  "--cache-from", f"type=registry,ref={cache}", check=False)
            if imported.returncode != 0:
                problems.append(f"{what}: B's build failed: {imported.message()[-1000:]}")
                continue
            missed = [step for step in ALL_STEPS if not imported.progress.cached(step)]
            if missed or imported.progress.warnings:
                problems.append(f"{what}: not CACHED on B: {missed}\n{imported.progress.describe()}")
            elif self.saved(b, "app:b").files["random"] != a_image.files["random"]:
                problems.append(f"{what}: B's /random is not A's")
            b.stop()
        self.assertFalse(problems, "\n".join(problems))

    def test_attributes_buildkit_refuses_are_refused_and_nothing_is_pushed(self):
        cache = self.ref("buildcache")
        a = self.host("a")
        refused = {}
        for attributes in ("mode=maximum", "oci-mediatypes=false,image-manifest=true", "ignore-error=maybe"):
            built = self.build(a, self.context(name="ctx-a"), "--cache-to", f"type=registry,ref={cache},{attributes}",
                               check=False)
            message = built.message()
            self.assertNotEqual(built.returncode, 0, f"{attributes} was taken:\n{built.progress.describe()}")
            refused[attributes] = message.strip().splitlines()[-1] if message.strip() else ""
        _, repository, tag = split_ref(cache)
        with self.assertRaises(urllib.error.HTTPError, msg="a refused export pushed a cache"):
            self.http.manifest(repository, tag)
        print("\n" + "\n".join(f"  {what}: {line[:200]}" for what, line in refused.items()), file=sys.stderr)

    # -- 5. inline ------------------------------------------------------------------------------

    def test_an_inline_cache_pushed_with_the_image_serves_a_bare_cache_from(self):
        image = self.ref("latest")
        a = self.host("a")
        self.build(a, self.context(name="ctx-a"), "-t", image, "--push", "--cache-to", "type=inline")
        a_image = self.saved(a, image)
        b = self.host("b")
        imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b", "--cache-from", image)
        self.assert_steps(imported, ALL_STEPS, [], "host B's build from A's inline cache")
        self.assertNotIn("RAN-", imported.progress.output(), "a RUN step ran on host B")
        b_image = self.saved(b, "app:b")
        self.assertEqual(b_image.files["random"], a_image.files["random"])
        self.assertEqual(b_image.diff_ids, a_image.diff_ids)

    # -- 6. what is not a cache, or not ours ----------------------------------------------------

    def test_foreign_missing_and_corrupt_caches_are_ignored_with_a_warning(self):
        a = self.host("a")
        plain = self.ref("plain")
        self.build(a, self.context(name="ctx-a"), "-t", plain, "--push")
        _, repository, _ = split_ref(self.ref("x"))
        host = self.registry.host
        self.http.push_manifest(repository, "garbage", CACHE_CONFIG, b"{this is not JSON\x00\xff")
        self.http.push_manifest(repository, "version-2", CACHE_CONFIG,
                                json.dumps({"kbuildCache": 2, "keyScheme": "kbuild-key-v3", "layers": [],
                                            "records": []}).encode())
        self.http.push_manifest(repository, "buildkit", BUILDKIT_CACHE_CONFIG,
                                json.dumps({"layers": [], "records": []}).encode())
        cases = {
            "an image with no cache": plain,
            "a tag that does not exist": f"{host}/{repository}:no-such-tag",
            "a repository that does not exist": f"{host}/t/no-such-repository:buildcache",
            "a cache config that is not JSON": f"{host}/{repository}:garbage",
            "a cache config of version 2": f"{host}/{repository}:version-2",
            "BuildKit's cache": f"{host}/{repository}:buildkit",
        }
        problems, shown = [], []
        for what, ref in cases.items():
            b = self.host(f"b{len(shown) + len(problems)}")
            imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b",
                                  "--cache-from", f"type=registry,ref={ref}", check=False)
            if imported.returncode != 0:
                problems.append(f"{what} ({ref}): the build failed:\n{imported.message()[-1500:]}")
                continue
            said = imported.progress.warnings_about(ref, "importing cache manifest from")
            if not said:
                problems.append(f"{what} ({ref}): no warning\n{imported.progress.describe()}")
                continue
            shown.append(f"  {what}: {said[0].strip()[:300]}")
            if not imported.progress.ran(BUILDER_RUN) or "random" not in self.saved(b, "app:b").files:
                problems.append(f"{what}: the build did not run its steps:\n{imported.progress.describe()}")
            b.stop()
        print("\n" + "\n".join(shown), file=sys.stderr)
        self.assertFalse(problems, "\n".join(problems))

    def test_a_bad_cache_source_beside_a_good_one_leaves_its_hits(self):
        cache = self.ref("buildcache")
        _, _, a_image = self.export_from_a(cache, "mode=max")
        _, repository, _ = split_ref(cache)
        self.http.push_manifest(repository, "garbage", CACHE_CONFIG, b"{this is not JSON")
        garbage, missing = f"{self.registry.host}/{repository}:garbage", f"{self.registry.host}/{repository}:missing"
        b = self.host("b")
        imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b",
                              "--cache-from", f"type=registry,ref={garbage}",
                              "--cache-from", f"type=registry,ref={missing}",
                              "--cache-from", f"type=registry,ref={cache}")
        self.assert_steps(imported, ALL_STEPS, [], "host B's build from a good cache after two bad ones")
        for ref in (garbage, missing):
            self.assertTrue(imported.progress.warnings_about(ref, "importing cache manifest from"),
                            f"no warning about {ref}:\n{imported.progress.describe()}")
        self.assertEqual(self.saved(b, "app:b").files["random"], a_image.files["random"])

    # -- 7. an export the registry refuses ------------------------------------------------------

    def test_a_refused_export_fails_the_build_unless_ignore_error(self):
        user, password = "builder", "pw-" + uuid.uuid4().hex
        htpasswd = self.path("htpasswd")
        write(htpasswd, run(["htpasswd", "-Bbn", user, password]).stdout)
        private = DistributionRegistry(self.workdir, f"{self.name()}-auth", htpasswd=htpasswd)
        self.addCleanup(private.stop)
        cache = self.ref("buildcache", registry=private)
        wrong = docker_config(self.path("wrong-credentials"), {private.host: (user, "not-" + password)})
        a = self.host("a")

        refused = self.build(a, self.context(name="ctx-a"), "-t", "app:a",
                             "--cache-to", f"type=registry,ref={cache},mode=max", check=False, credentials=wrong)
        self.assertNotEqual(refused.returncode, 0, f"the refused export did not fail the build:\n"
                                                   f"{refused.progress.describe()}")
        message = refused.message()
        self.assertTrue(any(word in message.lower() for word in ("unauthorized", "authentication", "denied",
                                                                   "incorrect username or password")), message)
        self.assertIn(private.host, message, "the error does not say which cache export failed")
        self.assertNotIn(password, message)

        ignored = self.build(a, self.context(name="ctx-a"), "-t", "app:ignored",
                             "--cache-to", f"type=registry,ref={cache},mode=max,ignore-error=true",
                             check=False, credentials=wrong)
        said = self.assert_warned(ignored, cache, "exporting cache to registry", "ignore-error=true")
        self.assertIn("app:ignored", a.names())
        print(f"\n  refused: {message.strip().splitlines()[-1][:300]}\n  ignored: {said[0].strip()[:300]}",
              file=sys.stderr)

    # -- 8. the same cache, the same manifest ----------------------------------------------------

    def test_exporting_the_same_cache_twice_pushes_the_same_manifest(self):
        a = self.host("a")
        for mode in ("max", "min"):
            cache = self.ref(f"buildcache-{mode}")
            self.export_from_a(cache, f"mode={mode}", daemon=a)
            first = self.manifest_digest(cache)
            self.export_from_a(cache, f"mode={mode}", daemon=a)
            self.assertEqual(self.manifest_digest(cache), first, f"mode={mode}: the second export differs")

    def test_a_host_that_imported_a_whole_cache_exports_the_same_manifest(self):
        cache, again = self.ref("buildcache"), self.ref("reexported")
        self.export_from_a(cache, "mode=max")
        b = self.host("b")
        self.build(b, self.context(name="ctx-b"), "-t", "app:b", "--cache-from", f"type=registry,ref={cache}",
                   "--cache-to", f"type=registry,ref={again},mode=max")
        self.assertEqual(self.manifest_digest(again), self.manifest_digest(cache),
                         f"B's re-export differs from A's export:\n{self.cache_difference(cache, again)}")

    def cache_difference(self, first, second):
        """What differs between the caches at two refs: envelope members, layers, records."""
        (m1, c1), (m2, c2) = self.cache_documents(first), self.cache_documents(second)
        lines = []
        for member in sorted(set(m1) | set(m2)):
            if member not in ("config", "layers") and m1.get(member) != m2.get(member):
                lines.append(f"envelope {member}: {m1.get(member)} != {m2.get(member)}")
        if [l["digest"] for l in m1["layers"]] != [l["digest"] for l in m2["layers"]]:
            lines.append(f"envelope layers: {m1['layers']}\n  != {m2['layers']}")
        for member in sorted(set(c1) | set(c2)):
            if member not in ("layers", "records") and c1.get(member) != c2.get(member):
                lines.append(f"config {member}: {c1.get(member)} != {c2.get(member)}")
        l1, l2 = c1.get("layers", []), c2.get("layers", [])
        for layer in l1:
            if layer not in l2:
                lines.append(f"layer only in the first: {layer}")
        for layer in l2:
            if layer not in l1:
                lines.append(f"layer only in the second: {layer}")

        def records(config):
            layers = config.get("layers", [])
            return {r["key"]: layers[r["layer"]]["diffID"] if 0 <= r["layer"] < len(layers) else r["layer"]
                    for r in config.get("records", [])}
        r1, r2 = records(c1), records(c2)
        for key in sorted(set(r1) | set(r2)):
            if r1.get(key) != r2.get(key):
                lines.append(f"record {key}: {r1.get(key, 'absent')} != {r2.get(key, 'absent')}")
        return "\n".join(lines) or "the envelopes differ in bytes only"

    # -- 9. type=local -----------------------------------------------------------------------

    def test_local_cache_directory_serves_a_fresh_host(self):
        directory = self.path("cache-dir")
        a = self.host("a")
        exported = self.build(a, self.context(name="ctx-a"), "-t", "app:a",
                              "--cache-to", f"type=local,dest={directory},mode=max")
        self.assertTrue(exported.progress.named("exporting cache"), exported.progress.describe())
        # BuildKit's local cache is an OCI layout.
        self.assertTrue(os.path.isfile(os.path.join(directory, "index.json")), os.listdir(directory))
        self.assertTrue(os.path.isfile(os.path.join(directory, "oci-layout")), os.listdir(directory))
        a_image = self.saved(a, "app:a")
        b = self.host("b")
        imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b",
                              "--cache-from", f"type=local,src={directory}")
        self.assert_steps(imported, ALL_STEPS, [], "host B's build from A's local cache")
        self.assertNotIn("RAN-", imported.progress.output())
        b_image = self.saved(b, "app:b")
        self.assertEqual(b_image.files["random"], a_image.files["random"])
        self.assertEqual(b_image.diff_ids, a_image.diff_ids)

    def test_local_cache_from_a_missing_directory_is_a_warning(self):
        missing = self.path("no-such-cache-dir")
        b = self.host("b")
        imported = self.build(b, self.context(name="ctx-b"), "-t", "app:b",
                              "--cache-from", f"type=local,src={missing}", check=False)
        self.assertEqual(imported.returncode, 0, imported.message())
        said = [text for _, text in imported.progress.warnings if missing in text]
        said += [line for line in imported.progress.output().splitlines()
                 if "warn" in line.lower() and missing in line]
        said += imported.progress.warnings_about(missing, "importing cache")
        self.assertTrue(said, f"no warning about {missing}:\n{imported.progress.describe()}")
        print(f"\n  {said[0].strip()[:300]}", file=sys.stderr)
        self.assertTrue(imported.progress.ran(BUILDER_RUN))
        self.assertFalse(os.path.exists(missing), "the import made the directory it reads")


def main():
    return suite.main("cache", CacheTest, needs_root="they run root daemons", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
