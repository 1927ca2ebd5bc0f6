#!/usr/bin/env bash
# Start and stop one private OpenLDAP slapd instance for development and tests.
#
# Usage:
#   hack/lib/slapd.sh start  --dir DIR --port PORT --base DN [--password-file FILE] [--bare]
#                            [--ldaps-port PORT2]
#   hack/lib/slapd.sh stop   --dir DIR
#   hack/lib/slapd.sh status --dir DIR        # exit 0 if running and answering, 1 otherwise
#   hack/lib/slapd.sh ldapi-uri --dir DIR     # print the (url-encoded) ldapi:// URL of DIR
#   hack/lib/slapd.sh install                 # install slapd + ldap-utils if missing
#
# start   Creates the instance on first use (cn=config generated with slapadd under
#         DIR/slapd.d, data under DIR/data, base entries loaded with slapadd), then starts slapd
#         as the invoking user, listening on ldap://127.0.0.1:PORT/ and on the UNIX socket
#         DIR/ldapi, and waits (at most ~10 s) until it answers. If the instance already runs
#         and answers, it does nothing. The rootDN is cn=admin,<DN>; its password is read
#         from FILE (whole file, no trailing newline), by default DIR/admin.pw, which is
#         generated (mode 0600) when missing. Changing FILE's content later updates the rootPW.
#         --bare leaves out Roster's schema (roster.ldif) and openssh-lpk: a directory Roster
#         must refuse. The base DN and --bare are fixed when the instance is created.
#         --ldaps-port also listens on ldaps://127.0.0.1:PORT2/ (TLS from the start).
#
# TLS: every instance offers StartTLS on its ldap:// port. On first use openssl generates a
# self-signed CA (DIR/tls/ca.pem, key ca.key) and a server certificate for IP 127.0.0.1 and
# DNS localhost signed by it (DIR/tls/server.pem, key server.key; EC P-256 in PKCS#8, which
# Debian's GnuTLS-built slapd reads; keys mode 0600, readable by the uid running slapd), and
# cn=config names them (olcTLSCACertificateFile, olcTLSCertificateFile,
# olcTLSCertificateKeyFile). An instance created before TLS existed gets them at its next
# start call: changed in the running slapd over ldapi (no restart), or offline (slapmodify)
# when it is stopped. Clients verify the server with DIR/tls/ca.pem (for OpenLDAP's tools:
# LDAPTLS_CACERT=DIR/tls/ca.pem ldapsearch -ZZ ...). Plain LDAP stays allowed.
# stop    Stops the instance by the PID in DIR/slapd.pid after checking it is this instance's
#         slapd (/proc/PID/comm and command line), and waits until it is gone.
#
# The config database is managed by SASL EXTERNAL over ldapi for the uid running slapd:
#   ldapmodify -Y EXTERNAL -H "$(hack/lib/slapd.sh ldapi-uri --dir DIR)" ...
# cn=Monitor (operation counters under cn=Operations,cn=Monitor) is readable by the rootDN.
# slapd runs in the foreground of its own session; its log (errors only, or the levels in
# ROSTER_SLAPD_DEBUG, e.g. "stats") goes to DIR/slapd.log.
# Nothing outside DIR is written (except installing the packages when they are missing).
set -euo pipefail

SLAPD_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$SLAPD_LIB_DIR/../.." && pwd -P)
SCHEMA_DIR=$REPO_ROOT/src/ldap/schema

# Package locations (Debian's slapd package), not machine-specific.
SYS_MODULE_PATH=/usr/lib/ldap
SYS_SCHEMA_PATH=/etc/ldap/schema
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac

# Internal tool calls must not pick up ldap.conf, ~/.ldaprc or LDAP* variables
# (e.g. LDAPBINDDN from a sourced .dev/env).
ldap_tool() { LDAPNOINIT=1 "$@"; }

die() { echo "slapd.sh: error: $*" >&2; exit 1; }
log() { echo "slapd.sh: $*" >&2; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; }

# ---------------------------------------------------------------------------------------------
# Installation

