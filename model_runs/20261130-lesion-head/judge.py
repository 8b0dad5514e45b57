"""Judge the lesion heads by rule.md on the tuning half (test half untouched).

    python model_runs/20261130-lesion-head/judge.py HEAD_DIR [NAME]   # → stdout, NAME.json (default judge)

HEAD_DIR: head.py's output folder (head_D.safetensors, head_P.safetensors); the study keeps D's weights as
``lesion_head/lesion_head.safetensors`` (the same bytes).

Candidates: the shipped map (control: student B's corrected K = 2 map, max with w · saliency), head D,
head P. Each is scored by the release's rule (``choose_smoothing`` over 1 and 2 px, healthy FP <= 0.02).
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.evaluate import best_allowed, build_eval_set, choose_smoothing, score_maps
from pancdiff.map_student import student_map
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gen_more import DATA  # noqa: E402
from head import head_map, load_head, training_unit  # noqa: E402

SIGMAS, MAX_FP, BAR_OVER_CONTROL = (1.0, 2.0), 0.02, 0.02


def inputs(bundle, x, valid, zone) -> dict:
    """The K = 2 guided map and saliency at the shipped setting, as the student and the heads read them."""
    cfg = dataclasses.replace(bundle.operating_point, steps=2, map_student=False)
    grid = Detector(bundle, cfg).map_grid(x, valid, [cfg.scale], with_probability=True, zone=zone)
    a = {"map": grid["anomaly"][(cfg.guidance, cfg.map_kind, float(cfg.scale))], "saliency": grid["saliency"]}
    return {**a, "valid": grid["valid"], "x": x, "zone": zone}


def candidate_maps(bundle, heads: dict, x, valid, zone) -> dict:
    op = bundle.operating_point
    a = inputs(bundle, x, valid, zone)
    guided = student_map(bundle.student, bundle.student_config, a)
    shipped = np.maximum(guided, np.where(a["valid"], op.saliency_weight * a["saliency"], 0.0)).astype(np.float32)
    unit = training_unit(bundle)
    heads_maps = {f"head {k}": head_map(net, k, op, a, unit=unit) for k, net in heads.items()}
    return {"shipped (control)": shipped, **heads_maps}


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    op = bundle.operating_point
    folder = Path(sys.argv[1])
    heads = {k: load_head(folder, k, op) for k in ("D", "P") if (folder / f"head_{k}.safetensors").exists()}
    tune = build_eval_set(DATA, bundle, set(tuning_test_halves(bundle.card["split"]["val_cases"])[0]), 0.8, seed=11)
    sets = {name: (les.x, les.valid, les.zone) for name, les in tune.lesions.items()}
    h = tune.healthy
    sets["healthy"] = (tune.x[h], tune.valid[h], tune.zone[h])
    by_set = {name: candidate_maps(bundle, heads, *arr) for name, arr in sets.items()}
    print(f"bundle {bundle.model_id}; tuning half; release rule over smoothing {SIGMAS}, healthy FP <= {MAX_FP}")
    print(
        "| candidate | objective | real Dice | simulated Dice | real AUPRC | simulated AUPRC | healthy FP "
        "| peak in tumor real / sim | threshold | px |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    record = {}
    for name in by_set["healthy"]:
        raw = {s: by_set[s][name] for s in by_set}
        chosen, rows = choose_smoothing(raw, tune, op, SIGMAS, MAX_FP)
        row = rows[best_allowed(rows, MAX_FP)]
        scored = score_maps(raw, tune, chosen)
        keys = ("dice", "dice_real", "dice_simulated", "auprc_real", "auprc_simulated", "fp_fraction", "threshold")
        record[name] = {
            **{k: row[k] for k in keys},
            "smooth_sigma_px": row["smooth_sigma_px"],
            "normalization": row["normalization"],
            "peak_real": scored["real"]["peak_in_tumor"],
            "peak_simulated": scored["simulated"]["peak_in_tumor"],
        }
        r = record[name]
        print(
            f"| {name} | {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} "
            f"| {r['auprc_simulated']:.3f} | {r['fp_fraction']:.3f} | {r['peak_real']:.3f} / {r['peak_simulated']:.3f} "
            f"| {r['threshold']:.2f} | {r['smooth_sigma_px']:g} |",
            flush=True,
        )
    control = record["shipped (control)"]
    taken = (
        "head D"
        if "head D" in record
        and record["head D"]["dice"] >= control["dice"] + BAR_OVER_CONTROL
        and record["head D"]["dice_real"] >= control["dice_real"]
        else None
    )
    print(f"\ntaken by the rule: {taken}")
    if "head D" in record and "head P" in record:
        gap = record["head D"]["dice"] - record["head P"]["dice"]
        print(f"D minus P (the evidence's share): {gap:+.3f}{' (within 0.01)' if abs(gap) <= 0.01 else ''}")
    name = sys.argv[2] if len(sys.argv) > 2 else "judge"
    record_json = json.dumps({"record": record, "taken": taken}, indent=1) + "\n"
    (HERE / f"{name}.json").write_text(record_json, encoding="utf-8")


if __name__ == "__main__":
    main()
