#!/usr/bin/env bash
# Start and stop a private Slurm accounting stack for development and tests: MariaDB, munge and
# slurmdbd, run as the invoking user from one state directory, bound to 127.0.0.1, plus a client
# slurm.conf for sacctmgr (no slurmctld).
#
# Usage:
#   hack/lib/slurm.sh start  --dir DIR --mysql-port P --slurmdbd-port Q --cluster NAME
#   hack/lib/slurm.sh stop   --dir DIR
#   hack/lib/slurm.sh status --dir DIR     # exit 0 if all three daemons run and sacctmgr answers
#   hack/lib/slurm.sh env    --dir DIR     # print export lines (SLURM_CONF, SLURM_CLUSTER,
#                                          # SLURMDB_RO_URL, SLURMDB_ADMIN_URL)
#   hack/lib/slurm.sh install              # install mariadb-server munge slurmdbd slurm-client
#                                          # if missing
#
# start   Creates the instance on first use and starts what is not running, then waits (at most
#         ~60 s) until `sacctmgr show cluster` answers and adds cluster NAME if it is missing.
#         A re-run that finds everything up and answering does nothing. Ports are fixed while
#         the daemons run (stop first to change them). NAME: lowercase letters, digits, _ and -.
# stop    Stops slurmdbd, munged and mariadbd by their PID files, after checking each PID is
#         this instance's daemon (/proc/PID/comm and command line or environment), and waits
#         until they are gone.
#
# DIR holds (all 0700 / 0600):
#   my.cnf mysql/{data,tmp,mysqld.sock,mysqld.pid,mariadbd.log}   MariaDB (root via unix socket)
#   munge/{munge.key,munge.socket,munged.pid,munged.log,munged.seed}
#   slurm.conf slurmdbd.conf slurmdbd.pid slurmdbd.log         (slurmdbd reads the slurmdbd.conf
#                                                              next to $SLURM_CONF; it has no -f)
#   dbd.pw      password of the MariaDB writer user 'slurm' that slurmdbd uses (ALL on
#               slurm_acct_db.*); admin.url is its DSN (tests insert fake job records with it)
#   ro.pw       password of the read-only user 'roster_ro' (SELECT on slurm_acct_db.*);
#               ro.url is its DSN: mysql://roster_ro:PW@127.0.0.1:P/slurm_acct_db
#   instance.conf  the ports and cluster of the last start
# Always pass -i to sacctmgr writes: without a tty it otherwise loops forever asking to commit.
# Nothing outside DIR is written (except installing the packages when they are missing).
set -euo pipefail

case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac

DB_NAME=slurm_acct_db
DB_WRITER=slurm
DB_RO=roster_ro
SACCTMGR_WAIT=60 # seconds, wall clock, until slurmdbd answers after a start

die() { echo "slurm.sh: error: $*" >&2; exit 1; }
log() { echo "slurm.sh: $*" >&2; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; }

# ---------------------------------------------------------------------------------------------
# Installation

REQUIRED_BINS=(mariadbd mariadb-install-db mariadb mungekey munged munge slurmdbd sacctmgr)

