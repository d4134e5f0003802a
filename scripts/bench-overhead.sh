#!/usr/bin/env bash
# What the gateway filter adds inside Envoy: Envoys side by side on the same
# trivial upstream pods: the filter picking the pod; the floor filter (reads the
# body, the client names the pod); the ext_proc floor (Envoy streams each request
# to bench/ext-proc-floor, which names the pod); no filter, the client naming the
# pod. Rounds of closed-loop load rotate between them for 1 KB and 200 KB bodies.
# Pool clusters are override_host (ORIGINAL_DST with --original-dst).
# `make bench-overhead` builds first; arguments go to the benchmark binary
# (`--rounds`, `--requests`, `--concurrency`, `--sizes`; see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${CARGO_TARGET_DIR:-target}/release/bench-overhead"
# The benchmark starts the collector found beside it.
[ -x "${CARGO_TARGET_DIR:-target}/release/sidecar-collector" ] || cargo build --release -p sidecar-collector
# The ext_proc arm's external processor (bench/ext-proc-floor), also found beside it.
[ -x "${CARGO_TARGET_DIR:-target}/release/ext-proc-floor" ] || cargo build --release -p ext-proc-floor
[ -x "$bench" ] || { echo "bench-overhead: $bench missing: run \`make bench-overhead\`" >&2; exit 1; }
[ -f "${GATEWAY_FILTER_WASM:-target/gateway_filter.wasm}" ] || { echo "bench-overhead: the filter is missing: run \`make wasm\`" >&2; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
exec "$bench" "$@"
