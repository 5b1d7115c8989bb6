#!/usr/bin/env bash
# Debian's chromium, for tests/test_report.py (a headless browser renders the report).
#
#   tools/chromium/install.sh      install chromium when missing; print its path
#
# Idempotent: with chromium installed it only prints the path. Needs root to install;
# re-runs itself under `sudo -n` when that works. The packages as
# tools/slurm/start-slurm.sh installs SLURM's: apt-get, no recommends, package lists
# refreshed once when stale.
set -euo pipefail

PACKAGES=(chromium)
LOG=/var/log/imgprep-chromium-apt.log

say() { echo "install-chromium: $*"; }
die() {
	echo "install-chromium: error: $*" >&2
	exit 1
}

found() {
	local dir
	for dir in /usr/bin /usr/lib/chromium; do
		if [[ -x $dir/chromium ]]; then
			echo "$dir/chromium"
			return 0
		fi
	done
	return 1
}

if found >/dev/null; then
	found
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		exec sudo -n -- "$0" "$@"
	fi
	die "chromium is missing, and installing it needs root or passwordless sudo"
fi
command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get to install it"

# one install at a time (two test runs at once): the second waits, then finds it
exec 9>/run/imgprep-chromium.lock
flock -w 600 9 || die "another install held /run/imgprep-chromium.lock for 10 minutes"
if found >/dev/null; then
	found
	exit 0
fi

say "installing ${PACKAGES[*]} (log: $LOG)" >&2
apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends
	-o DPkg::Lock::Timeout=300)
if ! "${apt[@]}" "${PACKAGES[@]}" >>"$LOG" 2>&1; then
	# stale or empty package lists: refresh once and retry
	if ! { apt-get update >>"$LOG" 2>&1 && "${apt[@]}" "${PACKAGES[@]}" >>"$LOG" 2>&1; }; then
		tail -n 25 "$LOG" | sed 's/^/    /' >&2
		die "apt-get could not install ${PACKAGES[*]} (log: $LOG)"
	fi
fi
found || die "apt-get installed ${PACKAGES[*]}, but no chromium binary is there"
