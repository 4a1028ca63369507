#!/usr/bin/env python3
"""Unit tests of the harness's image reader on synthetic archives (no daemon, no root):
whiteouts and opaque directories, hardlinks, diff_ids of plain and compressed layers, and the
comparison rules: each kind of difference the harness claims to find must be reported.

    python3 tests/integration/differential/test_image_tree.py

It ends with `harness: N passed, N failed`, the line scripts/test.sh counts.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import image_tree  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for daemons' mounts
import multiplatform  # noqa: E402

OLD = 1500000000  # an mtime from a context
FLOOR = 1700000000  # "the harness started here": later mtimes are build-time stamps


def layer(*members):
    """A layer tar as bytes; members are (name, kind, extra) with kind file/dir/symlink/link."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = extra.get("mtime", OLD)
            info.mode = extra.get("mode", 0o755 if kind == "dir" else 0o644)
            info.uid = info.gid = extra.get("owner", 0)
            info.uname, info.gname = extra.get("uname", ""), extra.get("gname", "")
            data = None
            if kind == "file":
                data = extra.get("content", b"x")
                info.size = len(data)
            else:
                info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                             "link": tarfile.LNKTYPE}[kind]
                info.linkname = extra.get("target", "")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def flatten(*layers):
    tree = {}
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            image_tree.apply_layer(tree, tar)
    return tree


