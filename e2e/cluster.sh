#!/usr/bin/env bash
# A real Kubernetes 1.34 control plane on this machine, for the demo and the e2e tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (built from Go modules by
# cluster/build.sh) and kwok simulating nodes in three zones and the pod lifecycle.
# Everything listens on 127.0.0.1 only.
#
# Usage:
#   e2e/cluster.sh up [--nodes N] [--ready-delay DURATION] [--terminate-delay DURATION] [--real-node]
#                                                             start (idempotent)
#   e2e/cluster.sh down                                       stop what `up` started, remove its state
#   e2e/cluster.sh status                                     what runs, and whether the API is ready
#   e2e/cluster.sh kubeconfig                                 print the admin kubeconfig path
#   e2e/cluster.sh logs COMPONENT                             etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok
#   e2e/cluster.sh env                                        export lines for KUBECONFIG and PATH (eval them)
#   e2e/cluster.sh restart|pause|resume COMPONENT            faults for the chaos suite: kill and start again
#                                                             (waits until it serves), SIGSTOP, SIGCONT
#
# --ready-delay (e.g. 2s, 500ms; default 1s): how long kwok takes to make a scheduled pod
# Ready; `heavy` draws it per pod from a heavy-tailed mix, as image pulls and warm-ups do
# (89% 1-2 s, 10% 3-6 s, 1% 10-20 s: mean 1.9 s, p99 6 s; kwok's stage weights and jitter).
# Pods labelled e2e.armor.dev/never-ready=true never become Ready.
# --terminate-delay (default 0): how long a pod being deleted takes to go, as a kubelet stops
# its containers. With 0, a StatefulSet's pod is often recreated under its name before the
# disruption controller saw the old one terminating, and its PDB then counts the new pod as
# disrupted for two minutes (`buildDisruptedPodMap`, DeletionTimeout); the benchmark uses 1s.
# --real-node adds a real node (containerd, runc, kubelet, kube-proxy: e2e/node/) where real
# containers run; the API server then listens on that node's bridge (198.18.0.1) instead of
# 127.0.0.1, so its pods reach it. Services get 198.19.0.0/24 either way.
# State lives in $ARMOR_REFRESH_CLUSTER_DIR (default /tmp/armor-refresh-cluster).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${ARMOR_REFRESH_CLUSTER_DIR:-${TMPDIR:-/tmp}/armor-refresh-cluster}"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
NODE_COMPONENTS=(containerd kubelet kube-proxy)

log() { echo "[cluster] $*" >&2; }
die() { echo "[cluster] error: $*" >&2; exit 1; }

bin_dir() { "$HERE/cluster/build.sh"; }

free_port() { # [address]
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "${1:-127.0.0.1}"
}

pid_alive() { # component
  local f="$DIR/pids/$1"
  [[ -f "$f" ]] || return 1
  local pid; pid="$(cat "$f")"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  # Guard against a recycled PID: it must still be our binary.
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" || return 1
}

start() { # component args...
  local name="$1"; shift
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/cmds"
  # The command line, NUL-separated, so `restart` starts the same process again.
  printf '%s\0' "$@" >"$DIR/cmds/$name"
  nohup "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
  disown || true
}

nodes_ready() { # count kubectl
  local ready
  ready="$("$2" --kubeconfig "$DIR/admin.kubeconfig" get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)"
  [[ "$ready" -ge "$1" ]]
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMPONENT command...
wait_for() {
  local what="$1" timeout="$2" comp="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "[cluster] gave up after ${timeout}s waiting for $what; last lines of $comp's log:" >&2
      tail -n 30 "$DIR/logs/$comp.log" >&2 || true
      return 1
    fi
    if [[ -n "$comp" ]] && ! pid_alive "$comp"; then
      echo "[cluster] $comp exited while waiting for $what; last lines of its log:" >&2
      tail -n 30 "$DIR/logs/$comp.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

to_ms() { # 2s | 500ms | 1.5s -> milliseconds
  local v="$1"
  case "$v" in
    *ms) echo "${v%ms}" ;;
    *s) python3 -c "print(int(float('${v%s}')*1000))" ;;
    *) die "$v is not a duration such as 2s or 500ms" ;;
  esac
}

