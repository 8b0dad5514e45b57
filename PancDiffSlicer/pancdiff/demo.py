"""The demo: the whole detection path on the bundled real CT, as is and with a simulated lesion.

The sample CT has no tumor, and no tumor mask exists for it, so the demo makes one: a hypodense
ellipsoid (by default 10 mm radius, 40 HU darker, soft edge) darkened into the pancreas at its
deepest point. Running detection on both volumes shows what a finding looks like and how far the
strongest peak lands from a lesion whose position is known exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import DependencyError
from .markers import ImageGrid, Marker, distances_to_mask
from .progress import QUIET, Reporter

SAMPLE_CT, SAMPLE_MASK = "example_ct_sm.nii.gz", "pancreas.nii.gz"


def sample_data_dir() -> Path:
    """The sample CT shipped with this copy of the engine, wherever it is installed (see ``resources``)."""
    from .resources import sample_data_dir as locate

    return locate()


@dataclass(frozen=True)
class SimulatedLesion:
    """A lesion darkened into a CT.

    Attributes:
        center_ijk: (3,) voxel index (i, j, k) of its center.
        center_lps: (3,) LPS mm of its center.
        radii_mm: semi-axes along i, j, k.
        delta_hu: HU added at its core (negative: darker).
        mask: (z, y, x) bool, voxels darkened by at least half of ``delta_hu``.
    """

    center_ijk: tuple[int, int, int]
    center_lps: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    delta_hu: float
    mask: np.ndarray

    def describe(self, grid: ImageGrid) -> dict[str, Any]:
        lps = [round(v, 2) for v in self.center_lps]
        return {
            "center_voxel_ijk": list(self.center_ijk),
            "center_lps_mm": lps,
            "center_ras_mm": [-lps[0], -lps[1], lps[2]],
            "radii_mm": list(self.radii_mm),
            "delta_hu": self.delta_hu,
            "voxels": int(self.mask.sum()),
            "volume_ml": round(float(self.mask.sum()) * float(np.prod(grid.spacing)) / 1000.0, 3),
        }


def deepest_point(mask: np.ndarray, grid: ImageGrid) -> tuple[int, int, int]:
    """(i, j, k) of the mask voxel farthest (in mm) from the mask's border: a lesion there stays inside.

    Distances are Euclidean with per-axis spacing, which is exact for any rotation of the grid.
    """
    depth = ndimage.distance_transform_edt(mask, sampling=grid.spacing[::-1])
    k, j, i = np.unravel_index(int(np.argmax(depth)), mask.shape)
    return int(i), int(j), int(k)


def insert_ellipsoid_lesion(
    hu: np.ndarray,
    pancreas: np.ndarray,
    grid: ImageGrid,
    center_ijk: tuple[int, int, int],
    radius_mm: float = 10.0,
    delta_hu: float = -40.0,
    edge_mm: float = 2.0,
) -> tuple[np.ndarray, SimulatedLesion]:
    """Darken a soft-edged ellipsoid of the pancreas, like a hypoattenuating tumor.

    Only pancreas voxels change: darkening the fat around it would draw a lesion no scanner shows.
    The ellipsoid is slightly elongated (semi-axes 1.2, 1.0, 0.85 x radius along i, j, k) so it is
    not a perfect sphere.

    Args:
        hu: (z, y, x) CT in HU.
        pancreas: (z, y, x) bool pancreas mask.
        grid: the CT's geometry.
        center_ijk: lesion center (i, j, k), e.g. from ``deepest_point``.
        radius_mm: mean semi-axis.
        delta_hu: HU change at the core (negative = darker).
        edge_mm: Gaussian blur of the border (ill-defined margin).

    Returns:
        (changed copy of ``hu`` as float32, the lesion).
    """
    radii = (1.2 * radius_mm, 1.0 * radius_mm, 0.85 * radius_mm)
    spacing = np.asarray(grid.spacing, dtype=float)
    k, j, i = np.ogrid[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    r2 = (
        ((i - center_ijk[0]) * spacing[0] / radii[0]) ** 2
        + ((j - center_ijk[1]) * spacing[1] / radii[1]) ** 2
        + ((k - center_ijk[2]) * spacing[2] / radii[2]) ** 2
    )
    profile = ndimage.gaussian_filter((r2 <= 1.0).astype(np.float32), sigma=edge_mm / spacing[::-1])
    profile /= max(float(profile.max()), 1e-6)
    profile *= pancreas
    out = (np.asarray(hu, dtype=np.float32) + delta_hu * profile).astype(np.float32)
    center_lps = tuple(float(v) for v in grid.index_to_lps(np.array(center_ijk))[0])
    lesion = SimulatedLesion(tuple(int(v) for v in center_ijk), center_lps, radii, float(delta_hu), profile >= 0.5)
    return out, lesion


def with_array(ct, array: np.ndarray):
    """A copy of a ``CTVolume`` holding ``array`` (same geometry, image and array kept in step)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(ct.image)
    return dataclasses.replace(ct, array=array.astype(np.float32), image=image)


