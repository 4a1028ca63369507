#!/usr/bin/env bash
# The two-platform benchmark: one image for linux/amd64 and linux/arm64 from one Dockerfile.
# kbuild, BuildKit (Debian's dockerd 20.10) and buildah build the same Dockerfile FROM the
# offline busybox bases of tests/integration/base_image.py, the amd64 one (the host's busybox)
# and the arm64 one (Debian's arm64 busybox-static, run by qemu-aarch64), loaded into each
# builder as kbuild-busybox-amd64 and kbuild-busybox-arm64 before anything is timed:
#
#   tool     a stage on the build platform (FROM --platform=$BUILDPLATFORM), the same for both
#            targets: a 200,000-iteration shell loop and sha256sum of 32 MiB, native
#   final    per target, FROM kbuild-busybox-$TARGETARCH: COPY --from=tool, COPY of a context
#            file, and a short RUN (uname -m > /arch), emulated for arm64
#
# For each builder it times:
#
#   cold     a fresh store with the bases loaded
#   warm     the same build again: everything cached
#   changed  the context file changed: each target's COPY and RUN again, the tool stage cached
#
# How each builds both platforms:
#
#   kbuild   one `kbuildctl build --platform linux/amd64,linux/arm64 -t NAME`: both targets on
#            one scheduler, the tool stage run once, an OCI index stored
#   buildah  one `buildah build --platform linux/amd64,linux/arm64 --manifest NAME`: a manifest
#            list. buildah 1.28 (Debian 12) sets no BUILDPLATFORM, so it is given as a build arg
#            (--build-arg BUILDPLATFORM=linux/amd64, the host's); and a stage with a FROM
#            --platform passes that platform on to later stages without one, so the final stage
#            says FROM --platform=$TARGETPLATFORM (what the others do anyway)
#   BuildKit two `DOCKER_BUILDKIT=1 docker build --platform P -t NAME-ARCH`, one after the other:
#            dockerd 20.10's builder takes one platform per build (a list is refused), so the
#            two builds are timed together
#
# Before anything is timed each builder's result is checked once, from a fresh store: each
# platform's image config says its architecture, its /arch says x86_64 or aarch64, and both
# have the same /tool.sum and the context's file. Only the client command is timed (not the
# daemons' start, nor the bases' load, nor buildah's removal of the previous manifest list).
# Each measurement runs BENCH_RUNS times, the builders taking turns, and the table shows the
# medians. Needs the host to run arm64 programs (qemu-user-static with binfmt-support, as
# scripts/setup-test-deps.sh installs them). Run as root from anywhere:
#
#   bash bench/platforms.sh
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
bench_prepare platforms.sh service/kbuildd service/kbuild-context-reader cli/kbuildctl engine/kbuild-exec
bench_need_arm64 platforms.sh

bench_init_workdir kplat

# --- the bases, the context and the check --------------------------------------------------------

archs=(amd64 arm64)
platforms=linux/amd64,linux/arm64
declare -A base_tar=([amd64]=$work/base-amd64.tar [arm64]=$work/base-arm64.tar)
python3 "$repo/tests/integration/base_image.py" "${base_tar[amd64]}" --tag kbuild-busybox-amd64 >/dev/null
python3 "$repo/tests/integration/base_image.py" "${base_tar[arm64]}" --tag kbuild-busybox-arm64 \
  --arch arm64 >/dev/null

ctx=$work/context
mkdir -p "$ctx"
# buildah 1.28 expands only global ARGs in a FROM's image name, and dockerd 20.10's BuildKit
# empties a platform argument declared there without a value: TARGETARCH, declared with itself
# as its value, is the target's architecture in all three.
cat >"$ctx/Dockerfile" <<'EOF'
ARG TARGETARCH=$TARGETARCH
FROM --platform=$BUILDPLATFORM kbuild-busybox-amd64 AS tool
RUN i=0; while [ $i -lt 200000 ]; do i=$((i + 1)); done; head -c 33554432 /dev/zero | sha256sum > /tool.sum
FROM --platform=$TARGETPLATFORM kbuild-busybox-$TARGETARCH
COPY --from=tool /tool.sum /tool.sum
COPY app.txt /app.txt
RUN uname -m > /arch && sha256sum /app.txt /tool.sum > /sums
EOF
echo "app 0" >"$ctx/app.txt"

# check.py ARCHIVE CONTEXT-FILE: the archive (an OCI layout or `docker save`'s format) holds one
# image per platform, amd64 and arm64, each of its config's architecture, with /arch x86_64 or
# aarch64, the same /tool.sum, and /app.txt as CONTEXT-FILE is.
cat >"$work/check.py" <<'PY'
import gzip, io, json, posixpath, sys, tarfile

