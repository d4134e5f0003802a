"""Summarises a `make bench-e2e` results folder: the gateway vs round robin, per load stage.

Reads what scripts/bench-e2e.sh leaves in OUT:
  run.json                                  the run's settings, machine and date
  runs/<round>-<variant>/report/            inference-perf's stage_<n>_lifecycle_metrics.json
  runs/<round>-<variant>/inference-perf.yaml the rendered workload (stage rates)
  runs/<round>-<variant>/pods/pod-<i>.prom  each pod's /metrics after the run
prints a Markdown table (also written to OUT/results.md), and exits non-zero when
a run is missing or failed most of its requests, so a broken path cannot pass for
a result.

Latencies are wall-clock as inference-perf measured them. The pods run
`time_scale` times slower than a real GPU would (so this machine can drive them),
and the offered load is stated in simulated requests per second (wall rate x
time_scale).

Usage: python summarise.py OUT
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

VARIANTS = ("gateway", "round-robin")

# A run whose requests failed more often than this is reported as broken.
MAX_FAILURE_SHARE = 0.05

_PROM_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


@dataclass
class StageResult:
    """One load stage of one run, as inference-perf reported it."""

    sim_rate: float
    ok: int
    failed: int
    ttft_p50: float
    ttft_p90: float
    itl_p50: float
    itl_p90: float
    output_tokens_per_s: float


@dataclass
class PodCounters:
    """Sums over the pods' /metrics after one run."""

    requests_per_pod: list[float] = field(default_factory=list)
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    preemptions: float = 0.0

    @property
    def prefix_hit_share(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0


@dataclass
class Run:
    round: int
    variant: str
    stages: list[StageResult]
    pods: PodCounters


class ResultsError(Exception):
    """The results folder is incomplete or a run failed."""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"cannot read {path}: {e}") from e


def _percentile(summary: dict[str, Any] | None, key: str) -> float:
    if not summary or summary.get(key) is None:
        return float("nan")
    return float(summary[key])


