#!/usr/bin/env python3
"""The one summary line of scripts/test.sh: `tests: N passed, N failed, N skipped`.

Counts every test case of every meson test (GoogleTest's XML reports, one case each otherwise),
the Python suites' own result lines, and the fuzzing step. What ran but left no result counts as
failed: a test binary that crashed or timed out without a report, a suite log with no result
line, a failed fuzz run, and any failed step of the script that no test accounts for. The line
can never say `0 failed` while the run fails.

Skips are listed by name. As root, on the machine the suite is made for, a skip in the unit or
integration tests is a failure (a test that quietly stops testing); the system suite may skip
when systemd-nspawn is missing. KBUILD_ALLOW_SKIPS=1 lets a developer on another machine through.

    test_summary.py BUILD_DIR SUITE_LOG_DIR FUZZ_STATUS SCRIPT_STATUS
"""
import json
import os
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

# unittest's verbose lines: "test_name (module.Class.test_name) ... skipped 'why'"
UNITTEST_SKIP = re.compile(r"^(test\w*) \(.*?\)(?: \(.*?\))? \.\.\. skipped '(.*)'$", re.M)
RESULT_LINE = re.compile(r"^\w+: (\d+) passed, (\d+) failed(?:, (\d+) skipped)?", re.M)


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures, self.skips = [], []

    def fail(self, name, why):
        self.failed += 1
        self.failures.append(f"{name}: {why}")

    def skip(self, suite, name, why):
        self.skipped += 1
        self.skips.append((suite, name, why))


def count_meson_tests(build_dir, tally):
    testlog = build_dir / "meson-logs" / "testlog.json"
    if not testlog.exists():
        tally.fail("meson test", "no testlog.json: the unit tests did not run")
        return
    for line in testlog.read_text().splitlines():
        entry = json.loads(line)
        full_name, result = entry.get("name", ""), entry.get("result")
        suite = full_name.split(":", 1)[-1].split("/", 1)[0].strip()
        name = full_name.rsplit("/", 1)[-1].strip()
        report = build_dir / f"{name}.xml"
        cases_failed = counted = 0
        if report.exists():
            try:
                root = ET.parse(report).getroot()
            except ET.ParseError:
                root = None
            for case in ([] if root is None else root.iter("testcase")):
                counted += 1
                case_name = f"{name}: {case.get('classname')}.{case.get('name')}"
                if case.find("failure") is not None:
                    cases_failed += 1
                    tally.fail(case_name, "failed")
                elif case.get("result") == "skipped" or case.find("skipped") is not None:
                    tally.skip(suite, case_name, (case.find("skipped").get("message", "")
                                                  if case.find("skipped") is not None else ""))
                else:
                    tally.passed += 1
        if result in ("OK", "EXPECTEDFAIL"):
            if not counted:
                tally.passed += 1
        elif result == "SKIP":
            if not counted:
                tally.skip(suite, name, "the test exited 77")
        elif not cases_failed:
            # A crash, a timeout, or a failure that its report does not show.
            tally.fail(name, f"{result} without a failed case in its report")


def count_suite_logs(log_dir, tally):
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        counts = RESULT_LINE.findall(text)
        if not counts:
            tally.fail(log.stem, "no result line: the suite did not finish")
            continue
        passed, failed, skipped = counts[-1]
        tally.passed += int(passed)
        tally.failed += int(failed)
        if int(failed):
            tally.failures.append(f"{log.stem}: {failed} failed (see its output above)")
        named = UNITTEST_SKIP.findall(text)
        for test, why in named:
            tally.skip(log.stem, test, why)
        for _ in range(int(skipped or 0) - len(named)):
            tally.skip(log.stem, "(unnamed)", "see the suite's output")


def main():
    build_dir, log_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    fuzz_status, script_status = int(sys.argv[3]), int(sys.argv[4])
    tally = Tally()
    count_meson_tests(build_dir, tally)
    count_suite_logs(log_dir, tally)
    if fuzz_status != 0:
        tally.fail("fuzz", f"scripts/fuzz.sh exited {fuzz_status}")

    for suite, name, why in tally.skips:
        print(f"skipped: [{suite}] {name}: {why}")
    core_skips = [s for s in tally.skips if s[0] != "system"]
    if core_skips and os.geteuid() == 0 and os.environ.get("KBUILD_ALLOW_SKIPS") != "1":
        tally.fail("skips", f"{len(core_skips)} core test(s) skipped as root, where every one should run "
                            "(KBUILD_ALLOW_SKIPS=1 accepts them)")
    if script_status != 0 and tally.failed == 0:
        tally.fail("test.sh", "a step failed without a failed test to show for it (see its output above)")
    for failure in tally.failures:
        print(f"failed: {failure}")
    print(f"tests: {tally.passed} passed, {tally.failed} failed, {tally.skipped} skipped")
    return 1 if tally.failed or tally.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
