"""Checks a running vllm-sim pod with independent tools: the official `openai`
client (streaming and not, chat and completions) and prometheus_client's text
parser for /metrics, compared against the pod's /admin/state.

Usage: check_openai.py BASE_URL MODEL ADAPTER
Exits non-zero with a message on the first failed check."""

import json
import sys
import threading
import time
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
        7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
       10.0, 20.0, 40.0, 80.0]
E2E = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
       120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]

base, model, adapter = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=30, max_retries=0)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def http(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def state():
    return json.loads(http("/admin/state"))


def metrics():
    """{sample name: [(labels, value)]} parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(http("/metrics")):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def one(m, name):
    series = m.get(name)
    check(series is not None and len(series) == 1, f"exactly one series of {name}: {series}")
    labels, value = series[0]
    check(labels.get("model_name") == model and labels.get("engine") == "0", f"labels of {name}: {labels}")
    return value


# --- completions, not streaming
r = client.completions.create(model=model, prompt="Write a haiku about load balancers.", max_tokens=7)
check(r.object == "text_completion", "completion object")
check(r.model == model, "completion model")
check(r.usage.completion_tokens == 7, f"completion tokens {r.usage}")
check(r.usage.total_tokens == r.usage.prompt_tokens + 7, "total tokens")
check(len(r.choices) == 1 and r.choices[0].text.strip() != "", "completion text")
check(r.choices[0].finish_reason == "length", "finish reason")

# --- completions, streaming with usage
chunks = list(client.completions.create(model=adapter, prompt="stream me", max_tokens=5, stream=True,
                                        stream_options={"include_usage": True}))
text = "".join(c.choices[0].text for c in chunks if c.choices)
check(len(text.split()) == 5, f"streamed completion text {text!r}")
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5, "stream usage chunk")
check(all(c.model == adapter for c in chunks), "streamed model names the adapter")

# --- chat, not streaming, on the adapter
c = client.chat.completions.create(model=adapter, max_completion_tokens=6,
                                   messages=[{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "What is a KV cache?"}])
check(c.object == "chat.completion" and c.model == adapter, "chat object/model")
check(c.choices[0].message.role == "assistant" and len(c.choices[0].message.content.split()) == 6, "chat message")
check(c.usage.completion_tokens == 6 and c.usage.prompt_tokens > 10, f"chat usage {c.usage}")

# --- chat, streaming
stream = client.chat.completions.create(model=model, max_tokens=4, stream=True,
                                        messages=[{"role": "user", "content": "hi"}],
                                        stream_options={"include_usage": True})
parts, finish, usage = [], None, None
for ch in stream:
    if ch.usage:
        usage = ch.usage
    for choice in ch.choices:
        if choice.delta.content:
            parts.append(choice.delta.content)
        finish = choice.finish_reason or finish
check(len("".join(parts).split()) == 4 and finish == "length", f"chat stream {parts} {finish}")
check(usage is not None and usage.completion_tokens == 4, "chat stream usage")

# --- models and errors
models = client.models.list().data
ids = {m.id: m for m in models}
check(model in ids and adapter in ids, f"models {list(ids)}")
check(getattr(ids[adapter], "parent", None) == model, "adapter parent")
try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    check(False, "unknown model must fail")
except openai.NotFoundError as e:
    check(e.status_code == 404 and "does not exist" in str(e), f"404 body {e}")
try:
    client.completions.create(model=model, prompt="x " * 200_000, max_tokens=1)
    check(False, "over-long prompt must fail")
except openai.BadRequestError as e:
    check("maximum context length" in str(e), f"400 body {e}")

# --- /metrics against /admin/state while requests wait in a paused engine
http("/admin/faults", {"pause_engine": True})
threads = []
for i in range(4):
    name = adapter if i % 2 == 0 else model
    t = threading.Thread(target=lambda n=name, i=i: client.completions.create(
        model=n, prompt=f"queued {i} " * 40, max_tokens=3))
    t.start()
    threads.append(t)
deadline = time.time() + 20
while state()["waiting"] < 4 and time.time() < deadline:
    time.sleep(0.05)
s, m = state(), metrics()
check(s["waiting"] == 4 and s["running"] == 0, f"paused engine queues: {s}")
check(one(m, "vllm:num_requests_waiting") == s["waiting"], "waiting gauge")
check(one(m, "vllm:num_requests_running") == s["running"], "running gauge")
check(one(m, "vllm:kv_cache_usage_perc") == s["kv_cache_usage"], "kv usage gauge")
lora = max(m["vllm:lora_requests_info"], key=lambda x: x[1])
check(lora[0]["waiting_lora_adapters"] == ",".join(s["waiting_adapters"]) == adapter, f"lora info {lora}")
check(lora[0]["max_lora"] == str(s["max_loras"]), "max_lora label")
check(abs(lora[1] - time.time()) < 60, "lora info value is a unix timestamp")
http("/admin/faults", {"pause_engine": False})
for t in threads:
    t.join(30)
deadline = time.time() + 20
while (state()["running"] or state()["waiting"]) and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.2)

s, m = state(), metrics()
check(one(m, "vllm:num_requests_running") == 0 == s["running"], "idle running")
check(one(m, "vllm:kv_cache_usage_perc") == s["kv_cache_usage"] == 0.0, "idle kv usage")
check(one(m, "vllm:prefix_cache_queries_total") == s["prefix_queries_tokens"], "prefix queries")
check(one(m, "vllm:prefix_cache_hits_total") == s["prefix_hits_tokens"], "prefix hits")
check(one(m, "vllm:num_preemptions_total") == s["preemptions"], "preemptions")
check(one(m, "vllm:generation_tokens_total") == s["generation_tokens_total"], "generation tokens")
cfg = m["vllm:cache_config_info"][0][0]
check(cfg["block_size"] == str(s["block_size"]) and cfg["num_gpu_blocks"] == str(s["num_gpu_blocks"]),
      f"cache_config_info {cfg}")
finished = sum(v for labels, v in m["vllm:request_success_total"])
# 4 answered above + 4 queued; the two refused requests never reached the engine.
check(finished == 8, f"request_success_total {finished}")
for name, buckets in [("vllm:time_to_first_token_seconds", TTFT),
                      ("vllm:inter_token_latency_seconds", ITL),
                      ("vllm:e2e_request_latency_seconds", E2E)]:
    bs = m[name + "_bucket"]
    les = [float(labels["le"]) for labels, _ in bs]
    check(les == buckets + [float("inf")], f"{name} buckets {les}")
    counts = [v for _, v in bs]
    check(counts == sorted(counts), f"{name} cumulative")
    check(counts[-1] == m[name + "_count"][0][1], f"{name} +Inf == count")
check(m["vllm:time_to_first_token_seconds_count"][0][1] == 8, "one TTFT per request")
check(m["vllm:e2e_request_latency_seconds_count"][0][1] == 8, "one e2e per request")
check(m["vllm:e2e_request_latency_seconds_sum"][0][1] > 0, "e2e sum")

print(f"{checks} checks passed")
