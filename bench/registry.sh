#!/usr/bin/env bash
# The registry benchmark: kbuild, Docker (Debian's dockerd 20.10), buildah and skopeo push the
# same image to one docker-registry (Debian's docker-registry, the CNCF distribution) on
# 127.0.0.1 over plain HTTP, and pull it back into empty stores. The image is the offline busybox
# base of tests/integration/base_image.py plus two layers generated from a fixed seed: one file of
# random bytes (incompressible) and one of words drawn from a seeded vocabulary (compressible
# about 3:1), BENCH_IMAGE_MB in all (100 MiB each by default). It is written once as a
# docker-archive with uncompressed layers, so every tool gzips the layers itself when it pushes.
# For each tool it times:
#
#   push   the image, loaded first into a fresh store (not timed), sent to a repository of its
#          own that is new in every run, so that no blob is already there:
#            kbuild    kbuildctl push 127.0.0.1:P/bench/kbuild-RUN
#            docker    docker push (dockerd's own push, not BuildKit's exporter: dockerd 20.10's
#                      BuildKit cannot push an image it builds, see the README)
#            buildah   buildah push --tls-verify=false IMAGE docker://...
#            skopeo    skopeo copy docker-archive:IMAGE.tar docker://... (the archive is its store)
#   pull   one image pushed before the runs (by skopeo, not timed), pulled into an empty store:
#          a fresh kbuild root, a dockerd on a fresh data root, fresh buildah storage, and for
#          skopeo a new OCI layout directory (skopeo only downloads and checks the blobs; the
#          others also unpack the layers)
#
# With KBUILD_BASELINE_BUILD_DIR an earlier kbuild (one that can push and pull), kbuild-base,
# does the same with its own programs and store, and the table adds kbuild's times divided by its.
#
# Only the client command is timed. Each measurement runs BENCH_RUNS times, the tools taking
# turns in a rotating order, and the table shows the median, kbuild's time divided by the best of
# the others, and the megabytes each push sent. Below it, the CPU time each tool spent (client
# and daemon), which tells a transfer that waits on one core from one that uses both. Only
# loopback is used. Run as root from anywhere:
#
#   bash bench/registry.sh
#
#   KBUILD_BUILD_DIR       kbuild's build directory (default: build; built with ninja if missing)
#   KBUILD_BASELINE_BUILD_DIR
#                          an earlier kbuild's build directory, measured as kbuild-base (default:
#                          none; never built by the script)
#   BENCH_IMAGE_MB         MiB of the two generated layers together (default: 200, half each)
#   BENCH_RUNS             runs per measurement (default: 3)
#   BENCH_BUILDERS         which tools, in order (default: "kbuild buildkit buildah skopeo";
#                          "buildkit" is Docker)
#   BENCH_BUILDAH_DRIVER   overlay or vfs (default: overlay if it works here, else vfs)
#   BENCH_LOG_DIR          keep every command's output and the registry's log there (default:
#                          dropped with the temp dir)
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
: "${BENCH_BUILDERS:=kbuild buildkit buildah skopeo}"
bench_prepare registry.sh service/kbuildd service/kbuild-context-reader cli/kbuildctl
image_mb=${BENCH_IMAGE_MB:-200}
if ! command -v docker-registry >/dev/null; then
  echo "installing docker-registry"
  apt_install docker-registry
fi
if wants skopeo && ! command -v skopeo >/dev/null; then
  echo "installing skopeo"
  apt_install skopeo
fi
if [[ ! -x /bin/busybox ]]; then
  echo "installing busybox-static"
  apt_install busybox-static
fi

bench_init_workdir kreg

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

# --- the image -------------------------------------------------------------------------------

# A docker-archive (what `docker save` writes, which all four read) of the busybox base and two
# layers of BENCH_IMAGE_MB / 2 MiB each: /data/random.bin and /data/words.txt. Fixed seeds,
# mtimes and ownership: the same bytes on every run and machine.
archive=$work/image.tar
echo "generating the image (${image_mb} MiB of layers over the busybox base) in $archive"
python3 - "$repo/tests/integration" "$work/gen" "$archive" "$image_mb" <<'PY'
import hashlib, io, json, os, random, sys, tarfile

sys.path.insert(0, sys.argv[1])
import base_image

