"""Honest evaluation: what a user gets at the model's operating point, not a test-set-tuned figure.

Localization is scored on two kinds of truth, side by side: **real tumor outlines** (slice-folder
``mask`` / ``labels`` columns, or MSD label 2) and **simulated lesions** inserted into healthy slices
inside their pancreas (same crop, only the lesion differs). Every figure stands beside what a method
with no model gets: marking the whole pancreas zone (its Dice; its AUPRC is the tumor prevalence),
a low-attenuation threshold, and the chance that a map's peak lands in the tumor. Maps are scored
inside the *pancreas zone* (the organ mask dilated by ``zone_margin_mm``, what detection on a CT
restricts candidates to) where an organ mask exists, and over the whole support otherwise.
Confound probes show what crop size or mean intensity alone would score on the real labels.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .canvas import pancreas_zone, zone_margin_px
from .config import MAP_KINDS, DetectConfig, to_dict
from .crop_samples import NO_AUGMENT, CropSampler
from .datasets.slice_folder import load_label_map, load_slice_image, read_manifest
from .detection import Detector, normalize_per_slice, smooth_maps
from .diffusion import alpha_bar_schedule
from .errors import InputError
from .lesions import LesionConfig, insert_lesion, lesion_hosts
from .metrics import auroc, average_precision, case_interval, dice
from .postprocess import evidence_maps, peak_evidence
from .progress import QUIET, Reporter, StepProgress
from .train import classifier_probabilities, paired_auroc
from .weights import ModelBundle

THRESHOLDS = tuple(np.round(np.arange(0.10, 0.95, 0.05), 2))
MIN_ANOMALIES = (0.0, 0.02, 0.05)


@dataclass
class Lesions:
    """Slices with a known tumor outline, all (L, S, S).

    Attributes:
        kind: "real" (outlines from the data) or "simulated" (inserted into healthy slices).
        zone: where maps are scored (pancreas + margin where known, else the support).
        clean: the same slices without the lesion (simulated only), else None.
        cases: the patient of each slice (for intervals that resample patients), or None.
    """

    kind: str
    x: np.ndarray
    valid: np.ndarray
    mask: np.ndarray
    zone: np.ndarray
    clean: np.ndarray | None = None
    cases: list[str] | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class EvalSet:
    """Canvases to score.

    Attributes:
        x, valid, zone: (B, S, S) canvases, supports and scoring zones of every slice (labels ``y``).
        lesions: {"real": Lesions, "simulated": Lesions}, either may be missing.
        source: what the truth is, in words.
        crop_area, crop_mean: (B,) raw crop area (pixels) and mean intensity, for confound probes.
        outlined: (B,) bool, the slice has a pancreas outline, so its zone is the pancreas + margin as
            at inference; without one the zone falls back to the whole crop support (bowel, vessels
            and all), a different false-positive measurement. None: every slice has one.
    """

    x: np.ndarray
    valid: np.ndarray
    zone: np.ndarray
    y: np.ndarray
    cases: list[str]
    lesions: dict = field(default_factory=dict)
    source: str = ""
    crop_area: np.ndarray | None = None
    crop_mean: np.ndarray | None = None
    outlined: np.ndarray | None = None

    @property
    def healthy(self) -> np.ndarray:
        return self.y == 0

    @property
    def has_outline(self) -> np.ndarray:
        return np.ones(len(self.y), bool) if self.outlined is None else np.asarray(self.outlined, bool)


def build_eval_set(
    data_dir: str | Path,
    bundle: ModelBundle,
    cases: set[str] | None = None,
    spacing_mm: float = 0.8,
    seed: int = 1234,
    lesions: LesionConfig = LesionConfig(),
    paper_filter: bool = False,
    zone_margin_mm: float | None = None,
) -> EvalSet:
    """Slices of ``cases`` (all if None) as model canvases, with real outlines and simulated lesions.

    A slice folder's crops go through the label-blind sampler (the same cut as training); an MSD
    Task07 folder's volumes go through the same preprocessing as inference, with label 2 as outline.
    The pancreas zone is the organ dilated by ``zone_margin_mm`` (default: the model's
    ``PreprocessConfig.margin_mm``, the zone a zone-pooled classifier was trained on).
    """
    root = Path(data_dir)
    if not root.exists():
        raise InputError(f"{root}: data folder does not exist")
    if (root / "dataset.json").is_file() and not (root / "manifest.csv").is_file():
        return msd_eval_set(root, bundle, cases, paper_filter, seed, lesions, zone_margin_mm)
    if not (root / "manifest.csv").is_file():
        raise InputError(f"{root}: neither a slice folder (manifest.csv) nor MSD Task07 (dataset.json)")
    records = [r for r in read_manifest(root) if cases is None or r.case in cases]
    if not records:
        raise InputError(f"{root}: no slices for the requested cases")
    images = [load_slice_image(r.path, bundle.preprocess.hu_window) for r in records]
    organs = [load_label_map(r.labels) > 0 if r.labels is not None else None for r in records]
    sampler = CropSampler(images, [r.tumor for r in records], bundle.preprocess, spacing_mm, organs)
    rng = np.random.default_rng(seed)
    margin = zone_margin_px(bundle.preprocess, zone_margin_mm)
    xs, valids, zones, organ_c, outlines = [], [], [], [], []
    for i, rec in enumerate(records):
        masks = {"tumor": load_slice_image(rec.mask) > 0.5} if rec.mask is not None else {}
        c = sampler.canvas(i, rng, NO_AUGMENT, masks)
        xs.append(c.x)
        valids.append(c.valid)
        organ_c.append(c.organ)
        zones.append(pancreas_zone(c.organ, c.valid, margin))
        outlines.append(c.masks.get("tumor"))
    x, valid, zone, y = np.stack(xs), np.stack(valids), np.stack(zones), np.array([r.tumor for r in records])
    found = {}
    real = [i for i, m in enumerate(outlines) if m is not None and m.any()]
    if real:
        drawn = np.stack([outlines[i] for i in real])
        found["real"] = Lesions("real", x[real], valid[real], drawn, zone[real], cases=[records[i].case for i in real])
    simulated = _simulate(x, valid, zone, organ_c, y, rng, lesions, bundle, [r.case for r in records])
    if simulated is not None:
        found["simulated"] = simulated
    if not found:
        raise InputError(f"{root}: no tumor outlines and no healthy slices to insert lesions into")
    return EvalSet(
        x=x, valid=valid, zone=zone, y=y, cases=[r.case for r in records], lesions=found,
        source="slice folder: real outlines from its mask column; lesions simulated inside the pancreas",
        crop_area=np.array([im.size for im in images], dtype=float),
        crop_mean=np.array([im.mean() for im in images]),
        outlined=np.array([o is not None and o.any() for o in organ_c]),
    )  # fmt: skip


def _simulate(x, valid, zone, organs, y, rng, cfg: LesionConfig, bundle: ModelBundle, cases=None) -> Lesions | None:
    """Healthy slices with a lesion inside their pancreas, in the slices ``lesion_hosts`` allows (scored
    in unlabelled boxes it measured the wrong task: tuning half, the 20 unlabelled crops scored
    paired AUROC 0.54 against 0.84 on the 89 labelled ones)."""
    p = bundle.preprocess
    keep, lx, lm = [], [], []
    for i in lesion_hosts(np.flatnonzero(y == 0), organs):
        inserted = insert_lesion(x[i], valid[i], rng, p.pixel_spacing_mm, cfg, p.hu_window, organs[i])
        if inserted is not None:
            keep.append(i)
            lx.append(inserted[0])
            lm.append(inserted[1])
    if not keep:
        return None
    kept_cases = None if cases is None else [cases[i] for i in keep]
    return Lesions("simulated", np.stack(lx), valid[keep], np.stack(lm), zone[keep], x[keep], kept_cases)


def msd_eval_set(
    root: Path,
    bundle: ModelBundle,
    cases: set[str] | None,
    paper_filter: bool = False,
    seed: int = 1234,
    lesions: LesionConfig = LesionConfig(),
    zone_margin_mm: float | None = None,
) -> EvalSet:
    """MSD Task07 volumes as canvases (inference preprocessing), real tumor masks (label 2); cases
    default to the 10 % held out by ``split_msd_cases`` (the paper's 90/10 split)."""
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
    margin = zone_margin_px(bundle.preprocess, zone_margin_mm)
    organs = [i.organ if i.organ is not None and i.organ.any() else None for i in items]
    zone = np.stack([pancreas_zone(o, i.valid, margin) for o, i in zip(organs, items)])
    tumor = np.flatnonzero([m.any() for m in masks])
    if len(tumor) == 0:
        raise InputError(f"{root}: no tumor voxels (label 2) in the requested cases")
    case_of = [i.case for i in items]
    real = Lesions("real", x[tumor], valid[tumor], masks[tumor], zone[tumor], cases=[case_of[i] for i in tumor])
    found = {"real": real}
    simulated = _simulate(x, valid, zone, organs, y, np.random.default_rng(seed), lesions, bundle, case_of)
    if simulated is not None:
        found["simulated"] = simulated
    return EvalSet(
        x=x, valid=valid, zone=zone, y=y, cases=[i.case for i in items], lesions=found,
        source="MSD Task07 label 2 (real outlines); lesions simulated in its tumor-free slices",
        crop_area=valid.reshape(len(x), -1).sum(1).astype(float),
        crop_mean=np.array([c[v].mean() if v.any() else 0.0 for c, v in zip(x, valid)]),
        outlined=np.array([o is not None for o in organs]),
    )  # fmt: skip


# -- classifier -------------------------------------------------------------------------------------
def classifier_metrics(bundle: ModelBundle, data: EvalSet, noise_level: int = 0) -> dict:
    """Slice AUROC on real labels (site-confounded on pancreas-tc) and the paired AUROC on simulated
    lesions (same crop with and without) at t = 0 and at the detection's noise level."""
    probs = classifier_probabilities(bundle.classifier, data.x, 0, zone=data.zone)
    out = {
        "accuracy": float(np.mean((probs >= 0.5) == (data.y == 1))),
        "auroc": auroc(data.y, probs),
        "n_tumor": int((data.y == 1).sum()),
        "n_healthy": int((data.y == 0).sum()),
    }
    sim = data.lesions.get("simulated")
    if sim is not None:
        out["auroc_paired_t0"] = paired_auroc(bundle.classifier, sim.clean, sim.x, 0, zone=sim.zone)
        if noise_level > 0:
            alpha_bar = alpha_bar_schedule(bundle.schedule).float()
            out["auroc_paired_tN"] = paired_auroc(bundle.classifier, sim.clean, sim.x, noise_level, alpha_bar, sim.zone)
            out["paired_t"] = int(noise_level)
    return out


def confound_probes(data: EvalSet) -> dict:
    """AUROC that crop size or mean intensity alone reach on the real labels (the confounds' strength)."""
    if data.crop_area is None or len(set(data.y.tolist())) < 2:
        return {}
    return {
        "auroc_crop_area_raw": auroc(data.y, -data.crop_area),
        "auroc_mean_intensity_raw": auroc(data.y, data.crop_mean),
        "auroc_visible_area": auroc(data.y, -data.valid.reshape(len(data.y), -1).sum(1)),
    }


# -- maps -------------------------------------------------------------------------------------------
def low_attenuation_raw(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Baseline: how much darker than the slice's median tissue (in ``valid``) each pixel is."""
    maps = []
    for xi, vi in zip(x, valid):
        ref = np.median(xi[vi]) if vi.any() else 0.0
        maps.append(np.where(vi, np.maximum(ref - xi, 0.0), 0.0))
    return np.stack(maps).astype(np.float32)


def saliency_raw(detector: Detector, x: np.ndarray, valid: np.ndarray, zone: np.ndarray, batch: int = 64) -> np.ndarray:
    """Baseline: the classifier's own gradient read as a map, |grad_x log p(healthy | x, t = 0)| in
    ``valid`` (with its pancreas ``zone``). One pass instead of detection's 16: it shows what the guided
    reconstruction adds to the gradient it is built on (``model_runs/20261128-saliency-baseline``)."""
    out = np.zeros(x.shape, np.float32)
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))[:, None].float().to(detector.device)
        zb = torch.from_numpy(np.ascontiguousarray(zone[i : i + batch]))[:, None].to(detector.device)
        out[i : i + batch] = detector.probability_and_saliency(xb, zb)[1].cpu().numpy()  # what detection weighs in
    return np.where(valid, out, 0.0).astype(np.float32)


