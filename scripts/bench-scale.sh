#!/usr/bin/env bash
# How the cost grows with the work, in one run: 8 -> 4,096 endpoints spread over
# 1 -> 64 pools.
#   1. the filter's side (bench-wasm --scale, wasmtime fuel): decision cost,
#      snapshot bytes and decode cost per version, shared-data bytes per Envoy;
#   2. the collector's side (scripts/bench-collector.sh per step): CPU and the
#      scrape-to-publish p99 at a 50 ms scrape interval;
#   3. the first step where one collector no longer keeps its 50 ms (every
#      endpoint scraped at >= 95% of 20 Hz and p99 scrape-to-publish <= 50 ms),
#      rerun with --scrape-cpu-budget: the interval lengthens instead.
#   scripts/bench-scale.sh [SECONDS=10] [BUDGET_CORES=0.5]
# Run through `make bench-scale` (builds the release binaries and the filter first).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_MEASURED=${1:-10}
BUDGET=${2:-0.5}
BIN=${CARGO_TARGET_DIR:-target}/release
STEPS=("8 1" "64 4" "256 16" "1024 64" "2048 64" "4096 64")
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
"$BIN/bench-wasm" --scale --requests 20

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for step in "${STEPS[@]}"; do
  read -r endpoints pools <<<"$step"
  echo "--- collector: $endpoints endpoints in $pools pools" >&2
  ./scripts/bench-collector.sh "$endpoints" "$SECONDS_MEASURED" "$pools" | tee /dev/stderr | grep '^RESULT ' | sed 's/^RESULT /{"budget": null, "r": /; s/$/}/' >>"$OUT"
done

# The first step past the limit, again with the CPU budget.
limit=$($PY - "$OUT" <<'PYEOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)["r"]
    if r["scrape_share"] < 0.95 or r["p99_le_ms"] is None or r["p99_le_ms"] > 50:
        print(r["endpoints"], r["pools"])
        break
PYEOF
)
if [ -n "$limit" ]; then
  read -r endpoints pools <<<"$limit"
  echo "--- collector: $endpoints endpoints in $pools pools, --scrape-cpu-budget $BUDGET" >&2
  COLLECTOR_ARGS="--scrape-cpu-budget $BUDGET" WARMUP_SECONDS=8 \
    ./scripts/bench-collector.sh "$endpoints" "$SECONDS_MEASURED" "$pools" | tee /dev/stderr | grep '^RESULT ' \
    | sed "s/^RESULT /{\"budget\": $BUDGET, \"r\": /; s/\$/}/" >>"$OUT"
fi

$PY - "$OUT" <<'PYEOF'
import json, sys
print()
print("Collector at a 50 ms scrape interval (one collector, one vllm-sim process serving every endpoint, both on this machine):")
print()
print("| endpoints | pools | CPU budget | interval in force | scrapes / s (share of 20 Hz) | collector CPU | vllm-sim CPU | scrape-to-publish p50 / p99 | snapshots / s | snapshot bytes | build time (mean) | keeps 50 ms |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for line in open(sys.argv[1]):
    row = json.loads(line)
    r, budget = row["r"], row["budget"]
    le = lambda v: f"<= {v:g} ms" if v is not None else "> 5 s"
    keeps = r["scrape_share"] >= 0.95 and r["p99_le_ms"] is not None and r["p99_le_ms"] <= 50
    print(f"| {r['endpoints']} | {r['pools']} | {f'{budget} cores' if budget else 'none'} | {r['interval_ms']} ms | "
          f"{r['scrapes_per_s']} ({100 * r['scrape_share']:.0f}%) | {r['collector_cores']:.2f} cores | {r['sim_cores']:.2f} cores | "
          f"{le(r['p50_le_ms'])} / {le(r['p99_le_ms'])} | {r['snapshots_per_s']} | {r['snapshot_bytes']} | {r['build_ms_mean']} ms | "
          f"{'yes' if keeps else ('interval stretched, p99 ' + ('kept' if r['p99_le_ms'] is not None and r['p99_le_ms'] <= 50 else 'not kept')) if budget else ('yes' if keeps else '**no**')} |")
PYEOF
