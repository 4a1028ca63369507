#!/bin/bash
# Prints the path of kbuild's .deb built from this checkout (scripts/package.sh deb), building it
# only when the cache has none for these sources.
#
# The cache is /var/cache/kbuild-tests/deb/KEY/, KEY a hash of every file of the checkout the
# package is built from (not tests/, bench/, examples/, *.md, nor scripts/ but package.sh: they
# do not go into it), so a CI run builds the package once and a run with unchanged sources builds
# nothing. The three newest builds are kept. package.sh's output goes to stderr. Needs root.
set -euo pipefail

project=$(cd "$(dirname "$0")/../.." && pwd)
cache=/var/cache/kbuild-tests/deb
mkdir -p "$cache"

source_key() {
  {
    git -C "$project" ls-files -z --cached --others --exclude-standard -- . \
      ':!tests' ':!bench' ':!examples' ':!scripts' ':!*.md'
    printf '%s\0' scripts/package.sh
  } | (cd "$project" && sort -z | xargs -0 -r sha256sum) | sha256sum | cut -c1-16
}

# One build at a time per cache; another run waits for it and then takes its package.
exec 9>"$cache/.lock"
flock 9
if git -C "$project" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  dir=$cache/$(source_key)
else
  dir=$cache/nogit  # no way to tell the sources apart: always built
  rm -rf "$dir"
fi
if ! compgen -G "$dir/kbuild_*.deb" >/dev/null; then
  started=$SECONDS
  # No -dbgsym package: the test does not install it, and compressing its 50 MB of debug info
  # is a good part of the package build.
  DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }noautodbgsym" bash "$project/scripts/package.sh" deb >&2
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$project/meson.build" | head -n 1)
  cp "$project/dist/kbuild_${version}_$(dpkg --print-architecture).deb" "$dir.tmp/"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "package_deb.sh: built the .deb in $((SECONDS - started))s, cached in $dir" >&2
else
  echo "package_deb.sh: the .deb of these sources is cached in $dir" >&2
fi
touch "$dir"
ls -1dt "$cache"/*/ | tail -n +4 | xargs -r rm -rf
ls "$dir"/kbuild_*.deb | head -n 1
