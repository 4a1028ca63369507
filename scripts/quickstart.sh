#!/usr/bin/env bash
# From a fresh Debian 12 machine, as root: installs the build dependencies, builds and installs
# kbuild (under /usr/local), starts the daemon (through kbuild.socket when systemd runs the
# machine, by hand otherwise), and builds the example in examples/hello.
set -euo pipefail

cd "$(dirname "$0")/.."
build_dir=${KBUILD_BUILD_DIR:-build}

bash scripts/setup-deps.sh
if [[ -f "$build_dir/build.ninja" ]]; then
  meson setup --reconfigure "$build_dir" >/dev/null
else
  meson setup "$build_dir" >/dev/null
fi
ninja -C "$build_dir" cli/kbuildctl service/kbuildd service/kbuild-context-reader engine/kbuild-exec
meson install -C "$build_dir" --quiet --no-rebuild

getent group kbuild >/dev/null || groupadd --system kbuild
mkdir -p /run/kbuild /var/lib/kbuild
chmod 0700 /var/lib/kbuild

if [[ -d /run/systemd/system ]] && [[ "$(ps -p 1 -o comm=)" == systemd ]]; then
  systemctl daemon-reload
  systemctl enable --now kbuild.socket
else
  # No systemd here (a container, CI): run the daemon by hand on the same socket.
  if ! /usr/local/bin/kbuildctl info >/dev/null 2>&1; then
    nohup /usr/local/sbin/kbuildd --listen /run/kbuild/kbuild.sock >/var/log/kbuildd.log 2>&1 &
    # Ready when it answers (a socket file left by an earlier daemon may be there already).
    for _ in $(seq 100); do /usr/local/bin/kbuildctl info >/dev/null 2>&1 && break; sleep 0.1; done
  fi
fi

kbuildctl --version
echo "+ kbuildctl build -t hello --build-arg GREETING=hi examples/hello"
kbuildctl build -t hello --build-arg GREETING=hi examples/hello
echo "+ kbuildctl images"
kbuildctl images