def run_demo(
    out_dir: str | Path,
    bundle: Callable,
    *,
    overrides: dict[str, Any] | None = None,
    ct_path: str | Path | None = None,
    mask_path: str | Path | None = None,
    radius_mm: float = 10.0,
    delta_hu: float = -40.0,
    reporter: Reporter = QUIET,
) -> dict[str, Any]:
    """Detect on the sample CT as is and with a simulated lesion; write both results and a summary.

    Args:
        out_dir: existing (staging) folder; gets ``as_is/``, ``with_lesion/`` (each a full detect
            result; the second also holds ``ct_with_lesion.nii.gz`` and ``lesion.nii.gz``) and
            ``demo_summary.json``.
        bundle: a function returning the models.
        overrides: DetectConfig fields given by the user.
        ct_path, mask_path: another CT and its pancreas mask instead of the bundled sample.
        radius_mm, delta_hu: the simulated lesion.
        reporter: progress sink.

    Returns:
        The demo summary (also written as ``demo_summary.json``).
    """
    from .ctio import read_ct, write_like
    from .pancreas import pancreas_mask
    from .pipeline import detect_ct

    if ct_path is None:
        root = sample_data_dir()
        ct_path, mask_path = root / SAMPLE_CT, mask_path or root / SAMPLE_MASK
        if not Path(ct_path).is_file():
            raise DependencyError(
                f"{ct_path}: bundled sample CT missing; restore PancDiffSlicer/Resources/SampleData from the repository"
            )
    if mask_path is None:
        mask_path = "totalsegmentator"
    out = Path(out_dir)
    reporter.stage("read", str(ct_path))
    ct = read_ct(ct_path)
    source = str(mask_path)
    mask = pancreas_mask(ct, source if source == "totalsegmentator" else Path(source))
    grid = ImageGrid.from_image(ct.image)

    center = deepest_point(mask, grid)
    lesioned_hu, lesion = insert_ellipsoid_lesion(ct.array, mask, grid, center, radius_mm, delta_hu)
    ct_lesion = dataclasses.replace(with_array(ct, lesioned_hu), path=Path(f"{ct.path} (with simulated lesion)"))
    target = [Marker("simulated lesion center", lesion.center_lps)]

    runs, detections = {}, {}
    for name, volume in (("as_is", ct), ("with_lesion", ct_lesion)):
        reporter.stage("demo", f"{name.replace('_', ' ')}")
        (out / name).mkdir()
        runs[name] = detect_ct(
            volume, mask, out / name, bundle, source=source, overrides=overrides, reporter=reporter,
            markers=target, markers_info={"file": "simulated lesion center (demo)"}, reference=lesion.mask,
            on_detection=lambda det, name=name: detections.__setitem__(name, det),
        )  # fmt: skip
    write_like(np.rint(lesioned_hu), ct.image, out / "with_lesion" / "ct_with_lesion.nii.gz", np.int16)
    write_like(lesion.mask.astype(np.uint8), ct.image, out / "with_lesion" / "lesion.nii.gz", np.uint8)

    summary = {
        "ct": str(ct_path),
        "pancreas_mask": source,
        "model": runs["with_lesion"]["model"],
        "settings": runs["with_lesion"]["settings"],
        "lesion": lesion.describe(grid),
        "as_is": _run_digest(runs["as_is"], lesion, grid),
        "with_lesion": _run_digest(runs["with_lesion"], lesion, grid),
        "reports": ["comparison.png", "with_lesion/report.png", "as_is/report.png"],
        "strongest_peak_definition": (
            "the peak of the strongest finding (summary.json peaks[0]: its slice's strongest unclipped evidence, "
            "smoothed at the model's peak_sigma_px); the heatmap is 0 beyond "
            "pancreas_margin_mm of the pancreas mask, so this is the strongest in-pancreas peak"
        ),
    }
    summary["distance_strongest_peak_to_lesion_mm"] = summary["with_lesion"]["strongest_peak_to_lesion_center_mm"]
    if summary["model"].get("untrained"):
        summary["warning"] = "untrained random weights: this run tests the pipeline only, the maps mean nothing"
    render_demo_comparison(out / "comparison.png", ct, ct_lesion, mask, lesion, detections, summary)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def render_demo_comparison(
    path: Path, ct, ct_lesion, mask: np.ndarray, lesion: SimulatedLesion, detections: dict, summary: dict[str, Any]
) -> Path:
    """``comparison.png``: the as-is and the with-lesion run side by side on the lesion's slices.

    Same slices (the lesion's largest section and its neighbours), same colour scale, the lesion and
    the pancreas outlined on both: where the models find the lesion, it shows as a difference here.
    """
    from .pipeline import _ijk_to_view, confidence_note, learned_parts, slice_position_mm, slice_strip
    from .report import ReportPoint, render_comparison

    a, b = detections["as_is"], detections["with_lesion"]
    view = b.reorientation.apply
    ref = view(lesion.mask)
    sections = ref.sum(axis=(1, 2))
    center = int(np.argmax(sections))
    rows = [z for z in (center - 1, center, center + 1) if 0 <= z < len(sections) and sections[z] > 0]
    labels = [
        f"z = {slice_position_mm(b, z):.1f} mm (k = {b.reorientation.original_slice_index(z, b.heatmap.shape)})"
        for z in rows
    ]
    peaks, notes = [], []
    for det, key in ((a, "as_is"), (b, "with_lesion")):
        top = next((f for f in det.ranked() if f.peak_ijk is not None), None)
        peaks.append(None if top is None else (top.view_index, *top.peak_rc))
        digest = summary[key]
        distance = digest["strongest_peak_to_lesion_center_mm"]
        notes.append(
            f"p(tumor) max {_f(digest['overall_confidence'])}; heatmap at lesion center "
            f"{_f(digest['heatmap_at_lesion_center'])}; strongest peak "
            + (
                "none"
                if distance is None
                else f"{distance:.1f} mm from it (k = {digest['strongest_peak']['slice_index']})"
            )
        )
    ijk = np.asarray(lesion.center_ijk, dtype=float)
    point = ReportPoint("lesion center", _ijk_to_view(b.reorientation, b.heatmap.shape, ijk))
    strips = [slice_strip(det, [], lesion.mask) for det in (a, b)]
    cfg = b.cfg
    domain = summary["with_lesion"]["input_domain"]  # the check write_results made for that run
    title = (
        f"PancDiff demo: the sample CT as is vs with a simulated lesion ({lesion.delta_hu:+g} HU, "
        f"~{lesion.radii_mm[1]:g} mm radius)\nmodel {summary['model'].get('model_id')}   S={cfg.scale:g}  "
        f"N={cfg.noise_level}  K={cfg.steps}{learned_parts(b)}  threshold={cfg.threshold:g}\n"
        f"{confidence_note(b.overall_confidence, summary['model'], domain)}"
    )
    return render_comparison(
        path,
        [view(np.asarray(ct.array)), view(np.asarray(ct_lesion.array))],
        [view(a.heatmap), view(b.heatmap)],
        [view(a.candidates), view(b.candidates)],
        ["as is", "with simulated lesion"],
        b.view_spacing,
        rows,
        labels,
        strips,
        pancreas=view(np.asarray(mask, dtype=bool)),
        reference=ref,
        points=[point],
        peaks=peaks,
        notes=notes,
        threshold=cfg.threshold,
        title=title,
        warning=summary.get("warning", "").upper(),
    )


