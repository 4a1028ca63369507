#!/bin/bash
# Runs one command as root inside a booted systemd: a `systemd-nspawn --boot` container of the
# host's own root, and exits with the command's status after the container has powered off.
#
#   tests/system/nspawn.sh [--bind=DIR]... [--timeout=SECONDS] -- COMMAND [ARG]...
#
# The container: / is a tmpfs (--volatile=yes); /etc, /usr and /var are overlays of the host's
# with throw-away upper dirs; the project tree and every --bind=DIR are bind-mounted at the same
# paths; no network (--private-network), so the host's enabled services cannot take its ports.
# It boots a target of its own (basic.target plus one oneshot service) instead of the host's
# default, runs COMMAND from the caller's working directory, writes its output and status to a
# bind-mounted directory, and powers off. machinectl is not needed (no systemd-machined here).
# Needs root and systemd-container (systemd-nspawn).
set -euo pipefail

timeout=600
binds=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bind=*) binds+=("${1#--bind=}") ;;
    --timeout=*) timeout="${1#--timeout=}" ;;
    --) shift; break ;;
    *) echo "nspawn.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if ! command -v systemd-nspawn >/dev/null; then
  echo "nspawn.sh: systemd-nspawn is not installed (package systemd-container): skipped" >&2
  exit 77
fi
if [[ $# -eq 0 ]]; then
  echo "usage: nspawn.sh [--bind=DIR]... [--timeout=SECONDS] -- COMMAND [ARG]..." >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then echo "nspawn.sh: needs root" >&2; exit 2; fi
command -v systemd-nspawn >/dev/null || { echo "nspawn.sh: systemd-nspawn missing (apt-get install systemd-container)" >&2; exit 2; }

project=$(cd "$(dirname "$0")/../.." && pwd)
machine="kbuild-test-$$-$RANDOM"
work=$(mktemp -d /tmp/kbuild-nspawn.XXXXXX)
nspawn_pid=""

cgroup_dirs=()

# Removes a cgroup tree made for the container, killing what is left in it.
remove_cgroup_tree() {
  local dir=$1 round
  [[ -d "$dir" ]] || return 0
  for round in 1 2 3 4 5 6 7 8 9 10; do
    local pids
    pids=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    [[ -z "$pids" ]] && break
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
}

cleanup() {
  if [[ -n "$nspawn_pid" ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # The container's init is nspawn's child; killing it ends the whole pid namespace.
    for init in $(pgrep -P "$nspawn_pid" || true); do kill -KILL "$init" 2>/dev/null || true; done
    sleep 1
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  local dir
  for dir in "${cgroup_dirs[@]}"; do remove_cgroup_tree "$dir"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work"/{etc,usr,var,io}
units="$work/etc/systemd/system"
mkdir -p "$units"
cat >"$units/kbuild-system-test.target" <<UNIT
[Unit]
Description=kbuild system test
Requires=basic.target kbuild-system-test.service
After=basic.target
AllowIsolate=yes
UNIT
cat >"$units/kbuild-system-test.service" <<UNIT
[Unit]
Description=kbuild system test command
After=basic.target dbus.socket
Wants=dbus.socket
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/bash /run/kbuild-io/command.sh
UNIT

{
  echo '#!/bin/bash'
  printf 'cd %q || exit 1\n' "$PWD"
  printf 'export KBUILD_SYSTEM_TEST=1 PATH=%q\n' "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  printf '%q ' "$@"
  echo '>/run/kbuild-io/output 2>&1'
  echo 'echo $? >/run/kbuild-io/status.tmp && mv /run/kbuild-io/status.tmp /run/kbuild-io/status'
  echo 'exit 0'
} >"$work/io/command.sh"

bind_args=(--bind="$project" --bind="$work/io:/run/kbuild-io")
for dir in "${binds[@]}"; do bind_args+=(--bind="$dir"); done

# The v1 cgroup hierarchies (a host whose PID 1 is not systemd, as in CI containers): nspawn
# mounts them read-only inside, so the container's systemd could not apply MemoryMax, TasksMax
# or CPUQuota. The container gets a cgroup of its own in each hierarchy (its cgroup namespace
# root, removed afterwards, so nothing it makes lands in the host's), and a small PID 1 makes the
# memory, pids and cpu hierarchies writable before it execs systemd.
v1_controllers=()
if [[ -d /sys/fs/cgroup/memory && ! -d /run/systemd/system ]]; then
  while IFS=: read -r _ controllers path; do
    case "$controllers" in
      "") hierarchy=unified ;;
      name=systemd) hierarchy=systemd ;;
      memory|pids|cpu) hierarchy=$controllers; v1_controllers+=("$controllers") ;;
      *) continue ;;
    esac
    [[ -d "/sys/fs/cgroup/$hierarchy" ]] || continue
    cgroup_dirs+=("/sys/fs/cgroup/$hierarchy${path%/}/$machine")
  done </proc/self/cgroup
fi
for dir in "${cgroup_dirs[@]}"; do mkdir "$dir"; done

unit_args=(--register=no)
# Without systemd on the host there is nobody to ask for a scope: stay in our own cgroup.
[[ -d /run/systemd/system ]] || unit_args+=(--keep-unit)

init_script="$work/io/init.sh"
{
  echo '#!/bin/bash'
  for controller in "${v1_controllers[@]}"; do
    echo "mount -o remount,bind,rw /sys/fs/cgroup/$controller"
  done
  echo 'exec /lib/systemd/systemd systemd.unit=kbuild-system-test.target'
} >"$init_script"

(
  for dir in "${cgroup_dirs[@]}"; do echo "$BASHPID" >"$dir/cgroup.procs"; done
  exec systemd-nspawn --quiet --directory=/ --volatile=yes \
    --machine="$machine" "${unit_args[@]}" --link-journal=no --private-network \
    --overlay="/etc:$work/etc:/etc" --overlay="/usr:$work/usr:/usr" --overlay="/var:$work/var:/var" \
    --tmpfs=/var/lib/kbuild \
    "${bind_args[@]}" \
    /bin/bash /run/kbuild-io/init.sh
) </dev/null >"$work/console" 2>&1 &
nspawn_pid=$!

deadline=$((SECONDS + timeout))
while kill -0 "$nspawn_pid" 2>/dev/null; do
  if [[ $SECONDS -ge $deadline ]]; then
    echo "nspawn.sh: the container did not power off within ${timeout}s; its console:" >&2
    tail -50 "$work/console" >&2
    exit 124
  fi
  sleep 0.2
done
wait "$nspawn_pid" || true
nspawn_pid=""

if [[ ! -f "$work/io/status" ]]; then
  echo "nspawn.sh: the command did not run; the container's console:" >&2
  cat "$work/console" >&2
  exit 125
fi
cat "$work/io/output"
exit "$(cat "$work/io/status")"
