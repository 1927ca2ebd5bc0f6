#!/usr/bin/env bash
# `make demo-operator`: the dev directory and a real Kubernetes control plane (make ran
# hack/dev-up.sh --cluster: kube-apiserver, etcd and kube-controller-manager from hack/k8s), the
# operator running as the chart's ServiceAccount with the chart's RBAC, examples/site applied
# with kubectl — then what kubectl and the directory show. The operator keeps running;
# `make dev-down` stops it.
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

# The dev config, with the Lease where the chart's Role lets the operator hold it.
{ cat .dev/roster.yaml; printf 'operator:\n  leaseNamespace: roster\n'; } >.dev/roster-operator.yaml

if ! running; then
    echo "== starting the operator (roster run as system:serviceaccount:roster:roster; log in $OP_DIR/log)"
    KUBECONFIG=.dev/k8s/operator.kubeconfig \
    setsid "${CARGO_TARGET_DIR:-target}/debug/roster" run --config .dev/roster-operator.yaml --identity demo \
        --metrics-address 127.0.0.1:18080 --log-format text >"$OP_DIR/log" 2>&1 8>&- 9>&- </dev/null &
    echo $! >"$OP_DIR/pid"
fi

echo "== kubectl create namespace physics chemistry, then kubectl apply -R -f examples/site"
for ns in physics chemistry; do
    kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
done
# The example's import reads a ConfigMap in physics and writes its report there: what the
# chart's rbac.importNamespaces=[physics] binds.
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: roster-imports, namespace: physics}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: roster-imports}
subjects: [{kind: ServiceAccount, name: roster, namespace: roster}]
YAML
kubectl apply -R -f examples/site

echo
echo "== waiting until every object is Ready"
for kind in importsources people accounts projects guests; do
    kubectl wait --for=condition=Ready "$kind" --all --all-namespaces --timeout=60s >/dev/null
done
echo
echo "== kubectl get importsources,people,accounts,projects,guests -A"
kubectl get importsources,people,accounts,projects,guests -A
echo
# shellcheck source=lib/show-ldap.sh
. hack/lib/show-ldap.sh
cat <<MSG
The operator runs (pid $(<"$OP_DIR/pid"), metrics on http://127.0.0.1:18080/metrics) against the
Kubernetes $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1) control plane (KUBECONFIG=$KUBECONFIG) and the dev directory ($LDAP_URI). Try:
    source .dev/env
    kubectl patch account ada -n physics --type merge -p '{"spec":{"locked":true}}'
    kubectl get accounts -A
    kubectl describe account ada -n physics     # conditions
Stop everything: make dev-down
MSG
