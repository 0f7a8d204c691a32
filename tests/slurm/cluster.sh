#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for integration tests
# of the Snakemake SLURM executor (tests/test_slurm.py) and for trying the
# workflow profile by hand.
#
#   sudo tests/slurm/cluster.sh start    # writes config, starts munged, slurmctld, slurmd
#   eval "$(tests/slurm/cluster.sh env)" # exports SLURM_CONF for sinfo/sbatch/...
#   sinfo; srun hostname; sbatch --wrap 'echo hi'
#   sudo tests/slurm/cluster.sh status   # sinfo + squeue
#   sudo tests/slurm/cluster.sh logs     # tails of all daemon logs
#   sudo tests/slurm/cluster.sh stop     # kills the daemons it started, keeps the logs
#
# It installs nothing: the packages come from .ci/install-slurm.sh
# (Debian/Ubuntu `slurm-wlm munge`).  It needs root, because slurmd must be able
# to start job steps as the submitting user; the jobs themselves can then be
# submitted by any user (tests/test_slurm.py uses `sudo -n` for start/stop when
# it does not run as root).  Everything lives in
# $SLURM_TEST_DIR (default /tmp/metarl-slurm) except one symlink,
# /etc/slurm/slurm.conf -> $SLURM_TEST_DIR/etc/slurm.conf (see pitfalls), which
# `stop` removes again.  A real /etc/slurm/slurm.conf is never overwritten:
# `start` refuses to run instead.
#
# Environment knobs (all optional):
#   SLURM_TEST_DIR        state/log/config directory       [/tmp/metarl-slurm]
#   SLURM_TEST_CPUS       CPUs the node advertises          [max(nproc, 4)]
#   SLURM_TEST_MEM_MB     RealMemory the node advertises    [slurmd -C value]
#   SLURM_TEST_CTLD_PORT  slurmctld port                    [6817]
#   SLURM_TEST_SLURMD_PORT slurmd port                      [6818]
#   SLURM_TEST_TIMEOUT    seconds to wait for an idle node  [60]
#   SLURM_TEST_GPUS       fake GPUs (gres/gpu without a device) the node offers [1]
#
# Pitfalls met while writing this (Debian 12, Slurm 22.05, munge 0.5.15, inside
# a gVisor container without systemd):
#   * Without a slurm.conf the clients try "configless" DNS SRV lookup and die
#     with "fetch_config: DNS SRV lookup failed".  SLURM_CONF alone is NOT
#     enough: inside a job, snakemake's slurm-jobstep executor (0.6.x) strips
#     every SLURM_* variable except the job ids from the environment of its
#     nested `srun`, so that srun only finds the config at the compiled-in
#     default path /etc/slurm/slurm.conf.  Hence the symlink there.
#   * The package postinst cannot start daemons (no systemd / policy-rc.d), so
#     we start them by hand, each with an explicit -f config, pid and log file.
#   * munge: we generate our own key (0400, owned by root), run munged with
#     --force as a precaution (it refuses to start when a key/socket directory
#     looks insecure; sticky /tmp was fine here) and use a private socket that slurm.conf
#     points to with AuthInfo=socket=..., so a system munged (if any) is not
#     disturbed.  "Unauthorized credential for client UID=0" lines in
#     munged.log are harmless (slurm probing credentials).
#   * The node is called "localhost" (slurmd -N localhost, NodeAddr=127.0.0.1),
#     so the config does not depend on the container's random hostname.
#   * cgroups are avoided altogether (containers often have them read-only or
#     as a v1/v2 hybrid; gVisor emulates them): ProctrackType=proctrack/linuxproc,
#     TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/none, and no
#     cgroup.conf (its keys differ between Slurm versions; nothing reads it).
#     Consequence: --mem and CPU counts are bookkeeping only, not enforced.
#   * Fake GPUs (gres/gpu) need a File= in gres.conf (/dev/null will do):
#     with Count= alone slurmd reports 0 GPUs and the node goes INVAL.
#   * "error: ... mpi/pmix ... can not load PMIx library" in the daemon logs
#     is harmless (MpiDefault=none).
#   * A hardware/config mismatch (e.g. advertising more CPUs than exist, or a
#     different socket/core layout) would DRAIN the node; SlurmdParameters=
#     config_overrides makes slurmd trust slurm.conf, and ReturnToService=2
#     brings a node that was DOWN back automatically when slurmd registers.
#     We advertise at least 4 CPUs on purpose, so rules that declare
#     threads<=4 are schedulable on a 2-core CI runner (they just share cores).
#   * No accounting database: AccountingStorageType=accounting_storage/none, so
#     `sacct` does not work.  Finished jobs are only visible to `squeue` while
#     younger than MinJobAge, hence MinJobAge=86400, and the snakemake slurm
#     executor must be told `--slurm-status-command squeue` (its default is
#     sacct whenever the sacct binary exists).
set -euo pipefail

DIR=${SLURM_TEST_DIR:-/tmp/metarl-slurm}
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-6818}
TIMEOUT=${SLURM_TEST_TIMEOUT:-60}
FAKE_GPUS=${SLURM_TEST_GPUS:-1}
CONF="$DIR/etc/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf   # compiled-in default (Debian 12, Ubuntu >= 22.04 packages)
MUNGE_SOCKET="$DIR/munge/munge.socket"
export SLURM_CONF="$CONF"

log() { echo "cluster.sh: $*" >&2; }
die() { log "ERROR: $*"; dump_logs; exit 1; }

