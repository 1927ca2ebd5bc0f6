#!/usr/bin/env bash
# `make demo`: converge examples/site into the dev directory (make ran hack/dev-up.sh) and show
# the result. Running it again shows that a converged site needs no changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=/dev/null
. .dev/env

cargo build --quiet
roster=${CARGO_TARGET_DIR:-target}/debug/roster
config=.dev/roster.yaml
# With the consumers running (hack/dev-up.sh as root), the site also lives on the cluster of the
# dev slurmctld, so the scheduler's answers can be shown at the end.
if [[ -n ${BOX_CLUSTER:-} ]]; then
    sed "s/^  clusters: \[\(.*\)\]$/  clusters: [\1, $BOX_CLUSTER]/" .dev/roster.yaml >.dev/roster-demo.yaml
    config=.dev/roster-demo.yaml
fi

echo "== roster config check"
"$roster" config check --config "$config"
echo
echo "== roster plan -f examples/site   (exit 0: nothing to do, 2: changes, 3: blocked objects)"
set +e
"$roster" plan -f examples/site --config "$config"
echo "(exit $?)"
set -e
echo
echo "== roster apply -f examples/site --report .dev/import-summary.csv"
"$roster" apply -f examples/site --config "$config" --report .dev/import-summary.csv
echo
echo "== the import's summary, row by row (.dev/import-summary.csv)"
column -s, -t <.dev/import-summary.csv 2>/dev/null || cat .dev/import-summary.csv
echo

# shellcheck source=lib/show-ldap.sh
. hack/lib/show-ldap.sh
echo "== one entry in full: the locked account lwei"
search -b "ou=people,$LDAP_BASE_DN" "(uid=lwei)" '*' pwdAccountLockedTime
if [[ -n ${SLURM_CONF:-} ]]; then
    echo
    echo "== Slurm accounting on cluster $SLURM_CLUSTER (sacctmgr show assoc)"
    sacctmgr -nP show assoc "cluster=$SLURM_CLUSTER" format=Account,User,MaxJobs,MaxSubmit |
        awk -F'|' 'BEGIN { printf "%-12s %-12s %-8s %s\n", "ACCOUNT", "USER", "MAXJOBS", "MAXSUBMIT" }
                   $1 != "root" { printf "%-12s %-12s %-8s %s\n", $1, ($2 == "" ? "(account)" : $2), $3, $4 }'
    echo
    echo "== default accounts and coordinators (sacctmgr show user)"
    # Users are global in Slurm: show those with an association on this cluster.
    on_cluster=$(sacctmgr -nP show assoc "cluster=$SLURM_CLUSTER" format=User | sort -u | tr '\n' ' ')
    sacctmgr -nP show user withcoord format=User,DefaultAccount,Coordinators |
        awk -F'|' -v users=" $on_cluster " '$1 != "root" && index(users, " " $1 " ") {
            printf "%-12s default %-12s %s\n", $1, $2, ($3 == "" ? "" : "coordinator of " $3) }'
fi
echo
echo "== guests: their accounts follow the guest policy (shadowExpire = validUntil + login grace)"
search -b "ou=people,$LDAP_BASE_DN" "(|(uid=mvisitor)(uid=optics-sync))" uid shadowExpire
if grep -q '^gold:' "$config"; then
    echo
    echo "== Gold (roster gold: read over Gold's protocol from the dev Gold test server)"
    "$roster" gold --config "$config"
fi
if [[ -n ${BOX_SLURM_CONF:-} ]]; then
    echo
    echo "== what a login node and the scheduler see (sssd; slurmctld of cluster $BOX_CLUSTER)"
    for cmd in "getent passwd ada" "id ada" "getent group optics"; do
        echo "\$ $cmd"
        $cmd || true
    done
    for user in ada lwei; do
        echo "\$ pamtester roster-login $user acct_mgmt"
        pamtester roster-login "$user" acct_mgmt 2>&1 || true
    done
    for user in ada lwei; do
        echo "\$ sbatch --uid $user -A optics --test-only --wrap true"
        SLURM_CONF=$BOX_SLURM_CONF sbatch --uid "$user" -A optics --test-only --wrap true 2>&1 || true
    done
    echo "(lwei is locked: pwdAccountLockedTime and shadowExpire in the directory, MaxSubmitJobs=0 in Slurm)"
fi
cat <<MSG
The dev directory runs at $LDAP_URI (base $LDAP_BASE_DN) with Roster's schema loaded.
Look around yourself:
    source .dev/env
    ldapsearch -x -D "\$LDAP_BIND_DN" -y "\$LDAP_BIND_PASSWORD_FILE" -b "\$LDAP_BASE_DN"
Edit examples/site and run \`make demo\` again to see the plan and the change. Stop: make dev-down
MSG
