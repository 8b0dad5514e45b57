"""Assemble the bundled models, choose the operating point, gate the release, write the card.

Honesty rules built in:
- Everything is chosen on the *tuning half* of the validation cases: guidance kind, map kind, S, N,
  normalization and threshold. The *test half* is scored once, after the choice, for the card.
- The release gate refuses (exit 1, nothing written to --out) a bundle whose paired simulated-lesion
  AUROC at t = 0 is below ``--min-paired-auroc`` or whose tuning-half Dice (mean of real outlines
  and simulated lesions) does not beat the low-attenuation baseline's, tuned on the same half.

    python scripts/release_models.py --diffusion runs/diffusion --classifier runs/classifier \\
        --data ../shared/data/pancreas-tc --out PancDiffSlicer/Resources/Models

``--unet-from DIR`` takes the UNet (and its training record) from an existing bundle instead of a
diffusion run, for a classifier-only retrain; ``--classifier-from DIR`` takes the classifier (its
weights, training record and case split) from one, to redo a release's choices on shipped weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pancdiff import __version__
from pancdiff.benchmark import run_benchmark
from pancdiff.calibration import calibration_record, fit_platt, logit_difference
from pancdiff.config import GUIDANCE_STEPS, DetectConfig, from_dict, to_dict
from pancdiff.datasets.slice_folder import read_manifest, tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.evaluate import (
    PEAK_SIGMAS,
    best_allowed,
    best_by,
    build_eval_set,
    calibrate_map_scale,
    choose_operating_point,
    choose_peak_sigma,
    choose_smoothing,
    classifier_metrics,
    evaluate,
    grid_figure,
    low_attenuation_raw,
    results_markdown,
    saliency_maps,
    setting_maps,
    threshold_rows,
)
from pancdiff.input_domain import training_range
from pancdiff.lesion_head import LesionHeadConfig, head_fits
from pancdiff.map_student import StudentConfig, build_student, student_fits
from pancdiff.networks import NoisyClassifier, build_unet
from pancdiff.progress import Reporter
from pancdiff.train import TrainConfig, classifier_probabilities, config_from_json, real_slots
from pancdiff.weights import HEAD_FILE, STUDENT_FILE, ModelBundle, load_bundle, load_weights_into, save_bundle

CLASSIFIER_FIELDS = ("classifier_channels", "classifier_attention_levels", "classifier_pooling", "classifier_zone")


@contextlib.contextmanager
def staged_folder(out: Path):
    """Write into a sibling staging folder; move every file into ``out`` only when all succeeded."""
    out.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".release-", dir=out.parent))
    try:
        yield staged
        for path in sorted(staged.rglob("*")):
            if path.is_file():
                target = out / path.relative_to(staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def warm_start(record: dict) -> str:
    """Card clause naming the weights a run started from (its steps come on top of theirs)."""
    return f"; warm-started from `{record['init_weights']}`" if record.get("init_weights") else ""


def classifier_from_bundle(card: dict) -> tuple[dict, TrainConfig, int, dict]:
    """A bundle's classifier as ``load_run`` gives a run's, with the run's case split: (record,
    config, steps, split). A bundle keeps its training run's record, so its choices can be redone
    on the shipped weights where the run folder is gone."""
    record = dict(card["training"]["classifier"])
    step = record.pop("steps_done")
    meta = {k: v for k, v in record.items() if k != "kind"}
    split = {k: card["split"][k] for k in ("train_cases", "val_cases", "seed")}
    return {"kind": "classifier", **meta}, config_from_json(None, **meta), step, split


def load_run(run: Path) -> tuple[dict, TrainConfig, int]:
    meta = json.loads((run / "train_config.json").read_text())
    kind = meta.pop("kind")
    cfg = config_from_json(None, **meta)
    step = json.loads((run / "checkpoint" / "state.json").read_text())["step"]
    return {"kind": kind, **meta}, cfg, step


def low_attenuation_tuned(data, sigma_px: float, max_fp: float = 0.02) -> dict:
    """The baseline under the model's own selection rule on the same half: best mean Dice over the
    lesion sets with healthy false-positive fraction <= ``max_fp``, over slice / calibrated
    normalization and the same thresholds (the best Dice overall when nothing meets the bound)."""
    h = data.healthy
    raw = {name: low_attenuation_raw(les.x, les.zone) for name, les in data.lesions.items()}
    raw["healthy"] = low_attenuation_raw(data.x[h], data.zone[h])
    scale = calibrate_map_scale(raw["healthy"], data.zone[h], sigma_px)
    rows = []
    for norm in ("slice", "calibrated"):
        cfg = DetectConfig(smooth_sigma_px=sigma_px, normalization=norm, map_scale=scale, min_anomaly=0.0)
        rows += [{"normalization": norm, **row} for row in threshold_rows(data, raw, cfg)]
    return rows[best_allowed(rows, max_fp)]


def best_per_setting(rows: list[dict]) -> list[dict]:
    """One row per setting (everything but the threshold): its best-Dice threshold. Keeps the card small."""
    best: dict = {}
    for r in rows:
        key = tuple(
            (k, v)
            for k, v in r.items()
            if k not in ("threshold", "fp_fraction") and not k.startswith(("dice", "auprc"))
        )
        if key not in best or r["dice"] > best[key]["dice"]:
            best[key] = r
    return list(best.values())


def slice_logits(bundle: ModelBundle, data) -> np.ndarray:
    """The classifier's t = 0 logit difference on every slice of an evaluation set."""
    return logit_difference(classifier_probabilities(bundle.classifier, data.x, 0, zone=data.zone))


def gate(tune_classifier: dict, chosen_dice: float, baseline: dict, min_paired_auroc: float) -> list[str]:
    """Reasons to refuse the release (empty: it passes)."""
    reasons = []
    paired = tune_classifier.get("auroc_paired_t0", float("nan"))
    if not paired >= min_paired_auroc:
        reasons.append(f"paired simulated-lesion AUROC at t = 0 is {paired:.3f} < {min_paired_auroc}")
    if not chosen_dice > baseline["dice"]:
        reasons.append(
            f"tuning-half Dice {chosen_dice:.3f} does not beat the low-attenuation baseline's {baseline['dice']:.3f} "
            "(same selection rule)"
        )
    return reasons


