#!/usr/bin/env bash
# Scale run of `tracepatch audit`: seeds 5,000 objects (4,000 pods, 800 Services, 200
# CronJobs by default) over 10 namespaces of a real apiserver (KUBECONFIG; when unset, the
# local control plane of ../shared/k8s-local), created in parallel batches with
# `kubectl create -f` of multi-document files, then times
#
#   tracepatch audit -A -o json --chunk-size N --config tests/audit/config.yaml >/dev/null
#
# with /usr/bin/time -v (wall clock and peak RSS), RUNS times per page size, and prints a
# Markdown table (median wall time, largest peak RSS). The release build is used.
#
# The pods are Istio-meshed pods of realistic size (an istio-init init container and an
# injected istio-proxy with its usual arguments, environment and volumes; about 5 KB of
# JSON each), each owned by one of 4 ReplicaSets per namespace, themselves owned by
# Deployments. One pod in ten is a Datadog agent pod running a sidecar (a finding, owner
# walk: ReplicaSet -> Deployment), one in ten has the tracer annotation and a sidecar
# without the variables (a finding); the others are clean. Half the Services have the
# trace port without appProtocol, half the CronJobs lack the app label (findings); the
# Services are headless (the local apiserver's Service IP range is a /24). As in
# tests/audit/run.sh, the namespaces carry tracepatch.io/enabled: "false" so that no
# registered webhook touches the seeds, and the audit's configuration opts out by another
# label, so that it reads them.
#
#   bench/audit-scale.sh
#   PODS=4000 SERVICES=800 CRONJOBS=200 NAMESPACES=10 bench/audit-scale.sh
#   CHUNK_SIZES="100 500 1000" RUNS=3 bench/audit-scale.sh
#   NO_BUILD=1 bench/audit-scale.sh     # use target/release/tracepatch as it is
#   TRACEPATCH_BIN=path bench/audit-scale.sh
#   KEEP=1 bench/audit-scale.sh         # leave the namespaces for another run
#
# Without a reachable apiserver it says so in one line and exits 0.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${KUBECONFIG:-}" && -r "$REPO/../shared/k8s-local/env.sh" ]]; then
  # shellcheck source=/dev/null
  source "$REPO/../shared/k8s-local/env.sh"
fi
export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"
PODS="${PODS:-4000}"
SERVICES="${SERVICES:-800}"
CRONJOBS="${CRONJOBS:-200}"
NAMESPACES="${NAMESPACES:-10}"
CHUNK_SIZES="${CHUNK_SIZES:-100 500 1000}"
RUNS="${RUNS:-3}"
PARALLEL="${PARALLEL:-2}"
BATCH="${BATCH:-200}"
CFG="$REPO/tests/audit/config.yaml"

if ! kubectl get --raw /readyz --request-timeout=5s >/dev/null 2>&1; then
  echo "audit-scale skipped: no Kubernetes apiserver reachable (KUBECONFIG=$KUBECONFIG)"
  exit 0
fi
[[ -x /usr/bin/time ]] || {
  echo "audit-scale: /usr/bin/time is missing (apt-get install time)"
  exit 1
}

BIN="${TRACEPATCH_BIN:-$REPO/target/release/tracepatch}"
if [[ -z "${TRACEPATCH_BIN:-}" && -z "${NO_BUILD:-}" ]]; then
  (cd "$REPO" && cargo build --release --quiet --bin tracepatch)
fi

ID="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
PREFIX="tpaudit-scale-$ID"
RUN_LABEL="audit.tracepatch.io/run"
WORK="$(mktemp -d)"
NS_LIST=()
for ((i = 0; i < NAMESPACES; i++)); do NS_LIST+=("$PREFIX-$i"); done

cleanup() {
  if [[ -n "${KEEP:-}" ]]; then
    echo "kept: namespaces $PREFIX-0..$((NAMESPACES - 1))"
  else
    echo "---- deleting the seeds" >&2
    printf '%s\n' "${NS_LIST[@]}" | xargs -P "$PARALLEL" -I{} \
      kubectl -n {} delete pods,services,cronjobs,replicasets,deployments --all --wait=false >/dev/null 2>&1 || true
    kubectl delete namespace "${NS_LIST[@]}" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "---- seeding $PODS pods, $SERVICES services, $CRONJOBS cronjobs in $NAMESPACES namespaces ($PREFIX-*)" >&2
for ns in "${NS_LIST[@]}"; do
  cat <<EOF
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "$ns",
 "labels": {"$RUN_LABEL": "$ID", "tracepatch.io/enabled": "false", "istio-injection": "disabled"}}}
EOF
done | kubectl create -f - >/dev/null

