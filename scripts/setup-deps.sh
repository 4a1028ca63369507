#!/usr/bin/env bash
# Installs the Debian packages that building and running kbuild need (what the tests need on top
# is scripts/setup-test-deps.sh). Idempotent: packages already present are left alone, and apt's
# lists are only refreshed when something is missing.
#
#   scripts/setup-deps.sh [PACKAGE]...    also installs the PACKAGEs named
set -euo pipefail

packages=(
  # the build: meson and a C++20 compiler, the libraries kbuild links, GoogleTest (meson setup
  # looks for it: the unit tests are part of every build directory)
  meson ninja-build pkg-config g++
  libsdbus-c++-dev libsdbus-c++-bin libsystemd-dev libseccomp-dev libarchive-dev
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libsqlite3-dev libcli11-dev
  libgtest-dev libgmock-dev libdeflate-dev libzstd-dev
  # what RUN --network=default runs: pasta (package passt), or slirp4netns where pasta is missing
  passt slirp4netns
  # SSH agent forwarding (--ssh): kbuildctl runs ssh-agent and ssh-add for key files
  openssh-client
  "$@"
)

missing=()
for pkg in "${packages[@]}"; do
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