def saliency_maps(detector: Detector, data: EvalSet) -> dict:
    """``saliency_raw`` of every lesion set and of the healthy slices: {name: ..., "healthy": ...}, as
    ``setting_maps`` gives the detection's raw maps."""
    out = {name: saliency_raw(detector, les.x, les.valid, les.zone) for name, les in data.lesions.items()}
    h = data.healthy
    out["healthy"] = saliency_raw(detector, data.x[h], data.valid[h], data.zone[h])
    return out


def low_attenuation_map(x: np.ndarray, valid: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """The low-attenuation baseline per-slice normalized in ``valid``."""
    return np.where(valid, normalize_per_slice(low_attenuation_raw(x, valid), sigma_px), 0.0)


def baseline_zone(raw: np.ndarray, zone: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    """A baseline's raw map as the model's maps are shown: normalized in the zone, per slice (a
    baseline has no calibrated scale of its own), no evidence floor."""
    plain = dataclasses.replace(cfg, normalization="slice", min_anomaly=0.0)
    return zone_maps(raw, zone, plain)


def in_zone(maps: np.ndarray, zone: np.ndarray) -> np.ndarray:
    return np.where(zone, maps, 0.0).astype(np.float32)


def zone_maps(raw: np.ndarray, zone: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    """Raw maps restricted to the zone and normalized there (a peak outside cannot set the scale),
    0 where the smoothed anomaly is below ``cfg.min_anomaly``: what detection on a CT shows
    (``postprocess.evidence_maps``; the crop-border band is not dropped, since stored crops are
    tight pancreas boxes whose tumors touch their border)."""
    return evidence_maps(raw, zone, cfg)


def segmentation_metrics(
    normalized: np.ndarray,
    masks: np.ndarray,
    zone: np.ndarray,
    threshold: float,
    peaks: np.ndarray | None = None,
    cases: list[str] | None = None,
) -> dict:
    """Dice at ``threshold`` and at the best threshold (an upper bound), pixel AUPRC in the zone,
    and how often the map's peak lands in the tumor (the maximum of ``peaks``, the slices'
    ``postprocess.peak_evidence``, as detection finds it; of the map itself where None). With the
    slices' ``cases``: 95 % intervals of Dice and peak-in-tumor that resample whole patients."""
    dices = {t: float(np.mean([dice((m >= t) & z, g) for m, g, z in zip(normalized, masks, zone)])) for t in THRESHOLDS}
    best = max(dices, key=dices.get)
    at_threshold = np.array([dice((m >= threshold) & z, g) for m, g, z in zip(normalized, masks, zone)])
    hits = peak_hits(normalized if peaks is None else peaks, masks, zone)
    out = {
        "dice": float(np.mean(at_threshold)),
        "auprc": average_precision(masks[zone], normalized[zone]),
        "dice_best_threshold": dices[best],
        "best_threshold": float(best),
        "peak_in_tumor": _nanmean(hits),
        "n_slices": int(len(masks)),
    }
    if cases is not None:
        out.update(
            dice_ci=case_interval(at_threshold, cases), peak_in_tumor_ci=case_interval(hits, cases),
            n_cases=len(set(cases)),
        )  # fmt: skip
    return out


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")


def peak_hits(maps: np.ndarray, masks: np.ndarray, zone: np.ndarray) -> np.ndarray:
    """Per slice: 1.0 where the strongest zone pixel is a tumor pixel, 0.0 where not, NaN without a zone."""
    hits = np.full(len(maps), np.nan)
    for i, (m, g, z) in enumerate(zip(maps, masks, zone)):
        if z.any():
            hits[i] = float(g.flat[int(np.argmax(np.where(z, m, -np.inf)))])
    return hits


def peak_in_tumor(maps: np.ndarray, masks: np.ndarray, zone: np.ndarray) -> float:
    """Fraction of slices whose strongest zone pixel is a tumor pixel."""
    return _nanmean(peak_hits(maps, masks, zone))


def trivial_baselines(lesions: Lesions) -> dict:
    """What needs no model: the whole zone marked (Dice; AUPRC = prevalence) and a random peak."""
    zone, masks = lesions.zone, lesions.mask & lesions.zone
    per_slice = masks.reshape(len(masks), -1).sum(1) / np.maximum(zone.reshape(len(zone), -1).sum(1), 1)
    return {
        "whole_zone_dice": float(np.mean([dice(z, g) for z, g in zip(zone, masks)])),
        "prevalence": float(masks.sum() / max(zone.sum(), 1)),
        "peak_in_tumor_chance": float(per_slice.mean()),
        "tumor_fraction_of_zone": float(per_slice.mean()),
    }


def fp_per_slice(normalized: np.ndarray, zone: np.ndarray, threshold: float) -> np.ndarray:
    """Per healthy slice: the fraction of its zone pixels flagged."""
    flagged = (normalized >= threshold) & zone
    return flagged.reshape(len(zone), -1).sum(1) / np.maximum(zone.reshape(len(zone), -1).sum(1), 1)


def fp_fraction(normalized: np.ndarray, zone: np.ndarray, threshold: float) -> float:
    """Mean over healthy slices of the fraction of zone pixels flagged."""
    return float(np.mean(fp_per_slice(normalized, zone, threshold)))


def healthy_false_positives(
    normalized: np.ndarray, zone: np.ndarray, threshold: float, outlined: np.ndarray, cases: list[str] | None = None
) -> dict:
    """``fp_fraction`` over all healthy slices (what the release's bound reads), and over those with a
    pancreas outline only (``fp_fraction_outlined``, None without any): the zone inference scores.
    With the slices' ``cases``: 95 % intervals of both that resample whole patients."""
    per_slice = fp_per_slice(normalized, zone, threshold)
    out = {
        "fp_fraction": float(np.mean(per_slice)),
        "n_slices": int(len(zone)),
        "fp_fraction_outlined": float(np.mean(per_slice[outlined])) if outlined.any() else None,
        "n_outlined": int(outlined.sum()),
    }
    if cases is not None:
        cases = np.asarray(cases, dtype=object)
        out.update(fp_fraction_ci=case_interval(per_slice, cases), n_cases=len(set(cases)))
        if outlined.any():
            out["fp_fraction_outlined_ci"] = case_interval(per_slice[outlined], cases[outlined])
            out["n_cases_outlined"] = len(set(cases[outlined]))
    return out


def calibrate_map_scale(healthy_anomaly: np.ndarray, zone: np.ndarray, sigma_px: float, quantile: float = 0.995):
    """The smoothed anomaly value that only (1 - quantile) of healthy zone pixels exceed."""
    return float(np.quantile(smooth_maps(healthy_anomaly, sigma_px)[zone], quantile))


def raw_map_grid(
    bundle: ModelBundle,
    base: DetectConfig,
    x: np.ndarray,
    valid: np.ndarray,
    scales,
    guidances=("noisy",),
    reporter: Reporter = QUIET,
    label: str = "",
    zone: np.ndarray | None = None,
) -> dict:
    """Raw anomaly maps for every (guidance, map kind, S) at one N, from one encoding per slice
    (``Detector.map_grid``), always by ``base``'s K-step decode: a map student fits one S and
    never stands in for a grid. Returns {(guidance, map_kind, S): (B, S, S)}."""
    base = dataclasses.replace(base, map_student=False)
    with StepProgress(reporter, f"maps {label} N={base.noise_level}".strip()) as progress:
        grid = Detector(bundle, base).map_grid(x, valid, scales, tuple(guidances), MAP_KINDS, progress, zone=zone)
    return grid["anomaly"]


def run_anomaly(
    bundle: ModelBundle,
    cfg: DetectConfig,
    x: np.ndarray,
    valid: np.ndarray,
    reporter: Reporter = QUIET,
    label: str = "",
    zone: np.ndarray | None = None,
) -> np.ndarray:
    """Raw anomaly maps of canvases under one setting, with a progress bar."""
    with StepProgress(reporter, f"detect {label}".strip()) as progress:
        return Detector(bundle, cfg).detect(x, valid, progress, zone=zone).anomaly


def setting_maps(bundle: ModelBundle, cfg: DetectConfig, data: EvalSet, reporter: Reporter) -> dict:
    """Raw maps of every lesion set and of the healthy slices under ``cfg`` (one setting)."""
    out = {
        name: run_anomaly(bundle, cfg, les.x, les.valid, reporter, name, les.zone) for name, les in data.lesions.items()
    }
    h = data.healthy
    out["healthy"] = run_anomaly(bundle, cfg, data.x[h], data.valid[h], reporter, "healthy", data.zone[h])
    return out


def score_maps(raw: dict, data: EvalSet, cfg: DetectConfig) -> dict:
    """Localization per lesion set and false positives on healthy slices, from raw maps."""
    h = data.healthy
    out = {}
    for name, les in data.lesions.items():
        maps = zone_maps(raw[name], les.zone, cfg)
        peaks = peak_evidence(raw[name], les.zone, maps, cfg)
        out[name] = segmentation_metrics(maps, les.mask, les.zone, cfg.threshold, peaks, les.cases)
    healthy = zone_maps(raw["healthy"], data.zone[h], cfg)
    out["healthy"] = healthy_false_positives(
        healthy, data.zone[h], cfg.threshold, data.has_outline[h], [c for c, keep in zip(data.cases, h) if keep]
    )
    return out


def threshold_rows(data: EvalSet, raw: dict, cfg: DetectConfig) -> list[dict]:
    """Every threshold of one setting, from raw maps {lesion set name: ..., "healthy": ...}: mean
    Dice over the lesion sets (and each set's), each set's pixel AUPRC, healthy false-positive fraction."""
    h = data.healthy
    maps = {name: zone_maps(raw[name], les.zone, cfg) for name, les in data.lesions.items()}
    healthy = zone_maps(raw["healthy"], data.zone[h], cfg)
    auprc = {name: average_precision(les.mask[les.zone], maps[name][les.zone]) for name, les in data.lesions.items()}
    rows = []
    for t in THRESHOLDS:
        dices = {
            name: float(np.mean([dice(m >= t, g) for m, g in zip(maps[name], les.mask)]))
            for name, les in data.lesions.items()
        }
        rows.append(
            {
                "threshold": float(t),
                "dice": float(np.mean(list(dices.values()))),
                **{f"dice_{n}": v for n, v in dices.items()},
                **{f"auprc_{n}": v for n, v in auprc.items()},
                "fp_fraction": fp_fraction(healthy, data.zone[h], t),
            }
        )
    return rows


def best_allowed(rows: list[dict], max_fp: float) -> int:
    """Index of the best mean Dice among rows with healthy FP fraction <= ``max_fp`` (among all when none)."""
    allowed = [i for i, r in enumerate(rows) if r["fp_fraction"] <= max_fp] or list(range(len(rows)))
    return max(allowed, key=lambda i: rows[i]["dice"])


def best_by(rows: list[dict], key: str, max_fp: float) -> list[dict]:
    """The selection rule's best row for each value of ``key`` (what each choice would have scored)."""
    values = sorted({r[key] for r in rows})
    return [group[best_allowed(group, max_fp)] for group in ([r for r in rows if r[key] == v] for v in values)]


def choose_operating_point(
    bundle: ModelBundle,
    data: EvalSet,
    scales,
    noises,
    steps: int,
    max_fp: float = 0.02,
    reporter: Reporter = QUIET,
    guidances=("noisy", "x0"),
    map_kinds=MAP_KINDS,
    min_anomalies=MIN_ANOMALIES,
) -> tuple[DetectConfig, list[dict]]:
    """Best mean Dice over the lesion sets (real and simulated, equally weighted) with healthy
    false-positive fraction <= ``max_fp``, over (guidance, map kind, S, N, normalization, evidence
    floor ``min_anomaly``, threshold).

    ``steps`` is K at the lowest of ``noises``; the others keep its step size (``DetectConfig.at``), as
    detection does when a user changes N. The calibrated normalization's ``map_scale`` is measured on
    the same (tuning) healthy slices. Falls back to the best Dice when no setting meets the FP bound.
    Every map of one N comes from one encoding per slice (the latent does not depend on S).
    """
    h = data.healthy
    rows, configs = [], {}
    sets = list(data.lesions.items())
    lowest = min(int(n) for n in noises)
    reference = dataclasses.replace(bundle.operating_point, noise_level=lowest, steps=min(steps, lowest))
    for noise in noises:
        base = reference.at(int(noise))
        grids = {
            name: raw_map_grid(bundle, base, les.x, les.valid, scales, guidances, reporter, name, les.zone)
            for name, les in sets
        }
        grids["healthy"] = raw_map_grid(
            bundle, base, data.x[h], data.valid[h], scales, guidances, reporter, "healthy", data.zone[h]
        )
        for key in grids["healthy"]:
            guidance, kind, scale = key
            if kind not in map_kinds or (scale == 0.0 and (guidance != guidances[0] or kind != "input")):
                continue  # S = 0 is one map whatever the guidance or map kind
            raw = {name: grid[key] for name, grid in grids.items()}
            at = dataclasses.replace(base, scale=scale, guidance=guidance, map_kind=kind)
            setting = {"guidance": guidance, "map_kind": kind, "scale": scale, "noise_level": int(noise),
                       "steps": at.steps}  # fmt: skip
            for row, cfg in normalization_rows(data, raw, at, min_anomalies):
                rows.append({**setting, **row})
                configs[len(rows) - 1] = cfg
    best = best_allowed(rows, max_fp)
    return configs[best], rows


def normalization_rows(data: EvalSet, raw: dict, cfg: DetectConfig, min_anomalies=MIN_ANOMALIES) -> list:
    """Every (normalization, evidence floor, threshold) of one setting's raw maps, by ``threshold_rows``,
    with ``map_scale`` measured on the healthy slices at ``cfg``'s smoothing: [(row, its config)]."""
    h = data.healthy
    map_scale = calibrate_map_scale(raw["healthy"], data.zone[h], cfg.smooth_sigma_px)
    out = []
    for norm, floor in itertools.product(("slice", "calibrated"), min_anomalies):
        at = dataclasses.replace(cfg, normalization=norm, map_scale=map_scale, min_anomaly=floor)
        setting = {"normalization": norm, "map_scale": map_scale, "min_anomaly": floor}
        out += [({**setting, **row}, dataclasses.replace(at, threshold=row["threshold"]))
                for row in threshold_rows(data, raw, at)]  # fmt: skip
    return out


PEAK_SIGMAS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def choose_smoothing(
    raw: dict, data: EvalSet, cfg: DetectConfig, sigmas=(1.0,), max_fp: float = 0.02, min_anomalies=MIN_ANOMALIES
) -> tuple[DetectConfig, list[dict]]:
    """The heatmap's smoothing, chosen after the grid at its guidance, map kind, S and N: for each sigma,
    normalization (``map_scale`` re-measured on the healthy slices at that sigma), evidence floor and
    threshold again, by the grid's rule (best mean Dice with healthy false positives <= ``max_fp``);
    ties go to the first sigma given.

    Args:
        raw: raw maps {lesion set name: ..., "healthy": ...} of ``data`` under ``cfg`` (``setting_maps``).

    Returns:
        The chosen operating point and every row (one per sigma, normalization, floor and threshold).
    """
    rows, configs = [], []
    for sigma in sigmas:
        at = dataclasses.replace(cfg, smooth_sigma_px=float(sigma))
        for row, config in normalization_rows(data, raw, at, min_anomalies):
            rows.append({"smooth_sigma_px": float(sigma), **row})
            configs.append(config)
    return configs[best_allowed(rows, max_fp)], rows


def choose_peak_sigma(raw: dict, data: EvalSet, cfg: DetectConfig, sigmas=PEAK_SIGMAS) -> tuple[float, list[dict]]:
    """The peak smoothing (``DetectConfig.peak_sigma_px``) whose peaks land in the tumor most often,
    averaged over the lesion sets (real and simulated equally weighted); ties go to the smaller sigma.
    The heatmap, candidates and Dice do not depend on it.

    Args:
        raw: raw maps {lesion set name: (L, S, S)} of ``data`` under ``cfg`` (``setting_maps``).
        data: the tuning half.
        cfg: the chosen operating point.

    Returns:
        The chosen sigma and one row per sigma (peak-in-tumor per set and their mean).
    """
    maps = {name: zone_maps(raw[name], les.zone, cfg) for name, les in data.lesions.items()}
    rows = []
    for sigma in sigmas:
        at = dataclasses.replace(cfg, peak_sigma_px=float(sigma))
        row = {"peak_sigma_px": float(sigma)}
        for name, les in data.lesions.items():
            peaks = peak_evidence(raw[name], les.zone, maps[name], at)
            row[f"peak_in_tumor_{name}"] = peak_in_tumor(peaks, les.mask, les.zone)
        row["peak_in_tumor"] = float(np.mean([row[f"peak_in_tumor_{name}"] for name in data.lesions]))
        rows.append(row)
    best = max(rows, key=lambda r: (r["peak_in_tumor"], -r["peak_sigma_px"]))
    return best["peak_sigma_px"], rows


OPERATING_POINT_FIELDS = (
    "scale", "noise_level", "steps", "grid_power", "guidance_step", "threshold", "normalization", "map_scale",
    "guidance", "map_kind", "smooth_sigma_px", "peak_sigma_px",
)  # fmt: skip


def evaluate(
    bundle: ModelBundle, data: EvalSet, cfg: DetectConfig, reporter: Reporter = QUIET, grid: tuple = ((), (), ())
) -> dict:
    """All figures of ``results.json`` at one operating point, plus an optional (S, N, threshold) grid."""
    results: dict = {
        "operating_point": {k: v for k, v in to_dict(cfg).items() if k in OPERATING_POINT_FIELDS},
        "model_id": bundle.model_id,
        "slices": int(len(data.y)),
        "cases": int(len(set(data.cases))),
        "classifier": classifier_metrics(bundle, data, cfg.noise_level),
        "confounds": confound_probes(data),
        "source": data.source,
    }
    scored = score_maps(setting_maps(bundle, cfg, data, reporter), data, cfg)
    # S = 0 is |x - x_hat|, another map than a guidance map: the operating point's calibrated scale is
    # not its scale (it flagged nearly every healthy pixel), so it is normalized per slice as the paper does,
    # and it is the reconstruction alone (no saliency: that is its own baseline row).
    plain = dataclasses.replace(cfg, scale=0.0, normalization="slice", min_anomaly=0.0, saliency_weight=0.0)
    no_guidance = score_maps(setting_maps(bundle, plain, data, reporter), data, plain)
    results["no_guidance_normalization"] = "slice"
    h = data.healthy
    saliency = saliency_maps(Detector(bundle, cfg), data)
    la_healthy = baseline_zone(low_attenuation_raw(data.x[h], data.zone[h]), data.zone[h], cfg)
    sal_healthy = baseline_zone(saliency["healthy"], data.zone[h], cfg)
    results["localization"] = {}
    for name, les in data.lesions.items():
        baselines = {}
        for key, raw in (("low_attenuation", low_attenuation_raw(les.x, les.zone)), ("saliency", saliency[name])):
            # both shown as the model's maps are: normalized in the zone, peaks found the same way
            shown = baseline_zone(raw, les.zone, cfg)
            peaks = peak_evidence(raw, les.zone, shown, cfg)
            baselines[key] = segmentation_metrics(shown, les.mask, les.zone, cfg.threshold, peaks)
        results["localization"][name] = {
            "pancdiff": scored[name],
            "no_guidance": no_guidance[name],
            **baselines,
            "trivial": trivial_baselines(les),
        }
    results["healthy"] = {
        "pancdiff": scored["healthy"],
        "no_guidance": no_guidance["healthy"],
        "low_attenuation": healthy_false_positives(la_healthy, data.zone[h], cfg.threshold, data.has_outline[h]),
        "saliency": healthy_false_positives(sal_healthy, data.zone[h], cfg.threshold, data.has_outline[h]),
    }
    scales, noises, thresholds = grid
    if scales and noises:
        rows = []
        for scale in scales:
            for noise in noises:
                setting = dataclasses.replace(cfg.at(int(noise)), scale=float(scale))
                raw = setting_maps(bundle, setting, data, reporter)
                for t in thresholds or (cfg.threshold,):
                    s = score_maps(raw, data, dataclasses.replace(setting, threshold=float(t)))
                    row = {"scale": float(scale), "noise_level": int(noise), "threshold": float(t)}
                    for name in data.lesions:
                        row[f"dice_{name}"] = s[name]["dice"]
                        row[f"auprc_{name}"] = s[name]["auprc"]
                    row["fp_fraction"] = s["healthy"]["fp_fraction"]
                    rows.append(row)
        results["grid"] = rows
    return results


def write_results(results: dict, out_dir: Path) -> None:
    """``results.json`` and a markdown table ``results.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out_dir / "results.md").write_text(results_markdown(results), encoding="utf-8")


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def _interval(ci) -> str:
    return f"{_fmt(ci[0])}-{_fmt(ci[1])}"


def _patients(m: dict, key: str, count: str = "n_cases") -> str:
    """The figure's patient-resampled interval as a parenthesis, or nothing where it has none."""
    return f" (95 % interval over {m[count]} patients: {_interval(m[key])})" if key in m else ""


def results_markdown(r: dict) -> str:
    op, c = r["operating_point"], r["classifier"]
    lines = [
        f"# PancDiff evaluation ({r['model_id']})",
        "",
        f"{r['slices']} slices from {r['cases']} cases. Operating point: S = {op['scale']} "
        f"({op.get('guidance', 'noisy')} guidance), N = {op['noise_level']}, K = {op['steps']}, "
        f"{op.get('map_kind', 'input')} map, threshold {op['threshold']} of the "
        f"{op.get('normalization', 'slice')}-normalized map. Truth: {r['source']}.",
        "Maps are scored inside the pancreas zone (organ mask + margin) where one exists. A slice's peak is its "
        "strongest zone pixel by the unclipped anomaly smoothed at "
        f"{op['peak_sigma_px'] if op.get('peak_sigma_px') is not None else op.get('smooth_sigma_px', 1.0)} px.",
        "",
        "| classifier | value |",
        "|---|---|",
        f"| slice AUROC, real labels (site-confounded) | {_fmt(c['auroc'])} |",
        f"| paired AUROC, simulated lesion vs. same crop, t = 0 | {_fmt(c.get('auroc_paired_t0'))} |",
        f"| paired AUROC at t = N ({c.get('paired_t', '-')}) | {_fmt(c.get('auroc_paired_tN'))} |",
    ]
    for key, label in (
        ("auroc_crop_area_raw", "raw crop area alone"),
        ("auroc_mean_intensity_raw", "raw mean intensity alone"),
        ("auroc_visible_area", "visible area after the label-blind cut"),
    ):
        if key in r["confounds"]:
            lines.append(f"| confound probe: AUROC of {label} | {_fmt(r['confounds'][key])} |")
    plain_label = "S = 0 (plain reconstruction" + (", per slice)" if r.get("no_guidance_normalization") else ")")
    for name, loc in r["localization"].items():
        t = loc["trivial"]
        lines += [
            "",
            f"**{name} lesions** ({loc['pancdiff']['n_slices']} slices; tumor = {_fmt(t['prevalence'])} of the zone)",
            "",
            "| method | Dice @ threshold | pixel AUPRC | best-threshold Dice | peak in tumor |",
            "|---|---|---|---|---|",
        ]
        for key, label in (
            ("pancdiff", "PancDiff"),
            ("no_guidance", plain_label),
            ("low_attenuation", "low-attenuation threshold"),
            ("saliency", "classifier saliency at t = 0 (one pass)"),
        ):
            if key not in loc:  # results written before the saliency baseline existed
                continue
            m = loc[key]
            lines.append(
                f"| {label} | {_fmt(m['dice'])} | {_fmt(m['auprc'])} | {_fmt(m['dice_best_threshold'])} | "
                f"{_fmt(m['peak_in_tumor'])} |"
            )
        lines.append(
            f"| whole zone marked / chance | {_fmt(t['whole_zone_dice'])} | {_fmt(t['prevalence'])} | - | "
            f"{_fmt(t['peak_in_tumor_chance'])} |"
        )
        ours = loc["pancdiff"]
        if "dice_ci" in ours:
            lines += [
                "",
                f"PancDiff, 95 % interval when its {ours['n_cases']} patients are resampled: Dice "
                f"{_interval(ours['dice_ci'])}, peak in tumor {_interval(ours['peak_in_tumor_ci'])}.",
            ]
    hl = r["healthy"]
    lines += [
        "",
        f"Healthy false-positive fraction of the zone: PancDiff {_fmt(hl['pancdiff']['fp_fraction'])}"
        f"{_patients(hl['pancdiff'], 'fp_fraction_ci')}, "
        f"S = 0 {_fmt(hl['no_guidance']['fp_fraction'])}, "
        f"low attenuation {_fmt(hl['low_attenuation']['fp_fraction'])}"
        + (f", saliency {_fmt(hl['saliency']['fp_fraction'])}." if "saliency" in hl else "."),
    ]
    outlined, total = hl["pancdiff"].get("n_outlined"), hl["pancdiff"].get("n_slices")
    if outlined is not None and outlined < total:
        lines.append(
            f"On the {outlined} of {total} healthy slices with a pancreas outline (zone = pancreas + margin, as at "
            f"inference): PancDiff {_fmt(hl['pancdiff']['fp_fraction_outlined'])}"
            f"{_patients(hl['pancdiff'], 'fp_fraction_outlined_ci', 'n_cases_outlined')}, "
            f"S = 0 {_fmt(hl['no_guidance']['fp_fraction_outlined'])}, "
            f"low attenuation {_fmt(hl['low_attenuation']['fp_fraction_outlined'])}"
            + (f", saliency {_fmt(hl['saliency']['fp_fraction_outlined'])}" if "saliency" in hl else "")
            + "; the other slices are scored over their whole crop."
        )
    if r.get("grid"):
        names = [k[5:] for k in r["grid"][0] if k.startswith("dice_")]
        lines += ["", "| S | N | threshold | " + " | ".join(f"Dice {n} | AUPRC {n}" for n in names) + " | healthy FP |"]
        lines.append("|---" * (4 + 2 * len(names)) + "|")
        for g in r["grid"]:
            cells = " | ".join(f"{_fmt(g['dice_' + n])} | {_fmt(g['auprc_' + n])}" for n in names)
            lines.append(
                f"| {g['scale']} | {g['noise_level']} | {g['threshold']} | {cells} | {_fmt(g['fp_fraction'])} |"
            )
    return "\n".join(lines) + "\n"


def grid_figure(
    bundle: ModelBundle, data: EvalSet, scales, noises, cfg: DetectConfig, path: Path, n_slices: int = 3
) -> None:
    """Like the paper's Figures 2-3: maps of a few lesion slices over a grid of S x N (``cfg``'s other
    settings, its step size at every N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    les = data.lesions.get("real") or next(iter(data.lesions.values()))
    pick = np.linspace(0, len(les) - 1, min(n_slices, len(les))).astype(int)
    x, v, m, z = les.x[pick], les.valid[pick], les.mask[pick], les.zone[pick]
    settings = [(s, n) for n in noises for s in scales]
    fig, axes = plt.subplots(
        len(pick), len(settings) + 2, figsize=(1.6 * (len(settings) + 2), 1.7 * len(pick)), squeeze=False, dpi=110
    )
    for j, (s, n) in enumerate(settings):
        at = dataclasses.replace(cfg.at(int(n)), scale=float(s))
        maps = zone_maps(Detector(bundle, at).detect(x, v, zone=z).anomaly, z, at)
        for i in range(len(pick)):
            axes[i, j + 2].imshow(maps[i], cmap="inferno", vmin=0, vmax=1)
            axes[i, j + 2].contour(m[i], levels=[0.5], colors="cyan", linewidths=0.6)
            if i == 0:
                axes[i, j + 2].set_title(f"S={s:g} N={n}", fontsize=7)
    for i in range(len(pick)):
        axes[i, 0].imshow(x[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 1].imshow(m[i], cmap="gray")
    axes[0, 0].set_title(f"input ({les.kind})", fontsize=7)
    axes[0, 1].set_title("tumor outline", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
