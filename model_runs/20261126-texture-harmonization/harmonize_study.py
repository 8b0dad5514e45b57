"""Does giving a smooth CT back its fine texture undo the smoothness shortcut? (rule.md) Tuning half.

    python model_runs/20261126-texture-harmonization/harmonize_study.py [MODEL_DIR]   # repository root

A smooth scanner is simulated by blurring every tuning canvas inside its support; the harmonized
condition adds seeded white noise (``harmonizing_noise_hu``, ``add_texture`` below: what the engine
would have run) per patient, as detection would per CT. Confidence (calibrated p(tumor) of outlined healthy canvases,
paired AUROC at t = 0) and detection at the shipped operating point, unchanged, in each condition.
Then the bundled sample CT, as is and harmonized (one CT, descriptive).
"""

import dataclasses
import functools
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.crop_samples import smooth_inside
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.evaluate import build_eval_set, setting_maps, threshold_rows
from pancdiff.input_domain import canvas_fine_texture_hu, fine_texture_hu
from pancdiff.progress import QUIET
from pancdiff.train import paired_auroc
from pancdiff.weights import load_bundle
from scipy import ndimage

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "pancreas-tc"
BLURS = (1.0, 1.5, 2.0)


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SAMPLE = _module("confidence_study", HERE.parent / "20261126-site-free-confidence" / "confidence_study.py")


@functools.lru_cache(maxsize=1)
def white_noise_gain() -> float:
    """The fine texture of unit white noise under this module's measure (about 0.87): what added
    noise of standard deviation s contributes is s times this."""
    n = np.random.default_rng(0).standard_normal((512, 512))
    return float(np.std((n - ndimage.gaussian_filter(n, 1.0))[8:-8, 8:-8]))


def harmonizing_noise_hu(value: float | None, card_domain: dict | None) -> float:
    """The white noise (standard deviation, HU) that brings a CT smoother than the bundle's range to
    the range's median fine texture (independent noise adds in quadrature); 0 for a CT inside or above
    the range, or where nothing could be measured."""
    bounds, median = (card_domain or {}).get("fine_texture_hu"), (card_domain or {}).get("median_hu")
    if value is None or not bounds or median is None or value >= bounds[0]:
        return 0.0
    return float(np.sqrt(max(median**2 - value**2, 0.0)) / white_noise_gain())


def add_texture(
    canvases: np.ndarray, valid: np.ndarray, sigma_hu: float, hu_window: tuple[float, float], seed: int = 0
) -> np.ndarray:
    """``canvases`` with seeded Gaussian white noise of ``sigma_hu`` inside ``valid``, clipped to [0, 1]
    (the same input gives the same output); returned unchanged (a copy) for ``sigma_hu`` 0."""
    x = np.array(canvases, dtype=np.float32)
    if sigma_hu <= 0:
        return x
    noise = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    noisy = np.clip(x + noise * np.float32(sigma_hu / float(hu_window[1] - hu_window[0])), 0.0, 1.0)
    return np.where(valid, noisy, x).astype(np.float32)


