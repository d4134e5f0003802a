#!/usr/bin/env bash
# `make bench-e2e`: a real benchmark client (inference-perf, Kubernetes wg-serving's
# tool) drives the same load through two Envoys in front of the same simulated
# vLLM pods:
#   gateway      Envoy + the llm-gateway wasm filter + sidecar-collector
#   round-robin  Envoy with the pool as a plain round-robin cluster
# and prints TTFT, inter-token latency and throughput side by side. The pods are
# restarted before every run so both start with cold KV caches.
#
# Needs `make build` (target/debug/{vllm-sim,sidecar-collector},
# target/gateway_filter.wasm, .venv/bin/envoy). Installs inference-perf into its
# own venv (.venv-bench, scripts/requirements-bench.txt) so .venv stays lean.
#
# Knobs (environment):
#   BENCH_E2E_WORKLOAD    inference-perf workload    (bench/e2e/shared-prefix.yaml)
#   BENCH_E2E_TIME_SCALE  simulator wall s per simulated s (4; rates scale with it)
#   BENCH_E2E_PODS        simulated pods             (8)
#   BENCH_E2E_KV_BLOCKS   KV-cache blocks per pod    (2048 = 32k tokens)
#   BENCH_E2E_DURATION    seconds per load stage     (the workload's)
#   BENCH_E2E_ROUNDS      gateway/round-robin pairs, order alternating (1)
#   BENCH_E2E_OUT         results folder             (target/bench-e2e)
#   LLMGW_BIN_DIR         vllm-sim, sidecar-collector (target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WORKLOAD=${BENCH_E2E_WORKLOAD:-bench/e2e/shared-prefix.yaml}
TIME_SCALE=${BENCH_E2E_TIME_SCALE:-4}
PODS=${BENCH_E2E_PODS:-8}
KV_BLOCKS=${BENCH_E2E_KV_BLOCKS:-2048}
DURATION=${BENCH_E2E_DURATION:-}
ROUNDS=${BENCH_E2E_ROUNDS:-1}
OUT=${BENCH_E2E_OUT:-target/bench-e2e}
BIN_DIR=${LLMGW_BIN_DIR:-target/debug}
WASM=${GATEWAY_FILTER_WASM:-$ROOT/target/gateway_filter.wasm}
ENVOY=${LLMGW_VENV:-$ROOT/.venv}/bin/envoy
BENCH_VENV=.venv-bench
BENCH_REQS=scripts/requirements-bench.txt
POOL=bench-pool
MODEL=meta-llama/Llama-3.1-8B-Instruct
# Pods keep the manifests' target port on their own loopback IPs (127.77.0.N:8000).
POD_NET=127.77.0
POD_PORT=8000
# Upper bound for one inference-perf run (datagen + stages + report).
RUN_TIMEOUT_S=900