# Owners first (their uids go into the pods' ownerReferences).
python3 - "$WORK" "$ID" "${NS_LIST[@]}" <<'PY'
import json, sys
work, run, namespaces = sys.argv[1], sys.argv[2], sys.argv[3:]
docs = []
for ns in namespaces:
    for d in range(4):
        app = "datadog-agent" if d == 0 else f"app-{d}"
        labels = {"app": app, "audit.tracepatch.io/run": run}
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": f"web-{d}", "namespace": ns, "labels": labels},
                     "spec": {"selector": {"matchLabels": {"app": app}},
                              "template": {"metadata": {"labels": labels},
                                           "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
with open(f"{work}/deployments.json", "w") as f:
    f.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
PY
kubectl create -f "$WORK/deployments.json" >/dev/null
kubectl get deployments -A -l "$RUN_LABEL=$ID" -o json >"$WORK/deployments.live.json"

python3 - "$WORK" "$ID" "$PODS" "$SERVICES" "$CRONJOBS" "$BATCH" "${NS_LIST[@]}" <<'PY'
import json, sys
work, run = sys.argv[1], sys.argv[2]
pods, services, cronjobs, batch = (int(x) for x in sys.argv[3:7])
namespaces = sys.argv[7:]
deps = json.load(open(f"{work}/deployments.live.json"))["items"]
RUN = "audit.tracepatch.io/run"

def files(kind, objs):
    for i in range(0, len(objs), batch):
        with open(f"{work}/{kind}-{i // batch:04}.json", "w") as f:
            f.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs[i:i + batch]}))

# ReplicaSets, owned by the Deployments.
rsets = []
for d in deps:
    m = d["metadata"]
    labels = dict(d["spec"]["template"]["metadata"]["labels"], **{"pod-template-hash": "5d9f8"})
    rsets.append({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": m["name"] + "-5d9f8", "namespace": m["namespace"], "labels": labels,
                               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": m["name"],
                                                    "uid": m["uid"], "controller": True, "blockOwnerDeletion": True}]},
                  "spec": {"selector": {"matchLabels": {"app": labels["app"], "pod-template-hash": "5d9f8"}},
                           "template": {"metadata": {"labels": labels},
                                        "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
with open(f"{work}/replicasets.json", "w") as f:
    f.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": rsets}))

def proxy(env_extra):
    env = [{"name": n, "value": v} for n, v in [
        ("PILOT_CERT_PROVIDER", "istiod"), ("CA_ADDR", "istiod.istio-system.svc:15012"),
        ("ISTIO_META_CLUSTER_ID", "Kubernetes"), ("ISTIO_META_MESH_ID", "cluster.local"),
        ("TRUST_DOMAIN", "cluster.local"), ("ISTIO_META_INTERCEPTION_MODE", "REDIRECT"),
        ("ISTIO_META_WORKLOAD_NAME", "web"), ("ISTIO_META_OWNER", "kubernetes://apis/apps/v1/namespaces/x/deployments/web"),
        ("PROXY_CONFIG", "{}\n"), ("ISTIO_META_APP_CONTAINERS", "app"), ("ISTIO_META_NODE_NAME", "node-1"),
        ("ISTIO_BOOTSTRAP_OVERRIDE", ""), ("GOMEMLIMIT", "1073741824"), ("GOMAXPROCS", "2")]]
    env += [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    env += env_extra
    return {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0",
            "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                     "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
            "env": env,
            "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 15},
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True, "runAsGroup": 1337, "runAsNonRoot": True, "runAsUser": 1337},
            "volumeMounts": [{"mountPath": p, "name": n} for n, p in [
                ("workload-socket", "/var/run/secrets/workload-spiffe-uds"), ("credential-socket", "/var/run/secrets/credential-uds"),
                ("workload-certs", "/var/run/secrets/workload-spiffe-credentials"), ("istiod-ca-cert", "/var/run/secrets/istio"),
                ("istio-data", "/var/lib/istio/data"), ("istio-envoy", "/etc/istio/proxy"),
                ("istio-token", "/var/run/secrets/tokens"), ("istio-podinfo", "/etc/istio/pod")]]}

pod_objs = []
for i in range(pods):
    ns = namespaces[i % len(namespaces)]
    rs = [r for r in rsets if r["metadata"]["namespace"] == ns][(i // len(namespaces)) % 4]
    kind = i % 10  # 0: agent with a sidecar, 1: sidecar without the variables, else clean
    labels = dict(rs["spec"]["template"]["metadata"]["labels"])
    annotations = {"sidecar.istio.io/status": '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"]}',
                   "kubectl.kubernetes.io/default-container": "app", "prometheus.io/port": "15020", "prometheus.io/scrape": "true"}
    containers = [{"name": "app", "image": "registry.example.com/shop/web:1.42.0",
                   "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                   "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
                   "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]
    if kind == 0:
        labels["app"] = "datadog-agent"
        containers[0]["image"] = "gcr.io/datadoghq/agent:7.52.0"
    if kind == 1:
        annotations["apm.datadoghq.com/env"] = '{"DD_ENV": "prod", "DD_SERVICE": "web", "DD_VERSION": "1.42.0"}'
    containers.append(proxy([{"name": "DD_ENV", "value": "prod"}] if kind == 1 else []))
    pod_objs.append({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{rs['metadata']['name']}-{i:05}", "namespace": ns, "labels": labels, "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
                                          "uid": "", "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"serviceAccountName": "web",
                 "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0",
                                     "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                                              "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"]}],
                 "containers": containers,
                 "volumes": [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}, {"name": "istio-data", "emptyDir": {}},
                             {"name": "workload-socket", "emptyDir": {}}, {"name": "credential-socket", "emptyDir": {}},
                             {"name": "workload-certs", "emptyDir": {}},
                             {"name": "istio-podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                             {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                             {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}]}})
with open(f"{work}/pods.template.json", "w") as f:
    json.dump(pod_objs, f)

svc_objs = []
for i in range(services):
    ns = namespaces[i % len(namespaces)]
    port = {"name": "traceport", "port": 8126, "targetPort": 8126, "protocol": "TCP"} if i % 2 == 0 else \
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    svc_objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": f"svc-{i:04}", "namespace": ns, "labels": {RUN: run}},
                     "spec": {"clusterIP": "None", "selector": {"app": f"svc-{i:04}"}, "ports": [port]}})
files("services", svc_objs)

cj_objs = []
for i in range(cronjobs):
    ns = namespaces[i % len(namespaces)]
    tl = {RUN: run} if i % 2 == 0 else {RUN: run, "app": f"report-{i:03}"}
    cj_objs.append({"apiVersion": "batch/v1", "kind": "CronJob",
                    "metadata": {"name": f"report-{i:03}", "namespace": ns, "labels": {RUN: run}},
                    "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"metadata": {"labels": tl},
                             "spec": {"restartPolicy": "Never", "containers": [{"name": "report", "image": "busybox"}]}}}}}})
files("cronjobs", cj_objs)
PY
kubectl create -f "$WORK/replicasets.json" >/dev/null
kubectl get replicasets -A -l "$RUN_LABEL=$ID" -o json >"$WORK/replicasets.live.json"
python3 - "$WORK" "$BATCH" <<'PY'
import json, sys
work, batch = sys.argv[1], int(sys.argv[2])
uid = {(r["metadata"]["namespace"], r["metadata"]["name"]): r["metadata"]["uid"]
       for r in json.load(open(f"{work}/replicasets.live.json"))["items"]}
pods = json.load(open(f"{work}/pods.template.json"))
for p in pods:
    ref = p["metadata"]["ownerReferences"][0]
    ref["uid"] = uid[(p["metadata"]["namespace"], ref["name"])]
for i in range(0, len(pods), batch):
    with open(f"{work}/pods-{i // batch:04}.json", "w") as f:
        f.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods[i:i + batch]}))
