#!/usr/bin/env bash
# `make demo-operator`: the dev directory and the fake Kubernetes API server (make ran
# hack/dev-up.sh --apiserver), the operator running, examples/site applied with kubectl — then
# what kubectl and the directory show. The operator keeps running; `make dev-down` stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=/dev/null
. .dev/env

cargo build --quiet --bins
OP_DIR=.dev/operator
mkdir -p "$OP_DIR"

running() {
    [[ -f $OP_DIR/pid ]] && [[ -r /proc/$(<"$OP_DIR/pid")/comm ]] && [[ $(<"/proc/$(<"$OP_DIR/pid")/comm") == roster ]]
}

if ! running; then
    echo "== starting the operator (roster run; log in $OP_DIR/log)"
    setsid "${CARGO_TARGET_DIR:-target}/debug/roster" run --config .dev/roster.yaml --identity demo \
        --metrics-address 127.0.0.1:18080 --log-format text >"$OP_DIR/log" 2>&1 8>&- 9>&- </dev/null &
    echo $! >"$OP_DIR/pid"
fi

echo "== kubectl apply -f namespaces, then -R -f examples/site"
kubectl apply -f - <<'NS'
apiVersion: v1
kind: Namespace
metadata: {name: physics}
---
apiVersion: v1
kind: Namespace
metadata: {name: chemistry}
NS
kubectl apply -R -f examples/site

echo
echo "== waiting until every object is Ready"
for kind in people accounts projects; do
    kubectl wait --for=condition=Ready "$kind" --all --all-namespaces --timeout=60s >/dev/null
done
echo
echo "== kubectl get people,accounts,projects -A"
kubectl get people,accounts,projects -A
echo
# shellcheck source=lib/show-ldap.sh
. hack/lib/show-ldap.sh
cat <<MSG
The operator runs (pid $(<"$OP_DIR/pid"), metrics on http://127.0.0.1:18080/metrics) against the
fake API server (KUBECONFIG=$KUBECONFIG) and the dev directory ($LDAP_URI). Try:
    source .dev/env
    kubectl patch account ada -n physics --type merge -p '{"spec":{"locked":true}}'
    kubectl get accounts -A
    kubectl describe account ada -n physics     # conditions
Stop everything: make dev-down
MSG
