#!/usr/bin/env bash
# Start and stop Roster's Gold (SSSRMAP) test server (target/debug/roster-gold-server) as a
# background process of the invoking user, on loopback. It stands in for a Gold 2.2 server
# (src/gold/server.rs); its state is in memory, so a restart starts empty.
#
# Usage:
#   hack/lib/gold.sh start --dir DIR --port PORT
#   hack/lib/gold.sh stop  --dir DIR
#   hack/lib/gold.sh env   --dir DIR --port PORT   # print export lines (GOLD_HOST, GOLD_PORT,
#                                                  # GOLD_AUTH_KEY_FILE, GOLD_REQUEST_LOG,
#                                                  # GOLD_CONTROL_DIR)
#
# DIR holds:
#   auth_key        the shared secret (one line, mode 0600), generated once: Gold's auth_key
#   pid, log        the server's PID and its output (stdout line 1 is the bound address)
#   requests.jsonl  one JSON object per request: action, objects, actor, code, signed
#   control/        `touch control/drop-next-Deposit`: the next signed, authorized Deposit is
#                   performed but its connection is closed without a reply (the file is
#                   removed when used); any action name works the same way
#
# start builds the binary when it is missing, and does nothing when the server already runs
# and answers on PORT (a server of this DIR on another port is stopped first). stop kills only
# the PID in DIR/pid, after checking it is this server.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/roster-gold-server

die() { echo "gold.sh: $*" >&2; exit 1; }

running() {
    local dir=$1 pid
    [[ -f $dir/pid ]] || return 1
    pid=$(<"$dir/pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # /proc/PID/comm is cut to 15 characters.
    [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == roster-gold-ser* ]]
}

# A bare connect: the server neither answers nor logs a connection that sends nothing.
answers() {
    local port=$1
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

ensure_key() {
    local file=$1/auth_key
    [[ -s $file ]] && return 0
    (
        umask 077
        local tmp
        tmp=$(mktemp "$file.XXXXXX")
        printf '%s\n' "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" >"$tmp"
        mv -f "$tmp" "$file"
    )
}

start() {
    local dir=$1 port=$2 pid
    mkdir -p "$dir/control"
    chmod 0700 "$dir"
    exec 9>"$dir/.lock"
    flock -w 60 9 || die "timed out waiting for the lock on $dir"
    ensure_key "$dir"
    if running "$dir"; then
        answers "$port" && [[ $(head -n1 "$dir/log" 2>/dev/null) == "127.0.0.1:$port" ]] && return 0
        stop "$dir"
    fi
    if [[ ! -x $BIN ]]; then
        (cd "$REPO_ROOT" && cargo build --quiet -p roster-gold-server)
    fi
    # A new server starts empty: so do its request log and its control files.
    : >"$dir/requests.jsonl"
    rm -f "$dir"/control/drop-next-*
    # Close the lock descriptors (ours and dev-up's): a server holding them would block later runs.
    setsid "$BIN" --bind "127.0.0.1:$port" --auth-key-file "$dir/auth_key" \
        --log "$dir/requests.jsonl" --control-dir "$dir/control" \
        >"$dir/log" 2>&1 8>&- 9>&- </dev/null &
    pid=$!
    echo "$pid" >"$dir/pid"
    for _ in $(seq 1 100); do
        if [[ $(head -n1 "$dir/log" 2>/dev/null) == "127.0.0.1:$port" ]] && answers "$port"; then
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
    rm -f "$dir/pid"
}

# Single-quotes a value for a POSIX shell.
shquote() {
    local q="'\\''"
    printf "'%s'" "${1//\'/$q}"
}

print_env() {
    local dir=$1 port=$2
    echo "export GOLD_HOST=127.0.0.1"
    echo "export GOLD_PORT=$port"
    echo "export GOLD_AUTH_KEY_FILE=$(shquote "$dir/auth_key")"
    echo "export GOLD_REQUEST_LOG=$(shquote "$dir/requests.jsonl")"
    echo "export GOLD_CONTROL_DIR=$(shquote "$dir/control")"
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
dir=$(realpath -m -- "$dir")
if [[ -n $port ]] && { ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); }; then
    die "bad --port $port"
fi
case $cmd in
    start) [[ -n $port ]] || die "--port is required"; start "$dir" "$port" ;;
    stop) stop "$dir" ;;
    env) [[ -n $port ]] || die "--port is required"; print_env "$dir" "$port" ;;
    *) die "usage: gold.sh start|stop|env --dir DIR [--port PORT]" ;;
esac
