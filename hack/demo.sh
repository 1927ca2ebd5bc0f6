#!/usr/bin/env bash
# `make demo`: the dev directory is up (make ran hack/dev-up.sh); check it the way Roster does
# and show how to reach it. Converging examples/site arrives with `roster apply`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=/dev/null
. .dev/env

cargo build --quiet
echo
echo "== roster config check --config .dev/roster.yaml"
./target/debug/roster config check --config .dev/roster.yaml
echo
echo "== the dev directory (ldapsearch -LLL -x -D \"\$LDAP_BIND_DN\" -y \"\$LDAP_BIND_PASSWORD_FILE\" -b \"\$LDAP_BASE_DN\" dn)"
ldapsearch -LLL -x -H "$LDAP_URI" -D "$LDAP_BIND_DN" -y "$LDAP_BIND_PASSWORD_FILE" \
    -b "$LDAP_BASE_DN" -s one dn
cat <<MSG

The dev directory runs at $LDAP_URI (base $LDAP_BASE_DN), with Roster's schema loaded.
Reach it from a shell:
    source .dev/env
    ldapsearch -x -D "\$LDAP_BIND_DN" -y "\$LDAP_BIND_PASSWORD_FILE" -b "\$LDAP_BASE_DN"
Stop it with: make dev-down
MSG
