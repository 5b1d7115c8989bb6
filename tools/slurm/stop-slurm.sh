#!/usr/bin/env bash
# Stops the daemons tools/slurm/start-slurm.sh started, newest first, each by the pid in
# its pid file (never by name). Jobs still running are killed with slurmd. Packages,
# configuration, the accounting database and the logs stay; start-slurm.sh brings the
# same cluster back.
#
#   tools/slurm/stop-slurm.sh                 all of them
#   tools/slurm/stop-slurm.sh slurmd munged   only these (tests stop what they started)
set -euo pipefail

RUN=/run/slurm-local

if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		exec sudo -n -- "$0" "$@"
	fi
	echo "stop-slurm: error: needs root or passwordless sudo" >&2
	exit 1
fi

exec 9>/run/slurm-local.lock
flock -w 600 9

# stop PIDFILE NAME: TERM, then KILL after 10 s, if the pid is still that program
stop() {
	local pidfile=$1 name=$2 pid
	pid=$(cat "$pidfile" 2>/dev/null) || return 0
	[[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
	echo "stop-slurm: stopping $name ($pid)"
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
		sleep 0.1
	done
	echo "stop-slurm: $name ($pid) ignored SIGTERM for 10 s, killing it" >&2
	kill -9 "$pid" 2>/dev/null || true
}

DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged) # dependents first
declare -A PIDFILES=([slurmd]=$RUN/slurmd.pid [slurmctld]=$RUN/slurmctld.pid
	[slurmdbd]=$RUN/slurmdbd.pid [mariadbd]=/run/mysqld/mysqld.pid [munged]=/run/munge/munged.pid)
wanted=("$@")
((${#wanted[@]})) || wanted=("${DAEMONS[@]}")
for name in "${wanted[@]}"; do
	[[ -n ${PIDFILES[$name]:-} ]] || {
		echo "stop-slurm: error: unknown daemon $name (known: ${DAEMONS[*]})" >&2
		exit 2
	}
done
for name in "${DAEMONS[@]}"; do
	if [[ " ${wanted[*]} " == *" $name "* ]]; then
		stop "${PIDFILES[$name]}" "$name"
	fi
done
