"""Measure the classifier and the anomaly maps on a labelled dataset.

Writes results.json, results.md and grid.png (maps over S x N, like the paper's Figures 2-3) into
--out. Localization is scored on real tumor outlines where the data has them (a slice folder's
mask column; MSD Task07 label 2, on the 10 % of cases held out by the paper's 90/10 split) and,
side by side, on lesions simulated inside the pancreas of its healthy slices. Every figure stands
beside the whole-zone, low-attenuation and chance baselines.

Which cases: on the data the model was trained on, only its validation cases (--half picks the
tuning or test half; --all-cases overrides); on a folder that shares no case with the model's
training data, all of its cases (it says so).

Figures are at the model's operating point unless --scale/--noise/--steps/--threshold/--guidance/
--map-kind are given; --scales/--noises/--thresholds add a grid.

The paper's Tables 1 and 2 (Dice over S x threshold and over N) on MSD Task07:

  pancdiff evaluate --data Task07_Pancreas --out tables --scales 5,7,10 \\
      --noises 200,250,300 --thresholds 0.25,0.35,0.5 --paper-filter
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import MAP_KINDS
from ..errors import InputError
from ..progress import Reporter


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="slice folder (manifest.csv) or MSD Task07 folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="results folder")
    parser.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled models)")
    parser.add_argument("--cases", metavar="FILE", help="JSON with a list under 'val_cases' or 'cases' to restrict to")
    parser.add_argument("--all-cases", action="store_true", help="use every case, training cases included")
    parser.add_argument(
        "--half",
        choices=("both", "tune", "test"),
        default="both",
        help="on the model's own data: its validation cases, or only their tuning or test half (default both)",
    )
    parser.add_argument("--scale", type=float, help="guidance scale S (default: the operating point's)")
    parser.add_argument("--noise", type=int, help="noise level N on the 1000-step scale (default: operating point)")
    parser.add_argument("--steps", type=int, help="DDIM steps K <= N (default: operating point)")
    parser.add_argument("--threshold", type=float, help="candidate threshold, a fraction of the normalized map")
    parser.add_argument("--guidance", choices=("noisy", "x0"), help="noisy (the paper) or x0 classifier guidance")
    parser.add_argument(
        "--map-kind", choices=MAP_KINDS,
        help="|x - x_hat| or |x_hat(S=0) - x_hat(S)|; _signed: only what the guided decode brightened",
    )  # fmt: skip
    parser.add_argument("--scales", type=_floats, default=(), help="grid of S, e.g. 0,5,10")
    parser.add_argument("--noises", type=_floats, default=(), help="grid of N, e.g. 200,300")
    parser.add_argument("--thresholds", type=_floats, default=(), help="grid of thresholds, e.g. 0.25,0.35,0.5")
    parser.add_argument(
        "--zone-margin-mm",
        type=float,
        default=None,
        help="pancreas zone: organ mask + this margin (default: the model's margin_mm, 5 mm)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, mps or cpu")
    parser.add_argument("--spacing-mm", type=float, default=0.8, help="pixel spacing of the stored crops")
    parser.add_argument(
        "--paper-filter", action="store_true", help="MSD: drop low-contrast tumor slices as the paper did"
    )


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    import dataclasses

    from ..evaluate import build_eval_set, evaluate, grid_figure, write_results
    from ..weights import load_bundle

    data_dir = Path(args.data)
    if not data_dir.exists():
        raise InputError(f"{data_dir}: data folder does not exist")
    bundle = load_bundle(args.model, "cpu")
    cfg = dataclasses.replace(bundle.operating_point, device=args.device)
    overrides = {
        "scale": args.scale,
        "noise_level": args.noise,
        "steps": args.steps,
        "threshold": args.threshold,
        "guidance": args.guidance,
        "map_kind": args.map_kind,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cases = choose_cases(args, bundle.card.get("split", {}), reporter)
    reporter.stage("data", f"reading {args.data}")
    data = build_eval_set(
        data_dir, bundle, cases, spacing_mm=args.spacing_mm, paper_filter=args.paper_filter,
        zone_margin_mm=args.zone_margin_mm,
    )  # fmt: skip
    grid = (args.scales, tuple(int(n) for n in args.noises), args.thresholds)
    results = evaluate(bundle, data, cfg, reporter, grid)
    out = Path(args.out)
    write_results(results, out)
    scales = args.scales or (0.0, cfg.scale, 2 * cfg.scale)
    noises = tuple(int(n) for n in args.noises) or (cfg.noise_level // 2, cfg.noise_level)
    grid_figure(bundle, data, scales, noises, cfg, out / "grid.png")
    reporter.info((out / "results.md").read_text(encoding="utf-8"))
    args.result = {"results": str(out / "results.json")}
    return 0


def choose_cases(args: argparse.Namespace, split: dict, reporter: Reporter) -> set[str] | None:
    """The cases to score: a --cases file; all (--all-cases, MSD, or a folder new to the model); or
    the model's validation cases (a half of them with --half) when the folder holds its training data."""
    from ..datasets.slice_folder import read_manifest, tuning_test_halves

    if args.cases:
        doc = json.loads(Path(args.cases).read_text(encoding="utf-8"))
        return set(doc.get("val_cases") or doc.get("cases") or [])
    if args.all_cases or _is_msd(args.data) or not split.get("val_cases"):
        return None
    folder = {r.case for r in read_manifest(args.data)}
    known = set(split.get("train_cases", [])) | set(split["val_cases"])
    if not folder & known:
        reporter.info(f"none of this folder's {len(folder)} cases trained the model: scoring all of them")
        return None
    val = sorted(split["val_cases"])
    tune, test = tuning_test_halves(val)
    chosen = {"both": val, "tune": tune, "test": test}[args.half]
    cases = set(chosen) & folder
    reporter.info(
        f"this folder holds the model's training data: scoring its {len(cases)} validation cases"
        f"{'' if args.half == 'both' else ' (' + args.half + ' half)'}; --all-cases for every case"
    )
    return cases


def _is_msd(path: str) -> bool:
    return (Path(path) / "dataset.json").is_file() and not (Path(path) / "manifest.csv").is_file()
