#!/usr/bin/env bash
# The emulation benchmark: what a RUN step for another platform costs under qemu-user-static
# (binfmt_misc) next to the same step run natively. kbuild, BuildKit (Debian's dockerd 20.10)
# and buildah build the same Dockerfiles FROM the offline busybox base of
# tests/integration/base_image.py, once for linux/amd64 (the host's) and once for linux/arm64
# (Debian's arm64 busybox-static, run by qemu-aarch64), both loaded into each builder before
# anything is timed. For each builder and platform it times, with --no-cache so the step runs
# every time:
#
#   start    FROM base, RUN true: one step whose process does nothing, so what is left beyond
#            the native build is starting the emulator
#   work     FROM base, RUN a shell loop of 100,000 iterations and sha256sum of 32 MiB: CPU work
#            inside the step, where emulation costs the most
#
# Only the client command is timed (not the daemons' start, the bases' load, nor one untimed
# build of each platform after the start, which the first build would pay for alone). Each
# measurement runs BENCH_RUNS times, the builders taking turns, and the table shows the medians
# and each builder's arm64 time divided by its amd64 time. Needs the host to run arm64 programs
# (qemu-user-static with binfmt-support, as scripts/setup-test-deps.sh installs them). Run as
# root from anywhere:
#
#   bash bench/emulation.sh
#
#   KBUILD_BUILD_DIR       kbuild's build directory (default: build; built with ninja if missing)
#   BENCH_RUNS             runs per measurement (default: 3)
#   BENCH_BUILDERS         which builders, in order (default: "kbuild buildkit buildah")
#   BENCH_BUILDAH_DRIVER   overlay or vfs (default: overlay if it works here, else vfs)
#   BENCH_LOG_DIR          keep every build's output there (default: dropped with the temp dir)
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
bench_prepare emulation.sh service/kbuildd service/kbuild-context-reader cli/kbuildctl engine/kbuild-exec
bench_need_arm64 emulation.sh

bench_init_workdir kemu

# --- the bases and the Dockerfiles -------------------------------------------------------------

declare -A base_tar=([amd64]=$work/base-amd64.tar [arm64]=$work/base-arm64.tar)
python3 "$repo/tests/integration/base_image.py" "${base_tar[amd64]}" --tag kbuild-busybox-amd64 >/dev/null
python3 "$repo/tests/integration/base_image.py" "${base_tar[arm64]}" --tag kbuild-busybox-arm64 \
  --arch arm64 >/dev/null

ctx=$work/context
mkdir -p "$ctx"
for arch in amd64 arm64; do
  printf '%s\n' "FROM kbuild-busybox-$arch" "RUN true" >"$ctx/Dockerfile.start-$arch"
  # shellcheck disable=SC2016  # $i is the step's shell's
  printf '%s\n' "FROM kbuild-busybox-$arch" \
    'RUN i=0; while [ $i -lt 100000 ]; do i=$((i + 1)); done; head -c 33554432 /dev/zero | sha256sum > /sum' \
    >"$ctx/Dockerfile.work-$arch"
done

# --- the builders ------------------------------------------------------------------------------

kbuild_reset() {
  kbuild_use "$1"
  stop_kbuildd
  retire "$kbuild_dir"
  mkdir -p "$kbuild_dir"
  echo '{}' >"$kbuild_dir/daemon.json"
  start_kbuildd --config "$kbuild_dir/daemon.json" --exec-helper "$kbuild_exec_bin"
  kbuildctl load -i "${base_tar[amd64]}" >/dev/null
  kbuildctl load -i "${base_tar[arm64]}" >/dev/null
}
# kbuild_build NAME KIND ARCH
kbuild_build() {
  kbuild_use "$1"
  kbuildctl build --progress plain --no-cache --platform "linux/$3" -f "$ctx/Dockerfile.$2-$3" "$ctx"
}

dockerd_dir=$work/dockerd
buildkit_reset() {
  stop_dockerd
  retire "$dockerd_dir"
  mkdir -p "$dockerd_dir/client-config"
  start_dockerd
  docker load -i "${base_tar[amd64]}" >/dev/null
  docker load -i "${base_tar[arm64]}" >/dev/null
}
buildkit_build() {
  docker build --network host --progress plain --no-cache --platform "linux/$2" -f "$ctx/Dockerfile.$1-$2" "$ctx"
}

