#!/usr/bin/env bash
# From a fresh Debian 12 machine, as root: installs the build dependencies, builds kbuild, and
# shows what it makes of the example Dockerfile in examples/hello.
set -euo pipefail

cd "$(dirname "$0")/.."
build_dir=${KBUILD_BUILD_DIR:-build}

bash scripts/setup-deps.sh
if [[ -f "$build_dir/build.ninja" ]]; then
  meson setup --reconfigure "$build_dir" >/dev/null
else
  meson setup "$build_dir" >/dev/null
fi
ninja -C "$build_dir" cli/kbuildctl service/kbuildd engine/kbuild-exec

"$build_dir/cli/kbuildctl" --version
echo "+ kbuildctl debug dockerfile examples/hello --build-arg GREETING=hi"
"$build_dir/cli/kbuildctl" debug dockerfile examples/hello --build-arg GREETING=hi