def docker_archive(path, layers, diff_ids=None, config=None, compress=False):
    config = dict(config or {})
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids if diff_ids is not None else
                        ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]}
    files = {"config.json": json.dumps(config).encode()}
    names = []
    for index, data in enumerate(layers):
        names.append(f"l{index}/layer.tar")
        files[names[-1]] = gzip.compress(data, mtime=0) if compress else data
    files["manifest.json"] = json.dumps(
        [{"Config": "config.json", "RepoTags": ["t:latest"], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def oci_archive(path, images, attestation=False):
    """An OCI layout archive of `images`, (platform, layers, config) each, gzip layers: several
    listed by an image index named in index.json (as BuildKit writes them), one by itself.
    Returns the blobs by digest, to spoil one."""
    blobs = {}

    def blob(data, media_type, **extra):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return dict(mediaType=media_type, digest=digest, size=len(data), **extra)

    manifests = []
    for platform, layers, config in images:
        config = dict(config, rootfs={"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(data).hexdigest() for data in layers]})
        manifest = {"schemaVersion": 2, "mediaType": image_tree.OCI_MANIFEST,
                    "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
                    "layers": [blob(gzip.compress(data, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
                               for data in layers]}
        manifests.append(blob(json.dumps(manifest).encode(), image_tree.OCI_MANIFEST, platform=platform))
    if attestation:
        manifest = {"schemaVersion": 2, "mediaType": image_tree.OCI_MANIFEST,
                    "config": blob(b"{}", "application/vnd.oci.image.config.v1+json"), "layers": []}
        manifests.append(blob(json.dumps(manifest).encode(), image_tree.OCI_MANIFEST,
                              platform={"architecture": "unknown", "os": "unknown"},
                              annotations={image_tree.ATTESTATION_ANNOTATION: "attestation-manifest"}))
    top = manifests[0] if len(manifests) == 1 else blob(json.dumps(
        {"schemaVersion": 2, "mediaType": image_tree.OCI_INDEX, "manifests": manifests}).encode(),
        image_tree.OCI_INDEX)

    def write(spoil=None):
        files = {"index.json": json.dumps({"schemaVersion": 2, "manifests": [top]}).encode(),
                 "oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
        for digest, data in blobs.items():
            files["blobs/sha256/" + digest[len("sha256:"):]] = spoil(digest, data) if spoil else data
        with tarfile.open(path, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    write()
    return write


class Flattening(unittest.TestCase):
    def test_whiteout_removes_a_file_and_a_directory_with_its_children(self):
        tree = flatten(
            layer(("a", "dir", {}), ("a/f", "file", {}), ("d", "dir", {}), ("d/x", "file", {})),
            layer(("a/.wh.f", "file", {}), (".wh.d", "file", {})))
        self.assertEqual(sorted(tree), ["/a"])

    def test_opaque_directory_hides_only_lower_layers(self):
        tree = flatten(
            layer(("d", "dir", {}), ("d/old", "file", {}), ("d/sub", "dir", {}),
                  ("d/sub/deep", "file", {})),
            layer(("d", "dir", {}), ("d/new", "file", {}), ("d/.wh..wh..opq", "file", {})))
        self.assertEqual(sorted(tree), ["/d", "/d/new"])

    def test_hardlink_is_a_file_equal_to_its_target(self):
        tree = flatten(layer(("f", "file", {"content": b"data", "mode": 0o600}),
                             ("g", "link", {"target": "f"})))
        self.assertEqual(tree["/g"], tree["/f"])
        self.assertEqual(tree["/g"].digest, hashlib.sha256(b"data").hexdigest())

    def test_file_replacing_a_directory_drops_its_children(self):
        tree = flatten(layer(("p", "dir", {}), ("p/c", "file", {})),
                       layer(("p", "symlink", {"target": "elsewhere"})))
        self.assertEqual(sorted(tree), ["/p"])
        self.assertEqual(tree["/p"].target, "elsewhere")

    def test_directory_over_directory_keeps_children_and_takes_new_metadata(self):
        tree = flatten(layer(("p", "dir", {}), ("p/c", "file", {})),
                       layer(("p", "dir", {"mode": 0o700, "owner": 7})))
        self.assertEqual(sorted(tree), ["/p", "/p/c"])
        self.assertEqual((tree["/p"].mode, tree["/p"].uid), (0o700, 7))

    def test_names_are_normalized(self):
        tree = flatten(layer(("./a/", "dir", {}), ("./a//b", "file", {})))
        self.assertEqual(sorted(tree), ["/a", "/a/b"])

    def test_rootfs_tar_keeps_whiteout_names_as_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rootfs.tar")
            with open(path, "wb") as out:
                out.write(layer(("a", "dir", {}), ("a/.wh.f", "file", {})))
            self.assertEqual(sorted(image_tree.read_rootfs_tar(path)), ["/a", "/a/.wh.f"])


class DockerArchive(unittest.TestCase):
    def test_reads_layers_in_manifest_order(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.tar")
            docker_archive(path, [layer(("f", "file", {"content": b"1"})),
                                  layer(("f", "file", {"content": b"2"}))],
                           config={"config": {"Env": ["A=1"]}})
            image = image_tree.read_docker_archive(path)
        self.assertEqual(image.layer_count, 2)
        self.assertEqual(image.problems, [])
        self.assertEqual(image.tree["/f"].digest, hashlib.sha256(b"2").hexdigest())
        self.assertEqual(image.config["config"]["Env"], ["A=1"])

    def test_reports_a_layer_whose_digest_is_not_its_diff_id(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.tar")
            docker_archive(path, [layer(("f", "file", {}))], diff_ids=["sha256:" + "0" * 64])
            image = image_tree.read_docker_archive(path)
        self.assertEqual(len(image.problems), 1)
        self.assertIn("diff_ids", image.problems[0])

    def test_image_without_layers(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.tar")
            docker_archive(path, [])
            image = image_tree.read_docker_archive(path)
        self.assertEqual((image.layer_count, image.tree, image.problems), (0, {}, []))


AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux"}


class OciArchive(unittest.TestCase):
    def test_reads_each_platform_of_an_index_in_order(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.oci.tar")
            oci_archive(path, [
                (AMD64, [layer(("bin/busybox", "file", {"content": b"\x7fELF amd64"}))], AMD64),
                (ARM64, [layer(("bin/busybox", "file", {"content": b"\x7fELF old"})),
                         layer(("bin/busybox", "file", {"content": b"\x7fELF arm64"}))], ARM64)])
            layout = image_tree.read_oci_archive(path)
            self.assertEqual(layout.problems, [])
            self.assertEqual([d["mediaType"] for d in layout.index["manifests"]], [image_tree.OCI_INDEX])
            self.assertEqual(len(layout.nested), 1)
            self.assertEqual([i.descriptor["platform"] for i in layout.images], [AMD64, ARM64])
            self.assertEqual([i.image.config["architecture"] for i in layout.images], ["amd64", "arm64"])
            self.assertEqual(layout.images[1].image.layer_count, 2)
            # the file as the topmost layer writes it
            self.assertEqual(image_tree.read_oci_file_head(path, layout.images[1], "/bin/busybox", 9),
                             b"\x7fELF arm6")
            self.assertIsNone(image_tree.read_oci_file_head(path, layout.images[1], "/bin/sh", 9))

    def test_one_platform_is_a_manifest_named_in_index_json(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.oci.tar")
            oci_archive(path, [(ARM64, [layer(("f", "file", {}))], ARM64)])
            layout = image_tree.read_oci_archive(path)
        self.assertEqual([d["mediaType"] for d in layout.index["manifests"]], [image_tree.OCI_MANIFEST])
        self.assertEqual((layout.nested, len(layout.images), layout.problems), ([], 1, []))

    def test_reports_a_blob_that_is_not_its_digest(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.oci.tar")
            write = oci_archive(path, [(AMD64, [layer(("f", "file", {"content": b"a"}))], AMD64)])
            spoiled = []

            def spoil(digest, data):
                if data.startswith(b"\x1f\x8b") and not spoiled:  # the layer
                    spoiled.append(digest)
                    return gzip.compress(layer(("f", "file", {"content": b"b"})), mtime=0)
                return data
            write(spoil)
            problems = image_tree.read_oci_archive(path).problems
        self.assertTrue(any(spoiled[0] in p and "has digest" in p for p in problems), problems)
        self.assertTrue(any("rootfs.diff_ids" in p for p in problems), problems)

    def test_attestation_manifests_are_told_apart(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.oci.tar")
            oci_archive(path, [(AMD64, [layer(("f", "file", {}))], AMD64)], attestation=True)
            layout = image_tree.read_oci_archive(path)
        self.assertEqual([image_tree.is_attestation(i) for i in layout.images], [False, True])


class Directory(unittest.TestCase):
    def test_reads_what_a_local_export_wrote(self):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "d", "e"))
            with open(os.path.join(tmp, "d", "f"), "wb") as f:
                f.write(b"content")
            os.chmod(os.path.join(tmp, "d", "f"), 0o4750)
            os.link(os.path.join(tmp, "d", "f"), os.path.join(tmp, "g"))
            os.symlink("d/f", os.path.join(tmp, "s"))
            os.utime(os.path.join(tmp, "d", "e"), (OLD, OLD))
            tree = image_tree.read_directory(tmp)
        self.assertEqual(sorted(tree), ["/d", "/d/e", "/d/f", "/g", "/s"])
        f = tree["/d/f"]
        self.assertEqual((f.kind, f.mode, f.size, f.digest),
                         ("file", 0o4750, 7, hashlib.sha256(b"content").hexdigest()))
        self.assertEqual(tree["/g"], f)  # a hardlink is a file equal to its target
        self.assertEqual((tree["/s"].kind, tree["/s"].target), ("symlink", "d/f"))
        self.assertEqual((tree["/d/e"].kind, tree["/d/e"].mtime), ("dir", OLD))


class Platforms(unittest.TestCase):
    def test_local_export_directory_names_are_buildkits(self):
        self.assertEqual(multiplatform.Platform("linux/arm64").dirname, "linux_arm64")
        self.assertEqual(multiplatform.Platform("linux/arm/v7").dirname, "linux_arm_v7")

    def test_a_config_names_a_platform_with_its_variant(self):
        arm = multiplatform.Platform("linux/arm64")
        self.assertTrue(arm.matches(ARM64))
        self.assertFalse(arm.matches(AMD64))
        self.assertFalse(arm.matches(dict(ARM64, variant="v8")))
        self.assertTrue(multiplatform.Platform("linux/arm64/v8").matches(dict(ARM64, variant="v8")))

    def test_elf_machine(self):
        header = b"\x7fELF\x02\x01\x01" + bytes(11)
        self.assertEqual(multiplatform.elf_machine(header + b"\xb7\x00"), 0xB7)
        self.assertEqual(multiplatform.elf_machine(header + b"\x3e\x00"), 0x3E)
        self.assertIsNone(multiplatform.elf_machine(b"#!/bin/sh\n" + bytes(20)))


class Comparison(unittest.TestCase):
    policy = image_tree.MtimePolicy(FLOOR)

    def diff(self, left, right):
        return image_tree.diff_trees(flatten(left), flatten(right), "buildkit", "kbuild",
                                     self.policy)

    def test_equal_trees_have_no_difference(self):
        data = layer(("d", "dir", {"mtime": FLOOR + 5}), ("d/f", "file", {}))
        self.assertEqual(self.diff(data, data), [])

    def test_reports_owner_mode_content_and_missing_paths(self):
        lines = self.diff(layer(("f", "file", {"content": b"a"}), ("only", "file", {})),
                          layer(("f", "file", {"content": b"b", "mode": 0o600, "owner": 5}),
                                ("extra", "dir", {})))
        self.assertEqual(len(lines), 3)
        self.assertIn("/extra: only in kbuild", lines[0])
        self.assertIn("mode 0644 != 0600", lines[1])
        self.assertIn("owner 0:0 != 5:5", lines[1])
        self.assertIn("content", lines[1])
        self.assertIn("/only: only in buildkit", lines[2])

    def test_build_time_directory_mtimes_are_not_compared(self):
        self.assertEqual(self.diff(layer(("d", "dir", {"mtime": FLOOR + 5})),
                                   layer(("d", "dir", {"mtime": OLD}))), [])

    def test_preserved_directory_mtimes_are_compared(self):
        lines = self.diff(layer(("d", "dir", {"mtime": OLD})),
                          layer(("d", "dir", {"mtime": FLOOR + 5})))
        self.assertIn(f"mtime {OLD} != build time", lines[0])

    def test_file_mtimes_are_compared_and_build_stamps_match_each_other(self):
        self.assertEqual(self.diff(layer(("f", "file", {"mtime": FLOOR + 1})),
                                   layer(("f", "file", {"mtime": FLOOR + 9}))), [])
        lines = self.diff(layer(("f", "file", {"mtime": OLD})),
                          layer(("f", "file", {"mtime": OLD + 1})))
        self.assertEqual(len(lines), 1)

    def test_config_fields_compare_as_go_omitempty_decodes_them(self):
        left = {"config": {"Cmd": None, "Env": ["A=1"], "ArgsEscaped": False, "Volumes": {}},
                "os": "linux"}
        right = {"config": {"Env": ["A=1"], "OnBuild": []}, "os": "linux"}
        self.assertEqual(image_tree.diff_configs(left, right, "buildkit", "kbuild"), [])
        right["config"]["User"] = "app"
        self.assertEqual(image_tree.diff_configs(left, right, "buildkit", "kbuild"),
                         ['config.User: buildkit null != kbuild "app"'])


def read_image(layers, **options):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.tar")
        docker_archive(path, layers, **options)
        return image_tree.read_docker_archive(path)


def history(*created_by):
    return {"history": [{"created_by": c, "comment": "buildkit.dockerfile.v0",
                         **({"empty_layer": True} if not c.startswith(("RUN", "COPY", "ADD"))
                            else {})} for c in created_by]}


class DiffIds(unittest.TestCase):
    def test_gzip_layers_are_checked_against_their_uncompressed_digest(self):
        data = layer(("f", "file", {}))
        image = read_image([data], compress=True)
        self.assertEqual(image.problems, [])
        self.assertEqual(image.diff_ids, ["sha256:" + hashlib.sha256(data).hexdigest()])

    def test_reports_a_compressed_layer_whose_digest_is_not_its_diff_id(self):
        data = layer(("f", "file", {}))
        gzipped = "sha256:" + hashlib.sha256(gzip.compress(data, mtime=0)).hexdigest()
        image = read_image([data], compress=True, diff_ids=[gzipped])
        self.assertEqual(len(image.problems), 1)
        self.assertIn("gzip", image.problems[0])
        self.assertIn(gzipped, image.problems[0])

    def test_reports_diff_ids_in_the_wrong_order(self):
        one, two = layer(("a", "file", {})), layer(("b", "file", {}))
        ids = ["sha256:" + hashlib.sha256(d).hexdigest() for d in (two, one)]
        self.assertEqual(len(read_image([one, two], diff_ids=ids).problems), 2)

    def test_reports_history_that_does_not_match_the_layers(self):
        image = read_image([layer(("a", "file", {}))], config=history("ENV A=1"))
        self.assertIn("history", image.problems[0])


class LayerComparison(unittest.TestCase):
    policy = image_tree.MtimePolicy(FLOOR)

    def diff(self, left_layers, right_layers):
        return image_tree.diff_layers(read_image(left_layers), read_image(right_layers),
                                      "buildkit", "kbuild", self.policy)

    def test_equal_layers_have_no_difference(self):
        data = [layer(("d", "dir", {})), layer(("d/f", "file", {}), ("d/.wh.x", "file", {}))]
        self.assertEqual(self.diff(data, data), [])

    def test_reports_a_difference_in_one_layer_that_the_flattened_tree_hides(self):
        # kbuild writes /f in the first layer and again, unchanged, in the second.
        left = [layer(("f", "file", {})), layer(("g", "file", {}))]
        right = [layer(("f", "file", {})), layer(("f", "file", {}), ("g", "file", {}))]
        self.assertEqual(image_tree.diff_trees(read_image(left).tree, read_image(right).tree,
                                               "buildkit", "kbuild", self.policy), [])
        lines = self.diff(left, right)
        self.assertEqual(len(lines), 1)
        self.assertIn("layer 1: /f: only in kbuild", lines[0])

    def test_reports_a_missing_whiteout(self):
        base = layer(("a", "file", {}), ("b", "file", {}))
        lines = self.diff([base, layer((".wh.a", "file", {}))],
                          [base, layer((".wh.a", "file", {}), (".wh.b", "file", {}))])
        self.assertEqual(lines, ["layer 1: /.wh.b: only in kbuild (whiteout 0000 0:0)"])

    def test_whiteout_and_opaque_marker_differ(self):
        base = layer(("d", "dir", {}), ("d/x", "file", {}))
        lines = self.diff([base, layer(("d", "dir", {}), ("d/.wh..wh..opq", "file", {}))],
                          [base, layer(("d", "dir", {}), ("d/.wh.x", "file", {}))])
        self.assertEqual(len(lines), 2)

    def test_reports_a_hardlink_stored_as_a_copy(self):
        linked = layer(("f", "file", {"content": b"d"}), ("g", "link", {"target": "f"}))
        copied = layer(("f", "file", {"content": b"d"}), ("g", "file", {"content": b"d"}))
        self.assertEqual(self.diff([linked], [copied]),
                         ["layer 0: hardlinked in buildkit, not in kbuild: /f, /g"])

    def test_hardlinks_compare_as_groups_whichever_name_comes_first(self):
        one = layer(("a", "file", {}), ("b", "link", {"target": "a"}),
                    ("c", "link", {"target": "b"}))
        other = layer(("a", "file", {}), ("c", "link", {"target": "a"}),
                      ("b", "link", {"target": "a"}))
        self.assertEqual(self.diff([one], [other]), [])

    def test_reports_a_wrong_uname(self):
        lines = self.diff([layer(("f", "file", {"owner": 4242, "uname": "", "gname": ""}))],
                          [layer(("f", "file", {"owner": 4242, "uname": "app", "gname": ""}))])
        self.assertEqual(len(lines), 1)
        self.assertIn("uname/gname ''/'' != 'app'/''", lines[0])

    def test_names_the_reference_looked_up_on_the_host_are_none(self):
        # Docker 20.10's BuildKit writes the host's names; current BuildKit and kbuild none.
        import grp
        import pwd
        root, group = pwd.getpwuid(0).pw_name, grp.getgrgid(0).gr_name
        self.assertEqual(self.diff([layer(("f", "file", {"uname": root, "gname": group}))],
                                   [layer(("f", "file", {}))]), [])
        self.assertEqual(len(self.diff([layer(("f", "file", {}))],
                                       [layer(("f", "file", {"uname": root}))])), 1)

    def test_layers_are_not_paired_when_their_counts_differ(self):
        self.assertEqual(self.diff([layer(("f", "file", {}))], []), [])


class History(unittest.TestCase):
    def diff(self, left, right):
        return image_tree.diff_history(history(*left), history(*right), "buildkit", "kbuild")

    def test_equal_histories_have_no_difference(self):
        entries = ["ENV A=1", "RUN /bin/sh -c true # buildkit"]
        self.assertEqual(self.diff(entries, entries), [])

    def test_reports_a_different_created_by(self):
        lines = self.diff(["RUN /bin/sh -c true # buildkit"],
                          ["RUN [/bin/sh -c true] # buildkit"])
        self.assertEqual(lines, ['[0] buildkit: "RUN /bin/sh -c true # buildkit" comment '
                                 '"buildkit.dockerfile.v0"',
                                 '[0] kbuild: "RUN [/bin/sh -c true] # buildkit" comment '
                                 '"buildkit.dockerfile.v0"'])

    def test_reports_a_missing_entry_and_empty_layer(self):
        self.assertIn("buildkit has 2 entries, kbuild 1",
                      self.diff(["ENV A=1", "USER x"], ["ENV A=1"])[0])
        left, right = history("ENV A=1"), history("ENV A=1")
        right["history"][0]["empty_layer"] = False
        self.assertEqual(len(image_tree.diff_history(left, right, "buildkit", "kbuild")), 2)

    def test_reports_a_different_comment(self):
        left, right = history("ENV A=1"), history("ENV A=1")
        del right["history"][0]["comment"]
        self.assertEqual(len(image_tree.diff_history(left, right, "buildkit", "kbuild")), 2)

    def test_current_buildkit_entries_that_docker_20_10_lacks_are_normalised(self):
        self.assertEqual(self.diff(["COPY a /b # buildkit", "ENV A=1"],
                                   ["ARG V=1", "COPY --chown=1:2 --chmod=644 a /b # buildkit",
                                    "ENV A=1"]), [])
        self.assertEqual(self.diff(
            ["EXPOSE map[443/tcp:{} 80/tcp:{}]",
             'HEALTHCHECK &{["CMD" "/bin/x" "a b"] "5s" "3s" "1m30s" \'\\x04\'}'],
            ["EXPOSE [80/tcp 443/tcp]",
             "HEALTHCHECK {Test:[CMD /bin/x a b] Interval:5s Timeout:3s StartPeriod:1m30s "
             "StartInterval:0s Retries:4}"]), [])
        self.assertEqual(len(self.diff(["EXPOSE map[443/tcp:{} 80/tcp:{}]"],
                                       ["EXPOSE [80/tcp]"])), 2)
        # but not a COPY's sources or destination
        self.assertEqual(len(self.diff(["COPY a /b # buildkit"],
                                       ["COPY --chown=1 a /c # buildkit"])), 2)


if __name__ == "__main__":
    # scripts/test.sh counts the result line (see scripts/test_summary.py).
    outcome = unittest.main(exit=False, verbosity=2).result
    failed = len(outcome.failures) + len(outcome.errors) + len(outcome.unexpectedSuccesses)
    skipped = len(outcome.skipped)
    print(f"harness: {outcome.testsRun - failed - skipped} passed, {failed} failed"
          + (f", {skipped} skipped" if skipped else ""))
    sys.exit(0 if outcome.wasSuccessful() else 1)
