#!/usr/bin/env bash
# The soak benchmark: each builder builds a small Dockerfile (FROM the offline busybox base of
# tests/integration/base_image.py, a COPY of 50 small files, one RUN that writes 3 MiB) in a loop
# for SOAK_SECONDS, one random file of the context changed before every build and now and then a
# build argument, and the store's disk use (`du -sbx` of its root) sampled after every build. It
# shows whether a builder's garbage collection keeps the store bounded while it builds, and how
# many builds a minute it completes meanwhile:
#
#   kbuild     kbuildd with a daemon.json of its own: builder.gc enabled, defaultKeepStorage
#              SOAK_KEEP_STORAGE
#   BuildKit   Debian's dockerd 20.10 with a daemon.json of its own, the same builder.gc
#   buildah    bud --isolation chroot --layers: buildah has no garbage collection, its store
#              keeps every layer
#
# Every builder starts on a fresh store with the base loaded (not timed) and the same context,
# and makes the same changes in the same order (bash's RANDOM from SOAK_SEED). Only the changes
# and the builds count toward SOAK_SECONDS; the build that runs when they are up completes and
# counts. Run as root from anywhere (about 1.5 minutes per builder and round):
#
#   bash bench/soak.sh
#
#   SOAK_SECONDS           each builder's build time per round (default: 60)
#   SOAK_ROUNDS            rounds, the builders in a rotating order (default: 1)
#   SOAK_SEED              the seed of the changes (default: 15)
#   SOAK_KEEP_STORAGE      kbuild's and BuildKit's builder.gc defaultKeepStorage (default: 50MB)
#   KBUILD_BUILD_DIR       kbuild's build directory (default: build; built with ninja if missing)
#   BENCH_BUILDERS         which builders, in order (default: "kbuild buildkit buildah")
#   BENCH_BUILDAH_DRIVER   overlay or vfs (default: overlay if a RUN build works, else vfs)
#   BENCH_LOG_DIR          keep the failed builds' output and the daemons' logs there (default:
#                          dropped with the temp dir)
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
bench_prepare soak.sh service/kbuildd service/kbuild-context-reader cli/kbuildctl engine/kbuild-exec
if wants kbuild-base; then
  echo "soak.sh: there is no kbuild-base here: soak one kbuild at a time" >&2
  exit 1
fi
if [[ ! -x /bin/busybox ]]; then
  echo "installing busybox-static"
  apt_install busybox-static
fi
soak_seconds=${SOAK_SECONDS:-60}
rounds=${SOAK_ROUNDS:-1}
seed=${SOAK_SEED:-15}
keep_storage=${SOAK_KEEP_STORAGE:-50MB}
files=50
if [[ ! $soak_seconds =~ ^[1-9][0-9]*$ || ! $rounds =~ ^[1-9][0-9]*$ || ! $seed =~ ^[0-9]+$ ]]; then
  echo "soak.sh: SOAK_SECONDS and SOAK_ROUNDS must be whole numbers above 0, SOAK_SEED a whole number" >&2
  exit 1
fi

bench_init_workdir ksoak

# The build client runs in the background and the script waits for it (build_in_background):
# bash runs a trap for Ctrl-C during `wait` at once, whereas while a foreground client runs it
# waits for it and, when the client handles SIGINT itself and exits normally (docker build does:
# "context canceled"), does not act on the signal at all, and the loop would go on. bash starts a
# client in the background with SIGINT ignored (docker's Go runtime takes it back, kbuildctl and
# buildah may not), so on any exit it is stopped here; then lib.sh's cleanup (daemons, mounts, the
# temp dir) runs, which exits with the status it finds in $?.
client_pid=
on_exit() {
  local status=$? _
  set +e
  if [[ -n $client_pid ]]; then
    pkill -TERM -P "$client_pid"
    kill -TERM "$client_pid" 2>/dev/null
    # Not `wait`: in a trap that interrupted the loop's wait for the same child, bash's may never
    # return.
    for _ in $(seq 300); do alive "$client_pid" || break; sleep 0.1; done
    client_pid=
  fi
  (exit "$status")
  cleanup
}
trap on_exit EXIT

# --- the base, the context and the Dockerfile --------------------------------------------------

base_tar=$work/base.tar
python3 "$repo/tests/integration/base_image.py" "$base_tar" --tag kbuild-busybox >/dev/null

# The context each builder starts from: 50 files of 1-4 KB of text, the same on every run.
pristine=$work/pristine
mkdir -p "$pristine/src"
awk -v dir="$pristine/src" -v n="$files" 'BEGIN {
  srand(15)
  for (i = 1; i <= n; i++) {
    file = dir "/f" i ".txt"
    lines = 20 + int(rand() * 60)
    for (j = 1; j <= lines; j++) printf "file %d line %d: %08x %08x %08x\n", i, j, rand() * 4294967295, rand() * 4294967295, rand() * 4294967295 > file
    close(file)
  } }'