stages() { # PROFILE DELAY_MS TERMINATE_MS: kwok's stages; `heavy` splits pod-ready into three
  local in="$HERE/cluster/stages/pod.yaml.in"
  if [[ "$1" != heavy ]]; then
    sed -e "s/@READY_DELAY_MS@/$2/" -e "s/@TERMINATE_DELAY_MS@/$3/" "$in"
    return
  fi
  python3 - "$in" <<'PY' | sed "s/@TERMINATE_DELAY_MS@/$3/"
import sys
docs = open(sys.argv[1]).read().split("\n---\n")
fixed = "  delay:\n    durationMilliseconds: @READY_DELAY_MS@\n"
out = []
for d in docs:
    if "  name: pod-ready\n" not in d:
        out.append(d)
        continue
    assert fixed in d, "pod.yaml.in: the pod-ready stage's delay changed"
    # kwok picks one matching stage at random by weight; its delay is uniform in [lo, hi].
    for name, weight, lo, hi in [("pod-ready", 89, 1000, 2000), ("pod-ready-slow", 10, 3000, 6000), ("pod-ready-slowest", 1, 10000, 20000)]:
        delay = f"  weight: {weight}\n  delay:\n    durationMilliseconds: {lo}\n    jitterDurationMilliseconds: {hi}\n"
        out.append(d.replace("  name: pod-ready\n", f"  name: {name}\n").replace(fixed, delay))
print("\n---\n".join(out))
PY
}

# A kubelet deletes a pod only once its deletion was asked for, and with the pod's UID as a
# precondition. kwok v0.7.0 deletes by name alone (pkg/kwok/controllers/pod_controller.go,
# deleteResource with NewDeleteOptions(0)), from a queue that may play a pod's delete stage
# twice or retry it: that second delete removed the pod a StatefulSet had just recreated
# under the same name, a deletion no real node makes. This admission policy refuses kwok's
# deletion of a pod that is not terminating.
kwok_policy() { # kubectl
  "$1" --kubeconfig "$DIR/admin.kubeconfig" apply -f - >/dev/null <<'YAML'
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: kwok-deletes-only-terminating-pods}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: [v1], operations: [DELETE], resources: [pods]}
  validations:
    - expression: "request.userInfo.username != 'kwok' || has(oldObject.metadata.deletionTimestamp)"
      message: "kwok deletes only pods already terminating, as a kubelet does"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: kwok-deletes-only-terminating-pods}
spec:
  policyName: kwok-deletes-only-terminating-pods
  validationActions: [Deny]
YAML
}

