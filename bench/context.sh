#!/usr/bin/env bash
# The context benchmark: kbuild, BuildKit (Debian's dockerd 20.10) and buildah build the same
# large context side by side. The context is 5,000 random files of 1-4 KB in 300 directories plus
# one random 100 MiB file, generated from a fixed seed; the Dockerfile is `FROM scratch` +
# `COPY src /src`, so no builder pulls anything. For each builder it times three builds:
#
#   cold        a fresh store (kbuildd and dockerd restarted on an empty root, a new buildah root)
#   no-change   the same build again
#   one-file    the build again after one 1-4 KB file changed
#
# With KBUILD_BASELINE_BUILD_DIR an earlier kbuild, kbuild-base, makes the same builds with its
# own programs and store, and the table adds kbuild's times divided by its.
#
# Only the client command is timed (not the daemon's start). Each measurement runs BENCH_RUNS
# times, the builders taking turns, and the table shows the median. Run as root from anywhere:
#
#   bash bench/context.sh
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
bench_prepare context.sh service/kbuildd service/kbuild-context-reader cli/kbuildctl

bench_init_workdir kctx

# --- the context -----------------------------------------------------------------------------

ctx=$work/context
echo "generating the context in $ctx"
python3 - "$ctx" <<'PY'
import os, random, sys

root = sys.argv[1]
rng = random.Random(20240611)
dirs = [f"src/d{a:02d}/e{b:02d}" for a in range(20) for b in range(15)]
for d in dirs:
    os.makedirs(os.path.join(root, d))
for i in range(5000):
    with open(os.path.join(root, dirs[i % len(dirs)], f"f{i:04d}.bin"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 4096)))
with open(os.path.join(root, "src", "big.bin"), "wb") as f:
    for _ in range(100):
        f.write(rng.randbytes(1 << 20))
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM scratch\nCOPY src /src\n")
PY
small_file=$ctx/src/d00/e00/f0000.bin
cp -p "$small_file" "$work/small-file.orig"

# --- the builders ----------------------------------------------------------------------------

# kbuild and kbuild-base alike (the first argument says which): each with its own programs and
# its own dir (kbuild_use).
kbuild_reset() {
  kbuild_use "$1"
  stop_kbuildd
  retire "$kbuild_dir"
  mkdir -p "$kbuild_dir"
  start_kbuildd
}
kbuild_build() {
  kbuild_use "$1"
  kbuildctl build --progress plain -t bench "$ctx"
}

dockerd_dir=$work/dockerd

# A true cold start: dockerd stopped, its data root (images, BuildKit's cache) removed.
buildkit_reset() {
  stop_dockerd
  retire "$dockerd_dir"
  mkdir -p "$dockerd_dir/client-config"
  start_dockerd
}
buildkit_build() { docker build --network host --progress plain -t bench "$ctx"; }

buildah_dir=$work/buildah
buildah_driver=${BENCH_BUILDAH_DRIVER:-}
buildah_reset() { buildah_fresh "$buildah_dir"; }
buildah_build() {
  buildah_in "$buildah_dir" bud --isolation chroot --layers -t bench "$ctx"
}

# overlay (the kernel's) where it works, else vfs: a tiny build tells.
pick_buildah_driver() {
  [[ -n $buildah_driver ]] && return 0
  local probe=$work/buildah-probe
  mkdir -p "$probe/context"
  echo probe >"$probe/context/f"
  printf 'FROM scratch\nCOPY f /f\n' >"$probe/context/Dockerfile"
  buildah_driver=overlay
  buildah_fresh "$probe/store"
  if ! buildah_in "$probe/store" bud --isolation chroot --layers -t probe "$probe/context" \
    >"$log_dir/buildah-probe.log" 2>&1; then
    buildah_driver=vfs
  fi
  retire "$probe"
}


# --- measuring -------------------------------------------------------------------------------

elapsed=

measure() {
  local builder=$1 kind=$2 run=$3
  timed "$log_dir/$builder-$kind-$run.log" builder_do "$builder" build
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind" "$run" "$elapsed" >>"$results"
  printf '  %-9s %-10s run %d: %7.3f s\n' "$builder" "$kind" "$run" "$elapsed"
}