# The RUN step reads the context and writes 3 MiB that differ in every build, so that each build
# leaves a new layer of its size and the store grows unless something collects.
cat >"$pristine/Dockerfile" <<'EOF'
FROM kbuild-busybox
ARG FLAVOUR=plain
COPY src /src
RUN cat /src/*.txt | sha256sum > /sum && echo "$FLAVOUR" > /flavour && head -c 3145728 /dev/urandom > /data
EOF
ctx=$work/context

# --- the builders ------------------------------------------------------------------------------

# Each builder's *_fresh gives it an empty store with the base loaded (not timed), *_build FLAVOUR
# builds the context, *_store is the directory whose size is sampled, *_stop stops its daemon.

gc_config="{\"builder\": {\"gc\": {\"enabled\": true, \"defaultKeepStorage\": \"$keep_storage\"}}}"

kbuild_fresh() {
  kbuild_use kbuild
  stop_kbuildd
  retire "$kbuild_dir"
  mkdir -p "$kbuild_dir"
  echo "$gc_config" >"$kbuild_dir/daemon.json"
  start_kbuildd --config "$kbuild_dir/daemon.json" --exec-helper "$kbuild_exec_bin"
  kbuildctl load -i "$base_tar" >/dev/null
}
kbuild_build() { kbuildctl build --progress plain --build-arg "FLAVOUR=$1" -t soak "$ctx"; }
kbuild_store() { echo "$work/kbuild/root"; }
kbuild_stop() { stop_kbuildd; }

dockerd_dir=$work/dockerd
buildkit_fresh() {
  stop_dockerd
  retire "$dockerd_dir"
  mkdir -p "$dockerd_dir/client-config"
  # Its own config file, so that the machine's /etc/docker/daemon.json takes no part.
  echo "$gc_config" >"$dockerd_dir/daemon.json"
  start_dockerd --config-file "$dockerd_dir/daemon.json"
  docker load -i "$base_tar" >/dev/null
}
buildkit_build() { docker build --network host --progress plain --build-arg "FLAVOUR=$1" -t soak "$ctx"; }
buildkit_store() { echo "$dockerd_dir/data"; }
buildkit_stop() { stop_dockerd; }

buildah_dir=$work/buildah
buildah_driver=${BENCH_BUILDAH_DRIVER:-}
# The base from its archive, under the name the Dockerfile uses: builds never pull.
buildah_load_base() {
  local id
  id=$(buildah_in "$1" pull -q "docker-archive:$base_tar")
  buildah_in "$1" tag "$id" kbuild-busybox
}
buildah_fresh_store() {
  buildah_fresh "$buildah_dir"
  buildah_load_base "$buildah_dir" >/dev/null
}
# The host network as the others; chroot isolation; the base is never pulled.
buildah_bud() {
  local dir=$1
  shift
  buildah_in "$dir" bud --isolation chroot --layers --pull=never --network host "$@"
}
buildah_build() { buildah_bud "$buildah_dir" --build-arg "FLAVOUR=$1" -t soak "$ctx"; }
buildah_store() { echo "$buildah_dir/root"; }
buildah_stop() { :; }

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

fresh() {
  case $1 in
    buildah) buildah_fresh_store ;;
    *) "${1}_fresh" ;;
  esac
}

# What the builder itself says its store holds at the end: kbuild's `kbuildctl du` total and
# image count, the build cache and images of dockerd's `docker system df`, buildah's image count.
own_account() {
  case $1 in
    kbuild) echo "kbuildctl du total $(kbuildctl du | awk '$1 == "Total:" { print $2 }'); images $(kbuildctl images -q | wc -l)" ;;
    buildkit) docker system df --format '{{.Type}} {{.Size}} ({{.TotalCount}})' |
      awk '/^Images|^Build Cache/' | paste -sd';' | sed 's/;/; /g; s/^/docker system df: /' ;;
    buildah) echo "buildah images: $(buildah_in "$buildah_dir" images -aq | wc -l) (no GC)" ;;
  esac
}

# --- soaking -----------------------------------------------------------------------------------

# Bytes of STORE as `du -sbx` counts them: on its own file system only, so that a mount under it
# (an overlay a build left mounted) is not counted twice. A garbage collection running meanwhile
# deletes files under du's walk, which du reports and counts out: its total stands.
store_bytes() { { du -sbx "$1" 2>/dev/null || true; } | awk '{ print $1 }'; }

# One random change to the context (the same sequence for every builder, from RANDOM): a line
# appended to one of its files, and with a chance of one in four a new value of FLAVOUR.
flavours=(plain sweet sour bitter)
flavour=plain
change() {
  local n=$((RANDOM % files + 1))
  echo "change $1: $RANDOM" >>"$ctx/src/f$n.txt"
  ((RANDOM % 4)) || flavour=${flavours[RANDOM % ${#flavours[@]}]}
}

# BUILDER's build with $flavour, its output in LOG; returns the client's exit status.
build_in_background() {
  local status=0
  "${1}_build" "$flavour" >"$2" 2>&1 &
  client_pid=$!
  wait "$client_pid" || status=$?
  client_pid=
  return "$status"
}

# soak BUILDER ROUND: a fresh store, then builds for $soak_seconds of change-and-build time.
# Records a line per builder and round: builds, failed, seconds, disk samples (bytes, in order).
failures=()
soak() {
  local builder=$1 round=$2 store log clock=0 start end ok=0 failed=0 i=0 status
  local -a samples=()
  log=$log_dir/$builder-r$round.log
  fresh "$builder" >"$log_dir/$builder-r$round.fresh.log" 2>&1 || {
    echo "making a fresh store for $builder failed:" >&2
    tail -n 30 "$log_dir/$builder-r$round.fresh.log" >&2
    exit 1
  }
  [[ -n ${labels[$builder]:-} ]] || labels[$builder]=$(label "$builder")
  retire "$ctx"
  cp -a "$pristine" "$ctx"
  RANDOM=$seed
  flavour=plain
  store=$("${builder}_store")
  samples+=("$(store_bytes "$store")")
  sync
  while awk -v c="$clock" -v s="$soak_seconds" 'BEGIN { exit !(c < s) }'; do
    i=$((i + 1))
    start=$EPOCHREALTIME
    change "$i"
    status=0
    build_in_background "$builder" "$log" || status=$?
    end=$EPOCHREALTIME
    clock=$(awk -v c="$clock" -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", c + e - s }')
    if ((status)); then
      failed=$((failed + 1))
      cp "$log" "$log_dir/$builder-r$round-failed-$i.log"
      failures+=("$builder round $round build $i (exit status $status, output in $log_dir/$builder-r$round-failed-$i.log)")
      if ((failed == 1)); then
        printf '  %-9s build %d FAILED (exit status %d):\n' "$builder" "$i" "$status"
        tail -n 20 "$log" | sed 's/^/    | /'
      fi
    else
      ok=$((ok + 1))
    fi
    samples+=("$(store_bytes "$store")")
  done
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$builder" "$round" "$ok" "$failed" "$clock" "${samples[*]}" >>"$results"
  printf '  %-9s round %d: %d builds (%d failed) in %.1f s, store %s MiB at the end; %s\n' \
    "$builder" "$round" "$ok" "$failed" "$clock" "$(mib "${samples[-1]}")" "$(own_account "$builder")"
  "${builder}_stop"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

wants buildah && pick_buildah_driver
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "seed $seed, $soak_seconds s per builder and round, builder.gc defaultKeepStorage $keep_storage"
echo "load average before: $load_before ($(nproc) cores)"
declare -A labels
for round in $(seq "$rounds"); do
  rotation "$round"
  for builder in "${order[@]}"; do soak "$builder" "$round"; done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table ---------------------------------------------------------------------------------

echo
echo "FROM the busybox base (loaded first); ARG FLAVOUR; COPY of $files small files; RUN that writes"
echo "3 MiB. Before each build one random file changes (and one time in four FLAVOUR may), seed $seed;"
echo "$soak_seconds s of builds per builder and round; store = du -sbx of its root after each build."
echo "kbuild and BuildKit: builder.gc enabled, defaultKeepStorage $keep_storage; buildah: no GC."
echo "Load average $load_before before, $load_after after ($(nproc) cores)"
printf '%-20s %5s %7s %6s %9s %9s %9s %9s %9s\n' builder round builds failed builds/min \
  "MiB min" median max end
awk -F'\t' '{
    n = split($6, s, " ")
    for (i = 1; i <= n; i++) v[i] = s[i] + 0
    # insertion sort: a few hundred samples
    for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    printf "%s\t%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", $1, $2, $3, $4, $3 * 60 / $5,
      v[1] / 1048576, v[int((n + 1) / 2)] / 1048576, v[n] / 1048576, s[n] / 1048576
  }' "$results" >"$work/table.tsv"
while IFS=$'\t' read -r builder round ok failed rate min med max last; do
  printf '%-20s %5s %7s %6s %9s %9s %9s %9s %9s\n' "${labels[$builder]}" "$round" "$ok" "$failed" \
    "$rate" "$min" "$med" "$max" "$last"
done <"$work/table.tsv"
if ((${#failures[@]})); then
  echo
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo
echo "versions: $(kbuild_versions);" \
  "docker $("$docker_client" --version 2>/dev/null | awk '{print $3}' | tr -d ,);" \
  "$(buildah --version 2>/dev/null | awk '{print $1, $3}')"
[[ -n ${BENCH_LOG_DIR:-} ]] && echo "logs in $log_dir"
exit 0
