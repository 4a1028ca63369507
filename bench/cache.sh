#!/usr/bin/env bash
# The build-cache benchmark: a cache made on host A, used on host B through a registry. kbuild,
# BuildKit (Debian's dockerd 20.10) and buildah build the same two-stage Dockerfile FROM the
# offline busybox base of tests/integration/base_image.py (loaded into every fresh store before
# anything is timed): a builder stage that makes 38 MB of "dependencies" (16 MiB of random bytes,
# 22 MB of text) and then does a few seconds of CPU work over them and the context's 200 sources
# (sort, bzip2 -9, gzip -9, sha256sum), and a final stage that copies its 5 MB of output. In each
# run, for each builder, on a fresh store every time:
#
#   export     host A builds cold and exports its cache to Debian's docker-registry on 127.0.0.1:
#                kbuild    --push -t REG/kbuild-RUN/app:latest --cache-to type=inline
#                          --cache-to type=registry,ref=REG/kbuild-RUN/app:buildcache,mode=max
#                BuildKit  docker build --build-arg BUILDKIT_INLINE_CACHE=1 -t REG/buildkit-RUN/app,
#                          then docker push (dockerd 20.10's docker build has no --cache-to: it
#                          cannot export a registry or mode=max cache, only the inline one)
#                buildah   bud --layers --cache-to REG/buildah-RUN/app-cache (an image per step)
#   cold       host B builds with no cache
#   registry   host B builds with A's registry cache: kbuild --cache-from type=registry,ref=...,
#              buildah --cache-from REG/buildah-RUN/app-cache
#   inline     host B builds with --cache-from REG/BUILDER-RUN/app:latest, A's image and the
#              inline cache in its config (kbuild and BuildKit)
#
# It times the client command (for BuildKit's export, build and push together), and reads from
# the registry's access log what B downloaded (the bytes of every GET answered 200 or 206) and
# from the build's output how many of the four steps (two RUN, two COPY) came from the cache.
# Each measurement runs BENCH_RUNS times, the builders taking turns in a rotating order, and the
# table shows the medians. Only loopback is used. Run as root from anywhere:
#
#   bash bench/cache.sh
#
#   KBUILD_BUILD_DIR       kbuild's build directory (default: build; built with ninja if missing)
#   KBUILD_BASELINE_BUILD_DIR
#                          an earlier kbuild's build directory, measured as kbuild-base (default:
#                          none; never built by the script)
#   BENCH_RUNS             runs per measurement (default: 3)
#   BENCH_BUILDERS         which builders, in order (default: "kbuild buildkit buildah")
#   BENCH_BUILDAH_DRIVER   overlay or vfs (default: overlay if a RUN build works, else vfs)
#   BENCH_LOG_DIR          keep every build's output and the registry's log there (default:
#                          dropped with the temp dir)
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
bench_prepare cache.sh service/kbuildd service/kbuild-context-reader cli/kbuildctl engine/kbuild-exec
if ! command -v docker-registry >/dev/null; then
  echo "installing docker-registry"
  apt_install docker-registry
fi
if [[ ! -x /bin/busybox ]]; then
  echo "installing busybox-static"
  apt_install busybox-static
fi

bench_init_workdir kcache

# Stops the registry too on any exit, then lib.sh's cleanup (daemons, mounts, the temp dir),
# which exits with the status it finds in $?.
registry_pid=
on_exit() {
  local status=$?
  set +e
  stop_pid "$registry_pid"
  registry_pid=
  (exit "$status")
  cleanup
}
trap on_exit EXIT

# --- the base, the context and the Dockerfile ---------------------------------------------------

base_tar=$work/base.tar
python3 "$repo/tests/integration/base_image.py" "$base_tar" --tag kbuild-busybox >/dev/null

# 200 sources of 601 one-line functions each (26 KB, 5.2 MB in all), the same on every run.
ctx=$work/context
mkdir -p "$ctx/src"
awk -v dir="$ctx/src" 'BEGIN {
  for (i = 1; i <= 200; i++) {
    file = dir "/m" i ".c"
    for (j = 0; j <= 600; j++) printf "int f%d_%d(int x) { return x * %d + %d; }\n", i, j + 1, i * 1000 + j, i > file
    close(file)
  } }'
