#!/usr/bin/env bash
# Bring up a throw-away one-node Slurm cluster on localhost for the test suite.
#
#   tests/slurm/up.sh     # exit 0: up (last line says so); 2: cannot run here (skip); 1: failed
#   export SLURM_CONF="${ADVLC_SLURM_DIR:-/tmp/advlc-slurm}/slurm.conf"   # for sbatch, squeue, ...
#   tests/slurm/down.sh
#
# Everything (config, munge key, state, logs, pid files) lives in $ADVLC_SLURM_DIR and
# /etc is not touched, so clients need SLURM_CONF. slurmd runs in its own UTS namespace
# so that jobs see another hostname ($ADVLC_SLURM_NODE) than the submitting host.
set -euo pipefail

DIR=${ADVLC_SLURM_DIR:-/tmp/advlc-slurm}
NODE=${ADVLC_SLURM_NODE:-advlc-node1}
PORT=${ADVLC_SLURM_PORT:-6817}          # slurmctld; slurmd gets PORT+1
MAXTIME=${ADVLC_SLURM_MAXTIME:-60}      # partition time limit, minutes (or UNLIMITED)
WAIT=${ADVLC_SLURM_TIMEOUT:-60}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

skip() { echo "slurm unavailable: $*" >&2; exit 2; }

[[ $(id -u) == 0 ]] || skip "tests/slurm/up.sh must run as root (installs packages, runs slurmd)"
# Unprivileged containers (default Docker seccomp) may forbid new namespaces.
unshare --uts true 2>/dev/null || skip "cannot create a UTS namespace for slurmd (unshare --uts not permitted)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || skip "Slurm is not installed and there is no apt-get to install it"
  echo "slurm up: installing slurm-wlm and munge (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  log=/tmp/advlc-slurm-apt.$$.log
  # Retry after an index refresh: fresh images often ship without package lists.
  { apt-get install -y -q --no-install-recommends slurm-wlm munge ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; }
  } >"$log" 2>&1 || skip "apt-get install slurm-wlm munge failed (see $log)"
  rm -f "$log"
fi

export SLURM_CONF=$DIR/slurm.conf
mkdir -p "$DIR"/{munge,state,spool,log}
# munged wants its socket dir (and parents) world-searchable but not writable by others.
chmod 755 "$DIR" "$DIR/munge"

# nproc obeys OMP_NUM_THREADS (set to 1 for test runs): count the CPUs this process may use.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat >"$SLURM_CONF.new" <<EOF
# Written by advlc tests/slurm/up.sh: one CPU-only node, no cgroups, no accounting.
ClusterName=advlc
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (BeginTime = requeue + cred_expire + 1 s;
# default 120, minimum 5).
AuthInfo=socket=$DIR/munge/munge.socket.2,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
# No systemd/cgroups in containers: track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# A job that becomes eligible later (a requeued job once its BeginTime passes) waits for the
# next periodic pass: by default up to 60 s (main loop) / 30 s (backfill). Make it ~1 s.
SchedulerParameters=sched_interval=1,bf_interval=1
# Reject at submit time what can never run (time over MaxTime, too many CPUs/memory), as
# many sites do, instead of leaving it PENDING forever (PartitionTimeLimit/PartitionConfig).
EnforcePartLimits=ALL
# The node description below is authoritative, whatever the test host's hardware.
SlurmdParameters=config_overrides
ReturnToService=2
# Ended jobs vanish from squeue/scontrol MinJobAge..MinJobAge+10 s after they end (the
# purge pass runs every max(10, MinJobAge) s); then "Invalid job id specified".
MinJobAge=5
KillWait=5
SlurmdTimeout=30
InactiveLimit=0
NodeName=$NODE NodeHostname=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=$MAXTIME State=UP
EOF

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null || true; }
# Running, and really that daemon (a stale pid file's pid may have been reused).
alive() { [[ -s $DIR/$1.pid && $(cat "/proc/$(cat "$DIR/$1.pid")/comm" 2>/dev/null) == "$1" ]]; }

# Idempotence: our cluster, running with this very config and a usable node, is left
# alone; anything else (half up, other settings) is restarted from scratch.
if alive munged && alive slurmctld && alive slurmd && cmp -s "$SLURM_CONF" "$SLURM_CONF.new" &&
   [[ $(node_state) =~ ^(idle|mixed|allocated)$ ]]; then
  rm -f "$SLURM_CONF.new"
  echo "slurm up: partition debug, node $NODE ($(node_state), already running; SLURM_CONF=$SLURM_CONF)"
  exit 0
fi
ADVLC_SLURM_DIR=$DIR "$HERE/down.sh" >/dev/null
mv "$SLURM_CONF.new" "$SLURM_CONF"
rm -rf "${DIR:?}"/state/* "${DIR:?}"/spool/* "${DIR:?}"/log/*   # no jobs, ids or logs from before
[[ -s $DIR/munge/munge.key ]] ||
  { (umask 077 && dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none); }

# From here on a failure stops whatever did start, so nothing lingers (logs stay).
die() { ADVLC_SLURM_DIR=$DIR "$HERE/down.sh" >/dev/null 2>&1 || true; echo "slurm up failed: $*" >&2; exit 1; }
why() { tail -q -n 1 "$DIR/log/$1.out" "$DIR/log/$1.log" 2>/dev/null | tail -n 1; }  # last word of a daemon

# The daemons detach themselves and write their own pid files (--pid-file, *PidFile above).
munged --socket="$DIR/munge/munge.socket.2" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
  </dev/null >>"$DIR/log/munged.out" 2>&1 || die "munged did not start: $(why munged)"
slurmctld -f "$SLURM_CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 ||
  die "slurmctld did not start: $(why slurmctld)"
# -N: the node name must not depend on the (namespaced) hostname.
# shellcheck disable=SC2016  # $1/$2 are expanded by the inner sh
unshare --uts -- sh -c 'hostname "$1" && exec slurmd -f "$2" -N "$1"' sh "$NODE" "$SLURM_CONF" \
  </dev/null >>"$DIR/log/slurmd.out" 2>&1 || die "slurmd did not start: $(why slurmd)"

state=
for ((i = 0; i < WAIT * 2; i++)); do
  state=$(node_state)
  if [[ $state == idle ]]; then
    echo "slurm up: partition debug, node $NODE (idle; SLURM_CONF=$SLURM_CONF)"
    exit 0
  fi
  # A daemon that dies on startup (port in use, bad config) fails fast, not after $WAIT s.
  for d in munged slurmctld slurmd; do
    if [[ -s $DIR/$d.pid ]] && ! alive "$d"; then
      die "$d exited: $(why "$d")"
    fi
  done
  sleep 0.5
done
die "node $NODE not idle after ${WAIT}s (state '${state:-no answer}'; logs in $DIR/log)"