install_packages() {
    local missing=0 bin
    for bin in "${REQUIRED_BINS[@]}"; do
        command -v "$bin" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    log "installing mariadb-server munge slurmdbd slurm-client"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "Slurm packages missing and not root (no sudo)"
        sudo=(sudo)
    fi
    # A policy-rc.d that exits 101 keeps the package scripts from starting system daemons.
    local prc=/usr/sbin/policy-rc.d
    if [[ ! -e $prc ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$prc" >/dev/null
        "${sudo[@]}" chmod 0755 "$prc"
        # shellcheck disable=SC2064  # expand now
        trap "${sudo[*]} rm -f '$prc'" EXIT
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends mariadb-server munge slurmdbd slurm-client
    for bin in "${REQUIRED_BINS[@]}"; do
        command -v "$bin" >/dev/null 2>&1 || die "$bin still missing after install"
    done
}

# ---------------------------------------------------------------------------------------------
# Helpers

# Close every inherited descriptor above 2 (the callers' lock files: dev-up's fd 8, our fd 9),
# so that a daemon does not keep them open and block every later run.
close_fds() {
    local fd
    for fd in /proc/self/fd/*; do
        fd=${fd##*/}
        if ((fd > 2 && fd != 255)); then eval "exec $fd>&-"; fi
    done
}

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

ensure_password_file() {
    local file=$1
    [[ -s $file ]] && return 0
    (
        umask 077
        local tmp
        tmp=$(mktemp "$file.XXXXXX")
        printf '%s' "$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >"$tmp"
        mv -f "$tmp" "$file"
    )
}

check_port_arg() {
    if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then die "bad $1: $2"; fi
}

# Paths of an instance (DIR must be absolute and resolved).
set_paths() {
    local dir=$1
    CNF=$dir/my.cnf
    MYSQL_DIR=$dir/mysql
    MYSQL_SOCK=$MYSQL_DIR/mysqld.sock
    MYSQL_PID=$MYSQL_DIR/mysqld.pid
    MUNGE_DIR=$dir/munge
    MUNGE_KEY=$MUNGE_DIR/munge.key
    MUNGE_SOCK=$MUNGE_DIR/munge.socket
    MUNGE_PID=$MUNGE_DIR/munged.pid
    SLURM_CONF_FILE=$dir/slurm.conf
    DBD_CONF=$dir/slurmdbd.conf
    DBD_PID=$dir/slurmdbd.pid
    DBD_PW_FILE=$dir/dbd.pw
    RO_PW_FILE=$dir/ro.pw
}

# Prints PID from FILE if it is a live process named COMM, else fails.
pid_of() {
    local file=$1 comm=$2 pid c
    [[ -r $file ]] || return 1
    read -r pid <"$file" 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    c=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $c == "$comm" ]] || return 1
    printf '%s\n' "$pid"
}

# Is NUL-separated /proc file FILE containing the exact entry ENTRY?
proc_has() { tr '\0' '\n' <"$1" 2>/dev/null | grep -qxF -- "$2"; }

mariadbd_pid() {
    local pid
    pid=$(pid_of "$MYSQL_PID" mariadbd) || return 1
    proc_has "/proc/$pid/cmdline" "--defaults-file=$CNF" || return 1
    printf '%s\n' "$pid"
}

munged_pid() {
    local pid
    pid=$(pid_of "$MUNGE_PID" munged) || return 1
    proc_has "/proc/$pid/cmdline" "--socket=$MUNGE_SOCK" || return 1
    printf '%s\n' "$pid"
}

# slurmdbd's command line does not name its config: it was started with SLURM_CONF=ours.
slurmdbd_pid() {
    local pid
    pid=$(pid_of "$DBD_PID" slurmdbd) || return 1
    proc_has "/proc/$pid/environ" "SLURM_CONF=$SLURM_CONF_FILE" || return 1
    printf '%s\n' "$pid"
}

# The MariaDB client as the database superuser (unix-socket authentication as the OS user).
# Only CNF is read, and the MYSQL_* variables that would redirect the client are ignored.
db_admin() {
    env -u MYSQL_HOST -u MYSQL_TCP_PORT -u MYSQL_UNIX_PORT -u MYSQL_PWD \
        mariadb --defaults-file="$CNF" --user="$(id -un)" "$@"
}

sacctmgr_q() {
    env SLURM_CONF="$SLURM_CONF_FILE" timeout 30 sacctmgr "$@" </dev/null
}