install_packages() {
    local missing=0 bin
    for bin in slapd slapadd slapmodify slappasswd ldapsearch ldapadd ldapmodify openssl; do
        command -v "$bin" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    log "installing slapd and ldap-utils"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "slapd/ldap-utils missing and not root (no sudo)"
        sudo=(sudo)
    fi
    # A policy-rc.d that exits 101 keeps the package scripts from starting a system slapd.
    local prc=/usr/sbin/policy-rc.d backup=""
    if [[ ! -e $prc ]] || ! grep -qx 'exit 101' "$prc"; then
        if [[ -e $prc ]]; then
            backup=$(mktemp)
            "${sudo[@]}" cp -p "$prc" "$backup"
        fi
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$prc" >/dev/null
        "${sudo[@]}" chmod 0755 "$prc"
        # shellcheck disable=SC2064  # expand now: restore exactly what was there before
        trap "if [[ -n '$backup' ]]; then ${sudo[*]} cp -p '$backup' '$prc'; rm -f '$backup'; else ${sudo[*]} rm -f '$prc'; fi" EXIT
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends slapd ldap-utils openssl
    for bin in slapd slapadd slapmodify slappasswd ldapsearch ldapadd ldapmodify openssl; do
        command -v "$bin" >/dev/null 2>&1 || die "$bin still missing after install"
    done
}

# ---------------------------------------------------------------------------------------------
# Helpers

urlencode() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [A-Za-z0-9._~-]) out+=$c ;;
            *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

ldapi_uri_for() { printf 'ldapi://%s/' "$(urlencode "$1/ldapi")"; }

# Close every inherited descriptor above 2 (e.g. lock files held by callers), so that the
# daemon does not keep them open. Bash's own fd 255 is close-on-exec already.
close_fds() {
    local fd
    for fd in /proc/self/fd/*; do
        fd=${fd##*/}
        if ((fd > 2 && fd != 255)); then eval "exec $fd>&-"; fi
    done
}

# Prints the PID if DIR's slapd runs (by PID file, comm and command line), else fails.
running_pid() {
    local dir=$1 pid comm
    [[ -r $dir/slapd.pid ]] || return 1
    read -r pid <"$dir/slapd.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == slapd ]] || return 1
    # Same slapd instance: its command line names this instance's config directory.
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$dir/slapd.d" || return 1
    printf '%s\n' "$pid"
}

answers() {
    local port=$1
    ldap_tool ldapsearch -x -LLL -o nettimeout=2 -H "ldap://127.0.0.1:$port/" \
        -s base -b "" 1.1 >/dev/null 2>&1
}

read_password() {
    local file=$1 pw
    [[ -r $file ]] || die "cannot read password file $file"
    pw=$(<"$file")
    [[ -n $pw ]] || die "password file $file is empty"
    printf '%s' "$pw"
}

ensure_password_file() {
    local file=$1
    [[ -e $file ]] && return 0
    (
        umask 077
        local tmp
        tmp=$(mktemp "$file.XXXXXX")
        printf '%s' "$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >"$tmp"
        mv -f "$tmp" "$file"
    )
}

sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# A checksum of the schema files an instance is created with (bare instances have none).
schema_sum() {
    local bare=$1
    ((bare)) && { printf 'bare'; return; }
    cat "$SCHEMA_DIR/openssh-lpk.ldif" "$SCHEMA_DIR/roster.ldif" | sha256sum | cut -d' ' -f1
}

# A dev instance created with an older Roster schema is created again (its data is test data;
# a site updates its schema as docs/operations.md says): stopped, its instance.conf removed.
drop_if_schema_changed() {
    local dir=$1 bare=$2
    [[ -e $dir/instance.conf ]] || return 0
    local INSTANCE_SCHEMA_SHA256=""
    # shellcheck source=/dev/null
    . "$dir/instance.conf"
    [[ $INSTANCE_SCHEMA_SHA256 == "$(schema_sum "$bare")" ]] && return 0
    log "Roster's LDAP schema changed since $dir was created: creating the dev instance again"
    cmd_stop --dir "$dir"
    rm -f "$dir/instance.conf"
}

# ---------------------------------------------------------------------------------------------
# TLS

