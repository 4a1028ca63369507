#!/usr/bin/env bash
# Builds kbuild's Debian or RPM package from this checkout into dist/:
#   scripts/package.sh deb    dpkg-buildpackage -b with packaging/deb/debian, then lintian
#   scripts/package.sh rpm    rpmbuild -bb with packaging/rpm/kbuild.spec, then rpmlint
# As root it installs what packaging needs (like scripts/setup-deps.sh); otherwise it says what
# is missing. The checkout is copied to a temporary directory first (tracked and untracked files,
# not what .gitignore names), so the build leaves the checkout as it was. Idempotent: a second run
# replaces the package in dist/.
set -euo pipefail

usage() {
  echo "usage: scripts/package.sh deb|rpm" >&2
  exit 2
}
die() {
  echo "package: $*" >&2
  exit 1
}

[[ $# -eq 1 ]] || usage
kind=$1
[[ $kind == deb || $kind == rpm ]] || usage

cd "$(dirname "$0")/.."
top=$(pwd)
dist=$top/dist
version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" meson.build | head -n 1)
[[ -n $version ]] || die "no version in meson.build's project()"

# What building kbuild needs (setup-deps.sh's build packages without the test tools) and what
# each packaging tool needs.
build_packages=(
  meson ninja-build pkg-config g++ python3
  libsdbus-c++-dev libsdbus-c++-bin libsystemd-dev libseccomp-dev libarchive-dev
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libsqlite3-dev libcli11-dev
  libgtest-dev libgmock-dev libdeflate-dev libzstd-dev
)
case $kind in
  deb) tool_packages=(dpkg-dev debhelper fakeroot lintian) ;;
  rpm) tool_packages=(rpm rpmlint) ;;
esac

missing=()
for pkg in "${build_packages[@]}" "${tool_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; run this script as root, or install them"
  echo "package: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# meson compiles through ccache when it is installed. debhelper 13 points HOME into the build
# tree, where ccache's default cache would go with the tree: it keeps the one of the caller's
# HOME, so the next package build of mostly the same sources compiles little.
export CCACHE_DIR=${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccache}

work=$(mktemp -d "${TMPDIR:-/tmp}/kbuild-package.XXXXXX")
# KBUILD_PACKAGE_KEEP=1 keeps the build tree for a look after a failure.
if [[ ${KBUILD_PACKAGE_KEEP:-} == 1 ]]; then
  trap 'echo "package: build tree kept in $work"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi
src=$work/kbuild-$version

# The sources as they are in the checkout, edits included; build directories and dist/ are
# ignored by .gitignore and so are not copied.
copy_checkout() {
  mkdir -p "$src"
  if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$top" ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
      tar --null -T - -cf - | tar -xf - -C "$src"
  else
    tar --exclude=./build --exclude='./build-*' --exclude=./dist -cf - . | tar -xf - -C "$src"
  fi
}

mkdir -p "$dist"

build_deb() {
  local changelog_version
  changelog_version=$(dpkg-parsechangelog -l packaging/deb/debian/changelog -S Version)
  [[ ${changelog_version%%-*} == "$version" ]] ||
    die "packaging/deb/debian/changelog is at $changelog_version, meson.build at $version: add a changelog entry (dch -v $version)"

  copy_checkout
  cp -a packaging/deb/debian "$src/debian"
  (cd "$src" && dpkg-checkbuilddeps) || die "build dependencies missing (above)"
  echo "package: dpkg-buildpackage -b -us -uc in $src (log: $work/build.log)"
  if ! (cd "$src" && dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "dpkg-buildpackage failed"
  fi

  local files=()
  for f in "$work"/*.deb "$work"/*.ddeb "$work"/*.buildinfo "$work"/*.changes; do
    [[ -e $f ]] || continue
    rm -f "$dist/$(basename "$f")"
    cp "$f" "$dist/"
    files+=("$dist/$(basename "$f")")
  done
  printf 'package: built %s\n' "${files[@]}"
  # Errors and warnings fail the run; overrides carry their reasons in
  # packaging/deb/debian/kbuild.lintian-overrides.
  echo "package: lintian"
  lintian --pedantic --display-info --fail-on error,warning "$dist/kbuild_${version}_"*.changes ||
    die "lintian found errors or warnings (above)"
}

build_rpm() {
  local spec_version
  spec_version=$(sed -n 's/^Version: *//p' packaging/rpm/kbuild.spec)
  [[ $spec_version == "$version" ]] ||
    die "packaging/rpm/kbuild.spec is at $spec_version, meson.build at $version: update Version and %changelog"

  copy_checkout
  mkdir -p "$work"/rpm/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
  tar -C "$work" -czf "$work/rpm/SOURCES/kbuild-$version.tar.gz" "kbuild-$version"
  cp systemd/kbuild.sysusers "$work/rpm/SOURCES/"

  # Fedora's systemd, sysusers and meson macros come from packages Debian does not have
  # (systemd-rpm-macros, meson's macros.meson); macros.fallback defines them where rpm lacks them.
  local macros=()
  if [[ -z $(rpm --eval '%{?systemd_post:1}') ]]; then
    macros=(--load "$top/packaging/rpm/macros.fallback")
  fi
  # --nodeps: rpmbuild checks BuildRequires against rpm's own database, which is empty on Debian
  # (the build dependencies are dpkg's, checked above); on an RPM distribution drop it.
  # brp-compress (man pages) uses bash's read -d under #!/bin/sh, and Debian's /bin/sh is dash.
  echo "package: rpmbuild -bb in $work/rpm (log: $work/build.log)"
  if ! rpmbuild "${macros[@]}" -bb --nodeps \
    --define "__brp_compress /bin/bash %{_rpmconfigdir}/brp-compress %{?_prefix}" \
    --define "_topdir $work/rpm" \
    --define "_kbuild_rpm_dir $top/packaging/rpm" \
    packaging/rpm/kbuild.spec >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "rpmbuild failed"
  fi

  local files=()
  while IFS= read -r -d '' f; do
    rm -f "$dist/$(basename "$f")"
    cp "$f" "$dist/"
    files+=("$dist/$(basename "$f")")
  done < <(find "$work/rpm/RPMS" -name '*.rpm' -print0)
  ((${#files[@]})) || die "rpmbuild made no package"
  printf 'package: built %s\n' "${files[@]}"
  # Filters and settings carry their reasons in packaging/rpm/kbuild.rpmlintrc and rpmlint.toml.
  echo "package: rpmlint"
  rpmlint -c "$top/packaging/rpm/rpmlint.toml" -r "$top/packaging/rpm/kbuild.rpmlintrc" "${files[@]}" || die "rpmlint found errors (above)"
}

"build_$kind"