cat >"$ctx/Dockerfile" <<'EOF'
FROM kbuild-busybox AS builder
# The dependencies, as a package manager would fetch them: 16 MiB of binaries, 22 MB of text.
RUN mkdir -p /deps && head -c 16777216 /dev/urandom > /deps/libdep.so && seq 1 3000000 > /deps/table.txt
COPY src /src
# The build: a few seconds of CPU over the sources and the dependencies, 5 MB of output.
RUN mkdir /out && sort -r /deps/table.txt > /tmp/sorted && cat /src/*.c /tmp/sorted | bzip2 -9 > /out/app.bz2 \
 && gzip -9 -c /deps/table.txt > /out/table.gz && head -c 4194304 /deps/libdep.so > /out/libapp.so \
 && sha256sum /out/* > /out/SHA256SUMS && rm /tmp/sorted

FROM kbuild-busybox
COPY --from=builder /out /app
CMD ["/bin/sh"]
EOF

# --- the registry ------------------------------------------------------------------------------

# `docker-registry serve` on 127.0.0.1 and a free port, with its storage in the temp dir, as
# bench/registry.sh starts it. Another program may take the port between the probe and the
# registry's bind: then it tries another.
registry_dir=$work/registry
registry_log=$log_dir/registry.log

# MiB of the bytes the registry sent in answer to GETs (200 or 206) after its access log had
# MARK bytes: blobs and manifests downloaded. The line is logged as the answer ends, so a
# moment is left for the last one.
fetched_since() {
  sleep 0.5
  tail -c +"$(($1 + 1))" "$registry_log" |
    awk '$6 == "\"GET" && ($9 == 200 || $9 == 206) { s += $10 } END { printf "%.1f", s / 1048576 }'
}

# MiB of the distinct blobs (layers and configs) that the manifests of every tag of REPOSITORY
# name: what host A left there for B.
stored_mib() {
  local tag
  for tag in $(curl -fsS "http://$registry/v2/$1/tags/list" | jq -r '.tags[]?'); do
    curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$registry/v2/$1/manifests/$tag" | jq -r '(.layers // []) + [.config] | .[] | "\(.digest) \(.size)"'
  done | sort -u | awk '{ s += $2 } END { printf "%.1f", s / 1048576 }'
}

# --- the builders -------------------------------------------------------------------------------

# Each builder's *_fresh gives it an empty store with the base loaded (not timed); *_case CASE
# RUN is the timed command of one case. The repository of run RUN is REG/BUILDER-RUN/app, new in
# every run, so that no blob of an earlier run is there.

# kbuild and kbuild-base alike (the first argument says which), each with its own programs and
# dir (kbuild_use), and a daemon.json of its own so that no system-wide setting takes part.
kbuild_fresh() {
  kbuild_use "$1"
  stop_kbuildd
  retire "$kbuild_dir"
  mkdir -p "$kbuild_dir"
  echo '{}' >"$kbuild_dir/daemon.json"
  start_kbuildd --config "$kbuild_dir/daemon.json" --exec-helper "$kbuild_exec_bin"
  kbuildctl load -i "$base_tar" >/dev/null
}
kbuild_case() {
  local image=$registry/$1-$3/app
  kbuild_use "$1"
  case $2 in
    export) kbuildctl build --progress plain --push -t "$image:latest" --cache-to type=inline \
      --cache-to "type=registry,ref=$image:buildcache,mode=max" "$ctx" ;;
    cold) kbuildctl build --progress plain -t app:b "$ctx" ;;
    registry) kbuildctl build --progress plain -t app:b --cache-from "type=registry,ref=$image:buildcache" "$ctx" ;;
    inline) kbuildctl build --progress plain -t app:b --cache-from "$image:latest" "$ctx" ;;
  esac
}
kbuild_repository() { echo "$1-$2/app"; }

# dockerd 20.10 on a data root of its own, new for every case: images, BuildKit's cache and what
# it knows of the registry all go. dockerd treats 127.0.0.0/8 as a plain-HTTP registry.
dockerd_dir=$work/dockerd
buildkit_fresh() {
  stop_dockerd
  retire "$dockerd_dir"
  mkdir -p "$dockerd_dir/client-config"
  start_dockerd
  docker load -i "$base_tar" >/dev/null
}
buildkit_case() {
  local image=$registry/buildkit-$2/app
  case $1 in
    export) docker build --network host --progress plain --build-arg BUILDKIT_INLINE_CACHE=1 \
      -t "$image:latest" "$ctx" && docker push "$image:latest" ;;
    cold) docker build --network host --progress plain -t app:b "$ctx" ;;
    inline) docker build --network host --progress plain -t app:b --cache-from "$image:latest" "$ctx" ;;
  esac
}
buildkit_repository() { echo "buildkit-$1/app"; }

# buildah and skopeo, run as root, keep what they know of blobs in registries in
# /var/lib/containers/cache, shared by every such program on the machine; with it a push may
# mount a blob pushed earlier instead of uploading it. Each call gets an empty one of its own
# (a tmpfs over that directory, or its deepest existing parent, in a private mount namespace),
# as in bench/registry.sh, and the machine's is left alone.
private_cache() {
  local over=/var/lib/containers/cache
  while [[ ! -d $over ]]; do over=$(dirname "$over"); done
  # shellcheck disable=SC2016  # $1 and $@ are sh's
  unshare --mount --propagation private -- \
    sh -c 'mount -t tmpfs -o mode=0700 bench-cache "$1" && shift && exec "$@"' sh "$over" "$@"
}
buildah_dir=$work/buildah
buildah_driver=${BENCH_BUILDAH_DRIVER:-}
buildah_run() {
  local dir=$1
  shift
  private_cache env CONTAINERS_STORAGE_CONF="$dir/storage.conf" \
    buildah --root "$dir/root" --runroot "$dir/run" --storage-driver "$buildah_driver" "$@"
}
# Its own storage (lib.sh's buildah_fresh) with the base under the name the Dockerfile uses.
buildah_load_base() {
  local id
  buildah_fresh "$1"
  id=$(buildah_run "$1" pull -q "docker-archive:$base_tar")
  buildah_run "$1" tag "$id" kbuild-busybox
}
buildah_fresh_store() { buildah_load_base "$buildah_dir"; }
# The host network as the others; chroot isolation; the base is never pulled.
buildah_bud() {
  local dir=$1
  shift
  buildah_run "$dir" bud --isolation chroot --layers --pull=never --network host "$@"
}
buildah_case() {
  local cache=$registry/buildah-$2/app-cache
  case $1 in
    export) buildah_bud "$buildah_dir" --tls-verify=false --cache-to "$cache" -t app:a "$ctx" ;;
    cold) buildah_bud "$buildah_dir" -t app:b "$ctx" ;;
    registry) buildah_bud "$buildah_dir" --tls-verify=false --cache-from "$cache" -t app:b "$ctx" ;;
  esac
}
buildah_repository() { echo "buildah-$1/app-cache"; }

# overlay (the kernel's) where it works, else vfs: a tiny RUN build tells.
pick_buildah_driver() {
  [[ -n $buildah_driver ]] && return 0
  local probe=$work/buildah-probe
  mkdir -p "$probe/context"
  printf 'FROM kbuild-busybox\nRUN echo probe > /f\n' >"$probe/context/Dockerfile"
  buildah_driver=overlay
  if ! { buildah_load_base "$probe/store" &&
    buildah_bud "$probe/store" -t probe "$probe/context"; } >"$log_dir/buildah-probe.log" 2>&1; then
    buildah_driver=vfs
  fi
  retire "$probe"
}

# The cases each builder has: dockerd 20.10 exports only inline caches, buildah's cache is a
# repository of its own (an image per step) and has no inline form.
cases_of() {
  case $1 in
    kbuild | kbuild-base) echo export cold registry inline ;;
    buildkit) echo export cold inline ;;
    buildah) echo export cold registry ;;
  esac
}
# The builder's daemon (or store) made fresh, for builder_do.
fresh() {
  case $1 in
    kbuild | kbuild-base) kbuild_fresh "$1" ;;
    buildkit) buildkit_fresh ;;
    buildah) buildah_fresh_store ;;
  esac
}

# "H/N": of the N Dockerfile steps that copy or run (both stages; FROM and CMD aside), H were
# taken from the cache, as the build's output says: BuildKit's plain progress (kbuild's too)
# marks a step "#N CACHED", buildah prints "--> Using cache" under the step.
cache_hits() {
  case $1 in
    buildah) awk '/STEP [0-9]+\/[0-9]+: (RUN|COPY) / { n++; step = 1; next }
      /STEP [0-9]+\/[0-9]+: / { step = 0 }
      /^--> Using cache / && step { h++; step = 0 }
      END { printf "%d/%d", h, n }' "$2" ;;
    *) awk '/^#[0-9]+ \[[^]]+\] (RUN|COPY) / && $2 != "[internal]" { step[$1] = 1 }
      /^#[0-9]+ CACHED$/ { cached[$1] = 1 }
      END { for (s in step) { n++; if (s in cached) h++ } printf "%d/%d", h, n }' "$2" ;;
  esac
}

# --- measuring ---------------------------------------------------------------------------------

# measure BUILDER CASE RUN: a fresh store (not timed), then the case, timed. Records the wall
# time, the MiB fetched from the registry and the steps taken from the cache, or "fail": a failed
# case is shown with its output and the runs go on, so that one builder's failure leaves the
# others' numbers.
failures=()
measure() {
  local builder=$1 kind=$2 run=$3 log mark start end status=0 mib hits stored=''
  log=$log_dir/$builder-$kind-$run.log
  fresh "$builder" >"$log_dir/$builder-$kind-$run.fresh.log" 2>&1 || {
    echo "making a fresh store for $builder failed:" >&2
    tail -n 30 "$log_dir/$builder-$kind-$run.fresh.log" >&2
    exit 1
  }
  [[ -n ${labels[$builder]:-} ]] || labels[$builder]=$(label "$builder")
  # What the load before it left to write back is written now, not during the timed command.
  sync
  mark=$(stat -c %s "$registry_log")
  start=$EPOCHREALTIME
  if [[ $builder == kbuild* ]]; then
    kbuild_case "$builder" "$kind" "$run" >"$log" 2>&1 || status=$?
  else
    "${builder}_case" "$kind" "$run" >"$log" 2>&1 || status=$?
  fi
  end=$EPOCHREALTIME
  if ((status)); then
    printf '%s\t%s\t%s\t%s\n' "$builder" "$kind" "$run" fail >>"$results"
    failures+=("$builder $kind, run $run (exit status $status, output in $log)")
    printf '  %-9s %-8s run %d: FAILED (exit status %d):\n' "$builder" "$kind" "$run" "$status"
    tail -n 30 "$log" | sed 's/^/    | /'
    return 0
  fi
  elapsed=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
  mib=$(fetched_since "$mark")
  hits=$(cache_hits "$builder" "$log")
  if [[ $kind == export ]]; then
    stored=$(stored_mib "$(builder_do "$builder" repository "$run")")
    printf '%s\t%s\t%s\t%s\n' "$builder" stored "$run" "$stored" >>"$results"
    stored=", $stored MiB in the registry"
  fi
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind" "$run" "$elapsed" >>"$results"
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind-mib" "$run" "$mib" >>"$results"
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind-hits" "$run" "$hits" >>"$results"
  printf '  %-9s %-8s run %d: %7.3f s, %5.1f MiB fetched, %s steps from cache%s\n' \
    "$builder" "$kind" "$run" "$elapsed" "$mib" "$hits" "$stored"
}

# The median of BUILDER's KIND over the runs that did not fail; empty when all failed.
median_of() {
  awk -F'\t' -v b="$1" -v k="$2" '$1 == b && $2 == k && $4 != "fail" { print $4 }' "$results" |
    sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f", v[int((NR + 1) / 2)] }'
}
# BUILDER's KIND run by run, ", " between.
runs_of() {
  awk -F'\t' -v b="$1" -v k="$2" '$1 == b && $2 == k { printf "%s%s", sep, $4; sep = ", " }' "$results"
}
# The distinct values of BUILDER's KIND (the cache hits: "4/4", or "0/4 4/4" if they varied).
distinct_of() {
  awk -F'\t' -v b="$1" -v k="$2" '$1 == b && $2 == k { print $4 }' "$results" | sort -u | paste -sd' '
}

wants buildah && pick_buildah_driver
start_registry
echo "registry: docker-registry on $registry"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before ($(nproc) cores)"
declare -A labels
for run in $(seq "$runs"); do
  rotation "$run"
  for builder in "${order[@]}"; do
    for kind in $(cases_of "$builder"); do measure "$builder" "$kind" "$run"; done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_kbuildds
stop_dockerd

# --- the table ---------------------------------------------------------------------------------

kinds=(export cold registry inline)
declare -A width=([export]=11 [cold]=9 [registry]=11 [inline]=9)
declare -A med
for builder in "${builders[@]}"; do
  med[$builder.stored]=$(median_of "$builder" stored)
  for kind in "${kinds[@]}"; do
    med[$builder.$kind]=$(median_of "$builder" "$kind")
    med[$builder.$kind-mib]=$(median_of "$builder" "$kind-mib")
  done
done
# A cell: the median, "-" for a case the builder does not have, "failed" when every run failed.
cell() {
  local builder=$1 kind=$2
  if [[ " $(cases_of "$builder") " != *" $kind "* ]]; then
    echo -
  elif [[ -z ${med[$builder.$kind]} ]]; then
    echo failed
  else
    echo "${med[$builder.$kind]}"
  fi
}

echo
echo "FROM the busybox base (loaded first): a builder stage (RUN 38 MB of dependencies, COPY 200"
echo "sources, RUN sort/bzip2/gzip over them: 5 MB of output) and a final stage that copies the output."
echo "A builds cold and exports its cache; B (a fresh store each time) builds cold, with A's registry"
echo "cache, with A's inline cache, through docker-registry" \
  "$(docker-registry --version 2>/dev/null | awk '{print $3}') on 127.0.0.1."
echo "Median of $runs runs, seconds of the client command; load average $load_before before,"
echo "$load_after after ($(nproc) cores)"
printf '%-22s %11s %9s %11s %9s\n' builder "A: export" "B: cold" "B: registry" "B: inline"
for builder in "${builders[@]}"; do
  printf '%-22s %11s %9s %11s %9s\n' "${labels[$builder]:-$builder}" \
    "$(cell "$builder" export)" "$(cell "$builder" cold)" "$(cell "$builder" registry)" "$(cell "$builder" inline)"
done
for other in kbuild-base buildkit buildah; do
  wants kbuild && wants "$other" || continue
  printf '%-22s' "kbuild/${labels[$other]%% *}"
  for kind in "${kinds[@]}"; do
    awk -v a="${med[kbuild.$kind]}" -v b="${med[$other.$kind]}" -v w="${width[$kind]}" \
      'BEGIN { if (a > 0 && b > 0) printf " %*.2fx", w - 1, a / b; else printf " %*s", w, "-" }'
  done
  echo
done
echo
echo "MiB host B fetched from the registry (median), and steps (RUN, COPY) taken from the cache:"
printf '%-22s %11s %11s %11s\n' builder "B: cold" "B: registry" "B: inline"
for builder in "${builders[@]}"; do
  printf '%-22s' "${labels[$builder]:-$builder}"
  for kind in cold registry inline; do
    if [[ $(cell "$builder" "$kind") == - || $(cell "$builder" "$kind") == failed ]]; then
      printf ' %11s' "$(cell "$builder" "$kind")"
    else
      printf ' %11s' "$(printf '%.1f' "${med[$builder.$kind-mib]}") $(distinct_of "$builder" "$kind-hits")"
    fi
  done
  echo
done
echo
echo "What A's export left in the registry (median MiB of the distinct blobs its tags name):"
for builder in "${builders[@]}"; do
  case $builder in
    kbuild | kbuild-base) what="image + inline cache, and the mode=max cache" ;;
    buildkit) what="image + inline cache" ;;
    buildah) what="an image per step" ;;
  esac
  printf '  %-20s %6.1f MiB (%s)\n' "${labels[$builder]:-$builder}" "${med[$builder.stored]:-0}" "$what"
done
echo
echo "The runs one by one, seconds:"
for builder in "${builders[@]}"; do
  for kind in $(cases_of "$builder"); do
    printf '  %-9s %-8s %s\n' "$builder" "$kind" "$(runs_of "$builder" "$kind")"
  done
done
if ((${#failures[@]})); then
  echo
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo
echo "versions: $(kbuild_versions);" \
  "docker $("$docker_client" --version 2>/dev/null | awk '{print $3}' | tr -d ,);" \
  "$(buildah --version 2>/dev/null | awk '{print $1, $3}')"
[[ -n ${BENCH_LOG_DIR:-} ]] && echo "build logs in $log_dir"
exit 0
