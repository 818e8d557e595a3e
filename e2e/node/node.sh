#!/usr/bin/env bash
# A real node beside the kwok nodes of e2e/cluster.sh: containerd, runc, the CNI bridge,
# kubelet and kube-proxy (e2e/node/build.sh), so real containers run. Called by
# `e2e/cluster.sh up --real-node`; not meant to be run alone.
#
# Networking stays on this machine: a bridge of our own (armor0, 198.18.0.1/24, inside the
# benchmarking range 198.18.0.0/15 that no real network uses) holds the pods; Services get
# 198.19.0.0/24. The API server listens on the bridge's address so pods reach it; packets
# from the bridge to any other interface are dropped, so nothing is routed off the machine.
# The node is tainted armor.dev/real-node=true:NoSchedule: only what tolerates it lands here.
#
# Usage (DIR is the cluster's state directory):
#   e2e/node/node.sh net-up DIR          the bridge and its firewall (before the API server)
#   e2e/node/node.sh up DIR              containerd, kubelet, kube-proxy; waits for Ready
#   e2e/node/node.sh import DIR TAR...   image tarballs into containerd's Kubernetes namespace
#   e2e/node/node.sh stop DIR            cordons the node, deletes its pods (so the CNI tears
#                                        their networks down), stops kubelet, kube-proxy, containerd
#   e2e/node/node.sh down DIR            stop, then removes mounts, namespaces, rules and the
#                                        bridge, and puts back the sysctls and paths as they were
#   e2e/node/node.sh host-state          what a real node may change on this machine (sysctls,
#                                        iptables, links, paths, mounts), to compare around one
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BRIDGE=armor0
BRIDGE_IP=198.18.0.1
POD_CIDR=198.18.0.0/24
NODE=armor-real-node
PAUSE_IMAGE=localhost/armor-refresh-pause:1
SERVICE_CIDR=198.19.0.0/24
CHAIN=ARMOR-REFRESH-ISOLATE
# What kubelet and kube-proxy may change on the host (kubelet's kernel defaults, conntrack):
# saved by net-up, put back by down.
SYSCTLS=(net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Fixed paths outside the state directory that containerd, the CNI and kubelet create
# (shim sockets, CNI result cache, device-plugin socket, log links): removed by down unless
# they were there before.
HOST_PATHS=(/run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods /run/netns)

log() { echo "[node] $*" >&2; }
die() { echo "[node] error: $*" >&2; exit 1; }

free_port() { # address
  python3 -c "import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()" "$1"
}

start() { # name args...
  local name="$1"; shift
  mkdir -p "$DIR/logs" "$DIR/pids"
  nohup "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
  disown || true
}

# Alive and still our binary (a PID file left by a crash may name a recycled PID).
alive() {
  local f="$DIR/pids/$1" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "/$1 "
}

wait_for() { # what timeout component command...
  local what="$1" timeout="$2" comp="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)) || ! alive "$comp"; then
      echo "[node] gave up waiting for $what; last lines of $comp's log:" >&2
      tail -n 40 "$DIR/logs/$comp.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

cmd_net_up() {
  if [[ -e /sys/class/net/$BRIDGE ]]; then
    die "$BRIDGE exists already, made for $(cat "/sys/class/net/$BRIDGE/ifalias" 2>/dev/null || echo '?'): another real node runs or one crashed (e2e/node/node.sh down THAT_DIR removes it)"
  fi
  # Marked first, so a failure from here on is cleaned up by down.
  touch "$DIR/real-node"
  local k p
  for k in "${SYSCTLS[@]}"; do
    [[ -e "/proc/sys/${k//.//}" ]] && echo "$k=$(cat "/proc/sys/${k//.//}")"
  done >"$DIR/sysctl.before"
  for p in "${HOST_PATHS[@]}"; do [[ -e "$p" ]] && echo "$p"; done >"$DIR/paths.before"
  ip link add "$BRIDGE" type bridge
  echo "$DIR" >"/sys/class/net/$BRIDGE/ifalias"
  ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # kube-proxy's Service rules need IP forwarding; pods may reach each other and this host,
  # never another interface. In mangle, which kube-proxy never touches, so its own FORWARD
  # rules (which accept marked and established traffic) cannot come first.
  iptables -t mangle -N "$CHAIN"
  iptables -t mangle -A "$CHAIN" -i "$BRIDGE" ! -o "$BRIDGE" -j DROP
  iptables -t mangle -A "$CHAIN" -o "$BRIDGE" ! -i "$BRIDGE" -j DROP
  # Forwarding was off: it stays off between every other pair of interfaces.
  if grep -qx net.ipv4.ip_forward=0 "$DIR/sysctl.before"; then
    iptables -t mangle -A "$CHAIN" ! -i "$BRIDGE" ! -o "$BRIDGE" -j DROP
  fi
  iptables -t mangle -I FORWARD 1 -j "$CHAIN"
  # A Service address that kube-proxy has not (or no longer) translated would follow the
  # default route: refused here instead.
  iptables -t filter -N "$CHAIN"
  iptables -t filter -A "$CHAIN" -d "$SERVICE_CIDR" -j REJECT
  iptables -t filter -I OUTPUT 1 -j "$CHAIN"
  echo 1 >/proc/sys/net/ipv4/ip_forward
}

write_configs() { # bin
  local bin="$1" p="$DIR/pki"
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/kubelet"
  cat >"$DIR/containerd/config.toml" <<TOML
version = 3
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$DIR/containerd.sock"

[ttrpc]
  address = "$DIR/containerd.sock.ttrpc"

[debug]
  address = ""

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # The pods' network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  # This machine withholds CAP_SYS_RESOURCE, so no process may lower its OOM score below
  # its parent's; kubelet asks -998 for sandboxes. Clamp to containerd's own score instead.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$bin/runc"
        Root = "$DIR/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$bin"]
    conf_dir = "$DIR/cni/net.d"
TOML
  # No masquerade: pod traffic never leaves the bridge except to this host.
  cat >"$DIR/cni/net.d/10-armor.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "armor-refresh",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "198.18.0.10", "gateway": "$BRIDGE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
  local kport hport
  kport="$(free_port "$BRIDGE_IP")"; hport="$(free_port 127.0.0.1)"
  cat >"$DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: $kport
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $p/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$DIR/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
registerWithTaints:
  - {key: armor.dev/real-node, value: "true", effect: NoSchedule}
# This machine's disk is shared with the build caches: evict nothing for disk.
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
# Container logs under the state directory (kubelet still links them from /var/log/containers).
podLogsDir: $DIR/pod-logs
serializeImagePulls: false
podPidsLimit: 4096
maxPods: 50
YAML
  echo "$hport" >"$DIR/kubelet/healthz.port"
}

sandbox_image() { # the sandbox image, built here: nothing is pulled
  local bin="$1" tmp="$DIR/images"
  mkdir -p "$tmp"
  gcc -static -Os -s -o "$tmp/pause" "$HERE/pause/pause.c"
  gcc -static -Os -s -o "$tmp/probe" "$HERE/pause/probe.c"
  "$("$HERE/build.sh" imagetool)/ociimage" -o "$tmp/pause.tar" -tag "$PAUSE_IMAGE" -entrypoint /pause -user 65535:65535 \
    -file "/pause=$tmp/pause" -file "/probe=$tmp/probe"
  cmd_import "$tmp/pause.tar"
}

cmd_import() { # tar...
  local bin; bin="$(cat "$DIR/node-bin.dir")"
  local t
  for t in "$@"; do
    log "importing $t"
    timeout 120 "$bin/ctr" --address "$DIR/containerd.sock" -n k8s.io images import "$t" >>"$DIR/logs/import.log" 2>&1 ||
      { tail -5 "$DIR/logs/import.log" >&2; die "could not import $t"; }
  done
}

kubectl() { "$(cat "$DIR/bin.dir")/kubectl" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout 10s "$@"; }

node_ready() {
  kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

cmd_up() {
  local bin; bin="$("$HERE/build.sh")"
  echo "$bin" >"$DIR/node-bin.dir"
  write_configs "$bin"
  log "starting containerd"
  PATH="$bin:$PATH" start containerd "$bin/containerd" --config "$DIR/containerd/config.toml"
  wait_for "containerd" 30 containerd timeout 5 "$bin/ctr" --address "$DIR/containerd.sock" version
  sandbox_image "$bin"
  log "starting kubelet ($NODE) and kube-proxy"
  start kubelet "$bin/kubelet" --config "$DIR/kubelet/config.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
    --root-dir "$DIR/kubelet/root" --cert-dir "$DIR/kubelet/pki" --hostname-override "$NODE" --node-ip "$BRIDGE_IP" \
    --node-labels "armor.dev/real-node=true,topology.kubernetes.io/zone=zone-real" --v 1
  local mport pport
  mport="$(free_port 127.0.0.1)"; pport="$(free_port 127.0.0.1)"
  PATH="$PATH" start kube-proxy "$bin/kube-proxy" --kubeconfig "$DIR/kube-proxy.kubeconfig" --proxy-mode iptables \
    --hostname-override "$NODE" --cluster-cidr "$POD_CIDR" \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
    --iptables-localhost-nodeports=false --nodeport-addresses "$BRIDGE_IP/32" \
    --metrics-bind-address "127.0.0.1:$mport" --healthz-bind-address "127.0.0.1:$pport" --v 1
  wait_for "node $NODE to be Ready" 120 kubelet node_ready
  log "node $NODE is Ready"
}

stop_pid() { # name
  alive "$1" || return 0
  local pid; pid="$(cat "$DIR/pids/$1")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do [[ -d "/proc/$pid" ]] || return 0; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
}

pods_on_node() {
  kubectl get pods -A --field-selector "spec.nodeName=$NODE" --no-headers 2>/dev/null | grep -q .
}

cmd_stop() {
  [[ -f "$DIR/real-node" ]] || return 0
  set +e +o pipefail
  if alive kubelet; then
    # Deleted through the API, the pods are stopped by kubelet, which has the CNI tear their
    # networks down (a killed sandbox would leave its CNI results and addresses behind).
    kubectl cordon "$NODE" >/dev/null 2>&1
    kubectl delete pods -A --field-selector "spec.nodeName=$NODE" --grace-period 1 --wait=false >/dev/null 2>&1
    local deadline=$((SECONDS + 60))
    while pods_on_node && ((SECONDS < deadline)); do sleep 0.5; done
    pods_on_node && log "pods still on $NODE after 60s; killing them"
  fi
  stop_pid kubelet
  stop_pid kube-proxy
  # Whatever is left: the shims our containerd started carry its socket address.
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $DIR/containerd.sock"); do
    pkill -KILL -P "$pid" 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
  done
  stop_pid containerd
}

remove_chain() { # iptables table chain: every jump to it, then the chain
  local ipt="$1" t="$2" chain="$3" rule
  "$ipt" -t "$t" -S 2>/dev/null | grep -- "-j $chain\$" | sed 's/^-A /-D /' | while read -r rule; do
    # shellcheck disable=SC2086 # the rule's words, as iptables -S printed them
    "$ipt" -t "$t" $rule 2>/dev/null
  done
  "$ipt" -t "$t" -F "$chain" 2>/dev/null
  "$ipt" -t "$t" -X "$chain" 2>/dev/null
}

cmd_down() {
  [[ -f "$DIR/real-node" ]] || return 0
  # Every step is best effort: what one leaves, the next still cleans.
  set +e +o pipefail
  cmd_stop
  local bin; bin="$(cat "$DIR/node-bin.dir" 2>/dev/null)"
  [[ -n "$bin" && -x "$bin/kube-proxy" ]] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1
  # Mounts under the state directory (overlays, token volumes, network namespaces), deepest first.
  findmnt -rn -o TARGET | grep "^$DIR/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  # kubelet's own chains (made at start, never removed), then ours.
  local ipt t chain
  for ipt in iptables ip6tables; do
    for t in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do remove_chain "$ipt" "$t" "$chain"; done
    done
  done
  remove_chain iptables mangle "$CHAIN"
  remove_chain iptables filter "$CHAIN"
  ip link del "$BRIDGE" 2>/dev/null
  # The pods' cgroups, now empty (cgroup v1 hierarchies and v2).
  find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -depth -type d -exec rmdir {} \; 2>/dev/null
  local line p
  if [[ -f "$DIR/sysctl.before" ]]; then
    while IFS= read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || log "could not put back $line"; done <"$DIR/sysctl.before"
  fi
  if [[ -f "$DIR/paths.before" ]]; then
    for p in "${HOST_PATHS[@]}"; do
      grep -qx "$p" "$DIR/paths.before" && continue
      mountpoint -q "$p" && umount "$p"
      rm -rf "$p"
    done
  fi
  rm -f "$DIR/real-node"
}

# The machine as a real node could change it: e2e/run-tests.sh compares this before `up` and
# after `down`.
cmd_host_state() {
  local k t
  for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k" 2>/dev/null)"; done
  for t in filter nat mangle raw; do iptables -t "$t" -S 2>/dev/null; ip6tables -t "$t" -S 2>/dev/null; done
  ip -o link show | awk -F': ' '{print "link " $2}' | sed 's/@.*//'
  ls -d "${HOST_PATHS[@]}" /etc/cni /opt/cni 2>/dev/null || true
  echo "mounts $(findmnt -rn -o TARGET | grep -c "armor-refresh" || true)"
}

cmd="${1:-}"; DIR="${2:-}"
[[ "$cmd" == host-state ]] && { cmd_host_state; exit 0; }
[[ -n "$cmd" && -n "$DIR" ]] || { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift 2
case "$cmd" in
  net-up) cmd_net_up ;;
  stop) cmd_stop ;;
  up) cmd_up ;;
  import) cmd_import "$@" ;;
  down) cmd_down ;;
  *) die "unknown command $cmd" ;;
esac
