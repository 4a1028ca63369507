#!/usr/bin/env bash
# Installs the Debian packages that building kbuild needs (scripts/setup-deps.sh) and what its
# tests, fuzzing and benchmarks use on top. scripts/test.sh runs it; scripts/quickstart.sh does
# not. Idempotent, like setup-deps.sh.
set -euo pipefail
cd "$(dirname "$0")"

test_packages=(
  # the fuzzer (clang's libFuzzer and sanitizers)
  clang libclang-rt-14-dev
  # image checkers, BuildKit itself (Debian's docker.io), a Go toolchain for byte-for-byte checks
  # against Go's archive/tar, busybox for base images, buildah for the benchmarks,
  # systemd-nspawn for the tests that need a booted systemd, gcc's static libc for small probe
  # programs built into test images, debootstrap for the Debian image of the apt test
  skopeo umoci docker.io golang-go busybox-static buildah systemd-container libc6-dev debootstrap
  # the registry tests: a distribution registry (docker-registry), htpasswd for its basic auth
  # (apache2-utils), openssl for the CA and certificates of its TLS
  docker-registry apache2-utils openssl
  # the ssh tests clone a git repository over ssh from an sshd of their own
  openssh-server
  # the emulation tests and bench run arm64 and s390x steps under qemu-user-static, which
  # binfmt-support registers with binfmt_misc (with the F flag that steps need)
  qemu-user-static binfmt-support
)
bash setup-deps.sh "${test_packages[@]}"

# Debian's docker-registry package enables a registry service on port 5000 of every interface.
# The tests start their own on loopback; the packaged one is stopped and kept from starting.
if [[ -d /run/systemd/system ]] && systemctl is-enabled docker-registry.service >/dev/null 2>&1; then
  echo "setup-test-deps: disabling the packaged docker-registry service (the tests run their own on loopback)"
  systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
fi

# Debian's openssh-server package enables sshd on port 22 of every interface. The ssh tests start
# their own on loopback with a config of their own; the packaged one is stopped and kept from
# starting.
if [[ -d /run/systemd/system ]] && systemctl is-enabled ssh.service >/dev/null 2>&1; then
  echo "setup-test-deps: disabling the packaged ssh service (the tests run their own sshd on loopback)"
  systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
