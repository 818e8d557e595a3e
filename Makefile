# armor-refresh: the commands of the README.
.PHONY: test unit lint e2e e2e-node image demo-helm control-plane crds demo chaos bench fuzz

# Everything CI runs: formatting, lints, unit and CLI tests, the e2e suite on a local
# control plane (built from Go modules on first use, then cached).
test: lint unit e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test

e2e: control-plane
	e2e/run-tests.sh

# The operator's image without a container engine: a static binary packed by
# go-containerregistry, as the Dockerfile's final stage lays it out (target/image/*.tar).
image:
	deploy/image/build.sh

# The operator as real pods: its image on a real node (containerd, runc, CNI, kubelet and
# kube-proxy built from Go modules, ~10 min the first time) beside the kwok nodes, installed
# with `helm install`; a run completes and `helm test` passes. Needs root.
e2e-node: control-plane
	E2E_REAL_NODE=1 e2e/run-tests.sh --test node -- --ignored --nocapture --test-threads 1

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok
# into ~/.cache/armor-refresh (minutes the first time, instant after).
control-plane:
	e2e/cluster/build.sh >/dev/null

# Regenerates crds/ (and the chart's copy, which templates/crds.yaml reads as data) from the
# Rust types, and the argocd-cm of the health checks.
crds:
	cargo run -q -- crd --write crds
	cargo run -q -- crd --write charts/armor-refresh/files/crds
	deploy/argocd/render-cm.py

# The main job: a local control plane with workloads, and the default policy planned against it.
demo:
	demo/run.sh

# The same demo with the operator installed by `helm install` from its image, as real pods on
# a real node beside the kwok nodes (needs root; see `make e2e-node`).
demo-helm:
	demo/run.sh --helm

# The long chaos suite: at least 100 SIGKILLs over runs whose operators' clocks are true,
# 30 s ahead, 30 s behind, or two replicas 10 s apart on one Lease; repeated leader kills, a cut-off leader,
# the API server restarted, etcd paused, the webhook killed, policies and runs edited and
# deleted mid-run; each trial prints its invariants (INVARIANT ... pass).
chaos: control-plane
	CHAOS_LONG=1 e2e/run-tests.sh --test chaos -- --nocapture --test-threads 1

# The scale report (docs/benchmarks.md): 1k and 5k pods against the baselines, ~30 min.
bench: control-plane
	bench/scale.sh

# The long hostile-input suite, in release: a million generated policy specs through the
# API server's checks, validation, planning and the state machine (SPEC_CASES to change),
# then the run's status measured at 10k, 50k and 100k pods (batchSize 10%).
fuzz:
	SPEC_CASES=$${SPEC_CASES:-1000000} cargo test --release --lib spec_fuzz -- --nocapture
	cargo test --release --lib status_bytes_at_fifty -- --ignored --nocapture