gen, out, total_mb = sys.argv[2], sys.argv[3], int(sys.argv[4])
half = total_mb * (1 << 20) // 2
os.makedirs(gen)


def entry(name, kind=tarfile.REGTYPE, mode=0o644, size=0):
    return base_image._info(name, kind, mode, size=size)


def write_data(path, chunks):
    with open(path, "wb") as f:
        left = half
        for chunk in chunks:
            f.write(chunk[:left])
            left -= min(left, len(chunk))
            if not left:
                break


def random_chunks():
    rng = random.Random(20261206)
    while True:
        yield rng.randbytes(1 << 20)


def word_chunks():
    # Words of 2-10 letters, drawn with Zipf-like weights (rank r weighs 1/r), 12 to a line:
    # text-like, gzip makes it about a third of its size.
    rng = random.Random(61202026)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(5000)]
    weights = [1 / (r + 1) for r in range(len(vocab))]
    while True:
        words = rng.choices(vocab, weights, k=120000)
        yield "".join(" ".join(words[i:i + 12]) + "\n" for i in range(0, len(words), 12)).encode()


def layer(path, entries):
    """Writes an uncompressed layer tar; returns its sha256 hex."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, source in entries:
            if source is None:
                tar.addfile(info)
            else:
                with open(source, "rb") as f:
                    tar.addfile(info, f)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


base_layer = os.path.join(gen, "base.tar")
with open(base_layer, "wb") as f:
    f.write(base_image.layer_tar(base_image.ensure_busybox()))
layers = [(base_layer, hashlib.sha256(open(base_layer, "rb").read()).hexdigest(),
           "tests/integration/base_image.py: busybox")]
for name, chunks in (("random.bin", random_chunks()), ("words.txt", word_chunks())):
    data = os.path.join(gen, name)
    write_data(data, chunks)
    path = os.path.join(gen, name + ".layer.tar")
    digest = layer(path, [(entry("data/", tarfile.DIRTYPE, 0o755), None),
                          (entry("data/" + name, size=half), data)])
    os.remove(data)
    layers.append((path, digest, f"COPY {name} /data/{name}"))

config = base_image.image_config("sha256:" + layers[0][1])
config["rootfs"]["diff_ids"] = ["sha256:" + d for _, d, _ in layers]
config["history"] = [{"created": base_image.CREATED, "created_by": by} for _, _, by in layers]
config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
config_digest = hashlib.sha256(config_bytes).hexdigest()
manifest = [{"Config": config_digest + ".json", "RepoTags": ["bench-image:latest"],
             "Layers": [d + "/layer.tar" for _, d, _ in layers]}]
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for path, digest, _ in layers:
        tar.addfile(entry(digest + "/", tarfile.DIRTYPE, 0o755))
        with open(path, "rb") as f:
            tar.addfile(entry(digest + "/layer.tar", size=os.path.getsize(path)), f)
        os.remove(path)
    for name, data in ((config_digest + ".json", config_bytes),
                       ("manifest.json", json.dumps(manifest).encode()),
                       ("repositories", json.dumps({"bench-image": {"latest": layers[0][1]}}).encode())):
        tar.addfile(entry(name, size=len(data)), io.BytesIO(data))
os.rmdir(gen)
PY

# --- the registry ----------------------------------------------------------------------------

# `docker-registry serve` on 127.0.0.1 and a free port, with its storage in the temp dir, as
# tests/integration/test_registry.py starts it. Another program may take the port between the
# probe and the registry's bind: then it tries another.
registry_dir=$work/registry
registry_log=$log_dir/registry.log

# The manifest of REPOSITORY:latest as the registry holds it, from its own API.
registry_manifest() {
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$registry/v2/$1/manifests/latest"
}

# --- the tools -------------------------------------------------------------------------------

# Each tool's *_load puts the image into a fresh store of its own (not timed); *_push RUN sends
# it to bench/TOOL-RUN; *_pull_reset empties its store; *_pull RUN fetches the pulled image.

# kbuild and kbuild-base alike (the first argument says which), each with its own programs and
# dir (kbuild_use). A daemon.json of its own, so that no system-wide mirror or registry setting
# takes part.
kbuild_pull_reset() {
  kbuild_use "$1"
  stop_kbuildd
  retire "$kbuild_dir"
  mkdir -p "$kbuild_dir"
  echo '{}' >"$kbuild_dir/daemon.json"
  start_kbuildd --config "$kbuild_dir/daemon.json"
}
kbuild_load() {
  kbuild_pull_reset "$1"
  kbuildctl load -i "$archive" >/dev/null
}
kbuild_push() {
  kbuild_use "$1"
  kbuildctl tag bench-image:latest "$registry/bench/$1-$2:latest" >/dev/null || return
  timed_step kbuildctl push "$registry/bench/$1-$2:latest"
}
kbuild_pull() {
  kbuild_use "$1"
  timed_step kbuildctl pull "$pulled"
}
kbuild_daemon_pid() { kbuild_use "$1" && echo "${kbuildd_pids[$1]:-}"; }

# Docker: dockerd 20.10 on a data root of its own, fresh for every load and every pull, so that
# neither its image store nor what it remembers having pushed where carries over. dockerd treats
# 127.0.0.0/8 as an insecure (plain HTTP) registry by default.
dockerd_dir=$work/dockerd
buildkit_pull_reset() {
  stop_dockerd
  retire "$dockerd_dir"
  mkdir -p "$dockerd_dir/client-config"
  start_dockerd
}
buildkit_load() {
  buildkit_pull_reset
  docker load -i "$archive" >/dev/null
}
buildkit_push() {
  docker tag bench-image:latest "$registry/bench/buildkit-$1:latest" || return
  timed_step docker push "$registry/bench/buildkit-$1:latest"
}
buildkit_pull() { timed_step docker pull "$pulled"; }
buildkit_daemon_pid() { echo "$dockerd_pid"; }

# buildah and skopeo, run as root, keep what they know of blobs in registries (which blob they
# pushed where, the "blob info cache") in /var/lib/containers/cache, shared by every such program
# on the machine whatever its storage; with it a push would mount a blob pushed earlier to another
# repository instead of uploading it. Each call gets an empty cache of its own, and the machine's
# is left alone: a tmpfs over that directory (or its deepest existing parent) in a private mount
# namespace, gone when the call ends.
private_cache() {
  local over=/var/lib/containers/cache
  while [[ ! -d $over ]]; do over=$(dirname "$over"); done
  # shellcheck disable=SC2016  # $1 and $@ are sh's
  unshare --mount --propagation private -- \
    sh -c 'mount -t tmpfs -o mode=0700 bench-cache "$1" && shift && exec "$@"' sh "$over" "$@"
}

# buildah on storage of its own (lib.sh's buildah_in, with a private blob info cache).
buildah_dir=$work/buildah
buildah_driver=${BENCH_BUILDAH_DRIVER:-}
buildah_image=
buildah_run() {
  local dir=$1
  shift
  private_cache env CONTAINERS_STORAGE_CONF="$dir/storage.conf" \
    buildah --root "$dir/root" --runroot "$dir/run" --storage-driver "$buildah_driver" "$@"
}
buildah_pull_reset() { buildah_fresh "$buildah_dir"; }
buildah_load() {
  buildah_pull_reset
  buildah_image=$(buildah_run "$buildah_dir" pull -q "docker-archive:$archive")
}
buildah_push() {
  timed_step buildah_run "$buildah_dir" push --tls-verify=false "$buildah_image" \
    "docker://$registry/bench/buildah-$1:latest"
}
buildah_pull() { timed_step buildah_run "$buildah_dir" pull --tls-verify=false "docker://$pulled"; }
buildah_daemon_pid() { :; }

skopeo_dir=$work/skopeo
skopeo_pull_reset() {
  retire "$skopeo_dir"
  mkdir -p "$skopeo_dir"
}
# The docker-archive is skopeo's store: nothing to load.
skopeo_load() { :; }
skopeo_push() {
  timed_step private_cache skopeo copy --dest-tls-verify=false "docker-archive:$archive" \
    "docker://$registry/bench/skopeo-$1:latest"
}
skopeo_pull() {
  timed_step private_cache skopeo copy --src-tls-verify=false "docker://$pulled" "oci:$skopeo_dir/oci:latest"
}
skopeo_daemon_pid() { :; }

# overlay (the kernel's) where it works, else vfs: a tiny build tells.
pick_buildah_driver() {
  [[ -n $buildah_driver ]] && return 0
  local probe=$work/buildah-probe
  mkdir -p "$probe/context"
  echo probe >"$probe/context/f"
  printf 'FROM scratch\nCOPY f /f\n' >"$probe/context/Dockerfile"
  buildah_driver=overlay
  buildah_fresh "$probe/store"
  if ! buildah_run "$probe/store" bud --isolation chroot --layers -t probe "$probe/context" \
    >"$log_dir/buildah-probe.log" 2>&1; then
    buildah_driver=vfs
  fi
  retire "$probe"
}

registry_label() {
  case $1 in
    buildkit) echo "docker push ($(docker info --format '{{.Driver}}' 2>/dev/null || echo '?'))" ;;
    skopeo) echo skopeo ;;
    *) label "$1" ;;
  esac
}

# --- measuring -------------------------------------------------------------------------------

clk_tck=$(getconf CLK_TCK)
# CPU seconds (user + system, its waited-for children included) of a running process.
cpu_of() {
  [[ -n $1 && -r /proc/$1/stat ]] || { echo 0; return 0; }
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  awk -v t="$clk_tck" '{ printf "%.3f", ($12 + $13 + $14 + $15) / t }' <<<"$stat"
}
# CPU seconds of this shell's waited-for children so far (the second line of `times`), in
# $children: `times` in a command substitution would speak of the subshell's children.
children=
children_cpu() {
  times >"$work/times"
  children=$(awk 'NR == 2 {
    n = split($1 " " $2, f, " "); s = 0
    for (i = 1; i <= n; i++) { split(f[i], p, "m"); s += p[1] * 60 + p[2] }
    printf "%.3f", s }' "$work/times")
}

# The timed command itself: wall time, and the CPU time of the client and of the tool's daemon
# (kbuildd, dockerd; none for buildah and skopeo) while it ran. Called by the tools' *_push and
# *_pull with the command, so that the untimed tagging before it stays outside. It runs inside an
# `if` (measure's), where errexit is off, so a failure is returned by hand.
elapsed=
cpu=
timed_step() {
  local daemon_before client_before start end
  daemon_before=$(cpu_of "$daemon_pid")
  children_cpu
  client_before=$children
  start=$EPOCHREALTIME
  "$@" || return
  end=$EPOCHREALTIME
  children_cpu
  elapsed=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
  cpu=$(awk -v d0="$daemon_before" -v d1="$(cpu_of "$daemon_pid")" -v c0="$client_before" \
    -v c1="$children" 'BEGIN { printf "%.3f", (d1 - d0) + (c1 - c0) }')
}

# measure TOOL push|pull RUN: runs it with its output in the log; records the wall time, the
# CPU time and for a push the megabytes of its layers as the registry holds them.
measure() {
  local builder=$1 kind=$2 run=$3 log mark extra='' mb=''
  log=$log_dir/$builder-$kind-$run.log
  daemon_pid=$(builder_do "$builder" daemon_pid)
  # What the load before it left to write back is written now, not during the timed command.
  sync
  mark=$(stat -c %s "$registry_log")
  if ! builder_do "$builder" "$kind" "$run" >"$log" 2>&1; then
    echo "failed: $builder $kind, run $run (output in $log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  if [[ $kind == push ]]; then
    # The push is checked where it went: its manifest and layers are in the registry, and no
    # blob was mounted from another repository instead of uploaded.
    mb=$(registry_manifest "bench/$builder-$run" | jq '[.layers[].size] | add / 1048576')
    if tail -c +"$((mark + 1))" "$registry_log" | grep -Eq '"POST [^ ]*mount=[^ ]* HTTP/[0-9.]+" 201'; then
      extra=" (a blob was mounted, not uploaded: this push is not comparable)"
    fi
    printf '%s\t%s\t%s\t%s\n' "$builder" push-mb "$run" "$mb" >>"$results"
  fi
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind" "$run" "$elapsed" >>"$results"
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind-cpu" "$run" "$cpu" >>"$results"
  printf '  %-11s %-4s run %d: %7.3f s, %6.2f s CPU%s\n' "$builder" "$kind" "$run" "$elapsed" "$cpu" "$extra"
}

wants buildah && pick_buildah_driver
start_registry
echo "registry: docker-registry on $registry, storage in $registry_dir/storage"

# The image every tool pulls: the same bytes for all, pushed once by skopeo (gzip as
# containers/image writes it).
pulled=$registry/bench/pulled:latest
private_cache skopeo copy --quiet --dest-tls-verify=false "docker-archive:$archive" "docker://$pulled" \
  >"$log_dir/pulled-push.log" 2>&1 || {
  echo "pushing the image to pull failed:" >&2
  tail -n 30 "$log_dir/pulled-push.log" >&2
  exit 1
}
pulled_mb=$(registry_manifest bench/pulled | jq '[.layers[].size] | add / 1048576')

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before ($(nproc) cores)"
declare -A labels
for run in $(seq "$runs"); do
  rotation "$run"
  for builder in "${order[@]}"; do
    builder_do "$builder" load
    [[ -n ${labels[$builder]:-} ]] || labels[$builder]=$(registry_label "$builder")
    measure "$builder" push "$run"
  done
  for builder in "${order[@]}"; do
    builder_do "$builder" pull_reset
    measure "$builder" pull "$run"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average after: $load_after"
stop_kbuildds
stop_dockerd

# --- the table -------------------------------------------------------------------------------

kinds=(push pull)
declare -A med
for builder in "${builders[@]}"; do
  for kind in push pull push-cpu pull-cpu push-mb; do med[$builder.$kind]=$(median "$builder" "$kind"); done
done

echo
printf 'image: the busybox base + %s MiB random + %s MiB words (uncompressed), fixed seeds;\n' \
  "$((image_mb / 2))" "$((image_mb / 2))"
printf 'docker-registry %s on 127.0.0.1, plain HTTP. pull: the image as skopeo pushed it (%.1f MiB gzip)\n' \
  "$(docker-registry --version 2>/dev/null | awk '{print $3}')" "$pulled_mb"
echo "median of $runs runs, seconds of the client command; load average $load_before before," \
  "$load_after after ($(nproc) cores)"
printf '%-22s %9s %9s %12s\n' builder push pull "pushed MiB"
for builder in "${builders[@]}"; do
  printf '%-22s %9s %9s %12.1f\n' "${labels[$builder]}" \
    "${med[$builder.push]}" "${med[$builder.pull]}" "${med[$builder.push-mb]}"
done
# kbuild against the fastest of the other tools, measurement by measurement.
others=()
for other in buildkit buildah skopeo; do wants "$other" && others+=("$other"); done
if wants kbuild && ((${#others[@]})); then
  printf '%-22s' "kbuild/best other"
  for kind in "${kinds[@]}"; do
    best='' best_builder=''
    for other in "${others[@]}"; do
      if [[ -z $best ]] || awk -v a="${med[$other.$kind]}" -v b="$best" 'BEGIN { exit !(a < b) }'; then
        best=${med[$other.$kind]} best_builder=$other
      fi
    done
    awk -v a="${med[kbuild.$kind]}" -v b="$best" -v o="${labels[$best_builder]%% *}" \
      'BEGIN { printf " %8.2fx (%s)", a / b, o }'
  done
  echo
fi
if wants kbuild && wants kbuild-base; then
  printf '%-22s' "kbuild/kbuild-base"
  for kind in "${kinds[@]}"; do
    awk -v a="${med[kbuild.$kind]}" -v b="${med[kbuild-base.$kind]}" \
      'BEGIN { if (b > 0) printf " %8.2fx", a / b; else printf " %9s", "-" }'
  done
  echo
fi
echo
echo "CPU seconds (client and daemon, user + system), median of $runs runs; CPU/wall near 1 is one"
echo "core busy, near $(nproc) all of them:"
printf '%-22s %9s %9s %9s %9s\n' builder "push CPU" "CPU/wall" "pull CPU" "CPU/wall"
for builder in "${builders[@]}"; do
  printf '%-22s' "${labels[$builder]}"
  for kind in "${kinds[@]}"; do
    awk -v c="${med[$builder.$kind-cpu]}" -v w="${med[$builder.$kind]}" \
      'BEGIN { printf " %9.2f %9.2f", c, (w > 0 ? c / w : 0) }'
  done
  echo
done
echo
echo "versions: $(kbuild_versions);" \
  "docker $("$docker_client" --version 2>/dev/null | awk '{print $3}' | tr -d ,);" \
  "$(buildah --version 2>/dev/null | awk '{print $1, $3}');" \
  "$(skopeo --version 2>/dev/null | awk '{print $1, $3}')"
[[ -n ${BENCH_LOG_DIR:-} ]] && echo "logs in $log_dir"
exit 0
