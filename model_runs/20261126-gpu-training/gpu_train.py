"""Train the diffusion UNet and the classifier side by side on one GPU inside a wall-clock budget.

A device machine is lent for minutes, not hours: a short probe of both runs at once measures the
step rate under the same contention, then each real run gets the steps that fit the budget.
Run from the repository root:

    python model_runs/20261126-gpu-training/gpu_train.py --data DATA --out OUT --budget-s 420
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {"diffusion": HERE / "diffusion_gpu.json", "classifier": HERE / "classifier_gpu.json"}


def launch(kind: str, settings: dict, out: Path, data: str, device: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    cfg = out.parent / f"{out.name}_config.json"
    cfg.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    # train() itself, not the CLI: the CLI imports SimpleITK, which the device machine lacks
    code = "import sys; from pancdiff.train import config_from_json, train; "
    code += "train(sys.argv[1], sys.argv[2], sys.argv[3], config_from_json(sys.argv[4]), device=sys.argv[5])"
    cmd = [sys.executable, "-c", code, kind, data, str(out), str(cfg), device]
    log = open(out.parent / f"{out.name}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def steps_per_second(run: Path) -> float:
    """Rate between the second logged row and the last, so start-up (data, CUDA) is left out."""
    rows = list(csv.DictReader((run / "loss.csv").open(encoding="utf-8")))
    if len(rows) < 3:
        raise SystemExit(f"{run}: too few logged steps to time; probe longer")
    a, b = rows[1], rows[-1]
    return (int(b["step"]) - int(a["step"])) / max(1e-6, float(b["elapsed_s"]) - float(a["elapsed_s"]))


def run_all(runs: dict[str, dict], out: Path, data: str, device: str, limit_s: float) -> dict[str, int]:
    procs = {k: launch(k, s, out / k, data, device) for k, s in runs.items()}
    deadline = time.monotonic() + limit_s
    codes = {}
    for kind, proc in procs.items():
        try:
            codes[kind] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[kind] = -9
    return codes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock seconds for the real runs")
    p.add_argument("--probe-steps", type=int, default=400)
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-workers", action="store_true", help="build batches in the training loop")
    args = p.parse_args()
    base = {k: json.loads(v.read_text(encoding="utf-8")) for k, v in CONFIGS.items()}
    if args.no_workers:
        base = {k: {**s, "data_workers": 0} for k, s in base.items()}
    n = args.probe_steps
    probe = {k: {**s, "iterations": n, "validate_every": n, "checkpoint_every": n} for k, s in base.items()}
    t0 = time.monotonic()
    codes = run_all(probe, args.out / "probe", args.data, args.device, 300.0)
    if any(codes.values()):
        print(json.dumps({"probe_failed": codes}))
        return 3
    rates = {k: steps_per_second(args.out / "probe" / k) for k in base}
    print(json.dumps({"probe_s": round(time.monotonic() - t0, 1), "steps_per_s": rates}), flush=True)
    runs = {}
    for kind, s in base.items():
        iterations = max(1, int(rates[kind] * args.budget_s))
        every = max(1, iterations // 10)
        runs[kind] = {**s, "iterations": iterations, "checkpoint_every": every, "validate_every": 4 * every}
    t0 = time.monotonic()
    codes = run_all(runs, args.out, args.data, args.device, 1.4 * args.budget_s + 60)
    print(json.dumps({"train_s": round(time.monotonic() - t0, 1), "exit": codes,
                      "iterations": {k: r["iterations"] for k, r in runs.items()}}), flush=True)  # fmt: skip
    return int(any(codes.values()))


if __name__ == "__main__":
    raise SystemExit(main())
