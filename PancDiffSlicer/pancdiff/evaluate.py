"""Honest evaluation: what a user gets at the model's operating point, not a test-set-tuned figure.

On a slice folder (or MSD) the classifier is scored on real labels; localization is scored where
masks exist, and on *simulated* lesions inserted into the healthy slices otherwise (same site, same
crop; only the lesion differs). Confound probes show what crop size or mean intensity alone would
score. Baselines in the same table: S = 0 (plain reconstruction) and a low-attenuation threshold.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DetectConfig, to_dict
from .crop_samples import NO_AUGMENT, CropSampler
from .datasets.slice_folder import load_slice_image, read_manifest
from .detection import Detector, normalize_maps, normalize_per_slice, smooth_maps
from .errors import InputError
from .lesions import LesionConfig, insert_lesion
from .metrics import auroc, average_precision, dice
from .progress import QUIET, Reporter, StepProgress
from .train import classifier_probabilities
from .weights import ModelBundle

THRESHOLDS = tuple(np.round(np.arange(0.10, 0.95, 0.05), 2))


@dataclass
class EvalSet:
    """Canvases to score. ``masks`` only for slices in ``lesion_index`` (real masks or simulated).

    Attributes:
        x, valid: (B, S, S) canvases and supports, real slices (labels ``y``).
        lesion_x, lesion_valid, lesion_mask: (L, S, S) slices with a known tumor mask.
        lesion_clean: (L, S, S) the same slices without the lesion (simulated) or None (real masks).
        mask_source: "masks" (from the data) or "simulated lesions in healthy slices".
        crop_area, crop_mean: (B,) raw crop area (pixels) and mean intensity, for confound probes.
    """

    x: np.ndarray
    valid: np.ndarray
    y: np.ndarray
    cases: list[str]
    lesion_x: np.ndarray
    lesion_valid: np.ndarray
    lesion_mask: np.ndarray
    lesion_clean: np.ndarray | None
    mask_source: str
    crop_area: np.ndarray
    crop_mean: np.ndarray


def build_eval_set(
    data_dir: str | Path,
    bundle: ModelBundle,
    cases: set[str] | None = None,
    spacing_mm: float = 0.8,
    seed: int = 1234,
    lesions: LesionConfig = LesionConfig(),
    paper_filter: bool = False,
) -> EvalSet:
    """Slices of ``cases`` (all if None) as model canvases, with masks or simulated lesions.

    A slice folder's crops go through the size-matched sampler; an MSD Task07 folder's volumes go
    through the same preprocessing as inference, with its tumor labels as masks.
    """
    root = Path(data_dir)
    if (root / "dataset.json").is_file() and not (root / "manifest.csv").is_file():
        return msd_eval_set(root, bundle, cases, paper_filter)
    if not (root / "manifest.csv").is_file():
        raise InputError(f"{root}: neither a slice folder (manifest.csv) nor MSD Task07 (dataset.json)")
    records = [r for r in read_manifest(root) if cases is None or r.case in cases]
    if not records:
        raise InputError(f"{root}: no slices for the requested cases")
    images = [load_slice_image(r.path) for r in records]
    labels = [r.tumor for r in records]
    sampler = CropSampler(images, labels, bundle.preprocess, spacing_mm)
    rng = np.random.default_rng(seed)
    aug = dataclasses.replace(NO_AUGMENT, size_match=True)
    xs, valids, masks = [], [], []
    for i, rec in enumerate(records):
        mask = load_slice_image(rec.mask) > 0.5 if rec.mask is not None else None
        canvas, valid, mask_canvas = sampler.sample_masked(i, rng, aug, mask)
        xs.append(canvas)
        valids.append(valid)
        masks.append(mask_canvas)
    x, valid, y = np.stack(xs), np.stack(valids), np.asarray(labels)
    with_mask = [i for i, m in enumerate(masks) if m is not None and m.any()]
    if with_mask:
        lesion = (x[with_mask], valid[with_mask], np.stack([masks[i] for i in with_mask]), None, "masks")
    else:
        lx, lv, lm, lc = [], [], [], []
        for i in np.flatnonzero(y == 0):
            inserted = insert_lesion(x[i], valid[i], rng, bundle.preprocess.pixel_spacing_mm, lesions)
            if inserted is not None:
                lx.append(inserted[0])
                lv.append(valid[i])
                lm.append(inserted[1])
                lc.append(x[i])
        if not lx:
            raise InputError(f"{root}: no tumor masks and no healthy slices to insert lesions into")
        lesion = (np.stack(lx), np.stack(lv), np.stack(lm), np.stack(lc), "simulated lesions in healthy slices")
    return EvalSet(
        x=x,
        valid=valid,
        y=y,
        cases=[r.case for r in records],
        lesion_x=lesion[0],
        lesion_valid=lesion[1],
        lesion_mask=lesion[2],
        lesion_clean=lesion[3],
        mask_source=lesion[4],
        crop_area=np.array([im.size for im in images], dtype=float),
        crop_mean=np.array([im.mean() for im in images]),
    )


def msd_eval_set(root: Path, bundle: ModelBundle, cases: set[str] | None, paper_filter: bool = False) -> EvalSet:
    """MSD Task07 volumes as canvases (inference preprocessing), real tumor masks; cases default to
    the 10 % held out by ``split_msd_cases`` (the paper's 90/10 split)."""
    from .datasets.msd import list_msd_cases, load_msd_slices, split_msd_cases

    if cases is None:
        cases = set(split_msd_cases([c.case for c in list_msd_cases(root)])[1])
    items = load_msd_slices(root, bundle.preprocess, cases=sorted(cases), paper_filter=paper_filter)
    if not items:
        raise InputError(f"{root}: no pancreas slices in the requested cases")
    x = np.stack([i.canvas for i in items])
    valid = np.stack([i.valid for i in items])
    y = np.array([i.tumor for i in items])
    masks = np.stack([i.mask for i in items])
    tumor = np.flatnonzero([m.any() for m in masks])
    if len(tumor) == 0:
        raise InputError(f"{root}: no tumor voxels (label 2) in the requested cases")
    return EvalSet(
        x=x, valid=valid, y=y, cases=[i.case for i in items],
        lesion_x=x[tumor], lesion_valid=valid[tumor], lesion_mask=masks[tumor], lesion_clean=None,
        mask_source="masks (MSD label 2)",
        crop_area=valid.reshape(len(x), -1).sum(1).astype(float),
        crop_mean=np.array([c[v].mean() if v.any() else 0.0 for c, v in zip(x, valid)]),
    )  # fmt: skip


def classifier_metrics(bundle: ModelBundle, data: EvalSet) -> dict:
    """Slice-level accuracy and AUROC on real labels, and the same-site inserted-lesion AUROC."""
    probs = classifier_probabilities(bundle.classifier, data.x, 0)
    out = {
        "accuracy": float(np.mean((probs >= 0.5) == (data.y == 1))),
        "auroc": auroc(data.y, probs),
        "n_tumor": int((data.y == 1).sum()),
        "n_healthy": int((data.y == 0).sum()),
    }
    if data.lesion_clean is not None:
        both = np.concatenate([data.lesion_clean, data.lesion_x])
        labels = np.r_[np.zeros(len(data.lesion_x)), np.ones(len(data.lesion_x))]
        out["auroc_inserted"] = auroc(labels, classifier_probabilities(bundle.classifier, both, 0))
    return out


def confound_probes(data: EvalSet) -> dict:
    """AUROC that crop size or mean intensity alone reach on the raw crops (the confounds' strength)."""
    return {
        "auroc_crop_area_raw": auroc(data.y, -data.crop_area),
        "auroc_mean_intensity_raw": auroc(data.y, data.crop_mean),
        "auroc_visible_area_size_matched": auroc(data.y, -data.valid.reshape(len(data.y), -1).sum(1)),
    }


def segmentation_metrics(normalized: np.ndarray, masks: np.ndarray, valid: np.ndarray, threshold: float) -> dict:
    """Mean Dice at ``threshold``, pixel AUPRC inside the support, and the best-threshold Dice (upper bound)."""
    dices = {t: float(np.mean([dice(m >= t, g) for m, g in zip(normalized, masks)])) for t in THRESHOLDS}
    at = float(np.mean([dice(m >= threshold, g) for m, g in zip(normalized, masks)]))
    best = max(dices, key=dices.get)
    return {
        "dice": at,
        "auprc": average_precision(masks[valid], normalized[valid]),
        "dice_best_threshold": dices[best],
        "best_threshold": float(best),
        "n_slices": int(len(masks)),
    }


def fp_fraction(normalized: np.ndarray, valid: np.ndarray, threshold: float) -> float:
    """Mean over healthy slices of the fraction of support pixels flagged."""
    flagged = (normalized >= threshold) & valid
    return float(np.mean(flagged.reshape(len(valid), -1).sum(1) / np.maximum(valid.reshape(len(valid), -1).sum(1), 1)))


def low_attenuation_map(x: np.ndarray, valid: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """Baseline: how much darker than the slice's median tissue each pixel is, per-slice normalized."""
    maps = []
    for xi, vi in zip(x, valid):
        ref = np.median(xi[vi]) if vi.any() else 0.0
        maps.append(np.where(vi, np.maximum(ref - xi, 0.0), 0.0))
    return np.where(valid, normalize_per_slice(np.stack(maps), sigma_px), 0.0)


def run_anomaly(
    bundle: ModelBundle,
    cfg: DetectConfig,
    x: np.ndarray,
    valid: np.ndarray,
    reporter: Reporter = QUIET,
    label: str = "",
) -> np.ndarray:
    """Raw anomaly maps |x - x_hat| of canvases under one (S, N, K), with a progress bar."""
    with StepProgress(reporter, f"detect {label}".strip()) as progress:
        return Detector(bundle, cfg).detect(x, valid, progress).anomaly


def calibrate_map_scale(healthy_anomaly: np.ndarray, valid: np.ndarray, sigma_px: float, quantile: float = 0.995):
    """The smoothed anomaly value that only (1 - quantile) of healthy support pixels exceed."""
    return float(np.quantile(smooth_maps(healthy_anomaly, sigma_px)[valid], quantile))


def raw_maps(
    bundle: ModelBundle, cfg: DetectConfig, data: EvalSet, reporter: Reporter = QUIET
) -> tuple[np.ndarray, np.ndarray]:
    """Raw anomaly maps of the lesion slices and of the healthy slices for one (S, N, K)."""
    healthy = data.y == 0
    tag = f"S={cfg.scale:g} N={cfg.noise_level}"
    lesion_raw = run_anomaly(bundle, cfg, data.lesion_x, data.lesion_valid, reporter, f"{tag} lesions")
    healthy_raw = run_anomaly(bundle, cfg, data.x[healthy], data.valid[healthy], reporter, f"{tag} healthy")
    return lesion_raw, healthy_raw


def score_setting(bundle: ModelBundle, cfg: DetectConfig, data: EvalSet, reporter: Reporter = QUIET) -> dict:
    """Localization on lesion slices and false positives on healthy slices for one setting."""
    healthy = data.y == 0
    lesion_raw, healthy_raw = raw_maps(bundle, cfg, data, reporter)
    lesion_maps = normalize_maps(lesion_raw, data.lesion_valid, cfg)
    healthy_maps = normalize_maps(healthy_raw, data.valid[healthy], cfg)
    return {
        "segmentation": segmentation_metrics(lesion_maps, data.lesion_mask, data.lesion_valid, cfg.threshold),
        "healthy": {
            "fp_fraction": fp_fraction(healthy_maps, data.valid[healthy], cfg.threshold),
            "n_slices": int(healthy.sum()),
        },
    }


def choose_operating_point(
    bundle: ModelBundle, data: EvalSet, scales, noises, steps: int, max_fp: float = 0.02, reporter: Reporter = QUIET
) -> tuple[DetectConfig, list[dict]]:
    """Best mean Dice over (S, N, normalization, threshold) with healthy FP fraction <= ``max_fp``.

    The calibrated normalization's ``map_scale`` is measured on the same (tuning) healthy slices.
    Falls back to the best Dice when no setting meets the FP bound.
    """
    healthy = data.y == 0
    rows, configs = [], {}
    for scale in scales:
        for noise in noises:
            base = dataclasses.replace(
                bundle.operating_point, scale=float(scale), noise_level=int(noise), steps=min(steps, int(noise))
            )
            lesion_raw, healthy_raw = raw_maps(bundle, base, data, reporter)
            map_scale = calibrate_map_scale(healthy_raw, data.valid[healthy], base.smooth_sigma_px)
            for norm in ("slice", "calibrated"):
                cfg = dataclasses.replace(base, normalization=norm, map_scale=map_scale)
                lesion_maps = normalize_maps(lesion_raw, data.lesion_valid, cfg)
                healthy_maps = normalize_maps(healthy_raw, data.valid[healthy], cfg)
                auprc = average_precision(data.lesion_mask[data.lesion_valid], lesion_maps[data.lesion_valid])
                for t in THRESHOLDS:
                    key = (float(scale), int(noise), norm, float(t))
                    configs[key] = dataclasses.replace(cfg, threshold=float(t))
                    rows.append(
                        {
                            "scale": key[0], "noise_level": key[1], "steps": cfg.steps, "normalization": norm,
                            "map_scale": map_scale, "threshold": key[3],
                            "dice": float(np.mean([dice(m >= t, g) for m, g in zip(lesion_maps, data.lesion_mask)])),
                            "fp_fraction": fp_fraction(healthy_maps, data.valid[healthy], t),
                            "auprc": auprc,
                        }
                    )  # fmt: skip
    allowed = [r for r in rows if r["fp_fraction"] <= max_fp] or rows
    best = max(allowed, key=lambda r: r["dice"])
    return configs[(best["scale"], best["noise_level"], best["normalization"], best["threshold"])], rows


def evaluate(
    bundle: ModelBundle, data: EvalSet, cfg: DetectConfig, reporter: Reporter = QUIET, grid: tuple = ((), (), ())
) -> dict:
    """All figures of ``results.json`` at one operating point, plus an optional (S, N, threshold) grid."""
    results: dict = {
        "operating_point": {
            k: v
            for k, v in to_dict(cfg).items()
            if k in ("scale", "noise_level", "steps", "threshold", "normalization", "map_scale")
        },
        "model_id": bundle.model_id,
        "slices": int(len(data.y)),
        "cases": int(len(set(data.cases))),
        "classifier": classifier_metrics(bundle, data),
        "confounds": confound_probes(data),
        "mask_source": data.mask_source,
    }
    scored = score_setting(bundle, cfg, data, reporter)
    results["segmentation"] = scored["segmentation"]
    results["healthy"] = scored["healthy"]
    no_guidance = score_setting(bundle, dataclasses.replace(cfg, scale=0.0), data, reporter)
    healthy = data.y == 0
    la_lesion = low_attenuation_map(data.lesion_x, data.lesion_valid, cfg.smooth_sigma_px)
    la_healthy = low_attenuation_map(data.x[healthy], data.valid[healthy], cfg.smooth_sigma_px)
    results["baselines"] = {
        "no_guidance": {**no_guidance["segmentation"], "fp_fraction": no_guidance["healthy"]["fp_fraction"]},
        "low_attenuation": {
            **segmentation_metrics(la_lesion, data.lesion_mask, data.lesion_valid, cfg.threshold),
            "fp_fraction": fp_fraction(la_healthy, data.valid[healthy], cfg.threshold),
        },
    }
    scales, noises, thresholds = grid
    if scales and noises:
        rows = []
        for scale in scales:
            for noise in noises:
                setting = dataclasses.replace(
                    cfg, scale=float(scale), noise_level=int(noise), steps=min(cfg.steps, int(noise))
                )
                lesion_raw, healthy_raw = raw_maps(bundle, setting, data, reporter)
                lesion_maps = normalize_maps(lesion_raw, data.lesion_valid, setting)
                healthy_maps = normalize_maps(healthy_raw, data.valid[healthy], setting)
                for t in thresholds or (cfg.threshold,):
                    rows.append(
                        {
                            "scale": float(scale),
                            "noise_level": int(noise),
                            "threshold": float(t),
                            **{
                                k: v
                                for k, v in segmentation_metrics(
                                    lesion_maps, data.lesion_mask, data.lesion_valid, t
                                ).items()
                                if k in ("dice", "auprc")
                            },
                            "fp_fraction": fp_fraction(healthy_maps, data.valid[healthy], t),
                        }
                    )
        results["grid"] = rows
    return results


def write_results(results: dict, out_dir: Path) -> None:
    """``results.json`` and a markdown table ``results.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(results_markdown(results))


def results_markdown(r: dict) -> str:
    op = r["operating_point"]
    c, seg, h = r["classifier"], r["segmentation"], r["healthy"]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"  # noqa: E731
    lines = [
        f"# PancDiff evaluation ({r['model_id']})",
        "",
        f"{r['slices']} slices from {r['cases']} cases. Operating point: S = {op['scale']}, "
        f"N = {op['noise_level']}, K = {op['steps']}, threshold = {op['threshold']} of the "
        f"{op.get('normalization', 'slice')}-normalized map.",
        f"Localization scored on: {r['mask_source']}.",
        "",
        "| classifier | value |",
        "|---|---|",
        f"| slice accuracy | {fmt(c['accuracy'])} |",
        f"| slice AUROC | {fmt(c['auroc'])} |",
        f"| AUROC, same-site inserted lesions vs. same crops without | {fmt(c.get('auroc_inserted'))} |",
        f"| confound probe: AUROC of raw crop area alone | {fmt(r['confounds']['auroc_crop_area_raw'])} |",
        f"| confound probe: AUROC of raw mean intensity alone | {fmt(r['confounds']['auroc_mean_intensity_raw'])} |",
        f"| confound probe: AUROC of visible area after size matching | "
        f"{fmt(r['confounds']['auroc_visible_area_size_matched'])} |",
        "",
        "| method | Dice @ threshold | pixel AUPRC | Dice at best threshold (upper bound) | healthy FP fraction |",
        "|---|---|---|---|---|",
        f"| PancDiff (guided, S = {op['scale']}) | {fmt(seg['dice'])} | {fmt(seg['auprc'])} | "
        f"{fmt(seg['dice_best_threshold'])} | {fmt(h['fp_fraction'])} |",
    ]
    for name, label in (
        ("no_guidance", "S = 0 (plain reconstruction)"),
        ("low_attenuation", "low-attenuation threshold"),
    ):
        b = r["baselines"][name]
        lines.append(
            f"| {label} | {fmt(b['dice'])} | {fmt(b['auprc'])} | {fmt(b['dice_best_threshold'])} | "
            f"{fmt(b['fp_fraction'])} |"
        )
    if r.get("grid"):
        lines += ["", "| S | N | threshold | Dice | AUPRC | healthy FP |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {g['scale']} | {g['noise_level']} | {g['threshold']} | {fmt(g['dice'])} | {fmt(g['auprc'])} | "
            f"{fmt(g['fp_fraction'])} |"
            for g in r["grid"]
        ]
    return "\n".join(lines) + "\n"


def grid_figure(bundle: ModelBundle, data: EvalSet, scales, noises, steps: int, path: Path, n_slices: int = 3) -> None:
    """Like the paper's Figures 2-3: maps of a few lesion slices over a grid of S x N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pick = np.linspace(0, len(data.lesion_x) - 1, min(n_slices, len(data.lesion_x))).astype(int)
    x, v, m = data.lesion_x[pick], data.lesion_valid[pick], data.lesion_mask[pick]
    settings = [(s, n) for n in noises for s in scales]
    fig, axes = plt.subplots(
        len(pick), len(settings) + 2, figsize=(1.6 * (len(settings) + 2), 1.7 * len(pick)), squeeze=False, dpi=110
    )
    for j, (s, n) in enumerate(settings):
        cfg = dataclasses.replace(bundle.operating_point, scale=float(s), noise_level=int(n), steps=min(steps, int(n)))
        maps = Detector(bundle, cfg).detect(x, v).normalized
        for i in range(len(pick)):
            axes[i, j + 2].imshow(maps[i], cmap="inferno", vmin=0, vmax=1)
            axes[i, j + 2].contour(m[i], levels=[0.5], colors="cyan", linewidths=0.6)
            if i == 0:
                axes[i, j + 2].set_title(f"S={s:g} N={n}", fontsize=7)
    for i in range(len(pick)):
        axes[i, 0].imshow(x[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 1].imshow(m[i], cmap="gray")
    axes[0, 0].set_title("input", fontsize=7)
    axes[0, 1].set_title("lesion mask", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