def read_stages(run_dir: Path, time_scale: float) -> list[StageResult]:
    try:
        config = yaml.safe_load((run_dir / "inference-perf.yaml").read_text())
        rates = [float(stage["rate"]) for stage in config["load"]["stages"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise ResultsError(f"cannot read the stage rates of {run_dir}: {e}") from e
    stages = []
    for n, wall_rate in enumerate(rates):
        path = run_dir / "report" / f"stage_{n}_lifecycle_metrics.json"
        if not path.exists():
            raise ResultsError(f"{path} is missing: inference-perf did not finish stage {n}")
        report = _load_json(path)
        ok = report.get("successes") or {}
        latency = ok.get("latency") or {}
        failures = report.get("failures") or {}
        stages.append(
            StageResult(
                sim_rate=wall_rate * time_scale,
                ok=int(ok.get("count") or 0),
                failed=int(failures.get("count") or 0),
                ttft_p50=_percentile(latency.get("time_to_first_token"), "median"),
                ttft_p90=_percentile(latency.get("time_to_first_token"), "p90"),
                itl_p50=_percentile(latency.get("inter_token_latency"), "median"),
                itl_p90=_percentile(latency.get("inter_token_latency"), "p90"),
                output_tokens_per_s=float((ok.get("throughput") or {}).get("output_tokens_per_sec") or 0.0),
            )
        )
    return stages


def parse_prometheus(text: str) -> dict[str, float]:
    """Sums each metric family's samples over their labels."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        match = _PROM_LINE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        sums[match.group(1)] = sums.get(match.group(1), 0.0) + value
    return sums


def read_pods(run_dir: Path) -> PodCounters:
    counters = PodCounters()
    for path in sorted((run_dir / "pods").glob("pod-*.prom")):
        metrics = parse_prometheus(path.read_text())
        counters.requests_per_pod.append(metrics.get("vllm:e2e_request_latency_seconds_count", 0.0))
        counters.prefix_queries += metrics.get("vllm:prefix_cache_queries_total", 0.0)
        counters.prefix_hits += metrics.get("vllm:prefix_cache_hits_total", 0.0)
        counters.preemptions += metrics.get("vllm:num_preemptions_total", 0.0)
    return counters


def read_runs(out: Path, time_scale: float) -> list[Run]:
    runs = []
    for run_dir in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:
        round_text, _, variant = run_dir.name.partition("-")
        if variant not in VARIANTS or not round_text.isdigit():
            continue
        runs.append(Run(int(round_text), variant, read_stages(run_dir, time_scale), read_pods(run_dir)))
    for variant in VARIANTS:
        if not any(r.variant == variant for r in runs):
            raise ResultsError(f"no {variant} run in {out / 'runs'}")
    for run in runs:
        for stage in run.stages:
            total = stage.ok + stage.failed
            if total == 0 or stage.failed / total > MAX_FAILURE_SHARE:
                raise ResultsError(
                    f"round {run.round} {run.variant} at {stage.sim_rate:g} req/s: "
                    f"{stage.failed} of {total} requests failed"
                )
    return runs


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.0f}"


def render(runs: list[Run], run_info: dict[str, Any]) -> str:
    """Markdown: one row per (stage, variant), each value the median over rounds."""
    by_variant = {v: [r for r in runs if r.variant == v] for v in VARIANTS}
    n_stages = min(len(r.stages) for r in runs)
    lines = [
        "| offered load (sim req/s) | router | requests ok/failed | TTFT p50 (ms) | TTFT p90 (ms) "
        "| ITL p50 (ms) | ITL p90 (ms) | output tok/s | RR p90 TTFT / gateway |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in range(n_stages):
        p90 = {v: _median([r.stages[n].ttft_p90 for r in rs]) for v, rs in by_variant.items()}
        for variant, variant_runs in by_variant.items():
            stages = [r.stages[n] for r in variant_runs]
            ratio = ""
            if variant == "gateway" and p90["gateway"] > 0:
                ratio = f"{p90['round-robin'] / p90['gateway']:.1f}x"
            lines.append(
                f"| {stages[0].sim_rate:g} | {variant} "
                f"| {sum(s.ok for s in stages)}/{sum(s.failed for s in stages)} "
                f"| {_ms(_median([s.ttft_p50 for s in stages]))} | {_ms(p90[variant])} "
                f"| {_ms(_median([s.itl_p50 for s in stages]))} | {_ms(_median([s.itl_p90 for s in stages]))} "
                f"| {_median([s.output_tokens_per_s for s in stages]):.0f} | {ratio} |"
            )
    lines += [
        "",
        "| router | prefix-cache hit rate (tokens) | requests per pod (min-max) | preemptions |",
        "|---|---:|---:|---:|",
    ]
    for variant, variant_runs in by_variant.items():
        hits = sum(r.pods.prefix_hits for r in variant_runs)
        queries = sum(r.pods.prefix_queries for r in variant_runs)
        per_pod = [c for r in variant_runs for c in r.pods.requests_per_pod]
        spread = f"{min(per_pod):.0f}-{max(per_pod):.0f}" if per_pod else "n/a"
        lines.append(
            f"| {variant} | {100 * hits / queries if queries else 0:.0f}% | {spread} "
            f"| {sum(r.pods.preemptions for r in variant_runs):.0f} |"
        )
    lines += [
        "",
        f"{run_info.get('pods')} simulated pods (vllm-sim, {run_info.get('kv_blocks')} KV blocks each, "
        f"time scale {run_info.get('time_scale')}: latencies are wall-clock, pods run "
        f"{run_info.get('time_scale')}x slower than the simulated H100), workload "
        f"`{run_info.get('workload')}`, {run_info.get('rounds')} round(s) "
        "(latencies and throughput: medians over rounds; requests and pod counters: totals); "
        f"{run_info.get('date')}, {run_info.get('cores')} cores ({run_info.get('cpu')}), "
        f"load average at start {run_info.get('load_average_start')}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out = Path(argv[1])
    try:
        run_info = _load_json(out / "run.json")
        runs = read_runs(out, float(run_info["time_scale"]))
    except (ResultsError, KeyError, ValueError) as e:
        print(f"summarise: {e}", file=sys.stderr)
        return 1
    table = render(runs, run_info)
    (out / "results.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