archive, app = sys.argv[1], open(sys.argv[2], "rb").read()
with tarfile.open(archive) as tar:
    members = tar.getmembers()
    files = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in members if m.isfile()}
    # docker save writes a layer that two images share once, and a symlink to it for the other.
    for m in members:
        if m.issym():
            files[m.name.removeprefix("./")] = files[posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.linkname)).removeprefix("./")]

def blob(digest):
    return files["blobs/sha256/" + digest.split(":", 1)[1]]

def layer_file(layers, path):
    found = None
    for data in layers:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            for m in t.getmembers():
                if m.name.removeprefix("./").lstrip("/") == path and m.isfile():
                    found = t.extractfile(m).read()
    return found

images = []  # (config, layer blobs)
def walk(entries):
    for e in entries:
        doc = json.loads(blob(e["digest"]))
        if "manifests" in doc:
            walk(doc["manifests"])
        else:
            images.append((json.loads(blob(doc["config"]["digest"])), [blob(l["digest"]) for l in doc["layers"]]))
if "index.json" in files:
    walk(json.loads(files["index.json"])["manifests"])
else:  # docker save: manifest.json lists config and layer paths
    for e in json.loads(files["manifest.json"]):
        images.append((json.loads(files[e["Config"]]), [files[l] for l in e["Layers"]]))

machine = {"amd64": b"x86_64", "arm64": b"aarch64"}
seen, tools = {}, set()
for config, layers in images:
    arch = config["architecture"]
    got = (layer_file(layers, "arch") or b"").strip()
    if machine.get(arch) != got or layer_file(layers, "app.txt") != app:
        sys.exit(f"{archive}: the {arch} image has /arch {got!r} and /app.txt {layer_file(layers, 'app.txt')!r}")
    seen[arch] = got.decode()
    tools.add(layer_file(layers, "tool.sum"))
if sorted(seen) != ["amd64", "arm64"] or len(images) != 2:
    sys.exit(f"{archive}: images for {sorted(c['architecture'] for c, _ in images)}, not amd64 and arm64")
if len(tools) != 1 or None in tools:
    sys.exit(f"{archive}: the images' /tool.sum differ or are missing")
print(", ".join(f"{a}: /arch {m}" for a, m in sorted(seen.items())) + ", the same /tool.sum")
PY

# --- the builders ------------------------------------------------------------------------------

kbuild_reset() {
  kbuild_use "$1"
  stop_kbuildd
  retire "$kbuild_dir"
  mkdir -p "$kbuild_dir"
  echo '{}' >"$kbuild_dir/daemon.json"
  start_kbuildd --config "$kbuild_dir/daemon.json" --exec-helper "$kbuild_exec_bin"
  for arch in "${archs[@]}"; do kbuildctl load -i "${base_tar[$arch]}" >/dev/null; done
}
kbuild_before() { :; }
kbuild_build() {
  kbuild_use "$1"
  kbuildctl build --progress plain --platform "$platforms" -t bench-plat "$ctx"
}
# The stored index as an OCI archive.
kbuild_export() {
  kbuild_use "$1"
  kbuildctl save -o "$2" bench-plat
}

dockerd_dir=$work/dockerd
buildkit_reset() {
  stop_dockerd
  retire "$dockerd_dir"
  mkdir -p "$dockerd_dir/client-config"
  start_dockerd
  for arch in "${archs[@]}"; do docker load -i "${base_tar[$arch]}" >/dev/null; done
}
buildkit_before() { :; }
buildkit_build() {
  local arch
  for arch in "${archs[@]}"; do
    docker build --network host --progress plain --platform "linux/$arch" -t "bench-plat-$arch" "$ctx"
  done
}
buildkit_export() { docker save -o "$1" bench-plat-amd64 bench-plat-arm64; }

buildah_dir=$work/buildah
buildah_driver=${BENCH_BUILDAH_DRIVER:-}
buildah_load_bases() {
  local id arch
  for arch in "${archs[@]}"; do
    # buildah warns that the arm64 base is not the host's platform: true, and meant.
    id=$(buildah_in "$1" pull -q "docker-archive:${base_tar[$arch]}" 2>>"$log_dir/buildah-pull.log")
    buildah_in "$1" tag "$id" "kbuild-busybox-$arch"
  done
}
buildah_reset() {
  buildah_fresh "$buildah_dir"
  buildah_load_bases "$buildah_dir" >/dev/null
}
# --manifest adds to a list of that name if there is one: each build makes its own, as the
# others' tags replace theirs.
buildah_before() {
  if buildah_in "$buildah_dir" manifest exists bench-plat 2>/dev/null; then
    buildah_in "$buildah_dir" manifest rm bench-plat >/dev/null
  fi
}
buildah_bud() {
  local dir=$1
  shift
  buildah_in "$dir" build --isolation chroot --layers --pull=never --network host "$@"
}
buildah_build() {
  buildah_bud "$buildah_dir" --platform "$platforms" --build-arg BUILDPLATFORM=linux/amd64 \
    --manifest bench-plat "$ctx"
}
buildah_export() { buildah_in "$buildah_dir" manifest push -q --all bench-plat "oci-archive:$1"; }

