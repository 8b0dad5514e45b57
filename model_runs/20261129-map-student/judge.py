"""Judge the map students by rule.md on the tuning half (test half untouched).

    python model_runs/20261129-map-student/judge.py STUDENT_DIR [NAME]   # → stdout, NAME.json (default judge)

Candidates: the shipped K = 4 (control), plain K = 2, the K = 10 teacher, students A and B; each map is
max(guided part, w · saliency) as the shipped setting makes it. Quality: the release's rule at the
shipped smoothing. Faithfulness: r against the paper-exact run on the release's 40 fidelity canvases,
both normalized by the candidate's own chosen operating point (as the release's ``fidelity`` does).
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.benchmark import compare_maps
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector, evaluations_per_slice, normalize_maps
from pancdiff.evaluate import best_allowed, build_eval_set, choose_smoothing
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "scripts"))
from generate import DATA  # noqa: E402
from pancdiff.map_student import student_map  # noqa: E402
from release_models import fidelity_canvases  # noqa: E402
from student import config, load_student  # noqa: E402

PASSES = {
    "A": 2,
    "B": evaluations_per_slice(dataclasses.replace(load_bundle(None, "cpu").operating_point, steps=2)) + 1,
}


def parts(bundle, steps: int, x, valid, zone) -> dict:
    """Guided raw map, saliency, support at K = ``steps`` (K = N with the paper's weight: ``paper_exact``)."""
    op = bundle.operating_point
    # map_student=False: under a bundle that carries a student, K = 4 would otherwise decode at the student's K
    cfg = op.paper_exact() if steps == op.noise_level else dataclasses.replace(op, steps=steps, map_student=False)
    grid = Detector(bundle, cfg).map_grid(x, valid, [cfg.scale], with_probability=True, zone=zone)
    return {
        "map": grid["anomaly"][(cfg.guidance, cfg.map_kind, float(cfg.scale))],
        "saliency": grid["saliency"],
        "valid": grid["valid"],
        "x": x,
        "zone": zone,
    }


def composite(guided: np.ndarray, p: dict, weight: float) -> np.ndarray:
    return np.maximum(guided, np.where(p["valid"], weight * p["saliency"], 0.0)).astype(np.float32)


def candidate_maps(bundle, students: dict, x, valid, zone) -> dict:
    """{candidate: (guided raw, composite raw)} for one set of canvases."""
    op = bundle.operating_point
    k2, k4, k10 = (parts(bundle, k, x, valid, zone) for k in (2, 4, 10))
    out = {"shipped K 4": k4["map"], "plain K 2": k2["map"], "teacher K 10": k10["map"]}
    for kind, net in students.items():
        out[f"student {kind}"] = student_map(net, config(kind, op), k2)
    return {name: (g, composite(g, k2, op.saliency_weight)) for name, g in out.items()}


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    op = bundle.operating_point
    students = {
        k: load_student(Path(sys.argv[1]), k, op)
        for k in ("A", "B")
        if (Path(sys.argv[1]) / f"student_{k}.safetensors").exists()
    }
    tune = build_eval_set(DATA, bundle, set(tuning_test_halves(bundle.card["split"]["val_cases"])[0]), 0.8, seed=11)
    sets = {name: (les.x, les.valid, les.zone) for name, les in tune.lesions.items()}
    h = tune.healthy
    sets["healthy"] = (tune.x[h], tune.valid[h], tune.zone[h])
    by_set = {name: candidate_maps(bundle, students, *arr) for name, arr in sets.items()}
    fx, fvalid, fzone = fidelity_canvases(tune)
    fid = candidate_maps(bundle, students, fx, fvalid, fzone)
    ref = parts(bundle, op.noise_level, fx, fvalid, fzone)
    ref_guided, ref_comp = ref["map"], composite(ref["map"], ref, op.saliency_weight)
    passes = {"shipped K 4": 16, "plain K 2": 8, "teacher K 10": 40, **{f"student {k}": PASSES[k] for k in students}}
    record = {}
    print(
        f"bundle {bundle.model_id}; tuning half; fidelity on {len(fx)} canvases against paper-exact "
        f"({evaluations_per_slice(op.paper_exact())} passes)"
    )
    print(
        "| candidate | passes | objective | real Dice | simulated Dice | healthy FP | threshold | r (map) "
        "| Dice of thresholded maps | r (guided part) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in fid:
        chosen, rows = choose_smoothing({s: by_set[s][name][1] for s in by_set}, tune, op, (op.smooth_sigma_px,), 0.02)
        row = rows[best_allowed(rows, 0.02)]
        agree = compare_maps(
            normalize_maps(ref_comp, ref["valid"], chosen),
            normalize_maps(fid[name][1], ref["valid"], chosen),
            ref["valid"],
            chosen.threshold,
        )
        plain = dataclasses.replace(chosen, saliency_weight=0.0)
        guided = compare_maps(
            normalize_maps(ref_guided, ref["valid"], plain),
            normalize_maps(fid[name][0], ref["valid"], plain),
            ref["valid"],
            chosen.threshold,
        )
        record[name] = {
            "passes": passes[name],
            **{k: row[k] for k in ("dice", "dice_real", "dice_simulated", "fp_fraction", "threshold")},
            **agree,
            "map_pearson_guided": guided["map_pearson"],
        }
        r = record[name]
        print(
            f"| {name} | {r['passes']} | {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} "
            f"| {r['fp_fraction']:.3f} | {r['threshold']:.2f} | {r['map_pearson']:.3f} | {r['map_dice']:.3f} "
            f"| {r['map_pearson_guided']:.3f} |",
            flush=True,
        )
    taken = [
        n for n in record if n.startswith("student") and record[n]["map_pearson"] >= 0.95 and record[n]["dice"] >= 0.456
    ]
    taken = min(taken, key=lambda n: record[n]["passes"]) if taken else None
    print(f"\ntaken by the rule: {taken}")
    name = sys.argv[2] if len(sys.argv) > 2 else "judge"
    record_json = json.dumps({"record": record, "taken": taken}, indent=1) + "\n"
    (HERE / f"{name}.json").write_text(record_json, encoding="utf-8")


if __name__ == "__main__":
    main()
