#!/usr/bin/env bash
# Collector benchmark: N simulated endpoints (one vllm-sim process serving
# them all) scraped every 50 ms by a release sidecar-collector in file mode,
# with a light request load so metrics keep changing. Reports the collector's
# CPU share (from /proc), the p99 scrape-to-publish delay (its own histogram),
# snapshot size and rates.
#   scripts/bench-collector.sh [ENDPOINTS=256] [SECONDS=20] [POOLS=1]
# Endpoints are spread round robin over POOLS InferencePools. Extra collector
# flags come from $COLLECTOR_ARGS (e.g. --scrape-cpu-budget 0.8).
# Run through `make bench-collector` (builds the release binaries first).
set -euo pipefail
cd "$(dirname "$0")/.."

ENDPOINTS=${1:-256}
SECONDS_MEASURED=${2:-20}
POOLS=${3:-1}
read -r -a EXTRA_ARGS <<<"${COLLECTOR_ARGS:-}"
BIN=${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
for b in vllm-sim sidecar-collector; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run make bench-collector" >&2; exit 1; }
done
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

args=()
for i in $(seq 1 "$ENDPOINTS"); do args+=(--pod "bench-$i=127.0.0.1:0"); done
"$BIN/vllm-sim" "${args[@]}" --model bench-model --lora-modules a1 a2 a3 --max-loras 2 \
  >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
PIDS+=("$SIM_PID")
for _ in $(seq 1 300); do
  [ "$(grep -c ' listening on ' "$WORK/sim.out" 2>/dev/null || true)" -ge "$ENDPOINTS" ] && break
  kill -0 "$SIM_PID" 2>/dev/null || { cat "$WORK/sim.err" >&2; exit 1; }
  sleep 0.1
done

mkdir "$WORK/manifests"
for p in $(seq 0 $((POOLS - 1))); do
  cat <<EOF
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: bench-$p
spec:
  selector:
    matchLabels: {app: bench-$p}
  targetPorts: [{number: 8000}]
EOF
done >"$WORK/manifests/pools.yaml"
awk -v pools="$POOLS" '/ listening on /{split($5,a,":"); printf "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  labels: {app: bench-%d}\n  annotations: {llm-gateway.io/port-map: \"8000=%s\"}\nstatus:\n  podIP: 127.0.0.1\n  conditions: [{type: Ready, status: \"True\"}]\n", $2, n++ % pools, a[2]}' \
  "$WORK/sim.out" >"$WORK/manifests/pods.yaml"
awk '/ listening on /{print $5}' "$WORK/sim.out" >"$WORK/addresses"

read -r GRPC HTTP < <($PY -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
"$BIN/sidecar-collector" --source file --dir "$WORK/manifests" \
  --grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" \
  --scrape-interval 50ms ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} >"$WORK/collector.out" 2>"$WORK/collector.err" &
COLLECTOR_PID=$!
PIDS+=("$COLLECTOR_PID")

$PY - "$COLLECTOR_PID" "$SIM_PID" "$HTTP" "$WORK/addresses" "$SECONDS_MEASURED" "$ENDPOINTS" "$POOLS" <<'PYEOF'
import json, os, random, re, sys, threading, time, urllib.request

collector_pid, sim_pid, http_port, addresses_file, seconds, endpoints, pools = sys.argv[1:8]
seconds = float(seconds)
addresses = open(addresses_file).read().split()
base = f"http://127.0.0.1:{http_port}"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def get(path):
    with opener.open(base + path, timeout=5) as r:
        return r.status, r.read().decode()

deadline = time.time() + 60
while True:
    try:
        if get("/readyz")[0] == 200:
            break
    except Exception:
        pass
    if time.time() > deadline:
        try:
            text = get("/metrics")[1]
            print("\n".join(l for l in text.splitlines() if l.startswith(("inference_pool_ready_pods", "llmgw_collector_snapshot", "llmgw_collector_ready"))))
        except Exception as e:
            print("metrics unavailable:", e)
        sys.exit("collector did not become ready")
    time.sleep(0.1)

stop = threading.Event()
sent = [0]
def load():
    # Light load so metrics keep changing on many endpoints.
    while not stop.is_set():
        addr = random.choice(addresses)
        body = json.dumps({"model": random.choice(["bench-model", "a1", "a2", "a3"]),
                           "prompt": "benchmark " * 20, "max_tokens": 16}).encode()
        req = urllib.request.Request(f"http://{addr}/v1/completions", data=body,
                                     headers={"content-type": "application/json"})
        try:
            opener.open(req, timeout=10).read()
            sent[0] += 1
        except Exception:
            pass
threads = [threading.Thread(target=load, daemon=True) for _ in range(16)]
for t in threads:
    t.start()
# Warm up (longer with a CPU budget, which adjusts once a second).
time.sleep(float(os.environ.get("WARMUP_SECONDS", "3")))

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def scrape_metrics():
    text = get("/metrics")[1]
    buckets = {}
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'llmgw_collector_scrape_to_publish_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets[m.group(1)] = float(m.group(2))
            continue
        name, _, value = line.rpartition(" ")
        key = name.split("{")[0]
        values[key] = values.get(key, 0.0) + float(value)
    return buckets, values

c0, s0, t0 = cpu_seconds(collector_pid), cpu_seconds(sim_pid), time.time()
b0, v0 = scrape_metrics()
time.sleep(seconds)
c1, s1, t1 = cpu_seconds(collector_pid), cpu_seconds(sim_pid), time.time()
b1, v1 = scrape_metrics()
stop.set()

elapsed = t1 - t0
total = b1["+Inf"] - b0["+Inf"]
p50 = p99 = None
for le in sorted((k for k in b1 if k != "+Inf"), key=float) + ["+Inf"]:
    share = (b1[le] - b0[le]) / total if total else 0
    if p50 is None and share >= 0.50:
        p50 = le
    if p99 is None and share >= 0.99:
        p99 = le
d = lambda k: v1.get(k, 0) - v0.get(k, 0)
ready = int(v1.get("inference_pool_ready_pods", 0))
interval = v1.get("llmgw_collector_scrape_interval_seconds", 0.05)
scrapes = d('llmgw_collector_scrapes_total') / elapsed
nominal = int(endpoints) / 0.05
print(f"endpoints                 {endpoints} in {pools} pools (ready {ready}), scrape interval configured 50 ms, in force {interval * 1000:.0f} ms, {elapsed:.1f} s measured")
print(f"collector CPU             {(c1 - c0) / elapsed:.3f} cores")
print(f"vllm-sim CPU (for scale)  {(s1 - s0) / elapsed:.3f} cores")
print(f"scrapes                   {scrapes:.0f}/s ({100 * scrapes / nominal:.0f}% of 20 Hz per endpoint), errors {d('llmgw_collector_scrape_errors_total'):.0f}")
print(f"snapshots published       {d('llmgw_collector_snapshots_published_total') / elapsed:.1f}/s")
print(f"scrape-to-publish delay   p50 <= {float(p50) * 1000:.1f} ms, p99 <= {float(p99) * 1000:.1f} ms ({total:.0f} changes; histogram bucket bounds)")
print(f"snapshot size             {int(v1.get('llmgw_collector_snapshot_bytes', 0))} bytes")
print(f"load                      {sent[0] / (time.time() - t0 + 3):.0f} requests/s to the simulated pods")
# One line for scripts/bench-scale.sh.
print("RESULT " + json.dumps({
    "endpoints": int(endpoints), "pools": int(pools), "collector_cores": round((c1 - c0) / elapsed, 3),
    "sim_cores": round((s1 - s0) / elapsed, 3), "scrapes_per_s": round(scrapes), "scrape_share": round(scrapes / nominal, 3),
    "interval_ms": round(interval * 1000), "p50_le_ms": float(p50) * 1000 if p50 not in (None, "+Inf") else None,
    "p99_le_ms": float(p99) * 1000 if p99 not in (None, "+Inf") else None,
    "snapshots_per_s": round(d('llmgw_collector_snapshots_published_total') / elapsed, 1),
    "snapshot_bytes": int(v1.get('llmgw_collector_snapshot_bytes', 0)),
    "build_ms_mean": round(1000 * d('llmgw_collector_snapshot_build_seconds_sum') / max(d('llmgw_collector_snapshot_build_seconds_count'), 1), 2)}))
PYEOF
