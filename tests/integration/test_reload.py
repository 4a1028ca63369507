#!/usr/bin/env python3
"""daemon.json read again while kbuildd runs: a real kbuildd on a private socket, store and
daemon.json (test_registry.Daemon), reloaded by SIGHUP, by `kbuildctl reload` and by the Reload
D-Bus method called with busctl. `kbuildctl info` shows the settings in use and where each came
from; an invalid file on reload is reported with file, line and column and the configuration in
use stays; a build that runs during a reload keeps the configuration it started with. Run as
root:

    python3 tests/integration/test_reload.py [--build-dir build] [-k PATTERN]

The last line is `reload: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_registry as harness  # noqa: E402  -- Daemon and its helpers
from mounts import unmount_all_under  # noqa: E402
from test_registry import run, wait_until, write  # noqa: E402

BASE = base_image.DEFAULT_TAG


def info(daemon):
    """`kbuildctl info` as {key: value}."""
    lines = daemon.client("info").stdout.splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


class ReloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-reload-")
        os.chmod(cls.workdir, 0o755)
        cls.all_daemons = []
        cls.base_archive = os.path.join(cls.workdir, "base.tar")
        base_image.write_base_image(cls.base_archive, BASE)

    @classmethod
    def tearDownClass(cls):
        for daemon in cls.all_daemons:
            daemon.stop()
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------

    def path(self, *parts):
        # Short: a daemon's socket lives here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.id().rsplit(".", 1)[-1].removeprefix("test_")[:24], *parts)

    def daemon(self, config=None, with_base=False):
        daemon = harness.Daemon(self.path("d"), config)
        self.all_daemons.append(daemon)
        self.addCleanup(daemon.stop)
        daemon.config_path = os.path.join(daemon.workdir, "daemon.json")
        if with_base:
            daemon.client("load", "-i", self.base_archive)
        return daemon

    def sighup(self, daemon, expect_in_log):
        """SIGHUP, then wait until the daemon's log has one more line containing `expect_in_log`."""
        before = daemon.log().count(expect_in_log)
        daemon.process.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: daemon.log().count(expect_in_log) > before, 20),
                        f"no {expect_in_log!r} after SIGHUP:\n{daemon.log()[-3000:]}")

    def context(self, dockerfile, name="ctx"):
        path = self.path(name)
        shutil.rmtree(path, ignore_errors=True)
        write(os.path.join(path, "Dockerfile"), dockerfile)
        return path

    # -- tests ----------------------------------------------------------------------------------

    def test_info_shows_every_setting_and_where_it_came_from(self):
        d = self.daemon({"registry-mirrors": ["https://mirror.example"], "log-driver": "journald"})
        shown = info(d)
        for key in ("version", "root", "snapshotter", "sandbox-backend", "config-file"):
            self.assertIn(key, shown)
        self.assertEqual(shown["config-file"], d.config_path)
        self.assertEqual(shown["registry-mirrors"], f'["https://mirror.example"] (from {d.config_path})')
        self.assertEqual(shown["features.buildkit"], "true (default)")
        self.assertEqual(shown["builder.entitlements.network-host"], "true (default)")
        self.assertEqual(shown["builder.entitlements.security-insecure"], "false (default)")
        self.assertEqual(shown["builder.gc.policy"], "[] (default)")
        self.assertEqual(shown["max-concurrent-downloads"], "3 (default)")
        self.assertEqual(shown["max-concurrent-uploads"], "5 (default)")
        self.assertEqual(shown["insecure-registries"], "[] (default)")
        self.assertEqual(shown["proxies.http-proxy"], '"" (default)')
        self.assertRegex(shown["disk.images"], r"^\d+$")

    def test_sighup_applies_a_changed_daemon_json(self):
        d = self.daemon({})
        self.assertEqual(info(d)["registry-mirrors"], "[] (default)")
        config = {
            "features": {"buildkit": True},
            "builder": {"entitlements": {"network-host": False, "security-insecure": True},
                        "gc": {"enabled": True, "defaultKeepStorage": "20GB",
                               "policy": [{"keepStorage": "10GB", "filter": ["unused-for=2200h"]}]}},
            "registry-mirrors": ["https://mirror.example"],
            "insecure-registries": ["127.0.0.1:5000"],
            "max-concurrent-downloads": 7,
            "max-concurrent-uploads": 2,
            "proxies": {"http-proxy": "http://proxy.example:3128", "no-proxy": "localhost"},
            "dns": ["192.0.2.53"],
            "unknown-key": {"ignored": True},
        }
        write(d.config_path, json.dumps(config, indent=2))
        self.sighup(d, f"reloaded {d.config_path}")
        shown = info(d)
        source = f"(from {d.config_path})"
        self.assertEqual(shown["features.buildkit"], f"true {source}")
        self.assertEqual(shown["builder.entitlements.network-host"], f"false {source}")
        self.assertEqual(shown["builder.entitlements.security-insecure"], f"true {source}")
        self.assertEqual(shown["builder.gc.defaultKeepStorage"], f'"20GB" {source}')
        self.assertEqual(shown["builder.gc.policy"], f'[{{"filter":["unused-for=2200h"],"keepStorage":"10GB"}}] {source}')
        self.assertEqual(shown["registry-mirrors"], f'["https://mirror.example"] {source}')
        self.assertEqual(shown["insecure-registries"], f'["127.0.0.1:5000"] {source}')
        self.assertEqual(shown["max-concurrent-downloads"], f"7 {source}")
        self.assertEqual(shown["max-concurrent-uploads"], f"2 {source}")
        self.assertEqual(shown["proxies.http-proxy"], f'"http://proxy.example:3128" {source}')
        self.assertEqual(shown["proxies.https-proxy"], '"" (default)')
        self.assertEqual(shown["dns"], f'["192.0.2.53"] {source}')
        self.assertIn("changed builder.entitlements.network-host", d.log())

    def test_a_broken_daemon_json_on_reload_keeps_the_configuration_in_use(self):
        d = self.daemon({"registry-mirrors": ["https://a.example"]})
        write(d.config_path, '{\n  "registry-mirrors": ["https://b.example",\n}\n')
        self.sighup(d, "not reloaded")
        self.assertIn(f"{d.config_path}:3:1: invalid JSON", d.log())
        self.assertEqual(info(d)["registry-mirrors"], f'["https://a.example"] (from {d.config_path})')
        # A value of the wrong type: the key, where it is, and the call fails.
        write(d.config_path, '{"registry-mirrors": ["https://b.example"],\n "max-concurrent-downloads": "7"}')
        result = d.client("reload", check=False)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn(f"{d.config_path}:2:30: max-concurrent-downloads must be a whole number", result.stderr)
        self.assertIn(f"{d.config_path}:2:30: max-concurrent-downloads", d.log())
        self.assertEqual(info(d)["registry-mirrors"], f'["https://a.example"] (from {d.config_path})')
        # Fixed again: it applies.
        write(d.config_path, '{"registry-mirrors": ["https://b.example"]}')
        self.assertEqual(d.client("reload").stdout, f"Reloaded {d.config_path}: changed registry-mirrors\n")
        self.assertEqual(info(d)["registry-mirrors"], f'["https://b.example"] (from {d.config_path})')

    def test_start_up_refuses_an_invalid_daemon_json(self):
        workdir = self.path("refused")
        config = os.path.join(workdir, "daemon.json")
        write(config, '{"features": {"buildkit": "yes"}}')
        result = run([os.path.join(harness.BUILD_DIR, "service/kbuildd"), "--listen", os.path.join(workdir, "s.sock"),
                      "--root", os.path.join(workdir, "root"), "--config", config], check=False, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{config}:1:27: features.buildkit must be a boolean", result.stderr)

    def test_the_reload_method_answers_over_d_bus(self):
        d = self.daemon({})
        write(d.config_path, '{"insecure-registries": ["registry.test:5000"], "dns": ["192.0.2.1"]}')
        result = run(["busctl", f"--address=unix:path={d.socket}", "--json=short", "call", "org.kbuild.Builder1",
                      "/org/kbuild/Builder1", "org.kbuild.Builder1", "Reload"])
        reply = json.loads(result.stdout)["data"][0]
        self.assertEqual(reply["config-file"]["data"], d.config_path)
        self.assertEqual(reply["changed"]["data"], ["dns", "insecure-registries"])
        self.assertEqual(info(d)["insecure-registries"], f'["registry.test:5000"] (from {d.config_path})')
        # Nothing changed: nothing listed.
        self.assertEqual(d.client("reload").stdout, f"Reloaded {d.config_path}: nothing changed\n")

    def test_dns_reaches_the_steps_on_the_builds_network(self):
        d = self.daemon({}, with_base=True)
        write(d.config_path, '{"dns": ["192.0.2.53"], "dns-search": ["corp.example"]}')
        d.client("reload")
        ctx = self.context(f"FROM {BASE}\nRUN cat /etc/resolv.conf\n")
        result = d.client("build", "--progress", "plain", "--no-cache", ctx, timeout=300)
        self.assertIn("nameserver 192.0.2.53", result.stderr)
        self.assertIn("search corp.example", result.stderr)

    def test_a_build_running_during_a_reload_keeps_its_configuration(self):
        d = self.daemon({"builder": {"entitlements": {"network-host": True}}}, with_base=True)
        # The step that needs the entitlement comes after the reload, in the same build.
        ctx = self.context(f"FROM {BASE}\nRUN sleep 5\nRUN --network=host cat /proc/net/dev\n")
        progress_path = self.path("progress.txt")
        with open(progress_path, "w") as progress:
            build = subprocess.Popen(d.argv("build", "--progress", "plain", "--allow", "network.host", ctx),
                                     env=d.env(), stdout=subprocess.DEVNULL, stderr=progress)
        try:
            def sleeping():
                with open(progress_path, errors="replace") as f:
                    return "RUN sleep 5" in f.read()
            self.assertTrue(wait_until(sleeping, 120), "the slow step did not start")
            write(d.config_path, '{"builder": {"entitlements": {"network-host": false}}}')
            self.sighup(d, f"reloaded {d.config_path}")
            self.assertEqual(info(d)["builder.entitlements.network-host"], f"false (from {d.config_path})")
            self.assertEqual(build.wait(timeout=300), 0, open(progress_path, errors="replace").read()[-3000:])
        finally:
            if build.poll() is None:
                build.kill()
                build.wait()
        with open(progress_path, errors="replace") as f:
            self.assertIn("RUN --network=host cat /proc/net/dev", f.read())
        # The next build gets the new configuration.
        refused = d.client("build", "--progress", "plain", "--no-cache", "--allow", "network.host", ctx,
                           check=False, timeout=300)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("granting entitlement network.host is not allowed by build daemon configuration",
                      refused.stderr)


def main():
    return suite.main("reload", ReloadTest, needs_root="they run root daemons", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