def _run_digest(summary: dict[str, Any], lesion: SimulatedLesion, grid: ImageGrid) -> dict[str, Any]:
    """The few numbers that tell whether the finding is the lesion."""
    peak = summary["peaks"][0] if summary["peaks"] else None
    digest: dict[str, Any] = {
        "overall_confidence": summary["overall_confidence"],
        "input_domain": summary.get("input_domain"),
        "candidate_voxels": summary["candidate_voxels"],
        "strongest_peak": peak,
        "strongest_peak_to_lesion_center_mm": None,
        "strongest_peak_to_lesion_mm": None,
    }
    if peak and peak["peak_lps_mm"]:
        p = np.asarray(peak["peak_lps_mm"], dtype=float)
        digest["strongest_peak_to_lesion_center_mm"] = round(float(np.linalg.norm(p - lesion.center_lps)), 2)
        digest["strongest_peak_to_lesion_mm"] = round(float(distances_to_mask(p[None], lesion.mask, grid)[0]), 2)
    marker = summary["markers"]["points"][0]
    digest["lesion_center_to_nearest_candidate_mm"] = marker["distance_to_candidate_mm"]
    digest["lesion_center_result"] = marker.get("result", "hit" if marker["hit"] else "miss")
    digest["chance_level"] = summary["markers"].get("chance_level")
    digest["heatmap_at_lesion_center"] = marker["heatmap_value"]
    return digest


