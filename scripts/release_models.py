"""Assemble the bundled models from two training runs, choose the operating point, write the card.

Honesty rules built in: the operating point (S, N, threshold) is chosen on the *tuning half* of the
validation cases only, and every reported figure comes from the other (*test*) half. Nothing is
chosen on the figures that are reported.

    python scripts/release_models.py --diffusion runs/diffusion --classifier runs/classifier \
        --data ../shared/data/pancreas-tc --out PancDiffSlicer/Resources/Models
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from pancdiff import __version__
from pancdiff.config import DetectConfig
from pancdiff.datasets.slice_folder import read_manifest
from pancdiff.evaluate import (
    build_eval_set,
    choose_operating_point,
    evaluate,
    grid_figure,
    results_markdown,
)
from pancdiff.networks import NoisyClassifier, build_unet
from pancdiff.progress import Reporter
from pancdiff.train import TrainConfig, config_from_json
from pancdiff.weights import ModelBundle, _load_into, save_bundle


def halves(cases: list[str]) -> tuple[list[str], list[str]]:
    """Deterministic split of the validation cases into tuning and test halves, per source."""
    tune, test = [], []
    for prefix in sorted({c.split("_")[0] for c in cases}):
        group = sorted(c for c in cases if c.split("_")[0] == prefix)
        tune += group[0::2]
        test += group[1::2]
    return tune, test


def load_run(run: Path) -> tuple[dict, TrainConfig, int]:
    meta = json.loads((run / "train_config.json").read_text())
    kind = meta.pop("kind")
    cfg = config_from_json(None, **meta)
    step = json.loads((run / "checkpoint" / "state.json").read_text())["step"]
    return {"kind": kind, **meta}, cfg, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--diffusion", type=Path, required=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=10, help="fast K, chosen from the benchmark trade-off")
    p.add_argument("--scales", default="3,7,15")
    p.add_argument("--noises", default="200,300")
    p.add_argument("--max-fp", type=float, default=0.02)
    p.add_argument("--model-id", default=None)
    args = p.parse_args()
    reporter = Reporter("bar")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    d_meta, d_cfg, d_step = load_run(args.diffusion)
    c_meta, c_cfg, c_step = load_run(args.classifier)
    split = json.loads((args.diffusion / "split.json").read_text())
    if split != json.loads((args.classifier / "split.json").read_text()):
        raise SystemExit("the two runs used different case splits")
    if d_cfg.network != c_cfg.network or d_cfg.preprocess != c_cfg.preprocess:
        raise SystemExit("the two runs used different network or preprocessing configs")

    unet, classifier = build_unet(d_cfg.network), NoisyClassifier(c_cfg.network)
    _load_into(unet, args.diffusion / "diffusion.safetensors")
    _load_into(classifier, args.classifier / "classifier.safetensors")
    model_id = args.model_id or f"pancdiff-tc64-{time.strftime('%Y%m%d')}"
    bundle = ModelBundle(
        unet.eval(),
        classifier.eval(),
        d_cfg.network,
        d_cfg.schedule,
        d_cfg.preprocess,
        DetectConfig(steps=args.steps),
        model_id,
    )

    tune_cases, test_cases = halves(split["val_cases"])
    spacing = d_cfg.assumed_spacing_mm
    reporter.stage("tune", f"{len(tune_cases)} tuning cases")
    tune = build_eval_set(args.data, bundle, set(tune_cases), spacing, seed=11)
    scales = [float(s) for s in args.scales.split(",")]
    noises = [int(n) for n in args.noises.split(",")]
    chosen, tune_rows = choose_operating_point(bundle, tune, scales, noises, args.steps, args.max_fp, reporter)
    bundle.operating_point = chosen

    reporter.stage(
        "test",
        f"{len(test_cases)} test cases at S={chosen.scale} N={chosen.noise_level} "
        f"K={chosen.steps} threshold={chosen.threshold}",
    )
    test = build_eval_set(args.data, bundle, set(test_cases), spacing, seed=22)
    results = evaluate(bundle, test, chosen, reporter)
    results["split_half"] = "test half of the validation cases (operating point chosen on the other half)"

    card = {
        "name": "PancDiff bundled models",
        "pancdiff_version": __version__,
        "intended_use": "Research on weakly supervised pancreatic tumor detection. Not for diagnosis, "
        "not a medical device.",
        "data": {
            "name": "pancreas-tc (MiniGPT-Pancreas TC slices, commit f3da4f3)",
            "tumor": "MSD Task07 Pancreas (MSKCC), slices with large tumor extent",
            "healthy": "NIH Pancreas-CT (TCIA)",
            "slices": len(read_manifest(args.data)),
            "assumed_pixel_spacing_mm": spacing,
        },
        "split": {**split, "tune_cases": tune_cases, "test_cases": test_cases},
        "training": {
            "diffusion": {**d_meta, "steps_done": d_step},
            "classifier": {**c_meta, "steps_done": c_step},
            "hardware": f"{platform.machine()} CPU, 2 cores, torch {torch.__version__}",
        },
        "operating_point_selection": {
            "on": "tuning half of the validation cases (simulated lesions in healthy crops + healthy crops)",
            "rule": f"max mean Dice with healthy false-positive fraction <= {args.max_fp}",
            "grid": tune_rows,
        },
        "validation": results,
    }
    out = save_bundle(bundle, args.out, card)
    args.out.joinpath("MODEL_CARD.md").write_text(card_markdown(json.loads((out / "model.json").read_text())))
    grid_figure(
        bundle,
        test,
        (0.0, chosen.scale, 2 * chosen.scale),
        tuple(sorted({chosen.noise_level // 2, chosen.noise_level})),
        chosen.steps,
        args.out / "validation_grid.png",
    )
    print(results_markdown(results))


def card_markdown(card: dict) -> str:
    v = card["validation"]
    op = card["operating_point"]
    tr = card["training"]
    grid = card["operating_point_selection"]["grid"]
    lines = [
        f"# Model card: {card['model_id']}",
        "",
        f"**Intended use:** {card['intended_use']}",
        "",
        "## Data and split",
        f"- {card['data']['name']}: tumor slices from {card['data']['tumor']}; healthy slices from "
        f"{card['data']['healthy']}. Image-level labels only.",
        f"- Split by patient (seed {card['split']['seed']}): {len(card['split']['train_cases'])} training cases, "
        f"{len(card['split']['val_cases'])} validation cases, the latter halved into "
        f"{len(card['split']['tune_cases'])} tuning and {len(card['split']['test_cases'])} test cases. "
        "Case lists are in model.json.",
        "- Confounds fought: healthy crops are cut to box sizes drawn from the tumor crops (crop size), "
        "intensity jitter (site), a pooled classifier head (no position/border cue), and half of the "
        "classifier's positives are healthy crops with simulated lesions (same site, only the lesion differs).",
        "",
        "## Preprocessing",
        f"- `{json.dumps(card['preprocess'])}`",
        f"- Stored crops are assumed to have {card['data']['assumed_pixel_spacing_mm']} mm pixels.",
        "",
        "## Networks and training",
        f"- Network config: `{json.dumps(card['network'])}`",
        f"- Schedule: `{json.dumps(card['schedule'])}`",
        f"- Diffusion UNet: {tr['diffusion']['steps_done']} steps, batch {tr['diffusion']['batch_size']}, "
        f"lr {tr['diffusion']['lr']}, EMA {tr['diffusion']['ema_decay']}.",
        f"- Classifier: {tr['classifier']['steps_done']} steps, batch {tr['classifier']['batch_size']}, "
        f"lr {tr['classifier']['lr']}, t ~ U[0, {tr['classifier']['max_timestep']}), "
        f"lesion fraction {tr['classifier']['lesion_fraction']}.",
        f"- Hardware: {tr['hardware']}. Wall time: see the run logs (loss.csv `elapsed_s`).",
        "",
        "## Weights (safetensors, verified on load)",
        *[f"- `{name}`: SHA-256 `{digest}`" for name, digest in card["sha256"].items()],
        "",
        "## Operating point (chosen on the tuning half only)",
        f"- S = {op['scale']}, N = {op['noise_level']}, K = {op['steps']}, threshold = {op['threshold']}, "
        f"smoothing {op['smooth_sigma_px']} px. Rule: {card['operating_point_selection']['rule']}.",
        "",
        "## Validation figures (test half; nothing was tuned on it)",
        "",
        results_markdown(v).split("\n", 2)[2],
        "## Reproduce",
        "```bash",
        "pancdiff train diffusion --data ../shared/data/pancreas-tc --out runs/diffusion "
        "--config PancDiffSlicer/Resources/Models/training/diffusion.json "
        f"--iterations {tr['diffusion']['steps_done']}",
        "pancdiff train classifier --data ../shared/data/pancreas-tc --out runs/classifier "
        "--config PancDiffSlicer/Resources/Models/training/classifier.json "
        f"--iterations {tr['classifier']['steps_done']}",
        "python scripts/release_models.py --diffusion runs/diffusion --classifier runs/classifier "
        f"--data ../shared/data/pancreas-tc --out PancDiffSlicer/Resources/Models --steps {op['steps']} "
        f"--scales {','.join(f'{v:g}' for v in sorted({r['scale'] for r in grid}))} "
        f"--noises {','.join(str(v) for v in sorted({r['noise_level'] for r in grid}))}",
        "```",
        "CPU training with several threads is not bitwise reproducible; expect figures within noise.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
