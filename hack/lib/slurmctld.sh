#!/usr/bin/env bash
# Start and stop a Slurm controller and one compute node — the consumers of Slurm accounting —
# against the dev slurmdbd (hack/lib/slurm.sh): slurmctld with
# AccountingStorageEnforce=associations,limits,qos, so a job is accepted only for a user with an
# association that allows it, and slurmd with one node (`box1`, 2 CPUs) that runs the jobs.
#
# Usage:
#   hack/lib/slurmctld.sh start --dir DIR --cluster NAME --slurm-dir SLURMDIR [--ctld-port P] [--slurmd-port P]
#   hack/lib/slurmctld.sh stop  --dir DIR
#   hack/lib/slurmctld.sh env   --dir DIR     # SLURM_CONF for sbatch/srun/scontrol against it
#
# SLURMDIR is the dev slurm directory (its munge socket and slurmdbd port are used). The
# cluster is added to slurmdbd when missing. Jobs run as their users: names and uids come from
# NSS, i.e. from the directory through sssd (hack/lib/sssd.sh). slurmd runs without cgroups
# (proctrack/linuxproc, task/none), which this sandbox allows. Both run as root, in the
# foreground of their own session; stop kills only the PIDs in DIR after checking their names.
set -euo pipefail

die() { echo "slurmctld.sh: error: $*" >&2; exit 1; }
log() { echo "slurmctld.sh: $*" >&2; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && return 0
    log "installing slurmctld slurmd"
    local prc=/usr/sbin/policy-rc.d
    if [[ ! -e $prc ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$prc"
        chmod 0755 "$prc"
        # shellcheck disable=SC2064  # expand now
        trap "rm -f '$prc'" EXIT
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd slurm-client
}

running() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == "$name" ]]
}

# The node answers and is usable (idle or allocated, not down or unknown).
node_up() {
    local state
    state=$(SLURM_CONF=$DIR/slurm.conf timeout 5 sinfo -h -N -n box1 -o %T 2>/dev/null) || return 1
    [[ $state == idle* || $state == alloc* || $state == mix* ]]
}

config() {
    local munge dbd_port
    munge=$(sed -n 's/^AuthInfo=socket=//p' "$SLURMDIR/slurm.conf")
    dbd_port=$(sed -n 's/^AccountingStoragePort=//p' "$SLURMDIR/slurm.conf")
    [[ -n $munge && -n $dbd_port ]] || die "$SLURMDIR/slurm.conf lacks AuthInfo or AccountingStoragePort"
    cat <<EOF
# Written by hack/lib/slurmctld.sh: a controller and one node on loopback, enforcing accounting.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge
CredType=cred/munge
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$munge
AccountingStorageEnforce=associations,limits,qos
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/builtin
SelectType=select/linear
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=box1 NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=batch Nodes=box1 Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [[ $(id -u) -eq 0 ]] || die "slurmctld and slurmd run as root here"
    install_packages
    # The job's user runs the batch script from the spool: it must be reachable for everyone
    # (the dev state directory is private), so it lives under /var/spool.
    mkdir -p "$DIR/state" "$SPOOL"
    chmod 0755 "$(dirname "$SPOOL")" "$SPOOL"
    exec 9>"$DIR/.lock"
    flock -w 120 9 || die "timed out waiting for the lock on $DIR"
    config >"$DIR/slurm.conf.new"
    if ! cmp -s "$DIR/slurm.conf.new" "$DIR/slurm.conf"; then
        mv -f "$DIR/slurm.conf.new" "$DIR/slurm.conf"
        stop_daemons
    else
        rm -f "$DIR/slurm.conf.new"
    fi
    if ! SLURM_CONF=$SLURMDIR/slurm.conf sacctmgr -nP show cluster format=cluster | grep -qx "$CLUSTER"; then
        SLURM_CONF=$SLURMDIR/slurm.conf sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! running "$DIR/slurmctld.pid" slurmctld; then
        SLURM_CONF=$DIR/slurm.conf setsid slurmctld -D -f "$DIR/slurm.conf" \
            >"$DIR/slurmctld.out" 2>&1 8>&- 9>&- </dev/null &
        echo $! >"$DIR/slurmctld.pid"
    fi
    if ! running "$DIR/slurmd.pid" slurmd; then
        SLURM_CONF=$DIR/slurm.conf setsid slurmd -D -N box1 -f "$DIR/slurm.conf" \
            >"$DIR/slurmd.out" 2>&1 8>&- 9>&- </dev/null &
        echo $! >"$DIR/slurmd.pid"
    fi
    for _ in $(seq 1 300); do
        if node_up; then return 0; fi
        running "$DIR/slurmctld.pid" slurmctld || die "slurmctld exited; see $DIR/slurmctld.log"
        running "$DIR/slurmd.pid" slurmd || die "slurmd exited; see $DIR/slurmd.log"
        sleep 0.1
    done
    die "the node did not come up within 30 s; see $DIR/slurmctld.log and $DIR/slurmd.log"
}

stop_one() {
    local pidfile=$1 name=$2 pid
    running "$pidfile" "$name" || { rm -f "$pidfile"; return 0; }
    pid=$(<"$pidfile")
    kill "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$pidfile"
}

stop_daemons() {
    stop_one "$DIR/slurmd.pid" slurmd
    stop_one "$DIR/slurmctld.pid" slurmctld
}

cmd=${1:-}; shift || true
DIR="" CLUSTER="" SLURMDIR="" CTLD_PORT=16817 SLURMD_PORT=16818
while (($#)); do
    case $1 in
        --dir) DIR=$2; shift 2 ;;
        --cluster) CLUSTER=$2; shift 2 ;;
        --slurm-dir) SLURMDIR=$2; shift 2 ;;
        --ctld-port) CTLD_PORT=$2; shift 2 ;;
        --slurmd-port) SLURMD_PORT=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
[[ -n $DIR ]] || die "--dir is required"
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd -P)
SPOOL=/var/spool/roster-slurmd/$(printf '%s' "$DIR" | sha256sum | cut -c1-12)
case $cmd in
    start)
        [[ -n $CLUSTER && -n $SLURMDIR ]] || die "start needs --cluster and --slurm-dir"
        start
        ;;
    stop) stop_daemons ;;
    env) echo "export SLURM_CONF=$DIR/slurm.conf" ;;
    *) die "usage: slurmctld.sh start|stop|env --dir DIR ..." ;;
esac
