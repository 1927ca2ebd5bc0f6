#!/usr/bin/env bash
# Start and stop the dev Kubernetes control plane: roster-k8s (hack/k8s, built by
# hack/k8s/build.sh) with kube-apiserver, embedded etcd and kube-controller-manager on loopback,
# Roster's CRDs installed, and the chart's ServiceAccount and RBAC (manifests/roster.yaml) with a
# token for it in DIR/operator.kubeconfig.
#
# Usage:
#   hack/lib/k8s.sh start --dir DIR   # DIR/kubeconfig (cluster-admin), DIR/operator.kubeconfig, DIR/pid
#   hack/lib/k8s.sh stop  --dir DIR
#
# start does nothing when the control plane already runs and answers; its etcd data and
# certificates stay in DIR across restarts. stop kills only the PID in DIR/pid, after checking
# it is roster-k8s.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
KUBECTL=$REPO_ROOT/.dev/venv/bin/kubectl

die() { echo "k8s.sh: $*" >&2; exit 1; }

running() {
    local dir=$1 pid
    [[ -f $dir/pid ]] || return 1
    pid=$(<"$dir/pid")
    [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == roster-k8s ]]
}

answers() {
    [[ -s $1/kubeconfig ]] && KUBECONFIG=$1/kubeconfig "$KUBECTL" get --raw /readyz >/dev/null 2>&1
}

# The chart's ServiceAccount, ClusterRoles, Role and bindings, as the chart renders them.
chart_rbac() {
    echo "apiVersion: v1"
    echo "kind: Namespace"
    echo "metadata: {name: roster}"
    awk 'BEGIN { RS = "\n---\n" }
         /\nkind: (ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding)\n/ { print "---"; print }' \
        "$REPO_ROOT/manifests/roster.yaml"
}

start() {
    local dir=$1 bin pid token
    [[ -x $KUBECTL ]] || die "no kubectl in .dev/venv: run make tools"
    bin=$("$REPO_ROOT/hack/k8s/build.sh")
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock -w 300 9 || die "timed out waiting for the lock on $dir"
    if running "$dir" && answers "$dir"; then
        return 0
    fi
    # Close the lock descriptors (ours and dev-up's): a server holding them would block later runs.
    setsid "$bin" up --dir "$dir" --crds "$REPO_ROOT/crds" >"$dir/up.log" 2>&1 8>&- 9>&- </dev/null &
    pid=$!
    echo "$pid" >"$dir/pid"
    for _ in $(seq 1 1800); do
        [[ -s $dir/kubeconfig ]] && break
        kill -0 "$pid" 2>/dev/null || die "roster-k8s exited; see $dir/up.log"
        sleep 0.1
    done
    [[ -s $dir/kubeconfig ]] || die "the control plane was not ready within 180 s; see $dir/up.log"
    export KUBECONFIG=$dir/kubeconfig
    chart_rbac | "$KUBECTL" apply -f - >/dev/null
    token=$("$KUBECTL" create token roster -n roster --duration=720h)
    sed -e "s/^      token: .*/      token: $token/" "$dir/kubeconfig" >"$dir/operator.kubeconfig.tmp"
    chmod 0600 "$dir/operator.kubeconfig.tmp"
    mv -f "$dir/operator.kubeconfig.tmp" "$dir/operator.kubeconfig"
}

stop() {
    local dir=$1 pid
    running "$dir" || { rm -f "$dir/pid"; return 0; }
    pid=$(<"$dir/pid")
    kill "$pid"
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$dir/pid" "$dir/kubeconfig"
}

cmd=${1:-}; shift || true
dir=""
while (($#)); do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
[[ -n $dir ]] || die "--dir is required"
case $cmd in
    start) start "$dir" ;;
    stop) stop "$dir" ;;
    *) die "usage: k8s.sh start|stop --dir DIR" ;;
esac