PY
# create_file FILE: kubectl create, retried (a busy etcd times out); objects created by
# an earlier attempt are AlreadyExists, which is fine.
create_file() {
  local attempt out
  for attempt in 1 2 3 4 5; do
    if out="$(kubectl create -f "$1" 2>&1 >/dev/null)"; then return 0; fi
    if ! grep -v 'AlreadyExists\|already exists' <<<"$out" | grep -q .; then return 0; fi
    echo "  $1: attempt $attempt: $(grep -v 'already exists' <<<"$out" | head -n 1)" >&2
    sleep "$attempt"
  done
  return 1
}
export -f create_file
start=$(date +%s)
# shellcheck disable=SC2016 # $1 is the inner shell's
printf '%s\0' "$WORK"/pods-*.json "$WORK"/services-*.json "$WORK"/cronjobs-*.json |
  xargs -0 -P "$PARALLEL" -n 1 bash -c 'create_file "$1"' _
echo "---- created in $(($(date +%s) - start)) s: $(kubectl get pods,services,cronjobs -A -l "$RUN_LABEL=$ID" -o name | wc -l) objects; one pod is $(jq -c '.items[0]' "$WORK/pods-0000.json" | wc -c) bytes of JSON" >&2

total_objects="$(kubectl get pods,services,cronjobs -A --no-headers 2>/dev/null | wc -l)"
echo
echo "tracepatch audit on $(kubectl version -o json | jq -r .serverVersion.gitVersion), $(nproc) cores, $(date -u +%Y-%m-%d):"
echo "$PODS pods + $SERVICES services + $CRONJOBS cronjobs seeded; $total_objects pods, services and cronjobs in the cluster in all"
echo
echo "| --chunk-size | findings | exit | wall time (median of $RUNS) | peak RSS (max of $RUNS) |"
echo "|---:|---:|---:|---:|---:|"
for chunk in $CHUNK_SIZES; do
  walls=()
  rss_max=0
  findings=""
  code=""
  for ((r = 0; r < RUNS; r++)); do
    set +e
    /usr/bin/time -v "$BIN" audit -A -o json --chunk-size "$chunk" --config "$CFG" \
      >"$WORK/report.json" 2>"$WORK/time.txt"
    code=$?
    set -e
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt")"
    # m:ss.cc -> seconds
    walls+=("$(awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }' <<<"$wall")")
    rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")"
    ((rss > rss_max)) && rss_max=$rss
    findings="$(jq length "$WORK/report.json")"
  done
  median="$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')"
  printf '| %s | %s | %s | %.2f s | %.1f MiB |\n' "$chunk" "$findings" "$code" "$median" "$(awk -v k="$rss_max" 'BEGIN { print k / 1024 }')"
done
echo
echo "command: /usr/bin/time -v $BIN audit -A -o json --chunk-size N --config tests/audit/config.yaml >/dev/null"
