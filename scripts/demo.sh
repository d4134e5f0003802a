#!/usr/bin/env bash
# The demo: simulated pods (examples/demo/pods.yaml), the sidecar-collector over
# examples/, Envoy with envoy.yaml and the filter, a stream of mixed requests and
# a live table of which pod and target model served them.
#   ./scripts/demo.sh          until Ctrl-C (in a terminal; without one: 500 requests)
#   ./scripts/demo.sh 500      500 requests, then a summary; exit 0 when none failed
# `make demo [REQUESTS=N]` builds everything first and runs this.
# Extra arguments go to the demo binary (see `target/debug/demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${1:-0}
shift || true
target_dir=${CARGO_TARGET_DIR:-target}
demo="$target_dir/debug/demo"
for f in "$demo" "$target_dir/debug/vllm-sim" "$target_dir/debug/sidecar-collector"; do
  [ -x "$f" ] || { echo "demo: $f is missing: run \`make build\` (or \`make demo\`)" >&2; exit 1; }
done
[ -f target/gateway_filter.wasm ] || { echo "demo: target/gateway_filter.wasm is missing: run \`make wasm\`" >&2; exit 1; }
[ -x .venv/bin/envoy ] || ./scripts/setup.sh

# The demo binary stops its pods, collector and Envoy itself on Ctrl-C or
# SIGTERM; should it die without doing so, the kernel kills them with it
# (PR_SET_PDEATHSIG). Forward a signal this script receives to it.
"$demo" --requests "$requests" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
status=0
wait "$pid" || status=$?
# A trapped signal interrupts the first wait: wait again for the demo's own
# (clean) exit status.
if [ "$status" -gt 128 ]; then status=0; wait "$pid" || status=$?; fi
exit "$status"
