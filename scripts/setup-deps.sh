#!/usr/bin/env bash
# Installs the Debian packages that building kbuild and running its tests need.
# Idempotent: packages already present are left alone, and apt's lists are only
# refreshed when something is missing.
set -euo pipefail

build_packages=(
  meson ninja-build pkg-config g++ clang libclang-rt-14-dev
  libsdbus-c++-dev libsdbus-c++-bin libsystemd-dev libseccomp-dev libarchive-dev
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libsqlite3-dev libcli11-dev
  libgtest-dev libgmock-dev libdeflate-dev libzstd-dev
  # what the tests use: image checkers, BuildKit itself (Debian's docker.io), a Go toolchain
  # for byte-for-byte checks against Go's archive/tar, busybox for base images, buildah for
  # the benchmarks, systemd-nspawn for the tests that need a booted systemd, gcc's static libc
  # for small probe programs built into test images, debootstrap for the Debian image of the
  # apt test
  skopeo umoci docker.io golang-go busybox-static buildah systemd-container libc6-dev debootstrap
  # what RUN --network=default runs: pasta (package passt), or slirp4netns where pasta is missing
  passt slirp4netns
  # the registry tests: a distribution registry (docker-registry), htpasswd for its basic auth
  # (apache2-utils), openssl for the CA and certificates of its TLS
  docker-registry apache2-utils openssl
  # SSH agent forwarding (--ssh): kbuildctl runs ssh-agent and ssh-add for key files; the tests
  # also make keys with ssh-keygen, and clone a git repository over ssh from an sshd of their own
  # (openssh-server)
  openssh-client openssh-server
)

missing=()
for pkg in "${build_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup-deps: missing packages ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  echo "setup-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's docker-registry package enables a registry service on port 5000 of every interface.
# The tests start their own on loopback; the packaged one is stopped and kept from starting.
if [[ -d /run/systemd/system ]] && systemctl is-enabled docker-registry.service >/dev/null 2>&1; then
  echo "setup-deps: disabling the packaged docker-registry service (the tests run their own on loopback)"
  systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
fi

# Debian's openssh-server package enables sshd on port 22 of every interface. The ssh tests start
# their own on loopback with a config of their own; the packaged one is stopped and kept from
# starting.
if [[ -d /run/systemd/system ]] && systemctl is-enabled ssh.service >/dev/null 2>&1; then
  echo "setup-deps: disabling the packaged ssh service (the tests run their own sshd on loopback)"
  systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
