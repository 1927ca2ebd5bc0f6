#!/usr/bin/env bash
# Prints the accounts and project groups of the dev directory as tables (sourced by the demos;
# needs .dev/env sourced first).

search() {
    ldapsearch -LLL -o ldif-wrap=no -x -H "$LDAP_URI" -D "$LDAP_BIND_DN" -y "$LDAP_BIND_PASSWORD_FILE" "$@"
}

echo "== accounts in ou=people (ldapsearch)"
search -b "ou=people,$LDAP_BASE_DN" -s one "(objectClass=posixAccount)" \
    uid uidNumber gidNumber cn loginShell rosterState rosterOwner sshPublicKey pwdAccountLockedTime |
    awk -F': ' '
        function flush() {
            if (uid != "") printf "%-11s %6s %6s  %-12s %-10s %-4s %-33s %s\n", uid, un, gn, state, shell, keys, owner, cn
            uid = un = gn = cn = shell = state = owner = ""; keys = "-"
        }
        BEGIN { keys = "-"; printf "%-11s %6s %6s  %-12s %-10s %-4s %-33s %s\n", "USERNAME", "UID", "GID", "STATE", "SHELL", "SSH", "OWNER", "NAME" }
        /^dn:/ { flush() }
        $1 == "uid" { uid = $2 } $1 == "uidNumber" { un = $2 } $1 == "gidNumber" { gn = $2 }
        $1 == "cn" { cn = $2 } $1 == "cn:" { cmd = "printf %s " $2 " | base64 -d"; cmd | getline cn; close(cmd) } $1 == "loginShell" { shell = $2 }
        $1 == "rosterState" { state = $2 } $1 == "rosterOwner" { owner = $2 }
        $1 == "sshPublicKey" { keys = "yes" }
        $1 == "pwdAccountLockedTime" { state = state "+lock" }
        END { flush() }' | sort -k1,1 -s | (read -r header; echo "$header"; sort)
echo
echo "== project groups in ou=groups"
search -b "ou=groups,$LDAP_BASE_DN" -s one "(&(objectClass=posixGroup)(rosterKind=Project))" cn gidNumber memberUid rosterOwner |
    awk -F': ' '
        function flush() { if (cn != "") printf "%-10s %6s  %-30s %s\n", cn, gid, owner, members; cn = gid = owner = members = "" }
        BEGIN { printf "%-10s %6s  %-30s %s\n", "GROUP", "GID", "OWNER", "MEMBERS" }
        /^dn:/ { flush() }
        $1 == "cn" { cn = $2 } $1 == "gidNumber" { gid = $2 } $1 == "rosterOwner" { owner = $2 }
        $1 == "memberUid" { members = members (members == "" ? "" : " ") $2 }
        END { flush() }'
echo
