#!/usr/bin/env bash
# The RUN benchmark: kbuild, BuildKit (Debian's dockerd 20.10) and buildah run the same RUN-heavy
# Dockerfiles FROM the offline busybox base of tests/integration/base_image.py, loaded into each
# builder before anything is timed. For each builder it times:
#
#   steps      a cold build (fresh store, base loaded) of 50 x `RUN echo $i > /f$i`; the table
#              shows it divided by 50, the cost of one RUN step
#   warm       the same build again: every step cached
#   stages     two independent stages of `RUN sleep 2` joined by COPY --from (cold for those
#              steps): about 2 s when the stages run in parallel, 4 s when they do not
#
# and, for kbuild alone, what RUN's network costs: the 50 steps again with --network=host (no
# namespace, no stack) beside the same on the default network (the build's own namespace,
# behind pasta), and a build of one RUN step each way, where the first step pays the stack's
# start.
#
# With KBUILD_BASELINE_BUILD_DIR an earlier kbuild, kbuild-base, measures all that as kbuild
# does, with its own programs and store, and the table adds kbuild's times divided by its.
#
# Only the client command is timed (not the daemon's start nor the base's load). Each
# measurement runs BENCH_RUNS times, the builders taking turns, and the table shows the median.
# Run as root from anywhere:
#
#   bash bench/run.sh
#
#   KBUILD_BUILD_DIR       kbuild's build directory (default: build; built with ninja if missing)
#   KBUILD_BASELINE_BUILD_DIR
#                          an earlier kbuild's build directory, measured as kbuild-base (default:
#                          none; never built by the script)
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
bench_prepare run.sh service/kbuildd service/kbuild-context-reader cli/kbuildctl engine/kbuild-exec
steps=50
if [[ ! -x /bin/busybox ]]; then
  echo "installing busybox-static"
  apt_install busybox-static
fi

bench_init_workdir krun

# --- the base and the Dockerfiles --------------------------------------------------------------

base_tar=$work/base.tar
python3 "$repo/tests/integration/base_image.py" "$base_tar" --tag kbuild-busybox >/dev/null

ctx=$work/context
mkdir -p "$ctx"
{
  echo "FROM kbuild-busybox"
  for i in $(seq "$steps"); do echo "RUN echo $i > /f$i"; done
} >"$ctx/Dockerfile.steps"
{
  echo "FROM kbuild-busybox"
  for i in $(seq "$steps"); do echo "RUN --network=host echo $i > /f$i"; done
} >"$ctx/Dockerfile.hoststeps"
printf '%s\n' "FROM kbuild-busybox" "RUN echo one > /one" >"$ctx/Dockerfile.one"
printf '%s\n' "FROM kbuild-busybox" "RUN --network=host echo one > /one" >"$ctx/Dockerfile.onehost"
printf '%s\n' "FROM kbuild-busybox AS a" "RUN sleep 2 && echo a > /a" \
  "FROM kbuild-busybox AS b" "RUN sleep 2 && echo b > /b" \
  "FROM kbuild-busybox" "COPY --from=a /a /a" "COPY --from=b /b /b" >"$ctx/Dockerfile.stages"

# --- the builders ----------------------------------------------------------------------------

# kbuild and kbuild-base alike (the first argument says which): each with its own programs,
# kbuild-exec included, and its own dir (kbuild_use).
kbuild_reset() {
  kbuild_use "$1"
  stop_kbuildd
  retire "$kbuild_dir"
  mkdir -p "$kbuild_dir"
  echo '{}' >"$kbuild_dir/daemon.json"
  start_kbuildd --config "$kbuild_dir/daemon.json" --exec-helper "$kbuild_exec_bin"
  kbuildctl load -i "$base_tar" >/dev/null
}
kbuild_build() {
  kbuild_use "$1"
  kbuildctl build --progress plain --allow network.host -t "bench-$2" -f "$ctx/Dockerfile.$2" "$ctx"
}

dockerd_dir=$work/dockerd

# A true cold start: dockerd stopped, its data root (images, BuildKit's cache) removed.
buildkit_reset() {
  stop_dockerd
  retire "$dockerd_dir"
  mkdir -p "$dockerd_dir/client-config"
  start_dockerd
  docker load -i "$base_tar" >/dev/null
}
buildkit_build() {
  docker build --network host --progress plain -t "bench-$1" -f "$ctx/Dockerfile.$1" "$ctx"
}

buildah_dir=$work/buildah
buildah_driver=${BENCH_BUILDAH_DRIVER:-}
# The base from its archive, under the name the Dockerfiles use: builds never pull.
buildah_load_base() {
  local id
  id=$(buildah_in "$1" pull -q "docker-archive:$base_tar")
  buildah_in "$1" tag "$id" kbuild-busybox
}
buildah_reset() {
  buildah_fresh "$buildah_dir"
  buildah_load_base "$buildah_dir" >/dev/null
}
# The host network as the others (no network namespace set up per step); chroot isolation.
buildah_bud() {
  local dir=$1
  shift
  buildah_in "$dir" bud --isolation chroot --layers --pull=never --network host "$@"
}
buildah_build() { buildah_bud "$buildah_dir" -t "bench-$1" -f "$ctx/Dockerfile.$1" "$ctx"; }

