#!/usr/bin/env bash
# Start and stop the fake Kubernetes API server (target/debug/roster-fake-apiserver) as a
# background process of the invoking user, on loopback.
#
# Usage:
#   hack/lib/apiserver.sh start --dir DIR --port PORT   # writes DIR/kubeconfig, DIR/pid, DIR/log
#   hack/lib/apiserver.sh stop  --dir DIR
#
# start builds the binary when it is missing, and does nothing when the server already runs
# and answers. stop kills only the PID in DIR/pid, after checking it is this server.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/roster-fake-apiserver

die() { echo "apiserver.sh: $*" >&2; exit 1; }

running() {
    local dir=$1 pid
    [[ -f $dir/pid ]] || return 1
    pid=$(<"$dir/pid")
    [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == roster-fake-api* ]]
}

answers() {
    local port=$1
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
    command -v curl >/dev/null || return 0
    curl -fsS "http://127.0.0.1:$port/version" >/dev/null 2>&1
}

start() {
    local dir=$1 port=$2 pid
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock -w 60 9 || die "timed out waiting for the lock on $dir"
    if running "$dir" && answers "$port"; then
        return 0
    fi
    if [[ ! -x $BIN ]]; then
        (cd "$REPO_ROOT" && cargo build --quiet --bin roster-fake-apiserver)
    fi
    # Close the lock descriptors (ours and dev-up's): a server holding them would block later runs.
    setsid "$BIN" --bind "127.0.0.1:$port" --kubeconfig "$dir/kubeconfig" >"$dir/log" 2>&1 8>&- 9>&- </dev/null &
    pid=$!
    echo "$pid" >"$dir/pid"
    for _ in $(seq 1 100); do
        if answers "$port" && [[ -s $dir/kubeconfig ]]; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "the server exited; see $dir/log"
        sleep 0.1
    done
    die "the server did not answer on port $port within 10 s; see $dir/log"
}

stop() {
    local dir=$1 pid
    running "$dir" || { rm -f "$dir/pid"; return 0; }
    pid=$(<"$dir/pid")
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$dir/pid" "$dir/kubeconfig"
}

cmd=${1:-}; shift || true
dir=""; port=""
while (($#)); do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
[[ -n $dir ]] || die "--dir is required"
case $cmd in
    start) [[ -n $port ]] || die "--port is required"; start "$dir" "$port" ;;
    stop) stop "$dir" ;;
    *) die "usage: apiserver.sh start|stop --dir DIR [--port PORT]" ;;
esac
