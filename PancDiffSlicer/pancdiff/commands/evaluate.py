"""Measure the classifier and the anomaly maps on a labelled slice folder.

Writes results.json, results.md and grid.png (maps over S x N, like the paper's Figures 2-3) into
--out. Localization is scored on tumor masks where the data has them (MSD Task07: label 2, on the
10 % of cases held out by the paper's 90/10 split), otherwise on lesions simulated in its healthy
slices. Tables 1 and 2 of the paper (Dice over S x threshold and over N) on MSD:
  pancdiff evaluate --data Task07_Pancreas --out tables --scales 5,7,10 --noises 200,250,300 \
      --thresholds 0.25,0.35,0.5 --paper-filter By default only the bundled model's *validation* cases are used
when the data is the one it was trained on (--all-cases to override). Figures are at the model's
operating point unless --scale/--noise/--steps/--threshold are given; --scales/--noises/--thresholds
add a grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..progress import Reporter


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="slice folder (manifest.csv) or MSD Task07 folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="results folder")
    parser.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled models)")
    parser.add_argument("--cases", metavar="FILE", help="JSON with a list under 'val_cases' or 'cases' to restrict to")
    parser.add_argument("--all-cases", action="store_true", help="use every case, training cases included")
    parser.add_argument("--scale", type=float)
    parser.add_argument("--noise", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--scales", type=_floats, default=(), help="grid, e.g. 0,5,10")
    parser.add_argument("--noises", type=_floats, default=(), help="grid, e.g. 200,300")
    parser.add_argument("--thresholds", type=_floats, default=(), help="grid, e.g. 0.25,0.35,0.5")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--spacing-mm", type=float, default=0.8, help="pixel spacing of the stored crops")
    parser.add_argument(
        "--paper-filter", action="store_true", help="MSD: drop low-contrast tumor slices as the paper did"
    )


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    import dataclasses

    from ..evaluate import build_eval_set, evaluate, grid_figure, write_results
    from ..weights import load_bundle

    bundle = load_bundle(args.model, "cpu")
    cfg = dataclasses.replace(bundle.operating_point, device=args.device)
    overrides = {"scale": args.scale, "noise_level": args.noise, "steps": args.steps, "threshold": args.threshold}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cases = None
    if args.cases:
        doc = json.loads(Path(args.cases).read_text())
        cases = set(doc.get("val_cases") or doc.get("cases") or [])
    elif not args.all_cases and bundle.card.get("split", {}).get("val_cases") and not _is_msd(args.data):
        cases = set(bundle.card["split"]["val_cases"])
        reporter.info(f"scoring the model's {len(cases)} validation cases (--all-cases for every case)")
    reporter.stage("data", f"reading {args.data}")
    data = build_eval_set(args.data, bundle, cases, spacing_mm=args.spacing_mm, paper_filter=args.paper_filter)
    grid = (args.scales, tuple(int(n) for n in args.noises), args.thresholds)
    results = evaluate(bundle, data, cfg, reporter, grid)
    out = Path(args.out)
    write_results(results, out)
    scales = args.scales or (0.0, cfg.scale, 2 * cfg.scale)
    noises = tuple(int(n) for n in args.noises) or (cfg.noise_level // 2, cfg.noise_level)
    grid_figure(bundle, data, scales, noises, cfg.steps, out / "grid.png")
    reporter.info((out / "results.md").read_text())
    args.result = {"results": str(out / "results.json")}
    return 0


def _is_msd(path: str) -> bool:
    return (Path(path) / "dataset.json").is_file() and not (Path(path) / "manifest.csv").is_file()
