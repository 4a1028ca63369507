#!/bin/bash
# The package system test: kbuild's .deb of this checkout (package_deb.sh: built once, then
# cached per source hash in /var/cache/kbuild-tests/deb), installed, used and purged by
# test_package.py inside a booted systemd (nspawn.sh). Needs root.
#
#   tests/system/package_test.sh [-k NAME]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if ! command -v systemd-nspawn >/dev/null; then
  echo "package_test.sh: systemd-nspawn is not installed (package systemd-container): skipped" >&2
  exit 77
fi
deb=$("$here/package_deb.sh")
cd "$here/../.."
exec "$here/nspawn.sh" --bind="$(dirname "$deb")" --timeout=900 -- python3 "$here/test_package.py" --deb "$deb" "$@"