gen_certs() {
  local d="$DIR/pki"
  mkdir -p "$d"
  (
    cd "$d"
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -nodes -key ca.key -sha256 -days 2 -subj "/CN=armor-refresh-e2e-ca" -out ca.crt 2>/dev/null
    cat >apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:198.18.0.1,IP:198.19.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
    sign() { # name subject [extfile]
      openssl genrsa -out "$1.key" 2048 2>/dev/null
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 ${3:+-extfile "$3"} -out "$1.crt" 2>/dev/null
    }
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    sign apiserver "/CN=kube-apiserver" apiserver.ext
    sign admin "/O=system:masters/CN=admin" client.ext
    sign controller-manager "/CN=system:kube-controller-manager" client.ext
    sign scheduler "/CN=system:kube-scheduler" client.ext
    sign kubelet "/O=system:nodes/CN=system:node:armor-real-node" client.ext
    sign kube-proxy "/CN=system:kube-proxy" client.ext
    # kwok as itself, so the API server can hold it to what a kubelet does (kwok_policy).
    sign kwok "/O=system:masters/CN=kwok" client.ext
    # The API server's identity towards the real node's kubelet (logs, exec): kubelet asks
    # the API server whether it may, and system:masters may.
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

kubeconfig_for() { # name cert-basename
  cat >"$DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: armor-refresh-e2e
  cluster:
    server: https://$(cat "$DIR/apiserver.host"):$(cat "$DIR/apiserver.port")
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $DIR/pki/$2.crt
    client-key: $DIR/pki/$2.key
contexts:
- name: armor-refresh-e2e
  context: {cluster: armor-refresh-e2e, user: $1}
current-context: armor-refresh-e2e
EOF
}

# The mixed KubeArmor fleet, in every zone: even nodes enforce AppArmor and run a KubeArmor
# agent, except every sixth node (5, 11, ...) which enforces AppArmor without an agent; the other
# odd nodes use BPF-LSM, where no AppArmor profile is ever loaded.
fleet_labels() { # index
  if (($1 % 6 == 5)); then
    echo "    kubearmor.io/enforcer: apparmor"
  elif (($1 % 2 == 1)); then
    echo "    kubearmor.io/enforcer: bpf"
  else
    echo "    kubearmor.io/enforcer: apparmor"
    echo "    e2e.armor.dev/kubearmor-agent: \"true\""
  fi
}

agents_running() { # count kubectl
  local running
  running="$("$2" --kubeconfig "$DIR/admin.kubeconfig" -n kubearmor get pods -l kubearmor-app=kubearmor \
    --field-selector status.phase=Running --no-headers 2>/dev/null | wc -l)"
  [[ "$running" -ge "$1" ]]
}

create_nodes() { # count
  local n="$1" kubectl="$2" i zone
  {
    for ((i = 0; i < n; i++)); do
      zone="zone-$(printf '%s' abc | cut -c$((i % 3 + 1)))"
      cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    type: kwok
    kubernetes.io/hostname: node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: $zone
$(fleet_labels "$i")
EOF
    done
  } | "$kubectl" --kubeconfig "$DIR/admin.kubeconfig" apply -f - >/dev/null
}

cmd_up() {
  local nodes=6 delay=1s terminate=0ms real_node=false
  while (($#)); do
    case "$1" in
      --nodes) nodes="${2:?--nodes needs a number}"; shift 2 ;;
      --ready-delay) delay="${2:?--ready-delay needs a duration}"; shift 2 ;;
      --terminate-delay) terminate="${2:?--terminate-delay needs a duration}"; shift 2 ;;
      --real-node) real_node=true; shift ;;
      *) die "unknown option $1 (see the header of $0)" ;;
    esac
  done
  [[ "$nodes" =~ ^[0-9]+$ ]] && ((nodes >= 1 && nodes <= 5000)) || die "--nodes: $nodes is not a number from 1 to 5000"
  local delay_ms profile=fixed
  if [[ "$delay" == heavy ]]; then
    profile=heavy delay_ms=1935 # the mix's mean
  else
    delay_ms="$(to_ms "$delay")"
  fi
  [[ "$delay_ms" =~ ^[0-9]+$ ]] || die "--ready-delay: $delay is not a duration such as 2s or 500ms, or heavy"
  local terminate_ms
  terminate_ms="$(to_ms "$terminate")"
  [[ "$terminate_ms" =~ ^[0-9]+$ ]] || die "--terminate-delay: $terminate is not a duration such as 1s or 500ms"

  local c all=true
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || all=false; done
  local running_real=false
  [[ -f "$DIR/real-node" ]] && running_real=true
  if $all && [[ "$running_real" != "$real_node" ]]; then
    die "already running $($running_real && echo with || echo without) a real node (state in $DIR): 'e2e/cluster.sh down' first"
  fi
  if $all; then
    log "already running (state in $DIR); 'e2e/cluster.sh down' stops it"
    cmd_status
    return 0
  fi
  local bin; bin="$(bin_dir)"
  command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
  # Leftovers of a cluster that died: stop what is left, start clean.
  [[ -d "$DIR" ]] && cmd_down >/dev/null 2>&1 || true
  mkdir -p "$DIR"
  # A start-up that fails stops what it started.
  trap 'rc=$?; if ((rc != 0)); then log "start-up failed; stopping what started"; cmd_down >/dev/null 2>&1 || true; fi' EXIT
  local start_s=$SECONDS
  log "generating certificates"
  gen_certs
  local etcd_port etcd_peer api_port api_host=127.0.0.1
  if $real_node; then
    [[ "$(id -u)" == 0 ]] || die "--real-node runs containers: it needs root"
    log "creating the real node's bridge"
    "$HERE/node/node.sh" net-up "$DIR"
    api_host=198.18.0.1
  fi
  etcd_port="$(free_port)"; etcd_peer="$(free_port)"; api_port="$(free_port "$api_host")"
  echo "$api_port" >"$DIR/apiserver.port"
  echo "$api_host" >"$DIR/apiserver.host"
  echo "$bin" >"$DIR/bin.dir"
  echo "$delay_ms" >"$DIR/ready-delay-ms"
  echo "$profile" >"$DIR/ready-delay-profile"
  echo "$terminate_ms" >"$DIR/terminate-delay-ms"

  log "starting etcd on 127.0.0.1:$etcd_port"
  start etcd "$bin/etcd" --name default --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer" --listen-metrics-urls "" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
  wait_for "etcd to serve" 30 etcd python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$etcd_port/health', timeout=1)"

  log "starting kube-apiserver on https://$api_host:$api_port"
  local p="$DIR/pki" kubelet_args=()
  # The real node's kubelet is dialled (logs, exec) at its InternalIP on the bridge, never at
  # a hostname the machine's resolver would be asked for.
  $real_node && kubelet_args=(--kubelet-preferred-address-types InternalIP
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key")
  # Audit only ServiceAccounts of the namespace armor-refresh-rbac: e2e/tests/rbac.rs runs
  # the operator as one and reads which requests it made and which were denied.
  cat >"$DIR/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:armor-refresh-rbac"]
  - level: None
