"""What every integration suite does around its tests: the command line (--build-dir, -k
PATTERN), the check for root, SIGTERM and SIGHUP turned into an interrupt that still cleans up,
and the summary line scripts/test.sh sums (`NAME: N passed, M failed, K skipped`)."""

import argparse
import os
import signal
import sys
import unittest


def main(name, case, *, needs_root, harness, add_arguments=None, configure=None, on_interrupt=None, prepare=None):
    """Runs the unittest case class `case` and returns the exit status: 0 when every test ran
    passed or skipped, 1 on a failure or when none ran, 2 without root, 130 when interrupted.

    `needs_root` says why ("they run root daemons"); `harness` is the module whose BUILD_DIR
    its daemons run from; `add_arguments` adds the suite's own options and `configure(args)`
    takes them; `prepare(suite)` sees the tests chosen before they run;
    `on_interrupt()` cleans up after an interrupt (default: the class's tearDownClass, once its
    setUpClass has made a workdir)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=os.environ.get("KBUILD_BUILD_DIR", "build"))
    parser.add_argument("-k", dest="pattern")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    harness.BUILD_DIR = os.path.abspath(args.build_dir)
    if configure:
        configure(args)
    if os.geteuid() != 0:
        print(f"{name} tests need root ({needs_root})", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {s}")))
    loader = unittest.TestLoader()
    if args.pattern:
        loader.testNamePatterns = [f"*{args.pattern}*"]
    tests = loader.loadTestsFromTestCase(case)
    if prepare:
        prepare(tests)
    try:
        result = unittest.TextTestRunner(verbosity=2).run(tests)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        if on_interrupt:
            on_interrupt()
        elif getattr(case, "workdir", None) and os.path.exists(case.workdir):
            case.tearDownClass()
        return 130
    failed = len(result.failures) + len(result.errors)
    print(f"{name}: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed, "
          f"{len(result.skipped)} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1
