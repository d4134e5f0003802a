#!/usr/bin/env bash
# What the gateway filter adds inside Envoy: two Envoys side by side on the same
# trivial upstream pods, one with the filter picking the pod and one routing the
# same requests to the pod the client names (same pool cluster, no filter; the
# cluster is override_host, or ORIGINAL_DST with --original-dst); rounds of
# closed-loop load alternate between them for 1 KB and 200 KB bodies.
# `make bench-overhead` builds first; arguments go to the benchmark binary
# (`--rounds`, `--requests`, `--concurrency`, `--sizes`; see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${CARGO_TARGET_DIR:-target}/release/bench-overhead"
# The benchmark starts the collector found beside it.
[ -x "${CARGO_TARGET_DIR:-target}/release/sidecar-collector" ] || cargo build --release -p sidecar-collector
[ -x "$bench" ] || { echo "bench-overhead: $bench missing: run \`make bench-overhead\`" >&2; exit 1; }
[ -f "${GATEWAY_FILTER_WASM:-target/gateway_filter.wasm}" ] || { echo "bench-overhead: the filter is missing: run \`make wasm\`" >&2; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
exec "$bench" "$@"
