#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need, builds
# kbuild, runs every test, fuzzes the Dockerfile frontend for a bounded time, and prints one
# summary line ("tests: N passed, N failed, N skipped"). Exits non-zero on any failure.
#
#   KBUILD_BUILD_DIR      build directory (default: build)
#   KBUILD_FUZZ_SECONDS   how long the fuzzer runs (default: 60; 0 skips the fuzzing step)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
build_dir=${KBUILD_BUILD_DIR:-build}
fuzz_seconds=${KBUILD_FUZZ_SECONDS:-60}

bash scripts/setup-deps.sh

if [[ -f "$build_dir/build.ninja" ]]; then
  meson setup --reconfigure "$build_dir" >/dev/null
else
  meson setup "$build_dir" >/dev/null
fi
ninja -C "$build_dir"

status=0
# meson writes one GoogleTest XML report per test into the build directory; old ones must not
# be counted again.
rm -f "$build_dir"/*.xml
meson test -C "$build_dir" --print-errorlogs --num-processes "$(nproc)" || status=1

if [[ "$fuzz_seconds" != 0 ]]; then
  bash scripts/fuzz.sh "$fuzz_seconds" || status=1
fi

# The daemon end to end, and against BuildKit itself (Debian's dockerd). Both need root.
suite_logs=$(mktemp -d)
trap 'rm -rf "$suite_logs"' EXIT
python3 tests/integration/test_daemon.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/integration.log" || status=1
python3 tests/integration/test_run.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/run.log" || status=1
python3 tests/integration/differential/run.py --build-dir "$build_dir" --require-kbuild 2>&1 |
  tee "$suite_logs/differential.log" || status=1

python3 - "$root/$build_dir" "$suite_logs" <<'PY' || status=1
import pathlib, sys, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for report in pathlib.Path(sys.argv[1]).glob("*.xml"):
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError:
        continue
    if root.tag != "testsuites":
        continue
    for case in root.iter("testcase"):
        if case.find("failure") is not None:
            failed += 1
        elif case.get("result") == "skipped" or case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
import json, re
# Tests that are not GoogleTest executables (the system suite's scripts) count once each.
testlog = pathlib.Path(sys.argv[1]) / "meson-logs" / "testlog.json"
if testlog.exists():
    for line in testlog.read_text().splitlines():
        entry = json.loads(line)
        if not entry.get("name", "").startswith("kbuild:system /"):
            continue
        result = entry.get("result")
        if result == "OK":
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
for log in pathlib.Path(sys.argv[2]).glob("*.log"):
    counts = re.findall(r"^\w+: (\d+) passed, (\d+) failed(?:, (\d+) skipped)?", log.read_text(), re.M)
    if not counts:
        print(f"{log.stem}: no result line")
        failed += 1
        continue
    p, f, s = counts[-1]
    passed += int(p)
    failed += int(f)
    skipped += int(s or 0)
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
PY
exit $status