YAML
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$api_host" --advertise-address "$api_host" --secure-port "$api_port" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range 198.19.0.0/24 \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,PodSecurity \
    --allow-privileged=true --profiling=false --cert-dir "$DIR/apiserver-certs" \
    --max-requests-inflight 800 --max-mutating-requests-inflight 400 \
    --event-ttl 1h --v 1 \
    --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 "${kubelet_args[@]}"
  kubeconfig_for admin admin
  kubeconfig_for controller-manager controller-manager
  kubeconfig_for scheduler scheduler
  kubeconfig_for kubelet kubelet
  kubeconfig_for kube-proxy kube-proxy
  kubeconfig_for kwok kwok
  local kubectl="$bin/kubectl"
  wait_for "kube-apiserver /readyz" 90 kube-apiserver "$kubectl" --kubeconfig "$DIR/admin.kubeconfig" get --raw /readyz

  kwok_policy "$kubectl"

  log "starting kube-controller-manager and kube-scheduler"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --leader-elect=false --controllers '*' --use-service-account-credentials=true \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-replicaset-syncs 10 --concurrent-deployment-syncs 10 \
    --v 1
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --kube-api-qps 200 --kube-api-burst 400 --v 1

  log "starting kwok (pods Ready after ${delay_ms}ms, $profile)"
  {
    stages "$profile" "$delay_ms" "$terminate_ms"
    # Stages and node leases played at once: with kwok's default of 4, a busy API server
    # (20,000 pods, 1.7 s an eviction) let pods become Ready only about 7 times a second and
    # let node leases lapse, so the node controller marked nodes and their pods NotReady.
    printf -- '---\napiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n  podPlayStageParallelism: 32\n  nodeLeaseParallelism: 16\n'
  } >"$DIR/kwok-stages.yaml"
  start kwok "$bin/kwok" --kubeconfig "$DIR/kwok.kubeconfig" --config "$DIR/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 --cidr 10.244.0.1/16 --node-ip 127.0.0.2 --server-address "127.0.0.1:$(free_port)"

  wait_for "the default ServiceAccount" 60 kube-controller-manager "$kubectl" --kubeconfig "$DIR/admin.kubeconfig" -n default get serviceaccount default
  log "creating $nodes nodes across zone-a/b/c (a mixed KubeArmor fleet)"
  create_nodes "$nodes" "$kubectl"
  # One list, not `kubectl wait` (which checks node by node within one timeout: too slow for
  # dozens of nodes whose heartbeats kwok keeps updating).
  wait_for "$nodes nodes to be Ready" 90 kwok nodes_ready "$nodes" "$kubectl"
  local agents=0 i
  for ((i = 0; i < nodes; i++)); do ((i % 2 == 0)) && agents=$((agents + 1)); done
  log "starting KubeArmor's agents on the $agents AppArmor nodes that run one"
  "$kubectl" --kubeconfig "$DIR/admin.kubeconfig" apply -f "$HERE/cluster/kubearmor/kubearmor.yaml" >/dev/null
  wait_for "$agents KubeArmor agents to run" 120 kwok agents_running "$agents" "$kubectl"
  if $real_node; then
    log "starting the real node (containerd, kubelet, kube-proxy)"
    "$HERE/node/node.sh" up "$DIR"
  fi
  log "ready in $((SECONDS - start_s))s; kubeconfig: $DIR/admin.kubeconfig"
  trap - EXIT
}

