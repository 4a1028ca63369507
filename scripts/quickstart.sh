#!/usr/bin/env bash
# From a fresh Debian 12 machine, as root: installs what building and running kbuild need
# (scripts/setup-deps.sh; the test tools are scripts/setup-test-deps.sh's), builds kbuild's .deb
# (scripts/package.sh deb) and installs it, starts the daemon (kbuild.socket when systemd runs the
# machine, by hand otherwise), and builds the examples: examples/hello, and examples/run (RUN
# steps on a base made here from Debian's busybox-static; no network needed).
#
# When the package does not build, or with KBUILD_QUICKSTART_INSTALL=meson, it builds with meson
# in KBUILD_BUILD_DIR (default: build) and installs under /usr/local instead, and says why.
set -euo pipefail

cd "$(dirname "$0")/.."
build_dir=${KBUILD_BUILD_DIR:-build}
install=${KBUILD_QUICKSTART_INSTALL:-deb}
say() { echo "quickstart: $*"; }

# busybox-static: the shell of examples/run's base image.
bash scripts/setup-deps.sh busybox-static

if [[ $install == deb ]] && ! bash scripts/package.sh deb; then
  say "the .deb did not build (above): installing with meson under /usr/local instead"
  install=meson
fi
if [[ $install == deb ]]; then
  version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" meson.build | head -n 1)
  deb=$PWD/dist/kbuild_${version}_$(dpkg --print-architecture).deb
  say "installing $deb"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall "$deb" >/dev/null
  prefix=/usr
  if [[ -e /usr/local/bin/kbuildctl || -e /usr/local/lib/systemd/system/kbuild.service ]]; then
    say "warning: an earlier meson install is in /usr/local: its kbuildctl comes first in PATH and" \
      "its units shadow the package's; remove it with 'ninja -C BUILD_DIR uninstall' from the build" \
      "directory that installed it"
  fi
else
  if [[ -f "$build_dir/build.ninja" ]]; then
    meson setup --reconfigure "$build_dir" >/dev/null
  else
    meson setup "$build_dir" >/dev/null
  fi
  ninja -C "$build_dir" cli/kbuildctl service/kbuildd service/kbuild-context-reader engine/kbuild-exec
  meson install -C "$build_dir" --quiet --no-rebuild
  prefix=/usr/local
  getent group kbuild >/dev/null || groupadd --system kbuild
  mkdir -p /run/kbuild /var/lib/kbuild
  chmod 0700 /var/lib/kbuild
fi
kbuildctl=$prefix/bin/kbuildctl

if [[ -d /run/systemd/system ]] && [[ "$(ps -p 1 -o comm=)" == systemd ]]; then
  systemctl daemon-reload
  systemctl enable --now kbuild.socket
else
  # No systemd here (a container, CI): run the daemon by hand on the same socket. One that answers
  # already is kept.
  if ! "$kbuildctl" info >/dev/null 2>&1; then
    nohup "$prefix/sbin/kbuildd" --listen /run/kbuild/kbuild.sock >/var/log/kbuildd.log 2>&1 &
    # Ready when it answers (a socket file left by an earlier daemon may be there already).
    for _ in $(seq 100); do "$kbuildctl" info >/dev/null 2>&1 && break; sleep 0.1; done
  else
    say "a daemon answers on /run/kbuild/kbuild.sock already: kept (it may be an older kbuildd)"
  fi
fi

"$kbuildctl" --version
echo "+ kbuildctl build -t hello --build-arg GREETING=hi examples/hello"
"$kbuildctl" build -t hello --build-arg GREETING=hi examples/hello

# examples/run's context: its Dockerfile and busybox, in a directory of its own so the checkout
# stays as it is.
run_context=$(mktemp -d)
trap 'rm -rf "$run_context"' EXIT
cp examples/run/Dockerfile /bin/busybox "$run_context/"
echo "+ kbuildctl build -t run-example CONTEXT (examples/run/Dockerfile and /bin/busybox)"
"$kbuildctl" build -t run-example "$run_context"
echo "+ kbuildctl images"
"$kbuildctl" images
