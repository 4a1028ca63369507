# shellcheck shell=bash disable=SC2154,SC2034  # variables come from the script that sources this
# Shared by the benchmarks: the temp dir, starting and stopping the builders' daemons, timing and
# cleanup on exit. Sourced first; bench_init_workdir makes the temp dir.

# --- the temp dir and what runs in it ---------------------------------------------------------

declare -A kbuildd_pids=() # by builder: kbuild, kbuild-base
dockerd_pid=

# Lazily unmounts every mount at or below $1, deepest first (overlay snapshots, dockerd's
# netns and shm mounts, buildah's layer mounts).
unmount_under() {
  local root=$1 points point _
  for _ in 1 2 3 4 5; do
    mapfile -t points < <(awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' \
      /proc/self/mountinfo | sort -r)
    ((${#points[@]})) || return 0
    for point in "${points[@]}"; do umount -l "$point" 2>/dev/null || true; done
  done
}

# Moves a store out of the way instead of deleting it: ext4 without a journal (as on these
# machines) passes over inodes freed in the last 1-5 minutes when it allocates new ones, so an
# `rm -rf` of 5,000 files just before a cold build slows that build's file creation. Retired
# stores go with the temp dir at exit.
retired=0
retire() {
  [[ -e $1 ]] || return 0
  unmount_under "$1"
  mkdir -p "$work/retired"
  mv "$1" "$work/retired/$((retired++))"
}

# A child that has exited stays a zombie until waited for, and kill -0 still reaches it.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# SIGTERM, up to 30 s to exit, then SIGKILL to the daemon's own session (it runs under setsid).
stop_pid() {
  local pid=$1 _
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    echo "pid $pid ignored SIGTERM for 30 s: killing its process group" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# The kbuildd of the kbuild last chosen with kbuild_use.
stop_kbuildd() {
  stop_pid "${kbuildd_pids[$kbuild_name]:-}"
  unset "kbuildd_pids[$kbuild_name]"
}

stop_kbuildds() {
  local name
  for name in "${!kbuildd_pids[@]}"; do
    stop_pid "${kbuildd_pids[$name]}"
    unset "kbuildd_pids[$name]"
  done
}

stop_dockerd() {
  stop_pid "$dockerd_pid"
  dockerd_pid=
  # dockerd stops its containerd on SIGTERM; one left behind (dockerd killed) is stopped here.
  local containerd_pid
  containerd_pid=$(cat "$work/dockerd/exec/containerd/containerd.pid" 2>/dev/null) || true
  if [[ -n $containerd_pid ]] && alive "$containerd_pid"; then
    kill -TERM "$containerd_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$containerd_pid" 2>/dev/null || true
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_kbuildds
  stop_dockerd
  unmount_under "$work"
  rm -rf "$work" || true
  exit "$status"
}
# The temp dir /tmp/PREFIX.XXXXXX, its logs and results, and cleanup of everything in it on any
# exit. Short on purpose: containerd's sockets live under dockerd's exec root, and a unix socket
# path has at most 107 bytes.
bench_init_workdir() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  # ext4's "top of directory hierarchy" flag: each store made in it (kbuild's root, dockerd's data
  # root, buildah's) lands in block groups of its own. Without a journal (as on these machines)
  # ext4 creates files slowly in groups where many were deleted in the last minutes, so whoever
  # followed a builder that deletes its working copies (buildah) paid for it: a cold build took
  # 4 s instead of 0.9. Elsewhere the flag changes nothing.
  chattr +T "$work" 2>/dev/null || true
  log_dir=${BENCH_LOG_DIR:-$work/logs}
  mkdir -p "$log_dir"
  results=$work/results.tsv
  : >"$results"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Waits up to 60 s for "$@" (after PID NAME LOG) to succeed while daemon PID lives; on failure
# prints the tail of its LOG.
wait_ready() {
  local pid=$1 name=$2 log=$3 _
  shift 3
  for _ in $(seq 300); do
    if ! alive "$pid"; then
      echo "$name exited before it was ready:" >&2
      tail -n 25 "$log" >&2
      exit 1
    fi
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$name was not ready within 60 s:" >&2
  tail -n 25 "$log" >&2
  exit 1
}

# --- the builders, timing ---------------------------------------------------------------------

apt_updated=0
apt_install() {
  if ((!apt_updated)); then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wants() { [[ " ${builders[*]} " == *" $1 "* ]]; }

# The builders of run RUN (1, 2, ...) in $order: the list turned by one place per run, so that
# none always follows the same one (buildah's deletions, or the other kbuild).
rotation() {
  local turn=$((($1 - 1) % ${#builders[@]}))
  order=("${builders[@]:$turn}" "${builders[@]:0:$turn}")
}

# Runs BUILDER's ACTION (reset, build) with the rest as arguments: BUILDER_ACTION, except that
# kbuild and kbuild-base share kbuild_ACTION, given the builder's name first.
builder_do() {
  local builder=$1 action=$2
  shift 2
  case $builder in
    kbuild | kbuild-base) "kbuild_$action" "$builder" "$@" ;;
    *) "${builder}_$action" "$@" ;;
  esac
}

# What both benchmarks start with: their settings (KBUILD_BUILD_DIR, KBUILD_BASELINE_BUILD_DIR,
# BENCH_RUNS, BENCH_BUILDERS), the root check, and the builders' programs. kbuild's are built
# with ninja when one of the targets given (paths in the build dir) is missing; docker.io and
# buildah are installed when missing.
bench_prepare() {
  local name=$1 target missing=0 builder
  local -a with_base=()
  shift
  build_dir=${KBUILD_BUILD_DIR:-build}
  base_build_dir=${KBUILD_BASELINE_BUILD_DIR:-}
  runs=${BENCH_RUNS:-3}
  read -r -a builders <<<"${BENCH_BUILDERS:-kbuild buildkit buildah}"
  # Debian's docker.io client: it has the classic `docker build` with DOCKER_BUILDKIT=1
  # (/usr/local/bin/docker may be a newer client without buildx, which refuses to build).
  docker_client=/usr/bin/docker
  if [[ $EUID -ne 0 ]]; then
    echo "$name: run as root (kbuildd, dockerd and buildah need it)" >&2
    exit 1
  fi
  [[ $build_dir == /* ]] || build_dir=$repo/$build_dir
  kbuild_build_dirs[kbuild]=$build_dir
  if [[ -n $base_build_dir ]]; then
    [[ $base_build_dir == /* ]] || base_build_dir=$repo/$base_build_dir
    # Never built here: ninja in that directory would rebuild it from its source tree as it is
    # now, which may well be the current kbuild, and the comparison would compare nothing.
    for target in "$@"; do
      if [[ ! -x $base_build_dir/$target ]]; then
        echo "$name: KBUILD_BASELINE_BUILD_DIR has no $target: build the baseline there first" >&2
        exit 1
      fi
    done
    kbuild_build_dirs[kbuild-base]=$base_build_dir
    # Right after kbuild unless BENCH_BUILDERS places it.
    if ! wants kbuild-base; then
      for builder in "${builders[@]}"; do
        with_base+=("$builder")
        [[ $builder == kbuild ]] && with_base+=(kbuild-base)
      done
      wants kbuild || with_base+=(kbuild-base)
      builders=("${with_base[@]}")
    fi
  elif wants kbuild-base; then
    echo "$name: BENCH_BUILDERS has kbuild-base but KBUILD_BASELINE_BUILD_DIR is not set" >&2
    exit 1
  fi
  for target in "$@"; do [[ -x $build_dir/$target ]] || missing=1; done
  if wants kbuild && ((missing)); then
    echo "building kbuild in $build_dir"
    [[ -f $build_dir/build.ninja ]] || meson setup "$build_dir" >/dev/null
    ninja -C "$build_dir" "$@" >/dev/null
  fi
  if wants buildkit && { [[ ! -x $docker_client ]] || ! command -v dockerd >/dev/null; }; then
    echo "installing docker.io"
    apt_install docker.io
  fi
  if wants buildah && ! command -v buildah >/dev/null; then
    echo "installing buildah"
    apt_install buildah
  fi
}

# kbuild's builders and their build directories: kbuild, and kbuild-base with a baseline.
declare -A kbuild_build_dirs=()

# Points kbuildctl, start_kbuildd and stop_kbuildd at kbuild builder NAME: its programs, and its
# private dir under the temp dir (store, socket, daemon.json), so that the two kbuilds share
# nothing but the machine.
kbuild_use() {
  local dir=${kbuild_build_dirs[$1]}
  kbuild_name=$1
  kbuildd_bin=$dir/service/kbuildd
  kbuildctl_bin=$dir/cli/kbuildctl
  kbuild_exec_bin=$dir/engine/kbuild-exec
  kbuild_reader_bin=$dir/service/kbuild-context-reader
  kbuild_dir=$work/$1
  kbuild_sock=$kbuild_dir/kbuild.sock
  # kbuildd.log for kbuild, kbuildd-base.log for kbuild-base.
  kbuild_log=$log_dir/kbuildd${1#kbuild}.log
}

kbuildctl() { "$kbuildctl_bin" --host "unix://$kbuild_sock" "$@"; }

# kbuild's "kbuildctl version ..." for the versions line; with a baseline, both kbuilds' and
# where each comes from (their versions may well be the same).
kbuild_versions() {
  local builder sep=
  if [[ -z ${kbuild_build_dirs[kbuild-base]:-} ]]; then
    "${kbuild_build_dirs[kbuild]}/cli/kbuildctl" --version 2>/dev/null | head -n1
    return 0
  fi
  for builder in kbuild kbuild-base; do
    printf '%s%s: %s (%s)' "$sep" "$builder" \
      "$("${kbuild_build_dirs[$builder]}/cli/kbuildctl" --version 2>/dev/null | head -n1)" \
      "${kbuild_build_dirs[$builder]}"
    sep='; '
  done
}

docker() {
  env -u DOCKER_HOST -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
    DOCKER_BUILDKIT=1 DOCKER_CONFIG="$dockerd_dir/client-config" \
    "$docker_client" -H "unix://$dockerd_dir/docker.sock" "$@"
}

buildah_in() {
  local dir=$1
  shift
  CONTAINERS_STORAGE_CONF=$dir/storage.conf \
    buildah --root "$dir/root" --runroot "$dir/run" --storage-driver "$buildah_driver" "$@"
}

buildah_fresh() {
  retire "$1"
  mkdir -p "$1"
  # Its own storage.conf, so that no system-wide one (mount_program, options) takes part.
  printf '[storage]\ndriver = "%s"\nrunroot = "%s/run"\ngraphroot = "%s/root"\n' \
    "$buildah_driver" "$1" "$1" >"$1/storage.conf"
}

label() {
  case $1 in
    kbuild) echo kbuild ;;
    kbuild-base) echo kbuild-base ;;
    buildkit) echo "BuildKit ($(docker info --format '{{.Driver}}' 2>/dev/null || echo '?'))" ;;
    buildah) echo "buildah ($buildah_driver)" ;;
  esac
}

# Runs "$@" with its output in $1 and sets $elapsed to its wall time in seconds.
timed() {
  local log=$1 start end
  shift
  start=$EPOCHREALTIME
  if ! "$@" >"$log" 2>&1; then
    echo "failed: $* (output in $log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  end=$EPOCHREALTIME
  elapsed=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
}

median() {
  awk -F'\t' -v b="$1" -v k="$2" '$1 == b && $2 == k { print $4 }' "$results" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) printf "%.3f", v[int((NR + 1) / 2)] }'
}

# The kbuildd of the kbuild chosen with kbuild_use on $kbuild_sock, with its store under
# $kbuild_dir (and any further flags), ready when it answers. The context reader is named so
# that each kbuild reads contexts with its own: kbuildd's default falls back to the installed one.
start_kbuildd() {
  setsid "$kbuildd_bin" --listen "$kbuild_sock" --root "$kbuild_dir/root" \
    --context-reader "$kbuild_reader_bin" "$@" </dev/null >>"$kbuild_log" 2>&1 &
  kbuildd_pids[$kbuild_name]=$!
  wait_ready "${kbuildd_pids[$kbuild_name]}" "kbuildd${kbuild_name#kbuild}" "$kbuild_log" \
    kbuildctl info
}

# A private dockerd under $dockerd_dir (and any further flags), ready when it answers.
start_dockerd() {
  setsid dockerd --bridge=none --iptables=false --ip6tables=false \
    --data-root "$dockerd_dir/data" --exec-root "$dockerd_dir/exec" \
    -H "unix://$dockerd_dir/docker.sock" --pidfile "$dockerd_dir/dockerd.pid" "$@" \
    </dev/null >>"$log_dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  wait_ready "$dockerd_pid" dockerd "$log_dir/dockerd.log" docker version
}

# `docker-registry serve` on 127.0.0.1 and a free port, with its storage in $registry_dir and its
# log in $registry_log (the caller sets both), as tests/integration/test_registry.py starts it.
# Another program may take the port between the probe and the registry's bind: then it tries
# another. Sets $registry (host:port) and $registry_pid.
start_registry() {
  local port secret _
  mkdir -p "$registry_dir/storage"
  secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  for _ in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # JSON is YAML.
    printf '{"version": 0.1, "log": {"level": "info"}, "storage": {"filesystem": {"rootdirectory": "%s"}}, "http": {"addr": "127.0.0.1:%s", "secret": "%s"}}\n' \
      "$registry_dir/storage" "$port" "$secret" >"$registry_dir/config.yml"
    : >"$registry_log"
    # REGISTRY_* variables would override the config.
    (
      while read -r var; do unset "$var"; done < <(compgen -e | grep '^REGISTRY_' || true)
      exec setsid docker-registry serve "$registry_dir/config.yml" </dev/null >"$registry_log" 2>&1
    ) &
    registry_pid=$!
    if registry_ready "$port"; then
      registry=127.0.0.1:$port
      return 0
    fi
  done
  echo "docker-registry found no free port" >&2
  exit 1
}
# Up to 60 s for the registry to listen on PORT. False when it lost the race for the port (it
# exits saying so); any other exit or a timeout ends the script.
registry_ready() {
  local _
  for _ in $(seq 300); do
    grep -q "listening on 127.0.0.1:$1" "$registry_log" && return 0
    if ! alive "$registry_pid"; then
      wait "$registry_pid" 2>/dev/null || true
      registry_pid=
      grep -q 'address already in use' "$registry_log" && return 1
      echo "docker-registry exited before it was ready:" >&2
      tail -n 25 "$registry_log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "docker-registry was not ready within 60 s:" >&2
  tail -n 25 "$registry_log" >&2
  exit 1
}

# --- other platforms ----------------------------------------------------------------------------

# For the benchmarks that build for linux/arm64 (emulation.sh, platforms.sh): no earlier kbuild
# to compare with, the host busybox for the amd64 base, and qemu-user-static registered with the
# F flag for the arm64 one, installed when missing. $1 names the script in the refusal.
bench_need_arm64() {
  if [[ -n ${KBUILD_BASELINE_BUILD_DIR:-} ]]; then
    echo "$1: KBUILD_BASELINE_BUILD_DIR is not supported here" >&2
    exit 1
  fi
  if [[ ! -x /bin/busybox ]]; then
    echo "installing busybox-static"
    apt_install busybox-static
  fi
  if ! grep -qs '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    echo "installing qemu-user-static and binfmt-support (arm64 programs need an emulator)"
    apt_install qemu-user-static binfmt-support
  fi
}
