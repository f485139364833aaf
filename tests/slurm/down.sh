#!/usr/bin/env bash
# Stop the daemons tests/slurm/up.sh started, found by their pid files, and any jobs
# still running under them; nothing else is touched.
set -euo pipefail

DIR=${ADVLC_SLURM_DIR:-/tmp/advlc-slurm}
WAIT=${ADVLC_SLURM_TIMEOUT:-30}

# A pid file can outlive its daemon and its pid be reused: only trust it when the
# process there is the daemon we expect.
ours() { [[ -s $DIR/$1.pid ]] && pid=$(cat "$DIR/$1.pid") && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]; }

any_alive() { local p; for p; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

stop() {  # stop <pid>...: TERM, wait, then KILL what is left
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < WAIT * 10; i++)); do any_alive "$@" || return 0; sleep 0.1; done
  kill -KILL "$@" 2>/dev/null || true
  sleep 0.2
}

# slurmstepd and job processes outlive slurmd; they are the only other processes in the
# UTS namespace up.sh created for slurmd, so that namespace identifies them exactly.
uts=
if ours slurmd; then uts=$(readlink "/proc/$pid/ns/uts"); fi
[[ $uts == "$(readlink /proc/self/ns/uts)" ]] && uts=   # never the host's own namespace

# Cancel jobs while the controller is up, so their slurmstepds finish cleanly instead of
# retrying RPCs to a controller that is gone.
if ours slurmctld; then
  export SLURM_CONF=$DIR/slurm.conf
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ') || jobs=
  if [[ -n ${jobs// /} ]]; then
    # shellcheck disable=SC2086  # word-split the id list
    scancel $jobs 2>/dev/null || true
    for ((i = 0; i < WAIT; i++)); do
      [[ -z $(squeue -h -t running,completing,configuring -o %i 2>/dev/null) ]] && break
      sleep 1
    done
  fi
fi

# All three at once: each takes 1-2 s to exit, and up.sh discards the state anyway.
stopped=() pids=()
for d in slurmd slurmctld munged; do
  if ours "$d"; then pids+=("$pid"); stopped+=("$d"); fi
done
if ((${#pids[@]})); then stop "${pids[@]}"; fi
rm -f "$DIR"/{slurmd,slurmctld,munged}.pid

if [[ -n $uts ]]; then
  left=()
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/ns/uts" 2>/dev/null) == "$uts" ]] && left+=("${p#/proc/}")
  done
  if ((${#left[@]})); then WAIT=2 stop "${left[@]}"; stopped+=("${#left[@]} leftover job process(es)"); fi
fi
echo "slurm down: stopped ${stopped[*]:-nothing}"