# overlay (the kernel's) where it works, else vfs: a tiny RUN build tells.
pick_buildah_driver() {
  [[ -n $buildah_driver ]] && return 0
  local probe=$work/buildah-probe
  mkdir -p "$probe/context"
  printf 'FROM kbuild-busybox-amd64\nRUN echo probe > /f\n' >"$probe/context/Dockerfile"
  buildah_driver=overlay
  if ! { buildah_fresh "$probe/store" && buildah_load_bases "$probe/store" &&
    buildah_bud "$probe/store" -t probe "$probe/context"; } >"$log_dir/buildah-probe.log" 2>&1; then
    buildah_driver=vfs
  fi
  retire "$probe"
}

# --- measuring ---------------------------------------------------------------------------------

elapsed=

# measure BUILDER KIND RUN
measure() {
  local builder=$1 kind=$2 run=$3
  builder_do "$builder" before
  timed "$log_dir/$builder-$kind-$run.log" builder_do "$builder" build
  printf '%s\t%s\t%s\t%s\n' "$builder" "$kind" "$run" "$elapsed" >>"$results"
  printf '  %-9s %-8s run %d: %7.3f s\n' "$builder" "$kind" "$run" "$elapsed"
}

# One build from a fresh store, its result exported and checked.
check_builder() {
  local builder=$1 verdict
  builder_do "$builder" reset
  builder_do "$builder" before
  timed "$log_dir/$builder-check.log" builder_do "$builder" build
  builder_do "$builder" export "$work/check-$builder.tar" >"$log_dir/$builder-export.log" 2>&1
  verdict=$(python3 "$work/check.py" "$work/check-$builder.tar" "$ctx/app.txt")
  printf '  %-9s %s\n' "$builder" "$verdict"
}

wants buildah && pick_buildah_driver
echo "checking each builder's two images"
for builder in "${builders[@]}"; do check_builder "$builder"; done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before ($(nproc) cores)"
declare -A labels
for run in $(seq "$runs"); do
  rotation "$run"
  for builder in "${order[@]}"; do
    builder_do "$builder" reset
    [[ -n ${labels[$builder]:-} ]] || labels[$builder]=$(label "$builder")
    measure "$builder" cold "$run"
    measure "$builder" warm "$run"
    echo "app $builder $run" >>"$ctx/app.txt"
    measure "$builder" changed "$run"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_kbuildds
stop_dockerd

# --- the table ---------------------------------------------------------------------------------

echo
echo "linux/amd64 and linux/arm64 from one Dockerfile: a build-platform stage (shell loop, sha256sum"
echo "of 32 MiB) both targets share, then per target COPY --from, COPY of a context file and RUN"
echo "uname -m (arm64 under qemu-aarch64). kbuild and buildah: one build of both platforms; BuildKit"
echo "(dockerd 20.10, one platform per build): two builds in a row. Median of $runs runs, client wall"
echo "time in s; load average $load_before before, $load_after after ($(nproc) cores)"
printf '%-22s %9s %9s %9s\n' builder cold warm changed
for builder in "${builders[@]}"; do
  printf '%-22s' "${labels[$builder]}"
  for kind in cold warm changed; do printf ' %9s' "$(median "$builder" "$kind")"; done
  echo
done
for other in buildkit buildah; do
  if ! wants kbuild || ! wants "$other"; then continue; fi
  printf '%-22s' "kbuild/${labels[$other]%% *}"
  for kind in cold warm changed; do
    awk -v a="$(median kbuild "$kind")" -v b="$(median "$other" "$kind")" \
      'BEGIN { if (b > 0) printf " %8.2fx", a / b; else printf " %9s", "-" }'
  done
  echo
done
echo
echo "versions: $(kbuild_versions);" \
  "docker $("$docker_client" --version 2>/dev/null | awk '{print $3}' | tr -d ,);" \
  "$(buildah --version 2>/dev/null | awk '{print $1, $3}'); $(/usr/bin/qemu-aarch64-static --version | head -n1)"
[[ -n ${BENCH_LOG_DIR:-} ]] && echo "build logs in $log_dir"
exit 0
