#!/usr/bin/env bash
# kbuild's cold start and idle memory as the Debian package runs it: the .deb of this checkout
# (tests/system/package_deb.sh: built, or taken from its cache) installed in a booted systemd
# (tests/system/nspawn.sh: the host's root under systemd-nspawn) and kbuild.socket enabled. Then,
# RUNS times: kbuild.service stopped, one `kbuildctl info` timed (the socket starts kbuildd, which
# answers: cold start to answer), and kbuildd's resident memory read once it is idle. Prints the
# medians (and min/max) of both. Needs root and systemd-container.
#
#   bash bench/coldstart.sh [RUNS]          (default 11)
#
# "Cold" is a fresh process, not a cold disk: the binaries and libraries are in the page cache
# after the first run (dropping it would slow every other process on the machine).
set -euo pipefail

runs=${1:-11}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "usage: bench/coldstart.sh [RUNS]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)

if [[ ${KBUILD_SYSTEM_TEST:-} != 1 ]]; then
  deb=$("$project/tests/system/package_deb.sh")
  echo "coldstart: $(basename "$deb"), $runs runs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  cd "$project"
  exec tests/system/nspawn.sh --bind="$(dirname "$deb")" -- env COLDSTART_DEB="$deb" bash bench/coldstart.sh "$runs"
fi

# Inside the container (nspawn.sh sets KBUILD_SYSTEM_TEST=1).
export DEBIAN_FRONTEND=noninteractive
if dpkg-query -W -f='${Status}' kbuild 2>/dev/null | grep -q '^install'; then
  # postrm removes /var/lib/kbuild, which nspawn.sh made a tmpfs mount point; a fresh tmpfs
  # after (the store's overlayfs cannot live on the container's overlayfs /var).
  systemctl stop kbuild.socket kbuild.service
  umount /var/lib/kbuild
  apt-get purge -y -qq kbuild >/dev/null
  mkdir -p /var/lib/kbuild
  mount -t tmpfs -o mode=0700 tmpfs /var/lib/kbuild
fi
# An earlier `meson install` under /usr/local would shadow the package's units.
rm -f /usr/local/lib/systemd/system/kbuild.service /usr/local/lib/systemd/system/kbuild.socket
apt-get install -y -qq --no-install-recommends "$COLDSTART_DEB" >/dev/null
systemctl daemon-reload
systemctl enable --now kbuild.socket >/dev/null 2>&1

median() { sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s (min %s, max %s)", m, v[1], v[NR] }'; }

starts=() rss=() anon=() pss=() warm=()
for ((i = 0; i < runs; i++)); do
  # reset-failed: systemd's start rate limit (5 starts in 10 s) would fail the socket otherwise.
  systemctl stop kbuild.service 2>/dev/null
  systemctl reset-failed kbuild.service
  begin=$(date +%s%N)
  /usr/bin/kbuildctl info >/dev/null
  end=$(date +%s%N)
  starts+=($(((end - begin) / 1000000)))
  # A second call on the running daemon: the client's own share of the time.
  begin=$(date +%s%N)
  /usr/bin/kbuildctl info >/dev/null
  end=$(date +%s%N)
  warm+=($(((end - begin) / 1000000)))
  sleep 1
  pid=$(systemctl show -p MainPID --value kbuild.service)
  rss+=($(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"))
  anon+=($(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status"))
  pss+=($(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup"))
done

echo "cold start to answer (kbuildctl info, ms): $(printf '%s\n' "${starts[@]}" | median)"
echo "warm kbuildctl info (ms):                  $(printf '%s\n' "${warm[@]}" | median)"
echo "idle kbuildd VmRSS (kB):                   $(printf '%s\n' "${rss[@]}" | median)"
echo "idle kbuildd RssAnon (kB):                 $(printf '%s\n' "${anon[@]}" | median)"
echo "idle kbuildd Pss (kB):                     $(printf '%s\n' "${pss[@]}" | median)"
# Where the resident pages are, once: the mappings of the last run's kbuildd by Rss.
echo "idle kbuildd's largest mappings (Rss kB):"
awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6) ? $6 : "[anon]" } /^Rss:/ { rss[name] += $2 }
     END { for (n in rss) print rss[n], n }' "/proc/$pid/smaps" | sort -rn | head -n 8 | sed 's/^/  /'
systemctl stop kbuild.service kbuild.socket