# A fresh random serial number for a certificate.
cert_serial() { printf '0x%s' "$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"; }

# Generates DIR/tls (CA and server certificate) unless it is complete. Call under the lock.
ensure_tls_files() {
    local dir=$1 tls=$1/tls
    [[ -s $tls/ca.pem && -s $tls/server.pem && -s $tls/server.key ]] && return 0
    log "generating a CA and a server certificate for 127.0.0.1/localhost in $tls"
    rm -rf "$tls.new"
    mkdir -m 0700 "$tls.new"
    if ! (
        umask 077
        cd "$tls.new"
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout ca.key -out ca.pem -days 3650 -set_serial "$(cert_serial)" \
            -subj "/O=Roster development/CN=Roster dev CA $(date -u +%Y%m%d%H%M%S)" \
            -addext 'basicConstraints=critical,CA:TRUE' \
            -addext 'keyUsage=critical,keyCertSign,cRLSign'
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout server.key -out server.csr -subj '/O=Roster development/CN=127.0.0.1'
        printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' \
            'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
            'extendedKeyUsage=serverAuth' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "$(cert_serial)" \
            -days 825 -extfile server.ext -out server.pem
        rm -f server.csr server.ext
        chmod 0644 ca.pem server.pem
    ) >"$dir/openssl.log" 2>&1; then
        cat "$dir/openssl.log" >&2
        die "generating TLS certificates in $tls.new failed"
    fi
    rm -rf "$tls"
    mv "$tls.new" "$tls"
}

# The cn=config attributes naming DIR/tls.
tls_attrs() {
    printf 'olcTLSCACertificateFile: %s/tls/ca.pem\n' "$1"
    printf 'olcTLSCertificateFile: %s/tls/server.pem\n' "$1"
    printf 'olcTLSCertificateKeyFile: %s/tls/server.key\n' "$1"
}

# The same as one modification of cn=config (certificate and key change together).
tls_modify_ldif() {
    local attr sep=""
    printf 'dn: cn=config\nchangetype: modify\n'
    while IFS= read -r attr; do
        printf '%sreplace: %s\n%s\n' "$sep" "${attr%%:*}" "$attr"
        sep=$'-\n'
    done < <(tls_attrs "$1")
}

# True when cn=config (as slapd last wrote it) names DIR/tls and the files exist.
tls_configured() {
    local dir=$1 conf=$1/slapd.d/cn=config.ldif unfolded attr
    [[ -s $dir/tls/ca.pem && -s $dir/tls/server.pem && -s $dir/tls/server.key && -r $conf ]] ||
        return 1
    # Undo LDIF line folding, then look for each attribute.
    unfolded=$(sed -e ':a' -e 'N' -e '$!ba' -e 's/\n //g' "$conf")
    while IFS= read -r attr; do
        grep -qxF "$attr" <<<"$unfolded" || return 1
    done < <(tls_attrs "$dir")
}

# Makes the instance offer TLS with DIR/tls: in the running slapd over ldapi, or offline.
# Call under the lock.
ensure_tls() {
    local dir=$1
    ensure_tls_files "$dir"
    tls_configured "$dir" && return 0
    if running_pid "$dir" >/dev/null; then
        log "enabling TLS in the running slapd of $dir (CA $dir/tls/ca.pem)"
        tls_modify_ldif "$dir" |
            ldap_tool ldapmodify -Q -Y EXTERNAL -H "$(ldapi_uri_for "$dir")" >/dev/null ||
            die "cn=config refused the TLS settings (see $dir/slapd.log)"
    else
        log "enabling TLS in the configuration of $dir (CA $dir/tls/ca.pem)"
        tls_modify_ldif "$dir" | slapmodify -n0 -F "$dir/slapd.d" >>"$dir/slapadd.log" 2>&1 ||
            { tail -n 5 "$dir/slapadd.log" >&2; die "slapmodify of the TLS settings failed"; }
    fi
}

# ---------------------------------------------------------------------------------------------
# Instance creation