def headline(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lesion, a, b = summary["lesion"], summary["as_is"], summary["with_lesion"]
    ras = ", ".join(f"{v:.1f}" for v in lesion["center_ras_mm"])
    lines = [
        f"as is:       overall confidence {_f(a['overall_confidence'])}",
        (
            f"with lesion: overall confidence {_f(b['overall_confidence'])}  "
            f"(lesion {lesion['delta_hu']:+g} HU, ~{lesion['radii_mm'][1]:g} mm radius, at RAS ({ras}) mm)"
        ),
        (
            "distance from the strongest peak to the lesion center: "
            f"{_f(b['strongest_peak_to_lesion_center_mm'], 1)} mm "
            f"(to its nearest voxel: {_f(b['strongest_peak_to_lesion_mm'], 1)} mm)"
            if b["strongest_peak"]
            else "no candidate in the pancreas with the lesion (no peak to measure from)"
        ),
        f"lesion center: {b['lesion_center_result']}",
    ]
    domain_warning = (a.get("input_domain") or {}).get("warning")
    if domain_warning:
        lines.insert(2, f"WARNING: {domain_warning}")
    if "warning" in summary:
        lines.insert(0, f"WARNING: {summary['warning']}")
    return "\n".join(lines)


def _f(v, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


__all__ = [
    "SAMPLE_CT",
    "SAMPLE_MASK",
    "SimulatedLesion",
    "deepest_point",
    "headline",
    "insert_ellipsoid_lesion",
    "run_demo",
    "sample_data_dir",
    "with_array",
]
