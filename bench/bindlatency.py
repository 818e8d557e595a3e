"""Pod creation and binding latency under three webhook registrations, measured from a client.

Alternates rounds of pods created one after another, each round under one registration:
`new` (what the operator registers for Binding policies: bindings, and creations of pods
already bound, through a CEL matchCondition), `old` (both operations for every pod, the
former registration) and `off` (no webhook configuration). For each pod it times the create
call and the time from the call until a watch sees the pod bound to a node (scheduler and
binding, with the webhook's call at binding). The first round is a warm-up. Prints JSON.

Usage: python3 bench/bindlatency.py CLUSTER_DIR NAMESPACE NEW.json OLD.json ROUNDS PER_ROUND
"""
import http.client
import json
import ssl
import subprocess
import sys
import threading
import time


def main():
    cluster, ns, new, old = sys.argv[1:5]
    rounds, per = int(sys.argv[5]), int(sys.argv[6])
    port = int(open(f"{cluster}/apiserver.port").read().strip())
    # 127.0.0.1, or the real node's bridge (e2e/cluster.sh up --real-node).
    host = open(f"{cluster}/apiserver.host").read().strip()
    ctx = ssl.create_default_context(cafile=f"{cluster}/pki/ca.crt")
    ctx.load_cert_chain(f"{cluster}/pki/admin.crt", f"{cluster}/pki/admin.key")
    bound = {}

    def watch():
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=600)
        conn.request("GET", f"/api/v1/namespaces/{ns}/pods?watch=1&labelSelector=app%3Dbind")
        resp = conn.getresponse()
        while True:
            line = resp.readline()
            if not line:
                return
            o = json.loads(line)["object"]
            name = o["metadata"]["name"]
            if o.get("spec", {}).get("nodeName") and name not in bound:
                bound[name] = time.perf_counter()

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(1)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)

    def registration(mode):
        subprocess.run(["kubectl", "delete", "mutatingwebhookconfiguration", "armor-refresh-bench", "--ignore-not-found"],
                       check=True, capture_output=True)
        if mode != "off":
            subprocess.run(["kubectl", "create", "-f", new if mode == "new" else old], check=True, capture_output=True)
        time.sleep(2)  # the API server's webhook informer

    modes = ["new", "old", "off"]
    create = {m: [] for m in modes}
    to_bound = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes:
            registration(mode)
            for i in range(per):
                name = f"bind-{r}-{mode}-{i}"
                body = json.dumps({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "bind"}},
                    "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
                })
                start = time.perf_counter()
                conn.request("POST", f"/api/v1/namespaces/{ns}/pods", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                created = time.perf_counter()
                if resp.status != 201:
                    sys.exit(f"create failed: {resp.status} {data[:300]!r}")
                deadline = time.perf_counter() + 10
                while name not in bound and time.perf_counter() < deadline:
                    time.sleep(0.001)
                if r > 0 and name in bound:
                    create[mode].append((created - start) * 1000)
                    to_bound[mode].append((bound[name] - start) * 1000)

    def pct(xs, q):
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None

    out = {m: {"count": len(create[m]), "create_p50_ms": pct(create[m], .5), "create_p99_ms": pct(create[m], .99),
               "bound_p50_ms": pct(to_bound[m], .5), "bound_p99_ms": pct(to_bound[m], .99)} for m in modes}
    for m in ("new", "old"):
        out[m]["bound_p50_ratio"] = round(out[m]["bound_p50_ms"] / out["off"]["bound_p50_ms"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