# LDIF for the suffix entry, from the first RDN of the base DN.
suffix_entry_ldif() {
    local base=$1 rdn attr val
    rdn=${base%%,*}
    attr=${rdn%%=*}
    val=${rdn#*=}
    printf 'dn: %s\n' "$base"
    case ${attr,,} in
        dc) printf 'objectClass: top\nobjectClass: dcObject\nobjectClass: organization\ndc: %s\no: %s\n' "$val" "$val" ;;
        o) printf 'objectClass: top\nobjectClass: organization\no: %s\n' "$val" ;;
        ou) printf 'objectClass: top\nobjectClass: organizationalUnit\nou: %s\n' "$val" ;;
        *) die "base DN must start with dc=, o= or ou=: $base" ;;
    esac
}

base_ldif() {
    local base=$1 ou
    suffix_entry_ldif "$base"
    for ou in people groups tombstones counters policies; do
        printf '\ndn: ou=%s,%s\nobjectClass: top\nobjectClass: organizationalUnit\nou: %s\n' \
            "$ou" "$base" "$ou"
    done
    cat <<EOF

dn: cn=default,ou=policies,$base
objectClass: top
objectClass: organizationalRole
objectClass: pwdPolicy
cn: default
description: Default password policy (pwdAccountLockedTime 000001010000Z locks an account)
pwdAttribute: userPassword
pwdLockout: TRUE
EOF
}

config_ldif() {
    local dir=$1 base=$2 bare=$3 rootpw_hash=$4 peercred schema
    peercred="gidNumber=$(id -g)+uidNumber=$(id -u),cn=peercred,cn=external,cn=auth"
    cat <<EOF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $dir/slapd.pid
olcArgsFile: $dir/slapd.args
olcLogLevel: none
$(tls_attrs "$dir")

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: $SYS_MODULE_PATH
olcModuleLoad: back_mdb
olcModuleLoad: ppolicy
olcModuleLoad: syncprov
EOF
    # Debian builds back_monitor into slapd; load it only where it is a module.
    if [[ -e $SYS_MODULE_PATH/back_monitor.la || -e $SYS_MODULE_PATH/back_monitor.so ]]; then
        echo 'olcModuleLoad: back_monitor'
    fi
    printf '\ndn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n'
    local schemas=("$SYS_SCHEMA_PATH"/{core,cosine,nis,inetorgperson}.ldif)
    if [[ $bare == 0 ]]; then
        schemas+=("$SCHEMA_DIR/openssh-lpk.ldif" "$SCHEMA_DIR/roster.ldif")
    fi
    for schema in "${schemas[@]}"; do
        [[ -r $schema ]] || die "schema file missing: $schema"
        printf '\n'
        cat "$schema"
        # Make sure the record is terminated even if the file lacks a final newline.
        [[ -z $(tail -c1 "$schema") ]] || printf '\n'
    done
    cat <<EOF

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcAccess: {0}to dn.base="" by * read
olcAccess: {1}to dn.base="cn=Subschema" by * read

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by dn.exact="$peercred" manage by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcDbDirectory: $dir/data
olcSuffix: $base
olcRootDN: cn=admin,$base
olcRootPW: $rootpw_hash
olcDbMaxSize: 1073741824
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: uid,uidNumber,gidNumber,memberUid eq
olcDbIndex: cn eq,sub
EOF
    if [[ $bare == 0 ]]; then
        printf 'olcDbIndex: rosterOwner eq\nolcDbIndex: entryCSN eq\n'
    fi
    cat <<EOF
olcAccess: {0}to * by dn.exact="$peercred" manage by * break
olcAccess: {1}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {2}to * by * read

dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 100 5

dn: olcOverlay={1}ppolicy,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {1}ppolicy
olcPPolicyDefault: cn=default,ou=policies,$base

dn: olcDatabase={2}monitor,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {2}monitor
olcAccess: {0}to * by dn.exact="cn=admin,$base" read by dn.exact="$peercred" read by * none
EOF
}

