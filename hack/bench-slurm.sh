#!/usr/bin/env bash
# `make bench-slurm` (a benchmark, not a test): 1,000 accounts in 20 projects converged from
# nothing into a fresh Slurm cluster, next to the raw tool doing the same associations in bulk
# in the same run. Prints Roster's times, the baseline, the ratio and the sacctmgr calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=/dev/null
. .dev/env
N=${BENCH_N:-1000}
P=${BENCH_PROJECTS:-20}
cargo build --quiet --release --bin roster
roster=./target/release/roster
run=$(date +%s)
work=target/bench/slurm-$run
mkdir -p "$work"
ou="ou=bench-$run,$LDAP_BASE_DN"

# A directory subtree and two clusters of this run's own.
# shellcheck source=lib/bench.sh
. hack/lib/bench.sh
bench_subtree "$ou" "bench-$run"
roster_cluster=br$run
raw_cluster=bw$run
sacctmgr -i add cluster "$roster_cluster" "$raw_cluster" >/dev/null

sed -e "s|^  baseDN: .*|  baseDN: $ou|" -e "s|^  peopleDN: .*|  peopleDN: ou=people,$ou|" \
    -e "s|^  groupsDN: .*|  groupsDN: ou=groups,$ou|" -e "s|^  tombstonesDN: .*|  tombstonesDN: ou=tombstones,$ou|" \
    -e "s|^  countersDN: .*|  countersDN: ou=counters,$ou|" -e "s|^  clusters: .*|  clusters: [$roster_cluster]|" \
    -e "s|^  bindPasswordFile: .*|  bindPasswordFile: $PWD/.dev/ldap-admin.pw|" \
    -e "s|^  slurmConf: .*|  slurmConf: $SLURM_CONF|" -e "s|^  databaseUrlFile: .*|  databaseUrlFile: $PWD/.dev/slurm/ro.url|" \
    -e "s|^uidRange: .*|uidRange: {min: 100000, max: 999999}|" -e "s|^gidRange: .*|gidRange: {min: 100000, max: 999999}|" \
    .dev/roster.yaml >"$work/roster.yaml"
grep -v '^slurm:\|^  clusters:\|^  slurmConf:\|^  sacctmgr:\|^  databaseUrlFile:\|^  rootAccount:' "$work/roster.yaml" >"$work/ldap-only.yaml"

# The site: N accounts, P projects, each account in one project.
python3 - "$work/site.yaml" "$N" "$P" <<'PY'
import sys
out, n, p = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(out, "w") as f:
    for j in range(p):
        members = ", ".join(f"bu{i:05d}" for i in range(n) if i % p == j)
        f.write(f"---\napiVersion: roster.io/v1alpha1\nkind: Project\nmetadata: {{name: bp{j:03d}, namespace: bench}}\nspec:\n  members: [{members}]\n")
    for i in range(n):
        f.write(f"---\napiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {{name: bu{i:05d}, namespace: bench}}\nspec: {{givenName: Bench, familyName: User{i}}}\n")
        f.write(f"---\napiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: bu{i:05d}, namespace: bench}}\nspec: {{person: bu{i:05d}, username: bu{i:05d}}}\n")
PY

secs() { python3 -c 'import sys,time; print(f"{time.time():.3f}")'; }
t0=$(secs); "$roster" apply -f "$work/site.yaml" --config "$work/ldap-only.yaml" -o json >"$work/ldap.json"; t1=$(secs)
"$roster" apply -f "$work/site.yaml" --config "$work/roster.yaml" -o json >"$work/slurm.json"; t2=$(secs)
"$roster" apply -f "$work/site.yaml" --config "$work/roster.yaml" -o json >"$work/noop.json"; t3=$(secs)
calls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["slurm"]["invocations"])' "$work/slurm.json")
noop_calls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["slurm"]["invocations"])' "$work/noop.json")

# The raw baseline: the same accounts and associations in bulk, one sacctmgr call per project.
t4=$(secs)
accounts=$(python3 -c "print(','.join(f'bp{j:03d}' for j in range($P)))")
sacctmgr -i add account "name=$accounts" "cluster=$raw_cluster" parent=root >/dev/null
for ((j = 0; j < P; j++)); do
    users=$(python3 -c "print(','.join(f'bu{i:05d}' for i in range($N) if i % $P == $j))")
    sacctmgr -i add user "name=$users" "account=bp$(printf %03d "$j")" "cluster=$raw_cluster" >/dev/null
done
t5=$(secs)

python3 - "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$N" "$P" "$calls" "$noop_calls" <<'PY'
import sys
t0, t1, t2, t3, t4, t5 = map(float, sys.argv[1:7]); n, p, calls, noop = sys.argv[7:]
slurm, raw = t2 - t1, t5 - t4
print(f"{'scenario':48} {'seconds':>8}")
print(f"{'roster apply, LDAP only (' + n + ' accounts)':48} {t1 - t0:8.2f}")
print(f"{'roster apply, Slurm from nothing (' + p + ' projects)':48} {slurm:8.2f}   sacctmgr calls: {calls}")
print(f"{'raw: sacctmgr bulk add (1 call per project)':48} {raw:8.2f}   sacctmgr calls: {int(p) + 1}")
print(f"{'ratio roster / raw (Slurm part)':48} {slurm / raw:8.2f}")
print(f"{'roster apply, no-op resync (LDAP + Slurm)':48} {t3 - t2:8.2f}   sacctmgr calls: {noop}")
PY
echo "(work files in $work; clusters $roster_cluster and $raw_cluster and $ou are left for inspection)"