def step_counts(text: str) -> list[int]:
    """``--fewer-steps``: comma-separated step counts >= 1 (argparse turns the ValueError into a usage error)."""
    counts = [int(k) for k in text.split(",") if k.strip()]
    if any(k < 1 for k in counts):
        raise ValueError(text)
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--diffusion", type=Path, help="diffusion training run folder")
    src.add_argument("--unet-from", type=Path, help="take the UNet from this model bundle")
    csrc = p.add_mutually_exclusive_group(required=True)
    csrc.add_argument("--classifier", type=Path, help="classifier training run folder")
    csrc.add_argument(
        "--classifier-from", type=Path,
        help="take the classifier, its training record and case split from this model bundle",
    )  # fmt: skip
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--steps", type=int, default=10,
        help="fast K at the lowest of --noises (the others keep its step size), chosen from the benchmark trade-off",
    )  # fmt: skip
    p.add_argument(
        "--fewer-steps", type=step_counts, default=[],
        help="smaller K values (at the lowest of --noises) tried after the grid at its S and N: the fewest whose map "
        "follows the paper-exact run at r >= --min-fidelity on tuning lesion canvases replaces --steps",
    )  # fmt: skip
    p.add_argument("--min-fidelity", type=float, default=0.95, help="the r floor for --fewer-steps")
    p.add_argument("--grid-power", type=float, default=1.0, help="step grid t_k = N (k/K)^power (1 = even)")
    p.add_argument(
        "--guidance-step", default="paper", choices=GUIDANCE_STEPS,
        help="guidance weight per decode step (pancdiff.diffusion.ddim_decode)",
    )  # fmt: skip
    p.add_argument(
        "--saliency-margin", type=float, default=None,
        help="after K: let the map take the classifier's saliency, max(guided, w saliency), when that raises the "
        "tuning objective by at least this much (default: not tried)",
    )  # fmt: skip
    p.add_argument(
        "--map-student", type=Path, default=None,
        help="a map student folder (map_student.json, map_student.safetensors): after the saliency, taken when its "
        "map follows the paper-exact run at r >= --min-fidelity with a tuning objective within --student-margin",
    )  # fmt: skip
    p.add_argument("--student-margin", type=float, default=0.01, help="the objective a map student may cost")
    p.add_argument(
        "--lesion-head", type=Path, default=None,
        help="a lesion head folder (lesion_head.json, lesion_head.safetensors): after the map student, averaged "
        "into the heatmap when that raises the tuning objective by --head-margin without lowering real-tumor Dice",
    )  # fmt: skip
    p.add_argument("--head-margin", type=float, default=0.02, help="the objective a lesion head must add")
    p.add_argument("--scales", default="5,20,50")
    p.add_argument("--noises", default="100,200")
    p.add_argument("--guidances", default="noisy,x0")
    p.add_argument("--max-fp", type=float, default=0.02)
    p.add_argument(
        "--smooth-sigmas", default="1",
        help="heatmap smoothing choices (px), chosen on the tuning half after the grid (which runs at 1 px)",
    )  # fmt: skip
    p.add_argument(
        "--peak-sigmas", default=",".join(f"{s:g}" for s in PEAK_SIGMAS),
        help="peak smoothing choices (px), chosen on the tuning half after the operating point",
    )  # fmt: skip
    p.add_argument("--min-paired-auroc", type=float, default=0.85, help="release gate on the tuning half")
    p.add_argument("--model-id", default=None)
    p.add_argument("--looked-at", default="", help="what was looked at before this release, for the card")
    p.add_argument(
        "--known-limits", type=Path, default=None,
        help="markdown bullets measured after earlier releases (descriptive), kept in the card as its own section",
    )  # fmt: skip
    p.add_argument(
        "--trained-on", default="",
        help="where the networks were trained, for the card (default: this machine, as a CPU)",
    )  # fmt: skip
    p.add_argument(
        "--tune-only", action="store_true", help="stop after the tuning half and the gate (never touches the test half)"
    )
    p.add_argument(
        "--tuning-json",
        type=Path,
        help="also write the tuning half's record, every grid row included, to this file (a study refused "
        "under --tune-only keeps its whole grid)",
    )
    args = p.parse_args()
    if args.known_limits and not args.known_limits.is_file():
        raise SystemExit(f"{args.known_limits}: --known-limits file not found")
    if args.tuning_json and not args.tuning_json.parent.is_dir():
        raise SystemExit(f"{args.tuning_json.parent}: --tuning-json folder not found")
    reporter = Reporter("bar")

    if args.classifier:
        c_meta, c_cfg, c_step = load_run(args.classifier)
        split = json.loads((args.classifier / "split.json").read_text())
        c_weights = args.classifier / "classifier.safetensors"
    else:
        c_meta, c_cfg, c_step, split = classifier_from_bundle(load_bundle(args.classifier_from, "cpu").card)
        c_weights = args.classifier_from / "classifier.safetensors"  # load_bundle verified its SHA-256
    if args.diffusion:
        d_meta, d_cfg, d_step = load_run(args.diffusion)
        if split != json.loads((args.diffusion / "split.json").read_text()):
            raise SystemExit("the two runs used different case splits")
        unet = build_unet(d_cfg.network)
        load_weights_into(unet, args.diffusion / "diffusion.safetensors")
        d_record = {**d_meta, "steps_done": d_step}
        unet_network, preprocess, schedule = d_cfg.network, d_cfg.preprocess, d_cfg.schedule
    else:
        base = load_bundle(args.unet_from, "cpu")
        old_split = base.card.get("split", {})
        if (old_split.get("train_cases"), old_split.get("val_cases")) != (split["train_cases"], split["val_cases"]):
            raise SystemExit(f"{args.unet_from}: its UNet was trained on another case split")
        unet, d_record = base.unet, base.card.get("training", {}).get("diffusion", {})
        unet_network, preprocess, schedule = base.network, base.preprocess, base.schedule
    unet_fields = {f.name for f in dataclasses.fields(unet_network)} - set(CLASSIFIER_FIELDS)
    if any(getattr(unet_network, f) != getattr(c_cfg.network, f) for f in unet_fields if f != "image_size") or (
        preprocess != c_cfg.preprocess
    ):
        raise SystemExit("the UNet and the classifier used different network or preprocessing configs")
    network = dataclasses.replace(unet_network, **{f: getattr(c_cfg.network, f) for f in CLASSIFIER_FIELDS})
    classifier = NoisyClassifier(network)
    load_weights_into(classifier, c_weights)
    model_id = args.model_id or f"pancdiff-tc64-{time.strftime('%Y%m%d-%H%M')}"
    fast = DetectConfig(steps=args.steps, grid_power=args.grid_power, guidance_step=args.guidance_step)
    bundle = ModelBundle(unet.eval(), classifier.eval(), network, schedule, preprocess, fast, model_id)

    tune_cases, test_cases = tuning_test_halves(split["val_cases"])
    spacing = c_cfg.assumed_spacing_mm
    reporter.stage("tune", f"{len(tune_cases)} tuning cases")
    tune = build_eval_set(args.data, bundle, set(tune_cases), spacing, seed=11)
    scales = [0.0] + [float(s) for s in args.scales.split(",")]
    noises = [int(n) for n in args.noises.split(",")]
    guidances = tuple(g.strip() for g in args.guidances.split(","))
    chosen, tune_rows = choose_operating_point(
        bundle, tune, scales, noises, args.steps, args.max_fp, reporter, guidances=guidances
    )
    chosen, steps_record = choose_steps(
        bundle, chosen, tune, args.fewer_steps, min(noises), args.min_fidelity, reporter, fast
    )  # fmt: skip
    tune_maps = setting_maps(bundle, chosen, tune, reporter)
    saliency_record = None
    if args.saliency_margin is not None:
        chosen, tune_maps, saliency_record = choose_saliency(bundle, chosen, tune, tune_maps, args.saliency_margin,
                                                             args.max_fp)  # fmt: skip
    chosen, smooth_rows = choose_smoothing(
        tune_maps, tune, chosen, [float(s) for s in args.smooth_sigmas.split(",")], args.max_fp
    )
    student_record, chosen_rows = None, smooth_rows
    if args.map_student:
        chosen, tune_maps, chosen_rows, student_record = choose_student(
            bundle, chosen, tune, tune_maps, load_part_folder(args.map_student, STUDENT_FILE), args.min_fidelity,
            args.student_margin, args.max_fp, reporter,
        )  # fmt: skip
    head_record = None
    if args.lesion_head:
        head = load_part_folder(args.lesion_head, HEAD_FILE, LesionHeadConfig)
        chosen, tune_maps, chosen_rows, head_record = choose_head(
            bundle, chosen, tune, tune_maps, chosen_rows, head,
            [float(s) for s in args.smooth_sigmas.split(",")], args.head_margin, args.max_fp, reporter,
        )  # fmt: skip
    chosen_row = {
        "guidance": chosen.guidance, "map_kind": chosen.map_kind, "scale": chosen.scale,
        "noise_level": chosen.noise_level, "steps": chosen.steps,
        **next(
            r for r in chosen_rows
            if (r["smooth_sigma_px"], r["normalization"], r["min_anomaly"], r["threshold"])
            == (chosen.smooth_sigma_px, chosen.normalization, chosen.min_anomaly, chosen.threshold)
        ),
    }  # fmt: skip
    peak_sigma, peak_rows = choose_peak_sigma(
        tune_maps, tune, chosen, [float(s) for s in args.peak_sigmas.split(",")]
    )
    bundle.operating_point = chosen = dataclasses.replace(chosen, peak_sigma_px=peak_sigma)
    fidelity_record = fidelity(bundle, chosen, tune, reporter)
    smooth_record = {
        "rule": "after the grid (at 1 px), at its guidance, map kind, S and N: for each heatmap smoothing, "
        "normalization (map_scale re-measured at that smoothing), evidence floor and threshold chosen again by "
        "the grid's rule (ties: the first smoothing listed)",
        "chosen_smooth_sigma_px": chosen.smooth_sigma_px,
        "best_by_smoothing": best_by(smooth_rows, "smooth_sigma_px", args.max_fp),
    }
    tune_classifier = classifier_metrics(bundle, tune, chosen.noise_level)
    baseline = low_attenuation_tuned(tune, chosen.smooth_sigma_px, args.max_fp)
    refusals = gate(tune_classifier, chosen_row["dice"], baseline, args.min_paired_auroc)
    gate_record = {
        "min_paired_auroc_t0": args.min_paired_auroc,
        "tuning_paired_auroc_t0": tune_classifier.get("auroc_paired_t0"),
        "tuning_paired_auroc_tN": tune_classifier.get("auroc_paired_tN"),
        "tuning_dice": chosen_row["dice"],
        "tuning_dice_real": chosen_row.get("dice_real"),
        "tuning_dice_simulated": chosen_row.get("dice_simulated"),
        "tuning_low_attenuation": baseline,
        "passed": not refusals,
        "refusals": refusals,
    }
    peak_record = {
        "rule": "after the operating point: the peak smoothing with the best mean peak-in-tumor fraction over real "
        "outlines and simulated lesions of the tuning half (ties: the smaller); the heatmap does not depend on it",
        "chosen_peak_sigma_px": peak_sigma,
        "rows": peak_rows,
    }
    tuning_record = {"chosen": chosen_row, "steps": steps_record, "saliency": saliency_record,
                     "student": student_record, "smoothing": smooth_record, "peak": peak_record,
                     "fidelity": fidelity_record, "gate": gate_record}  # fmt: skip
    print(json.dumps(tuning_record, indent=2))
    tune_d = slice_logits(bundle, tune)
    bundle.calibration = fit_platt(tune_d, tune.y)
    tuning_record["calibration_tuning"] = calibration_record(bundle.calibration, tune_d, tune.y)
    print(json.dumps({"calibration_tuning": tuning_record["calibration_tuning"]}))
    if args.tuning_json:
        args.tuning_json.write_text(json.dumps({**tuning_record, "grid": tune_rows}, indent=1) + "\n", encoding="utf-8")
    if args.tune_only:
        return 0 if not refusals else 1
    if refusals:
        print("release refused: " + "; ".join(refusals), file=sys.stderr)
        Path(tempfile.gettempdir(), "pancdiff_refused_tuning.json").write_text(
            json.dumps({"gate": gate_record, "grid": tune_rows}, indent=1)
        )
        return 1

    reporter.stage(
        "test",
        f"{len(test_cases)} test cases at {chosen.guidance} S={chosen.scale} N={chosen.noise_level} "
        f"K={chosen.steps} {chosen.map_kind} map threshold={chosen.threshold}",
    )
    test = build_eval_set(args.data, bundle, set(test_cases), spacing, seed=22)
    results = evaluate(bundle, test, chosen, reporter)
    calibration = {
        "method": "Platt scaling of the t = 0 logit difference, fitted on the tuning half's real slices",
        "a": bundle.calibration.a,
        "b": bundle.calibration.b,
        "tuning": calibration_record(bundle.calibration, tune_d, tune.y),
        "test": calibration_record(bundle.calibration, slice_logits(bundle, test), test.y),
        "caveat": "pancreas-tc's tumor slices come from MSKCC and its healthy ones from NIH, at the mix of "
        "this data set: a probability for that mix, not for a screening population",
    }
    results["split_half"] = "test half of the validation cases (everything chosen on the other half)"

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
            "pixel_labels": "pancreas and tumor outlines (LABELS.md): pancreas outlines place the simulated lesions "
            "and give the scoring zone and the classifier's pooling zone; tumor outlines serve scores only; the "
            "classifier never saw a tumor outline"
            + ("" if c_meta.get("real_fraction") else " or a real tumor slice"),
        },
        "split": {**split, "tune_cases": tune_cases, "test_cases": test_cases},
        "training": {
            "diffusion": d_record,
            "classifier": {**c_meta, "steps_done": c_step},
            "hardware": args.trained_on or f"{platform.machine()} CPU, 2 cores, torch {torch.__version__}",
        },
        "operating_point_selection": {
            "on": "tuning half of the validation cases: real tumor outlines (MSD crops), lesions simulated in "
            "the pancreas of healthy crops, healthy crops for false positives",
            "rule": f"max mean Dice (real and simulated equally weighted) with healthy false-positive fraction "
            f"<= {args.max_fp}",
            "chosen": chosen_row,
            "grid": best_per_setting(tune_rows),
            "grid_note": "the best threshold of every other setting; all thresholds were searched",
            "smoothing": smooth_record,
            "peak": peak_record,
            "fidelity": fidelity_record,
            **({"steps": steps_record} if steps_record else {}),
            **({"saliency": saliency_record} if saliency_record else {}),
            **({"map_student": student_record} if student_record else {}),
            **({"lesion_head": head_record} if head_record else {}),
        },
        "release_gate": gate_record,
        "looked_at": args.looked_at,
        "known_limits": args.known_limits.read_text(encoding="utf-8").strip() if args.known_limits else "",
        "confidence": "p(tumor) at t = 0, Platt-calibrated on the tuning half's real slices (see "
        "confidence_calibration; ECE on the test half "
        f"{calibration['test']['ece_softmax']} as softmax, {calibration['test']['ece_calibrated']} calibrated)",
        "confidence_calibration": calibration,
        "input_domain": training_range(tune.x[tune.has_outline], tune.zone[tune.has_outline], preprocess.hu_window),
        "validation": results,
    }
    with staged_folder(args.out) as staged:
        out = save_bundle(bundle, staged, card)
        Path(staged, "MODEL_CARD.md").write_text(
            card_markdown(json.loads((out / "model.json").read_text(encoding="utf-8"))), encoding="utf-8"
        )
        training = Path(staged, "training")
        training.mkdir(exist_ok=True)
        c_settings = {k: v for k, v in c_meta.items() if k != "kind"}
        (training / "classifier.json").write_text(json.dumps(c_settings, indent=2) + "\n")
        if d_record:
            (training / "diffusion.json").write_text(
                json.dumps({k: v for k, v in d_record.items() if k not in ("kind", "steps_done")}, indent=2) + "\n"
            )
        grid_figure(
            bundle, test, (0.0, chosen.scale, 2 * chosen.scale),
            tuple(sorted({chosen.noise_level // 2, chosen.noise_level})), chosen,
            Path(staged, "validation_grid.png"),
        )  # fmt: skip
    print(results_markdown(results))
    return 0


def known_limits_section(text: str | None) -> list[str]:
    """Measurements made after earlier releases, kept apart from the figures this release produced."""
    if not text:
        return []
    return ["## Known limits (measured after earlier releases; descriptive, nothing was chosen on them)", "", text, ""]


FIDELITY_CANVASES = 20  # per lesion set: paper-exact maps cost N guided steps per canvas


def fidelity_canvases(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, valid, zone) of up to ``FIDELITY_CANVASES`` tuning canvases of each lesion set (seeded): where the
    fast setting is compared with the paper-exact run."""
    rng = np.random.default_rng(5)
    picks = [(les, rng.choice(len(les), min(FIDELITY_CANVASES, len(les)), replace=False))
             for _, les in sorted(data.lesions.items())]  # fmt: skip
    x = np.concatenate([les.x[i] for les, i in picks]).astype(np.float32)
    valid = np.concatenate([les.valid[i] for les, i in picks])
    zone = np.concatenate([les.zone[i] for les, i in picks])
    return x, valid, zone


def fidelity(bundle: ModelBundle, cfg: DetectConfig, data, reporter: Reporter) -> dict:
    """How closely the shipped fast setting follows the paper-exact run (K = N, Algorithm 1) at the chosen
    S and N, on ``fidelity_canvases``: reported in the card, because stronger guidance needs finer
    steps (``model_runs/20261126-fast-default-at-s10``)."""
    x, valid, zone = fidelity_canvases(data)
    result = run_benchmark(bundle, x, valid, cfg, reporter=reporter, zone=zone)
    keys = ("slices", "map_pearson", "map_dice", "evals_per_slice_fast", "evals_per_slice_reference", "speedup_evals",
            "map_pearson_guided", "map_dice_guided")  # fmt: skip
    return {k: result[k] for k in keys if k in result}


def choose_steps(
    bundle: ModelBundle,
    cfg: DetectConfig,
    data,
    fewer,
    lowest_noise: int,
    min_r: float,
    reporter: Reporter,
    fast: DetectConfig | None = None,
) -> tuple[DetectConfig, dict | None]:
    """The fewest steps at ``cfg``'s S and N whose map follows the paper-exact run at r >= ``min_r`` on
    ``fidelity_canvases`` (``model_runs/20261127-steps-after-scale``); ``cfg.steps`` when none does.

    Args:
        fewer: candidate K values at ``lowest_noise``, scaled to ``cfg``'s N as ``DetectConfig.at`` scales
            the grid's K; those not below ``cfg.steps`` are dropped.
        fast: the release's fast way (grid power, guidance step, solver), which a K below N takes even
            when the grid's own K was N (``cfg`` is then the paper-exact run); None: ``cfg``'s own.

    Returns:
        The setting at the chosen K and the card's record (every K measured), or ``cfg`` and None when
        there is nothing to try.
    """
    per_step = cfg.noise_level / lowest_noise
    candidates = sorted(k for k in {min(cfg.noise_level, math.ceil(k * per_step)) for k in fewer} if k < cfg.steps)
    if not candidates:
        return cfg, None
    fast_way = {f: getattr(fast or cfg, f) for f in ("grid_power", "guidance_step", "solver")}
    x, valid, zone = fidelity_canvases(data)
    result = run_benchmark(
        bundle, x, valid, dataclasses.replace(cfg, **fast_way), sweep=tuple(candidates), reporter=reporter, zone=zone
    )
    rows = [{"steps": cfg.steps, "evals_per_slice": result["evals_per_slice_fast"],
             "map_pearson": result["map_pearson"]}]  # fmt: skip
    rows += [{k: r[k] for k in ("steps", "evals_per_slice", "map_pearson")} for r in result["sweep"]]
    rows.sort(key=lambda r: r["steps"])
    steps = next((r["steps"] for r in rows if r["map_pearson"] >= min_r), cfg.steps)
    record = {
        "rule": f"after the grid, at its S and N: the fewest steps whose map follows the paper-exact run at "
        f"r >= {min_r} on {result['slices']} tuning lesion canvases (none: the grid's K); smoothing, normalization "
        "and threshold were then chosen at it",
        "tried_at_lowest_noise": sorted(fewer),
        "min_fidelity": min_r,
        "grid_steps": cfg.steps,
        "chosen_steps": steps,
        "rows": rows,
    }
    return (cfg if steps == cfg.steps else dataclasses.replace(cfg, steps=steps, **fast_way)), record


def choose_saliency(
    bundle: ModelBundle, cfg: DetectConfig, data, raw: dict, margin: float, max_fp: float
) -> tuple[DetectConfig, dict, dict]:
    """After K, before the smoothing: whether the map becomes max(guided, w saliency), the classifier's
    gradient on the input at t = 0 (``DetectConfig.saliency_weight``), with w the ratio of the two
    maps' healthy scales, so each counts in units of its own healthy tissue. Taken only when the tuning
    objective at ``cfg``'s smoothing rises by ``margin`` (``model_runs/20261128-saliency-baseline``).

    Returns:
        The setting, the raw maps it makes ({lesion set: ..., "healthy": ...}) and the card's record.
    """
    h = data.healthy
    saliency = saliency_maps(Detector(bundle, cfg), data)
    weight = calibrate_map_scale(raw["healthy"], data.zone[h], 1.0) / calibrate_map_scale(
        saliency["healthy"], data.zone[h], 1.0
    )
    combined = {name: np.maximum(raw[name], weight * saliency[name]) for name in raw}
    with_saliency = dataclasses.replace(cfg, saliency_weight=weight)
    rows = {}
    for name, maps, at in (("guided", raw, cfg), ("with saliency", combined, with_saliency)):
        _, candidates = choose_smoothing(maps, data, at, (cfg.smooth_sigma_px,), max_fp)
        rows[name] = candidates[best_allowed(candidates, max_fp)]
    taken = rows["with saliency"]["dice"] >= rows["guided"]["dice"] + margin
    record = {
        "rule": f"after K, at the grid's smoothing: max(guided map, w saliency), w = the ratio of their healthy "
        f"scales, taken when it raises the tuning objective by >= {margin}",
        "margin": margin,
        "weight": weight,
        "taken": taken,
        "rows": rows,
    }
    return (with_saliency, combined, record) if taken else (cfg, raw, record)


def load_part_folder(folder: Path, weights: str, kind: type = StudentConfig) -> tuple[StudentConfig, torch.nn.Module]:
    """A learned bundle part (a map student, or a lesion head with ``kind=LesionHeadConfig``): its config
    (``weights``' stem + ``.json``) and its weights (``weights``), the student's network either way."""
    config = folder / Path(weights).with_suffix(".json").name
    if not config.is_file():
        raise SystemExit(f"{folder}: no {config.name}")
    cfg = from_dict(kind, json.loads(config.read_text(encoding="utf-8")))
    net = build_student(cfg)
    load_weights_into(net, folder / weights)
    return cfg, net.eval()


def choose_student(
    bundle: ModelBundle, cfg: DetectConfig, data, raw: dict, student, min_r: float, margin: float, max_fp: float,
    reporter: Reporter,
) -> tuple[DetectConfig, dict, list[dict], dict]:
    """After the smoothing: whether a distilled map student replaces the K-step decode
    (``model_runs/20261129-map-student``). Taken when it was distilled at ``cfg``'s setting, costs fewer
    passes, follows the paper-exact run at r >= ``min_r`` on the fidelity canvases, and its tuning objective
    at ``cfg``'s smoothing (normalization and threshold chosen again) is at most ``margin`` below the
    K-step map's. Taken, the bundle carries it.

    Args:
        raw: the K-step raw maps of ``data`` under ``cfg`` ({lesion set: ..., "healthy": ...}).

    Returns:
        The setting, its raw maps, its rows at ``cfg``'s smoothing (``choose_smoothing``'s) and the card's record.
    """
    student_cfg, net = student
    with_student = dataclasses.replace(cfg, map_student=True)
    record = {
        "rule": f"after the smoothing, at it: a map student distilled at this setting, taken when it needs fewer "
        f"passes, follows the paper-exact run at r >= {min_r} on the fidelity canvases and its tuning objective "
        f"(normalization and threshold chosen again) is at most {margin} below the K-step map's",
        "margin": margin,
        "student": to_dict(student_cfg),
        "taken": False,
    }
    sigmas = (cfg.smooth_sigma_px,)
    if not student_fits(student_cfg, with_student):
        return cfg, raw, choose_smoothing(raw, data, cfg, sigmas, max_fp)[1], {**record, "why_not": "distilled at "
                                                                               "another setting"}  # fmt: skip
    bundle.student, bundle.student_config = net, student_cfg
    maps = {"decode": raw, "student": setting_maps(bundle, with_student, data, reporter)}
    chosen, rows, summary = {}, {}, {}
    for name, at in (("decode", cfg), ("student", with_student)):
        chosen[name], rows[name] = choose_smoothing(maps[name], data, at, sigmas, max_fp)
        summary[name] = {**rows[name][best_allowed(rows[name], max_fp)],
                         "passes": Detector(bundle, chosen[name]).passes_per_slice,
                         **fidelity(bundle, chosen[name], data, reporter)}  # fmt: skip
    s, d = summary["student"], summary["decode"]
    taken = bool(s["passes"] < d["passes"] and s["map_pearson"] >= min_r and s["dice"] >= d["dice"] - margin)
    record.update(rows=summary, taken=taken)
    pick = "student" if taken else "decode"
    if not taken:
        bundle.student, bundle.student_config = None, None
    return chosen[pick], maps[pick], rows[pick], record


def choose_head(
    bundle: ModelBundle, cfg: DetectConfig, data, raw: dict, rows: list[dict], head, sigmas, margin: float,
    max_fp: float, reporter: Reporter,
) -> tuple[DetectConfig, dict, list[dict], dict]:
    """After the map student: whether a lesion head is averaged into the heatmap
    (``model_runs/20261130-lesion-head``). The guided map and the head's probability are each divided by
    their healthy calibration (0.995 quantile, tuning healthy zone, 1 px) and averaged; smoothing,
    normalization and threshold are chosen again over ``sigmas``. Taken when the tuning objective rises by
    at least ``margin`` and real-tumor Dice does not fall. Taken, the bundle carries the head with its units
    and the gain that puts the guided map alone (where the head does not run) in the heatmap's units.

    Args:
        raw, rows: the student's (or K-step) raw maps of ``data`` under ``cfg`` and their rows.

    Returns:
        The setting, its raw maps, its rows and the card's record.
    """
    head_cfg, net = head
    record = {
        "rule": f"after the map student: the mean of the guided map and a lesion head's probability, each divided "
        f"by its healthy calibration, with smoothing, normalization and threshold chosen again; taken when the "
        f"tuning objective rises by at least {margin} and real-tumor Dice does not fall",
        "margin": margin,
        "head": to_dict(head_cfg),
        "taken": False,
    }
    if not head_fits(head_cfg, bundle.student_config, cfg):
        return cfg, raw, rows, {**record, "why_not": "trained at another setting, or the map student is not taken"}
    unit = dataclasses.replace(head_cfg, guided_unit=1.0, head_unit=1.0, fallback_gain=1.0)
    bundle.head, bundle.head_config = net, unit
    # at unit scales the heatmap is (guided + p) / 2, and ``raw`` is the guided map itself
    mean = setting_maps(bundle, cfg, data, reporter)
    parts = {name: (raw[name], 2 * mean[name] - raw[name]) for name in mean}
    h_zone = data.zone[data.healthy]
    g_unit = calibrate_map_scale(parts["healthy"][0], h_zone, 1.0)
    p_unit = calibrate_map_scale(parts["healthy"][1], h_zone, 1.0)
    combined = {name: ((g / g_unit + p / p_unit) / 2).astype(np.float32) for name, (g, p) in parts.items()}
    with_head, head_rows = choose_smoothing(combined, data, cfg, sigmas, max_fp)
    summary = {"guided": rows[best_allowed(rows, max_fp)], "with head": head_rows[best_allowed(head_rows, max_fp)]}
    g, w = summary["guided"], summary["with head"]
    taken = bool(w["dice"] >= g["dice"] + margin and w.get("dice_real", 0.0) >= g.get("dice_real", 0.0))
    # where the head does not run, the guided map alone: calibrated at the chosen smoothing as the heatmap is
    alone = calibrate_map_scale(parts["healthy"][0] / g_unit, h_zone, with_head.smooth_sigma_px)
    gain = with_head.map_scale / alone
    record.update(rows=summary, taken=taken, guided_unit=g_unit, head_unit=p_unit, fallback_gain=gain)
    if not taken:
        bundle.head, bundle.head_config = None, None
        return cfg, raw, rows, record
    bundle.head_config = dataclasses.replace(head_cfg, guided_unit=g_unit, head_unit=p_unit, fallback_gain=gain)
    record["head"] = to_dict(bundle.head_config)
    return with_head, combined, head_rows, record


def head_lines(record: dict | None) -> list[str]:
    """The card's line on the lesion head (none for bundles released without one)."""
    if not record:
        return []
    if "rows" not in record:
        return [f"- Lesion head: not taken ({record['why_not']}). Rule: {record['rule']}."]
    g, w = record["rows"]["guided"], record["rows"]["with head"]
    verdict = "taken" if record["taken"] else "not taken"
    return [f"- Lesion head: {verdict}. Rule: {record['rule']}. Tuning objective {g['dice']:.3f} (real "
            f"{g.get('dice_real', float('nan')):.3f}, simulated {g.get('dice_simulated', float('nan')):.3f}) "
            f"without it, {w['dice']:.3f} (real {w.get('dice_real', float('nan')):.3f}, simulated "
            f"{w.get('dice_simulated', float('nan')):.3f}) with it. Trained on simulated lesions of the training "
            f"half only (no real outline); one more network pass; at any other S or N, and outside the input "
            f"domain, the heatmap is the guided map alone."]  # fmt: skip


def head_flag(record: dict | None) -> str:
    """The reproduce command's ``--lesion-head`` (empty for bundles released without one)."""
    return f"--lesion-head HEAD_DIR --head-margin {record['margin']} " if record else ""


def student_lines(record: dict | None) -> list[str]:
    """The card's line on the map student (none for bundles from before it, or released without one)."""
    if not record:
        return []
    if "rows" not in record:
        return [f"- Map student: not taken ({record['why_not']}). Rule: {record['rule']}."]
    s, d = record["rows"]["student"], record["rows"]["decode"]
    c = record["student"]
    verdict = "taken" if record["taken"] else "not taken"
    return [f"- Map student: {verdict}. Rule: {record['rule']}. K = {c['steps']} decode + student "
            f"({s['passes']} passes): r {s['map_pearson']:.3f}, tuning objective {s['dice']:.3f}; "
            f"K = {c['replaces_steps']} decode ({d['passes']} passes): r {d['map_pearson']:.3f}, objective "
            f"{d['dice']:.3f}. Distilled on the "
            f"training half from K = {c['teacher_steps']} maps; at any other S or N the K-step decode runs."]


def student_flag(record: dict | None) -> str:
    """The reproduce command's ``--map-student`` (empty for bundles released without one)."""
    return f"--map-student STUDENT_DIR --student-margin {record['margin']} " if record else ""


def saliency_lines(record: dict | None) -> list[str]:
    """The card's line on the saliency step (none for bundles from before it, or released without it)."""
    if not record:
        return []
    g, w = record["rows"]["guided"], record["rows"]["with saliency"]
    verdict = f"taken, w = {record['weight']:.4g}" if record["taken"] else "not taken"
    return [f"- Saliency: {verdict}. Rule: {record['rule']}. Tuning objective guided {g['dice']:.3f} "
            f"(real {g.get('dice_real', float('nan')):.3f}), with saliency {w['dice']:.3f} "
            f"(real {w.get('dice_real', float('nan')):.3f})."]  # fmt: skip


def saliency_flag(record: dict | None) -> str:
    """The reproduce command's ``--saliency-margin`` (empty for bundles released without it)."""
    return f"--saliency-margin {record['margin']} " if record else ""


def steps_lines(record: dict | None) -> list[str]:
    """The card's line on how K was chosen (none for bundles from before it, or with nothing tried)."""
    if not record:
        return []
    cells = ", ".join(f"K {r['steps']} ({r['evals_per_slice']} passes) {r['map_pearson']:.3f}" for r in record["rows"])
    return [f"- Steps: K = {record['chosen_steps']}. Rule: {record['rule']}. r by K: {cells}."]


def fewer_steps_flag(record: dict | None) -> str:
    """The reproduce command's ``--fewer-steps`` (empty for bundles released without it)."""
    if not record:
        return ""
    tried = ",".join(str(k) for k in record["tried_at_lowest_noise"])
    return f"--fewer-steps {tried} --min-fidelity {record['min_fidelity']} "


def fidelity_lines(record: dict | None) -> list[str]:
    """The card's line on how faithful the fast setting is (none for bundles from before it)."""
    if not record:
        return []
    return [
        f"- Faithfulness: the map at this setting against the paper-exact run (K = N, Algorithm 1), on "
        f"{record['slices']} tuning lesion canvases: r {record['map_pearson']:.3f}, Dice of the thresholded maps "
        f"{record['map_dice']:.3f}; {record['evals_per_slice_fast']} network passes per slice against "
        f"{record['evals_per_slice_reference']} ({record['speedup_evals']:.1f}x fewer)."
        + (
            f" Its diffusion part alone (the heatmap without the lesion head): r {record['map_pearson_guided']:.3f}, "
            f"Dice {record['map_dice_guided']:.3f}."
            if "map_pearson_guided" in record
            else ""
        )
    ]


def smoothing_lines(record: dict | None) -> list[str]:
    """The card's line on how the heatmap smoothing was chosen (none for bundles from before it)."""
    if not record:
        return []
    cells = ", ".join(f"{r['smooth_sigma_px']:g} px {r['dice']:.3f}" for r in record["best_by_smoothing"])
    return [
        f"- Heatmap smoothing: {record['chosen_smooth_sigma_px']:g} px. Rule: {record['rule']}. "
        f"Tuning objective by smoothing: {cells}."
    ]


def smooth_sigmas_flag(record: dict | None) -> str:
    """The reproduce command's ``--smooth-sigmas`` (empty where only the default 1 px was tried)."""
    sigmas = [r["smooth_sigma_px"] for r in record["best_by_smoothing"]] if record else []
    return "" if sigmas in ([], [1.0]) else f"--smooth-sigmas {','.join(f'{s:g}' for s in sigmas)} "


def peak_lines(peak: dict | None) -> list[str]:
    """The card's line on how the peak smoothing was chosen (none for bundles from before it)."""
    if not peak:
        return []
    cells = ", ".join(
        f"{r['peak_sigma_px']:g} px {r['peak_in_tumor']:.3f}" for r in peak["rows"]
    )  # fmt: skip
    return [
        f"- Peak (a slice's finding position): the unclipped anomaly smoothed at {peak['chosen_peak_sigma_px']:g} px. "
        f"Rule: {peak['rule']}. Tuning mean peak-in-tumor by sigma: {cells}."
    ]


def bright_note(lesions: dict) -> str:
    """How many training lesions were brighter than their surroundings, when any were."""
    share = lesions.get("bright_fraction", 0.0)
    return f" ({share:.0%} of lesions brighter than their surroundings, the rest darker)" if share else ""


def real_slots_of(c: dict) -> int:
    """Real-slice slots per batch of the classifier record ``c`` (0 for runs before ``real_fraction``)."""
    paired, fraction = c.get("paired", False), c.get("real_fraction", 0.0)
    return real_slots(TrainConfig(batch_size=c["batch_size"], paired=paired, real_fraction=fraction))


def batch_parts(c: dict) -> str:
    n_real = real_slots_of(c)
    pairs = f"{(c['batch_size'] - n_real) // 2} counterfactual pairs"
    return pairs + (f" and {n_real} real slices, half tumor and half healthy" if n_real else "")


def real_slices_confound(c: dict) -> str:
    if not real_slots_of(c):
        return ""
    return (
        " Its real-slice slots are not paired: there every tumor slice is MSD and every healthy one NIH, so "
        "they teach the site as well as the tumor (measured in `model_runs/20261126-real-slices`; see the "
        "known limits)."
    )


def input_domain_lines(domain: dict | None) -> list[str]:
    """The card's input-domain range, which every detection checks its CT against."""
    if not domain:
        return []
    low, high = domain["fine_texture_hu"]
    return [
        f"- Input domain: fine texture {low:.1f}-{high:.1f} HU (median {domain['median_hu']:.1f}, "
        f"{domain['canvases']} tuning canvases; {domain['definition']}). A CT outside it gets a warning next to "
        "its confidence (`pancdiff.input_domain`)."
    ]


def card_markdown(card: dict) -> str:
    v, op, tr = card["validation"], card["operating_point"], card["training"]
    grid, g = card["operating_point_selection"]["grid"], card["release_gate"]
    c = tr["classifier"]
    lines = [
        f"# Model card: {card['model_id']}",
        "",
        f"**Intended use:** {card['intended_use']}",
        "",
        "## Data and split",
        f"- {card['data']['name']}: tumor slices from {card['data']['tumor']}; healthy slices from "
        f"{card['data']['healthy']}. Image-level labels only for training.",
        f"- Pixel labels: {card['data']['pixel_labels']}.",
        f"- Split by patient (seed {card['split']['seed']}): {len(card['split']['train_cases'])} training cases, "
        f"{len(card['split']['val_cases'])} validation cases, the latter halved into "
        f"{len(card['split']['tune_cases'])} tuning and {len(card['split']['test_cases'])} test cases. "
        "Case lists are in model.json.",
        "- Confounds: the cut is blind to the label (a field centred on the pancreas, the same for every "
        "crop); the classifier trains on counterfactual pairs (a healthy crop and the same crop with a "
        "simulated lesion inside its pancreas, same t and noise), so neither hospital nor crop size can "
        "explain a pair's label. Its slice AUROC on real labels is still site-confounded (probes below)."
        + real_slices_confound(c),
        "",
        "## Preprocessing",
        f"- `{json.dumps(card['preprocess'])}`",
        f"- Stored crops are assumed to have {card['data']['assumed_pixel_spacing_mm']} mm pixels.",
        "",
        "## Networks and training",
        f"- Network config: `{json.dumps(card['network'])}`",
        f"- Schedule: `{json.dumps(card['schedule'])}`",
        f"- Diffusion UNet: {tr['diffusion'].get('steps_done', '?')} steps, batch "
        f"{tr['diffusion'].get('batch_size', '?')}, lr {tr['diffusion'].get('lr', '?')}, "
        f"EMA {tr['diffusion'].get('ema_decay', '?')}{warm_start(tr['diffusion'])}.",
        f"- Classifier: {c['steps_done']} steps, batch {c['batch_size']} ({batch_parts(c)}), lr {c['lr']}, "
        f"weight decay {c['weight_decay']}, EMA {c['ema_decay']}; lesion contrast "
        f"{c['contrast_start_hu']} HU fading to {c['lesions']['contrast_hu']} HU over {c['contrast_ramp']} steps"
        f"{bright_note(c['lesions'])}; "
        f"t = 0 for {c['t_clean_steps']} steps, then t = t_max u^{c['t_power']} with t_max growing to "
        f"{c['max_timestep']} over {c['t_ramp']} steps, {c['clean_fraction']:.0%} of pairs kept at t = 0"
        f"{warm_start(c)}.",
        f"- Hardware: {tr['hardware']}.",
        "",
        "## Weights (safetensors, verified on load)",
        *[f"- `{name}`: SHA-256 `{digest}`" for name, digest in card["sha256"].items()],
        "",
        "## Operating point (chosen on the tuning half only)",
        f"- {op['guidance']} guidance, S = {op['scale']}, N = {op['noise_level']}, K = {op['steps']} "
        f"(grid power {op.get('grid_power', 1.0)}, {op.get('guidance_step', 'paper')} guidance step), "
        f"{op['map_kind']} map, {op['normalization']} normalization, threshold = {op['threshold']}, "
        f"smoothing {op['smooth_sigma_px']} px. Rule: {card['operating_point_selection']['rule']}.",
        *smoothing_lines(card["operating_point_selection"].get("smoothing")),
        *peak_lines(card["operating_point_selection"].get("peak")),
        *steps_lines(card["operating_point_selection"].get("steps")),
        *saliency_lines(card["operating_point_selection"].get("saliency")),
        *student_lines(card["operating_point_selection"].get("map_student")),
        *head_lines(card["operating_point_selection"].get("lesion_head")),
        *fidelity_lines(card["operating_point_selection"].get("fidelity")),
        f"- Grid searched: guidance {sorted({r['guidance'] for r in grid})}, "
        f"map {sorted({r['map_kind'] for r in grid})}, "
        f"S {sorted({r['scale'] for r in grid})}, N {sorted({r['noise_level'] for r in grid})}, "
        "slice / calibrated normalization, thresholds 0.10-0.90 (model.json has every row).",
        "",
        "## Release gate (tuning half)",
        f"- Paired simulated-lesion AUROC at t = 0: {g['tuning_paired_auroc_t0']:.3f} (floor "
        f"{g['min_paired_auroc_t0']}); at t = N: {g['tuning_paired_auroc_tN']:.3f}.",
        f"- Dice at the operating point {g['tuning_dice']:.3f} (real {g['tuning_dice_real']:.3f}, simulated "
        f"{g['tuning_dice_simulated']:.3f}) against the low-attenuation baseline's "
        f"{g['tuning_low_attenuation']['dice']:.3f} under the same rule (its own normalization and threshold, "
        f"{g['tuning_low_attenuation']['normalization']} {g['tuning_low_attenuation']['threshold']}). "
        f"Passed: {g['passed']}.",
        f"- Looked at before this release: {card.get('looked_at') or 'the tuning-half figures above only'}.",
        "- Confidence: " + card["confidence"] + ".",
        *input_domain_lines(card.get("input_domain")),
        "",
        "## Validation figures (test half; nothing was chosen on it)",
        "",
        results_markdown(v).split("\n", 2)[2],
        *known_limits_section(card.get("known_limits")),
        "## Reproduce",
        "```bash",
        "pancdiff train classifier --data ../shared/data/pancreas-tc --out runs/classifier "
        "--config PancDiffSlicer/Resources/Models/training/classifier.json",
        "python scripts/release_models.py --unet-from <previous bundle> --classifier runs/classifier "
        f"--data ../shared/data/pancreas-tc --out PancDiffSlicer/Resources/Models "
        f"--steps {min(grid, key=lambda r: r['noise_level'])['steps']} "
        f"{fewer_steps_flag(card['operating_point_selection'].get('steps'))}"
        f"{saliency_flag(card['operating_point_selection'].get('saliency'))}"
        f"{student_flag(card['operating_point_selection'].get('map_student'))}"
        f"{head_flag(card['operating_point_selection'].get('lesion_head'))}"
        f"{smooth_sigmas_flag(card['operating_point_selection'].get('smoothing'))}"
        f"--grid-power {op.get('grid_power', 1.0)} --guidance-step {op.get('guidance_step', 'paper')} "
        f"--scales {','.join(f'{s:g}' for s in sorted({r['scale'] for r in grid}) if s > 0)} "
        f"--noises {','.join(str(n) for n in sorted({r['noise_level'] for r in grid}))}"
        + (" --known-limits docs/model_known_limits.md" if card.get("known_limits") else ""),
        "```",
        "To redo the release's choices on these weights without the training runs, give "
        "`--unet-from` and `--classifier-from` this bundle's folder instead.",
        "CPU training with several threads is not bitwise reproducible; expect figures within noise.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