# Lists the clusters slurmdbd knows (fails when it does not answer).
clusters() { sacctmgr_q -nP show cluster format=cluster 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Config files

write_configs() {
    local dir=$1 mysql_port=$2 dbd_port=$3 cluster=$4 user
    user=$(id -un)
    mkdir -p "$MYSQL_DIR/tmp"
    {
        echo "# Written by hack/lib/slurm.sh. Start: mariadbd --defaults-file=THIS (first option)."
        echo "[mysqld]"
        if [[ $(id -u) -eq 0 ]]; then echo "user=root"; fi
        echo "datadir=$MYSQL_DIR/data"
        echo "socket=$MYSQL_SOCK"
        echo "pid-file=$MYSQL_PID"
        echo "log-error=$MYSQL_DIR/mariadbd.log"
        echo "port=$mysql_port"
        echo "bind-address=127.0.0.1"
        echo "skip-name-resolve"
        echo "skip-log-bin"
        # Temporary tables of this instance only: the tests start several MariaDBs, and
        # 10.11.19 crashed (SIGSEGV in ha_maria::drop_table) when a union's Aria temporary
        # table was created but could not be opened; nothing else is to touch its files.
        echo "tmpdir=$MYSQL_DIR/tmp"
        echo "innodb_lock_wait_timeout=900"
        echo "innodb_buffer_pool_dump_at_shutdown=OFF"
        echo "innodb_buffer_pool_load_at_startup=OFF"
        echo
        echo "[client]"
        echo "socket=$MYSQL_SOCK"
        echo "port=$mysql_port"
    } | write_if_changed "$CNF" 0600

    # slurmdbd insists on mode 0600 and the SlurmUser as owner (we create it, so it is ours).
    write_if_changed "$DBD_CONF" 0600 <<EOF
# Written by hack/lib/slurm.sh. slurmdbd reads the slurmdbd.conf next to \$SLURM_CONF.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=$user
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$mysql_port
StorageUser=$DB_WRITER
StoragePass=$(<"$DBD_PW_FILE")
StorageLoc=$DB_NAME
PidFile=$DBD_PID
LogFile=$dir/slurmdbd.log
DebugLevel=info
EOF

    # AccountingStoragePass is the munge socket sacctmgr uses to reach slurmdbd; without it:
    # "Munge encode failed ... Protocol authentication error".
    write_if_changed "$SLURM_CONF_FILE" 0644 <<EOF
# Written by hack/lib/slurm.sh: a client config for sacctmgr (there is no slurmctld).
ClusterName=$cluster
SlurmctldHost=localhost
SlurmUser=$user
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$MUNGE_SOCK
EOF
}

write_instance_conf() {
    local dir=$1 mysql_port=$2 dbd_port=$3 cluster=$4
    {
        echo "# Written by hack/lib/slurm.sh start."
        printf 'INSTANCE_MYSQL_PORT=%q\nINSTANCE_SLURMDBD_PORT=%q\nINSTANCE_CLUSTER=%q\n' \
            "$mysql_port" "$dbd_port" "$cluster"
    } | write_if_changed "$dir/instance.conf" 0600
}

dsn() { printf 'mysql://%s:%s@127.0.0.1:%s/%s' "$1" "$(<"$2")" "$3" "$DB_NAME"; }

write_urls() {
    local dir=$1 mysql_port=$2
    dsn "$DB_RO" "$RO_PW_FILE" "$mysql_port" | write_if_changed "$dir/ro.url" 0600
    dsn "$DB_WRITER" "$DBD_PW_FILE" "$mysql_port" | write_if_changed "$dir/admin.url" 0600
}

# ---------------------------------------------------------------------------------------------
# MariaDB

ensure_mariadb() {
    local dir=$1 i pid
    mkdir -p "$MYSQL_DIR"
    chmod 0700 "$MYSQL_DIR"
    if [[ ! -e $MYSQL_DIR/.initialized ]]; then
        log "creating the MariaDB data directory"
        rm -rf "$MYSQL_DIR/data"
        local extra=()
        [[ $(id -u) -eq 0 ]] || extra=(--auth-root-socket-user="$(id -un)")
        mariadb-install-db --defaults-file="$CNF" --auth-root-authentication-method=socket \
            --skip-test-db "${extra[@]}" >"$MYSQL_DIR/install-db.log" 2>&1 ||
            { tail -n 20 "$MYSQL_DIR/install-db.log" >&2; die "mariadb-install-db failed (log: $MYSQL_DIR/install-db.log)"; }
        touch "$MYSQL_DIR/.initialized"
    fi
    if ! pid=$(mariadbd_pid); then
        rm -f "$MYSQL_PID" "$MYSQL_SOCK"
        printf '=== %s start\n' "$(date -u +%FT%TZ)" >>"$MYSQL_DIR/mariadbd.out"
        (
            close_fds
            exec setsid mariadbd --defaults-file="$CNF"
        ) </dev/null >>"$MYSQL_DIR/mariadbd.out" 2>&1 &
        pid=$!
        for ((i = 0; i < 300; i++)); do
            db_admin -e 'SELECT 1' >/dev/null 2>&1 && break
            if ! kill -0 "$pid" 2>/dev/null; then
                tail -n 20 "$MYSQL_DIR/mariadbd.log" >&2 || true
                die "mariadbd exited during startup (log: $MYSQL_DIR/mariadbd.log)"
            fi
            sleep 0.1
        done
        ((i < 300)) || die "mariadbd did not answer within 30 s (log: $MYSQL_DIR/mariadbd.log)"
        mariadbd_pid >/dev/null || die "mariadbd answers but its PID file does not name it"
    fi
    # Users (idempotent; passwords follow the files).
    local wpw rpw host sql=""
    wpw=$(<"$DBD_PW_FILE")
    rpw=$(<"$RO_PW_FILE")
    sql+="CREATE DATABASE IF NOT EXISTS $DB_NAME;"
    for host in localhost 127.0.0.1; do
        sql+="CREATE USER IF NOT EXISTS '$DB_WRITER'@'$host' IDENTIFIED BY '$wpw';"
        sql+="ALTER USER '$DB_WRITER'@'$host' IDENTIFIED BY '$wpw';"
        sql+="GRANT ALL ON $DB_NAME.* TO '$DB_WRITER'@'$host';"
        sql+="CREATE USER IF NOT EXISTS '$DB_RO'@'$host' IDENTIFIED BY '$rpw';"
        sql+="ALTER USER '$DB_RO'@'$host' IDENTIFIED BY '$rpw';"
        sql+="GRANT SELECT ON $DB_NAME.* TO '$DB_RO'@'$host';"
    done
    db_admin -e "$sql" || die "creating the MariaDB users failed"
}

# ---------------------------------------------------------------------------------------------
# munge

ensure_munge() {
    local dir=$1
    mkdir -p "$MUNGE_DIR"
    chmod 0700 "$MUNGE_DIR"
    if [[ ! -s $MUNGE_KEY ]]; then
        rm -f "$MUNGE_KEY"
        mungekey --create --keyfile="$MUNGE_KEY" || die "mungekey failed"
    fi
    chmod 0600 "$MUNGE_KEY"
    munged_pid >/dev/null && return 0
    rm -f "$MUNGE_PID" "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
    # munged daemonizes itself and exits non-zero if the daemon failed to start. --force: munged
    # demands execute permission for all on every directory above its socket (for other users'
    # clients), but DIR is private (0700) and only its owner talks to this munged; --force turns
    # that error into a warning in munged.log. (Another munged on the same socket is still
    # refused by its lock file.)
    (
        close_fds
        exec setsid munged --force --socket="$MUNGE_SOCK" --key-file="$MUNGE_KEY" \
            --pid-file="$MUNGE_PID" --log-file="$MUNGE_DIR/munged.log" \
            --seed-file="$MUNGE_DIR/munged.seed"
    ) </dev/null >>"$MUNGE_DIR/munged.out" 2>&1 ||
        { tail -n 5 "$MUNGE_DIR/munged.out" "$MUNGE_DIR/munged.log" >&2 || true; die "munged failed to start"; }
    local i
    for ((i = 0; i < 50; i++)); do
        munged_pid >/dev/null && munge -n --socket="$MUNGE_SOCK" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not answer on $MUNGE_SOCK within 5 s (log: $MUNGE_DIR/munged.log)"
}

# ---------------------------------------------------------------------------------------------
# slurmdbd

ensure_slurmdbd() {
    local dir=$1 pid
    if ! pid=$(slurmdbd_pid); then
        rm -f "$DBD_PID"
        printf '=== %s start\n' "$(date -u +%FT%TZ)" >>"$dir/slurmdbd.out"
        # Foreground (-D) in its own session; it writes PidFile itself.
        (
            close_fds
            export SLURM_CONF=$SLURM_CONF_FILE
            exec setsid slurmdbd -D
        ) </dev/null >>"$dir/slurmdbd.out" 2>&1 &
        pid=$!
    fi
    # slurmdbd opens its port before the schema exists: wait until sacctmgr gets an answer.
    local deadline=$((SECONDS + SACCTMGR_WAIT))
    while :; do
        clusters >/dev/null && break
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dir/slurmdbd.log" "$dir/slurmdbd.out" >&2 || true
            die "slurmdbd exited during startup (log: $dir/slurmdbd.log)"
        fi
        ((SECONDS < deadline)) || die "slurmdbd did not answer sacctmgr within ${SACCTMGR_WAIT} s (log: $dir/slurmdbd.log)"
        sleep 0.3
    done
    slurmdbd_pid >/dev/null || die "slurmdbd answers but $DBD_PID does not name this instance's slurmdbd (port taken?)"
}

ensure_cluster() {
    local cluster=$1 out
    clusters | grep -qxF "$cluster" && return 0
    log "adding cluster $cluster"
    # -i always: without a tty sacctmgr would otherwise loop forever asking to commit.
    out=$(sacctmgr_q -i add cluster "$cluster" 2>&1) || true
    clusters | grep -qxF "$cluster" || { printf '%s\n' "$out" >&2; die "could not add cluster $cluster"; }
}

# ---------------------------------------------------------------------------------------------
# Commands

resolve_dir() {
    local dir=$1
    [[ -n $dir ]] || die "--dir is required"
    mkdir -p "$dir"
    chmod 0700 "$dir"
    (cd "$dir" && pwd -P)
}

all_running() {
    mariadbd_pid >/dev/null && munged_pid >/dev/null && slurmdbd_pid >/dev/null
}

cmd_start() {
    local dir="" mysql_port="" dbd_port="" cluster=""
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            --mysql-port) mysql_port=${2:?--mysql-port needs a value}; shift 2 ;;
            --slurmdbd-port) dbd_port=${2:?--slurmdbd-port needs a value}; shift 2 ;;
            --cluster) cluster=${2:?--cluster needs a value}; shift 2 ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [[ -n $dir && -n $mysql_port && -n $dbd_port && -n $cluster ]] ||
        die "start needs --dir, --mysql-port, --slurmdbd-port and --cluster"
    check_port_arg --mysql-port "$mysql_port"
    check_port_arg --slurmdbd-port "$dbd_port"
    [[ $cluster =~ ^[a-z0-9_-]+$ ]] || die "bad cluster name (lowercase letters, digits, _, -): $cluster"
    dir=$(resolve_dir "$dir")
    set_paths "$dir"
    ((${#MUNGE_SOCK} < 100 && ${#MYSQL_SOCK} < 100)) || die "$dir is too long a path for UNIX sockets"

    # Fast path: everything up with these parameters and slurmdbd answering with the cluster.
    if [[ -r $dir/instance.conf && -s $dir/ro.url ]]; then
        # shellcheck source=/dev/null
        . "$dir/instance.conf"
        if [[ $INSTANCE_MYSQL_PORT == "$mysql_port" && $INSTANCE_SLURMDBD_PORT == "$dbd_port" &&
            $INSTANCE_CLUSTER == "$cluster" ]] && all_running &&
            clusters | grep -qxF "$cluster"; then
            return 0
        fi
    fi

    install_packages

    exec 9>"$dir/.lock"
    flock -w 120 9 || die "timed out waiting for the lock on $dir"

    # Ports are baked into running daemons: refuse to change them underneath.
    if [[ -r $dir/instance.conf ]]; then
        # shellcheck source=/dev/null
        . "$dir/instance.conf"
        if [[ $INSTANCE_MYSQL_PORT != "$mysql_port" || $INSTANCE_SLURMDBD_PORT != "$dbd_port" ]]; then
            if mariadbd_pid >/dev/null || munged_pid >/dev/null || slurmdbd_pid >/dev/null; then
                die "$dir runs with MariaDB port $INSTANCE_MYSQL_PORT and slurmdbd port $INSTANCE_SLURMDBD_PORT; stop it first to use $mysql_port/$dbd_port"
            fi
        fi
    fi

    ensure_password_file "$DBD_PW_FILE"
    ensure_password_file "$RO_PW_FILE"
    write_configs "$dir" "$mysql_port" "$dbd_port" "$cluster"
    write_instance_conf "$dir" "$mysql_port" "$dbd_port" "$cluster"

    ensure_mariadb "$dir"
    ensure_munge "$dir"
    ensure_slurmdbd "$dir"
    ensure_cluster "$cluster"
    write_urls "$dir" "$mysql_port"
}

# Sends SIGTERM to each "name:pid" given and waits until all are gone (SIGKILL after 15 s; the
# callers checked that the PIDs are this instance's daemons).
stop_pids() {
    local entry pid i left=()
    for entry in "$@"; do kill -TERM "${entry#*:}" 2>/dev/null || true; done
    for ((i = 0; i < 200; i++)); do
        left=()
        for entry in "$@"; do [[ -e /proc/${entry#*:} ]] && left+=("$entry"); done
        ((${#left[@]})) || return 0
        if ((i == 150)); then
            for entry in "${left[@]}"; do
                log "${entry%%:*} ${entry#*:} ignored SIGTERM for 15 s; sending SIGKILL"
                kill -KILL "${entry#*:}" 2>/dev/null || true
            done
        fi
        sleep 0.1
    done
    die "did not stop: ${left[*]}"
}

cmd_stop() {
    local dir=""
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            *) die "stop: unknown argument $1" ;;
        esac
    done
    [[ -n $dir ]] || die "stop needs --dir"
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd -P)
    set_paths "$dir"
    local pid first=() last=()
    # slurmdbd and munged together (each takes ~2 s to exit), MariaDB once slurmdbd is gone.
    if pid=$(slurmdbd_pid); then first+=("slurmdbd:$pid"); fi
    if pid=$(munged_pid); then first+=("munged:$pid"); fi
    if pid=$(mariadbd_pid); then last+=("mariadbd:$pid"); fi
    ((${#first[@]} == 0)) || stop_pids "${first[@]}"
    rm -f "$DBD_PID" "$MUNGE_PID"
    ((${#last[@]} == 0)) || stop_pids "${last[@]}"
    rm -f "$MYSQL_PID"
}

cmd_status() {
    local dir="" pid name ok=0
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            *) die "status: unknown argument $1" ;;
        esac
    done
    [[ -n $dir && -d $dir ]] || { echo "stopped"; return 1; }
    dir=$(cd "$dir" && pwd -P)
    set_paths "$dir"
    for name in mariadbd munged slurmdbd; do
        if pid=$("${name}_pid"); then
            echo "$name running pid $pid"
        else
            echo "$name stopped"
            ok=1
        fi
    done
    if ((ok == 0)) && ! clusters >/dev/null; then
        echo "sacctmgr gets no answer"
        ok=1
    fi
    return "$ok"
}

cmd_env() {
    local dir=""
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            *) die "env: unknown argument $1" ;;
        esac
    done
    [[ -n $dir ]] || die "env needs --dir"
    [[ -r $dir/instance.conf && -s $dir/ro.url && -s $dir/admin.url ]] ||
        die "$dir has not been started (no instance.conf / ro.url)"
    dir=$(cd "$dir" && pwd -P)
    set_paths "$dir"
    # shellcheck source=/dev/null
    . "$dir/instance.conf"
    local q="'\\''"
    shq() { printf "'%s'" "${1//\'/$q}"; }
    echo "export SLURM_CONF=$(shq "$SLURM_CONF_FILE")"
    echo "export SLURM_CLUSTER=$(shq "$INSTANCE_CLUSTER")"
    echo "export SLURMDB_RO_URL=$(shq "$(<"$dir/ro.url")")"
    echo "export SLURMDB_ADMIN_URL=$(shq "$(<"$dir/admin.url")")"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        env) cmd_env "$@" ;;
        install) install_packages ;;
        -h | --help | help) usage ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
