"""Renders an inference-perf workload file for one run of `make bench-e2e`.

The workload files in this folder state their stage rates in *simulated* requests
per second. The simulator can run slower than real time (--time-scale X: X wall
seconds per simulated second) so this 2-core machine can drive the load; the same
simulated load then arrives X times less often in wall time. This script divides
the rates by X (stage durations stay wall-clock seconds) and fills in where to
send requests, the local tokenizer and the report folder.

Usage: python render_config.py WORKLOAD.yaml --base-url URL --tokenizer DIR
                                --report-dir DIR --time-scale X [--duration S]
Prints the rendered YAML on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml


def render(workload: dict[str, Any], base_url: str, tokenizer: Path, report_dir: Path,
           time_scale: float, duration: int | None) -> dict[str, Any]:
    if time_scale <= 0:
        raise ValueError(f"time scale must be > 0, got {time_scale}")
    stages = workload.get("load", {}).get("stages")
    if not stages:
        raise ValueError("workload has no load.stages")
    rendered = dict(workload)
    rendered["server"] = {**workload.get("server", {}), "base_url": base_url}
    rendered["tokenizer"] = {**workload.get("tokenizer", {}),
                             "pretrained_model_name_or_path": str(tokenizer)}
    rendered["storage"] = {"local_storage": {"path": str(report_dir)}}
    load = dict(workload["load"])
    load["stages"] = [
        {**stage,
         "rate": round(float(stage["rate"]) / time_scale, 4),
         "duration": int(duration if duration is not None else stage["duration"])}
        for stage in stages
    ]
    rendered["load"] = load
    return rendered


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--report-dir", type=Path, required=True)
    parser.add_argument("--time-scale", type=float, required=True)
    parser.add_argument("--duration", type=int, help="override every stage's wall-clock duration (s)")
    args = parser.parse_args(argv[1:])
    try:
        workload = yaml.safe_load(args.workload.read_text())
        if not isinstance(workload, dict):
            raise ValueError("workload file is not a YAML mapping")
        rendered = render(workload, args.base_url, args.tokenizer.resolve(),
                          args.report_dir.resolve(), args.time_scale, args.duration)
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError) as e:
        print(f"render_config: {args.workload}: {e}", file=sys.stderr)
        return 2
    yaml.safe_dump(rendered, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