# overlay (the kernel's) where it works, else vfs: a tiny RUN build tells.
pick_buildah_driver() {
  [[ -n $buildah_driver ]] && return 0
  local probe=$work/buildah-probe
  mkdir -p "$probe/context"
  printf 'FROM kbuild-busybox\nRUN echo probe > /f\n' >"$probe/context/Dockerfile"
  buildah_driver=overlay
  if ! { buildah_fresh "$probe/store" && buildah_load_base "$probe/store" &&
    buildah_bud "$probe/store" -t probe "$probe/context"; } >"$log_dir/buildah-probe.log" 2>&1; then
    buildah_driver=vfs
  fi
  retire "$probe"
}


# --- measuring -------------------------------------------------------------------------------

elapsed=

# measure BUILDER KIND RUN DOCKERFILE-SUFFIX
measure() {
  local builder=$1 kind=$2 run=$3 file=$4
  timed "$log_dir/$builder-$kind-$run.log" builder_do "$builder" build "$file"
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind" "$run" "$elapsed" >>"$results"
  printf '  %-9s %-7s run %d: %7.3f s\n' "$builder" "$kind" "$run" "$elapsed"
}

wants buildah && pick_buildah_driver
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A labels
# With a baseline the builders take turns in a rotating order, as in context.sh, so that neither
# kbuild always comes right after the other or after buildah; without one the order stays as it
# was, so that the numbers compare with earlier runs.
order=("${builders[@]}")
for run in $(seq "$runs"); do
  wants kbuild-base && rotation "$run"
  for builder in "${order[@]}"; do
    builder_do "$builder" reset
    [[ -n ${labels[$builder]:-} ]] || labels[$builder]=$(label "$builder")
    measure "$builder" steps "$run" steps
    measure "$builder" warm "$run" steps
    measure "$builder" stages "$run" stages
    if [[ $builder == kbuild || $builder == kbuild-base ]]; then
      measure "$builder" hoststeps "$run" hoststeps
      measure "$builder" one "$run" one
      measure "$builder" onehost "$run" onehost
    fi
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_kbuildds
stop_dockerd

# --- the table -------------------------------------------------------------------------------


declare -A med
for builder in "${builders[@]}"; do
  for kind in steps warm stages; do med[$builder.$kind]=$(median "$builder" "$kind"); done
  # One RUN step in milliseconds: the cold build of $steps steps divided by $steps.
  med[$builder.step]=$(awk -v t="${med[$builder.steps]}" -v n="$steps" 'BEGIN { printf "%.1f", t * 1000 / n }')
done

echo
echo "FROM the busybox base (loaded first): $steps x RUN echo \$i > /f\$i cold (per step) and warm;"
echo "two stages of RUN sleep 2 joined by COPY --from. Median of $runs runs, client wall time;"
echo "load average $load_before before, $load_after after ($(nproc) cores)"
printf '%-22s %14s %14s %14s\n' builder "ms per RUN" "warm rebuild s" "2x2s stages s"
for builder in "${builders[@]}"; do
  printf '%-22s %14s %14s %14s\n' "${labels[$builder]}" \
    "${med[$builder.step]}" "${med[$builder.warm]}" "${med[$builder.stages]}"
done
for other in kbuild-base buildkit buildah; do
  wants kbuild && wants "$other" || continue
  printf '%-22s' "kbuild/${labels[$other]%% *}"
  for kind in step warm stages; do
    awk -v a="${med[kbuild.$kind]}" -v b="${med[$other.$kind]}" \
      'BEGIN { if (b > 0) printf " %13.2fx", a / b; else printf " %14s", "-" }'
  done
  echo
done
for k in kbuild kbuild-base; do
  wants "$k" || continue
  for kind in hoststeps one onehost; do med[$k.$kind]=$(median "$k" "$kind"); done
  echo
  echo "$k's RUN network (median of $runs runs):"
  # Steps after the first: the 50-step build less the one-step build, over 49 steps.
  awk -v d="${med[$k.steps]}" -v d1="${med[$k.one]}" -v h="${med[$k.hoststeps]}" \
    -v h1="${med[$k.onehost]}" -v n="$steps" 'BEGIN {
      a = (d - d1) * 1000 / (n - 1); b = (h - h1) * 1000 / (n - 1)
      printf "  ms per RUN step after the first: default network %.1f, --network=host %.1f (%+.1f)\n", a, b, a - b }'
  awk -v d="${med[$k.one]}" -v h="${med[$k.onehost]}" \
    'BEGIN { printf "  a one-RUN build, ms: default network %.0f, --network=host %.0f (%+.0f: the stack starts)\n", d * 1000, h * 1000, (d - h) * 1000 }'
done
echo
echo "versions: $(kbuild_versions);" \
  "docker $("$docker_client" --version 2>/dev/null | awk '{print $3}' | tr -d ,);" \
  "$(buildah --version 2>/dev/null | awk '{print $1, $3}')"
[[ -n ${BENCH_LOG_DIR:-} ]] && echo "build logs in $log_dir"
exit 0