dump_logs() {
  for f in "$DIR"/log/*.log; do
    [ -f "$f" ] || continue
    echo "----- tail -n 40 $f -----" >&2
    tail -n 40 "$f" >&2 || true
  done
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install SLURM first (.ci/install-slurm.sh)"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_config() {
  mkdir -p "$DIR"/{etc,log,state,spool/slurmd,run,munge}
  chmod 755 "$DIR" "$DIR/munge"

  local hw_mem cpus mem
  hw_mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
  [ -n "$hw_mem" ] || hw_mem=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
  cpus=${SLURM_TEST_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
  mem=${SLURM_TEST_MEM_MB:-$hw_mem}
  local node_gres="" gres_line="# no GPUs"
  if [ "$FAKE_GPUS" -gt 0 ]; then
    node_gres="Gres=gpu:$FAKE_GPUS"
    # File= is required: without it slurmd reports 0 GPUs and slurmctld marks
    # the node INVAL ("gres/gpu count reported lower than configured").
    gres_line="NodeName=localhost Name=gpu File=/dev/null Count=$FAKE_GPUS"
  fi

  cat >"$CONF" <<EOF
# Generated by tests/slurm/cluster.sh -- single-node test cluster, do not edit.
ClusterName=metarltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
MailProg=/bin/true
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
# keep finished jobs visible to squeue/scontrol (there is no sacct here)
MinJobAge=86400
# react fast: this is a test cluster
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$cpus RealMemory=$mem $node_gres State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  link_etc_conf
  cat >"$DIR/etc/gres.conf" <<EOF
# Fake GPUs: counted and allocated by slurmctld, so --gpus=N / --gres=gpu:N
# jobs are accepted and scheduled (the job gets CUDA_VISIBLE_DEVICES=0...),
# but there is no device behind them.
AutoDetect=off
$gres_line
EOF
}

link_etc_conf() {
  local other
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" != "$CONF" ]; then
    # another instance (other SLURM_TEST_DIR) may be running: one cluster at a time
    other=$(dirname "$(dirname "$(readlink "$ETC_CONF")")")
    if pid_alive "$other/run/slurmctld.pid" || pid_alive "$other/run/slurmd.pid"; then
      die "another test cluster is running from $other (stop it with" \
          "SLURM_TEST_DIR=$other $0 stop); only one can use $ETC_CONF and the ports"
    fi
  fi
  if [ -L "$ETC_CONF" ] || [ ! -e "$ETC_CONF" ]; then
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$CONF" "$ETC_CONF"
  else
    die "$ETC_CONF exists and is not our symlink: this machine has a real SLURM" \
        "config; refusing to replace it (move it away to run the test cluster)"
  fi
}

unlink_etc_conf() {
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
    rm -f "$ETC_CONF"
  fi
}

start_munge() {
  if pid_alive "$DIR/run/munged.pid"; then log "munged already running"; return; fi
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 400 "$DIR/munge/munge.key"
  mkdir -p "$DIR/munge/lib"
  chmod 700 "$DIR/munge/lib"
  munged --force \
    --socket="$MUNGE_SOCKET" \
    --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/lib/munged.seed" \
    || die "munged failed to start"
  # munged daemonises; wait for the socket, then check a credential round trip
  for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done
  munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null \
    || die "munge credential round trip failed"
}

start_slurm() {
  if pid_alive "$DIR/run/slurmctld.pid"; then
    log "slurmctld already running"
  else
    # -c: clear any saved state (jobs/nodes) from an earlier run
    slurmctld -c -f "$CONF" || die "slurmctld failed to start"
  fi
  if pid_alive "$DIR/run/slurmd.pid"; then
    log "slurmd already running"
  else
    slurmd -N localhost -f "$CONF" || die "slurmd failed to start"
  fi
}

wait_idle() {
  local t0 state
  t0=$(date +%s)
  while :; do
    state=$(sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
      idle|idle\*|mixed|allocated) log "node localhost is $state"; return 0 ;;
      inval*)
        scontrol show node localhost >&2 || true
        die "slurmctld rejected the node's registration (state $state), see Reason= above" ;;
      down*|drain*)
        # e.g. left DOWN by an earlier run: bring it back
        scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if (( $(date +%s) - t0 > TIMEOUT )); then
      sinfo -N -l >&2 || true
      scontrol show node localhost >&2 || true
      die "node did not become idle within ${TIMEOUT}s (last state: '${state:-none}')"
    fi
    pid_alive "$DIR/run/slurmctld.pid" || die "slurmctld died"
    pid_alive "$DIR/run/slurmd.pid" || die "slurmd died"
    sleep 0.5
  done
}

stop_one() {
  local name=$1 pidfile="$DIR/run/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name ($pid) did not stop, sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as the submitting user)"
  for b in munged munge unmunge slurmctld slurmd sinfo scontrol; do need "$b"; done
  write_config
  start_munge
  start_slurm
  wait_idle
  log "cluster up; use: export SLURM_CONF=$CONF"
}

cmd_stop() {
  if [ -f "$CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
    # cancel leftovers (any user's) so job processes do not outlive the daemons
    scancel --full --quiet --partition=debug 2>/dev/null || true
    for _ in $(seq 20); do
      [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  stop_one slurmd
  stop_one slurmctld
  stop_one munged
  unlink_etc_conf
  log "stopped (logs kept in $DIR/log)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  status) sinfo -N -l; squeue -t all ;;
  logs) dump_logs ;;
  *) echo "usage: $0 start|stop|restart|env|status|logs" >&2; exit 2 ;;
esac