log() { printf '[bench-e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- prerequisites -----------------------------------------------------------

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_E2E_ROUNDS must be a positive integer, got '$ROUNDS'"
[[ "$PODS" =~ ^[1-9][0-9]*$ && "$PODS" -le 200 ]] || die "BENCH_E2E_PODS must be 1..200, got '$PODS'"
[[ "$KV_BLOCKS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_E2E_KV_BLOCKS must be a positive integer, got '$KV_BLOCKS'"
[[ "$TIME_SCALE" =~ ^[0-9]+(\.[0-9]+)?$ && ! "$TIME_SCALE" =~ ^0+(\.0+)?$ ]] \
  || die "BENCH_E2E_TIME_SCALE must be a number > 0, got '$TIME_SCALE'"
[[ -z "$DURATION" || "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "BENCH_E2E_DURATION must be a positive integer, got '$DURATION'"
[ -f "$WORKLOAD" ] || die "workload $WORKLOAD not found"
for bin in vllm-sim sidecar-collector; do
  [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin missing: run 'make build' (or 'make native')"
done
[ -f "$WASM" ] || die "$WASM missing: run 'make wasm'"
[ -x "$ENVOY" ] || die "$ENVOY missing: run 'make setup'"

find_python312() {
  local c
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1 && "$c" --version >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}

# inference-perf and its dependencies (transformers, datasets, ...) are large; they
# live in their own venv so `make test` does not install them.
stamp="$BENCH_VENV/.installed-$(sha256sum "$BENCH_REQS" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  py=$(find_python312) || die "Python 3.12 not found (inference-perf needs Python >= 3.12)"
  log "installing $BENCH_REQS into $BENCH_VENV (first run: a few minutes)"
  [ -x "$BENCH_VENV/bin/python" ] || "$py" -m venv "$BENCH_VENV"
  "$BENCH_VENV/bin/pip" install -q --disable-pip-version-check -r "$BENCH_REQS"
  rm -f "$BENCH_VENV"/.installed-*
  touch "$stamp"
fi
PY=$BENCH_VENV/bin/python
# No model hub is reachable: everything loads from local files.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# ---- working folder, processes, cleanup ----------------------------------------

# Only what an earlier run left: OUT may be any folder the user names.
mkdir -p "$OUT"
rm -rf "$OUT"/{logs,manifests,runs,tokenizer} "$OUT"/{envoy-gateway.yaml,envoy-round-robin.yaml,run.json,results.md}
mkdir -p "$OUT"/{logs,manifests,runs}
OUT=$(cd "$OUT" && pwd)

declare -A PIDS=()
stop_proc() { # name
  local pid=${PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$1]"
}
cleanup() {
  local name
  for name in "${!PIDS[@]}"; do stop_proc "$name"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# ---- simulated pods ------------------------------------------------------------

pod_ip() { echo "$POD_NET.$1"; }

for i in $(seq "$PODS"); do
  cat >>"$OUT/manifests/pods.yaml" <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: bench-sim-$i
  namespace: default
  labels: { app: bench-sim }
status:
  phase: Running
  podIP: $(pod_ip "$i")
  conditions:
  - { type: Ready, status: "True" }
EOF
done
cat >"$OUT/manifests/pool.yaml" <<EOF
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: $POOL
  namespace: default
spec:
  selector:
    matchLabels: { app: bench-sim }
  targetPorts:
  - number: $POD_PORT
  endpointPickerRef:
    name: llm-gateway
    port: { number: 9002 }
EOF

sim_args=(--model "$MODEL" --time-scale "$TIME_SCALE" --num-gpu-blocks "$KV_BLOCKS" --seed 7)
for i in $(seq "$PODS"); do sim_args+=(--pod "bench-sim-$i=$(pod_ip "$i"):$POD_PORT"); done

all_pods_healthy() {
  local i
  for i in $(seq "$PODS"); do curl -sf -m 1 "http://$(pod_ip "$i"):$POD_PORT/health" || return 1; done
}

# Fresh pods: empty KV caches and zeroed counters for every run.
start_pods() {
  stop_proc sim
  "$BIN_DIR/vllm-sim" "${sim_args[@]}" >"$OUT/logs/sim.out" 2>>"$OUT/logs/sim.log" &
  PIDS[sim]=$!
  wait_for "$PODS simulated pods" 30 all_pods_healthy
}

# ---- collector and the two Envoys ----------------------------------------------

COLLECTOR_GRPC=127.0.0.1:$(free_port)
COLLECTOR_HTTP=127.0.0.1:$(free_port)
GATEWAY_PORT=$(free_port); GATEWAY_ADMIN=$(free_port)
RR_PORT=$(free_port); RR_ADMIN=$(free_port)

start_pods
"$BIN_DIR/sidecar-collector" --source file --dir "$OUT/manifests" \
  --grpc-listen "$COLLECTOR_GRPC" --http-listen "$COLLECTOR_HTTP" >"$OUT/logs/collector.log" 2>&1 &
PIDS[collector]=$!

collector_sees_all_pods() {
  curl -sf -m 1 "http://$COLLECTOR_HTTP/metrics" \
    | grep -Eq "^inference_pool_ready_pods\{[^}]*name=\"$POOL\"[^}]*\} $PODS(\.0)?$"
}
wait_for "the collector to publish $PODS ready pods" 30 collector_sees_all_pods

# The gateway: the filter's Envoy configuration (as in envoy.yaml) with this
# benchmark's pool, ports and collector.
endpoints=""
for i in $(seq "$PODS"); do
  endpoints+="        - endpoint: { address: { socket_address: { address: $(pod_ip "$i"), port_value: $POD_PORT } } }"$'\n'
done
sed -e "s|@LISTEN_PORT@|$GATEWAY_PORT|; s|@ADMIN_PORT@|$GATEWAY_ADMIN|; s|@POOL@|$POOL|g" \
    -e "s|@WASM@|$WASM|; s|@COLLECTOR_IP@|${COLLECTOR_GRPC%:*}|; s|@COLLECTOR_PORT@|${COLLECTOR_GRPC##*:}|" \
    bench/e2e/envoy-gateway.yaml.in | awk -v eps="$endpoints" '$0 == "@ENDPOINTS@" { printf "%s", eps; next } { print }' \
    >"$OUT/envoy-gateway.yaml"
sed -e "s|@LISTEN_PORT@|$RR_PORT|; s|@ADMIN_PORT@|$RR_ADMIN|; s|@POOL@|$POOL|g" \
    bench/e2e/envoy-round-robin.yaml.in | awk -v eps="$endpoints" '$0 == "@ENDPOINTS@" { printf "%s", eps; next } { print }' \
    >"$OUT/envoy-round-robin.yaml"

for variant in gateway round-robin; do
  "$ENVOY" -c "$OUT/envoy-$variant.yaml" --concurrency 2 --use-dynamic-base-id \
    -l warning >"$OUT/logs/envoy-$variant.log" 2>&1 &
  PIDS[envoy-$variant]=$!
done
wait_for "the gateway Envoy" 30 curl -sf -m 1 "http://127.0.0.1:$GATEWAY_ADMIN/ready"
wait_for "the round-robin Envoy" 30 curl -sf -m 1 "http://127.0.0.1:$RR_ADMIN/ready"

# One small completion through a listener; succeeds once the whole path serves.
probe() { # port
  curl -sf -m 5 "http://127.0.0.1:$1/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"prompt\":\"probe\",\"max_tokens\":1}"
}

# ---- runs ----------------------------------------------------------------------

"$PY" bench/e2e/make_tokenizer.py "$OUT/tokenizer"

scrape_pods() { # dir
  local i
  for i in $(seq "$PODS"); do
    curl -sf -m 5 "http://$(pod_ip "$i"):$POD_PORT/metrics" >"$1/pod-$i.prom" \
      || log "warning: could not scrape pod $i after the run"
  done
}

run_one() { # round variant port
  local dir="$OUT/runs/$1-$2"
  mkdir -p "$dir/pods"
  start_pods
  wait_for "the collector to see the restarted pods" 30 collector_sees_all_pods
  wait_for "a request through the $2 Envoy" 30 probe "$3"
  "$PY" bench/e2e/render_config.py "$WORKLOAD" --base-url "http://127.0.0.1:$3" \
    --tokenizer "$OUT/tokenizer" --report-dir "$dir/report" --time-scale "$TIME_SCALE" \
    ${DURATION:+--duration "$DURATION"} >"$dir/inference-perf.yaml"
  log "round $1: $2 (inference-perf, log: $dir/inference-perf.log)"
  # In the background so a signal to this script runs its trap at once (bash defers
  # traps while a foreground command runs); timeout passes SIGTERM on.
  timeout "$RUN_TIMEOUT_S" "$BENCH_VENV/bin/inference-perf" -c "$dir/inference-perf.yaml" \
    --log-level WARNING >"$dir/inference-perf.log" 2>&1 &
  PIDS[inference-perf]=$!
  local rc=0
  wait "${PIDS[inference-perf]}" || rc=$?
  unset 'PIDS[inference-perf]'
  if [ "$rc" -ne 0 ]; then
    tail -20 "$dir/inference-perf.log" >&2
    [ "$rc" -ne 124 ] || log "inference-perf ran over ${RUN_TIMEOUT_S}s"
    die "inference-perf failed against the $2 Envoy (exit $rc)"
  fi
  scrape_pods "$dir/pods"
  curl -sf -m 5 "http://127.0.0.1:$4/stats?format=prometheus" >"$dir/envoy-stats.prom" || true
}

log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
cat >"$OUT/run.json" <<EOF
{"workload": "$WORKLOAD", "time_scale": $TIME_SCALE, "pods": $PODS, "kv_blocks": $KV_BLOCKS,
 "rounds": $ROUNDS, "date": "$(date -u +%Y-%m-%dT%H:%MZ)", "cores": $(nproc),
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//; s/"//g')",
 "load_average_start": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF
for round in $(seq "$ROUNDS"); do
  if (( round % 2 == 1 )); then order=(gateway round-robin); else order=(round-robin gateway); fi
  for variant in "${order[@]}"; do
    if [ "$variant" = gateway ]; then
      run_one "$round" gateway "$GATEWAY_PORT" "$GATEWAY_ADMIN"
    else
      run_one "$round" round-robin "$RR_PORT" "$RR_ADMIN"
    fi
  done
done

"$PY" bench/e2e/summarise.py "$OUT"
