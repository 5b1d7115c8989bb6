#!/usr/bin/env bash
# A single-node SLURM cluster on 127.0.0.1, for tests/test_slurm.py and for trying
# profiles/slurm on one machine. Debian 12 / Ubuntu packages, no systemd: the daemons
# are started directly, each with a pid file this script and stop-slurm.sh go by.
#
#   tools/slurm/start-slurm.sh     install what is missing, start what is not running,
#                                  wait until the node is idle and sacct answers
#   tools/slurm/stop-slurm.sh      stop every daemon started here
#
# Idempotent: a second call with everything up only checks and returns; a daemon that
# died is started again; a changed machine (CPUs, memory, host name) rewrites the
# configuration and restarts the SLURM daemons. Needs root; re-runs itself under
# `sudo -n` when that works. Exits 3, touching nothing, when /etc/slurm holds a
# configuration it did not write: that machine has a SLURM of its own.
#
# Accounting (slurmdbd + MariaDB) is not optional: snakemake-executor-plugin-slurm polls
# job states with sacct whenever the binary exists, and waits forever when accounting
# is off. MariaDB listens on its Unix socket only; slurmdbd logs in through it as the
# OS user slurm (unix_socket authentication), so there is no password anywhere.
set -euo pipefail

CLUSTER=imgprep
ACCOUNT=imgprep
PARTITION=main
LOGS=/var/log/slurm-local
RUN=/run/slurm-local
STATE=/var/lib/slurm-local
CONF_DIR=/etc/slurm # where srun/sbatch look when SLURM_CONF is unset (jobs drop it)
DB_SOCKET=/run/mysqld/mysqld.sock
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
MARK="# Written by tools/slurm/start-slurm.sh"

say() { echo "start-slurm: $*"; }
die() {
	echo "start-slurm: error: $*" >&2
	exit 1
}
# die with the last lines of the log that tells why
die_with_log() {
	local message=$1 log=$2
	echo "start-slurm: error: $message (log: $log)" >&2
	if [[ -s $log ]]; then tail -n 25 "$log" | sed 's/^/    /' >&2; fi
	exit 1
}

if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		exec sudo -n -- "$0" "$@"
	fi
	die "needs root or passwordless sudo (it installs packages and starts daemons)"
fi

# A configuration of someone else's is a real cluster's: never overwrite it.
for conf in "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf"; do
	if [[ -s $conf ]] && ! grep -qF "$MARK" "$conf"; then
		echo "start-slurm: $conf exists and is not ours: this machine has its own SLURM" >&2
		exit 3
	fi
done

# One start at a time (two test runs at once): the second waits, then finds all up. The
# daemons are started with fd 9 closed (9>&-), or they would hold the lock for good.
exec 9>/run/slurm-local.lock
flock -w 600 9 || die "another start-slurm.sh held /run/slurm-local.lock for 10 minutes"

mkdir -p "$LOGS"
HOST=$(hostname -s)
# The daemons bind to what the host name resolves to (NoInAddrAny), which keeps them on
# loopback where the name is 127.x (/etc/hosts); elsewhere they must listen everywhere.
LISTEN=NoCtldInAddrAny,NoInAddrAny
address=$(getent ahostsv4 "$HOST" | awk 'NR == 1 {print $1}')
if [[ $address != 127.* ]]; then
	LISTEN=
	say "warning: $HOST resolves to ${address:-nothing}, so slurmctld, slurmd and slurmdbd" \
		"listen on all interfaces (ports 6817-6819); '127.0.1.1 $HOST' in /etc/hosts avoids it"
fi