buildah_dir=$work/buildah
buildah_driver=${BENCH_BUILDAH_DRIVER:-}
buildah_load_bases() {
  local id arch
  for arch in amd64 arm64; do
    # buildah warns that the arm64 base is not the host's platform: true, and meant.
    id=$(buildah_in "$1" pull -q "docker-archive:${base_tar[$arch]}" 2>>"$log_dir/buildah-pull.log")
    buildah_in "$1" tag "$id" "kbuild-busybox-$arch"
  done
}
buildah_reset() {
  buildah_fresh "$buildah_dir"
  buildah_load_bases "$buildah_dir" >/dev/null
}
buildah_bud() {
  local dir=$1
  shift
  buildah_in "$dir" bud --isolation chroot --layers --pull=never --network host "$@"
}
buildah_build() {
  buildah_bud "$buildah_dir" --no-cache --platform "linux/$2" -f "$ctx/Dockerfile.$1-$2" "$ctx"
}

# overlay (the kernel's) where it works, else vfs: a tiny RUN build tells.
pick_buildah_driver() {
  [[ -n $buildah_driver ]] && return 0
  local probe=$work/buildah-probe
  buildah_driver=overlay
  if ! { buildah_fresh "$probe/store" && buildah_load_bases "$probe/store" &&
    buildah_bud "$probe/store" -f "$ctx/Dockerfile.start-amd64" "$ctx"; } >"$log_dir/buildah-probe.log" 2>&1; then
    buildah_driver=vfs
  fi
  retire "$probe"
}

# --- measuring ---------------------------------------------------------------------------------

elapsed=

# measure BUILDER KIND ARCH RUN
measure() {
  local builder=$1 kind=$2 arch=$3 run=$4
  timed "$log_dir/$builder-$kind-$arch-$run.log" builder_do "$builder" build "$kind" "$arch"
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind-$arch" "$run" "$elapsed" >>"$results"
  printf '  %-9s %-12s run %d: %7.3f s\n' "$builder" "$kind-$arch" "$run" "$elapsed"
}

wants buildah && pick_buildah_driver
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before ($(nproc) cores)"
declare -A labels
for run in $(seq "$runs"); do
  rotation "$run"
  for builder in "${order[@]}"; do
    builder_do "$builder" reset
    [[ -n ${labels[$builder]:-} ]] || labels[$builder]=$(label "$builder")
    # Untimed: a daemon's first build pays for what every later one finds ready (the bases'
    # layers read, the daemon's own warm-up), which is no part of emulation's cost.
    for arch in amd64 arm64; do
      timed "$log_dir/$builder-warmup-$arch-$run.log" builder_do "$builder" build start "$arch"
    done
    for kind in start work; do
      for arch in amd64 arm64; do measure "$builder" "$kind" "$arch" "$run"; done
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_kbuildds
stop_dockerd

# --- the table ---------------------------------------------------------------------------------

echo
echo "One RUN step, --no-cache, FROM the busybox base of each platform (loaded first). start: RUN true;"
echo "work: a 100,000-iteration shell loop and sha256sum of 32 MiB. Median of $runs runs, client wall"
echo "time in s; x: arm64 (qemu-aarch64) over amd64 (native); load average $load_before before, $load_after"
echo "after ($(nproc) cores)"
printf '%-22s %9s %9s %7s %9s %9s %7s\n' builder "start" "start" "" "work" "work" ""
printf '%-22s %9s %9s %7s %9s %9s %7s\n' "" amd64 arm64 x amd64 arm64 x
for builder in "${builders[@]}"; do
  printf '%-22s' "${labels[$builder]}"
  for kind in start work; do
    awk -v a="$(median "$builder" "$kind-amd64")" -v b="$(median "$builder" "$kind-arm64")" \
      'BEGIN { printf " %9.3f %9.3f %6.2fx", a, b, (a > 0 ? b / a : 0) }'
  done
  echo
done
echo
echo "versions: $(kbuild_versions);" \
  "docker $("$docker_client" --version 2>/dev/null | awk '{print $3}' | tr -d ,);" \
  "$(buildah --version 2>/dev/null | awk '{print $1, $3}'); $(/usr/bin/qemu-aarch64-static --version | head -n1)"
[[ -n ${BENCH_LOG_DIR:-} ]] && echo "build logs in $log_dir"
exit 0
