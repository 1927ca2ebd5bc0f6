#!/usr/bin/env bash
# Stop every dev backend under <repo>/.dev/ started by hack/dev-up.sh or hack/lib/slapd.sh
# (the main slapd and any other instance there, e.g. a bare one) and the Slurm accounting
# daemons (slurmdbd, munged, mariadbd under .dev/slurm) and the Gold test server (.dev/gold), by
# PID file only.
#
# Usage: hack/dev-down.sh [--purge]
#   --purge   also remove .dev/ (the admin password, data, generated config)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
HACK=$REPO_ROOT/hack
DEV=$REPO_ROOT/.dev

log() { echo "dev-down: $*" >&2; }

# --------------------------------------------------------------------------------------------
# OpenLDAP: every directory under .dev/ that hack/lib/slapd.sh created (it has instance.conf).

stop_slapd_instances() {
    local conf dir
    for conf in "$DEV"/*/instance.conf; do
        [[ -e $conf ]] || continue
        dir=${conf%/instance.conf}
        [[ -d $dir/slapd.d ]] || continue
        if "$HACK/lib/slapd.sh" status --dir "$dir" >/dev/null 2>&1 || [[ -e $dir/slapd.pid ]]; then
            log "stopping slapd in ${dir#"$REPO_ROOT"/}"
        fi
        "$HACK/lib/slapd.sh" stop --dir "$dir"
    done
}

# --------------------------------------------------------------------------------------------
# The operator and the dev Kubernetes control plane.

stop_operator() {
    local pid
    [[ -f $DEV/operator/pid ]] || return 0
    pid=$(<"$DEV/operator/pid")
    if [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == roster ]]; then
        log "stopping the operator"
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$DEV/operator/pid"
}

stop_consumers() {
    if [[ -f $DEV/slurmctld/slurmctld.pid || -f $DEV/slurmctld/slurmd.pid ]]; then
        log "stopping slurmctld and slurmd"
        "$HACK/lib/slurmctld.sh" stop --dir "$DEV/slurmctld"
    fi
    if [[ -f $DEV/sssd/pid ]]; then
        log "stopping sssd"
        "$HACK/lib/sssd.sh" stop --dir "$DEV/sssd"
    fi
}

stop_cluster() {
    if [[ -f $DEV/k8s/pid ]]; then
        log "stopping the dev control plane"
        "$HACK/lib/k8s.sh" stop --dir "$DEV/k8s"
    fi
}

# --------------------------------------------------------------------------------------------
# Slurm accounting: slurmdbd, munged, mariadbd under .dev/slurm.

stop_slurm() {
    [[ -d $DEV/slurm ]] || return 0
    if [[ -e $DEV/slurm/slurmdbd.pid || -e $DEV/slurm/munge/munged.pid || -e $DEV/slurm/mysql/mysqld.pid ]]; then
        log "stopping slurmdbd, munged and mariadbd"
    fi
    "$HACK/lib/slurm.sh" stop --dir "$DEV/slurm"
}

# --------------------------------------------------------------------------------------------
# The Gold test server.

stop_gold() {
    if [[ -f $DEV/gold/pid ]]; then
        log "stopping the Gold test server"
        "$HACK/lib/gold.sh" stop --dir "$DEV/gold"
    fi
}

main() {
    local purge=0
    while (($#)); do
        case $1 in
            --purge) purge=1; shift ;;
            -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
            *) log "unknown argument $1"; exit 2 ;;
        esac
    done
    [[ -d $DEV ]] || { log "nothing to stop (no .dev/)"; return 0; }
    # Wait for a dev-up that is running right now (same lock).
    exec 8>"$DEV/.dev-up.lock"
    flock -w 120 8 || { log "timed out waiting for a running dev-up"; exit 1; }
    stop_operator
    stop_consumers
    stop_slapd_instances
    stop_slurm
    stop_cluster
    stop_gold
    if ((purge)); then
        log "removing ${DEV#"$REPO_ROOT"/}/"
        rm -rf "$DEV"
    fi
}

main "$@"