create_instance() {
    local dir=$1 base=$2 bare=$3 pwfile=$4 pw
    pw=$(read_password "$pwfile")
    # A previous creation that did not finish leaves no instance.conf: start over.
    rm -rf "$dir/slapd.d" "$dir/data" "$dir/config.ldif" "$dir/base.ldif"
    mkdir -p "$dir/slapd.d" "$dir/data"
    ensure_tls_files "$dir"
    (
        umask 077
        config_ldif "$dir" "$base" "$bare" "$(slappasswd -s "$pw")" >"$dir/config.ldif"
        base_ldif "$base" >"$dir/base.ldif"
    )
    slapadd -n0 -F "$dir/slapd.d" -l "$dir/config.ldif" >"$dir/slapadd.log" 2>&1 \
        || { cat "$dir/slapadd.log" >&2; die "slapadd of cn=config failed (see $dir/config.ldif)"; }
    # -w writes contextCSN on the suffix entry (syncprov).
    slapadd -q -w -F "$dir/slapd.d" -b "$base" -l "$dir/base.ldif" >>"$dir/slapadd.log" 2>&1 \
        || { cat "$dir/slapadd.log" >&2; die "slapadd of base entries failed (see $dir/base.ldif)"; }
    {
        printf '# Written by hack/lib/slapd.sh when the instance was created.\n'
        printf 'INSTANCE_BASE=%q\nINSTANCE_BARE=%q\nINSTANCE_PW_SHA256=%q\nINSTANCE_SCHEMA_SHA256=%q\n' \
            "$base" "$bare" "$(sha256 "$pw")" "$(schema_sum "$bare")"
    } >"$dir/instance.conf"
}

