"""Which slice score could users read as confidence without reading the hospital? (rule.md)

    python model_runs/20261126-site-free-confidence/confidence_study.py [MODEL_DIR]

Tuning half of the shipped bundle's split, outlined crops, the bundle's operating point. For each
candidate score: ``site`` (MSD crops with the tumor painted over vs NIH healthy crops), ``real`` (tumor
crop vs its own painted copy), ``sim`` (simulated lesion vs its clean crop), ``slice`` (MSD tumor vs NIH
healthy). Then the sample CT's overall confidence per score (Platt-fitted on the tuning crops), as is
and with the demo's simulated lesion: reported, not used to choose.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.calibration import fit_platt
from pancdiff.ctio import read_ct
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.demo import SAMPLE_CT, SAMPLE_MASK, deepest_point, insert_ellipsoid_lesion, sample_data_dir, with_array
from pancdiff.detection import Detector, smooth_maps
from pancdiff.evaluate import build_eval_set
from pancdiff.markers import ImageGrid
from pancdiff.metrics import auroc
from pancdiff.pancreas import pancreas_mask
from pancdiff.preprocess import extract_slices, pancreas_zones
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "pancreas-tc"
_spec = importlib.util.spec_from_file_location("site_probe", HERE.parent / "20261126-real-slices" / "site_probe.py")
SITE_PROBE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SITE_PROBE)
CANDIDATES = ("input", "drop", "drop_plain", "map_peak")


def scores(detector: Detector, x: np.ndarray, valid: np.ndarray, zone: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate score of canvases ``x`` (B, S, S) at the detector's operating point."""
    cfg = detector.cfg
    grid = detector.map_grid(x, valid, [0.0, cfg.scale], kinds=("guidance",), zone=zone)
    plain, guided = grid["reconstruction"][(cfg.guidance, 0.0)], grid["reconstruction"][(cfg.guidance, cfg.scale)]
    clf = detector.bundle.classifier

    def d(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xb = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
            zb = torch.from_numpy(np.ascontiguousarray(zone, dtype=bool))[:, None]
            logits = clf(xb, torch.zeros(len(xb), dtype=torch.long), zb).float().numpy()
        return logits[:, 1] - logits[:, 0]

    d_x, d_plain, d_guided = d(x), d(plain), d(guided)
    raw = smooth_maps(grid["anomaly"][(cfg.guidance, "guidance", float(cfg.scale))], cfg.smooth_sigma_px)
    peak = np.array([m[z].max() if z.any() else 0.0 for m, z in zip(raw, zone)])
    return {"input": d_x, "drop": d_x - d_guided, "drop_plain": d_plain - d_guided, "map_peak": peak}


def sample_ct_canvases(bundle, with_lesion: bool):
    root = sample_data_dir()
    ct = read_ct(root / SAMPLE_CT)
    mask = pancreas_mask(ct, root / SAMPLE_MASK)
    if with_lesion:
        grid = ImageGrid.from_image(ct.image)
        hu, _ = insert_ellipsoid_lesion(ct.array, mask, grid, deepest_point(mask, grid))
        ct = with_array(ct, hu)
    batch = extract_slices(ct, mask, bundle.preprocess)
    return np.asarray(batch.canvases), np.asarray(batch.valid), pancreas_zones(mask, batch, bundle.preprocess)


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(sys.argv[1] if len(sys.argv) > 1 else None, "cpu")
    detector = Detector(bundle, bundle.operating_point)
    tune_cases = set(tuning_test_halves(bundle.card["split"]["val_cases"])[0])
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    real, sim = data.lesions["real"], data.lesions["simulated"]
    painted = [SITE_PROBE.paint_over(x, m, z, i) for i, (x, m, z) in enumerate(zip(real.x, real.mask, real.zone))]
    keep = [i for i, p in enumerate(painted) if p is not None]
    healthy = data.healthy & data.has_outline

    groups = {
        "healthy": (data.x[healthy], data.valid[healthy], data.zone[healthy]),
        "tumor": (real.x[keep], real.valid[keep], real.zone[keep]),
        "painted": (np.stack([painted[i] for i in keep]), real.valid[keep], real.zone[keep]),
        "sim": (sim.x, sim.valid, sim.zone),
        "sim_clean": (sim.clean, sim.valid, sim.zone),
    }
    s = {name: scores(detector, *g) for name, g in groups.items()}

    def a(neg: str, pos: str, c: str) -> float:
        return auroc(np.r_[np.zeros(len(s[neg][c])), np.ones(len(s[pos][c]))], np.r_[s[neg][c], s[pos][c]])

    rows = {}
    for c in CANDIDATES:
        rows[c] = {
            "site": a("healthy", "painted", c),
            "real": a("painted", "tumor", c),
            "sim": a("sim_clean", "sim", c),
            "slice": a("healthy", "tumor", c),
        }
    base = abs(rows["input"]["site"] - 0.5)
    for c, r in rows.items():
        r["qualifies"] = c != "input" and (
            abs(r["site"] - 0.5) <= base / 2 and r["real"] >= rows["input"]["real"] and r["sim"] >= 0.85
        )
    ok = [c for c in CANDIDATES if rows[c]["qualifies"]]
    best = max((rows[c]["real"] for c in ok), default=None)
    winner = (
        min((c for c in ok if rows[c]["real"] >= best - 0.005), key=lambda c: abs(rows[c]["site"] - 0.5))
        if ok
        else "input"
    )

    samples = {flag: sample_ct_canvases(bundle, flag) for flag in (False, True)}
    y = np.r_[np.zeros(len(s["healthy"]["input"])), np.ones(len(s["tumor"]["input"]))]
    for c in CANDIDATES:
        platt = fit_platt(np.r_[s["healthy"][c], s["tumor"][c]], y)
        for flag, (x, valid, zone) in samples.items():
            p = platt.probability(scores(detector, x, valid, zone)[c])
            rows[c]["sample_ct_lesion" if flag else "sample_ct"] = round(float(p.max()), 3)

    print(f"tuning half: {len(keep)} tumor crops (and painted copies), {int(healthy.sum())} healthy, "
          f"{len(sim)} simulated pairs; bundle {bundle.model_id}")  # fmt: skip
    print("| score | site (0.5 = blind) | real: tumor vs painted | sim: lesion vs clean | slice | "
          "sample CT overall, as is / with lesion | qualifies |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for c, r in rows.items():
        yes = "yes" if r["qualifies"] else "no"
        print(f"| {c} | {r['site']:.3f} | {r['real']:.3f} | {r['sim']:.3f} | {r['slice']:.3f} "
              f"| {r['sample_ct']:.2f} / {r['sample_ct_lesion']:.2f} | {yes} |")  # fmt: skip
    print(f"\nchosen by the rule: {winner}")
    (HERE / "confidence_study.json").write_text(json.dumps({"rows": rows, "chosen": winner}, indent=1) + "\n",
                                                encoding="utf-8")  # fmt: skip


if __name__ == "__main__":
    main()