cmd_down() {
  [[ -d "$DIR" ]] || { log "not running"; return 0; }
  # The real node's pods are deleted through the API server, so it stops first; its network
  # goes last, once nothing (the API server calling a webhook Service) can use it.
  "$HERE/node/node.sh" stop "$DIR" || log "the real node did not stop cleanly"
  local c pid
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if pid_alive "$c"; then
      pid="$(cat "$DIR/pids/$c")"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do [[ -d "/proc/$pid" ]] || break; sleep 0.25; done
      if [[ -d "/proc/$pid" ]]; then
        log "$c ($pid) ignored SIGTERM for 10s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  done
  "$HERE/node/node.sh" down "$DIR" || log "the real node's network was not removed cleanly"
  rm -rf "$DIR"
  log "stopped"
}

cmd_status() {
  [[ -d "$DIR" ]] || { echo "not running"; return 1; }
  local c ok=0 all=("${COMPONENTS[@]}")
  [[ -f "$DIR/real-node" ]] && all+=("${NODE_COMPONENTS[@]}")
  for c in "${all[@]}"; do
    if pid_alive "$c"; then printf '%-24s running (pid %s)\n' "$c" "$(cat "$DIR/pids/$c")"; else printf '%-24s stopped\n' "$c"; ok=1; fi
  done
  local bin; bin="$(cat "$DIR/bin.dir")"
  if "$bin/kubectl" --kubeconfig "$DIR/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; then
    echo "api server: ready at https://$(cat "$DIR/apiserver.host"):$(cat "$DIR/apiserver.port")"
  else
    echo "api server: not ready"; ok=1
  fi
  echo "kubeconfig: $DIR/admin.kubeconfig"
  return $ok
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kubeconfig) echo "$DIR/admin.kubeconfig" ;;
  logs)
    [[ -n "${2:-}" ]] || die "logs needs a component: ${COMPONENTS[*]}"
    [[ -f "$DIR/logs/$2.log" ]] || die "no log for $2 (components: ${COMPONENTS[*]})"
    cat "$DIR/logs/$2.log" ;;
  env)
    echo "export KUBECONFIG=$DIR/admin.kubeconfig"
    echo "export PATH=$(bin_dir):\$PATH" ;;
  restart|pause|resume)
    comp="${2:-}"
    [[ -f "$DIR/pids/$comp" && -f "$DIR/cmds/$comp" ]] || die "$1 needs a running component: ${COMPONENTS[*]}"
    pid_alive "$comp" || die "$comp is not running"
    pid="$(cat "$DIR/pids/$comp")"
    case "$1" in
      pause) kill -STOP "$pid" ;;
      resume) kill -CONT "$pid" ;;
      restart)
        kill -CONT "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        mapfile -d '' cmd <"$DIR/cmds/$comp"
        start "$comp" "${cmd[@]}"
        if [[ "$comp" == kube-apiserver ]]; then
          wait_for "kube-apiserver /readyz" 90 kube-apiserver "$(cat "$DIR/bin.dir")/kubectl" --kubeconfig "$DIR/admin.kubeconfig" get --raw /readyz
        fi ;;
    esac ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