# ---------------------------------------------------------------- packages
install_packages() {
	local missing=() package
	for package in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' ||
			missing+=("$package")
	done
	((${#missing[@]})) || return 0
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
	say "installing ${missing[*]} (log: $LOGS/apt.log)"
	# services must not start from the packages' maintainer scripts: we start them
	local policy=/usr/sbin/policy-rc.d own_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
	fi
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends
		-o DPkg::Lock::Timeout=300)
	local ok=1
	if ! "${apt[@]}" "${missing[@]}" >>"$LOGS/apt.log" 2>&1; then
		# stale or empty package lists: refresh once and retry
		apt-get update >>"$LOGS/apt.log" 2>&1 && "${apt[@]}" "${missing[@]}" \
			>>"$LOGS/apt.log" 2>&1 || ok=0
	fi
	((own_policy)) && rm -f "$policy"
	((ok)) || die_with_log "apt-get could not install ${missing[*]}" "$LOGS/apt.log"
}

# ---------------------------------------------------------------- configuration
# Memory SLURM may hand out: 90 % of the machine (or of its cgroup limit), the rest is
# for the daemons and the OS.
node_memory_mb() {
	local total_kb limit
	total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
	local mb=$((total_kb / 1024))
	if [[ -r /sys/fs/cgroup/memory.max ]]; then
		limit=$(cat /sys/fs/cgroup/memory.max)
		if [[ $limit =~ ^[0-9]+$ ]] && ((limit / 1048576 < mb)); then
			mb=$((limit / 1048576))
		fi
	fi
	echo $((mb * 9 / 10))
}

slurm_conf() {
	local cpus memory
	cpus=$(nproc)
	memory=$(node_memory_mb)
	cat <<EOF
$MARK (rewritten when the machine changes).
# One node, this machine, on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
${LISTEN:+CommunicationParameters=$LISTEN}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# no cgroups in a container: plain process tracking, no binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MailProg=/bin/true
# a job asking for more than the node has is refused at sbatch, not left pending forever
EnforcePartLimits=ALL
# without a default every job that names no memory would take the whole node
DefMemPerCPU=$((memory / cpus))
# trust this file over what slurmd detects (a container may see the host's cores)
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# sacct shows sbatch --comment (the plugin's rule_<rule>_wildcards_<values>)
AccountingStoreFlags=job_comment
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf() {
	cat <<EOF
$MARK.
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=6819
${LISTEN:+CommunicationParameters=$LISTEN}
SlurmUser=slurm
LogFile=$LOGS/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
# "localhost" is MariaDB's Unix socket; user slurm authenticates as the OS user
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db
EOF
}

# Replaces $2 by the output of $1 when it differs; returns 0 when it changed.
write_if_changed() {
	local generate=$1 path=$2 mode=$3 owner=$4
	local temp
	temp=$(mktemp "$path.XXXXXX")
	"$generate" >"$temp"
	chmod "$mode" "$temp"
	chown "$owner" "$temp"
	if cmp -s "$temp" "$path"; then
		rm -f "$temp"
		return 1
	fi
	mv -f "$temp" "$path"
	return 0
}

# ---------------------------------------------------------------- processes
# The process of a pid file, if it is still the named program.
running() {
	local pidfile=$1 name=$2 pid
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]
}

# wait_until SECONDS NAME PIDFILE LOG COMMAND...: poll COMMAND until it succeeds; give up
# early when daemon NAME has exited (PIDFILE empty: no such check)
wait_until() {
	local limit=$1 name=$2 pidfile=$3 log=$4
	shift 4
	local start=$SECONDS
	until "$@" >/dev/null 2>&1; do
		((SECONDS - start < limit)) || die_with_log "$name not ready after ${limit}s" "$log"
		# a few seconds' grace for a daemon to fork and write its pid file
		if [[ -n $pidfile ]] && ((SECONDS - start >= 3)) && ! running "$pidfile" "$name"; then
			die_with_log "$name exited" "$log"
		fi
		sleep 0.2
	done
}

stop_pidfile() {
	local pidfile=$1 name=$2 pid
	running "$pidfile" "$name" || return 0
	pid=$(cat "$pidfile")
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
	if running /run/munge/munged.pid munged && munge_works; then
		return 0
	fi
	local log=/var/log/munge/munged.log
	install -d -o munge -g munge -m 0755 /run/munge
	install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
	if [[ ! -s /etc/munge/munge.key ]]; then
		runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key ||
			die "could not create /etc/munge/munge.key"
	fi
	chown munge:munge /etc/munge/munge.key
	chmod 0400 /etc/munge/munge.key
	say "starting munged (log: $log)"
	touch "$log"
	chown munge:munge "$log"
	local errors
	# --force: a stale socket from a killed munged is removed, not an error
	errors=$(runuser -u munge -- /usr/sbin/munged --force 2>&1 9>&-) ||
		die_with_log "munged did not start: $errors" "$log"
	wait_until 20 munged /run/munge/munged.pid "$log" munge_works
}

database_answers() {
	mariadb-admin --protocol=socket --socket="$DB_SOCKET" ping
}

start_mariadb() {
	local log=$LOGS/mariadb.log
	if ! running /run/mysqld/mysqld.pid mariadbd; then
		install -d -o mysql -g mysql -m 0755 /run/mysqld
		touch "$log"
		chown mysql:mysql "$log"
		if [[ ! -d /var/lib/mysql/mysql ]]; then
			say "initialising MariaDB in /var/lib/mysql (log: $log)"
			mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$log" 2>&1 ||
				die_with_log "mariadb-install-db failed" "$log"
		fi
		say "starting mariadbd, Unix socket only (log: $log)"
		setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking \
			--socket="$DB_SOCKET" --pid-file=/run/mysqld/mysqld.pid --log-error="$log" \
			--innodb-lock-wait-timeout=900 </dev/null >>"$log" 2>&1 9>&- &
	fi
	wait_until 60 mariadbd /run/mysqld/mysqld.pid "$log" database_answers
	mariadb --protocol=socket --socket="$DB_SOCKET" -u root <<'EOF' >>"$log" 2>&1 ||
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
		die_with_log "could not create the database user slurm" "$log"
}

prepare_slurm_dirs() {
	install -d -o slurm -g slurm -m 0755 "$RUN" "$STATE" "$STATE/slurmctld"
	install -d -o root -g root -m 0755 "$STATE/slurmd"
	local file
	for file in slurmctld.log slurmdbd.log; do
		touch "$LOGS/$file"
		chown slurm:slurm "$LOGS/$file"
	done
}

start_slurmdbd() {
	local log=$LOGS/slurmdbd.log
	if ! running "$RUN/slurmdbd.pid" slurmdbd; then
		say "starting slurmdbd (log: $log)"
		/usr/sbin/slurmdbd >>"$log" 2>&1 9>&- || die_with_log "slurmdbd did not start" "$log"
	fi
	# sacctmgr answers once slurmdbd is connected to the database
	wait_until 60 slurmdbd "$RUN/slurmdbd.pid" "$log" sacctmgr -n -P list cluster format=cluster
}

start_slurmctld() {
	local log=$LOGS/slurmctld.log
	if ! running "$RUN/slurmctld.pid" slurmctld; then
		say "starting slurmctld (log: $log)"
		/usr/sbin/slurmctld >>"$log" 2>&1 9>&- || die_with_log "slurmctld did not start" "$log"
	fi
	wait_until 60 slurmctld "$RUN/slurmctld.pid" "$log" scontrol ping
}

start_slurmd() {
	local log=$LOGS/slurmd.log
	if ! running "$RUN/slurmd.pid" slurmd; then
		say "starting slurmd (log: $log)"
		/usr/sbin/slurmd >>"$log" 2>&1 9>&- || die_with_log "slurmd did not start" "$log"
	fi
}

# ---------------------------------------------------------------- accounting
# Each sacctmgr call costs ~0.4 s, so read everything once and add only what is missing.
ensure_accounting() {
	local log=$LOGS/slurmdbd.log
	if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
		sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
			die_with_log "could not register cluster $CLUSTER" "$log"
	fi
	local associations defaults user users=(root)
	[[ -n ${SUDO_USER:-} && $SUDO_USER != root ]] && users+=("$SUDO_USER")
	associations=$(sacctmgr -n -P list association cluster="$CLUSTER" format=account,user)
	if ! grep -qx "$ACCOUNT|" <<<"$associations"; then
		sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
			description="imgprep workflow runs" organization=imgprep >/dev/null ||
			die_with_log "could not add account $ACCOUNT" "$log"
	fi
	defaults=$(sacctmgr -n -P list user format=user,defaultaccount)
	for user in "${users[@]}"; do
		if ! grep -qx "$ACCOUNT|$user" <<<"$associations"; then
			sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null ||
				die_with_log "could not add user $user to account $ACCOUNT" "$log"
		fi
		if ! grep -qx "$user|$ACCOUNT" <<<"$defaults"; then
			sacctmgr -i modify user "$user" set defaultaccount="$ACCOUNT" >/dev/null ||
				die_with_log "could not make $ACCOUNT the default account of $user" "$log"
		fi
	done
}

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1; }

node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

wait_for_node() {
	local deadline=$((SECONDS + 60)) resumed=0 state
	until node_usable; do
		state=$(node_state)
		# down/drained after a restart or a changed config: ask once for it back
		if ((! resumed)) && [[ $state =~ ^(down|drained|draining) ]]; then
			scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
			resumed=1
		fi
		if ((SECONDS >= deadline)); then
			local message="node $HOST is '${state:-absent}', not idle, after 60s"
			die_with_log "$message (see also $LOGS/slurmctld.log)" "$LOGS/slurmd.log"
		fi
		sleep 0.3
	done
}

# ---------------------------------------------------------------- main
install_packages
mkdir -p "$CONF_DIR"
changed=()
write_if_changed slurm_conf "$CONF_DIR/slurm.conf" 0644 root:root && changed+=(slurm.conf)
write_if_changed slurmdbd_conf "$CONF_DIR/slurmdbd.conf" 0600 slurm:slurm &&
	changed+=(slurmdbd.conf)
if ((${#changed[@]})); then
	say "wrote ${changed[*]} in $CONF_DIR; restarting the SLURM daemons"
	stop_pidfile "$RUN/slurmd.pid" slurmd
	stop_pidfile "$RUN/slurmctld.pid" slurmctld
	stop_pidfile "$RUN/slurmdbd.pid" slurmdbd
fi
prepare_slurm_dirs
start_munge
start_mariadb
start_slurmdbd
ensure_accounting
start_slurmctld
start_slurmd
wait_for_node
wait_until 30 sacct "" "$LOGS/slurmdbd.log" sacct -n -X -S now-1hours
say "cluster $CLUSTER up: node $HOST $(node_state), partition $PARTITION, logs in $LOGS"
