#!/usr/bin/env bash
# `make bench-import` (a benchmark, not a test): an ImportSource of 50,000 CSV rows planned
# against 50,000 people it imported before, in a directory subtree of this run's own. Prints
# the time and peak memory of the plan, and shows that re-running the unchanged source writes
# nothing. BENCH_N changes the size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=/dev/null
. .dev/env
N=${BENCH_N:-50000}
cargo build --quiet --release --bin roster
roster=${CARGO_TARGET_DIR:-target}/release/roster
run=$(date +%s)
work=target/bench/import-$run
mkdir -p "$work/manifests"
ou="ou=bench-$run,$LDAP_BASE_DN"

# shellcheck source=lib/bench.sh
. hack/lib/bench.sh
bench_subtree "$ou" "bench-$run"

cat >"$work/roster.yaml" <<YAML
managerId: bench$run
ldap:
  uri: $LDAP_URI
  bindDN: $LDAP_BIND_DN
  bindPasswordFile: $PWD/.dev/ldap-admin.pw
  baseDN: $ou
  peopleDN: ou=people,$ou
  groupsDN: ou=groups,$ou
  tombstonesDN: ou=tombstones,$ou
  countersDN: ou=counters,$ou
uidRange: {min: 100000, max: 999999}
gidRange: {min: 100000, max: 999999}
YAML

# N people with German names (umlauts), generated usernames with counters.
python3 - "$work/manifests/people.csv" "$N" <<'PY'
import sys, random
out, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
first = ["Jürgen", "Anna", "Björn", "Zoë", "Maria", "Lukas", "Sören", "Chloé", "Jan", "Eva", "Åsa", "Jörg"]
last = ["Müller", "Schmidt", "Groß", "Weiß", "Öztürk", "Nguyen", "Lefèvre", "Novák", "Berg", "Kühn"]
with open(out, "w", encoding="utf-8") as f:
    f.write("id;first;last\n")
    for i in range(n):
        f.write(f"{100000 + i};{rnd.choice(first)};{rnd.choice(last)}{i % 997}\n")
PY
cat >"$work/manifests/import.yaml" <<'YAML'
apiVersion: roster.io/v1alpha1
kind: ImportSource
metadata: {name: bench, namespace: bench}
spec:
  sourceUID: bench
  reader:
    type: Csv
    csv: {path: people.csv}
  mapping: {id: employeeNumber, first: givenName, last: familyName}
  recordUID: <employeeNumber>
  usernameScheme: {template: "<:umlauts><:lower><firstname>[0]<lastname>[COUNTER2]", maxLength: 16}
  mode: Sync
YAML

measure() { # label, then the command; prints wall time and peak RSS
    local label=$1 rc
    shift
    set +e
    /usr/bin/time -f "$label: %e s, peak memory %M KiB" "$@" >"$work/$label.out" 2>"$work/$label.err"
    rc=$?
    set -e
    tail -n 1 "$work/$label.err"
    return 0
}

echo "== importing $N people from nothing (the existing state the benchmark plans against)"
measure import-from-nothing "$roster" apply -f "$work/manifests" --config "$work/roster.yaml"
grep -c '^+ Account .*: username' "$work/import-from-nothing.out" | sed 's/^/accounts created: /'
echo "== roster plan: $N rows against $N imported people (unchanged source)"
measure plan "$roster" plan -f "$work/manifests" --config "$work/roster.yaml"
tail -n 1 "$work/plan.out"
echo "== roster apply of the unchanged source"
measure apply-unchanged "$roster" apply -f "$work/manifests" --config "$work/roster.yaml"
tail -n 1 "$work/apply-unchanged.out"
echo "(work files in $work; the subtree $ou stays for inspection)"
