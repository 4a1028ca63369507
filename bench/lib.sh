# Shared by the benchmarks: the temp dir, stopping daemons, cleanup on exit. Sourced after
# `work_prefix` is set (a short name: the temp dir's path must leave room for unix sockets).

# --- the temp dir and what runs in it ---------------------------------------------------------

# Short on purpose: containerd's sockets live under dockerd's exec root, and a unix socket path
# has at most 107 bytes.
work=$(mktemp -d "/tmp/${work_prefix:?}.XXXXXX")
log_dir=${BENCH_LOG_DIR:-$work/logs}
mkdir -p "$log_dir"
results=$work/results.tsv
: >"$results"
kbuildd_pid=
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

stop_kbuildd() {
  stop_pid "$kbuildd_pid"
  kbuildd_pid=
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
  stop_kbuildd
  stop_dockerd
  unmount_under "$work"
  rm -rf "$work" || true
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