def blurred(x: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([np.where(v, smooth_inside(c, v, sigma), c) for c, v in zip(x, valid)]).astype(np.float32)


def harmonized(x, valid, zone, cases, domain, window, measure_on=None) -> tuple[np.ndarray, list[float]]:
    """Per patient, the engine's noise for that patient's canvases (measured on ``measure_on``, default
    ``x``: the lesion-free twins for paired canvases, so both get the same noise field)."""
    out, levels = np.array(x, dtype=np.float32), []
    ref = x if measure_on is None else measure_on
    for case in sorted(set(cases)):
        sel = np.array([c == case for c in cases])
        sigma = harmonizing_noise_hu(fine_texture_hu(ref[sel], zone[sel], window), domain)
        out[sel] = add_texture(x[sel], valid[sel], sigma, window)
        levels.append(sigma)
    return out, levels


def condition(data, transform):
    """The eval set with every canvas (and each simulated lesion's clean twin) transformed."""
    h_cases = data.cases
    lesions = {}
    for name, les in data.lesions.items():
        x = transform(les.x, les.valid, les.zone, les.cases, les.clean)
        clean = None if les.clean is None else transform(les.clean, les.valid, les.zone, les.cases, les.clean)
        lesions[name] = dataclasses.replace(les, x=x, clean=clean)
    return dataclasses.replace(data, x=transform(data.x, data.valid, data.zone, h_cases, None), lesions=lesions)


def measure(bundle, op, det, data) -> dict:
    healthy = data.healthy & data.has_outline
    with torch.no_grad():
        xb = torch.from_numpy(data.x[healthy])[:, None]
        p = det.tumor_probability(xb, torch.from_numpy(data.zone[healthy])[:, None]).numpy()
    sim = data.lesions["simulated"]
    raw = setting_maps(bundle, op, data, QUIET)
    row = next(r for r in threshold_rows(data, raw, op) if abs(r["threshold"] - op.threshold) < 1e-9)
    window = bundle.preprocess.hu_window
    return {
        "healthy_fine_texture_hu": fine_texture_hu(data.x[healthy], data.zone[healthy], window),
        "healthy_mean_p_tumor": float(p.mean()),
        "paired_auroc_t0": paired_auroc(bundle.classifier, sim.clean, sim.x, 0, zone=sim.zone),
        "objective": row["dice"],
        "dice_real": row["dice_real"],
        "dice_simulated": row["dice_simulated"],
        "auprc_real": row["auprc_real"],
        "auprc_simulated": row["auprc_simulated"],
        "healthy_fp": row["fp_fraction"],
    }


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(sys.argv[1] if len(sys.argv) > 1 else None, "cpu")
    op, window, domain = bundle.operating_point, bundle.preprocess.hu_window, bundle.card["input_domain"]
    det = Detector(bundle, op)
    tune_cases = set(tuning_test_halves(bundle.card["split"]["val_cases"])[0])
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    healthy = data.healthy & data.has_outline

    sample = {lesion: SAMPLE.sample_ct_canvases(bundle, lesion) for lesion in (False, True)}
    sample_texture = fine_texture_hu(sample[False][0], sample[False][2], window)
    textures = {b: fine_texture_hu(blurred(data.x[healthy], data.valid[healthy], b), data.zone[healthy], window)
                for b in BLURS}  # fmt: skip
    blur = min(BLURS, key=lambda b: abs(textures[b] - sample_texture))
    print(f"bundle {bundle.model_id}; range {domain['fine_texture_hu']} HU, median {domain['median_hu']} HU; "
          f"white-noise gain {white_noise_gain():.3f}")  # fmt: skip
    print(f"sample CT fine texture {sample_texture:.1f} HU; healthy tuning canvases blurred: "
          + ", ".join(f"σ {b:g} px {t:.1f} HU" for b, t in textures.items()) + f" -> blur σ {blur:g} px")

    levels: list[float] = []

    def blur_t(x, valid, zone, cases, clean):
        return blurred(x, valid, blur)

    def harm_t(x, valid, zone, cases, clean):
        xb = blurred(x, valid, blur)
        ref = None if clean is None else blurred(clean, valid, blur)
        out, lv = harmonized(xb, valid, zone, cases, domain, window, ref)
        levels.extend(lv)
        return out

    record = {"blur_px": blur, "sample_ct_fine_texture_hu": sample_texture}
    for name, t in (("original", None), ("blurred", blur_t), ("blurred + harmonized", harm_t)):
        record[name] = measure(bundle, op, det, data if t is None else condition(data, t))
    record["noise_hu_per_patient"] = {"min": float(np.min(levels)), "max": float(np.max(levels))}
    print(f"harmonizing noise per patient: {np.min(levels):.1f}-{np.max(levels):.1f} HU (standard deviation)")
    print("| condition | healthy fine texture (HU) | healthy mean p(tumor) | paired AUROC t=0 | objective "
          "| real Dice | simulated Dice | real AUPRC | simulated AUPRC | healthy FP |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("original", "blurred", "blurred + harmonized"):
        r = record[name]
        print(f"| {name} | {r['healthy_fine_texture_hu']:.1f} | {r['healthy_mean_p_tumor']:.3f} "
              f"| {r['paired_auroc_t0']:.3f} | {r['objective']:.3f} | {r['dice_real']:.3f} "
              f"| {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} | {r['auprc_simulated']:.3f} "
              f"| {r['healthy_fp']:.3f} |")  # fmt: skip
    o, b, hm = record["original"], record["blurred"], record["blurred + harmonized"]
    rise = b["healthy_mean_p_tumor"] - o["healthy_mean_p_tumor"]
    closed = (b["healthy_mean_p_tumor"] - hm["healthy_mean_p_tumor"]) / rise if rise > 0 else float("nan")
    confidence_ok = bool(closed >= 0.5) and hm["paired_auroc_t0"] >= b["paired_auroc_t0"] - 0.02
    map_ok = bool(hm["objective"] >= b["objective"] and hm["healthy_fp"] <= max(b["healthy_fp"], 0.02))
    record["verdict"] = {"rise_closed": closed, "confidence": confidence_ok, "map": confidence_ok and map_ok}
    print(f"\nblur-induced rise in healthy p(tumor) {rise:+.3f}; harmonizing closes {closed:.2f} of it "
          f"(>= 0.5 needed); paired AUROC {hm['paired_auroc_t0']:.3f} against {b['paired_auroc_t0']:.3f} - 0.02")
    print(f"verdict: confidence {'PASS' if confidence_ok else 'fail'}; map "
          f"{'PASS' if confidence_ok and map_ok else 'fail'} (objective {hm['objective']:.3f} against "
          f"{b['objective']:.3f}, healthy FP {hm['healthy_fp']:.3f} against max({b['healthy_fp']:.3f}, 0.02))")

    print("\nsample CT (one CT from a third hospital; descriptive): mean calibrated p(tumor) over its canvases")
    sigma = harmonizing_noise_hu(sample_texture, domain)
    for lesion, (x, valid, zone) in sample.items():
        xs = {"as is": x, "harmonized": add_texture(x, valid, sigma, window)}
        cells = []
        for name, xx in xs.items():
            with torch.no_grad():
                p = det.tumor_probability(torch.from_numpy(xx)[:, None], torch.from_numpy(zone)[:, None]).numpy()
            tex = np.nanmedian(canvas_fine_texture_hu(xx, zone, window))
            cells.append(f"{name} {p.mean():.3f} (texture {tex:.1f} HU)")
            record.setdefault("sample_ct", {})[f"{'with' if lesion else 'without'} lesion, {name}"] = float(p.mean())
        kind = "with" if lesion else "without"
        print(f"- {kind} a simulated lesion: " + "; ".join(cells) + f"; noise {sigma:.1f} HU")
    (HERE / "harmonize_study.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