wants buildah && pick_buildah_driver
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A labels
# The builders take turns in a rotating order: on this machine's ext4 (no journal), creating
# files is slow for minutes after many were deleted, and buildah deletes its working copies, so
# whoever follows it pays. Rotating spreads that over all of them.
for run in $(seq "$runs"); do
  rotation "$run"
  for builder in "${order[@]}"; do
    cp -p "$work/small-file.orig" "$small_file"
    builder_do "$builder" reset
    [[ -n ${labels[$builder]:-} ]] || labels[$builder]=$(label "$builder")
    measure "$builder" cold "$run"
    measure "$builder" no-change "$run"
    printf 'changed for %s, run %s\n' "$builder" "$run" >>"$small_file"
    measure "$builder" one-file "$run"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_kbuildds
stop_dockerd

# --- the table -------------------------------------------------------------------------------


kinds=(cold no-change one-file)
declare -A med
for builder in "${builders[@]}"; do
  for kind in "${kinds[@]}"; do med[$builder.$kind]=$(median "$builder" "$kind"); done
done

echo
echo "context: 5000 files of 1-4 KB in 300 dirs + one 100 MiB file; FROM scratch + COPY src /src"
echo "median of $runs runs, seconds of the client command; load average $load_before before," \
  "$load_after after ($(nproc) cores)"
printf '%-22s %10s %10s %10s\n' builder cold no-change one-file
for builder in "${builders[@]}"; do
  printf '%-22s %10s %10s %10s\n' "${labels[$builder]}" \
    "${med[$builder.cold]}" "${med[$builder.no-change]}" "${med[$builder.one-file]}"
done
for other in kbuild-base buildkit buildah; do
  wants kbuild && wants "$other" || continue
  printf '%-22s' "kbuild/${labels[$other]%% *}"
  for kind in "${kinds[@]}"; do
    awk -v a="${med[kbuild.$kind]}" -v b="${med[$other.$kind]}" \
      'BEGIN { if (b > 0) printf " %9.2fx", a / b; else printf " %10s", "-" }'
  done
  echo
done
echo
echo "versions: $(kbuild_versions);" \
  "docker $("$docker_client" --version 2>/dev/null | awk '{print $3}' | tr -d ,);" \
  "$(buildah --version 2>/dev/null | awk '{print $1, $3}')"

# Where the time goes, from the plain progress of each run ("#3 DONE 0.6s"): a step's name,
# then its time in every run. Wall time beyond the steps is spent before the first or after the
# last progress line (kbuild: removing the materialized context before it replies).
step_times() {
  local builder=$1 kind=$2 run
  for run in $(seq "$runs"); do
    awk -v run="$run" '
      /^#[0-9]+ / && !($1 in name) { id = $1; sub(/^#[0-9]+ /, ""); name[id] = $0; order[++n] = id }
      /^#[0-9]+ DONE / { t[$1] = $3 }
      /^#[0-9]+ CACHED/ { t[$1] = "cached" }
      END { for (i = 1; i <= n; i++) if (order[i] in t) printf "%s\t%s\t%s\n", run, name[order[i]], t[order[i]] }
    ' "$log_dir/$builder-$kind-$run.log"
  done | awk -F'\t' '
    !($2 in seen) { seen[$2] = ++n; names[n] = $2 }
    { times[$2] = times[$2] " " $3 }
    END { for (i = 1; i <= n; i++) printf "    %-50s%s\n", names[i], times[names[i]] }'
}
for builder in kbuild kbuild-base buildkit; do
  wants "$builder" || continue
  for kind in "${kinds[@]}"; do
    walls=$(awk -F'\t' -v b="$builder" -v k="$kind" '$1 == b && $2 == k { printf " %.1fs", $4 }' \
      "$results")
    echo "${labels[$builder]%% *} $kind, steps per run (wall:$walls):"
    step_times "$builder" "$kind"
  done
done
[[ -n ${BENCH_LOG_DIR:-} ]] && echo "build logs in $log_dir"
exit 0