# Update olcRootPW when the password file changed since creation (instance running).
sync_root_password() {
    local dir=$1 pwfile=$2 pw sum
    pw=$(read_password "$pwfile")
    sum=$(sha256 "$pw")
    [[ $sum == "$INSTANCE_PW_SHA256" ]] && return 0
    log "password file changed: updating the rootPW of $dir"
    printf 'dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcRootPW\nolcRootPW: %s\n' \
        "$(slappasswd -s "$pw")" |
        ldap_tool ldapmodify -Q -Y EXTERNAL -H "$(ldapi_uri_for "$dir")" >/dev/null
    sed -i "s/^INSTANCE_PW_SHA256=.*/INSTANCE_PW_SHA256=$sum/" "$dir/instance.conf"
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_start() {
    local dir="" port="" base="" pwfile="" bare=0 ldaps_port=""
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            --port) port=${2:?--port needs a value}; shift 2 ;;
            --ldaps-port) ldaps_port=${2:?--ldaps-port needs a value}; shift 2 ;;
            --base) base=${2:?--base needs a value}; shift 2 ;;
            --password-file) pwfile=${2:?--password-file needs a value}; shift 2 ;;
            --bare) bare=1; shift ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [[ -n $dir && -n $port && -n $base ]] || die "start needs --dir, --port and --base"
    local p
    for p in "$port" ${ldaps_port:+"$ldaps_port"}; do
        if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad port: $p"; fi
    done
    local urls="ldap://127.0.0.1:$port/"
    [[ -z $ldaps_port ]] || urls+=" ldaps://127.0.0.1:$ldaps_port/"

    mkdir -p "$dir"
    chmod 0700 "$dir"
    dir=$(cd "$dir" && pwd -P)
    local sock=$dir/ldapi
    ((${#sock} < 108)) || die "ldapi socket path too long for a UNIX socket: $sock"
    [[ -n $pwfile ]] || pwfile=$dir/admin.pw
    ensure_password_file "$pwfile"

    drop_if_schema_changed "$dir" "$bare"
    # Fast path: already running and answering.
    if [[ -e $dir/instance.conf ]] && running_pid "$dir" >/dev/null && answers "$port" &&
        tls_configured "$dir"; then
        # shellcheck source=/dev/null
        . "$dir/instance.conf"
        check_params "$dir" "$base" "$bare"
        check_port "$dir" "$urls"
        sync_root_password "$dir" "$pwfile"
        return 0
    fi

    install_packages

    exec 9>"$dir/.lock"
    flock -w 60 9 || die "timed out waiting for the lock on $dir"

    if [[ ! -e $dir/instance.conf ]]; then
        log "creating instance in $dir (base $base$( ((bare)) && echo ', bare'))"
        create_instance "$dir" "$base" "$bare" "$pwfile"
    fi
    # shellcheck source=/dev/null
    . "$dir/instance.conf"
    check_params "$dir" "$base" "$bare"
    ensure_tls "$dir"

    local pid
    if pid=$(running_pid "$dir"); then
        check_port "$dir" "$urls"
    else
        rm -f "$dir/slapd.pid" "$sock"
        # Foreground (-d) under setsid rather than slapd's own daemon mode: in daemon mode its
        # errors (e.g. "bind failed ... Address already in use") go only to syslog.
        printf '=== %s start %s\n' "$(date -u +%FT%TZ)" "$urls" >>"$dir/slapd.log"
        (
            close_fds
            exec setsid slapd -d "${ROSTER_SLAPD_DEBUG:-none}" -F "$dir/slapd.d" \
                -h "$urls $(ldapi_uri_for "$dir")"
        ) </dev/null >>"$dir/slapd.log" 2>&1 &
    fi

    # Wait (bounded) until it answers.
    local i
    for ((i = 0; i < 100; i++)); do
        if answers "$port"; then
            running_pid "$dir" >/dev/null || die "port $port answers, but not with this instance's slapd (port taken?)"
            sync_root_password "$dir" "$pwfile"
            return 0
        fi
        if ((i > 5)) && ! running_pid "$dir" >/dev/null; then
            tail -n 20 "$dir/slapd.log" >&2 || true
            die "slapd in $dir exited during startup (log: $dir/slapd.log)"
        fi
        sleep 0.1
    done
    tail -n 20 "$dir/slapd.log" >&2 || true
    die "slapd in $dir did not answer on port $port within 10 s"
}

check_params() {
    local dir=$1 base=$2 bare=$3
    [[ ${INSTANCE_BASE,,} == "${base,,}" && $INSTANCE_BARE == "$bare" ]] ||
        die "$dir was created with base '$INSTANCE_BASE' bare=$INSTANCE_BARE, not base '$base' bare=$bare; stop it and remove the directory"
}

# Dies unless DIR's running slapd listens on each of URLS (as started).
check_port() {
    local dir=$1 urls=$2 pid url
    pid=$(running_pid "$dir") || return 0
    for url in $urls; do
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF "$url" ||
            die "$dir's slapd (pid $pid) does not listen on $url; stop it first"
    done
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
    local pid i
    if ! pid=$(running_pid "$dir"); then
        rm -f "$dir/slapd.pid"
        return 0
    fi
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
        [[ -e /proc/$pid ]] || { rm -f "$dir/slapd.pid"; return 0; }
        sleep 0.1
    done
    # Still there after 10 s: it is ours (checked above); kill it hard.
    log "slapd $pid in $dir ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        [[ -e /proc/$pid ]] || { rm -f "$dir/slapd.pid"; return 0; }
        sleep 0.1
    done
    die "slapd $pid in $dir did not stop"
}

cmd_status() {
    local dir="" pid port
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            *) die "status: unknown argument $1" ;;
        esac
    done
    [[ -n $dir && -d $dir ]] || { echo "stopped"; return 1; }
    dir=$(cd "$dir" && pwd -P)
    if pid=$(running_pid "$dir"); then
        port=$(tr '\0' '\n' <"/proc/$pid/cmdline" | grep -o 'ldap://127\.0\.0\.1:[0-9]*' | head -n1)
        port=${port##*:}
        if answers "$port"; then
            echo "running pid $pid port $port"
            return 0
        fi
        echo "running pid $pid port $port (not answering)"
        return 1
    fi
    echo "stopped"
    return 1
}

cmd_ldapi_uri() {
    local dir=""
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            *) die "ldapi-uri: unknown argument $1" ;;
        esac
    done
    [[ -n $dir ]] || die "ldapi-uri needs --dir"
    dir=$(realpath -m "$dir")
    ldapi_uri_for "$dir"
    echo
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        ldapi-uri) cmd_ldapi_uri "$@" ;;
        install) install_packages ;;
        -h | --help | help) usage ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
