"""Pod-creation latency against the local control plane, measured from a client.

Creates N bare pods one after another through the API server (no kubectl process in the
loop) and prints the p50/p99 of the create call in milliseconds as JSON. Used by
bench/webhook.sh with and without the mutating webhook configured.

Usage: python3 bench/podcreate.py CLUSTER_DIR NAMESPACE COUNT
"""
import http.client
import json
import ssl
import statistics
import sys
import time


def main():
    cluster, ns, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    port = int(open(f"{cluster}/apiserver.port").read().strip())
    # 127.0.0.1, or the real node's bridge (e2e/cluster.sh up --real-node).
    host = open(f"{cluster}/apiserver.host").read().strip()
    ctx = ssl.create_default_context(cafile=f"{cluster}/pki/ca.crt")
    ctx.load_cert_chain(f"{cluster}/pki/admin.crt", f"{cluster}/pki/admin.key")
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    times = []
    for i in range(count):
        body = json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "latency-", "labels": {"app": "latency"}},
            "spec": {"containers": [{"name": "app", "image": "example/app:1"}, {"name": "side", "image": "example/side:1"}]},
        })
        start = time.perf_counter()
        conn.request("POST", f"/api/v1/namespaces/{ns}/pods", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        elapsed = (time.perf_counter() - start) * 1000
        if resp.status != 201:
            sys.exit(f"create failed: {resp.status} {data[:300]!r}")
        if i >= 5:  # warm-up requests are not counted
            times.append(elapsed)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(json.dumps({"count": len(times), "p50_ms": round(p(0.50), 2), "p99_ms": round(p(0.99), 2), "mean_ms": round(statistics.mean(times), 2)}))


if __name__ == "__main__":
    main()
